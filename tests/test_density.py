"""The unconditional density is a proper density, its KL is right, and its fit is what it says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from acn.density import GaussianMixtureDensity, fit_code_density, fit_gaussian_mixture


def _random_mixture(components: int, dim: int, seed: int) -> GaussianMixtureDensity:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(components, dim, dim, generator=g, dtype=torch.float64)
    covariances = a @ a.transpose(1, 2) + 0.5 * torch.eye(dim, dtype=torch.float64)
    weights = torch.softmax(torch.randn(components, generator=g, dtype=torch.float64), 0)
    means = 2 * torch.randn(components, dim, generator=g, dtype=torch.float64)
    return GaussianMixtureDensity(weights, means, covariances)


def test_log_prob_matches_scipy():
    density = _random_mixture(3, 4, seed=0)
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    per_component = [
        math.log(w) + multivariate_normal(m.numpy(), s.numpy()).logpdf(z.numpy())
        for w, m, s in zip(density.weights, density.means, density.covariances, strict=True)
    ]
    expected = logsumexp(np.stack(per_component), axis=0)
    np.testing.assert_allclose(density.log_prob(z).numpy(), expected, rtol=0, atol=1e-10)


def test_density_integrates_to_one():
    density = _random_mixture(3, 1, seed=2)
    grid = torch.linspace(-60, 60, 200_001, dtype=torch.float64)[:, None]
    mass = np.trapezoid(density.log_prob(grid).exp().numpy(), grid[:, 0].numpy())
    assert mass == pytest.approx(1.0, abs=1e-6)


def test_single_component_kl_is_the_closed_form_and_the_estimator_agrees():
    density = _random_mixture(1, 3, seed=3)
    m, s = density.means[0], density.covariances[0]
    c = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    s_inv = torch.linalg.inv(s)
    diff = m - c[0]
    closed = 0.5 * (torch.trace(s_inv) + diff @ s_inv @ diff - 3 + torch.logdet(s))
    assert density.kl(c, c).item() == pytest.approx(closed.item(), rel=1e-10)
    # The Monte Carlo estimator used for several components agrees with it on average.
    g = torch.Generator().manual_seed(4)
    z = c + torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    estimates = -0.5 * 3 * (math.log(2 * math.pi) + 1) - density.log_prob(z)
    se = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - closed.item()) < 4 * se


def test_several_components_use_the_unbiased_estimate():
    density = _random_mixture(2, 2, seed=5)
    c = torch.zeros(1, 2, dtype=torch.float64)
    z = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    expected = -(math.log(2 * math.pi) + 1) - density.log_prob(z)
    assert density.kl(c, z).item() == pytest.approx(expected.item(), rel=1e-12)


def test_samples_repeat_and_have_the_mixture_moments():
    density = _random_mixture(3, 2, seed=6)
    a = density.sample(200_000, torch.Generator().manual_seed(7))
    b = density.sample(200_000, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.dtype == torch.float32
    w, m, s = density.weights, density.means, density.covariances
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (s + m[:, :, None] * m[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    x = a.double()
    np.testing.assert_allclose(x.mean(0).numpy(), mean.numpy(), atol=0.05)
    np.testing.assert_allclose(torch.cov(x.T).numpy(), cov.numpy(), rtol=0.03, atol=0.05)


def test_fit_adds_the_posterior_noise_to_the_code_covariance():
    rng = np.random.default_rng(8)
    codes = rng.normal(size=(3000, 3)) @ np.array([[2.0, 0, 0], [1.0, 0.5, 0], [0, 0, 3.0]])
    density = fit_gaussian_mixture(codes + 1.5, components=1)
    np.testing.assert_allclose(density.means[0].numpy(), codes.mean(0) + 1.5, atol=1e-8)
    np.testing.assert_allclose(
        (density.covariances[0] - torch.eye(3, dtype=torch.float64)).numpy(),
        np.cov(codes.T, bias=True),
        atol=1e-5,
    )


def test_selection_finds_clusters_and_picks_the_lowest_validation_kl():
    rng = np.random.default_rng(9)
    centres = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=np.float64)
    train = torch.from_numpy(centres[rng.integers(0, 4, 400)] + rng.normal(size=(400, 2)))
    val = torch.from_numpy(centres[rng.integers(0, 4, 200)] + rng.normal(size=(200, 2)))
    density, info = fit_code_density(train, val, components=(1, 2, 4, 8), seed=0)
    scores = {row["components"]: row["val_kl"] for row in info["selection"]}
    assert density.components == min(scores, key=scores.get) == info["components"]
    assert density.components >= 4
    assert scores[4] < scores[1] - 1.0  # four clusters: one Gaussian is far worse
    assert "Gaussian mixture" in info["family"]


def test_unimodal_codes_do_not_gain_from_many_components():
    rng = np.random.default_rng(10)
    train = torch.from_numpy(rng.normal(size=(500, 3)))
    val = torch.from_numpy(rng.normal(size=(300, 3)))
    _, info = fit_code_density(train, val, components=(1, 8), seed=0)
    scores = {row["components"]: row["val_kl"] for row in info["selection"]}
    # Eight components cannot describe held-out Gaussian codes much better than one.
    assert scores[8] > scores[1] - 0.05


def test_candidates_without_validation_and_subsampling():
    rng = np.random.default_rng(11)
    train = torch.from_numpy(rng.normal(size=(6, 2)))
    density, info = fit_code_density(train, None, components=(1, 4, 16), seed=0)
    assert density.components == 4  # 16 > 6 codes is skipped; no validation: the largest left
    assert [row["components"] for row in info["selection"]] == [4]
    big = torch.from_numpy(rng.normal(size=(500, 2)))
    a, info_a = fit_code_density(big, None, components=(2,), seed=3, max_fit=100)
    b, _ = fit_code_density(big, None, components=(2,), seed=3, max_fit=100)
    assert torch.equal(a.means, b.means) and torch.equal(a.covariances, b.covariances)
    assert info_a["fitted_on"].startswith("100 ")
