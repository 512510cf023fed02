"""Tests for :mod:`acn.nn.distributions` and :mod:`acn.nn.prior` against numerical integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from acn.config import ModelConfig
from acn.nn import distributions as dist
from acn.nn.build import make_prior
from acn.nn.prior import MixturePrior, NeighbourPrior, StandardNormalPrior

GRID = torch.linspace(-25.0, 25.0, 50001, dtype=torch.float64)  # step 1e-3


def _mixture_1d(m: int, seed: int):
    """Random 1-D mixture parameters, each (1, M), float64."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, m, generator=g, dtype=torch.float64)
    mu = 2 * torch.randn(1, m, generator=g, dtype=torch.float64)
    sigma = 0.3 + torch.rand(1, m, generator=g, dtype=torch.float64) * 1.5
    return logits, mu, sigma


def _direct_density(z: np.ndarray, logits, mu, sigma) -> np.ndarray:
    """p(z) for one dimension, straight from the formula, in numpy."""
    pi = np.exp(logits) / np.exp(logits).sum()
    z = z[:, None]
    comp = np.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return (pi * comp).sum(axis=1)


def _numerical_kl_1d(c: float, log_p: torch.Tensor) -> float:
    """KL(N(c, 1) || p) by the trapezoid rule, with log p given on GRID."""
    log_q = -0.5 * (GRID - c) ** 2 - 0.5 * math.log(2 * math.pi)
    return torch.trapezoid(log_q.exp() * (log_q - log_p), GRID).item()


def _mixture_log_prob_on_grid(logits, mu, sigma) -> torch.Tensor:
    """log p on GRID for (1, M) parameters of a single dimension."""
    return dist.mixture_log_prob(GRID[:, None], logits, mu, sigma)


# ---------------------------------------------------------------------------------------------
# distributions.py


@pytest.mark.parametrize(("m", "seed"), [(1, 0), (3, 1), (5, 2)])
def test_mixture_log_prob_integrates_to_one_1d(m, seed):
    logits, mu, sigma = _mixture_1d(m, seed)
    log_p = _mixture_log_prob_on_grid(logits, mu, sigma)
    assert log_p.shape == GRID.shape
    assert torch.trapezoid(log_p.exp(), GRID).item() == pytest.approx(1.0, abs=1e-6)


def test_mixture_log_prob_integrates_to_one_2d():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, generator=g, dtype=torch.float64)
    mu = torch.randn(2, 3, generator=g, dtype=torch.float64)
    sigma = 0.5 + torch.rand(2, 3, generator=g, dtype=torch.float64)
    x = torch.linspace(-12, 12, 801, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(x, x, indexing="ij"), dim=-1).reshape(-1, 2)
    p = dist.mixture_log_prob(zz, logits, mu, sigma).exp().reshape(801, 801)
    total = torch.trapezoid(torch.trapezoid(p, x, dim=1), x).item()
    assert total == pytest.approx(1.0, abs=1e-6)
    # Product structure: the 2-D density is the product of the per-dimension densities.
    p0 = dist.mixture_log_prob(x[:, None], logits[:1], mu[:1], sigma[:1]).exp()
    p1 = dist.mixture_log_prob(x[:, None], logits[1:], mu[1:], sigma[1:]).exp()
    torch.testing.assert_close(p, p0[:, None] * p1[None, :])


def test_mixture_log_prob_matches_direct_formula():
    g = torch.Generator().manual_seed(4)
    B, D, M = 5, 3, 4
    logits = torch.randn(B, D, M, generator=g, dtype=torch.float64)
    mu = torch.randn(B, D, M, generator=g, dtype=torch.float64)
    sigma = 0.2 + torch.rand(B, D, M, generator=g, dtype=torch.float64)
    z = 2 * torch.randn(B, D, generator=g, dtype=torch.float64)
    got = dist.mixture_log_prob(z, logits, mu, sigma)
    assert got.shape == (B,)
    expected = np.zeros(B)
    for b in range(B):
        for d in range(D):
            p = _direct_density(
                z[b, d : d + 1].numpy(), logits[b, d].numpy(), mu[b, d].numpy(), sigma[b, d].numpy()
            )
            expected[b] += np.log(p[0])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # Unnormalised logits: adding a constant per (b, d) changes nothing.
    shifted = dist.mixture_log_prob(z, logits + 7.0, mu, sigma)
    torch.testing.assert_close(shifted, got)
    # (D, M) parameters broadcast over the batch.
    shared = dist.mixture_log_prob(z, logits[0], mu[0], sigma[0])
    per_row = dist.mixture_log_prob(
        z, logits[0].expand(B, D, M), mu[0].expand(B, D, M), sigma[0].expand(B, D, M)
    )
    torch.testing.assert_close(shared, per_row)


def test_gaussian_log_prob_matches_torch():
    z = torch.linspace(-3, 3, 13, dtype=torch.float64)
    mu, sigma = torch.tensor(0.4, dtype=torch.float64), torch.tensor(1.7, dtype=torch.float64)
    expected = torch.distributions.Normal(mu, sigma).log_prob(z)
    torch.testing.assert_close(dist.gaussian_log_prob(z, mu, sigma), expected)


def test_unit_gaussian_entropy():
    # Numerically: -int q log q for N(0, 1), times D.
    log_q = -0.5 * GRID**2 - 0.5 * math.log(2 * math.pi)
    h1 = -torch.trapezoid(log_q.exp() * log_q, GRID).item()
    assert dist.unit_gaussian_entropy(1) == pytest.approx(h1, abs=1e-8)
    assert dist.unit_gaussian_entropy(7) == pytest.approx(7 * h1, abs=1e-7)


@pytest.mark.parametrize(
    ("c", "mu", "sigma"), [(0.0, 0.0, 1.0), (1.3, -0.4, 0.6), (-2.0, 1.0, 2.5)]
)
def test_kl_unit_gaussian_gaussian_matches_integration(c, mu, sigma):
    log_p = dist.gaussian_log_prob(GRID, torch.tensor(mu), torch.tensor(sigma))
    expected = _numerical_kl_1d(c, log_p)
    got = dist.kl_unit_gaussian_gaussian(
        torch.tensor([[c]], dtype=torch.float64),
        torch.tensor([[mu]], dtype=torch.float64),
        torch.tensor([[sigma]], dtype=torch.float64),
    )
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_kl_unit_gaussian_gaussian_sums_over_dims():
    g = torch.Generator().manual_seed(5)
    c, mu = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    sigma = 0.5 + torch.rand(4, 3, generator=g)
    kl = dist.kl_unit_gaussian_gaussian(c, mu, sigma)
    q = torch.distributions.Normal(c, torch.ones_like(c))
    p = torch.distributions.Normal(mu, sigma)
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(-1))
    assert torch.all(kl >= 0)
    zero = dist.kl_unit_gaussian_gaussian(c, c, torch.ones_like(c))
    torch.testing.assert_close(zero, torch.zeros(4), atol=1e-7, rtol=0)


@pytest.mark.parametrize("c", [0.0, 0.7, -3.0])
def test_kl_unit_gaussian_standard_normal_matches_integration(c):
    log_p = -0.5 * GRID**2 - 0.5 * math.log(2 * math.pi)
    expected = _numerical_kl_1d(c, log_p)
    got = dist.kl_unit_gaussian_standard_normal(torch.tensor([[c]], dtype=torch.float64))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    two = dist.kl_unit_gaussian_standard_normal(torch.tensor([[c, 2 * c]]))
    assert two.item() == pytest.approx(0.5 * (c**2 + 4 * c**2), rel=1e-6)


@pytest.mark.parametrize(("m", "seed", "c"), [(1, 10, 0.5), (3, 11, -1.0), (4, 12, 2.0)])
def test_kl_mixture_mc_is_unbiased_1d(m, seed, c):
    logits, mu, sigma = _mixture_1d(m, seed)
    expected = _numerical_kl_1d(c, _mixture_log_prob_on_grid(logits, mu, sigma))
    n = 20000
    g = torch.Generator().manual_seed(seed)
    z = c + torch.randn(n, 1, generator=g, dtype=torch.float64)
    est = dist.kl_unit_gaussian_mixture_mc(
        z, logits.expand(n, 1, m), mu.expand(n, 1, m), sigma.expand(n, 1, m)
    )
    assert est.shape == (n,)
    se = est.std().item() / math.sqrt(n)
    assert abs(est.mean().item() - expected) < 4 * se + 1e-9, (est.mean().item(), expected, se)
    # Individual estimates need not be non-negative; the true KL is.
    assert expected >= 0


def test_kl_mixture_mc_is_unbiased_2d():
    g = torch.Generator().manual_seed(13)
    m = 3
    logits = torch.randn(2, m, generator=g, dtype=torch.float64)
    mu = 1.5 * torch.randn(2, m, generator=g, dtype=torch.float64)
    sigma = 0.4 + torch.rand(2, m, generator=g, dtype=torch.float64)
    c = torch.tensor([0.8, -1.2], dtype=torch.float64)
    # q and p are both products over dimensions, so the KL is the sum of the 1-D KLs.
    expected = sum(
        _numerical_kl_1d(
            c[d].item(),
            _mixture_log_prob_on_grid(logits[d : d + 1], mu[d : d + 1], sigma[d : d + 1]),
        )
        for d in range(2)
    )
    n = 20000
    z = c + torch.randn(n, 2, generator=g, dtype=torch.float64)
    est = dist.kl_unit_gaussian_mixture_mc(z, logits, mu, sigma)
    se = est.std().item() / math.sqrt(n)
    assert abs(est.mean().item() - expected) < 4 * se, (est.mean().item(), expected, se)


def _mixture_cdf(x: torch.Tensor, logits, mu, sigma) -> torch.Tensor:
    pi = torch.softmax(logits, dim=-1)
    return (pi * torch.special.ndtr((x[:, None] - mu) / sigma)).sum(dim=-1)


def test_mixture_sample_matches_distribution():
    g = torch.Generator().manual_seed(14)
    D, M, n = 2, 3, 20000
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    mu = torch.tensor([[-3.0, 0.0, 4.0], [1.0, -2.0, 2.0]], dtype=torch.float64)
    sigma = torch.tensor([[0.5, 1.0, 0.3], [0.2, 0.7, 1.5]], dtype=torch.float64)
    z = dist.mixture_sample(
        logits.expand(n, D, M), mu.expand(n, D, M), sigma.expand(n, D, M), generator=g
    )
    assert z.shape == (n, D) and z.dtype == torch.float64
    pi = torch.softmax(logits, dim=-1)
    mean = (pi * mu).sum(-1)
    var = (pi * (sigma**2 + mu**2)).sum(-1) - mean**2
    se_mean = (var / n).sqrt()
    assert torch.all((z.mean(0) - mean).abs() < 4 * se_mean)
    # Second moment: standard error from the samples themselves.
    sq = (z - mean) ** 2
    se_var = sq.std(0) / math.sqrt(n)
    assert torch.all((sq.mean(0) - var).abs() < 4 * se_var)
    # Kolmogorov-Smirnov distance to the exact CDF, per dimension (alpha = 0.001: 1.95/sqrt(n)).
    for d in range(D):
        xs = z[:, d].sort().values
        cdf = _mixture_cdf(xs, logits[d], mu[d], sigma[d])
        ecdf_hi = torch.arange(1, n + 1, dtype=torch.float64) / n
        ecdf_lo = torch.arange(0, n, dtype=torch.float64) / n
        ks = torch.maximum((ecdf_hi - cdf).abs(), (cdf - ecdf_lo).abs()).max().item()
        assert ks < 1.95 / math.sqrt(n), (d, ks)


def test_mixture_sample_component_choice_and_reproducibility():
    # Tiny scales: each sample sits on one mean, chosen with probability softmax(logits).
    n = 6000
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3])).expand(n, 1, 3)
    mu = torch.tensor([-10.0, 0.0, 10.0]).expand(n, 1, 3)
    sigma = torch.full((n, 1, 3), 1e-4)
    z = dist.mixture_sample(logits, mu, sigma, generator=torch.Generator().manual_seed(0))
    comp = torch.round(z[:, 0] / 10).long() + 1
    assert torch.all((z[:, 0] - 10 * (comp - 1).float()).abs() < 1e-2)
    freq = torch.bincount(comp, minlength=3).double() / n
    p = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    assert torch.all((freq - p).abs() < 4 * (p * (1 - p) / n).sqrt())
    # Rows with different parameters use their own parameters.
    rows_mu = torch.tensor([[[5.0]], [[-5.0]]])
    rows = dist.mixture_sample(torch.zeros(2, 1, 1), rows_mu, torch.full((2, 1, 1), 1e-4))
    torch.testing.assert_close(rows, rows_mu[..., 0], atol=1e-2, rtol=0)
    # Reproducible under a seeded generator; a different seed gives different draws.
    a = dist.mixture_sample(
        logits[:50], mu[:50], sigma[:50] * 1e4, generator=torch.Generator().manual_seed(3)
    )
    b = dist.mixture_sample(
        logits[:50], mu[:50], sigma[:50] * 1e4, generator=torch.Generator().manual_seed(3)
    )
    c = dist.mixture_sample(
        logits[:50], mu[:50], sigma[:50] * 1e4, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------
# prior.py


def _neighbour_prior(code_dim=3, hidden=8, layers=3, components=4, min_scale=1e-3, seed=0):
    torch.manual_seed(seed)
    return NeighbourPrior(code_dim, hidden, layers, components, min_scale).double()


def test_neighbour_prior_shapes_and_constraints():
    prior = _neighbour_prior(code_dim=3, components=4, min_scale=0.05)
    c_hat = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits, mu, sigma = prior.mixture_params(c_hat, 5)
    for t in (logits, mu, sigma):
        assert t.shape == (5, 3, 4)
    assert torch.all(sigma >= 0.05)
    torch.testing.assert_close(
        torch.softmax(logits, -1).sum(-1), torch.ones(5, 3, dtype=torch.float64)
    )
    # Drive the scale pre-activations far negative: sigma must bottom out at min_scale.
    with torch.no_grad():
        prior.out.bias.view(3, 4, 3)[..., 2] = -200.0
    _, _, sigma = prior.mixture_params(c_hat, 5)
    assert torch.all(sigma >= 0.05)
    torch.testing.assert_close(sigma, torch.full_like(sigma, 0.05))
    z = torch.zeros(5, 3, dtype=torch.float64)
    assert prior.log_prob(z, c_hat).shape == (5,)
    assert prior.kl(c_hat, z, c_hat).shape == (5,)
    assert prior.sample(c_hat, generator=torch.Generator().manual_seed(0)).shape == (5, 3)
    with pytest.raises(ValueError):
        prior.mixture_params(None, 5)
    assert NeighbourPrior.conditional


def test_neighbour_prior_depends_on_c_hat():
    prior = _neighbour_prior()
    g = torch.Generator().manual_seed(2)
    a, b = (
        torch.randn(1, 3, generator=g, dtype=torch.float64),
        torch.randn(1, 3, generator=g, dtype=torch.float64),
    )
    pa, pb = prior.mixture_params(a, 1), prior.mixture_params(b, 1)
    for x, y in zip(pa, pb, strict=True):
        assert not torch.allclose(x, y)
    z = torch.zeros(1, 3, dtype=torch.float64)
    assert prior.log_prob(z, a).item() != pytest.approx(prior.log_prob(z, b).item())
    # The batch rows are independent: each row's parameters depend only on its own c_hat.
    both = prior.mixture_params(torch.cat([a, b]), 2)
    for x, y, w in zip(both, pa, pb, strict=True):
        torch.testing.assert_close(x[:1], y)
        torch.testing.assert_close(x[1:], w)


def test_neighbour_prior_skip_connections():
    code_dim, hidden, layers = 3, 8, 4
    prior = _neighbour_prior(code_dim=code_dim, hidden=hidden, layers=layers)
    assert prior.out.in_features == code_dim + layers * hidden
    assert prior.hidden[0].in_features == code_dim
    for layer in list(prior.hidden)[1:]:
        assert layer.in_features == code_dim + hidden
    assert prior.out.out_features == code_dim * prior.components * 3
    # Input skip: with every hidden layer silenced, the output still depends on c_hat.
    with torch.no_grad():
        for layer in prior.hidden:
            layer.weight.zero_()
            layer.bias.zero_()
    a = torch.ones(1, code_dim, dtype=torch.float64)
    pa, pb = prior.mixture_params(a, 1), prior.mixture_params(-a, 1)
    assert not torch.allclose(pa[1], pb[1])
    # Hidden-to-output skip: the first hidden layer reaches the output even when every later
    # hidden layer ignores it (their weights on the hidden part are zero).
    prior = _neighbour_prior(code_dim=code_dim, hidden=hidden, layers=layers, seed=1)
    with torch.no_grad():
        for layer in list(prior.hidden)[1:]:
            layer.weight[:, code_dim:] = 0
    base = prior.mixture_params(a, 1)[1]
    with torch.no_grad():
        prior.hidden[0].bias += 1.0
    assert not torch.allclose(prior.mixture_params(a, 1)[1], base)


def test_neighbour_prior_log_prob_integrates_to_one():
    prior = _neighbour_prior(code_dim=1, components=3, seed=3)
    c_hat = torch.tensor([[0.7]], dtype=torch.float64)
    logits, mu, sigma = prior.mixture_params(c_hat, 1)
    log_p = prior.log_prob(GRID[:, None], c_hat.expand(GRID.shape[0], 1))
    assert torch.trapezoid(log_p.exp(), GRID).item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(log_p, _mixture_log_prob_on_grid(logits[0], mu[0], sigma[0]))


def test_neighbour_prior_single_component_kl_is_exact():
    prior = _neighbour_prior(code_dim=2, components=1, seed=4)
    g = torch.Generator().manual_seed(5)
    c = torch.randn(4, 2, generator=g, dtype=torch.float64)
    c_hat = torch.randn(4, 2, generator=g, dtype=torch.float64)
    _, mu, sigma = prior.mixture_params(c_hat, 4)
    expected = dist.kl_unit_gaussian_gaussian(c, mu[..., 0], sigma[..., 0])
    z1 = torch.randn(4, 2, generator=g, dtype=torch.float64)
    z2 = torch.randn(4, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(prior.kl(c, z1, c_hat), expected)
    torch.testing.assert_close(prior.kl(c, z2, c_hat), expected)  # no dependence on the sample
    # And that equals the numerically integrated KL, dimension by dimension.
    numeric = sum(
        _numerical_kl_1d(c[0, d].item(), dist.gaussian_log_prob(GRID, mu[0, d, 0], sigma[0, d, 0]))
        for d in range(2)
    )
    assert expected[0].item() == pytest.approx(numeric, abs=1e-6)


def test_neighbour_prior_multi_component_kl_is_mc_estimate():
    prior = _neighbour_prior(code_dim=2, components=3, seed=6)
    g = torch.Generator().manual_seed(7)
    c, c_hat = (
        torch.randn(3, 2, generator=g, dtype=torch.float64),
        torch.randn(3, 2, generator=g, dtype=torch.float64),
    )
    z = c + torch.randn(3, 2, generator=g, dtype=torch.float64)
    expected = dist.kl_unit_gaussian_mixture_mc(z, *prior.mixture_params(c_hat, 3))
    torch.testing.assert_close(prior.kl(c, z, c_hat), expected)


def test_standard_normal_prior():
    prior = StandardNormalPrior(3)
    g = torch.Generator().manual_seed(8)
    c, z = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    torch.testing.assert_close(prior.kl(c, z), 0.5 * c.pow(2).sum(-1))
    torch.testing.assert_close(prior.kl(c, z * 5), 0.5 * c.pow(2).sum(-1))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    s = prior.sample(num=4000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4000, 3)
    assert s.mean().abs().item() < 0.05 and abs(s.std().item() - 1) < 0.05
    assert prior.sample(c_hat=torch.zeros(7, 3)).shape == (7, 3)
    assert not StandardNormalPrior.conditional


def test_mixture_prior_ignores_c_hat_and_integrates_to_one():
    torch.manual_seed(9)
    prior = MixturePrior(1, components=3, min_scale=1e-3).double()
    with torch.no_grad():  # move away from the symmetric initialisation
        prior.raw.add_(0.3 * torch.randn_like(prior.raw))
    z = torch.randn(5, 1, dtype=torch.float64)
    base = prior.log_prob(z)
    for c_hat in (torch.zeros(5, 1), 10 * torch.ones(5, 1)):
        torch.testing.assert_close(prior.log_prob(z, c_hat.double()), base)
    log_p = prior.log_prob(GRID[:, None])
    assert torch.trapezoid(log_p.exp(), GRID).item() == pytest.approx(1.0, abs=1e-6)
    logits, mu, sigma = prior.mixture_params(None, 4)
    assert logits.shape == mu.shape == sigma.shape == (4, 1, 3)
    assert torch.all(sigma >= 1e-3)
    assert not MixturePrior.conditional
    s = prior.sample(num=6, generator=torch.Generator().manual_seed(1))
    assert s.shape == (6, 1)


def test_mixture_prior_initialisation_and_single_component_kl():
    prior = MixturePrior(2, components=3)
    _, mu, sigma = prior.mixture_params(None, 1)
    torch.testing.assert_close(mu[0, 0], torch.tensor([-2.0, 0.0, 2.0]))
    torch.testing.assert_close(sigma, torch.ones_like(sigma), atol=2e-3, rtol=0)
    single = MixturePrior(2, components=1)
    c = torch.tensor([[0.5, -1.0]])
    _, mu1, sigma1 = single.mixture_params(None, 1)
    expected = dist.kl_unit_gaussian_gaussian(c, mu1[..., 0], sigma1[..., 0])
    torch.testing.assert_close(single.kl(c, torch.zeros(1, 2)), expected)
    # A unit-scale zero-mean single component is (almost) the standard normal.
    torch.testing.assert_close(expected, 0.5 * c.pow(2).sum(-1), atol=5e-3, rtol=0)


def test_make_prior():
    def m(prior):
        return ModelConfig(prior=prior, code_dim=3, prior_hidden=8, prior_layers=2)

    assert isinstance(make_prior(m("acn")), NeighbourPrior)
    assert isinstance(make_prior(m("normal")), StandardNormalPrior)
    assert isinstance(make_prior(m("mixture")), MixturePrior)
    assert make_prior(m("none")) is None
    with pytest.raises(ValueError, match="did you mean normal"):
        make_prior(m("norml"))
