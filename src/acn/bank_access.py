"""How a batch reaches the code bank: in one process, or across the ranks of a group.

Algorithm 1 touches the bank twice per batch: it draws each example's neighbour from the k
nearest codes, and it writes the batch's fresh codes. With several processes each rank holds a
slice of the *global* batch, and the bank must come out the same as if one process had run the
whole batch. Three strategies, one interface:

- :class:`LocalAccess`: one process; the bank is searched and written directly.
- :class:`ReplicatedAccess`: every rank holds the whole bank. Each rank searches its own queries;
  the ranks gather the top-k lists and draw every neighbour of the global batch from one shared
  generator, and gather the (index, code) pairs so that every replica applies the same update.
- :class:`ShardedAccess`: rank r holds rows ``[lo, hi)`` only. The ranks gather the global
  batch's queries, each searches its slice, and the per-slice top-k lists are merged (the global
  k nearest are among them, and the canonical order -- distance, then row -- makes the merge
  return exactly the single-bank answer). A neighbour's code comes from the rank that owns it.

The random draws (neighbour choice, the noise of z) are made for the whole global batch on every
rank from the same generator, and each rank keeps its rows. A 2-process run therefore draws
exactly what a 1-process run with the same global batch draws, and the generator's state does
not depend on the number of ranks, so a checkpoint resumes on any number of them.

``split=True`` marks a training batch, this rank's slice of the global batch (its rows are
``[rank * B, (rank + 1) * B)``). ``split=False`` marks a batch that is not spread over the ranks:
validation on rank 0 alone (replicated), or the same batch on every rank (sharded, where no rank
can search alone).
"""

from __future__ import annotations

import torch

from acn.codebank import CodeBank, canonical_top_k, uniform_pick
from acn.distributed import Ranks, gather_rows, shard_range, sum_all


class LocalAccess:
    """One process holds the bank and the whole batch."""

    def draw(
        self,
        bank: CodeBank,
        c: torch.Tensor,
        index: torch.Tensor | None,
        k: int,
        generator: torch.Generator | None,
        unique: bool,
        split: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each example's neighbour row (B,) and its code c_hat (B, D), drawn from the k nearest
        codes with the example's own row excluded."""
        neighbours = bank.sample_neighbours(c, k, index, generator, unique=unique)
        return neighbours, bank.codes[neighbours]

    def update(self, bank: CodeBank, index: torch.Tensor, c: torch.Tensor, split: bool) -> None:
        """Write the batch's fresh codes into their rows."""
        bank.update(index, c)

    def noise(self, c: torch.Tensor, generator: torch.Generator | None, split: bool):
        """The N(0, I) noise of z = c + eps for this batch's rows."""
        return torch.randn(c.shape, generator=generator, device=c.device, dtype=c.dtype)


LOCAL = LocalAccess()


class _GroupAccess(LocalAccess):
    """What replicated and sharded access share: the global batch's draws, sliced."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks

    def _mine(self, rows: torch.Tensor, local: int) -> torch.Tensor:
        start = self.ranks.rank * local
        return rows[start : start + local]

    def _whole_batch(self, index: torch.Tensor | None, c: torch.Tensor, split: bool):
        """The global batch's (index, code) pairs: gathered from every rank for a split batch,
        as they are otherwise. Codes are detached: the bank is data."""
        c = c.detach()
        if not split:
            return index, c
        rows = gather_rows(index, self.ranks) if index is not None else None
        return rows, gather_rows(c, self.ranks)

    def noise(self, c: torch.Tensor, generator: torch.Generator | None, split: bool):
        if not split:
            return super().noise(c, generator, split)
        shape = (c.shape[0] * self.ranks.world, *c.shape[1:])
        eps = torch.randn(shape, generator=generator, device=c.device, dtype=c.dtype)
        return self._mine(eps, c.shape[0])


class ReplicatedAccess(_GroupAccess):
    """Every rank holds the whole bank; updates are gathered so the replicas stay equal."""

    def draw(self, bank, c, index, k, generator, unique, split):
        if not split:  # rank 0 alone, e.g. validating: the local answer is the answer
            return super().draw(bank, c, index, k, generator, unique, split)
        local = c.shape[0]
        if unique:
            # The constraint resolves the batch in order against the whole bank, so every rank
            # runs the global batch's search (identical everywhere) and keeps its rows.
            rows, queries = self._whole_batch(index, c, split)
            chosen = bank.sample_neighbours(queries, k, rows, generator, unique=True)
        else:
            dist, idx = bank.knn(c, k, exclude=index)  # this rank's queries only
            dist, idx = gather_rows(dist, self.ranks), gather_rows(idx, self.ranks)
            chosen = uniform_pick(dist, idx, generator)  # the global batch's draw
        neighbours = self._mine(chosen, local)
        return neighbours, bank.codes[neighbours]

    def update(self, bank, index, c, split):
        bank.update(*self._whole_batch(index, c, split))


class ShardedAccess(_GroupAccess):
    """Rank r holds bank rows ``[lo, hi)`` of ``num_rows`` (see
    :func:`acn.distributed.shard_range`); searches and lookups are collective."""

    def __init__(self, ranks: Ranks, num_rows: int) -> None:
        super().__init__(ranks)
        self.num_rows = num_rows
        self.lo, self.hi = shard_range(num_rows, ranks)

    def knn(
        self, shard: CodeBank, queries: torch.Tensor, k: int, exclude: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest rows of the whole bank to ``queries`` (the same on every rank), with
        the same result as :meth:`CodeBank.knn` on the whole bank. Collective."""
        B = queries.shape[0]
        dist = torch.full((B, k), float("inf"), device=queries.device)
        idx = torch.full((B, k), -1, dtype=torch.long, device=queries.device)
        mine = min(k, shard.num_codes)
        local_exclude = exclude - self.lo if exclude is not None else None
        d, i = shard.knn(queries, mine, exclude=local_exclude)  # rows outside are ignored
        dist[:, :mine], idx[:, :mine] = d, i + self.lo
        # (B, world * k) candidates; the global k nearest are among them.
        dist = torch.cat(_gather_columns(dist, self.ranks), dim=1)
        idx = torch.cat(_gather_columns(idx, self.ranks), dim=1)
        return canonical_top_k(dist, idx, k)

    def lookup(self, shard: CodeBank, rows: torch.Tensor) -> torch.Tensor:
        """The codes of global ``rows`` (the same on every rank), from the ranks that hold them.
        Collective: each rank fills the rows it owns and the sum assembles them exactly."""
        owned = (rows >= self.lo) & (rows < self.hi)
        codes = torch.zeros(rows.shape[0], shard.dim, device=shard.codes.device)
        codes[owned] = shard.codes[rows[owned] - self.lo]
        return sum_all(codes, self.ranks)

    def draw(self, bank, c, index, k, generator, unique, split):
        local = c.shape[0]
        rows, queries = self._whole_batch(index, c, split)
        dist, idx = self.knn(bank, queries, k, rows)
        chosen = uniform_pick(dist, idx, generator)
        codes = self.lookup(bank, chosen)
        if split:
            chosen, codes = self._mine(chosen, local), self._mine(codes, local)
        return chosen, codes

    def update(self, bank, index, c, split):
        index, c = self._whole_batch(index, c, split)
        owned = (index >= self.lo) & (index < self.hi)
        bank.update(index[owned] - self.lo, c[owned])


def _gather_columns(t: torch.Tensor, ranks: Ranks) -> list[torch.Tensor]:
    """Every rank's ``t`` as a list in rank order (for concatenation along another dim)."""
    return list(gather_rows(t[None], ranks).unbind(0))
