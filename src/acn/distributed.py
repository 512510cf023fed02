"""Several processes training one model: the process group and the few collectives a run needs.

``torchrun --nproc_per_node=N -m acn train ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment (one machine or
many). :func:`setup` joins the group they describe: NCCL for CUDA devices, gloo on CPU. Without
those variables, or with ``WORLD_SIZE=1``, everything here is a no-op and a run is one process.

Every helper is called by every rank in the same order (that is what collectives require), and
works on tensors of the group's device, so the code is the same on CPU and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from acn.errors import ConfigError
from acn.launch import launched_rank, launched_world, local_rank

__all__ = ["launched_rank"]  # re-exported: callers that already import torch find it here

# Rows per message when gathering a sharded bank for a checkpoint: bounds the memory in flight.
GATHER_CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress, writes checkpoints and (when it can alone) evaluates."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world > 1


SINGLE = Ranks()


def setup(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes (if any); this rank's place and device.

    Each rank on a machine takes the GPU of its ``LOCAL_RANK``. A group that is already
    initialised (a test, or a caller that set up its own) is used as it is.
    """
    world = launched_world()
    if world <= 1 and not dist.is_initialized():
        return SINGLE, device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(
            f"training on several processes needs train.device=cuda or cpu, not {device.type}"
        )
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device


def teardown(ranks: Ranks) -> None:
    """Leave the group :func:`setup` joined (a no-op for one process).

    Every rank waits for the others first: rank 0 still writes the final checkpoints after the
    last collective, and a rank that tears its gloo connections down while a peer is still
    using the group has been seen (once in CI; not reproduced here in 20 runs of the test) to
    abort with "terminate called without an active exception" as its process exits.
    """
    if ranks.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_range(num_rows: int, ranks: Ranks) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of an ``num_rows``-row bank that this rank holds: contiguous slices
    whose sizes differ by at most one, in rank order."""
    base, extra = divmod(num_rows, ranks.world)
    lo = ranks.rank * base + min(ranks.rank, extra)
    return lo, lo + base + (1 if ranks.rank < extra else 0)


def local_batch(batch_size: int, world: int) -> int:
    """Each rank's share of a global batch of ``batch_size``, which ``world`` must divide."""
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size={batch_size} (the global batch) must be divisible by the "
            f"number of processes ({world})"
        )
    return batch_size // world


def my_rows(rows: torch.Tensor, local: int, ranks: Ranks) -> torch.Tensor:
    """This rank's slice ``[rank * local, (rank + 1) * local)`` of a global batch's rows."""
    start = ranks.rank * local
    return rows[start : start + local]


def standard_normal(
    like: torch.Tensor, generator: torch.Generator | None, ranks: Ranks = SINGLE
) -> torch.Tensor:
    """N(0, I) noise shaped, typed and placed like ``like`` (B, ...), this rank's rows of a
    global batch of ``world * B``: every rank draws the whole global batch from the same
    generator and keeps its slice, so the draws (and the generator's state afterwards) do not
    depend on the number of ranks. Not collective."""
    shape = (like.shape[0] * ranks.world, *like.shape[1:])
    eps = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    return my_rows(eps, like.shape[0], ranks) if ranks.active else eps


def gather_rows(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Concatenate every rank's ``t`` (same shape on all ranks) along dim 0, in rank order."""
    if not ranks.active:
        return t
    parts = [torch.empty_like(t) for _ in range(ranks.world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def sum_all(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The element-wise sum of ``t`` over ranks (a new tensor on every rank)."""
    if not ranks.active:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def gather_shards_to_main(shard: torch.Tensor, num_rows: int, ranks: Ranks) -> torch.Tensor | None:
    """The whole ``(num_rows, ...)`` tensor on rank 0's CPU, from each rank's contiguous slice
    (see :func:`shard_range`); None on the other ranks.

    Point-to-point in chunks, so that no rank other than 0 ever holds more than its own slice,
    and rank 0 holds the whole only in host memory (it is what a checkpoint stores).
    """
    if not ranks.active:
        return shard.cpu()
    if not ranks.is_main:
        for start in range(0, shard.shape[0], GATHER_CHUNK_ROWS):
            dist.send(shard[start : start + GATHER_CHUNK_ROWS].contiguous(), dst=0)
        return None
    whole = torch.empty((num_rows, *shard.shape[1:]), dtype=shard.dtype)
    for r in range(ranks.world):
        lo, hi = shard_range(num_rows, Ranks(r, ranks.world))
        if r == 0:
            whole[lo:hi] = shard.cpu()
            continue
        for start in range(lo, hi, GATHER_CHUNK_ROWS):
            stop = min(start + GATHER_CHUNK_ROWS, hi)
            buffer = torch.empty((stop - start, *shard.shape[1:]), dtype=shard.dtype)
            buffer = buffer.to(shard.device)
            dist.recv(buffer, src=r)
            whole[start:stop] = buffer.cpu()
    return whole
