"""The greedy tour equals a plain-Python reference and visits every code exactly once."""

from __future__ import annotations

import math

import pytest
import torch

from acn.bank.tour import greedy_tour


def _reference(codes: list[list[float]], start: int) -> list[int]:
    left = set(range(len(codes)))
    order, current = [], start
    while True:
        order.append(current)
        left.discard(current)
        if not left:
            return order
        current = min(left, key=lambda j: (math.dist(codes[current], codes[j]), j))


@pytest.mark.parametrize(("n", "d", "start"), [(1, 3, 0), (2, 1, 1), (50, 2, 0), (200, 16, 37)])
def test_tour_matches_reference(n, d, start):
    codes = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d), dtype=torch.float64)
    order = greedy_tour(codes, start)
    assert order.tolist() == _reference(codes.tolist(), start)
    assert sorted(order.tolist()) == list(range(n)) and int(order[0]) == start


def test_ties_go_to_the_lowest_index_and_duplicates_are_all_visited():
    codes = torch.tensor([[0.0], [1.0], [-1.0], [1.0], [0.0]])
    assert greedy_tour(codes, 0).tolist() == [0, 4, 1, 3, 2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        greedy_tour(torch.empty(0, 3))
    with pytest.raises(ValueError, match="outside"):
        greedy_tour(torch.zeros(3, 2), start=3)
