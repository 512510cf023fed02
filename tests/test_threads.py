"""The thread count: chosen from the free cores, recorded by every run and evaluation, kept on
resume, and a rerun with the recorded count computes the same numbers.

Proves: an explicit count is used as given, a negative one refused; auto follows
``OMP_NUM_THREADS``, else the cores minus those other processes keep busy (at least one), and
really sees a competing CPU-bound process; ``train`` records the count it used in ``config.json``
and the checkpoint, restores the caller's count afterwards, and on resume keeps the recorded
count when none is asked for; a rerun from the recorded config is bit-identical; ``acn eval``
records its count and refuses a bad ``--threads`` in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import acn_in_process

from acn import threads
from acn.config import load_config
from acn.store.checkpoint import load_checkpoint
from acn.train.loop import train


def test_an_explicit_count_is_used_and_a_negative_one_refused(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose(3) == 3
    with pytest.raises(ValueError, match="threads must be 0"):
        threads.choose(-1)


@pytest.mark.parametrize(("busy", "expected"), [(0, 4), (1, 3), (3, 1), (9, 1), (None, 4)])
def test_auto_uses_the_cores_no_other_process_keeps_busy(monkeypatch, busy, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    assert threads.choose() == expected
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the environment's count wins over the guess
    assert threads.choose() == 2


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="needs Linux's /proc/loadavg")
def test_a_competing_process_is_seen_as_a_busy_core():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past its start-up, into the loop
        assert threads.busy_cores() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def _tiny(tiny_overrides, *more):
    return load_config("digits-acn", [*tiny_overrides, *more])


def test_a_run_records_its_count_and_restores_the_callers(tmp_path, tiny_overrides):
    before = torch.get_num_threads()
    train(_tiny(tiny_overrides, "train.threads=2"), tmp_path / "two")
    assert torch.get_num_threads() == before
    saved = json.loads((tmp_path / "two" / "config.json").read_text())
    assert saved["train"]["threads"] == 2
    assert load_checkpoint(tmp_path / "two")["config"]["train"]["threads"] == 2
    # Auto, here under the suite's OMP_NUM_THREADS=1: the count it resolved to is recorded.
    train(_tiny(tiny_overrides), tmp_path / "auto")
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["train"]["threads"] == 1


def test_resume_keeps_the_recorded_count_and_a_rerun_is_bit_identical(tmp_path, tiny_overrides):
    train(_tiny(tiny_overrides, "train.threads=2", "train.steps=3"), tmp_path / "run")
    # Resumed with auto (which alone would pick 1 here): the run goes on with its 2 threads.
    train(_tiny(tiny_overrides), tmp_path / "run", resume=tmp_path / "run")
    state = load_checkpoint(tmp_path / "run")
    assert state["config"]["train"]["threads"] == 2 and state["step"] == 6
    # A rerun from the recorded config.json, from scratch, computes the same weights bit for bit.
    rerun = tmp_path / "rerun"
    done = acn_in_process(["train", tmp_path / "run" / "config.json", "--out", rerun])
    assert done.returncode == 0, done.stderr
    again = load_checkpoint(rerun)
    assert again["config"]["train"]["threads"] == 2
    assert all(torch.equal(state["model"][k], again["model"][k]) for k in state["model"])


def test_eval_records_its_count_and_refuses_a_bad_one(tmp_path, tiny_runs):
    out = tmp_path / "eval.json"
    done = acn_in_process(
        ["eval", tiny_runs["acn"], "--out", out, "--samples", "2", "--threads", "2"]
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["protocol"]["threads"] == 2
    bad = acn_in_process(["eval", tiny_runs["acn"], "--out", out, "--threads", "-1"])
    assert bad.returncode == 2 and "must be at least 0 (auto)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
