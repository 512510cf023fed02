"""The discretised logistic mixture likelihood of PixelCNN++ (Salimans et al., 2017, 2.1-2.2).

Every pixel's C channels share one mixture indicator k. Given k, the channels are drawn in order
c = 0 .. C - 1, each from a logistic discretised to the ``levels`` bins of [-1, 1], whose mean is
shifted linearly by the channels already drawn (section 2.2):

    mean_kc = mu_kc + sum_{c' < c} coeff_kcc' * x_c'        (x in network scale, [-1, 1])

so the joint over a pixel's channels is a proper distribution with dependence inside the pixel,
at the cost of C(C - 1)/2 coefficients per component. Bin j covers [v_j - h, v_j + h] around its
centre v_j = 2j / (levels - 1) - 1 with half-width h = 1 / (levels - 1); the edge bins 0 and
levels - 1 stretch to -inf and +inf (section 2.1), so no mass is lost outside [-1, 1].

Layout of the P = K (C + 1)(C + 2) / 2 decoder outputs per pixel (K components, C channels),
blocks in this order along the channel axis of ``params`` (B, P, H, W):

    [0, K)                      mixture logits, index k
    [K, K + CK)                 means mu, index K + c K + k
    [K + CK, K + 2CK)           log-scales, index K + CK + c K + k (clamped below at
                                ``min_log_scale``)
    [K + 2CK, P)                coupling coefficients (before tanh), index K + 2CK + pair K + k,
                                pairs (c, c') with c' < c in the order (1, 0), (2, 0), (2, 1), ...,
                                pair = c (c - 1) / 2 + c'

C = 1 gives 3K outputs, C = 3 gives 10K.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from acn.nn.likelihoods import Likelihood, to_network_input

# Bin width in units of the logistic scale below which a bin's mass is taken as the density at
# its centre times its width (section 2.1's fallback). The midpoint rule's relative error is at
# most width^2 / 24 here (|f''/f| <= 1 for the standard logistic), under 5e-8, i.e. below float32
# resolution, so the switch is seamless; above it the exact log-space difference is used. The
# exact form itself cannot underflow (it never leaves log space), but it degenerates as the width
# goes to zero (log(-expm1(-0)) = -inf), which is what the fallback covers.
NARROW_BIN = 1e-3


def params_per_component(channels: int) -> int:
    """Outputs per mixture component: 1 logit + C means + C log-scales + C(C-1)/2 coefficients.

    That is (C + 1)(C + 2) / 2: 3 for C = 1, 10 for C = 3.
    """
    return 1 + 2 * channels + channels * (channels - 1) // 2


def channels_from_params(num_params: int, components: int) -> int:
    """Invert :func:`params_per_component`: the C for which K (C + 1)(C + 2) / 2 = ``num_params``.

    Raises:
        ValueError: no channel count gives ``num_params`` outputs.
    """
    channels = 1
    while components * params_per_component(channels) < num_params:
        channels += 1
    if components * params_per_component(channels) != num_params:
        raise ValueError(
            f"{num_params} parameters per pixel fit no channel count for a mixture of "
            f"{components} components (expected {components} * (C + 1)(C + 2) / 2)"
        )
    return channels


def split_params(
    params: torch.Tensor, channels: int, components: int, min_log_scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut decoder outputs into the mixture's parts, in float32 (see the module doc for layout).

    Args:
        params: (B, P, H, W) decoder outputs, any float dtype.
        channels: C.
        components: K.
        min_log_scale: lower clamp of the log-scales (no gradient below it).

    Returns:
        logits (B, K, H, W); means (B, C, K, H, W); log_scales (B, C, K, H, W); coefficients
        (B, C(C-1)/2, K, H, W) in (-1, 1).
    """
    B, P, H, W = params.shape
    C, K = channels, components
    if K * params_per_component(C) != P:
        raise ValueError(
            f"params have {P} channels; {C} image channels and {K} components need "
            f"{K * params_per_component(C)}"
        )
    # float32 even for bf16 outputs: bin masses in the tails need more than 8 mantissa bits.
    p = params.float()
    logits = p[:, :K]
    means = p[:, K : K + C * K].reshape(B, C, K, H, W)
    log_scales = p[:, K + C * K : K + 2 * C * K].reshape(B, C, K, H, W)
    # Without a floor, a component can collapse onto one bin and its log-scale runs to -inf.
    log_scales = log_scales.clamp(min=min_log_scale)
    # tanh keeps each coefficient in (-1, 1): the shifted mean stays within reach of [-1, 1].
    coeffs = torch.tanh(p[:, K + 2 * C * K :]).reshape(B, C * (C - 1) // 2, K, H, W)
    return logits, means, log_scales, coeffs


def channel_mean(
    means: torch.Tensor, coeffs: torch.Tensor, x_net: torch.Tensor, channel: int
) -> torch.Tensor:
    """Mean of ``channel`` in every component, shifted by the channels before it (section 2.2).

    Args:
        means: (B, C, K, H, W) unshifted means mu.
        coeffs: (B, C(C-1)/2, K, H, W) coupling coefficients.
        x_net: (B, C, H, W) pixel values in [-1, 1]; only channels < ``channel`` are read.
        channel: c.

    Returns:
        (B, K, H, W) mu_kc + sum_{c' < c} coeff_kcc' x_c'.
    """
    mean = means[:, channel]
    first_pair = channel * (channel - 1) // 2
    for earlier in range(channel):
        mean = mean + coeffs[:, first_pair + earlier] * x_net[:, earlier].unsqueeze(1)
    return mean


def discretized_logistic_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, levels: int
) -> torch.Tensor:
    """log P(bin x) under a logistic(mean, exp(log_scale)) discretised to ``levels`` bins.

    Interior bins use the exact identity
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-(a - b))), a > b,
    evaluated in log space, which neither cancels nor underflows in either tail; bins narrower
    than ``NARROW_BIN`` scales use density x width at the centre instead.

    Args:
        x: integer levels in 0 .. levels - 1, broadcastable against ``mean``.
        mean: location in network scale [-1, 1] (any real value).
        log_scale: natural log of the logistic's scale, same shape as ``mean``.
        levels: number of bins L >= 2.

    Returns:
        log-probabilities in nats, the broadcast shape, float32 (or the inputs' float dtype).
    """
    half = 1.0 / (levels - 1)  # half a bin in network scale
    centre = x * (2.0 * half) - 1.0
    inv_scale = torch.exp(-log_scale)
    centred = (centre - mean) * inv_scale  # bin centre in standard-logistic units
    upper = centred + half * inv_scale
    lower = centred - half * inv_scale
    width = (2.0 * half) * inv_scale  # a - b, computed directly rather than by cancellation
    # The clamp only matters where the midpoint branch is taken; it keeps the unused branch
    # finite, since torch.where would otherwise let its inf / nan gradient through.
    exact = (
        F.logsigmoid(upper)
        + F.logsigmoid(-lower)
        + torch.log(-torch.expm1(-width.clamp(min=NARROW_BIN)))
    )
    # log density of the logistic at the centre, log(sigmoid(t) sigmoid(-t) / s), plus log width.
    midpoint = F.logsigmoid(centred) + F.logsigmoid(-centred) - log_scale + math.log(2.0 * half)
    interior = torch.where(width < NARROW_BIN, midpoint, exact)
    below = F.logsigmoid(upper)  # bin 0 holds everything below its upper edge
    above = F.logsigmoid(-lower)  # bin L - 1 holds everything above its lower edge
    return torch.where(x == 0, below, torch.where(x == levels - 1, above, interior))


def mixture_log_prob(
    params: torch.Tensor, x: torch.Tensor, levels: int, components: int, min_log_scale: float
) -> torch.Tensor:
    """log p(pixel) of every pixel under the mixture: logsumexp_k [log pi_k + sum_c log P_kc].

    Args:
        params: (B, P, H, W) decoder outputs.
        x: (B, C, H, W) integer levels.
        levels: L.
        components: K.
        min_log_scale: lower clamp of the log-scales.

    Returns:
        (B, H, W) nats per pixel (all channels together), float32.
    """
    C = x.shape[1]
    logits, means, log_scales, coeffs = split_params(params, C, components, min_log_scale)
    x_net = to_network_input(x, levels)  # (B, C, H, W)
    shifted = torch.stack([channel_mean(means, coeffs, x_net, c) for c in range(C)], dim=1)
    per_channel = discretized_logistic_log_prob(
        x.unsqueeze(2), shifted, log_scales, levels
    )  # (B, C, K, H, W)
    # The channels share the indicator k, so they multiply inside each component.
    joint = F.log_softmax(logits, dim=1) + per_channel.sum(dim=1)  # (B, K, H, W)
    return torch.logsumexp(joint, dim=1)


def sample_discretized_logistic(
    mean: torch.Tensor, log_scale: torch.Tensor, levels: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Draw bins from discretised logistics by inverse-CDF sampling and rounding to a bin.

    Rounding a continuous logistic draw to the nearest bin centre (clamped to the edge bins) has
    exactly the distribution that :func:`discretized_logistic_log_prob` scores.

    Args:
        mean: (...) location in network scale.
        log_scale: (...) natural log of the scale.
        levels: L.
        generator: the only source of randomness.

    Returns:
        (...) integer levels, long.
    """
    u = torch.rand(mean.shape, generator=generator, device=mean.device)
    u = u.clamp(min=torch.finfo(u.dtype).tiny)  # rand can return 0, whose logit is -inf
    y = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))  # network scale
    return torch.round((y + 1.0) * ((levels - 1) / 2.0)).clamp(0, levels - 1).long()


def sample_mixture(
    params: torch.Tensor,
    levels: int,
    components: int,
    min_log_scale: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw every pixel: one component per pixel, then the channels in order 0 .. C - 1.

    Args:
        params: (B, P, H, W) decoder outputs; C is read off P.
        levels: L.
        components: K.
        min_log_scale: lower clamp of the log-scales.
        generator: the only source of randomness (same state, same draw).

    Returns:
        (B, C, H, W) integer levels, long.
    """
    C = channels_from_params(params.shape[1], components)
    logits, means, log_scales, coeffs = split_params(params, C, components, min_log_scale)
    B, _, H, W = logits.shape
    # Gumbel-max: argmax_k (logit_k + Gumbel noise) is a draw from softmax(logits).
    u = torch.rand(logits.shape, generator=generator, device=logits.device)
    gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))
    k = (logits + gumbel).argmax(dim=1, keepdim=True)  # (B, 1, H, W)
    x = torch.zeros(B, C, H, W, dtype=torch.long, device=params.device)
    x_net = torch.zeros(B, C, H, W, device=params.device)
    for c in range(C):
        # Channel c's mean needs the values just drawn for channels < c (section 2.2).
        mean = channel_mean(means, coeffs, x_net, c).gather(1, k).squeeze(1)  # (B, H, W)
        log_scale = log_scales[:, c].gather(1, k).squeeze(1)  # (B, H, W)
        x[:, c] = sample_discretized_logistic(mean, log_scale, levels, generator)
        x_net[:, c] = to_network_input(x[:, c], levels)
    return x


class DiscretizedLogisticMixture(Likelihood):
    """Mixture of discretised logistics with linear coupling of a pixel's channels (PixelCNN++).

    Args:
        levels: L >= 2 values per channel (256 for 8-bit images).
        components: K mixture components per pixel.
        min_log_scale: floor of the log-scales (PixelCNN++ uses -7, i.e. scale ~ 1e-3, an
            eighth of an 8-bit bin).
    """

    name = "logistic_mixture"

    def __init__(self, levels: int, components: int = 10, min_log_scale: float = -7.0) -> None:
        if levels < 2:
            raise ValueError("a discretised logistic needs at least 2 levels")
        if components < 1:
            raise ValueError("a logistic mixture needs at least 1 component")
        super().__init__(levels)
        self.components = components
        self.min_log_scale = min_log_scale

    def num_params(self, channels: int) -> int:
        """P = K (C + 1)(C + 2) / 2 outputs per pixel; the module doc gives their layout."""
        return self.components * params_per_component(channels)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log r(x|z) summed over pixels and channels.

        Args:
            params: (B, P, H, W) decoder outputs, P = ``num_params(C)``; bf16 is computed in
                float32.
            x: (B, C, H, W) integer levels.

        Returns:
            (B,) nats per image, float32.
        """
        per_pixel = mixture_log_prob(
            params, x, self.levels, self.components, self.min_log_scale
        )  # (B, H, W)
        return per_pixel.flatten(1).sum(dim=1)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw (B, C, H, W) long levels from ``params`` (B, P, H, W), C read off P."""
        return sample_mixture(params, self.levels, self.components, self.min_log_scale, generator)
