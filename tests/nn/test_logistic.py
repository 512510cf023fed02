"""The discretised logistic mixture: normalisation, agreement with brute force, channel coupling,
sampling against the enumerated joint, determinism and gradients."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal, localcontext

import pytest
import torch

from acn.nn.logistic import (
    NARROW_BIN,
    DiscretizedLogisticMixture,
    channels_from_params,
    discretized_logistic_log_prob,
)


def all_pixels(channels: int, levels: int) -> torch.Tensor:
    """Every joint value of one pixel's channels: (levels^C, C, 1, 1) long."""
    values = list(itertools.product(range(levels), repeat=channels))
    return torch.tensor(values, dtype=torch.long).view(-1, channels, 1, 1)


def joint_log_probs(lik, params: torch.Tensor, channels: int) -> torch.Tensor:
    """log p of every joint pixel value under each of S one-pixel params (S, P, 1, 1): (S, N)."""
    x = all_pixels(channels, lik.levels)  # (N, C, 1, 1)
    S, N = params.shape[0], x.shape[0]
    p = params.repeat_interleave(N, dim=0)  # (S * N, P, 1, 1)
    return lik.log_prob(p, x.repeat(S, 1, 1, 1)).view(S, N)


def random_params(lik, channels: int, sets: int, seed: int) -> torch.Tensor:
    """(sets, P, 1, 1) params spread wide: means outside [-1, 1], tiny and large scales."""
    g = torch.Generator().manual_seed(seed)
    K = lik.components
    p = torch.randn(sets, lik.num_params(channels), 1, 1, generator=g) * 1.5
    p[:, K : K + channels * K] *= 1.5  # means, some well past the edges
    p[0, K + channels * K] = -12.0  # below the floor: the clamp must keep the sum at 1
    return p


@pytest.mark.parametrize(("channels", "levels"), [(1, 4), (1, 5), (3, 4), (3, 5), (2, 2)])
def test_probabilities_of_all_pixel_values_sum_to_one(channels, levels):
    lik = DiscretizedLogisticMixture(levels, components=3)
    params = random_params(lik, channels, sets=6, seed=channels * 10 + levels)
    total = torch.logsumexp(joint_log_probs(lik, params, channels), dim=1)  # (S,)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-5)


def reference_log_prob_float64(params: torch.Tensor, levels: int, min_log_scale: float):
    """Brute force for C = 1: log sum_k pi_k (CDF(upper edge) - CDF(lower edge)), float64.

    Args:
        params: (S, 3K) one-pixel params.

    Returns:
        (S, levels) log-probabilities of every level.
    """
    p = params.double()
    K = p.shape[1] // 3
    pi = torch.softmax(p[:, :K], dim=1)[:, None, :]  # (S, 1, K)
    mean = p[:, None, K : 2 * K]
    scale = torch.exp(p[:, None, 2 * K :].clamp(min=min_log_scale))
    h = 1.0 / (levels - 1)
    centre = torch.arange(levels, dtype=torch.float64)[None, :, None] * 2 * h - 1  # (1, L, 1)
    upper = torch.sigmoid((centre + h - mean) / scale)
    lower = torch.sigmoid((centre - h - mean) / scale)
    upper[:, -1] = 1.0  # the last bin reaches +inf
    lower[:, 0] = 0.0  # the first bin reaches -inf
    return torch.log((pi * (upper - lower)).sum(dim=2))


def reference_log_prob_decimal(params, level: int, levels: int, min_log_scale: float) -> float:
    """The same brute force in 200-digit decimals, for bins whose mass underflows float64."""
    with localcontext() as ctx:
        ctx.prec = 200
        values = [Decimal(float(v)) for v in params]
        K = len(values) // 3
        weights = [v.exp() for v in values[:K]]
        h = Decimal(1) / (levels - 1)
        centre = Decimal(level) * 2 * h - 1
        total = Decimal(0)
        for k in range(K):
            mean = values[K + k]
            scale = max(values[2 * K + k], Decimal(min_log_scale)).exp()

            def below(edge, mean=mean, scale=scale):  # CDF, P(y < edge)
                return 1 / (1 + (-(edge - mean) / scale).exp())

            def above(edge, mean=mean, scale=scale):  # survival, P(y > edge)
                return 1 / (1 + ((edge - mean) / scale).exp())

            top, bottom = level == levels - 1, level == 0
            # Difference the tail the bin lies in (CDF below the mean, survival above it), so
            # that nothing cancels: 200 digits would not survive (1 - e^-3300) - (1 - e^-3310).
            if centre < mean:
                mass = (1 if top else below(centre + h)) - (0 if bottom else below(centre - h))
            else:
                mass = (1 if bottom else above(centre - h)) - (0 if top else above(centre + h))
            total += weights[k] * mass
        return float((total / sum(weights)).ln())


def test_256_levels_sum_to_one_and_match_the_float64_cdf_reference():
    lik = DiscretizedLogisticMixture(256, components=4)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(5, 12, generator=g)
    params[:, 8:] = params[:, 8:] * 2 - 3  # log-scales from about -9 (clamped) to 3
    log_p = joint_log_probs(lik, params[:, :, None, None], channels=1)  # (5, 256)
    assert torch.allclose(torch.logsumexp(log_p, dim=1), torch.zeros(5), atol=1e-5)
    reference = reference_log_prob_float64(params, 256, lik.min_log_scale)
    assert torch.isfinite(reference).all()
    assert torch.allclose(log_p.double(), reference, rtol=1e-5, atol=1e-4)


EXTREME = [
    # (mixture logits, means, log-scales)
    ([0.0, 0.0], [1.0, 0.9], [-7.0, -7.0]),  # sharp at the top: bin 0 has mass ~ e^-2200
    ([0.0, 0.0], [5.0, -4.0], [-7.0, -20.0]),  # means far outside, one scale under the floor
    ([30.0, -30.0], [0.3, -0.3], [-6.0, -2.0]),  # one component all but switched off
    ([0.0, 1.0], [0.0, 0.5], [30.0, 100.0]),  # bins ~1e-16 and ~1e-44 scales wide: midpoint
    ([0.0, 0.0], [0.2, -0.1], [2.05, 2.1]),  # either side of the midpoint threshold
]


@pytest.mark.parametrize(("logits", "means", "log_scales"), EXTREME)
def test_extreme_params_are_finite_and_match_a_high_precision_reference(logits, means, log_scales):
    lik = DiscretizedLogisticMixture(256, components=2)
    params = torch.tensor(logits + means + log_scales)
    log_p = joint_log_probs(lik, params[None, :, None, None], channels=1)[0]  # (256,)
    assert torch.isfinite(log_p).all()
    assert abs(torch.logsumexp(log_p, dim=0).item()) < 1e-5
    for level in [0, 1, 2, 60, 127, 128, 200, 253, 254, 255]:
        want = reference_log_prob_decimal(params.tolist(), level, 256, lik.min_log_scale)
        # abs 1e-3: at scale e^-7 a float32 bin edge sits 1e-7 * e^7 ~ 1e-4 scales off already.
        assert log_p[level].item() == pytest.approx(want, rel=1e-5, abs=1e-3), level


def test_the_midpoint_threshold_sits_where_the_midpoint_rule_is_exact_to_float32():
    # Both branches at bin widths around the threshold: they must agree to float32 resolution,
    # otherwise log p jumps when a scale crosses it during training.
    levels = 256
    half = 1.0 / (levels - 1)
    width = torch.tensor([NARROW_BIN * 0.999, NARROW_BIN * 1.001], dtype=torch.float64)
    log_scale = torch.log(2 * half / width)
    x = torch.full((2,), 100)
    got = discretized_logistic_log_prob(x, torch.tensor(0.1), log_scale.float(), levels)
    centre = 100 * 2 * half - 1
    exact = torch.log(
        torch.sigmoid((centre + half - 0.1) / log_scale.exp())
        - torch.sigmoid((centre - half - 0.1) / log_scale.exp())
    )
    assert torch.allclose(got.double(), exact, rtol=2e-7, atol=0)


def one_pixel_params(K: int, C: int, logits, means, log_scales, coeffs) -> torch.Tensor:
    """(1, P, 1, 1) from per-block values laid out as the module doc says."""
    flat = torch.cat(
        [
            torch.as_tensor(logits, dtype=torch.float32).view(K),
            torch.as_tensor(means, dtype=torch.float32).view(C * K),
            torch.as_tensor(log_scales, dtype=torch.float32).view(C * K),
            torch.as_tensor(coeffs, dtype=torch.float32).view(C * (C - 1) // 2 * K),
        ]
    )
    return flat.view(1, -1, 1, 1)


def test_conditional_means_follow_the_documented_layout():
    levels, K, C = 256, 2, 3
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(K, generator=g)
    means = torch.randn(C, K, generator=g)
    log_scales = torch.rand(C, K, generator=g) - 3
    raw = torch.randn(3, K, generator=g) * 2  # pairs (1, 0), (2, 0), (2, 1)
    params = one_pixel_params(K, C, logits, means, log_scales, raw)
    lik = DiscretizedLogisticMixture(levels, components=K)
    x = torch.tensor([[[[20]], [[200]], [[90]]]])  # (1, 3, 1, 1)
    v = x.view(3).float() * 2 / (levels - 1) - 1
    a = torch.tanh(raw)
    shifted = torch.stack(
        [means[0], means[1] + a[0] * v[0], means[2] + a[1] * v[0] + a[2] * v[1]]
    )  # (C, K)
    per_channel = discretized_logistic_log_prob(x.view(3, 1), shifted, log_scales, levels)
    want = torch.logsumexp(torch.log_softmax(logits, 0) + per_channel.sum(0), dim=0)
    assert lik.log_prob(params, x).item() == pytest.approx(want.item(), abs=1e-5)


def test_coupling_coefficients_change_the_likelihood_and_zero_coupling_factorises():
    levels, K, C = 256, 1, 3
    lik = DiscretizedLogisticMixture(levels, components=K)
    means, log_scales = [[-0.9], [0.1], [0.3]], [[-3.0], [-3.0], [-3.0]]
    x = torch.tensor([[[[5]], [[128]], [[160]]]])  # channel 0 near -1: its coupling matters
    zero = one_pixel_params(K, C, [0.0], means, log_scales, [0.0, 0.0, 0.0])
    coupled = one_pixel_params(K, C, [0.0], means, log_scales, [0.5, 0.0, 0.0])
    assert abs(lik.log_prob(coupled, x).item() - lik.log_prob(zero, x).item()) > 1.0
    # With no coupling, one component is a product of the channels' own discretised logistics.
    mono = DiscretizedLogisticMixture(levels, components=1)
    alone = sum(
        mono.log_prob(
            torch.tensor([0.0, means[c][0], log_scales[c][0]]).view(1, 3, 1, 1), x[:, c : c + 1]
        )
        for c in range(C)
    )
    assert lik.log_prob(zero, x).item() == pytest.approx(alone.item(), abs=1e-5)


def test_sampling_matches_the_enumerated_joint():
    levels, K, C, draws = 5, 3, 3, 20000
    lik = DiscretizedLogisticMixture(levels, components=K)
    params = one_pixel_params(
        K,
        C,
        logits=[0.5, 0.0, -0.5],
        means=[[-0.6, 0.4, 0.0], [0.2, -0.3, 0.5], [0.0, 0.6, -0.4]],
        log_scales=[[-1.0, -1.5, -0.5], [-1.2, -1.0, -1.5], [-1.5, -0.8, -1.0]],
        coeffs=[[2.0, -2.0, 1.5], [-1.5, 2.0, 1.0], [2.0, 1.0, -2.0]],  # strong coupling
    )
    probs = joint_log_probs(lik, params, C)[0].double().exp()  # (125,)
    x = lik.sample(params.expand(draws, -1, -1, -1), torch.Generator().manual_seed(7))
    index = (x[:, 0, 0, 0] * levels + x[:, 1, 0, 0]) * levels + x[:, 2, 0, 0]
    counts = torch.bincount(index, minlength=levels**C).double()

    def chi_square(p):
        expected = p * draws
        big = expected >= 5  # pool the rare cells so the statistic stays chi-square
        obs = torch.cat([counts[big], counts[~big].sum().view(1)])
        exp = torch.cat([expected[big], expected[~big].sum().view(1)])
        return ((obs - exp) ** 2 / exp.clamp(min=1e-12)).sum().item(), int(big.sum())

    stat, dof = chi_square(probs)
    bound = dof + 6 * math.sqrt(2 * dof)  # six standard deviations
    assert stat < bound
    # The test has the power to see a sampler that ignores the coupling.
    uncoupled = params.clone()
    uncoupled[0, K + 2 * C * K :] = 0
    assert chi_square(joint_log_probs(lik, uncoupled, C)[0].double().exp())[0] > 10 * bound


def test_same_generator_state_gives_the_same_samples_and_the_right_shape():
    lik = DiscretizedLogisticMixture(256, components=5)
    params = torch.randn(2, lik.num_params(3), 4, 6)
    a = lik.sample(params, torch.Generator().manual_seed(11))
    b = lik.sample(params, torch.Generator().manual_seed(11))
    c = lik.sample(params, torch.Generator().manual_seed(12))
    assert a.shape == (2, 3, 4, 6) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 255
    grey = DiscretizedLogisticMixture(4, components=2)
    g = grey.sample(torch.randn(3, grey.num_params(1), 2, 2), torch.Generator().manual_seed(0))
    assert g.shape == (3, 1, 2, 2) and g.max() <= 3


def test_log_prob_shape_dtype_bf16_and_finite_gradients():
    lik = DiscretizedLogisticMixture(256, components=3)
    g = torch.Generator().manual_seed(5)
    params = torch.randn(2, lik.num_params(3), 3, 3, generator=g)
    params[0, 9:18, 0, 0] = torch.tensor([100.0, -20.0, 30.0] * 3)  # log-scales: both extremes
    params[1, 3:9, 1, 1] = 40.0  # means far past the top edge
    params.requires_grad_(True)
    x = torch.randint(0, 256, (2, 3, 3, 3), generator=g)
    x[1, :, 1, 1] = 0  # against those means: masses far below float64's range
    log_p = lik.log_prob(params, x)
    assert log_p.shape == (2,) and log_p.dtype == torch.float32
    assert torch.isfinite(log_p).all()
    (-log_p.sum()).backward()
    assert torch.isfinite(params.grad).all()
    # Every block (logits, means, log-scales, coefficients) receives gradient.
    K = 3
    for block in [slice(0, K), slice(K, 4 * K), slice(4 * K, 7 * K), slice(7 * K, 10 * K)]:
        assert params.grad[:, block].abs().sum() > 0
    half = params.detach().bfloat16()
    assert lik.log_prob(half, x).dtype == torch.float32
    assert torch.equal(lik.log_prob(half, x), lik.log_prob(half.float(), x))


def test_num_params_and_bad_shapes():
    lik = DiscretizedLogisticMixture(256, components=10)
    assert lik.num_params(1) == 30 and lik.num_params(3) == 100 and lik.num_params(2) == 60
    assert lik.name == "logistic_mixture"
    assert channels_from_params(100, 10) == 3 and channels_from_params(30, 10) == 1
    with pytest.raises(ValueError, match="fit no channel count"):
        channels_from_params(40, 10)
    with pytest.raises(ValueError, match="need 100"):
        lik.log_prob(torch.zeros(1, 30, 1, 1), torch.zeros(1, 3, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 levels"):
        DiscretizedLogisticMixture(1)


def test_the_pixelcnn_samples_through_the_per_pixel_slices():
    # Decoder.sample hands the likelihood (B, P, 1, 1) slices: the channel order must live here.
    from acn.nn.pixelcnn import GatedPixelCNN

    torch.manual_seed(0)
    lik = DiscretizedLogisticMixture(16, components=2)
    net = GatedPixelCNN(lik, (3, 3, 3), code_dim=0, channels=8, layers=2, map_channels=4)
    x = net.sample(None, torch.Generator().manual_seed(1), num=2)
    assert x.shape == (2, 3, 3, 3) and x.dtype == torch.long
    assert net.log_prob(x, None).shape == (2,)
