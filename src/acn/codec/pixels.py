"""Pixels on the stack: the decoder's per-pixel parameters as the coder's distributions.

The probabilities of one pixel are computed from that pixel's parameters (B, P) by one function,
called with the same shapes when encoding (the parameters of a teacher-forced pass, pixel by
pixel) and when decoding (the parameters the cached decoder has just produced): the same floats
in, the same 24-bit probabilities out. Pixels are coded in raster order, the B images of a step
side by side.

Bernoulli and categorical channels are independent given the parameters, so a pixel's B * C
symbols are one pop (rows image by image, channels in order within an image). The discretised
logistic mixture's channels share the mixture indicator and shift each other's means, so they
are coded one channel at a time under the exact conditional P(x_c | x_<c): a pop of channel 0
for the B images, then channel 1, ... (:class:`LogisticMixturePixels`).
"""

from __future__ import annotations

import numpy as np
import torch

from acn.codec.ans import Stack
from acn.errors import CodecError
from acn.nn.likelihoods import Bernoulli, Categorical, Likelihood
from acn.nn.logistic import DiscretizedLogisticMixture


class PixelCoder:
    """Interface: one pixel's distribution from its parameters, for push and pop.

    A coder whose channels are independent given the parameters gives :meth:`distribution`,
    :meth:`push` and :meth:`pop`; one whose channels depend on each other overrides
    :meth:`pixel_rows` and :meth:`pop_pixel` instead.
    """

    def __init__(self, likelihood: Likelihood, channels: int) -> None:
        self.likelihood, self.channels = likelihood, channels

    def distribution(self, params: torch.Tensor) -> np.ndarray:
        """(B, C * P) parameters -> the coder's rows for the B * C symbols of one pixel."""
        raise NotImplementedError

    def push(self, stack: Stack, values: np.ndarray, dist: np.ndarray) -> None:
        raise NotImplementedError

    def pop(self, stack: Stack, dist: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def pixel_rows(self, params: torch.Tensor, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pixel's symbols and their rows, in the order :meth:`pop_pixel` pops them.

        Args:
            params: (B, P) the pixel's parameters.
            values: (B, C) its levels.
        """
        return values.reshape(-1), self.distribution(params)

    def push_image(self, stack: Stack, params: torch.Tensor, x: torch.Tensor) -> None:
        """Push images x (B, C, H, W) under their teacher-forced parameters (B, P, H, W),
        so that pops in raster order give them back pixel by pixel."""
        B, C, H, W = x.shape
        levels = x.cpu().numpy()
        values, dists = [], []
        for row in range(H):
            for col in range(W):
                symbols, rows = self.pixel_rows(params[:, :, row, col], levels[:, :, row, col])
                values.append(symbols)
                dists.append(rows)
        # One push for the whole batch: its first symbol is the first one popped.
        self.push(stack, np.concatenate(values), np.concatenate(dists))

    def pop_pixel(self, stack: Stack, params: torch.Tensor) -> torch.Tensor:
        """Pop one pixel of B images from its parameters (B, P, 1, 1) -> (B, C) levels."""
        B = params.shape[0]
        values = self.pop(stack, self.distribution(params[:, :, 0, 0]))
        return torch.from_numpy(values.astype(np.int64)).reshape(B, self.channels)


class BernoulliPixels(PixelCoder):
    def distribution(self, params):
        logits = params.detach().cpu().double().numpy().reshape(-1)
        return 1.0 / (1.0 + np.exp(-logits))  # P(pixel = 1)

    def push(self, stack, values, dist):
        stack.push_bernoulli(values, dist)

    def pop(self, stack, dist):
        return stack.pop_bernoulli(dist)


class CategoricalPixels(PixelCoder):
    def distribution(self, params):
        levels = self.likelihood.levels
        logits = params.detach().cpu().double().numpy().reshape(-1, levels)  # (B * C, L)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def push(self, stack, values, dist):
        stack.push_categorical(values, dist)

    def pop(self, stack, dist):
        return stack.pop_categorical(dist)


class LogisticMixturePixels(PixelCoder):
    """PixelCNN++'s mixture, one channel at a time (the layout: :mod:`acn.nn.logistic`).

    P(x_0) = sum_k pi_k P_k0(x_0) and P(x_c | x_<c) = sum_k w_k P_kc(x_c), with the posterior
    weights w_k proportional to pi_k prod_{c' < c} P_kc'(x_c') and P_kc's mean shifted by the
    channels before c: the product over c is the likelihood's joint, so the pixel costs its
    -log r(x|z). Every table is computed in float64 numpy by :meth:`channel_table`, for push and
    pop alike.
    """

    likelihood: DiscretizedLogisticMixture

    def pixel_rows(self, params, values):
        parts = self._parts(params)
        tables = [self.channel_table(parts, values[:, :c]) for c in range(self.channels)]
        # Channel-major: pop_pixel pops channel 0 of the B images first.
        return values.T.reshape(-1), np.concatenate(tables)

    def push(self, stack, values, dist):
        stack.push_categorical(values, dist)

    def pop_pixel(self, stack, params):
        parts = self._parts(params[:, :, 0, 0])
        values = np.zeros((params.shape[0], 0), dtype=np.int64)
        for _ in range(self.channels):  # channel c reads the c levels popped before it
            popped = stack.pop_categorical(self.channel_table(parts, values))
            values = np.concatenate([values, popped.astype(np.int64)[:, None]], axis=1)
        return torch.from_numpy(values)

    def _parts(self, params: torch.Tensor) -> tuple[np.ndarray, ...]:
        """(B, P) outputs -> log pi (B, K), means and log-scales (B, C, K), coefficients
        (B, C(C-1)/2, K), float64, as :func:`acn.nn.logistic.split_params` cuts them."""
        p = np.ascontiguousarray(params.detach().cpu().double().numpy())
        B, C, K = p.shape[0], self.channels, self.likelihood.components
        logits = p[:, :K]
        log_pi = logits - logits.max(axis=1, keepdims=True)
        log_pi = log_pi - np.log(np.exp(log_pi).sum(axis=1, keepdims=True))
        means = p[:, K : K + C * K].reshape(B, C, K)
        log_scales = np.maximum(p[:, K + C * K : K + 2 * C * K], self.likelihood.min_log_scale)
        coeffs = np.tanh(p[:, K + 2 * C * K :]).reshape(B, C * (C - 1) // 2, K)
        return log_pi, means, log_scales.reshape(B, C, K), coeffs

    def channel_table(self, parts: tuple[np.ndarray, ...], earlier: np.ndarray) -> np.ndarray:
        """(B, L) probabilities of channel c given the levels ``earlier`` (B, c) of the channels
        before it."""
        log_pi, means, log_scales, coeffs = parts
        levels, c = self.likelihood.levels, earlier.shape[1]
        # The same layout on both sides (push passes a view of the image, pop its own array).
        earlier = np.ascontiguousarray(earlier, dtype=np.int64)
        x_net = earlier.astype(np.float64) * (2.0 / (levels - 1)) - 1.0
        log_w = log_pi
        for prev in range(c):  # what the channels seen so far say about the component
            mean = _shifted_mean(means, coeffs, x_net, prev)
            log_w = log_w + _log_bin_mass(earlier[:, prev, None], mean, log_scales[:, prev], levels)
        with np.errstate(invalid="ignore"):  # every component at -inf: NaN, made uniform below
            w = np.exp(log_w - log_w.max(axis=1, keepdims=True))  # (B, K)
            w = w / w.sum(axis=1, keepdims=True)
        mean = _shifted_mean(means, coeffs, x_net, c)[:, :, None]
        bins = np.arange(levels)
        masses = np.exp(_log_bin_mass(bins, mean, log_scales[:, c, :, None], levels))  # (B, K, L)
        return _normalised((w[:, :, None] * masses).sum(axis=1))


def _shifted_mean(means, coeffs, x_net, channel: int) -> np.ndarray:
    """(B, K) mean of ``channel``, shifted by the (network-scale) channels before it."""
    mean = means[:, channel]
    first_pair = channel * (channel - 1) // 2
    for prev in range(channel):
        mean = mean + coeffs[:, first_pair + prev] * x_net[:, prev, None]
    return mean


def _log_sigmoid(t: np.ndarray) -> np.ndarray:
    # Exact in both tails, 0 / -inf at +-inf, and twice as fast as np.logaddexp.
    return np.minimum(t, 0.0) - np.log1p(np.exp(-np.abs(t)))


def _log_bin_mass(bins, mean, log_scale, levels: int) -> np.ndarray:
    """log P(bin) of logistics discretised to ``levels`` bins, elementwise (broadcast).

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-(a - b))) in log space: neither
    tail cancels or underflows, where a plain CDF difference rounds to 0 above the mean. The
    edge bins stretch to -inf / +inf, for which the same identity gives sigmoid(a) and
    sigmoid(-b).
    """
    half = 1.0 / (levels - 1)
    inv_scale = np.exp(-log_scale)
    centred = (bins * (2.0 * half) - 1.0 - mean) * inv_scale
    upper = np.where(bins == levels - 1, np.inf, centred + half * inv_scale)
    lower = np.where(bins == 0, -np.inf, centred - half * inv_scale)
    # a - b is the same for every interior bin: one log(1 - exp(-(a - b))) per logistic.
    with np.errstate(divide="ignore"):  # a width that underflows to 0: mass 0, log -inf
        log_width = np.log(-np.expm1(-(2.0 * half) * inv_scale))
    edge = (bins == 0) | (bins == levels - 1)
    return _log_sigmoid(upper) + _log_sigmoid(-lower) + np.where(edge, 0.0, log_width)


def _normalised(table: np.ndarray) -> np.ndarray:
    """Rows summing to 1; a row of NaN or no mass (parameters out of range) becomes uniform,
    so the coder never sees NaN and both sides still agree."""
    table = np.where(np.isfinite(table), table, 0.0)
    total = table.sum(axis=1, keepdims=True)
    uniform = np.full_like(table, 1.0 / table.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, table / total, uniform)


def pixel_coder(likelihood: Likelihood, channels: int) -> PixelCoder:
    """The coder of a decoder's likelihood."""
    if isinstance(likelihood, Bernoulli):
        return BernoulliPixels(likelihood, channels)
    if isinstance(likelihood, Categorical):
        return CategoricalPixels(likelihood, channels)
    if isinstance(likelihood, DiscretizedLogisticMixture):
        return LogisticMixturePixels(likelihood, channels)
    raise CodecError(
        f"the codec does not code pixels of the {likelihood.name} likelihood "
        "(it codes bernoulli, categorical and logistic_mixture)"
    )
