"""Tests for :class:`acn.bank.codebank.CodeBank`: exact k-NN with exclusions, updates, sampling."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from acn.bank.codebank import CodeBank, uniform_pick


def _bank(n: int, d: int, chunk_size: int = 65536, seed: int = 0) -> CodeBank:
    return CodeBank(n, d, chunk_size=chunk_size, generator=torch.Generator().manual_seed(seed))


def _brute_force(codes, queries, k, exclude=None, allowed=None):
    """Reference k-NN: cdist, excluded / disallowed rows at inf, stable ascending sort."""
    d = torch.cdist(queries.double(), codes.double())  # (B, N)
    if exclude is not None:
        ex = exclude.reshape(queries.shape[0], -1)
        for b in range(queries.shape[0]):
            for e in ex[b].tolist():
                if 0 <= e < codes.shape[0]:
                    d[b, e] = float("inf")
    if allowed is not None:
        d[:, ~allowed] = float("inf")
    dist, idx = d.sort(dim=1, stable=True)
    return dist[:, :k], idx[:, :k]


def _assert_matches_brute_force(bank, queries, k, exclude=None, allowed=None):
    dist, idx = bank.knn(queries, k, exclude=exclude, allowed=allowed)
    ref_d, ref_i = _brute_force(bank.codes, queries, k, exclude, allowed)
    assert dist.shape == idx.shape == (queries.shape[0], k)
    assert idx.dtype == torch.long
    finite = torch.isfinite(ref_d)
    assert torch.equal(torch.isfinite(dist), finite)
    torch.testing.assert_close(dist.double()[finite], ref_d[finite], rtol=1e-5, atol=1e-5)
    # Indices must agree wherever the reference distance is unambiguous (no near tie).
    full = torch.cdist(queries.double(), bank.codes.double())
    for b in range(queries.shape[0]):
        for j in range(k):
            if not finite[b, j]:
                continue
            gap = (full[b] - ref_d[b, j]).abs()
            gap[ref_i[b, j]] = float("inf")
            if gap.min() > 1e-4:
                assert idx[b, j] == ref_i[b, j], (b, j)
        # Whatever the tie-breaking, each returned index really lies at the returned distance.
        got = full[b, idx[b][finite[b]]]
        torch.testing.assert_close(got, dist[b][finite[b]].double(), rtol=1e-5, atol=1e-5)
    return dist, idx


@pytest.mark.parametrize(
    ("n", "d", "k", "chunk"),
    [
        (1, 1, 1, 65536),
        (10, 3, 1, 65536),
        (10, 3, 10, 65536),
        (50, 2, 5, 65536),
        (100, 8, 5, 7),
        (100, 8, 20, 7),
        (100, 4, 3, 1),
        (257, 16, 9, 64),
        (64, 5, 12, 13),
    ],
)
def test_knn_matches_brute_force(n, d, k, chunk):
    bank = _bank(n, d, chunk_size=chunk, seed=n + d)
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(6, d, generator=g)
    dist, idx = _assert_matches_brute_force(bank, queries, k)
    # Sorted ascending, no repeated rows per query.
    assert torch.all(dist[:, 1:] >= dist[:, :-1])
    for row in idx:
        assert len(set(row.tolist())) == k


@pytest.mark.parametrize(
    ("n", "k", "chunk"), [(100, 5, 7), (100, 16, 7), (30, 4, 65536), (40, 3, 1)]
)
def test_knn_with_exclusions_matches_brute_force(n, k, chunk):
    d = 6
    bank = _bank(n, d, chunk_size=chunk, seed=3)
    own = torch.tensor([0, 7, 13, n - 1, 42 % n])
    # Query with the bank's own codes: the nearest row is the query's own, unless excluded.
    queries = bank.codes[own].clone()
    dist, idx = _assert_matches_brute_force(bank, queries, k, exclude=own)
    assert not (idx == own[:, None]).any()
    assert torch.all(dist > 0)
    # Without the exclusion each query finds itself first, at distance zero.
    d0, i0 = bank.knn(queries, k)
    assert torch.equal(i0[:, 0], own)
    assert torch.all(d0[:, 0] == 0)


def test_own_index_never_returned_among_exact_duplicates():
    n, d = 100, 4
    bank = _bank(n, d, chunk_size=7, seed=5)
    v = torch.randn(d, generator=torch.Generator().manual_seed(9))
    bank.update(torch.arange(10), v.expand(10, d).clone())
    for k in (1, 5, 9, 12):
        dist, idx = bank.knn(v[None], k, exclude=torch.tensor([3]))
        assert 3 not in idx[0].tolist()
        dup = min(k, 9)
        assert set(idx[0, :dup].tolist()) <= set(range(10)) - {3}
        assert torch.all(dist[0, :dup] == 0)
        if k > 9:
            assert torch.all(dist[0, 9:] > 0)
            assert set(idx[0, :9].tolist()) == set(range(10)) - {3}
    # Several queries at once, each excluding a different duplicate.
    own = torch.tensor([0, 3, 9, 5])
    dist, idx = bank.knn(v.expand(4, d), 9, exclude=own)
    for b in range(4):
        assert set(idx[b].tolist()) == set(range(10)) - {own[b].item()}
        assert torch.all(dist[b] == 0)
    # The sampler never returns the excluded duplicate either.
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        pick = bank.sample_neighbours(v.expand(4, d), 5, exclude=own, generator=g)
        assert not (pick == own).any()
        assert all(p in range(10) for p in pick.tolist())


def test_exclude_two_dimensional_with_padding():
    n, d, k = 100, 5, 6
    bank = _bank(n, d, chunk_size=7, seed=11)
    own = torch.tensor([4, 50, 99])
    queries = bank.codes[own].clone()
    # First find the neighbours, then exclude self plus the first two of them (padded with -1).
    _, first = bank.knn(queries, 3, exclude=own)
    exclude = torch.full((3, 5), -1, dtype=torch.long)
    exclude[:, 0] = own
    exclude[0, 1:3] = first[0, :2]
    exclude[1, 1:2] = first[1, :1]
    exclude[2, 1:4] = first[2, :3]
    dist, idx = _assert_matches_brute_force(bank, queries, k, exclude=exclude)
    for b in range(3):
        banned = {e for e in exclude[b].tolist() if e >= 0}
        assert not banned & set(idx[b].tolist())
    # -1 padding excludes nothing: index -1 must not wrap to the last row of the bank or of a
    # chunk. Query each chunk's last row, and the bank's, with padding only.
    for chunk in (7, n):
        other = _bank(n, d, chunk_size=chunk, seed=11)
        for row in (chunk - 1, n - 1):
            code = other.codes[row : row + 1].clone()
            _, i_pad = other.knn(code, 1, exclude=torch.tensor([[-1, -1]]))
            assert i_pad[0, 0] == row
            # Out-of-range indices beyond N are ignored too.
            _, i_big = other.knn(code, 1, exclude=torch.tensor([[n, n + 5]]))
            assert i_big[0, 0] == row
    # The (B,) form is the same as the (B, 1) form.
    a = bank.knn(queries, k, exclude=own)
    b = bank.knn(queries, k, exclude=own[:, None])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("chunk", [7, 65536])
def test_allowed_mask_respected(chunk):
    n, d, k = 100, 3, 5
    bank = _bank(n, d, chunk_size=chunk, seed=2)
    allowed = torch.zeros(n, dtype=torch.bool)
    allowed[::3] = True
    queries = torch.randn(4, d, generator=torch.Generator().manual_seed(4))
    dist, idx = _assert_matches_brute_force(bank, queries, k, allowed=allowed)
    assert allowed[idx].all()
    # Combined with an exclusion.
    exclude = idx[:, 0]
    dist2, idx2 = _assert_matches_brute_force(bank, queries, k, exclude=exclude, allowed=allowed)
    assert allowed[idx2].all()
    assert not (idx2 == exclude[:, None]).any()


@pytest.mark.parametrize("chunk", [4, 65536])
def test_knn_order_exact_far_from_origin(chunk):
    """Codes with a large common offset and small spreads: the expanded form
    ||q||^2 - 2 q.c + ||c||^2 cancels catastrophically in float32, the returned order and
    distances must still be exact (within the re-ranked candidates)."""
    n, d, k = 12, 3, 4  # k + RERANK_MARGIN >= n: every row is a candidate
    bank = _bank(n, d, chunk_size=chunk)
    g = torch.Generator().manual_seed(12)
    offset = torch.full((d,), 3000.0)
    spread = torch.arange(1, n + 1, dtype=torch.float32)[:, None] * 1e-3 * torch.ones(d)
    perm = torch.randperm(n, generator=g)
    bank.update(torch.arange(n), offset + spread[perm])
    query = offset[None].clone()
    dist, idx = bank.knn(query, k)
    # Nearest rows are those holding the smallest spreads, in that order.
    expected = perm.argsort()[:k]
    assert torch.equal(idx[0], expected)
    true = (bank.codes[expected].double() - query.double()).norm(dim=1)
    torch.testing.assert_close(dist[0].double(), true, rtol=1e-3, atol=0)


def test_fewer_eligible_than_k_gives_inf_tail():
    n, d = 20, 2
    bank = _bank(n, d, chunk_size=6, seed=1)
    allowed = torch.zeros(n, dtype=torch.bool)
    allowed[[2, 11, 17]] = True
    dist, idx = bank.knn(torch.zeros(2, d), 5, allowed=allowed)
    assert torch.isfinite(dist[:, :3]).all()
    assert torch.isinf(dist[:, 3:]).all()
    assert set(idx[0, :3].tolist()) == {2, 11, 17}


def test_knn_rejects_bad_arguments():
    bank = _bank(10, 3)
    with pytest.raises(ValueError):
        bank.knn(torch.zeros(2, 3), 11)
    with pytest.raises(ValueError):
        bank.knn(torch.zeros(2, 3), 0)
    with pytest.raises(ValueError):
        bank.knn(torch.zeros(2, 4), 1)
    with pytest.raises(ValueError):
        bank.sample_neighbours(torch.zeros(2, 3), 11)
    with pytest.raises(ValueError):
        CodeBank(0, 3)
    with pytest.raises(ValueError):
        CodeBank(3, 0)


def test_update_writes_rows_and_keeps_norms():
    n, d = 30, 4
    bank = _bank(n, d, chunk_size=8)
    before = bank.codes.clone()
    rows = torch.tensor([3, 17, 29])
    new = torch.randn(3, d, generator=torch.Generator().manual_seed(8), requires_grad=True)
    bank.update(rows, new * 2)
    assert torch.equal(bank.codes[rows], (new * 2).detach())
    others = torch.ones(n, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(bank.codes[others], before[others])
    torch.testing.assert_close(bank.sq_norms, bank.codes.pow(2).sum(dim=1))
    assert not bank.codes.requires_grad
    # The search sees the new codes: querying a written row's code finds that row.
    _, idx = bank.knn((new * 2).detach(), 1)
    assert torch.equal(idx[:, 0], rows)
    # Float64 codes are cast to the bank's dtype.
    bank.update(torch.tensor([0]), torch.full((1, d), 0.5, dtype=torch.float64))
    assert bank.codes.dtype == torch.float32
    assert torch.equal(bank.codes[0], torch.full((d,), 0.5))
    assert bank.sq_norms[0] == pytest.approx(0.25 * d)


def test_initial_codes_standard_normal_and_reproducible():
    bank = _bank(4000, 16, seed=123)
    c = bank.codes
    assert c.shape == (4000, 16)
    assert abs(c.mean().item()) < 0.02  # 64000 draws: standard error 0.004
    assert abs(c.std().item() - 1) < 0.02
    assert abs(c.pow(3).mean().item()) < 0.05  # symmetric
    torch.testing.assert_close(bank.sq_norms, c.pow(2).sum(dim=1))
    assert not bank.used.any()
    same = _bank(4000, 16, seed=123)
    assert torch.equal(same.codes, c)
    other = _bank(4000, 16, seed=124)
    assert not torch.equal(other.codes, c)


def test_codes_are_buffers_in_state_dict():
    bank = _bank(5, 2)
    state = bank.state_dict()
    assert {"codes", "sq_norms", "used"} <= set(state)
    assert list(bank.parameters()) == []


def test_sample_neighbours_is_among_k_nearest_and_never_self():
    n, d, k = 100, 4, 6
    bank = _bank(n, d, chunk_size=7, seed=6)
    own = torch.arange(0, 100, 10)
    queries = bank.codes[own].clone()
    _, nearest = bank.knn(queries, k, exclude=own)
    g = torch.Generator().manual_seed(0)
    seen = [set() for _ in own]
    for _ in range(60):
        pick = bank.sample_neighbours(queries, k, exclude=own, generator=g)
        assert pick.shape == (len(own),)
        assert not (pick == own).any()
        for b, p in enumerate(pick.tolist()):
            assert p in nearest[b].tolist()
            seen[b].add(p)
    # Over 60 draws every one of the k candidates comes up (chance of missing one < 1e-3).
    for b in range(len(own)):
        assert seen[b] == set(nearest[b].tolist())
    # unique=False never touches the usage marks.
    assert not bank.used.any()


def test_sample_neighbours_roughly_uniform():
    n, d, k = 50, 3, 5
    bank = _bank(n, d, seed=7)
    query = torch.zeros(1, d)
    _, nearest = bank.knn(query, k)
    draws = 4000
    g = torch.Generator().manual_seed(42)
    counts = dict.fromkeys(nearest[0].tolist(), 0)
    picks = bank.sample_neighbours(query.expand(draws, d), k, generator=g)
    for p in picks.tolist():
        counts[p] += 1  # KeyError if outside the k nearest
    expected = draws / k
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # 4 degrees of freedom: P(chi2 > 18.47) = 0.001.
    assert chi2 < 18.47, counts


def test_sample_neighbours_reproducible_with_generator():
    bank = _bank(80, 4, chunk_size=9, seed=1)
    queries = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))

    def run(seed, unique):
        bank.reset_usage()
        return bank.sample_neighbours(
            queries, 7, generator=torch.Generator().manual_seed(seed), unique=unique
        )

    for unique in (False, True):
        a, b = run(5, unique), run(5, unique)
        assert torch.equal(a, b)
        assert not torch.equal(a, run(6, unique))


def test_unique_neighbours_within_a_call():
    n, d, k = 60, 3, 4
    bank = _bank(n, d, chunk_size=11, seed=8)
    # All queries identical: without the constraint they would share their k nearest rows.
    queries = torch.zeros(12, d)
    g = torch.Generator().manual_seed(3)
    pick = bank.sample_neighbours(queries, k, generator=g, unique=True)
    assert len(set(pick.tolist())) == 12
    marked = torch.zeros(n, dtype=torch.bool)
    marked[pick] = True
    assert torch.equal(bank.used, marked)
    # Each pick is among the k nearest rows not taken by an earlier query of the batch.
    full = torch.cdist(queries[:1], bank.codes)[0]
    order = full.argsort()
    assert set(pick.tolist()) <= set(order[: 12 + k].tolist())
    for b, p in enumerate(pick.tolist()):
        assert p in [r for r in order.tolist() if r not in pick[:b].tolist()][:k]
    # The first query is unconstrained: one of the global k nearest.
    assert pick[0].item() in order[:k].tolist()


def test_unique_neighbours_across_calls_then_fallback():
    n, d, k, b = 24, 3, 5, 4
    bank = _bank(n, d, chunk_size=5, seed=9)
    g = torch.Generator().manual_seed(4)
    qg = torch.Generator().manual_seed(5)
    all_picks: list[int] = []
    for _ in range(n // b):
        queries = torch.randn(b, d, generator=qg)
        pick = bank.sample_neighbours(queries, k, generator=g, unique=True)
        assert not set(pick.tolist()) & set(all_picks)  # never reused while unused rows remain
        all_picks += pick.tolist()
        assert bank.used.sum().item() == len(all_picks)
    assert sorted(all_picks) == list(range(n))
    assert bank.used.all()
    # Everything is used: falls back to the unconstrained k nearest instead of failing.
    queries = torch.randn(b, d, generator=qg)
    own = torch.tensor([0, 1, 2, 3])
    _, nearest = bank.knn(queries, k, exclude=own)
    pick = bank.sample_neighbours(queries, k, exclude=own, generator=g, unique=True)
    assert pick.shape == (b,)
    for i, p in enumerate(pick.tolist()):
        assert p in nearest[i].tolist()
        assert p != own[i]
    # After a reset every row is available again.
    bank.reset_usage()
    assert not bank.used.any()
    pick = bank.sample_neighbours(queries, k, generator=g, unique=True)
    assert len(set(pick.tolist())) == b


def test_unique_neighbours_with_self_exclusion():
    n, d, k = 30, 2, 3
    bank = _bank(n, d, chunk_size=4, seed=10)
    g = torch.Generator().manual_seed(0)
    used_so_far: set[int] = set()
    for start in (0, 6, 12):  # 18 picks from 30 rows: unused rows always remain
        own = torch.arange(start, start + 6)
        queries = bank.codes[own].clone()
        pick = bank.sample_neighbours(queries, k, exclude=own, generator=g, unique=True)
        assert not (pick == own).any()
        assert len(set(pick.tolist())) == 6
        assert not set(pick.tolist()) & used_so_far
        used_so_far |= set(pick.tolist())
        assert set(torch.nonzero(bank.used).flatten().tolist()) == used_so_far


def _points_bank(points) -> CodeBank:
    """A bank holding exactly ``points`` (N, D)."""
    points = torch.as_tensor(points, dtype=torch.float32)
    bank = CodeBank(*points.shape)
    bank.update(torch.arange(points.shape[0]), points)
    return bank


def _batch_order_law(codes, queries, k, exclude, used):
    """The exact law of each query's unique-neighbour pick in batch order, by enumerating the
    earlier queries' choices: per query a dict row -> probability."""
    dist = torch.cdist(queries.double(), codes.double()).tolist()
    laws = [defaultdict(float) for _ in dist]

    def walk(b, taken, p):
        if b == len(dist):
            return
        order = sorted(range(len(codes)), key=lambda r: (dist[b][r], r))
        free = [r for r in order if not used[r] and r not in taken and r != exclude[b]][:k]
        for r in free:
            laws[b][r] += p / len(free)
            walk(b + 1, taken | {r}, p / len(free))

    walk(0, frozenset(), 1.0)
    return laws


def test_unique_draw_resolves_the_batch_in_order():
    """Query 1 takes row 4 (3 is taken), so query 2 finds 4 taken and takes 5. Resolving only
    collisions gave [3, 5, 4]: query 2 had claimed 4 while query 1 still wanted 3."""
    bank = _points_bank([[float(i), 0.0] for i in range(8)])
    queries = torch.tensor([[3.0, 0.0], [3.4, 0.0], [4.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    pick = bank.sample_neighbours(queries, 1, generator=g, unique=True)
    assert pick.tolist() == [3, 4, 5]
    assert torch.nonzero(bank.used).flatten().tolist() == [3, 4, 5]


def test_unique_draw_has_the_batch_order_law():
    """20,000 draws per query against the exact law. One copy: 9 rows on a line, row 3 used,
    the last query excludes row 1; queries 2 and 3 see their nearest rows taken with
    probabilities that depend on every earlier choice. 25 far-apart copies per call, each
    query with at least k free rows of its own copy, give 25 independent draws."""
    xs, qx, k = [0.0, 1.0, 2.1, 3.3, 4.6, 6.0, 10.0, 11.0, 12.0], [0.4, 0.6, 1.2, 1.0], 2
    exclude, used = [-1, -1, -1, 1], [r == 3 for r in range(len(xs))]
    one = torch.tensor([[x, 0.0] for x in xs])
    laws = _batch_order_law(one, torch.tensor([[x, 0.0] for x in qx]), k, exclude, used)
    assert laws[2] == {1: 0.125, 2: 0.25, 0: 0.125, 4: 0.5}  # the enumeration, spelt out
    centres = [(40.0 * i, 40.0 * j) for i in range(-2, 3) for j in range(-2, 3)]
    R, copies = len(xs), len(centres)
    bank = _points_bank([[cx + x, cy] for cx, cy in centres for x in xs])
    queries = torch.tensor([[cx + x, cy] for cx, cy in centres for x in qx])
    own = torch.tensor([e + R * c if e >= 0 else -1 for c in range(copies) for e in exclude])
    start = torch.tensor(used * copies)
    g = torch.Generator().manual_seed(0)
    counts = [defaultdict(int) for _ in qx]
    calls = 20_000 // copies
    for _ in range(calls):
        bank.used.copy_(start)
        pick = bank.sample_neighbours(queries, k, own, g, unique=True)
        for i, row in enumerate(pick.tolist()):
            counts[i % len(qx)][row % R] += 1
    for law, seen in zip(laws, counts, strict=True):
        assert set(seen) <= set(law)
        for row, p in law.items():
            assert abs(seen[row] / (calls * copies) - p) < 0.015, (row, p, seen)


def test_unique_draw_skips_used_rows_until_reset():
    bank = _bank(30, 3, seed=12)
    query = bank.codes[7:8].clone()
    _, nearest = bank.knn(query, 2)
    g = torch.Generator().manual_seed(1)
    assert bank.sample_neighbours(query, 1, generator=g, unique=True).tolist() == [7]
    # Row 7 is used now: the same query takes the next row, however often it asks.
    second = nearest[0, 1].item()
    assert bank.sample_neighbours(query, 1, generator=g, unique=True).tolist() == [second]
    qg = torch.Generator().manual_seed(2)
    for _ in range(5):
        before = bank.used.clone()
        pick = bank.sample_neighbours(torch.randn(4, 3, generator=qg), 4, generator=g, unique=True)
        assert not before[pick].any()
        assert bank.used[pick].all() and bank.used.sum() == before.sum() + 4
    bank.reset_usage()
    assert bank.sample_neighbours(query, 1, generator=g, unique=True).tolist() == [7]


def test_unique_draw_falls_back_when_every_row_is_used():
    bank = _bank(20, 3, seed=13)
    bank.used.fill_(True)
    own = torch.tensor([0, 5, 9])
    queries = bank.codes[own] + 0.01
    pick = bank.sample_neighbours(queries, 4, own, torch.Generator().manual_seed(5), unique=True)
    # Exactly the unconstrained draw, from the same uniforms.
    free = uniform_pick(*bank.knn(queries, 4, own), torch.Generator().manual_seed(5))
    assert torch.equal(pick, free)
    assert not (pick == own).any() and bank.used.all()


def test_unique_draw_falls_back_for_queries_left_without_a_row():
    bank = _points_bank([[float(i), 0.0] for i in range(4)])
    queries = torch.zeros(6, 2)
    for seed in range(20):
        bank.reset_usage()
        pick = bank.sample_neighbours(
            queries, 2, generator=torch.Generator().manual_seed(seed), unique=True
        ).tolist()
        assert sorted(pick[:4]) == [0, 1, 2, 3]  # the first four share out the bank
        for b in range(4):
            assert pick[b] in [r for r in range(4) if r not in pick[:b]][:2]
        assert set(pick[4:]) <= {0, 1}  # the rest: the unconstrained 2 nearest
        assert bank.used.all()


@pytest.mark.parametrize("used", [False, True])
def test_unique_draw_takes_one_uniform_per_query(used):
    """The generator advances by B uniforms, stranded queries or not, so that it stays the
    same on every rank of a replicated bank and on any number of ranks."""
    bank = _bank(40, 3, seed=14)
    bank.used.fill_(used)
    queries = torch.randn(5, 3, generator=torch.Generator().manual_seed(15))
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = bank.sample_neighbours(queries, 3, generator=g, unique=True)
    torch.rand(5, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())
    # A pure function of the inputs, the marks and the generator's state.
    bank.used.fill_(used)
    again = bank.sample_neighbours(
        queries, 3, generator=torch.Generator().manual_seed(3), unique=True
    )
    assert torch.equal(first, again)
    assert bank.sample_neighbours(torch.zeros(0, 3), 3, generator=g, unique=True).shape == (0,)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_backend_keywords_keep_the_state_dict_and_count_fallbacks(precision):
    g = torch.Generator().manual_seed(0)
    bank = CodeBank(50, 3, 8, g, backend="torch", precision=precision)
    assert set(bank.state_dict()) == {"codes", "sq_norms", "used"}
    assert bank.fallbacks == 0 and isinstance(bank.fallbacks, int)
    plain = _bank(50, 3, seed=0)
    assert torch.equal(plain.codes, bank.codes)
    queries = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    for a, b in zip(plain.knn(queries, 5), bank.knn(queries, 5), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        CodeBank(5, 2, backend="annoy")


def test_result_is_the_same_whatever_the_chunk_size():
    queries = torch.randn(7, 4, generator=torch.Generator().manual_seed(2))
    own = torch.tensor([0, 5, 9, 33, 64, 98, 99])
    results = [_bank(100, 4, chunk_size=c, seed=4).knn(queries, 9, own) for c in (1, 7, 64, 65536)]
    for dist, idx in results[1:]:
        assert torch.equal(dist, results[0][0]) and torch.equal(idx, results[0][1])


def test_empty_query_batch_and_missing_tail_index():
    bank = _bank(10, 2, seed=3)
    dist, idx = bank.knn(torch.zeros(0, 2), 3)
    assert dist.shape == idx.shape == (0, 3)
    allowed = torch.zeros(10, dtype=torch.bool)
    allowed[[4, 7]] = True
    dist, idx = bank.knn(torch.zeros(1, 2), 4, allowed=allowed)
    assert set(idx[0, :2].tolist()) == {4, 7}
    assert torch.isinf(dist[0, 2:]).all() and (idx[0, 2:] == 0).all()
