"""bf16 autocast and torch.compile: options that change speed, not what a run means."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from acn.config import load_config
from acn.store.checkpoint import load_checkpoint
from acn.train import parallel
from acn.train.loop import train


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_is_bf16_only_where_the_cpu_computes_it(native, monkeypatch):
    monkeypatch.setattr(parallel, "cpu_native_bf16", lambda: native)
    assert parallel.use_bf16("auto", torch.device("cpu")) == native
    assert not parallel.use_bf16("float32", torch.device("cpu"))
    assert parallel.use_bf16("bf16", torch.device("cpu"))


def test_bf16_changes_the_arithmetic_but_not_the_checkpoint(tmp_path):
    runs = {}
    for precision in ("float32", "bf16"):
        config = load_config("digits-acn", [*TINY, f"train.precision={precision}"])
        train(config, tmp_path / precision)
        runs[precision] = load_checkpoint(tmp_path / precision / "checkpoints/last.pt")
    a, b = runs["float32"]["model"], runs["bf16"]["model"]
    assert a.keys() == b.keys()
    assert all(b[k].dtype == a[k].dtype for k in a)  # master weights and bank stay float32
    changed = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert changed  # autocast really ran in lower precision...
    for k in changed:  # ...and six steps of it land near the float32 run
        torch.testing.assert_close(b[k], a[k], atol=0.05, rtol=0.05)


def test_precision_may_change_on_resume(tmp_path):
    first = load_config("digits-acn", [*TINY, "train.steps=3"])
    train(first, tmp_path / "run")
    then = load_config("digits-acn", [*TINY, "train.precision=bf16"])
    summary = train(then, tmp_path / "run", resume=tmp_path / "run")
    assert summary["step"] == 6


@pytest.mark.slow
def test_compiled_networks_keep_names_and_numbers(tmp_path):
    runs = {}
    for compiled in ("false", "true"):
        config = load_config("digits-acn", [*TINY, f"train.compile={compiled}"])
        train(config, tmp_path / compiled)
        runs[compiled] = load_checkpoint(tmp_path / compiled / "checkpoints/last.pt")["model"]
    plain, compiled = runs["false"], runs["true"]
    assert plain.keys() == compiled.keys()  # compiled in place: checkpoints interchangeable
    for k in plain:
        torch.testing.assert_close(compiled[k], plain[k], atol=1e-4, rtol=1e-4)
