"""The code bank: one stored code per training example, and exact k-nearest-neighbour search.

Rows are indexed by dataset position and start as N(0, I) draws (paper, Algorithm 1). A batch's
fresh codes overwrite their rows; other rows stay stale until revisited. Updates are
(index, code) pairs, so that data-parallel replicas can later apply the same global update, and
the search is one method, so that another back-end can later stand behind the same interface.

The search is batched over the queries and chunked over the bank: squared distances come from
||q||^2 - 2 q c^T + ||c||^2 with cached row norms, one fused matrix product and one top-k per
chunk (||q||^2 is the same along a row, so it is left out of the ranking), and memory is
O(B x chunk) however large N is. The few surviving candidates are then re-ranked with directly
computed distances, so the returned order is exact rather than subject to the cancellation
error of the expanded form.
"""

from __future__ import annotations

import torch
from torch import nn

# Candidates kept beyond k before the exact re-rank; absorbs the expanded form's rounding.
RERANK_MARGIN = 8


class CodeBank(nn.Module):
    """N codes of dimension D as buffers, with exact Euclidean k-NN that excludes given rows.

    Args:
        num_codes: N, the number of training examples.
        dim: D, the code dimension.
        chunk_size: bank rows scored at once by :meth:`knn`.
        generator: source of the N(0, I) initial codes.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        chunk_size: int = 65536,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(
                f"a code bank needs num_codes >= 1 and dim >= 1, got {num_codes}, {dim}"
            )
        self.num_codes, self.dim, self.chunk_size = num_codes, dim, chunk_size
        codes = torch.randn(num_codes, dim, generator=generator)
        self.register_buffer("codes", codes)  # (N, D)
        self.register_buffer("sq_norms", codes.pow(2).sum(dim=1))  # (N,), cached ||c||^2
        # Rows already used as a neighbour in this pass (for the unique-neighbour constraint).
        self.register_buffer("used", torch.zeros(num_codes, dtype=torch.bool))  # (N,)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, codes: torch.Tensor) -> None:
        """Overwrite rows ``indices`` (B,) with ``codes`` (B, D). Indices must be distinct."""
        indices = indices.to(self.codes.device, torch.long)
        codes = codes.detach().to(self.codes.device, self.codes.dtype)
        self.codes[indices] = codes
        self.sq_norms[indices] = codes.pow(2).sum(dim=1)

    def reset_usage(self) -> None:
        """Start a new pass: every row may again serve as a neighbour once."""
        self.used.zero_()

    @torch.no_grad()
    def knn(
        self,
        queries: torch.Tensor,
        k: int,
        exclude: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest bank rows to each query, nearest first.

        Args:
            queries: (B, D) codes.
            k: neighbours per query.
            exclude: (B,) or (B, E) row indices never returned for that query; pass the queries'
                own indices, otherwise a training example finds its own (possibly stale) code and
                the prior sees the answer. Entries outside [0, N) are ignored (use -1 as padding).
            allowed: optional (N,) bool mask; rows that are False are never returned.

        Returns:
            ``(distances, indices)``, each (B, k): Euclidean distances, ascending, and row
            indices. Where fewer than k rows are eligible the tail has distance ``inf``.
        """
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (B, {self.dim}), got {tuple(queries.shape)}")
        if not 1 <= k <= self.num_codes:
            raise ValueError(f"k={k} must be between 1 and the bank size {self.num_codes}")
        q = queries.detach().to(self.codes.device, self.codes.dtype)  # (B, D)
        B = q.shape[0]
        if exclude is not None:
            exclude = exclude.to(self.codes.device, torch.long).reshape(B, -1)  # (B, E)
        rows = (
            torch.arange(B, device=q.device)[:, None].expand(B, exclude.shape[1])
            if exclude is not None
            else None
        )
        keep = min(k + RERANK_MARGIN, self.num_codes)
        best_d = q.new_empty(B, 0)
        best_i = torch.empty(B, 0, dtype=torch.long, device=q.device)
        for start in range(0, self.num_codes, self.chunk_size):
            stop = min(start + self.chunk_size, self.num_codes)
            # ||c||^2 - 2 q.c: the squared distance less ||q||^2, a per-row constant that cannot
            # change the ranking; one fused matrix product, no further pass over (B, n).
            d2 = torch.addmm(self.sq_norms[start:stop], q, self.codes[start:stop].T, alpha=-2)
            if exclude is not None:
                local = exclude - start  # (B, E)
                hit = (local >= 0) & (local < stop - start)
                d2[rows[hit], local[hit]] = float("inf")
            if allowed is not None:
                d2.masked_fill_(~allowed[start:stop].to(q.device), float("inf"))
            d, i = d2.topk(min(keep, stop - start), dim=1, largest=False)  # (B, keep)
            best_d, order = torch.cat([best_d, d], dim=1).topk(
                min(keep, best_d.shape[1] + d.shape[1]), dim=1, largest=False
            )
            best_i = torch.cat([best_i, i + start], dim=1).gather(1, order)
        # Exact re-rank of the few candidates by direct differences.
        exact = (q[:, None, :] - self.codes[best_i]).pow(2).sum(dim=-1)  # (B, keep)
        exact = torch.where(torch.isinf(best_d), best_d, exact)
        exact, order = exact.sort(dim=1, stable=True)
        return exact[:, :k].sqrt(), best_i.gather(1, order)[:, :k]

    @torch.no_grad()
    def sample_neighbours(
        self,
        queries: torch.Tensor,
        k: int,
        exclude: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        unique: bool = False,
    ) -> torch.Tensor:
        """Draw one neighbour index per query uniformly from its k nearest (Algorithm 1).

        With ``unique=True`` (the paper's unique-neighbour constraint) rows already used as a
        neighbour in this pass are ineligible, and so are rows taken by an earlier query of the
        same batch; the chosen rows are marked used. A query with no eligible row left (the end
        of a pass) falls back to the unconstrained search, so training never stalls.

        Returns:
            (B,) row indices.
        """
        if not unique:
            dist, idx = self.knn(queries, k, exclude)
            return uniform_pick(dist, idx, generator)
        B = queries.shape[0]
        chosen = torch.full((B,), -1, dtype=torch.long, device=self.codes.device)
        taken = self.used.clone()
        pending = torch.arange(B, device=self.codes.device)
        ex = exclude.reshape(B, -1) if exclude is not None else None
        while pending.numel():
            sub_ex = ex[pending] if ex is not None else None
            dist, idx = self.knn(queries[pending], k, sub_ex, allowed=~taken)
            stranded = torch.isinf(dist[:, 0])
            if stranded.any():
                free_d, free_i = self.knn(
                    queries[pending[stranded]], k, sub_ex[stranded] if sub_ex is not None else None
                )
                chosen[pending[stranded]] = uniform_pick(free_d, free_i, generator)
            pending, dist, idx = pending[~stranded], dist[~stranded], idx[~stranded]
            if not pending.numel():
                break
            pick = uniform_pick(dist, idx, generator)  # (P,)
            # When two queries pick the same row, the earlier one in the batch keeps it.
            _, inverse = torch.unique(pick, return_inverse=True)
            position = torch.arange(pick.numel(), device=pick.device)
            first = torch.full((pick.numel(),), pick.numel(), device=pick.device, dtype=torch.long)
            first = first.scatter_reduce(0, inverse, position, reduce="amin")
            wins = first[inverse] == position
            chosen[pending[wins]] = pick[wins]
            taken[pick[wins]] = True
            pending = pending[~wins]
        self.used |= taken
        return chosen


def uniform_pick(
    dist: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One index per row, uniform over the row's finite-distance entries (the first ones)."""
    count = torch.isfinite(dist).sum(dim=1).clamp(min=1)  # (B,)
    u = torch.rand(dist.shape[0], generator=generator, device=dist.device)
    slot = (u * count).long().clamp(max=dist.shape[1] - 1)  # (B,)
    return idx.gather(1, slot[:, None]).squeeze(1)
