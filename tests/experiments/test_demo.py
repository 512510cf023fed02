"""The demo trains, reuses finished runs, and resumes unfinished ones."""

from __future__ import annotations

import json

import torch

from acn.experiments.demo import PRESETS, run_demo


def test_demo_trains_reuses_and_resumes(tmp_path, tiny_overrides):
    rows = run_demo(tmp_path, tiny_overrides, samples=2)
    assert [r["preset"] for r in rows] == list(PRESETS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["split"] == "test" and summary["rows"][0]["num_examples"] == 360
    assert "| ACN |" in (tmp_path / "summary.md").read_text()
    page = (tmp_path / "report" / "index.html").read_text()
    assert all(f"<h2>{preset}</h2>" in page for preset in PRESETS)
    # A second call reuses the finished runs: the same numbers, no retraining.
    mtime = (tmp_path / "digits-acn" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = run_demo(tmp_path, tiny_overrides, samples=2, report=False)
    assert [r["total_nats"] for r in again] == [r["total_nats"] for r in rows]
    assert (tmp_path / "digits-acn" / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    # A longer budget resumes each run to the new step count.
    longer = run_demo(tmp_path, [*tiny_overrides, "train.steps=8"], samples=2, report=False)
    assert all(r["steps"] == 8 for r in longer)
    for preset in PRESETS:
        state = torch.load(tmp_path / preset / "checkpoints" / "last.pt", weights_only=True)
        assert state["step"] == 8
