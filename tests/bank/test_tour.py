"""The greedy tour: both methods equal a plain-Python reference by the tour's distance, the
graph's lists are the exact k nearest in canonical order, its memory stays O(N k), and bad
inputs are refused."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from acn.bank import tour
from acn.bank.search import TorchSearch
from acn.bank.tour import (
    CELL_SIZE,
    DEFAULT_K,
    GRAPH_FROM,
    exhaustive_tour,
    graph_tour,
    greedy_tour,
)
from acn.bank.tourgraph import exhaustive_neighbours, knn_graph, sq_distances

HAVE_FAISS = importlib.util.find_spec("faiss") is not None
BACKENDS = [
    "torch",
    pytest.param("faiss", marks=pytest.mark.skipif(not HAVE_FAISS, reason="no faiss")),
]


def _reference(codes: list[list[float]], start: int) -> list[int]:
    """Python floats: each difference, product and sum is one IEEE double operation, summed in
    dimension order, exactly the tour's distance."""

    def sq(a: list[float], b: list[float]) -> float:
        total = 0.0
        for x, y in zip(a, b, strict=True):
            total += (x - y) * (x - y)
        return total

    left = set(range(len(codes)))
    order, current = [], start
    while True:
        order.append(current)
        left.discard(current)
        if not left:
            return order
        current = min(left, key=lambda j: (sq(codes[current], codes[j]), j))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clustered(n: int, d: int, clusters: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    centres = torch.randn(clusters, d, generator=g) * 4
    return centres[torch.randint(0, clusters, (n,), generator=g)] + torch.randn(n, d, generator=g)


def _duplicated(n: int, d: int, distinct: int, seed: int) -> torch.Tensor:
    """Rows drawn from a few distinct ones: many exact ties, at distance 0 and beyond."""
    g = _gen(seed)
    pool = torch.randint(-2, 3, (distinct, d), generator=g).float()
    return pool[torch.randint(0, distinct, (n,), generator=g)]


def _graph(codes: torch.Tensor, start: int, **options) -> list[int]:
    """The graph tour with a small partition and small search blocks, so that every path of the
    search (many cells, several rounds, chunked scoring) runs even on a few hundred codes."""
    options = {"cell_size": 8, "chunk_size": 16, "backend": "torch", **options}
    order, stats = graph_tour(codes, start, **options)
    assert stats.k == min(options.get("k", 32), codes.shape[0] - 1)
    return order.tolist()


@pytest.mark.parametrize(("n", "d", "start"), [(1, 3, 0), (2, 1, 1), (50, 2, 0), (200, 16, 37)])
@pytest.mark.parametrize("method", ["exhaustive", "graph"])
def test_tour_matches_reference(n, d, start, method):
    codes = torch.randn(n, d, generator=_gen(n + d), dtype=torch.float64)
    order = greedy_tour(codes, start, method=method)
    assert order.tolist() == _reference(codes.tolist(), start)
    assert sorted(order.tolist()) == list(range(n)) and int(order[0]) == start


@pytest.mark.parametrize("method", ["exhaustive", "graph"])
def test_ties_go_to_the_lowest_index_and_duplicates_are_all_visited(method):
    codes = torch.tensor([[0.0], [1.0], [-1.0], [1.0], [0.0]])
    assert greedy_tour(codes, 0, method=method).tolist() == [0, 4, 1, 3, 2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "codes", "k"),
    [
        ("random", torch.randn(200, 5, generator=_gen(1)), 6),
        ("random-float64", torch.randn(200, 3, generator=_gen(2), dtype=torch.float64), 4),
        ("clustered", _clustered(300, 8, 6, seed=3), 5),
        ("duplicated", _duplicated(200, 3, 25, seed=4), 4),
        ("integer-grid", torch.randint(0, 3, (250, 2), generator=_gen(5)).float(), 3),
        ("all-equal", torch.full((60, 4), 0.25), 3),
        ("one-dimension", torch.randn(200, 1, generator=_gen(6)), 2),
    ],
)
def test_graph_tour_equals_the_exhaustive_tour(name, codes, k, backend):
    for start in (0, codes.shape[0] - 1):
        want = exhaustive_tour(codes, start).tolist()
        assert _graph(codes, start, k=k, backend=backend) == want, (name, start)
    assert want == _reference(codes.tolist(), codes.shape[0] - 1)


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e12])
def test_tiny_and_large_magnitudes(scale):
    """Float32 scores underflow below ~1e-19 and lose everything but the offset far from 0; the
    bounds allow for both, so the tour stays exact (the proofs fail over to exact searches)."""
    codes = _clustered(300, 4, 5, seed=13) * scale
    shifted = _clustered(300, 4, 5, seed=14).double() + 1e6  # distances tiny next to norms
    for x in (codes, shifted):
        for start in (0, 299):
            assert _graph(x, start, k=4) == exhaustive_tour(x, start).tolist()


def test_every_start_of_a_small_set_with_ties():
    codes = torch.cat([_duplicated(20, 2, 6, seed=7), torch.randn(12, 2, generator=_gen(8))])
    for start in range(codes.shape[0]):
        assert _graph(codes, start, k=3) == exhaustive_tour(codes, start).tolist()


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 50])
def test_tiny_sets_and_k_at_least_n(n, k):
    codes = torch.randn(n, 2, generator=_gen(n))
    for start in range(n):
        assert _graph(codes, start, k=k) == _reference(codes.tolist(), start)


def test_the_default_settings():
    codes = _clustered(3 * CELL_SIZE, 2, 5, seed=9)
    order, stats = graph_tour(codes, 17)
    assert torch.equal(order, exhaustive_tour(codes, 17))
    assert stats.graph.cells > 1 and stats.fallbacks > 0 and stats.k == DEFAULT_K


def test_the_automatic_switch(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return graph_tour(*args, **kwargs)

    monkeypatch.setattr(tour, "graph_tour", spy)
    for n in (GRAPH_FROM - 1, GRAPH_FROM):
        codes = _clustered(n, 3, 4, seed=n)
        assert torch.equal(greedy_tour(codes, 5), exhaustive_tour(codes, 5))
    assert calls == [GRAPH_FROM]


def test_the_graph_lists_are_the_exact_nearest_in_canonical_order():
    codes = torch.cat([_clustered(300, 4, 5, seed=10), _duplicated(100, 4, 10, seed=11)])
    x64 = codes.double()
    graph, cells, stats = knn_graph(x64, 7, TorchSearch(chunk_size=32), cell_size=16)
    _, want = exhaustive_neighbours(x64, torch.arange(400), 7)
    assert torch.equal(graph.long(), want)
    assert stats.cells == cells.centroids.shape[0] > 10
    assert 0 < stats.scored < 400 * 400  # the bounds ruled rows out
    assert not (graph.long() == torch.arange(400)[:, None]).any()  # never oneself
    dist = sq_distances(x64[:, None, :], x64[graph.long()])
    assert (dist[:, 1:] >= dist[:, :-1]).all()


def test_the_distance_is_the_same_bits_in_torch_numpy_and_python():
    g = _gen(12)
    a = torch.randn(64, 128, generator=g, dtype=torch.float64) * 1e3
    b = torch.randn(64, 128, generator=g).double()
    in_torch = sq_distances(a, b)
    in_numpy = sq_distances(a.numpy(), b.numpy())
    in_python = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        total = 0.0
        for u, v in zip(x, y, strict=True):
            total += (u - v) * (u - v)
        in_python.append(total)
    assert in_torch.tolist() == in_numpy.tolist() == in_python
    # Batch shape does not matter: each pair's value depends on the pair alone.
    assert torch.equal(sq_distances(a[:, None, :], b[None, :, :]).diagonal(), in_torch)


def test_memory_stays_linear_in_n():
    """12,000 codes: an N x N float64 matrix would take 1.1 GB; the tour's peak stays far below."""
    code = (
        "import resource, torch\n"
        "from acn.bank.tour import graph_tour\n"
        "torch.set_num_threads(1)\n"
        "codes = torch.randn(12000, 2, generator=torch.Generator().manual_seed(0))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "order, stats = graph_tour(codes, 0, k=8, backend='torch')\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert sorted(order.tolist()) == list(range(12000))\n"
        "print((after - before) / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 200  # MiB


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        greedy_tour(torch.empty(0, 3))
    with pytest.raises(ValueError, match="non-empty"):
        greedy_tour(torch.zeros(3))
    with pytest.raises(ValueError, match="outside"):
        greedy_tour(torch.zeros(3, 2), start=3)
    with pytest.raises(ValueError, match="outside"):
        graph_tour(torch.zeros(3, 2), start=-1)
    with pytest.raises(ValueError, match="finite"):
        greedy_tour(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match="method"):
        greedy_tour(torch.zeros(3, 2), method="tree")
    with pytest.raises(ValueError, match="k="):
        greedy_tour(torch.zeros(3, 2), k=0)
    with pytest.raises(ValueError, match="2\\^50"):
        graph_tour(torch.tensor([[0.0], [1e20]]))


def test_bench_quick(tmp_path):
    from acn.experiments.bench_tour import main

    out = tmp_path / "tour.json"
    assert main(["--quick", "--out", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert records and all(r["same_as_exhaustive"] in (True, None) for r in records)
    assert any(r["same_as_exhaustive"] is True for r in records)
    assert all(np.isfinite(r["seconds"]) and r["fallbacks"] >= 0 for r in records)
