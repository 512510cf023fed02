"""Pixels on the stack: the decoder's per-pixel parameters as the coder's distributions.

The probabilities of one pixel are computed from that pixel's parameters (B, C * P) by one
function, called with the same shapes when encoding (the parameters of a teacher-forced pass,
pixel by pixel) and when decoding (the parameters the cached decoder has just produced): the
same floats in, the same 24-bit probabilities out. Pixels are coded in raster order, the B images
of a step side by side, channels in order within a pixel.
"""

from __future__ import annotations

import numpy as np
import torch

from acn.codec.ans import Stack
from acn.errors import CodecError
from acn.nn.likelihoods import Bernoulli, Categorical, Likelihood


class PixelCoder:
    """Interface: one pixel's distribution from its parameters, for push and pop."""

    def __init__(self, likelihood: Likelihood, channels: int) -> None:
        self.likelihood, self.channels = likelihood, channels

    def distribution(self, params: torch.Tensor) -> np.ndarray:
        """(B, C * P) parameters -> the coder's rows for the B * C symbols of one pixel."""
        raise NotImplementedError

    def push(self, stack: Stack, values: np.ndarray, dist: np.ndarray) -> None:
        raise NotImplementedError

    def pop(self, stack: Stack, dist: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def push_image(self, stack: Stack, params: torch.Tensor, x: torch.Tensor) -> None:
        """Push images x (B, C, H, W) under their teacher-forced parameters (B, C * P, H, W),
        so that pops in raster order give them back pixel by pixel."""
        B, C, H, W = x.shape
        values, dists = [], []
        for row in range(H):
            for col in range(W):
                dists.append(self.distribution(params[:, :, row, col]))
                values.append(x[:, :, row, col].reshape(-1).cpu().numpy())
        self.push(stack, np.concatenate(values), np.concatenate(dists))

    def pop_pixel(self, stack: Stack, params: torch.Tensor) -> torch.Tensor:
        """Pop one pixel of B images from its parameters (B, C * P, 1, 1) -> (B, C) levels."""
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


def pixel_coder(likelihood: Likelihood, channels: int) -> PixelCoder:
    """The coder of a decoder's likelihood."""
    if isinstance(likelihood, Bernoulli):
        return BernoulliPixels(likelihood, channels)
    if isinstance(likelihood, Categorical):
        return CategoricalPixels(likelihood, channels)
    raise CodecError(
        f"the codec does not code pixels of the {likelihood.name} likelihood yet "
        "(it codes bernoulli and categorical)"
    )
