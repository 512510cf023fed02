"""Exact distances and the canonical order of a k-NN answer: pure functions over tensors.

A search is exact when the candidates' distances are computed directly (float64 differences,
one fixed summation order) and ranked in canonical order: ascending distance, ties by the
smaller row index. Each returned distance then depends only on the query and the row, so top-k
lists of disjoint shards merged in that order give exactly the whole bank's answer
(:mod:`acn.bank.placement`). :class:`acn.bank.codebank.CodeBank` proposes candidates with a
back-end and ranks them here.
"""

from __future__ import annotations

import math

import torch

# float64 elements per block of the exact distances (bounds their memory to ~32 MiB a tensor).
EXACT_BLOCK = 2**22


def rank_candidates(
    codes: torch.Tensor, queries: torch.Tensor, cand: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The canonical first k of (B, K) candidate rows (-1 for none) by exact distance."""
    dist = exact_distances(queries, codes, cand).to(codes.dtype)
    return canonical_top_k(dist.masked_fill(cand < 0, math.inf), cand, k)


def exact_distances(
    queries: torch.Tensor, codes: torch.Tensor, cand: torch.Tensor | None = None
) -> torch.Tensor:
    """Euclidean distances in float64, each a function of its (query, row) pair alone.

    The differences are taken in float64 (exact for float32 inputs of similar magnitude), and
    the squares are summed by halving the padded last dimension, element-wise: the same order
    for every pair whatever the batch shape or device, so that the same pair always gives the
    same bits (what makes the canonical order, and merges of shards, exact).

    Args:
        queries: (B, D).
        codes: (N, D) bank rows.
        cand: (B, K) rows per query (-1 is read as row 0), or None for all N rows.

    Returns:
        (B, K) or (B, N) float64.
    """
    B, D = queries.shape
    if queries.device.type == "mps":  # no float64 there; the bits are the same on the CPU
        if cand is not None:  # move only the candidates' rows
            codes = codes[cand.clamp(min=0)].reshape(-1, D)
            cand = torch.arange(codes.shape[0], device=codes.device).view(B, -1)
        on_cpu = exact_distances(queries.cpu(), codes.cpu(), None if cand is None else cand.cpu())
        return on_cpu.to(queries.device)
    count = codes.shape[0] if cand is None else cand.shape[1]
    # Blocks of rows bound the (B, K', D) temporaries; the values do not depend on them.
    step = max(1, EXACT_BLOCK // max(1, B * D))
    width = 1 << (D - 1).bit_length()  # D padded with exact zeros to a power of two
    q = queries.double()[:, None, :]
    out = [q.new_empty(B, 0)]
    for start in range(0, count, step):
        stop = min(start + step, count)
        rows = codes[start:stop] if cand is None else codes[cand[:, start:stop].clamp(min=0)]
        sq = (q - rows.double()).square()
        if width > D:
            sq = torch.nn.functional.pad(sq, (0, width - D))
        half = width
        while half > 1:
            half //= 2
            sq = sq[..., :half] + sq[..., half:]
        out.append(sq[..., 0].sqrt())
    return out[1] if len(out) == 2 else torch.cat(out, dim=1)


def canonical_top_k(
    dist: torch.Tensor, idx: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of (B, K) candidates in canonical order: ascending distance, then index."""
    by_index = idx.argsort(dim=1, stable=True)
    dist, idx = dist.gather(1, by_index), idx.gather(1, by_index)
    order = dist.argsort(dim=1, stable=True)[:, :k]
    return dist.gather(1, order), idx.gather(1, order)


def certified(kth: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """(B,) bool: every row left out is provably after the k-th returned distance ``kth``.

    A left-out row's true squared distance is at least ``bound``; its returned distance is that
    rounded through the float64 sum and sqrt (relative error < 2^-40) and float32 (2^-24), so it
    exceeds sqrt(bound) (1 - 2^-22). A k-th distance below that leaves no room for a tie either.
    """
    room = bound.clamp(min=0).sqrt() * (1 - 2.0**-20)
    return torch.isposinf(bound) | (kth.double() < room)


def exhaustive_knn(
    codes: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None,
    allowed: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-NN by the exact distance to every row, in blocks: the last resort, slow.

    Args:
        codes: (N, D) bank rows.
        queries: (B, D).
        k: neighbours per query.
        exclude: (B, E) rows never returned (outside [0, N) ignored), or None.
        allowed: (N,) bool, or None.

    Returns:
        ``(distances, indices)``, (B, k), canonical order; the tail inf where too few are eligible.
    """
    (B, D), N = queries.shape, codes.shape[0]
    dist = torch.full((B, 0), math.inf, dtype=codes.dtype, device=codes.device)
    idx = torch.zeros(B, 0, dtype=torch.long, device=codes.device)
    step = max(1, EXACT_BLOCK // max(1, B * D))
    rows = torch.arange(B, device=codes.device)[:, None]
    for start in range(0, N, step):
        stop = min(start + step, N)
        d = exact_distances(queries, codes[start:stop]).to(codes.dtype)  # (B, n)
        if allowed is not None:
            d.masked_fill_(~allowed[start:stop], math.inf)
        if exclude is not None:
            local = exclude - start
            hit = (local >= 0) & (local < stop - start)
            d[rows.expand_as(local)[hit], local[hit]] = math.inf
        cols = torch.arange(start, stop, device=codes.device).expand(B, -1)
        dist, idx = canonical_top_k(torch.cat([dist, d], 1), torch.cat([idx, cols], 1), k)
    return dist, idx.masked_fill(torch.isinf(dist), 0)
