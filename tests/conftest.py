"""Shared fixtures and the slow tier switch (``--slow``, ``ACN_SLOW=1`` or ``CI=true``)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest
import torch

# Settings that make a digits run take seconds: small networks, few steps, no extras.
TINY = (
    "train.steps=6",
    "train.batch_size=16",
    "train.log_every=2",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.progress=false",
    "train.tensorboard=false",
    "model.encoder_channels=8,8",
    "model.prior_hidden=16",
    "model.decoder_channels=8",
    "model.pixelcnn_layers=2",
    "model.latent_map_channels=4",
    "model.code_dim=4",
    # float32 whatever the CPU: the suite's exact comparisons (resume, processes, reuse) and
    # its numbers should not depend on whether this machine computes bf16 in hardware.
    "train.precision=float32",
)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the slow end-to-end tests")


def _slow_enabled(config) -> bool:
    env = os.environ.get("ACN_SLOW", "") == "1" or os.environ.get("CI", "").lower() == "true"
    return config.getoption("--slow") or env


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Tiny tensors: one intra-op thread is far faster on a small, shared machine, where two
    threads contend with every other process (seen: 100x slower tiny convolutions). Through
    ``OMP_NUM_THREADS`` too, which the library's automatic thread count follows (acn.threads),
    so that a run trained in-process computes as it did before and as its twin in a subprocess."""
    threads, saved = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if saved is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = saved


def pytest_collection_modifyitems(config, items):
    if _slow_enabled(config):
        return
    skip = pytest.mark.skip(reason="slow tier: run with --slow (CI=true turns it on)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Settings that make a digits run take seconds: small networks, few steps, no extras."""
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """Finished tiny digits runs of the ACN, the VAE and the decoder-only PixelCNN, trained once
    per session: ``{"acn": RUN_DIR, "vae": ..., "pixelcnn": ...}``. Treat them as read-only."""
    from acn.config import load_config
    from acn.train.loop import train

    root = tmp_path_factory.mktemp("tiny-runs")
    runs = {}
    for name in ("acn", "vae", "pixelcnn"):
        runs[name] = root / name
        train(load_config(f"digits-{name}", list(TINY)), runs[name])
    return runs


def acn_in_process(args: list[str]) -> subprocess.CompletedProcess:
    """``acn ARGS`` run in this process (no interpreter and torch start-up per call), as a
    ``CompletedProcess`` with the exit code and the captured stdout and stderr. The real
    ``python -m acn`` processes are exercised by tests/cli (and the slow tier's bad-input table)."""
    from acn.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors and --help
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["acn", *args], code, out.getvalue(), err.getvalue())
