"""The exact k-NN graph behind the greedy tour, and the exact nearest unvisited code.

The tour's distance is :func:`sq_distances`: squared Euclidean distances in float64, summed one
dimension after another. Each step is one correctly rounded IEEE operation, so a pair of codes
gets the same bits on every machine, in torch or numpy, whatever the batch shape. Everything
else here only proposes candidates and proves that no other row can come first; the answer is
always ranked by that distance in canonical order (ascending, ties by the smaller row index).

Cells. The codes are split into cells around centroids (a few Lloyd iterations of k-means on
float32 copies, seeded; only the speed depends on them). Every code x of cell c lies within
r_c of its centroid mu_c and, up to the float32 scores' error tau, no nearer any other centroid
mu_a than mu_c. For a query q the triangle inequality gives |q - x| >= |q - mu_c| - r_c, and
since |y - mu_a|^2 - |y - mu_c|^2 is affine in y with slope 2 |mu_c - mu_a|,

    |q - x| >= (|q - mu_c|^2 - |q - mu_a|^2 - tau) / (2 |mu_c - mu_a|)      (any centroid a).

:func:`knn_graph` searches a batch of one cell's codes against the cells these bounds cannot
rule out (the back-ends of :mod:`acn.bank.search` propose candidates with a certified bound on
the rest), ranks the candidates by the tour's distance, and proves each list; a list whose
proof fails (exact ties at the k-th neighbour) is searched exhaustively. :class:`NearestUnvisited`
answers the walk's fallbacks with the same bounds over the cells' unvisited codes.

All bounds hold for the float32 copies; for float64 codes they are loosened by the rounding to
float32, u32 (|q| + max |x|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from acn.bank.bounds import max_row_norm, score_error, score_rounding, unit_roundoff
from acn.bank.exact import canonical_top_k
from acn.bank.search import CandidateSearch

# Relative slack on float64 quantities in the bounds (their rounding is below 2^-45 up to D = 1024).
SLACK = 2.0**-40
# A list is proven when its k-th squared distance is below (bound)^2 (1 - PROOF): room for the
# rounding of the tour's distance and of the bound's own float64 arithmetic.
PROOF = 2.0**-36
# float64 elements per block of the exhaustive search (~32 MiB a temporary).
EXACT_BLOCK = 2**22
# Lloyd iterations of the partition, on at most SAMPLE_PER_CELL codes per cell.
LLOYD_STEPS, SAMPLE_PER_CELL = 4, 64


def sq_distances(a, b):
    """The tour's distance: squared Euclidean distances, the same bits on every machine.

    Args:
        a, b: float64 tensors or numpy arrays (..., D) that broadcast, D >= 1.

    Returns:
        (...) float64: sum over d = 0, 1, ..., D - 1, in that order, of (a_d - b_d)^2, each
        difference, product and sum a correctly rounded IEEE operation (no vectorised reduction,
        whose order depends on the CPU's instruction set, and no fused multiply-add).
    """
    diff = a[..., 0] - b[..., 0]
    total = diff * diff
    for d in range(1, a.shape[-1]):
        diff = a[..., d] - b[..., d]
        total = total + diff * diff
    return total


@dataclass
class Cells:
    """A partition of the codes into cells, with what the lower bounds need.

    Attributes:
        centroids: (C, D) float32.
        sq_norms: (C,) float32 squared norms of the centroids.
        radius: (C,) float64, at least |x - mu_c| for every member x (-inf when empty).
        tau: float, the assignment slack of the module doc (squared units).
        of: (N,) long, each row's cell.
        rows: (N,) long, the rows sorted by cell (ascending within a cell).
        starts: (C + 1,) long, cell c's rows are ``rows[starts[c]:starts[c + 1]]``.
        gap: how far a distance between the codes themselves may be from the one between
            their float32 copies, to which the bounds apply (:func:`float32_gap`).
    """

    centroids: torch.Tensor
    sq_norms: torch.Tensor
    radius: torch.Tensor
    tau: float
    of: torch.Tensor
    rows: torch.Tensor
    starts: torch.Tensor
    gap: float = 0.0

    def separation(self, a: int) -> torch.Tensor:
        """(C,) float64, at least |mu_c - mu_a| for every c."""
        mu = self.centroids.double()
        return (mu - mu[a]).pow(2).sum(dim=1).sqrt() * (1 + SLACK)


def _ranges(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """lo[0]..hi[0]-1, lo[1]..hi[1]-1, ... concatenated, without a Python loop."""
    n = hi - lo
    offsets = torch.repeat_interleave(lo - (n.cumsum(0) - n), n)
    return offsets + torch.arange(int(n.sum()), device=lo.device)


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Each row's nearest centroid by float32 scores, and the scores' largest error bound."""
    sq_norms = centroids.pow(2).sum(dim=1)
    max_norm = max_row_norm(sq_norms, x.shape[1])
    rounding = score_rounding("float32", x.device.type)
    step = max(1, 2**22 // centroids.shape[0])
    # One buffer for every block's scores: fresh 16 MiB blocks each time were measured to
    # leave the allocator's heap 270 MiB larger after 250k rows.
    scores = torch.empty(min(step, x.shape[0]), centroids.shape[0])
    cells, eps = torch.empty(x.shape[0], dtype=torch.long), 0.0
    for lo in range(0, x.shape[0], step):
        block = x[lo : lo + step]
        out = scores[: block.shape[0]]
        torch.addmm(sq_norms[None, :], block, centroids.T, alpha=-2, out=out)  # (b, C)
        torch.argmin(out, dim=1, out=cells[lo : lo + step])
        q_norm = block.double().pow(2).sum(dim=1).sqrt()
        eps = max(eps, float(score_error(q_norm, max_norm, x.shape[1], rounding).max()))
    return cells, eps


@torch.no_grad()
def build_cells(x: torch.Tensor, cell_size: int, seed: int = 0) -> Cells:
    """Partition float32 codes (N, D) into about N / cell_size cells (see the module doc)."""
    N, D = x.shape
    C = max(1, min(N, round(N / cell_size)))
    g = torch.Generator().manual_seed(seed)
    sample = x[torch.randperm(N, generator=g)[: min(N, SAMPLE_PER_CELL * C)]]
    centroids = sample[:C].clone()
    for _ in range(LLOYD_STEPS):
        cells, _ = _assign(sample, centroids)
        counts = torch.bincount(cells, minlength=C)
        sums = torch.zeros(C, D, dtype=torch.float64).index_add_(0, cells, sample.double())
        full = counts > 0
        centroids[full] = (sums[full] / counts[full, None]).float()
    of, eps = _assign(x, centroids)
    # The chosen centroid's score is within 2 eps of the best one's: tau = 2 eps.
    radius = torch.full((C,), -math.inf, dtype=torch.float64)
    step = max(1, 2**20 // D)  # rows at once: ~8 MiB float64 temporaries
    for lo in range(0, N, step):
        block, cell = x[lo : lo + step].double(), of[lo : lo + step]
        r = (block - centroids.double()[cell]).pow(2).sum(dim=1).sqrt()
        radius.scatter_reduce_(0, cell, r, "amax")
    rows = torch.argsort(of, stable=True)
    starts = torch.zeros(C + 1, dtype=torch.long)
    starts[1:] = torch.bincount(of, minlength=C).cumsum(0)
    return Cells(
        centroids=centroids,
        sq_norms=centroids.pow(2).sum(dim=1),
        radius=radius * (1 + SLACK),
        tau=2 * eps,
        of=of,
        rows=rows,
        starts=starts,
    )


def cell_lower_bounds(cells: Cells, q: torch.Tensor, own: int) -> torch.Tensor:
    """(B, C) float64 lower bounds on |q - x| for the members x of each cell (+inf: empty).

    Args:
        cells: the partition.
        q: (B, D) float32 queries.
        own: a centroid for the bisector bound (the queries' own cell's: the tightest).
    """
    C, D = cells.centroids.shape
    q_norm = q.double().pow(2).sum(dim=1).sqrt()  # (B,)
    max_norm = max_row_norm(cells.sq_norms, D)
    eps = score_error(q_norm, max_norm, D, score_rounding("float32", q.device.type))[:, None]
    s = torch.addmm(cells.sq_norms[None, :], q, cells.centroids.T, alpha=-2).double()  # (B, C)
    ball = (q_norm[:, None] ** 2 + s - eps).clamp(min=0).sqrt() - cells.radius
    sep = cells.separation(own)
    gap = (s - s[:, own : own + 1] - 2 * eps - cells.tau).clamp(min=0)
    plane = torch.where(sep > 0, gap / (2 * sep).clamp(min=1e-300), 0.0)
    bound = torch.maximum(ball, plane).clamp(min=0)
    return bound.masked_fill(torch.isneginf(cells.radius), math.inf)


@dataclass
class GraphStats:
    """What building the graph took.

    Attributes:
        cells: cells in the partition.
        scored: (query, row) pairs the back-end scored, against N^2 for a brute-force graph.
        exhaustive: lists whose proof failed (ties at the k-th neighbour) and were searched
            exhaustively.
    """

    cells: int = 0
    scored: int = 0
    exhaustive: int = 0


@dataclass
class _Codes:
    """The codes in the forms the search needs, and the float32 rounding's effect on a
    distance (0 where every code is exactly a float32)."""

    x64: torch.Tensor  # (N, D) float64: the tour's distance
    x32: torch.Tensor  # (N, D) float32 copies, sorted by cell: a cell is one slice
    sq32: torch.Tensor  # (N,) their float32 squared norms, as the back-ends expect
    gap: float


def float32_gap(x64: torch.Tensor, x32: torch.Tensor) -> float:
    """A bound on ||q - x| - |q32 - x32|| for any two rows q, x and their float32 copies: 0
    where the copies are exact, else u32 (|q| + |x|) with room for subnormal rounding."""
    step = max(1, 2**20 // max(1, x64.shape[1]))
    if all(
        torch.equal(x32[i : i + step].double(), x64[i : i + step]) for i in range(0, len(x64), step)
    ):
        return 0.0
    top = math.sqrt(
        max(float(x64[i : i + step].pow(2).sum(dim=1).max()) for i in range(0, len(x64), step))
    )
    tiny = math.sqrt(x64.shape[1]) * torch.finfo(torch.float32).smallest_normal
    return 1.01 * 2 * (unit_roundoff(torch.float32) * top + tiny)


@torch.no_grad()
def knn_graph(
    x64: torch.Tensor, k: int, search: CandidateSearch, cell_size: int = 2048, probe: int = 6
) -> tuple[torch.Tensor, Cells, GraphStats]:
    """Each row's k nearest other rows by the tour's distance, in canonical order, exactly.

    Args:
        x64: (N, D) float64 codes on the CPU, finite, |elements| below 2^50.
        k: neighbours per row, 1 <= k <= N - 1.
        search: the back-end that proposes candidates (see :mod:`acn.bank.search`).
        cell_size: codes per cell, and queries per batch (bounds the batch's memory).
        probe: each search of a batch covers about ``probe`` times the batch's size in rows
            (measured on 250k codes: 4 to 8 within 10% of the best, 6 the best compromise).

    Returns:
        ``(graph, cells, stats)``: (N, k) int32 rows, the partition, and :class:`GraphStats`.
        Memory: the graph (N k), the codes' copies (N D) and one batch's search (cell_size x
        the rows its bounds keep, scored in the back-end's blocks).
    """
    x32 = x64.float()
    cells = build_cells(x32, cell_size)
    cells.gap = float32_gap(x64, x32)
    x32 = x32[cells.rows]
    codes = _Codes(x64, x32, x32.pow(2).sum(dim=1), cells.gap)
    stats = GraphStats(cells=cells.centroids.shape[0])
    graph = torch.empty(x64.shape[0], k, dtype=torch.int32)
    starts = cells.starts.tolist()
    for a in range(stats.cells):
        for lo in range(starts[a], starts[a + 1], cell_size):
            hi = min(lo + cell_size, starts[a + 1])
            idx = _batch(codes, cells, a, lo, hi, k, search, probe, stats)
            graph[cells.rows[lo:hi]] = idx.int()
    return graph, cells, stats


def _batch(
    codes: _Codes,
    cells: Cells,
    a: int,
    lo: int,
    hi: int,
    k: int,
    search: CandidateSearch,
    probe: int,
    stats: GraphStats,
) -> torch.Tensor:
    """The proven k-NN lists of the rows at sorted positions lo..hi-1, all of cell ``a``."""
    q_rows, q32, B = cells.rows[lo:hi], codes.x32[lo:hi], hi - lo
    bound_c = cell_lower_bounds(cells, q32, a)  # (B, C)
    # First search: the own cell (its rows first, so the queries' own positions are known) and
    # the cells the batch's bounds rank nearest, up to probe x B rows.
    sizes = cells.starts[1:] - cells.starts[:-1]
    nearest = bound_c.amin(dim=0)
    nearest[a] = -1.0
    order = torch.argsort(nearest, stable=True)
    first = order[: int(torch.searchsorted(sizes[order].cumsum(0), probe * B)) + 1]
    own = (lo - cells.starts[a] + torch.arange(B))[:, None]
    cand, bound = _candidates(codes, cells, first, q32, k, own, search, stats)
    dist = torch.full((B, k), math.inf, dtype=torch.float64)
    idx = torch.full((B, k), -1, dtype=torch.long)
    dist, idx = _merge(codes.x64, q_rows, dist, idx, cand)
    scanned = torch.zeros_like(bound_c, dtype=torch.bool)
    scanned[:, first] = True
    while True:
        # Cells that might hold a row nearer than a query's k-th so far; each round takes the
        # cells most queries need, up to probe x B rows, for every query that needs one of them.
        # A query's needs only shrink (its k-th only improves), so a query that did not need a
        # cell of this round's group never will: no cell is searched twice, no row listed twice.
        reach = dist[:, -1].sqrt() * (1 + 2**-30) + codes.gap
        need = (bound_c <= reach[:, None]) & ~scanned
        votes = need.sum(dim=0)
        if not bool(votes.any()):
            break
        order = torch.argsort(votes, descending=True, stable=True)[: int((votes > 0).sum())]
        group = order[: int(torch.searchsorted(sizes[order].cumsum(0), probe * B)) + 1]
        asking = torch.nonzero(need[:, group].any(dim=1)).squeeze(1)
        cand, found = _candidates(codes, cells, group, q32[asking], k, None, search, stats)
        dist[asking], idx[asking] = _merge(
            codes.x64, q_rows[asking], dist[asking], idx[asking], cand
        )
        bound[asking] = torch.minimum(bound[asking], found)
        scanned[asking[:, None], group[None, :]] = True
    # The proof: every row not ranked is provably farther than the k-th.
    rest = bound_c.masked_fill(scanned, math.inf).amin(dim=1)
    low = torch.minimum(bound.clamp(min=0).sqrt(), rest) - codes.gap
    proven = (low > 0) & (dist[:, -1] < low.square() * (1 - PROOF))
    failed = torch.nonzero(~proven).squeeze(1)
    if failed.numel():
        stats.exhaustive += failed.numel()
        _, idx[failed] = exhaustive_neighbours(codes.x64, q_rows[failed], k)
    return idx


def _candidates(
    codes: _Codes,
    cells: Cells,
    which: torch.Tensor,
    q32: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None,
    search: CandidateSearch,
    stats: GraphStats,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The back-end's candidates (global rows, -1 for none) among the rows of cells ``which``,
    and its bound (squared, float32 copies) on the rest of those rows."""
    at = _ranges(cells.starts[which], cells.starts[which + 1])  # runs of sorted positions
    rows = cells.rows[at]
    B, R = q32.shape[0], rows.shape[0]
    if R == 0:
        return torch.full((B, 0), -1, dtype=torch.long), torch.full((B,), math.inf)
    stats.scored += B * R
    keep = min(k + search.margin, R)
    local, bound = search.candidates(codes.x32[at], codes.sq32[at], q32, keep, exclude, None)
    return torch.where(local >= 0, rows[local.clamp(min=0)], -1), bound


def _merge(
    x64: torch.Tensor,
    q_rows: torch.Tensor,
    dist: torch.Tensor,
    idx: torch.Tensor,
    cand: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The canonical first k of a (B, k) list and (B, K) new candidate rows (-1: none, and
    none already listed) by the tour's distance."""
    (B, K), D = cand.shape, x64.shape[1]
    step = max(1, EXACT_BLOCK // max(1, K * D))  # queries at once: bounds the (b, K, D) gather
    new = torch.cat(
        [
            sq_distances(x64[q_rows[lo : lo + step]][:, None, :], x64[c.clamp(min=0)])
            for lo in range(0, B, step)
            for c in [cand[lo : lo + step]]
        ]
    ).masked_fill(cand < 0, math.inf)  # (B, K)
    # Only lists that a candidate enters (canonically before their k-th) need sorting.
    last_d, last_i = dist[:, -1:], idx[:, -1:]
    enter = (new < last_d) | ((new == last_d) & (cand < last_i) & (cand >= 0))
    rows = torch.nonzero(enter.any(dim=1)).squeeze(1)
    if rows.numel():
        both = torch.cat([idx[rows], cand[rows]], dim=1)
        top = canonical_top_k(torch.cat([dist[rows], new[rows]], dim=1), both, idx.shape[1])
        dist[rows], idx[rows] = top
    return dist, idx


def exhaustive_neighbours(
    x64: torch.Tensor, q_rows: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest other rows of rows ``q_rows`` by the tour's distance against every row,
    in blocks of EXACT_BLOCK distances: the last resort, O(N D) a query.

    Returns:
        ``(sq_dist, rows)``, each (B, k), canonical order.
    """
    B, N = q_rows.shape[0], x64.shape[0]
    q = x64[q_rows][:, None, :]  # (B, 1, D)
    dist = torch.empty(B, 0, dtype=torch.float64)
    idx = torch.empty(B, 0, dtype=torch.long)
    step = max(1, EXACT_BLOCK // max(1, B))
    for lo in range(0, N, step):
        cols = torch.arange(lo, min(lo + step, N))
        d = sq_distances(q, x64[lo : lo + step])  # (B, n)
        d.masked_fill_(cols[None, :] == q_rows[:, None], math.inf)  # never oneself
        both = torch.cat([idx, cols.expand(B, -1)], dim=1)
        dist, idx = canonical_top_k(torch.cat([dist, d], dim=1), both, k)
    return dist, idx
