"""Discrete pixel likelihoods r(x|z) for decoders.

A decoder emits, per pixel, ``params_per_channel`` numbers for each image channel; a likelihood
turns them into a log-probability of the integer-valued image and samples from it. Images are
integer tensors of levels ``0 .. levels - 1`` (binary images: levels = 2). New likelihoods (the
8-bit discretised logistic mixture, say) plug in by subclassing :class:`Likelihood`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Likelihood:
    """Interface: a per-pixel discrete distribution parameterised by decoder outputs.

    Args:
        levels: number of values a pixel can take.
    """

    params_per_channel: int
    name: str

    def __init__(self, levels: int) -> None:
        self.levels = levels

    def num_params(self, channels: int) -> int:
        """Output channels a decoder must produce for an image with ``channels`` channels."""
        return channels * self.params_per_channel

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log r(x|z) summed over pixels, in nats.

        Args:
            params: (B, C * P, H, W) decoder outputs.
            x: (B, C, H, W) integer levels.

        Returns:
            (B,) nats per image.
        """
        raise NotImplementedError

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw an image (B, C, H, W) of integer levels from ``params`` (B, C * P, H, W)."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Independent Bernoulli per pixel, for binarized images. One logit per channel."""

    params_per_channel = 1
    name = "bernoulli"

    def __init__(self, levels: int = 2) -> None:
        if levels != 2:
            raise ValueError("a Bernoulli likelihood needs binary images (levels=2)")
        super().__init__(levels)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = params.float()
        nll = F.binary_cross_entropy_with_logits(logits, x.float(), reduction="none")
        return -nll.flatten(1).sum(dim=1)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        probs = torch.sigmoid(params.float())
        return torch.bernoulli(probs, generator=generator).long()


class Categorical(Likelihood):
    """A softmax over the ``levels`` grey values of every pixel and channel."""

    name = "categorical"

    def __init__(self, levels: int) -> None:
        if levels < 2:
            raise ValueError("a categorical likelihood needs at least 2 levels")
        super().__init__(levels)
        self.params_per_channel = levels

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        B, CP, H, W = params.shape
        return params.float().reshape(B, CP // self.levels, self.levels, H, W)  # (B, C, L, H, W)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(self._logits(params), dim=2)  # (B, C, L, H, W)
        picked = log_p.gather(2, x.long().unsqueeze(2)).squeeze(2)  # (B, C, H, W)
        return picked.flatten(1).sum(dim=1)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        logits = self._logits(params)  # (B, C, L, H, W)
        probs = F.softmax(logits.movedim(2, -1), dim=-1)  # (B, C, H, W, L)
        flat = probs.reshape(-1, self.levels)
        draws = torch.multinomial(flat, 1, generator=generator)
        return draws.reshape(probs.shape[:-1])


def to_network_input(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer levels (B, C, H, W) -> floats in [-1, 1], what the networks read."""
    return x.float() * (2.0 / (levels - 1)) - 1.0
