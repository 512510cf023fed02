"""The segment plan in closed form: the same plans as the search it replaced, for every small
input, and no work that grows with a header's numbers."""

from __future__ import annotations

import time

import numpy as np

from acn.codec.bitsback import Plan, max_segments, plan_growing, plan_segments


def _searched_plan(images: int, segments: int, gap: int) -> Plan:
    """The plan as format 2 computed it (copied): try S segments, one fewer until they fit."""
    s = min(segments, images)
    while True:
        first = -(-(images + gap * s * (s - 1) // 2) // s)  # ceil
        lengths = [first - i * gap for i in range(s)]
        excess = sum(lengths) - images
        for i in range(excess):
            lengths[s - 1 - i % s] -= 1
        if min(lengths) >= 1 or s == 1:
            return Plan(tuple(sorted(lengths, reverse=True)))
        s -= 1


def test_the_closed_form_is_the_search_it_replaced():
    # The format's gap (1) over every N up to 2,100 (past 2,080, the first N that fits 64
    # segments) and S up to 64; other gaps on fewer N. The reference search is the slow part.
    for gap, most in ((1, 2100), (0, 200), (2, 300), (5, 300)):
        for n in range(1, most + 1):
            for s in range(1, 65):
                assert plan_segments(n, s, gap) == _searched_plan(n, s, gap), (n, s, gap)


def test_segment_counts_above_what_fits_are_clamped():
    assert plan_segments(5, 1000, 1).lengths == (3, 2)  # 1 + 2 + 3 > 5
    assert len(plan_segments(3, 7, 0).lengths) == 3
    for n in (1, 2, 3, 6, 7, 10, 2**24, 2**31 - 1):
        s = max_segments(n, 1)
        assert s * (s + 1) // 2 <= n < (s + 1) * (s + 2) // 2


def test_segments_cover_every_image_once():
    for n in (1, 2, 5, 44, 45, 360, 1000):
        for s in (1, 3, 8, 16):
            for gap in (0, 2, 5):
                plan = plan_segments(n, s, gap)
                assert sum(plan.lengths) == n and min(plan.lengths) >= 1
                assert list(plan.lengths) == sorted(plan.lengths, reverse=True)
                covered = np.concatenate([plan.rows(t) for t in range(plan.steps)])
                assert sorted(covered.tolist()) == list(range(n))


def test_huge_counts_plan_at_once():
    start = time.perf_counter()
    plan = plan_segments(2**24, 2**63, 1)  # the most images a file holds, any segment count
    assert len(plan.lengths) == max_segments(2**24, 1) and sum(plan.lengths) == 2**24
    assert time.perf_counter() - start < 1.0


def _fewest_by_search(segments: int) -> int:
    """The fewest images S growing segments fit, from the join rule read literally: at each
    encoder step a quarter as many segments join as images are coded (at least one)."""
    join_steps, coded, step = [0], 0, 0
    while len(join_steps) < segments:
        coded += len(join_steps)
        step += 1
        join_steps += [step] * min(max(1, coded // 4), segments - len(join_steps))
    return sum(1 + step - j for j in join_steps)


def test_growing_segments_join_as_the_stack_allows():
    for n in range(1, 400):
        for s in (1, 2, 3, 5, 8, 13, 40, 64, 100):
            plan = plan_growing(n, s)
            lengths = plan.lengths
            assert sum(lengths) == n and min(lengths) >= 1
            assert list(lengths) == sorted(lengths, reverse=True)
            # one image at the encoder's first step: only the check bits feed its latent
            assert len(lengths) == 1 or lengths[0] > lengths[1]
            # as many segments as fit, and no more
            assert _fewest_by_search(len(lengths)) <= n
            assert len(lengths) == s or _fewest_by_search(len(lengths) + 1) > n
            covered = np.concatenate([plan.rows(t) for t in range(plan.steps)])
            assert sorted(covered.tolist()) == list(range(n))


def test_growing_segments_need_few_steps():
    """Format 3's staircase floors the steps at sqrt(2N); growing joins at N / S + O(log S)."""
    for n, s in ((500, 47), (60_000, 5_600), (2**24, 8191)):
        plan = plan_growing(n, s)
        assert len(plan.lengths) == s
        assert plan.steps <= n / s + 3 * np.log2(s) + 12, (n, s, plan.steps)
    assert plan_segments(60_000, 5_600, 1).steps > 0.99 * np.sqrt(2 * 60_000)  # 346 steps
    start = time.perf_counter()
    plan_growing(2**24, 2**63)
    assert time.perf_counter() - start < 1.0
