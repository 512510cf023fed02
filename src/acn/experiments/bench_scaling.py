"""Scaling efficiency of data-parallel training, measured on this machine.

The same ACN training step (digits preset, DDP through :func:`acn.train.parallel.prepare`, the code
bank replicated) runs in 1, 2, ... processes of a gloo (CPU) or NCCL (GPU) group, each process
with the same per-process batch and thread count (weak scaling). Efficiency with W processes is
their total images per second over W times one process's: 1.0 is perfect, and what is lost is the
gradient all-reduce, the bank's gathers and contention for the machine.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(
    rank: int,
    world: int,
    store: str,
    out: str,
    batch: int,
    steps: int,
    threads: int,
    device: str,
) -> None:
    from acn.config import load_config
    from acn.data.datasets import load_splits
    from acn.distributed import Ranks
    from acn.model import ACN
    from acn.train import parallel

    torch.set_num_threads(threads)
    dev = torch.device(device if device == "cpu" else f"cuda:{rank}")
    backend = "gloo" if dev.type == "cpu" else "nccl"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
    ranks = Ranks(rank, world)
    config = load_config("digits-acn", [f"train.batch_size={batch * world}"])
    splits, info = load_splits(config.data, config.seed)
    model = ACN(config, info, len(splits["train"]), generator=torch.Generator().manual_seed(0))
    model, net = parallel.prepare(model, config, ranks, dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    generator = torch.Generator(device=dev).manual_seed(1)
    images = splits["train"].images.to(dev)
    n = images.shape[0]
    times = []
    for step in range(steps + 3):  # three warm-up steps
        first = (step * batch * world + rank * batch) % (n - batch)
        index = torch.arange(first, first + batch, device=dev)
        dist.barrier()
        start = time.perf_counter()
        terms = net(images[index], index=index, generator=generator, update_bank=True)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dist.barrier()  # a step is done when the slowest rank is done
        if step >= 3:
            times.append(time.perf_counter() - start)
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s": statistics.median(times)}))
    dist.destroy_process_group()


def scaling(
    worlds: tuple[int, ...] = (1, 2),
    batch: int = 32,
    steps: int = 20,
    threads: int = 1,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Median step time and images/s for each number of processes, and the efficiency.

    Returns:
        One record per world size: ``processes``, ``batch_per_process``, ``step_ms``,
        ``images_per_s`` and ``efficiency`` (relative to the first world size, per process).
    """
    if device == "cuda":  # one GPU per process
        worlds = tuple(w for w in worlds if w <= torch.cuda.device_count())
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="acn-scaling-") as tmp:
        for world in worlds:
            out = Path(tmp) / f"world{world}.json"
            store = Path(tmp) / f"store{world}"
            args = (world, str(store), str(out), batch, steps, threads, device)
            mp.spawn(_worker, args=args, nprocs=world, join=True)
            step_s = json.loads(out.read_text())["step_s"]
            records.append(
                {
                    "processes": world,
                    "batch_per_process": batch,
                    "threads_per_process": threads,
                    "step_ms": 1000 * step_s,
                    "images_per_s": batch * world / step_s,
                }
            )
    base = records[0]["images_per_s"] / records[0]["processes"]
    for r in records:
        r["efficiency"] = r["images_per_s"] / (r["processes"] * base)
    return records
