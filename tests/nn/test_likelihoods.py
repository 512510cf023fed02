"""Tests for :mod:`acn.nn.likelihoods`: pixel log-probabilities, normalisation and sampling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from acn.nn.build import make_likelihood
from acn.nn.likelihoods import Bernoulli, Categorical, to_network_input


def test_bernoulli_log_prob_matches_manual():
    g = torch.Generator().manual_seed(0)
    B, C, H, W = 3, 2, 4, 5
    params = 3 * torch.randn(B, C, H, W, generator=g)
    x = torch.randint(0, 2, (B, C, H, W), generator=g)
    lik = Bernoulli()
    got = lik.log_prob(params, x)
    assert got.shape == (B,)
    p = torch.sigmoid(params.double())
    manual = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(got.double(), manual, rtol=1e-5, atol=1e-4)
    # A pure-Python check on one image.
    expected = 0.0
    for c, i, j in itertools.product(range(C), range(H), range(W)):
        logit = params[1, c, i, j].item()
        prob = 1 / (1 + math.exp(-logit))
        expected += math.log(prob if x[1, c, i, j] == 1 else 1 - prob)
    assert got[1].item() == pytest.approx(expected, rel=1e-5)
    assert torch.all(got <= 0)


def test_bernoulli_log_prob_stable_for_large_logits():
    lik = Bernoulli()
    params = torch.tensor([[[[100.0, -100.0]]]])
    right = lik.log_prob(params, torch.tensor([[[[1, 0]]]]))
    wrong = lik.log_prob(params, torch.tensor([[[[0, 1]]]]))
    assert torch.isfinite(right).all() and torch.isfinite(wrong).all()
    assert right.item() == pytest.approx(0.0, abs=1e-6)
    assert wrong.item() == pytest.approx(-200.0, rel=1e-4)


def test_bernoulli_probabilities_sum_to_one():
    lik = Bernoulli()
    params = torch.tensor([[[[0.7]]]])
    lp = torch.stack([lik.log_prob(params, torch.tensor([[[[v]]]])) for v in (0, 1)])
    assert torch.logsumexp(lp, dim=0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("levels", [2, 5, 17])
def test_categorical_probabilities_over_levels_sum_to_one(levels):
    g = torch.Generator().manual_seed(levels)
    lik = Categorical(levels)
    assert lik.num_params(1) == levels and lik.num_params(3) == 3 * levels
    params = 4 * torch.randn(2, levels, 1, 1, generator=g)  # single-pixel, single-channel images
    values = torch.arange(levels).view(levels, 1, 1, 1, 1)
    lp = torch.stack([lik.log_prob(params, v.expand(2, 1, 1, 1)) for v in values])  # (L, B)
    torch.testing.assert_close(torch.logsumexp(lp, dim=0), torch.zeros(2), atol=1e-5, rtol=0)
    # And each value's probability is the softmax of the logits.
    torch.testing.assert_close(lp.T.exp(), torch.softmax(params[:, :, 0, 0], dim=1))


def test_categorical_channel_layout_and_sum_over_pixels():
    """Params are (B, C * L, H, W) with channel c owning rows c*L .. (c+1)*L - 1."""
    levels, C, H, W = 3, 2, 2, 3
    g = torch.Generator().manual_seed(1)
    params = torch.randn(2, C * levels, H, W, generator=g)
    x = torch.randint(0, levels, (2, C, H, W), generator=g)
    got = Categorical(levels).log_prob(params, x)
    expected = torch.zeros(2)
    for b, c, i, j in itertools.product(range(2), range(C), range(H), range(W)):
        logits = params[b, c * levels : (c + 1) * levels, i, j]
        expected[b] += torch.log_softmax(logits, 0)[x[b, c, i, j]]
    torch.testing.assert_close(got, expected)
    # Two-pixel joint normalisation: summing over every image of a 1x1x2 grid gives 1.
    lik = Categorical(levels)
    params = torch.randn(1, levels, 1, 2, generator=g)
    lp = torch.stack(
        [
            lik.log_prob(params, torch.tensor([[[[a, b]]]]))[0]
            for a, b in itertools.product(range(levels), repeat=2)
        ]
    )
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-5)


def test_bernoulli_sample_shape_range_and_frequency():
    lik = Bernoulli()
    n = 4000
    params = torch.tensor([-2.0, 0.0, 1.5]).view(1, 1, 1, 3).expand(n, 1, 1, 3)
    s = lik.sample(params, generator=torch.Generator().manual_seed(0))
    assert s.shape == (n, 1, 1, 3)
    assert s.dtype == torch.long
    assert set(s.unique().tolist()) <= {0, 1}
    p = torch.sigmoid(torch.tensor([-2.0, 0.0, 1.5]))
    freq = s.float().mean(0).flatten()
    assert torch.all((freq - p).abs() < 4 * (p * (1 - p) / n).sqrt())
    again = lik.sample(params, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)


def test_categorical_sample_shape_range_and_frequency():
    levels, n = 4, 5000
    lik = Categorical(levels)
    # Two channels with different distributions, on a 2x3 image.
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    params = logits.reshape(1, 2 * levels, 1, 1).expand(n, 2 * levels, 2, 3)
    s = lik.sample(params, generator=torch.Generator().manual_seed(1))
    assert s.shape == (n, 2, 2, 3)
    assert s.dtype == torch.long
    assert s.min() >= 0 and s.max() < levels
    for c in range(2):
        freq = torch.bincount(s[:, c].flatten(), minlength=levels).double() / s[:, c].numel()
        p = logits[c].exp().double()
        assert torch.all((freq - p).abs() < 4 * (p * (1 - p) / s[:, c].numel()).sqrt()), c
    again = lik.sample(params, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s, again)
    # Near-deterministic logits put every pixel on its argmax.
    sharp = torch.full((1, levels, 2, 2), -50.0)
    sharp[0, 2] = 50.0
    assert torch.all(lik.sample(sharp) == 2)


def test_make_likelihood():
    assert isinstance(make_likelihood("auto", 2), Bernoulli)
    cat = make_likelihood("auto", 17)
    assert isinstance(cat, Categorical)
    assert cat.levels == 17 and cat.params_per_channel == 17
    b = make_likelihood("bernoulli", 2)
    assert isinstance(b, Bernoulli) and b.params_per_channel == 1 and b.levels == 2
    assert isinstance(make_likelihood("categorical", 2), Categorical)
    with pytest.raises(ValueError):
        make_likelihood("bogus", 2)


@pytest.mark.parametrize("levels", [1, 3, 256])
def test_bernoulli_rejects_non_binary(levels):
    with pytest.raises(ValueError):
        Bernoulli(levels)
    with pytest.raises(ValueError):
        make_likelihood("bernoulli", levels)


def test_categorical_rejects_too_few_levels():
    with pytest.raises(ValueError):
        Categorical(1)


def test_to_network_input():
    x = torch.tensor([0, 1, 2, 3, 4])
    torch.testing.assert_close(to_network_input(x, 5), torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    torch.testing.assert_close(to_network_input(torch.tensor([0, 1]), 2), torch.tensor([-1.0, 1.0]))
    assert to_network_input(x, 5).dtype == torch.float32
