"""Training on several processes: the sharded and replicated bank, DDP steps, torchrun runs.

The multi-process tests start real gloo groups on this CPU (``torch.multiprocessing.spawn`` with
a file store, or ``torchrun --standalone``), so they test the collectives themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dist_workers
import forked
import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY

from acn.bank.exact import canonical_top_k
from acn.config import load_config
from acn.distributed import SINGLE, Ranks, shard_range
from acn.errors import ConfigError
from acn.store.checkpoint import load_checkpoint
from acn.train.loop import train


def _spawn(fn, world: int, tmp_path: Path, *args) -> None:
    store = tmp_path / f"store-{fn.__name__}-{world}"
    forked.context()  # forked from a server that has imported torch and the library once
    mp.start_processes(
        fn, args=(world, str(store), *args), nprocs=world, join=True, start_method="forkserver"
    )


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 3), (7, 7), (1_281_167, 4), (5, 2)])
def test_shard_ranges_tile_the_bank(n, world):
    bounds = [shard_range(n, Ranks(r, world)) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_canonical_order_breaks_ties_by_row():
    dist = torch.tensor([[2.0, 1.0, 1.0, float("inf"), 1.0]])
    idx = torch.tensor([[4, 9, 3, -1, 7]])
    d, i = canonical_top_k(dist, idx, 4)
    assert i.tolist() == [[3, 7, 9, 4]]
    assert d.tolist() == [[1.0, 1.0, 1.0, 2.0]]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_sharded_bank_returns_what_the_whole_bank_returns(tmp_path, world):
    _spawn(dist_workers.sharded_equals_whole, world, tmp_path)


def test_replicated_draws_and_updates_equal_one_process(tmp_path):
    _spawn(dist_workers.replicated_equals_single, 2, tmp_path)


def test_the_replica_check_notices_a_diverged_rank(tmp_path):
    config = load_config("digits-acn", [*TINY, "train.device=cpu"])
    _spawn(dist_workers.replicas_must_agree, 2, tmp_path, config)


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].double(), b[key].double(), atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("placement", ["replicated", "sharded"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, placement):
    config = load_config(
        "digits-acn", [*TINY, "train.device=cpu", f"codebank.placement={placement}"]
    )
    one = dist_workers.run_steps(config, SINGLE, steps=4)
    _spawn(dist_workers.train_steps, 2, tmp_path, config, 4, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # The replicas are identical, not merely close: parameters and (replicated) bank.
    params = [k for k in one["state"] if not k.startswith("bank.")]
    whole = ranks[0]["state"]
    if placement == "replicated":
        assert torch.equal(ranks[0]["own_rows"], ranks[1]["own_rows"])
        assert torch.equal(ranks[1]["state"]["bank.codes"], whole["bank.codes"])
        for key in params:
            assert torch.equal(ranks[1]["state"][key], whole[key]), key
    else:
        assert ranks[1]["state"] is None  # only rank 0 assembles the sharded bank
        n = whole["bank.codes"].shape[0]
        assert ranks[0]["own_rows"].shape[0] + ranks[1]["own_rows"].shape[0] == n
        assert torch.equal(torch.cat([r["own_rows"] for r in ranks]), whole["bank.codes"])
    # The same draws: the generator has consumed exactly what one process consumed.
    assert torch.equal(ranks[0]["generator"], one["generator"])
    # And the same numbers, up to the order of floating-point reductions.
    _close(whole, one["state"], atol=1e-4)


def _torchrun(nproc: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "acn",
        *args,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_runs_agree(a: Path, b: Path, atol: float = 1e-4, stopped_at: int = 0) -> None:
    """Checkpoints and metrics of run ``b`` match run ``a``'s; ``b`` may have been stopped at
    step ``stopped_at`` (its end then logged a partial training window ``a`` does not have)."""
    pa, pb = load_checkpoint(a / "checkpoints/last.pt"), load_checkpoint(b / "checkpoints/last.pt")
    assert pa["step"] == pb["step"]
    _close(pa["model"], pb["model"], atol)
    assert torch.equal(pa["rng"]["generator"], pb["rng"]["generator"])
    ma = _metrics(a)
    mb = [r for r in _metrics(b) if (r["step"], r["split"]) != (stopped_at, "train")]
    assert [(r["step"], r["split"]) for r in ma] == [(r["step"], r["split"]) for r in mb]
    for ra, rb in zip(ma, mb, strict=True):
        for key in ("loss", "kl_nats", "recon_nats", "total_nats"):
            if key in ra:
                assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-4), (ra, rb)


def test_torchrun_trains_once_and_rank_0_writes(tmp_path):
    config = [*TINY, "train.device=cpu"]
    train(load_config("digits-acn", config), tmp_path / "one")
    done = _torchrun(2, ["train", "digits-acn", *config, "--out", "two"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # One summary, from rank 0; one metrics file; a checkpoint that matches one process.
    assert done.stdout.count("checkpoint:") == 1, done.stdout
    _assert_runs_agree(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("first", "then", "placement"),
    [(2, 1, "replicated"), (1, 2, "sharded"), (2, 3, "sharded"), (3, 2, "replicated")],
)
def test_resume_on_another_number_of_processes(tmp_path, first, then, placement):
    base = [*TINY, "train.device=cpu", "train.batch_size=12", f"codebank.placement={placement}"]
    train(load_config("digits-acn", base), tmp_path / "straight")
    half = ["train", "digits-acn", *base, "train.steps=3", "--out", "split"]
    done = _torchrun(first, half, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    resume = ["train", "digits-acn", *base, "--out", "split", "--resume", "split"]
    done = _torchrun(then, resume, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_runs_agree(tmp_path / "straight", tmp_path / "split", stopped_at=3)


def test_a_global_batch_must_split_evenly(tmp_path):
    args = ["train", "digits-acn", *TINY, "train.batch_size=15", "--out", "r"]
    done = _torchrun(2, args, tmp_path)
    assert done.returncode != 0  # torchrun reports a failed worker with its own exit code
    for rank in (0, 1):
        assert f"acn: error: [rank {rank}] train.batch_size=15 (the global batch) must be " in (
            done.stderr
        )
    assert (
        "Traceback" not in done.stderr.split("torch/distributed/elastic")[0]
    )  # before torchrun speaks


def test_sharding_refuses_the_unique_constraint():
    with pytest.raises(ConfigError, match="codebank.unique=true needs codebank.placement"):
        load_config("digits-acn", ["codebank.placement=sharded", "codebank.unique=true"])
