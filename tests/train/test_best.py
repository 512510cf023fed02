"""checkpoints/best.pt: the step with the lowest validation total, kept as exactly as last.pt,
and the checkpoint every reader takes by default.

Proves: training writes best.pt at the validation step with the lowest total seen (the same
file format as last.pt, resumable, recording itself), last.pt records it too; a resumed run
ends with the best.pt of the uninterrupted one, bit for bit; eval, sample, map, report, export
and reproduce take best.pt by default and last.pt when asked, and say which; a run without
best.pt (an older version) falls back to last.pt and says so.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import acn_in_process

import acn.train.loop as loop
from acn.config import load_config
from acn.errors import CheckpointError
from acn.eval.load import load_run
from acn.model import ACN
from acn.store.checkpoint import load_checkpoint, run_checkpoint
from acn.train.loop import train

# Validation totals by step, made up so that the best (step 4) is neither the first nor the last.
TOTALS = {2: 30.0, 4: 20.0, 6: 25.0, 8: 22.0}


def _cfg(tiny, *extra):
    return load_config("digits-acn", [*tiny, "train.eval_every=2", "train.steps=8", *extra])


@pytest.fixture
def scripted_validation(monkeypatch):
    """Validation returns TOTALS[step]: the choice of the best is then known in advance."""
    steps = []

    def evaluate(model, loader, device, seed):
        step = steps.pop(0)
        return {"kl_nats": 1.0, "recon_nats": TOTALS[step] - 1.0, "total_nats": TOTALS[step]}

    real_validate = loop._Run.validate

    def validate(self):
        steps.append(self.step)
        return real_validate(self)

    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(loop._Run, "validate", validate)


def test_best_is_the_lowest_validation_total(tmp_path, tiny_overrides, scripted_validation):
    run = tmp_path / "run"
    train(_cfg(tiny_overrides), run)
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert best["step"] == 4 and last["step"] == 8
    assert best["best"] == last["best"] == {"step": 4, "total_nats": 20.0}
    assert {"model", "optimizer", "rng", "running"} <= set(best)  # a resumable checkpoint
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])
    # Resuming from best.pt trains on from step 4.
    train(
        _cfg(tiny_overrides, "train.steps=6"),
        tmp_path / "again",
        resume=run / "checkpoints" / "best.pt",
    )
    assert load_checkpoint(tmp_path / "again")["step"] == 6


def test_a_resumed_run_keeps_the_uninterrupted_best(tmp_path, tiny_overrides):
    train(_cfg(tiny_overrides), tmp_path / "full")
    train(_cfg(tiny_overrides, "train.steps=5"), tmp_path / "split")
    train(_cfg(tiny_overrides), tmp_path / "split", resume=tmp_path / "split")
    a = torch.load(tmp_path / "full" / "checkpoints" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "best.pt", weights_only=True)
    assert a["step"] == b["step"] and a["best"] == b["best"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    totals = {
        r["step"]: r["total_nats"]
        for r in map(json.loads, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "val"
    }
    assert a["step"] == min(totals, key=totals.get)
    assert a["best"]["total_nats"] == totals[a["step"]]


def test_readers_take_best_by_default_and_last_when_asked(
    tmp_path, tiny_overrides, scripted_validation
):
    run = tmp_path / "run"
    train(_cfg(tiny_overrides), run)
    assert (load_run(run).step, load_run(run).checkpoint) == (4, "best")
    assert (load_run(run, checkpoint="last").step, load_run(run, checkpoint="last").checkpoint) == (
        8,
        "last",
    )
    assert ACN.load(run) is not None
    out = tmp_path / "eval.json"
    done = acn_in_process(["eval", run, "--out", out, "--samples", "1"])
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert (result["step"], result["which_checkpoint"]) == (4, "best")
    assert "step 4 (best checkpoint)" in done.stdout
    done = acn_in_process(["eval", run, "--out", out, "--samples", "1", "--checkpoint", "last"])
    assert json.loads(out.read_text())["which_checkpoint"] == "last"
    done = acn_in_process(
        [
            "sample",
            run,
            "--mode",
            "reconstruct",
            "--out",
            tmp_path / "s.png",
            "--num",
            "1",
            "--per-image",
            "1",
        ]
    )
    assert done.returncode == 0 and "step 4, best on validation" in done.stdout, done.stderr
    done = acn_in_process(["export", run, "--out", tmp_path / "exported", "--checkpoint", "last"])
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "exported" / "config.json").read_text())["step"] == 8
    bad = acn_in_process(["eval", run, "--out", out, "--checkpoint", "worst"])
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_run_without_best_falls_back_to_last(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    train(_cfg(tiny_overrides, "train.steps=2"), run)
    (run / "checkpoints" / "best.pt").unlink()  # as an older version left it
    assert run_checkpoint(run, "best").name == "last.pt"
    loaded = load_run(run)
    assert (loaded.step, loaded.checkpoint) == (2, "last")
    with pytest.raises(CheckpointError, match="checkpoint must be one of best, last"):
        run_checkpoint(run, "worst")
