"""How a code bank is shared by the processes of a group: replicated or sharded.

Algorithm 1 touches the bank twice per batch: it draws each example's neighbour from the k
nearest codes, and it writes the batch's fresh codes. With several processes each holds a slice
of the *global* batch, and the bank must come out as if one process had run the whole batch.
A :class:`~acn.bank.codebank.CodeBank` with no placement belongs to one process; training on
several installs one of these (``bank.placement = ...``), and ``bank.draw`` / ``bank.write``
dispatch to it, so the model's step is the same on one process and on many:

- :class:`ReplicatedPlacement`: every rank holds the whole bank. Each rank searches its own
  queries; the ranks gather the top-k lists and draw every neighbour of the global batch from one
  shared generator, and gather the (index, code) pairs so every replica applies the same update.
- :class:`ShardedPlacement`: rank r holds rows ``[lo, hi)`` only. The ranks gather the global
  batch's queries, each searches its slice, and the per-slice top-k lists are merged (the global
  k nearest are among them, and the canonical order -- distance, then row -- makes the merge
  return exactly the single-bank answer). A neighbour's code comes from the rank that owns it.

The random draws are made for the whole global batch on every rank from the same generator,
and each rank keeps its rows. A 2-process run therefore draws exactly what a 1-process run with
the same global batch draws, and the generator's state does not depend on the number of ranks,
so a checkpoint resumes on any number of them.

``sliced=True`` marks a training batch, this rank's slice of the global batch (its rows are
``[rank * B, (rank + 1) * B)``); the bank passes its training mode. ``sliced=False`` marks a
batch that is not spread over the ranks: validation on rank 0 alone (replicated), or the same
batch on every rank (sharded, where no rank can search alone).
"""

from __future__ import annotations

import torch

from acn.bank.codebank import CodeBank, uniform_pick
from acn.bank.exact import canonical_top_k
from acn.distributed import Ranks, gather_rows, my_rows, shard_range, sum_all


class _Placement:
    """What replicated and sharded banks share: the global batch's (index, code) pairs."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks

    def _whole_batch(self, index: torch.Tensor | None, c: torch.Tensor, sliced: bool):
        """The global batch's (index, code) pairs: gathered from every rank for a sliced batch,
        as they are otherwise. Codes are detached: the bank is data."""
        c = c.detach()
        if not sliced:
            return index, c
        rows = gather_rows(index, self.ranks) if index is not None else None
        return rows, gather_rows(c, self.ranks)


class ReplicatedPlacement(_Placement):
    """Every rank holds the whole bank; updates are gathered so the replicas stay equal."""

    def draw(self, bank: CodeBank, c, index, k, generator, unique, sliced):
        """Rows (B,) and codes (B, D) of this rank's queries' neighbours (see CodeBank.draw)."""
        if not sliced:  # rank 0 alone, e.g. validating: the local answer is the answer
            rows = bank.sample_neighbours(c, k, index, generator, unique=unique)
            return rows, bank.codes[rows]
        local = c.shape[0]
        if unique:
            # The constraint resolves the batch in order against the whole bank, so every rank
            # runs the global batch's search (identical everywhere) and keeps its rows.
            rows, queries = self._whole_batch(index, c, sliced)
            chosen = bank.sample_neighbours(queries, k, rows, generator, unique=True)
        else:
            dist, idx = bank.knn(c, k, exclude=index)  # this rank's queries only
            dist, idx = gather_rows(dist, self.ranks), gather_rows(idx, self.ranks)
            chosen = uniform_pick(dist, idx, generator)  # the global batch's draw
        neighbours = my_rows(chosen, local, self.ranks)
        return neighbours, bank.codes[neighbours]

    def update(self, bank: CodeBank, index, c, sliced) -> None:
        """Every replica writes the global batch's codes."""
        bank.update(*self._whole_batch(index, c, sliced))


class ShardedPlacement(_Placement):
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

    def draw(self, bank: CodeBank, c, index, k, generator, unique, sliced):
        """Rows (B,) and codes (B, D) of this rank's queries' neighbours. Collective."""
        local = c.shape[0]
        rows, queries = self._whole_batch(index, c, sliced)
        dist, idx = self.knn(bank, queries, k, rows)
        chosen = uniform_pick(dist, idx, generator)
        codes = self.lookup(bank, chosen)
        if sliced:
            chosen = my_rows(chosen, local, self.ranks)
            codes = my_rows(codes, local, self.ranks)
        return chosen, codes

    def update(self, bank: CodeBank, index, c, sliced) -> None:
        """Each rank writes the global batch's codes that fall in its slice."""
        index, c = self._whole_batch(index, c, sliced)
        owned = (index >= self.lo) & (index < self.hi)
        bank.update(index[owned] - self.lo, c[owned])


def _gather_columns(t: torch.Tensor, ranks: Ranks) -> list[torch.Tensor]:
    """Every rank's ``t`` as a list in rank order (for concatenation along another dim)."""
    return list(gather_rows(t[None], ranks).unbind(0))
