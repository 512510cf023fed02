"""Faults: SIGKILL at any moment, Ctrl-C, non-finite losses and gradients, full disks."""

from __future__ import annotations

import dataclasses
import errno
import os
import resource
import signal
import subprocess
import sys
import time

import forked
import pytest
import torch
from kill_harness import run_trial

from acn.config import load_config
from acn.errors import CheckpointError, TrainingError
from acn.model import ACN
from acn.train.loop import train

ACN_CMD = [sys.executable, "-m", "acn"]


def _cfg(tiny, *extra):
    return load_config("digits-acn", [*tiny, *extra])


def _kill_trial(tmp_path, kills, seed):
    started = time.perf_counter()
    report = run_trial(tmp_path, kills=kills, seed=seed, write_fraction=0.5)
    print(f"{report.line()} [{time.perf_counter() - started:.0f} s]")
    assert report.kills == kills, report
    assert report.equal, report.mismatches
    return report


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    report = _kill_trial(tmp_path, kills=4, seed=3)
    assert report.during_write >= 1, report


@pytest.mark.slow
def test_sigkill_forty_times_then_resume_is_bit_identical(tmp_path):
    report = _kill_trial(tmp_path, kills=40, seed=0)
    assert report.during_write >= 10, report


class _PoisonGradient(torch.autograd.Function):
    """Identity forward; a non-finite gradient backward."""

    @staticmethod
    def forward(ctx, x, value):
        ctx.value = value
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.value, None


@pytest.mark.parametrize(
    ("term", "field", "value"),
    [("KL", "kl_nats", float("nan")), ("reconstruction", "recon_nats", float("inf"))],
)
def test_a_nonfinite_gradient_names_its_term_and_step(
    tmp_path, tiny_overrides, monkeypatch, term, field, value
):
    run = tmp_path / "run"
    train(_cfg(tiny_overrides, "train.steps=3"), run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    real = ACN.forward

    def forward(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        poisoned = _PoisonGradient.apply(getattr(terms, field), value)
        terms = dataclasses.replace(terms, **{field: poisoned})
        return dataclasses.replace(terms, loss=(terms.kl_nats + terms.recon_nats).mean())

    monkeypatch.setattr(ACN, "forward", forward)
    expected = rf"gradient of the {term} term is not finite at step 4"
    with pytest.raises(TrainingError, match=expected):
        train(_cfg(tiny_overrides), run, resume=run)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_an_infinite_kl_stops_with_its_name(tmp_path, tiny_overrides, monkeypatch):
    real = ACN.forward

    def forward(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        return dataclasses.replace(terms, kl_nats=terms.kl_nats + float("inf"))

    monkeypatch.setattr(ACN, "forward", forward)
    with pytest.raises(TrainingError, match="KL term is not finite at step 1"):
        train(_cfg(tiny_overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path, tiny_overrides, monkeypatch
):
    run = tmp_path / "run"
    train(_cfg(tiny_overrides, "train.steps=3"), run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    real_save = torch.save

    def half_then_full(obj, f, *args, **kwargs):
        f.write(before[: len(before) // 2])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_full)
    expected = "No space left on device; the previous one is intact"
    with pytest.raises(CheckpointError, match=expected):
        train(_cfg(tiny_overrides), run, resume=run)
    monkeypatch.setattr(torch, "save", real_save)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_file_size_limit_through_the_cli_keeps_the_previous_checkpoint(tmp_path, tiny_overrides):
    """A real write failure from the operating system: RLIMIT_FSIZE makes every write past the
    limit fail with EFBIG (Python ignores SIGXFSZ), like a disk that fills up."""
    run = tmp_path / "run"
    train(_cfg(tiny_overrides, "train.steps=3"), run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    limit = len(before) // 2

    def cap_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [*ACN_CMD, "train", "digits-acn", *tiny_overrides, "--out", str(run), "--resume", str(run)],
        capture_output=True,
        text=True,
        preexec_fn=cap_file_size,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "could not write checkpoint" in lines[0] and "previous one is intact" in lines[0]
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    args = [*tiny_overrides, "train.steps=2000", "train.checkpoint_every=5000", "train.log_every=5"]
    args.append("train.eval_every=0")  # the first metrics line is then the step-5 average
    # A forked process (tests/forked.py): a real process and a real SIGINT, without the process
    # importing torch afresh.
    proc = forked.Command(["train", "digits-acn", *args, "--out", out], tmp_path / "logs")
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "SIGINT received: stopped after step" in err, err
    assert "Traceback" not in err
    resume_line = [line for line in err.splitlines() if line.startswith("resume with: acn train")]
    assert resume_line and f"--resume {out / 'checkpoints' / 'last.pt'}" in resume_line[0]
    step = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 5 <= step < 2000
