"""The code bank: one stored code per training example, and exact k-nearest-neighbour search.

Rows are indexed by dataset position and start as N(0, I) draws (paper, Algorithm 1). A batch's
fresh codes overwrite their rows; other rows stay stale until revisited. Updates are
(index, code) pairs, so that data-parallel replicas can later apply the same global update.

The search is exact in every case, however inexact the back-end (:mod:`acn.bank.search`) that
proposes candidates: the candidates' distances are computed directly (float64 differences, one fixed
summation order), and the back-end's certified lower bound on every other row proves that none
of them is nearer than the k-th. A query whose proof fails (near ties at the k-th neighbour, or
a reduced-precision back-end) is searched again in float32, then in float64 with more and more
candidates, and at last exhaustively; ``fallbacks`` counts such queries.

The result is in canonical order: ascending returned distance, ties by the smaller row index.
Each returned distance depends only on the query and the row, so top-k lists of disjoint shards
merged in that order give exactly the whole bank's answer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from acn.bank.exact import certified, exhaustive_knn, rank_candidates
from acn.bank.search import CandidateSearch, TorchSearch, make_search
from acn.distributed import SINGLE, Ranks, my_rows

# Candidates beyond k for the float32 / float64 retries (the first search sets its own margin).
RERANK_MARGIN = 8
# The float64 fallback multiplies its candidate count by this each time its proof fails (ties).
KEEP_GROWTH = 8
# Beyond this many candidates the fallback stops growing and searches exhaustively.
KEEP_LIMIT = 2048


class CodeBank(nn.Module):
    """N codes of dimension D as buffers, with exact Euclidean k-NN that excludes given rows.

    Args:
        num_codes: N, the number of training examples.
        dim: D, the code dimension.
        chunk_size: bank rows scored at once by the search (bounds its memory).
        generator: source of the N(0, I) initial codes.
        backend: the candidate search, ``torch`` or ``faiss`` (see
        :func:`acn.bank.search.make_search`).
        precision: the ``torch`` back-end's scoring precision: ``float32``, ``bfloat16`` or
            ``float16``. The result is exact whatever the choice.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        chunk_size: int = 65536,
        generator: torch.Generator | None = None,
        *,
        backend: str = "torch",
        precision: str = "float32",
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(
                f"a code bank needs num_codes >= 1 and dim >= 1, got {num_codes}, {dim}"
            )
        self.num_codes, self.dim, self.chunk_size = num_codes, dim, chunk_size
        self.search: CandidateSearch = make_search(backend, chunk_size, precision)
        # The careful searches behind a failed proof; float32 first unless that failed already.
        first = [] if (backend, precision) == ("torch", "float32") else ["float32"]
        self.retries = [TorchSearch(chunk_size, p) for p in [*first, "float64"]]
        self.fallbacks = 0  # queries whose first proof failed (a plain int: not state)
        codes = torch.randn(num_codes, dim, generator=generator)
        self.register_buffer("codes", codes)  # (N, D)
        self.register_buffer("sq_norms", codes.pow(2).sum(dim=1))  # (N,), cached ||c||^2
        # Rows already used as a neighbour in this pass (for the unique-neighbour constraint).
        self.register_buffer("used", torch.zeros(num_codes, dtype=torch.bool))  # (N,)
        # How the bank is shared between processes (acn.bank.placement); None: one process
        # holds all of it. A plain attribute, not state: a checkpoint holds the whole bank.
        self.placement = None

    @torch.no_grad()
    def draw(
        self,
        c: torch.Tensor,
        k: int,
        exclude: torch.Tensor | None,
        generator: torch.Generator | None,
        unique: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's neighbour, drawn uniformly from its k nearest codes (Algorithm 1).

        Args:
            c: (B, D) the batch's codes.
            k: neighbours to draw from.
            exclude: (B,) the queries' own rows (training data), or None.
            generator: source of the draw.
            unique: the unique-neighbour constraint (see :meth:`sample_neighbours`).

        Returns:
            ``(rows, c_hat)``: (B,) the chosen rows and (B, D) their codes, detached.

        Shared between processes (a placement installed), the bank works on the global batch:
        in training mode ``c`` is this process's slice of it, in eval mode the whole of a batch
        that every taking part holds (see :mod:`acn.bank.placement`).
        """
        if self.placement is not None:
            return self.placement.draw(self, c, exclude, k, generator, unique, self.training)
        rows = self.sample_neighbours(c, k, exclude, generator, unique=unique)
        return rows, self.codes[rows]

    @torch.no_grad()
    def draw_random(
        self,
        c: torch.Tensor,
        exclude: torch.Tensor | None,
        generator: torch.Generator | None,
        ranks: Ranks = SINGLE,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's "neighbour" drawn uniformly from the whole bank, the query's own row
        excluded: the ablation of the association (``codebank.neighbours=random``).

        Like the posterior's noise, the draws are made for the global batch of ``ranks`` and
        this rank's slice kept, so they do not depend on the number of processes; the bank must
        be whole on every rank (the replicated placement).

        Args:
            c: (B, D) the batch's codes (only their number and device are used).
            exclude: (B,) the queries' own rows, or None.
            generator: source of the draw.
            ranks: the processes sharing the global batch.

        Returns:
            ``(rows, c_hat)`` as :meth:`draw` gives them.
        """
        B, N = c.shape[0], self.num_codes
        u = torch.rand(B * ranks.world, generator=generator, device=self.codes.device)
        u = my_rows(u, B, ranks) if ranks.active else u  # (B,)
        if exclude is None:
            rows = (u * N).long().clamp_max(N - 1)
        else:
            # Uniform over the N - 1 other rows: draw among N - 1, then step over one's own.
            exclude = exclude.to(u.device, torch.long)
            rows = (u * (N - 1)).long().clamp_max(N - 2)
            rows = rows + (rows >= exclude).long()
        return rows, self.codes[rows]

    @torch.no_grad()
    def write(self, rows: torch.Tensor, c: torch.Tensor) -> None:
        """C[rows] <- c: the batch's fresh codes replace their rows (the global batch's, when
        shared, as :meth:`draw` describes)."""
        if self.placement is not None:
            self.placement.update(self, rows, c, self.training)
        else:
            self.update(rows, c)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, codes: torch.Tensor) -> None:
        """Overwrite rows ``indices`` (B,) with ``codes`` (B, D). Indices must be distinct.

        Writes to ``codes`` must go through here: the search trusts ``sq_norms``.
        """
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
        """The k nearest bank rows to each query, nearest first, exactly.

        Args:
            queries: (B, D) codes.
            k: neighbours per query.
            exclude: (B,) or (B, E) row indices never returned for that query; pass the queries'
                own indices, otherwise a training example finds its own (possibly stale) code and
                the prior sees the answer. Entries outside [0, N) are ignored (use -1 as padding).
            allowed: optional (N,) bool mask; rows that are False are never returned.

        Returns:
            ``(distances, indices)``, each (B, k): Euclidean distances in canonical order
            (ascending, ties by the smaller index), and row indices. Where fewer than k rows are
            eligible the tail has distance ``inf`` and index 0.
        """
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (B, {self.dim}), got {tuple(queries.shape)}")
        if not 1 <= k <= self.num_codes:
            raise ValueError(f"k={k} must be between 1 and the bank size {self.num_codes}")
        q = queries.detach().to(self.codes.device, self.codes.dtype)  # (B, D)
        B = q.shape[0]
        if B == 0:
            return q.new_empty(0, k), torch.empty(0, k, dtype=torch.long, device=q.device)
        if exclude is not None:
            exclude = exclude.to(self.codes.device, torch.long).reshape(B, -1)  # (B, E)
        if allowed is not None:
            allowed = allowed.to(self.codes.device, torch.bool)
        keep = min(k + self.search.margin, self.num_codes)
        cand, bound = self.search.candidates(self.codes, self.sq_norms, q, keep, exclude, allowed)
        dist, idx = rank_candidates(self.codes, q, cand, k)
        failed = torch.nonzero(~certified(dist[:, -1], bound)).squeeze(1)
        if failed.numel():
            self.fallbacks += failed.numel()
            sub_ex = exclude[failed] if exclude is not None else None
            # float64 is not on every device (MPS); where it is not, retry on the CPU.
            host = q.device if q.device.type != "mps" else torch.device("cpu")
            d, i = retry_exact(
                self.retries,
                *(_to(t, host) for t in (self.codes, self.sq_norms, q[failed])),
                k,
                _to(sub_ex, host),
                _to(allowed, host),
            )
            dist[failed], idx[failed] = d.to(q.device), i.to(q.device)
        return dist, idx.masked_fill(torch.isinf(dist), 0)

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

        With ``unique=True`` (the paper's unique-neighbour constraint) the queries draw in batch
        order: each draws uniformly from its k nearest rows that are neither marked used
        (earlier batches of this pass) nor taken by an earlier query of the batch, and the
        chosen rows are marked used. A query with no eligible row left (the end of a pass)
        draws from the unconstrained k nearest instead, so training never stalls.

        Args:
            queries: (B, D) codes.
            k: neighbours to draw from.
            exclude: (B,) or (B, E) rows never drawn for that query (see :meth:`knn`), or None.
            generator: source of the draw: B uniforms, one per query, whatever the path.
            unique: the unique-neighbour constraint.

        Returns:
            (B,) row indices. With ``unique=True`` they, the new usage marks and the generator's
            state are a function of the inputs, the old marks and the generator's state alone:
            the replicated placement runs this on the global batch on every rank.
        """
        if not unique:
            dist, idx = self.knn(queries, k, exclude)
            return uniform_pick(dist, idx, generator)
        if not 1 <= k <= self.num_codes:  # the wider search below would hide a bad k
            raise ValueError(f"k={k} must be between 1 and the bank size {self.num_codes}")
        B, device = queries.shape[0], self.codes.device
        draws = torch.rand(B, generator=generator, device=device)
        # Each earlier query of the batch takes one row, so of the k + B - 1 nearest rows not used
        # before, at least k are free for each query, unless they are all the eligible rows
        # there are: one exact search serves the whole walk, and no candidate list runs dry.
        width = min(k + max(B - 1, 0), self.num_codes)
        dist, idx = self.knn(queries, width, exclude, allowed=~self.used)
        chosen = walk_in_batch_order(dist, idx, draws, k)
        stranded = chosen < 0
        if stranded.any():
            sub_ex = None if exclude is None else exclude.to(device).reshape(B, -1)[stranded]
            free_d, free_i = self.knn(queries[stranded.to(queries.device)], k, sub_ex)
            chosen[stranded] = pick_slots(free_d, free_i, draws[stranded])
        self.used[chosen[~stranded]] = True
        return chosen


def walk_in_batch_order(
    dist: torch.Tensor, idx: torch.Tensor, draws: torch.Tensor, k: int
) -> torch.Tensor:
    """The unique-neighbour draw, query by query in batch order.

    Args:
        dist: (B, W) each query's W nearest eligible rows' distances, canonical order, inf past
            the eligible ones; W >= k + B - 1 unless the finite entries are all there are.
        idx: (B, W) their rows.
        draws: (B,) uniforms in [0, 1), one per query.
        k: neighbours to draw from.

    Returns:
        (B,) long on ``idx``'s device: each query's row, drawn uniformly from the first k rows of
        its list that no earlier query took; -1 where none is left.
    """
    # Sequential by definition, and short (at most B x W steps): plain Python on the host.
    counts = torch.isfinite(dist).sum(dim=1).tolist()
    taken: set[int] = set()
    chosen = []
    for row, count, u in zip(idx.tolist(), counts, draws.tolist(), strict=True):
        free = []
        for r in row[:count]:
            if r not in taken:
                free.append(r)
                if len(free) == k:
                    break
        if not free:
            chosen.append(-1)
            continue
        pick = free[min(int(u * len(free)), len(free) - 1)]
        taken.add(pick)
        chosen.append(pick)
    return torch.tensor(chosen, dtype=torch.long, device=idx.device)


def uniform_pick(
    dist: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One index per row, uniform over the row's finite-distance entries (the first ones)."""
    u = torch.rand(dist.shape[0], generator=generator, device=dist.device)
    return pick_slots(dist, idx, u)


def pick_slots(dist: torch.Tensor, idx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Row b's entry at slot floor(u_b n_b) of its n_b finite-distance entries (the first ones).

    Args:
        dist: (B, K) distances, inf past the finite ones.
        idx: (B, K) indices.
        u: (B,) uniforms in [0, 1).

    Returns:
        (B,) the picked indices (the first entry where none is finite).
    """
    count = torch.isfinite(dist).sum(dim=1).clamp(min=1)  # (B,)
    slot = (u * count).long().clamp(max=dist.shape[1] - 1)  # (B,)
    return idx.gather(1, slot[:, None]).squeeze(1)


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def retry_exact(
    retries: list[TorchSearch],
    codes: torch.Tensor,
    sq_norms: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None,
    allowed: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact answer for queries whose proof failed: careful searches, then exhaustive.

    Each search in ``retries`` is tried once, the last (float64) with more candidates each time
    (its proof fails only at near ties, which more candidates resolve) up to KEEP_LIMIT; what is
    still unproven then is searched exhaustively.

    Returns:
        ``(distances, indices)``, (B, k), as :meth:`CodeBank.knn`.
    """
    B, N = queries.shape[0], codes.shape[0]
    dist = torch.full((B, k), math.inf, dtype=codes.dtype, device=codes.device)
    idx = torch.zeros(B, k, dtype=torch.long, device=codes.device)
    todo = torch.arange(B, device=codes.device)
    keep = min(k + RERANK_MARGIN, N)
    for search in retries:
        while todo.numel():
            sub_ex = exclude[todo] if exclude is not None else None
            cand, bound = search.candidates(codes, sq_norms, queries[todo], keep, sub_ex, allowed)
            d, i = rank_candidates(codes, queries[todo], cand, k)
            ok = certified(d[:, -1], bound)
            dist[todo[ok]], idx[todo[ok]] = d[ok], i[ok]
            todo = todo[~ok]
            if search is not retries[-1] or keep >= min(KEEP_LIMIT, N):
                break
            keep = min(keep * KEEP_GROWTH, KEEP_LIMIT, N)
    if todo.numel():
        sub_ex = exclude[todo] if exclude is not None else None
        dist[todo], idx[todo] = exhaustive_knn(codes, queries[todo], k, sub_ex, allowed)
    return dist, idx
