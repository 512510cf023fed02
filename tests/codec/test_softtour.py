"""The soft tour of format 5: near candidates found exactly, choices the soft minimum of the
KLs, an escape to every other image, the bits of every choice given back, and whole sets
back on both coding paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_codec import _images, _model, _sorted

from acn.codec import container, decompress, encode, softtour
from acn.codec.ans import Stack
from acn.codec.intmath import LN_BITS, ln_units
from acn.errors import CodecError


def test_ln_units_are_the_natural_log_in_integers():
    rng = np.random.default_rng(0)
    n = np.concatenate([np.arange(1, 5000), rng.integers(1, 1 << 43, 20000), [(1 << 43) - 1]])
    err = ln_units(n) / 2**LN_BITS - np.log(n.astype(np.float64))
    assert np.abs(err).max() < 4e-6
    assert ln_units(np.array([1]))[0] == 0
    with pytest.raises(ValueError):
        ln_units(np.array([0]))


def _pool(codes, keys, copies=None, dk=6):
    pool = softtour.NearPool(codes.shape[1], dk, len(codes) * 3)
    for i, (code, key) in enumerate(zip(codes, keys, strict=True)):
        for _ in range(1 if copies is None else copies[i]):
            pool.add(key, code.astype(np.float64), np.zeros(dk, dtype=np.int32))
    return pool


def _nearest(codes, keys, alive, query, k):
    """The reference: sort every remaining key by (exact squared distance, key)."""
    ranked = sorted(
        (int(((codes[i] - query) ** 2).sum()), keys[i]) for i in range(len(keys)) if alive[i]
    )
    return [key for _, key in ranked[:k]]


def test_candidates_are_the_nearest_remaining_keys_ties_by_bytes():
    rng = np.random.default_rng(1)
    n, k = 300, softtour.CANDIDATES
    codes = rng.integers(-3, 4, size=(n, 3)) * 4096  # a coarse grid: many equal distances
    codes[10:20] = codes[5]  # distinct images with one code
    keys = [bytes(rng.integers(0, 256, 8, dtype=np.uint8)) for _ in range(n)]
    pool = _pool(codes, keys)
    alive = np.ones(n, bool)
    for step in range(n - 1):  # removals, with compactions on the way
        query = rng.integers(-3, 4, size=3) * 4096
        rows = pool.candidates(query.astype(np.float64))
        got = [pool.keys[r] for r in rows]
        assert got == _nearest(codes, keys, alive, query, k), step
        gone = int(rng.choice(np.flatnonzero(alive)))
        pool.remove(keys[gone])
        alive[gone] = False
        assert len(pool) == alive.sum() and pool.used <= 2 * len(pool) + 1


def test_choice_counts_are_the_soft_min_of_the_kls_with_an_escape():
    rng = np.random.default_rng(0)
    D, K = 3, 6

    def table(n):
        t = rng.random((n, D, K)) ** 3 + 0.01  # no empty bin
        return t / t.sum(axis=2, keepdims=True)

    q, priors = table(1)[0], table(40)
    q_counts = np.rint(q * 2**24).astype(np.int64).reshape(-1)
    ln_q = ln_units(q_counts) - 24 * ln_units(np.array([2]))[0]
    chooser = softtour.Scores(
        np.zeros((1, 2)), q_counts[None].astype(np.int32), np.array([q_counts @ ln_q]), None
    )
    pool = softtour.NearPool(2, D * K, 40)
    p_counts = np.rint(priors * 2**24).astype(np.int64).reshape(40, -1)
    ln_p = ln_units(p_counts) - 24 * ln_units(np.array([2]))[0]
    for i in range(40):
        code = np.array([i, 0.0])  # candidates by distance: 0, 1, 2, ...
        for _ in range(1 + (i == 2)):  # key 2 twice: one candidate, two copies
            pool.add(bytes([i]), code, ln_p[i].astype(np.int32))
    rows = pool.candidates(np.zeros(2))
    assert [pool.keys[r] for r in rows] == [bytes([i]) for i in range(softtour.CANDIDATES)]
    counts = pool.counts(chooser, 0, rows)
    assert counts.sum() == 1 << 16 and counts[-1] == softtour.ESCAPE
    near = priors[: softtour.CANDIDATES]
    kl = (q * (np.log(q) - np.log(near))).sum(axis=(1, 2))
    weights = np.exp(-(kl - kl.min())) * np.where(np.arange(len(near)) == 2, 2, 1)
    want = weights / weights.sum() * ((1 << 16) - softtour.ESCAPE)
    np.testing.assert_allclose(counts[:-1], want, rtol=2e-3, atol=1.5)
    # nothing left outside the candidates: no escape
    small = softtour.NearPool(2, D * K, 3)
    for i in range(3):
        small.add(bytes([i]), np.array([i, 0.0]), ln_p[i].astype(np.int32))
    counts = small.counts(chooser, 0, small.candidates(np.zeros(2)))
    assert counts[-1] == 0 and counts.sum() == 1 << 16


def test_the_escape_names_every_other_key_once():
    rng = np.random.default_rng(2)
    keys = sorted({bytes(rng.integers(0, 256, 4, dtype=np.uint8)) for _ in range(60)})
    pool = _pool(rng.integers(-9, 9, size=(len(keys), 2)), keys)
    rows = pool.candidates(np.zeros(2))
    others = [pool.other(i, rows) for i in range(len(keys) - len(rows))]
    taken = {pool.keys[r] for r in rows}
    assert others == [key for key in keys if key not in taken]  # byte order, none twice
    assert [pool.index_of_other(key, rows) for key in others] == list(range(len(others)))


def _scores(n, dim, width, rng):
    q = rng.integers(0, 1 << 20, size=(n, width)).astype(np.int32)
    ln_p = -rng.integers(0, 40 << LN_BITS, size=(n, width)).astype(np.int32)
    q_ln_q = -rng.integers(0, 1 << 40, size=n)
    return softtour.Scores(rng.integers(-6, 7, size=(n, dim)) * 512.0, q, q_ln_q, ln_p)


@pytest.mark.parametrize("escape", [softtour.ESCAPE, 40000])
def test_every_choice_gives_its_bits_back(monkeypatch, escape):
    """The encoder's pops, undone by the decoder's pushes in reverse with the pool as it was:
    the same keys chosen, and the stack back to its bytes, uniform choices and escapes
    included."""
    monkeypatch.setattr(softtour, "ESCAPE", escape)
    rng = np.random.default_rng(3)
    n, dim, width = 90, 3, 8
    scores = _scores(n, dim, width, rng)
    keys = [bytes([i % 70]) for i in range(n)]  # copies among them
    stack = Stack()
    stack.push_uniform(rng.integers(0, 1 << 16, 40), np.full(40, 1 << 16))
    before = stack.to_bytes()
    pool = softtour.NearPool(dim, width, n)
    for i in range(n):
        pool.add(keys[i], scores.codes[i], scores.ln_p[i])
    escapes = 0
    real_other = softtour.NearPool.other

    def other(self, index, rows):
        nonlocal escapes
        escapes += 1
        return real_other(self, index, rows)

    monkeypatch.setattr(softtour.NearPool, "other", other)
    offsets = softtour.offsets(7, 1, n)
    made = []  # (key, chooser): the encoder's choices in order
    for t in range(n - 1):
        chooser = int(rng.integers(n)) if t % 5 else None  # every fifth: a uniform choice
        by = scores if chooser is not None else None
        made.append((softtour.pop_choice(stack, pool, by, chooser or 0, offsets[t]), chooser))
    if escape > softtour.ESCAPE:
        assert escapes > 10  # the escape was taken, and undone below
    last = pool.sorted[0]
    back = softtour.NearPool(dim, width, n)  # the decoder's pool: it grows
    rows_of = {}
    for i in range(n):
        rows_of.setdefault(keys[i], []).append(i)
    back.add(last, *(a[rows_of[last][0]] for a in (scores.codes, scores.ln_p)))
    for t in reversed(range(n - 1)):
        key, chooser = made[t]
        row = rows_of[key][0]
        back.add(key, scores.codes[row], scores.ln_p[row])
        by = scores if chooser is not None else None
        softtour.push_choice(stack, back, key, by, chooser or 0, offsets[t])
    assert stack.to_bytes() == before
    assert sorted([k for k, _ in made] + [last]) == sorted(keys)


def test_a_choice_the_encoder_could_not_make_is_refused():
    rng = np.random.default_rng(4)
    scores = _scores(50, 2, 4, rng)
    pool = softtour.NearPool(2, 4, 50)
    for i in range(50):
        pool.add(bytes([i]), scores.codes[i], scores.ln_p[i])
    stack = Stack()
    with pytest.raises(CodecError, match="no remaining image"):
        softtour.push_choice(stack, pool, b"missing", scores, 0, np.array([0, 0]))


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("n, segments", [(1, 1), (2, 1), (7, 3), (23, 1), (23, 3), (60, 4)])
def test_the_soft_tour_gives_the_set_back(exact, n, segments):
    model, x = _model("acn"), _images(n, seed=n)  # duplicates, all black, all white
    made = encode(model, x, segments=segments, seeds=2, soft_tour=True, exact=exact)
    header = container.parse(made.data).header
    assert header.version == container.SOFT_VERSION and header.soft_tour
    assert header.exact == exact
    back = decompress(model, made.data)
    np.testing.assert_array_equal(back, x[made.order])
    assert sorted(made.order.tolist()) == list(range(n))


@pytest.mark.parametrize("exact", [False, True])
def test_the_escape_and_far_choices_round_trip(monkeypatch, exact):
    """Two candidates and a wide escape: most choices leave the near set; still the set back."""
    monkeypatch.setattr(softtour, "CANDIDATES", 2)
    monkeypatch.setattr(softtour, "ESCAPE", 30000)
    model, x = _model("acn"), _images(40, seed=9)
    x[5:9] = x[4]  # copies
    made = encode(model, x, segments=2, soft_tour=True, exact=exact)
    assert _sorted(decompress(model, made.data)) == _sorted(x)


def test_the_soft_tour_goes_below_the_greedy_tour_on_a_set_of_near_copies():
    """A set with many near neighbours per image: the order's freedom is worth bits, and the
    soft tour's file takes some of them (at most log N!/N per image)."""
    model = _model("acn")
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2, size=(6, 1, 5, 4))
    x = np.repeat(base, 20, axis=0)
    flips = rng.random(x.shape) < 0.05
    x = np.where(flips, 1 - x, x)
    greedy = encode(model, x, exact=True, seeds=2, verify=False)
    soft = encode(model, x, exact=True, seeds=2, soft_tour=True)
    saved = 8 * (len(greedy.data) - len(soft.data)) / len(x)
    assert 0 < saved < math.lgamma(len(x) + 1) / math.log(2) / len(x)


def test_old_soft_tour_files_and_soft_less_format_5_files_are_refused():
    model, x = _model("acn"), _images(12)
    data = encode(model, x, soft_tour=True, segments=2).data
    as_format_4 = bytes([data[0], data[1] & 0x3F]) + data[2:]  # version bits 1 -> 0
    with pytest.raises(CodecError, match="whole-set soft tour"):
        container.parse(as_format_4)
    plain = encode(model, x, segments=2, first_seed=1).data  # has an extension byte
    header = container.parse(plain).header
    assert header.version == container.FORMAT_VERSION and not header.soft_tour
    as_format_5 = bytes([plain[0], plain[1] | 0x40]) + plain[2:]
    with pytest.raises(CodecError, match="format 5 file without its soft tour"):
        container.parse(as_format_5)
