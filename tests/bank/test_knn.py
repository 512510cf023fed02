"""Tests for the k-NN back-ends (:mod:`acn.bank.search`) and the exactness proof in
:class:`CodeBank`."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
import torch

import acn.bank.codebank as codebank_module
import acn.bank.exact as exact_module
from acn.bank.bounds import ScoreRounding, gamma, max_row_norm, score_error, score_rounding
from acn.bank.codebank import CodeBank
from acn.bank.exact import canonical_top_k, exhaustive_knn
from acn.bank.search import FAISS_MISSING, FaissSearch, TorchSearch, make_search, smallest
from acn.errors import ConfigError

SEARCHES = [
    pytest.param(("torch", "float32"), id="torch"),
    pytest.param(("torch", "bfloat16"), id="torch-bf16"),
    pytest.param(("torch", "float16"), id="torch-fp16"),
    pytest.param(("faiss", "float32"), id="faiss"),
]


def _bank(n, d, search, chunk=65536, seed=0):
    backend, precision = search
    if backend == "faiss":
        pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(seed)
    return CodeBank(n, d, chunk_size=chunk, generator=g, backend=backend, precision=precision)


def _reference(codes, queries, k, exclude=None, allowed=None):
    """float64 brute force in canonical order (distance, then index), tail (inf, 0)."""
    dist = (queries.double()[:, None, :] - codes.double()[None]).pow(2).sum(-1).sqrt().float()
    if exclude is not None:
        ex = exclude.reshape(queries.shape[0], -1)
        for b, row in enumerate(ex.tolist()):
            for e in row:
                if 0 <= e < codes.shape[0]:
                    dist[b, e] = float("inf")
    if allowed is not None:
        dist[:, ~allowed] = float("inf")
    order = dist.argsort(dim=1, stable=True)[:, :k]  # columns ascend: ties go to the smaller
    dist, idx = dist.gather(1, order), order
    return dist, idx.masked_fill(torch.isinf(dist), 0)


def _assert_exact(bank, queries, k, exclude=None, allowed=None):
    dist, idx = bank.knn(queries, k, exclude=exclude, allowed=allowed)
    ref_d, ref_i = _reference(bank.codes, queries, k, exclude, allowed)
    assert torch.equal(idx, ref_i)
    torch.testing.assert_close(dist, ref_d, rtol=1e-6, atol=0)
    return dist, idx


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize(
    ("n", "d", "k", "chunk"),
    [
        (1, 3, 1, 65536),  # N < keep
        (12, 4, 12, 5),  # k = N, chunks not dividing N
        (200, 8, 1, 64),
        (300, 16, 7, 97),
        (1000, 5, 4, 65536),  # one block, big enough for the grouped pre-selection
        (5000, 3, 6, 4096),
    ],
)
def test_search_matches_brute_force(search, n, d, k, chunk):
    bank = _bank(n, d, search, chunk, seed=n + d)
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(9, d, generator=g)
    _assert_exact(bank, queries, k)
    own = torch.randint(n, (9,), generator=g)
    near = bank.codes[own] + 0.05 * torch.randn(9, d, generator=g)
    _assert_exact(bank, near, min(k, n - 1) or 1, exclude=own if n > 1 else None)
    allowed = torch.rand(n, generator=g) < 0.4
    allowed[0] = True
    _assert_exact(bank, near, k, allowed=allowed)
    _assert_exact(bank, near, k, exclude=own, allowed=allowed)


@pytest.mark.parametrize("search", SEARCHES)
def test_k_equal_to_eligible_count_and_padding(search):
    n, d = 40, 6
    bank = _bank(n, d, search, chunk=7, seed=3)
    g = torch.Generator().manual_seed(4)
    queries = torch.randn(5, d, generator=g)
    exclude = torch.stack([torch.randperm(n, generator=g)[:6] for _ in range(5)])
    exclude[:, -1] = -1  # padding excludes nothing
    # k = N - excluded: every eligible row comes back; then more than that: an inf tail.
    dist, _ = _assert_exact(bank, queries, n - 5, exclude=exclude)
    assert torch.isfinite(dist).all()
    dist, idx = _assert_exact(bank, queries, n, exclude=exclude)
    assert torch.isinf(dist[:, -5:]).all() and (idx[:, -5:] == 0).all()


@pytest.mark.parametrize("search", SEARCHES)
def test_ties_go_to_the_smaller_index(search):
    n, d = 300, 4
    bank = _bank(n, d, search, chunk=64, seed=5)
    v = torch.randn(d, generator=torch.Generator().manual_seed(6))
    dup = torch.randperm(n, generator=torch.Generator().manual_seed(7))[:40]
    bank.update(dup, v.expand(40, d).clone())
    query = (v + 1e-3)[None].expand(3, d)
    exclude = torch.stack([dup.min(), dup.max(), torch.tensor(-1)])[:, None]
    dist, idx = _assert_exact(bank, query, 10, exclude=exclude)
    for b in range(3):
        expected = sorted(set(dup.tolist()) - {exclude[b, 0].item()})[:10]
        assert idx[b].tolist() == expected
        assert (dist[b] == dist[b, 0]).all()
    # Points on a sphere around the query: equal distances by symmetry.
    sphere = torch.cat([torch.eye(d), -torch.eye(d)]) * 0.05
    rows = torch.tensor([250, 3, 77, 12, 199, 40, 5, 120])
    bank.update(rows, sphere)
    _, idx = _assert_exact(bank, torch.zeros(1, d), 8)
    assert idx[0].tolist() == sorted(rows.tolist())


def test_all_searches_agree_exactly_on_random_banks():
    searches = [("torch", "float32"), ("torch", "bfloat16"), ("torch", "float16")]
    try:
        import faiss  # noqa: F401
    except ImportError:
        pass
    else:
        searches.append(("faiss", "float32"))
    for seed, (n, d) in enumerate([(3000, 16), (2000, 32), (800, 2)]):
        g = torch.Generator().manual_seed(seed)
        own = torch.randint(n, (32,), generator=g)
        results = []
        for search in searches:
            bank = _bank(n, d, search, chunk=1000, seed=seed)
            queries = bank.codes[own] + 0.1 * torch.randn(32, d, generator=g.manual_seed(seed))
            results.append(bank.knn(queries, 5, exclude=own))
        for dist, idx in results[1:]:
            assert torch.equal(idx, results[0][1]) and torch.equal(dist, results[0][0])


def _offset_bank(n, d, search, offset, spread_step, seed=0):
    """Rows at a large common offset whose distances to the offset differ by tiny amounts."""
    bank = _bank(n, d, search, chunk=64, seed=seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    radius = 1 + spread_step * torch.arange(n, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 1)
    direction = torch.randn(n, d, dtype=torch.float64, generator=g)
    direction = torch.nn.functional.normalize(direction, dim=1)
    bank.update(torch.arange(n), (offset + radius[perm, None] * direction).float())
    return bank


def test_bf16_scores_alone_rank_wrongly_and_the_proof_repairs_it():
    n, d, k = 500, 8, 5
    bank = _offset_bank(n, d, ("torch", "bfloat16"), offset=40.0, spread_step=1e-4)
    query = torch.full((4, d), 40.0)
    ref_d, ref_i = _reference(bank.codes, query, k)
    # The bfloat16 scores' own top k misses true neighbours ...
    cand, bound = TorchSearch(64, "bfloat16").candidates(
        bank.codes, bank.sq_norms, query, k, None, None
    )
    assert any(set(cand[b].tolist()) != set(ref_i[b].tolist()) for b in range(4))
    # ... and says so: its bound is below the true k-th squared distance.
    assert (bound < ref_d[:, -1].double() ** 2).all()
    bank.fallbacks = 0
    _assert_exact(bank, query, k)
    assert bank.fallbacks == 4


@pytest.mark.parametrize("search", SEARCHES)
def test_large_offset_falls_back_and_stays_exact(search):
    # float32's expanded form cancels catastrophically at ||c|| ~ 3000 with spreads of 1e-3.
    n, d, k = 200, 3, 4
    bank = _offset_bank(n, d, search, offset=3000.0, spread_step=2e-3)
    query = torch.full((3, d), 3000.0)
    bank.fallbacks = 0
    _assert_exact(bank, query, k)
    assert bank.fallbacks == 3


@pytest.mark.parametrize(("limit", "exhaustive"), [(2048, []), (16, [1])])
def test_ties_beyond_the_candidates_grow_them_then_go_exhaustive(monkeypatch, limit, exhaustive):
    """50 equal rows, more than the k + margin candidates: float64 with more candidates settles
    it; with the growth capped below the tie count, the exhaustive search does."""
    monkeypatch.setattr(codebank_module, "KEEP_LIMIT", limit)
    calls = []

    def spy(*args):
        calls.append(args[1].shape[0])
        return exhaustive_knn(*args)

    monkeypatch.setattr(codebank_module, "exhaustive_knn", spy)
    n, d = 200, 3
    bank = _bank(n, d, ("torch", "float32"), chunk=32, seed=8)
    v = torch.randn(d, generator=torch.Generator().manual_seed(9))
    dup = torch.arange(150, 200)
    bank.update(dup, v.expand(50, d).clone())
    far = torch.arange(0, 150)
    bank.update(far, v + 10 + torch.rand(150, d, generator=torch.Generator().manual_seed(1)))
    query = (v + 0.5)[None]
    _, idx = _assert_exact(bank, query, 20, exclude=torch.tensor([[160]]))
    assert calls == exhaustive and bank.fallbacks == 1
    assert idx[0].tolist() == [i for i in range(150, 200) if i != 160][:20]


class _Liar:
    """A back-end that proposes arbitrary rows with no useful bound."""

    margin = 3

    def candidates(self, codes, sq_norms, queries, keep, exclude, allowed):
        B = queries.shape[0]
        idx = torch.randint(codes.shape[0], (B, keep), generator=torch.Generator().manual_seed(0))
        return idx, torch.full((B,), -float("inf"), dtype=torch.float64)


def test_a_useless_back_end_still_gives_exact_answers():
    bank = _bank(400, 5, ("torch", "float32"), chunk=50, seed=2)
    bank.search = _Liar()
    g = torch.Generator().manual_seed(3)
    queries = torch.randn(6, 5, generator=g)
    own = torch.randint(400, (6,), generator=g)
    allowed = torch.rand(400, generator=g) < 0.5
    _assert_exact(bank, queries, 7, exclude=own, allowed=allowed)
    assert bank.fallbacks == 6


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_bound_is_below_every_left_out_row(search, offset):
    """The interface's promise, checked row by row against float64 distances."""
    n, d, keep = 2000, 24, 9
    g = torch.Generator().manual_seed(11)
    codes = offset + torch.randn(n, d, generator=g)
    sq_norms = codes.pow(2).sum(dim=1)
    queries = codes[:16] + 0.3 * torch.randn(16, d, generator=g)
    exclude = torch.arange(16)[:, None]
    allowed = torch.rand(n, generator=g) < 0.7
    backend, precision = search
    if backend == "faiss":
        pytest.importorskip("faiss")
    engine = TorchSearch(300, precision) if backend == "torch" else FaissSearch()
    for mask in (None, allowed):
        cand, bound = engine.candidates(codes, sq_norms, queries, keep, exclude, mask)
        true = (queries.double()[:, None] - codes.double()[None]).pow(2).sum(-1)
        for b in range(16):
            left = torch.ones(n, dtype=torch.bool)
            left[cand[b][cand[b] >= 0]] = False
            left[b] = False
            if mask is not None:
                left &= mask
                assert mask[cand[b][cand[b] >= 0]].all()
            assert b not in cand[b].tolist()
            assert (true[b][left] >= bound[b]).all()


def test_score_error_bounds_observed_rounding():
    """The float32 and bfloat16 kernels' real errors stay inside the derived bound."""
    g = torch.Generator().manual_seed(12)
    for offset in (0.0, 50.0):
        codes = offset + torch.randn(4000, 64, generator=g)
        queries = offset + torch.randn(32, 64, generator=g)
        q_norm = queries.double().norm(dim=1)
        exact = codes.double().pow(2).sum(1) - 2 * queries.double() @ codes.double().T
        max_norm = codes.double().norm(dim=1).max().item()
        fp32 = torch.addmm(codes.pow(2).sum(1), queries, codes.T, alpha=-2).double()
        eps = score_error(q_norm, max_norm, 64, score_rounding("float32", "cpu"))
        assert ((fp32 - exact).abs().amax(dim=1) <= eps).all()
        low = codes.pow(2).sum(1) - 2 * (queries.bfloat16() @ codes.bfloat16().T).float()
        eps_low = score_error(q_norm, max_norm, 64, score_rounding("bfloat16", "cpu"))
        err = (low.double() - exact).abs().amax(dim=1)
        assert (err <= eps_low).all()
        assert (eps_low < 200 * err).all()  # conservative, not vacuous


def test_gamma_and_rounding_edge_cases():
    assert gamma(10, 2.0**-24) == pytest.approx(10 * 2.0**-24, rel=1e-6)
    assert gamma(300, 2.0**-8) == float("inf")
    r = ScoreRounding(inputs=0.0, accumulate=0.1, output=0.0, norms=0.0, add=0.0)
    assert torch.isinf(score_error(torch.ones(2, dtype=torch.float64), 1.0, 20, r)).all()
    # TF32 matmuls round their inputs: the float32 bound must widen.
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert score_rounding("float32", "cuda").inputs == 2.0**-11
    finally:
        torch.set_float32_matmul_precision(before)
    assert score_rounding("float32", "cpu").inputs == 0.0


@pytest.mark.parametrize("scale", [1e-6, 1e4])
def test_float16_scales_out_of_overflow_and_underflow(scale):
    n, d = 500, 16
    bank = _bank(n, d, ("torch", "float16"), chunk=128, seed=13)
    bank.update(torch.arange(n), bank.codes * scale)
    own = torch.arange(0, n, 50)
    queries = bank.codes[own] * (1 + 1e-3)
    bank.fallbacks = 0
    _assert_exact(bank, queries, 5, exclude=own)
    assert bank.fallbacks == 0  # the bound is useful at both scales


TINY32 = torch.finfo(torch.float32).smallest_normal


def _flushed(x):
    """Flush-to-zero: what falls below float32's smallest normal number becomes 0."""
    return x.masked_fill(x.abs() < TINY32, 0)


def _flushing_matmul(a, b):
    """a @ b as bfloat16 dot-product hardware that flushes subnormals may compute it: inputs
    read as zero below the smallest normal, every product, partial sum and the bfloat16 output
    flushed (float32 products and sums otherwise)."""
    a, b = _flushed(a.float()), _flushed(b.float())
    products = _flushed(a[:, :, None] * b[None])  # (n, D, B)
    acc = torch.zeros(a.shape[0], b.shape[1])
    for i in range(a.shape[1]):
        acc = _flushed(acc + products[:, i])
    return _flushed(acc.bfloat16().float()).bfloat16()


def _flushed_sq_norms(c):
    """||c||^2 per row in float32 with every square and partial sum flushed."""
    squares, acc = _flushed(c.pow(2)), torch.zeros(c.shape[0])
    for i in range(c.shape[1]):
        acc = _flushed(acc + squares[:, i])
    return acc


@pytest.mark.parametrize("precision", ["bfloat16", "float32", "float16"])
def test_codes_near_underflow_stay_exact(precision):
    """500 codes at scale 1e-20 (squared distances ~1e-39, below float32's smallest normal):
    the review's case, where flushed bfloat16 products had certified 9 of 10 wrong answers."""
    n, d, k = 500, 16, 3
    bank = _bank(n, d, ("torch", precision), seed=13)
    bank.update(torch.arange(n), bank.codes * 1e-20)
    own = torch.arange(0, n, 50)
    _assert_exact(bank, bank.codes[own].clone(), k, exclude=own)


def test_float32_scores_in_gradual_underflow_stay_exact():
    """Codes at 3e-23: the float32 scores (~1e-44) are subnormal even without flushing, and a
    bound with no underflow term certified a wrong neighbour for one of these queries."""
    n, d, k = 500, 16, 3
    bank = _bank(n, d, ("torch", "float32"), seed=0)
    bank.update(torch.arange(n), bank.codes * 3e-23)
    queries = torch.randn(10, d, generator=torch.Generator().manual_seed(99)) * 3e-23
    _assert_exact(bank, queries, k, exclude=torch.arange(0, n, 50))


def test_flushed_bf16_products_still_give_exact_neighbours(monkeypatch):
    """The review's case on a CPU whose bfloat16 products flush to zero (emulated: this one
    may underflow gradually). A bound that trusted gradual underflow certified all 10 wrong."""
    plain, calls = torch.Tensor.__matmul__, []

    def matmul(a, b):
        if a.dtype == b.dtype == torch.bfloat16:
            calls.append(a.shape)
            return _flushing_matmul(a, b)
        return plain(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    n, d, k = 500, 16, 3
    bank = _bank(n, d, ("torch", "bfloat16"), seed=13)
    bank.update(torch.arange(n), bank.codes * 1e-20)
    own = torch.arange(0, n, 50)
    queries = bank.codes[own].clone()
    bank.fallbacks = 0
    _assert_exact(bank, queries, k, exclude=own)
    assert calls  # the bfloat16 search ran on flushed products
    assert bank.fallbacks == len(own)  # near underflow no proof survives: float64 answers


@pytest.mark.parametrize("scale", [1e-16, 1e-19, 1e-20, 1e-22])
def test_score_error_covers_flushed_underflow(scale):
    """Scores whose products, partial sums and norms flush to zero stay within the bound, and
    near float32's smallest normal they need its underflow term."""
    g = torch.Generator().manual_seed(17)
    codes = torch.randn(300, 16, generator=g) * scale
    queries = torch.randn(8, 16, generator=g) * scale
    sq_norms = _flushed_sq_norms(codes)
    score = _flushed(
        sq_norms[:, None]
        - _flushed(2 * _flushing_matmul(codes.bfloat16(), queries.bfloat16().T).float())
    )
    exact = codes.double().pow(2).sum(1)[:, None] - 2 * codes.double() @ queries.double().T
    err = (score.double() - exact).abs().amax(dim=0)  # (B,)
    q_norm, max_norm = queries.double().norm(dim=1), max_row_norm(sq_norms, 16)
    rounding = score_rounding("bfloat16", "cpu")
    assert (err <= score_error(q_norm, max_norm, 16, rounding)).all()
    # Without the underflow terms (and with the true largest norm) the bound fails from 1e-19.
    true_max = codes.double().norm(dim=1).max().item()
    relative = score_error(q_norm, true_max, 16, replace(rounding, tiny=0.0, tiny_add=0.0))
    assert bool((err > relative).any()) == (scale <= 1e-19)


def test_shard_merge_reproduces_the_whole_bank():
    n, d, k, cut = 700, 8, 6, 333
    whole = _bank(n, d, ("torch", "float32"), chunk=100, seed=14)
    v = whole.codes[5].clone()
    whole.update(torch.tensor([10, 400, 650, 20]), v.expand(4, d).clone())  # ties across shards
    g = torch.Generator().manual_seed(15)
    queries = torch.cat([v[None] + 1e-3, torch.randn(7, d, generator=g)])
    own = torch.tensor([5, 1, 2, 3, 500, 600, 690, 332])
    dist, idx = whole.knn(queries, k, exclude=own)
    parts = []
    for lo, hi in ((0, cut), (cut, n)):
        shard = CodeBank(hi - lo, d)
        shard.update(torch.arange(hi - lo), whole.codes[lo:hi])
        d_s, i_s = shard.knn(queries, k, exclude=own - lo)
        parts.append((d_s, i_s + lo))
    merged = canonical_top_k(
        torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1), k
    )
    assert torch.equal(merged[1], idx) and torch.equal(merged[0], dist)


def test_smallest_finds_the_m_smallest():
    g = torch.Generator().manual_seed(16)
    for n, m in ((10_000, 7), (1000, 13), (1037, 5), (50, 9)):
        scores = torch.randn(6, n, generator=g)
        scores[:, ::7] = float("inf")
        scores[0, :20] = -5.0  # ties
        values, cols = smallest(scores.T.contiguous(), m)  # takes (rows, queries)
        assert torch.equal(values.sort(dim=1).values, scores.topk(m, largest=False).values)
        assert torch.equal(scores.gather(1, cols), values)
        assert all(len(set(row)) == m for row in cols.tolist())


def test_make_search_errors():
    with pytest.raises(ValueError, match="codebank.backend=.annoy. is not valid; choose one of"):
        make_search("annoy")
    with pytest.raises(ValueError, match="precision"):
        make_search("torch", 100, "int8")
    with pytest.raises(ValueError, match="chunk_size"):
        make_search("torch", 0)


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError) as info:
        make_search("faiss")
    assert str(info.value) == FAISS_MISSING
    assert "pip install 'acn[faiss]'" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ConfigError)  # the CLI prints it as one line
    with pytest.raises(ImportError, match="acn\\[faiss\\]"):
        CodeBank(10, 2, backend="faiss")


def test_faiss_refuses_a_bank_off_the_cpu():
    pytest.importorskip("faiss")
    codes = torch.zeros(10, 2, device="meta")
    with pytest.raises(ValueError, match="CPU"):
        FaissSearch().candidates(codes, codes[:, 0], codes[:2], 3, None, None)


def test_a_mask_the_search_ignored_costs_a_weaker_bound_not_a_wrong_answer():
    from acn.bank.search import finish_candidates

    g = torch.Generator().manual_seed(17)
    n, keep = 100, 4
    true = torch.rand(3, n, generator=g, dtype=torch.float64) * 10
    scores, idx = true.float().topk(12, dim=1, largest=False)  # a list that ignored the mask
    allowed = torch.ones(n, dtype=torch.bool)
    allowed[idx[:, :10].flatten()] = False  # all but two listed rows are ruled out afterwards
    zeros = torch.zeros(3, dtype=torch.float64)
    cand, bound = finish_candidates(scores, idx, None, allowed, keep, zeros, zeros, whole=False)
    assert ((cand == -1) | allowed[cand.clamp(min=0)]).all()
    assert (cand[:, 2:] == -1).all()  # two eligible listed rows, then nothing
    assert torch.isfinite(bound).all()  # rows off the list may still be eligible
    for b in range(3):
        left = allowed.clone()
        left[cand[b][cand[b] >= 0]] = False
        assert (true[b][left] >= bound[b] - 1e-6).all()


def test_exact_distances_depend_on_the_pair_alone(monkeypatch):
    from acn.bank.exact import exact_distances

    g = torch.Generator().manual_seed(18)
    for d in (1, 3, 16, 37):
        codes = torch.randn(500, d, generator=g) * 10
        queries = torch.randn(6, d, generator=g) * 10
        cand = torch.randint(500, (6, 40), generator=g)
        picked = exact_distances(queries, codes, cand)
        every = exact_distances(queries, codes)
        assert torch.equal(picked, every.gather(1, cand))
        alone = exact_distances(queries[2:3], codes[cand[2]])
        assert torch.equal(alone[0], picked[2])
        direct = (queries.double()[:, None] - codes.double()[None]).pow(2).sum(-1).sqrt()
        torch.testing.assert_close(every, direct, rtol=1e-14, atol=0)
        with monkeypatch.context() as m:  # memory blocks of a few rows: the same bits
            m.setattr(exact_module, "EXACT_BLOCK", 50)
            assert torch.equal(exact_distances(queries, codes), every)
            assert torch.equal(exact_distances(queries, codes, cand), picked)


def test_knn_records_time_every_back_end_and_skip_faiss_when_missing(monkeypatch):
    from acn.experiments.bench_knn import knn_records

    names = ("torch", "torch-bf16", "faiss", "faiss-IndexFlatL2", "faiss-IndexFlatL2-blas")
    monkeypatch.setitem(sys.modules, "faiss", None)
    records = knn_records(shapes=[(300, 4)], backends=names, queries=8, k=3, repeats=2)
    assert [r["backend"] for r in records] == ["torch", "torch-bf16"]
    for r in records:
        assert (r["N"], r["D"], r["B"], r["k"]) == (300, 4, 8, 3)
        assert r["ms"] > 0 and r["fallbacks"] == 0
    with pytest.raises(ValueError, match="annoy"):
        knn_records(shapes=[(300, 4)], backends=("annoy",))
    monkeypatch.undo()
    pytest.importorskip("faiss")
    records = knn_records(shapes=[(300, 4)], backends=names, queries=8, k=3, repeats=2)
    assert [r["backend"] for r in records] == list(names)
    assert records[-1]["fallbacks"] is None


def test_cuda_narrow_products_keep_float32_sums_during_the_search():
    from acn.bank.search import float32_sums

    flags = torch.backends.cuda.matmul
    before = flags.allow_bf16_reduced_precision_reduction
    u32, u_bf16 = 2.0**-24, 2.0**-8
    try:
        flags.allow_bf16_reduced_precision_reduction = True
        assert score_rounding("bfloat16", "cuda").accumulate == u_bf16  # the bound knows
        with float32_sums("cuda", "bfloat16"):
            assert not flags.allow_bf16_reduced_precision_reduction
            assert score_rounding("bfloat16", "cuda").accumulate == u32
        assert flags.allow_bf16_reduced_precision_reduction  # restored
        with float32_sums("cpu", "bfloat16"):
            assert flags.allow_bf16_reduced_precision_reduction  # not touched off CUDA
    finally:
        flags.allow_bf16_reduced_precision_reduction = before
    assert score_rounding("bfloat16", "cpu").accumulate == u32
    assert score_rounding("float16", "mps").accumulate == 2.0**-11  # unknown: narrow sums
