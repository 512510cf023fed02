"""The greedy tour through a set of codes (paper, section 4 of the notes: the ordered number).

Start at one code and repeatedly move to the nearest code not yet visited. Coding each example's
latent with the prior conditioned on the previous code in the tour gives a valid sequential code
for the whole set; the receiver can follow along by re-encoding what it has decoded, so no order
needs to be sent.

"Nearest" is by :func:`acn.bank.tourgraph.sq_distances`: squared Euclidean distances in float64
summed one dimension after another, so that encoder and decoder on different machines get the
same bits and the same tour; ties go to the lowest index. Two methods give the same tour:

- ``exhaustive``: every step scores all N codes, O(N^2 D) time, O(N D) memory.
- ``graph``: each code's k nearest codes, in canonical order, are found once
  (:func:`acn.bank.tourgraph.knn_graph`, exact). If some of the current code's k nearest are
  unvisited, the first of them *is* the nearest unvisited code (every code before it in the
  canonical order of all codes is in the list, and visited). Only where the whole list is
  visited does the step search the unvisited codes (:class:`NearestUnvisited`).
  Memory O(N k) plus the codes.

``method="auto"`` takes the graph from GRAPH_FROM = 1024 codes on. Measured on one thread
(Gaussian mixtures): at N = 1000 the graph took 0.02 / 0.03 / 0.10 s at D = 2 / 16 / 128
against 0.03 / 0.14 / 1.1 s for the exhaustive tour, at N = 4000 0.10 / 0.16 / 0.63 s against
0.14 / 0.85 / 11 s; at N = 500, D = 2, the exhaustive tour was still a little faster.
"""

from __future__ import annotations

import logging
import math
from array import array
from dataclasses import dataclass

import numpy as np
import torch

from acn.bank.bounds import gamma, unit_roundoff
from acn.bank.search import CandidateSearch, make_search
from acn.bank.tourgraph import (
    SLACK,
    GraphStats,
    build_cells,
    float32_gap,
    knn_graph,
    sq_distances,
)

log = logging.getLogger(__name__)

METHODS = ("auto", "graph", "exhaustive")
# method="auto" builds the graph from this many codes on (the module doc).
GRAPH_FROM = 1024
# Neighbours per code: fewer lists run dry (measured on 20,000 codes of a 16-d Gaussian mixture,
# 15% of steps fell back at k = 16, 8% at 32, 4% at 64) at O(N k) memory.
DEFAULT_K = 32
# Codes per cell of the graph's partition (and queries per batch of its search).
CELL_SIZE = 2048
# The graph's float32 scores need |elements| below this (squared norms far below 2^128).
MAX_GRAPH_ELEMENT = 2.0**50
# The fallbacks keep each cell's distances to the other cells up to this many cells (C^2 floats).
SEPARATIONS_KEPT = 4096


@dataclass
class TourStats:
    """How a graph tour went.

    Attributes:
        k: neighbours per code (at most N - 1).
        fallbacks: steps whose k-NN list was all visited.
        graph: the graph's :class:`acn.bank.tourgraph.GraphStats`.
    """

    k: int
    fallbacks: int
    graph: GraphStats


def _check(codes: torch.Tensor, start: int) -> None:
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes must be a non-empty (N, D) tensor, got {tuple(codes.shape)}")
    n = codes.shape[0]
    if not 0 <= start < n:
        raise ValueError(f"start={start} is outside 0..{n - 1}")
    if codes.is_floating_point() and not bool(torch.isfinite(codes).all()):
        raise ValueError("codes must be finite (no NaN or inf)")


@torch.no_grad()
def greedy_tour(
    codes: torch.Tensor,
    start: int = 0,
    *,
    method: str = "auto",
    k: int = DEFAULT_K,
    backend: str = "auto",
) -> torch.Tensor:
    """Visit every row of ``codes`` once, each time moving to the nearest unvisited row.

    Args:
        codes: (N, D) codes.
        start: the row the tour begins at.
        method: ``auto``, ``graph`` or ``exhaustive`` (the module doc); all give the same tour.
        k: neighbours per code for ``graph``.
        backend: the graph's candidate search, ``torch``, ``faiss`` or ``auto`` (faiss where
            installed); the tour does not depend on it.

    Returns:
        (N,) row indices in visiting order on the codes' device; ``order[0] == start``. Ties go
        to the lowest index.
    """
    _check(codes, start)
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {', '.join(METHODS)}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if method == "auto":
        method = "graph" if codes.shape[0] >= GRAPH_FROM and _fits_float32(codes) else "exhaustive"
    if method == "exhaustive" or codes.shape[1] == 0:
        return exhaustive_tour(codes, start)
    order, stats = graph_tour(codes, start, k=k, backend=backend)
    log.debug("greedy tour of %d codes: %d fallbacks", codes.shape[0], stats.fallbacks)
    return order


def _fits_float32(codes: torch.Tensor) -> bool:
    """The graph's search scores float32 copies of the codes: their squares, products and sums
    must stay far from float32's overflow (2^128), so every |element| must be below 2^50."""
    return bool(codes.abs().max() < MAX_GRAPH_ELEMENT)


@torch.no_grad()
def exhaustive_tour(codes: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The greedy tour by scoring every code at every step: O(N^2 D), the reference.

    Args:
        codes: (N, D) codes; the work stays on their device.
        start: the first row.

    Returns:
        (N,) long row indices in visiting order, on the codes' device.
    """
    _check(codes, start)
    n, device = codes.shape[0], codes.device
    x = codes.double()
    order = torch.empty(n, dtype=torch.long, device=device)
    visited = torch.zeros(n, dtype=torch.bool, device=device)
    current = start
    for step in range(n):
        order[step] = current
        visited[current] = True
        if step == n - 1:
            break
        if x.shape[1] == 0:  # every distance is 0: the lowest unvisited index
            current = int(torch.argmin(visited.to(torch.int8)))
            continue
        d2 = sq_distances(x[current], x)  # (N,)
        d2.masked_fill_(visited, float("inf"))
        current = int(torch.argmin(d2))  # first minimum: ties go to the lowest index
    return order


@torch.no_grad()
def graph_tour(
    codes: torch.Tensor,
    start: int = 0,
    *,
    k: int = DEFAULT_K,
    backend: str = "auto",
    cell_size: int = CELL_SIZE,
    chunk_size: int = 65536,
) -> tuple[torch.Tensor, TourStats]:
    """The greedy tour by the exact k-NN graph (the module doc); the same order as
    :func:`exhaustive_tour`.

    Args:
        codes: (N, D) codes, D >= 1, finite, |elements| below 2^50 (the search scores
            float32 copies); the work runs on the CPU.
        start: the first row.
        k: neighbours per code (capped at N - 1).
        backend: ``torch``, ``faiss`` or ``auto`` (faiss where installed).
        cell_size: codes per cell of the graph's partition and queries per batch of its
            search; the fallbacks' partition has cells a quarter that size.
        chunk_size: rows the ``torch`` back-end scores at once.

    Returns:
        ``(order, stats)``: (N,) long on the codes' device, and :class:`TourStats`.
    """
    _check(codes, start)
    if codes.shape[1] == 0 or not _fits_float32(codes):
        raise ValueError("the graph tour needs D >= 1 and |codes| < 2^50 (float32 scores)")
    n = codes.shape[0]
    k = min(k, n - 1)
    if k == 0:
        return torch.full((1,), start, dtype=torch.long, device=codes.device), TourStats(
            0, 0, GraphStats()
        )
    x64 = codes.detach().to("cpu", torch.float64).contiguous()
    graph, _, gstats = knn_graph(x64, k, _search(backend, chunk_size), cell_size)
    nearest = NearestUnvisited(x64, max(1, cell_size // 4))
    order, fallbacks = walk(graph.numpy(), start, nearest)
    return torch.from_numpy(order).to(codes.device), TourStats(k, fallbacks, gstats)


def _search(backend: str, chunk_size: int) -> CandidateSearch:
    if backend == "auto":
        try:
            import faiss  # noqa: F401
        except ImportError:
            backend = "torch"
        else:
            backend = "faiss"
    return make_search(backend, chunk_size)


def walk(graph: np.ndarray, start: int, nearest: NearestUnvisited) -> tuple[np.ndarray, int]:
    """Follow the k-NN lists from ``start``: each step takes the first unvisited row of the
    current row's list, or asks ``nearest`` where there is none.

    Args:
        graph: (N, k) int32, each row's k nearest other rows in canonical order.
        start: the first row.
        nearest: the fallback; its ``visited`` and ``left`` are kept current here.

    Returns:
        ``(order, fallbacks)``: (N,) int64 rows in visiting order, and the number of steps that
        fell back.
    """
    n, k = graph.shape
    lists = memoryview(np.ascontiguousarray(graph, dtype=np.int32).reshape(-1))
    visited, cell_of, left = nearest.visited, memoryview(nearest.of), memoryview(nearest.left)
    x = nearest.x64
    order = array("q")
    current, fallbacks = start, 0
    # Plain Python on buffers: one step is a few hundred nanoseconds, and N steps are sequential.
    for step in range(n):
        order.append(current)
        visited[current] = 1
        left[cell_of[current]] -= 1
        if step == n - 1:
            break
        for p in range(current * k, current * k + k):
            nxt = lists[p]
            if not visited[nxt]:
                break
        else:
            # The answer lies beyond the k-th neighbour, most often just beyond (measured on
            # 16-d codes: within 1.1 times its distance in half the steps, 1.25 in 90%); the
            # cells that might hold rows that near are a good first read.
            diff = x[current] - x[nxt]
            nxt = nearest(current, math.sqrt(float(diff @ diff)))
            fallbacks += 1
        current = nxt
    return np.frombuffer(order, dtype=np.int64).copy(), fallbacks


class NearestUnvisited:
    """The exact nearest unvisited row, for the walk's steps whose k-NN list is used up.

    It has a partition of its own (:func:`acn.bank.tourgraph.build_cells`), finer than the
    graph's, whose cells are also its query batches: a step reads fewer rows. Each cell keeps
    its rows in its own segment of one array, compacted to its unvisited rows whenever it is
    read, so each visited row is read at most once more and the work shrinks as the tour
    proceeds. A step reads the cell the bounds rank first, then every cell the bounds cannot
    rule out against the nearest row found there. Candidates are screened by the expanded form
    |x|^2 - 2 x.q + |q|^2 in float64 (BLAS), whose error is far below the screen's margin, and
    ranked by the tour's distance. Plain numpy: one query at a time, where torch's per-call
    cost would dominate.

    Attributes:
        visited: (N,) bytearray, 1 for a visited row; the walk writes it.
        left: (C,) int64, unvisited rows per cell; the walk keeps it current.
        of: (N,) int64, each row's cell.
    """

    def __init__(self, x64: torch.Tensor, cell_size: int = 512) -> None:
        x32 = x64.float()
        cells = build_cells(x32, cell_size)
        self.x64 = x64.numpy()
        self.mu = cells.centroids.double().numpy()
        self.mu_sq = np.einsum("cd,cd->c", self.mu, self.mu)
        self.mu_top = float(np.sqrt(self.mu_sq.max()))
        self.radius, self.tau = cells.radius.numpy(), cells.tau
        # Each cell's distances to the others, kept once computed (C^2 floats, a few MiB at
        # C = 2,500; beyond SEPARATIONS_KEPT cells they are recomputed instead).
        self._separation: dict[int, np.ndarray] = {}
        self.gap = float32_gap(x64, x32)
        self.of = cells.of.numpy().astype(np.int64)
        self.rows, self.starts = cells.rows.numpy().copy(), cells.starts.numpy()[:-1]
        # The rows' float32 copies and float64 squared norms in the same segments, for the
        # screen: a segment is read in one sweep of memory.
        self.xs = x32.numpy()[self.rows]
        self.sq_norms = np.einsum("nd,nd->n", self.xs, self.xs, dtype=np.float64)
        self.top = float(np.sqrt(self.sq_norms.max())) + self.gap
        self.left = np.diff(cells.starts.numpy())
        self.size = self.left.copy()  # rows in each segment, visited or not
        self.visited = bytearray(x64.shape[0])
        self._seen = np.frombuffer(self.visited, dtype=np.bool_)

    def __call__(self, i: int, guess: float) -> int:
        """The unvisited row nearest row ``i`` in canonical order (one must be left).

        ``guess`` (any number) only sets how far the first read reaches: the cells that might
        hold a row within it, or else the cell the bounds rank first. The second read takes
        every other cell that might hold a row as near as the nearest found.
        """
        bound = self._bounds(i)
        first = bound <= guess
        if not first.any():
            first[int(bound.argmin())] = True
        d2, row = self._nearest(i, np.flatnonzero(first))
        rest = np.flatnonzero((bound <= math.sqrt(d2) * (1 + 2**-30)) & ~first)
        if rest.size:
            d2_rest, row_rest = self._nearest(i, rest)
            if (d2_rest, row_rest) < (d2, row):  # canonical: distance, then index
                row = row_rest
        return row

    def _bounds(self, i: int) -> np.ndarray:
        """(C,) lower bounds on the distance from row i to each cell's rows (+inf: none left)."""
        q = self.x64[i].astype(np.float32).astype(np.float64)
        q_sq = float(q @ q)
        # The expanded form in float64 is off by at most (D + 2) u64 (|q| + |mu|)^2 < err.
        d2 = self.mu_sq - 2 * (self.mu @ q) + q_sq  # (C,)
        err = 2 * SLACK * (math.sqrt(q_sq) + self.mu_top) ** 2
        low, a = np.maximum(d2 - err, 0.0), int(self.of[i])
        sep = self._separation.get(a)
        if sep is None:
            sep = np.sqrt(np.square(self.mu - self.mu[a]).sum(axis=1)) * (1 + SLACK)
            if len(self.mu) <= SEPARATIONS_KEPT:
                self._separation[a] = sep
        gap = np.maximum(low - (d2[a] + err) - self.tau, 0.0)
        plane = np.divide(gap, 2 * sep, out=np.zeros_like(gap), where=sep > 0)
        bound = np.maximum(plane, np.sqrt(low) - self.radius) - self.gap
        bound[self.left == 0] = math.inf
        return bound

    def _unvisited(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The unvisited rows of ``cells``, their float32 copies and squared norms; their
        segments are compacted on the way."""
        lo, n = self.starts[cells], self.size[cells]
        at = _segments(lo, n)
        rows = self.rows[at]
        fresh = ~self._seen[rows]
        if fresh.all():
            return rows, self.xs[at], self.sq_norms[at]
        rows, xs, sq_norms = rows[fresh], self.xs[at][fresh], self.sq_norms[at][fresh]
        n = self.left[cells]  # the kept rows are in cell order, n[j] rows of cells[j]
        at = _segments(lo, n)
        self.rows[at], self.xs[at], self.sq_norms[at] = rows, xs, sq_norms  # visited: gone
        self.size[cells] = n
        return rows, xs, sq_norms

    def _nearest(self, i: int, cells: np.ndarray) -> tuple[float, int]:
        """(squared distance, row): the canonical nearest unvisited row of ``cells`` to row i."""
        rows, xs, sq_norms = self._unvisited(cells)
        q = self.x64[i]
        q32 = q.astype(np.float32)
        q_sq = float(q32.astype(np.float64) @ q32)
        approx = sq_norms - 2 * (xs @ q32).astype(np.float64) + q_sq
        # Each approximation (of the float32 copies' distance) is off by at most
        # 2 gamma_D(u32) |q| |x| + 2 gamma_D(u32) (|q|^2 + |x|^2) from the products and
        # norms, and that distance is within `gap` of the codes' (tourgraph.float32_gap):
        # keep everything within the room that two such errors leave.
        scale = math.sqrt(q_sq) + self.top
        room = 8 * gamma(q.shape[0], unit_roundoff(torch.float32)) * scale**2
        room += 8 * self.gap * (scale + self.gap)
        room += 8 * (q.shape[0] + 2) * torch.finfo(torch.float32).smallest_normal  # underflow
        near = rows[approx <= approx.min() + room]
        d2 = sq_distances(q[None, :], self.x64[near])
        best = d2.min()
        return float(best), int(near[d2 == best].min())


def _segments(lo: np.ndarray, n: np.ndarray) -> slice | np.ndarray:
    """An index for lo[0]..lo[0]+n[0]-1, lo[1]..lo[1]+n[1]-1, ... (a slice for one segment)."""
    if len(lo) == 1:
        return slice(int(lo[0]), int(lo[0] + n[0]))
    return np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
