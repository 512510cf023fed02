"""Decoders r(x|z): the interface, the z-to-feature-map trunk and the deconvolutional decoder.

A decoder maps (image, z) to per-pixel likelihood parameters. Autoregressive decoders read the
image (causally); the deconvolutional decoder ignores it, its pixels being conditionally
independent given z. The gated PixelCNN lives in :mod:`acn.nn.pixelcnn`.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from acn.nn.encoder import downsampled_sizes
from acn.nn.likelihoods import Likelihood, to_network_input


class Decoder(nn.Module):
    """Interface. Subclasses implement :meth:`params`.

    Args:
        likelihood: turns the decoder's outputs into log r(x|z) and samples.
        image_shape: (C, H, W).
    """

    autoregressive: bool = False

    def __init__(self, likelihood: Likelihood, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.likelihood = likelihood
        self.image_shape = tuple(image_shape)

    def params(self, x: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
        """Likelihood parameters (B, C * P, H, W) from the image (B, C, H, W) integer levels and
        the latent (B, D). Non-autoregressive decoders accept ``x=None``."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """log r(x|z), (B,) nats per image."""
        # The likelihood in float32 even when the network ran under bf16 autocast.
        return self.likelihood.log_prob(self.params(x, z).float(), x)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return to_network_input(x, self.likelihood.levels)

    def sampling_context(self, z: torch.Tensor | None):
        """What sampling can compute once from z instead of once per pixel (default: none)."""
        return None

    def params_up_to_row(self, x: torch.Tensor, z: torch.Tensor | None, row: int, context):
        """Parameters valid at least for rows 0..``row`` (default: the whole image)."""
        return self.params(x, z)

    @torch.no_grad()
    def sample(
        self,
        z: torch.Tensor | None,
        generator: torch.Generator | None = None,
        num: int | None = None,
        progress=None,
    ) -> torch.Tensor:
        """Draw x ~ r(x|z): (B, C, H, W) integer levels.

        An autoregressive decoder is run once per pixel in raster order, all B chains at once;
        ``progress`` (a callable taking the number of pixels done) reports how far it got.
        """
        batch = z.shape[0] if z is not None else num
        if batch is None:
            raise ValueError("give a latent z or the number of images to sample")
        device = next(self.parameters()).device
        if not self.autoregressive:
            return self.likelihood.sample(self.params(None, z), generator)
        C, H, W = self.image_shape
        x = torch.zeros(batch, C, H, W, dtype=torch.long, device=device)
        context = self.sampling_context(z)
        for i in range(H):
            for j in range(W):
                # Pixel (i, j) depends only on pixels before it, so its distribution is final
                # once everything before it has been drawn.
                params = self.params_up_to_row(x, z, i, context)  # (B, C * P, >= i + 1, W)
                draw = self.likelihood.sample(params[:, :, i : i + 1, j : j + 1], generator)
                x[:, :, i, j] = draw[:, :, 0, 0]
                if progress is not None:
                    progress(i * W + j + 1)
        return x


class LatentMap(nn.Module):
    """z (B, D) -> a spatial feature map (B, channels, H, W) by a linear layer and transposed
    convolutions that double the size back up the encoder's ladder of sizes."""

    def __init__(
        self, code_dim: int, image_size: tuple[int, int], channels: int, stages: int
    ) -> None:
        super().__init__()
        hs = downsampled_sizes(image_size[0], stages)[::-1]
        ws = downsampled_sizes(image_size[1], stages)[::-1]
        self.start = (channels, hs[0], ws[0])
        self.linear = nn.Linear(code_dim, channels * hs[0] * ws[0])
        layers: list[nn.Module] = []
        for (h0, h1), (w0, w1) in zip(pairwise(hs), pairwise(ws), strict=True):
            if (h1, w1) == (h0, w0):
                layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
                continue
            # Kernel 3, padding 1: stride 2 gives 2s - 1 (output_padding makes it 2s), stride 1
            # keeps s. Each side doubles or stays on its own.
            stride = (2 if h1 > h0 else 1, 2 if w1 > w0 else 1)
            pad = (h1 - (2 * h0 - 1) if h1 > h0 else 0, w1 - (2 * w0 - 1) if w1 > w0 else 0)
            layers += [
                nn.ConvTranspose2d(
                    channels, channels, 3, stride=stride, padding=1, output_padding=pad
                ),
                nn.ReLU(),
            ]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.linear(z)).view(-1, *self.start)  # (B, channels, h0, w0)
        return self.layers(h)  # (B, channels, H, W)


class DeconvDecoder(Decoder):
    """Conditionally independent pixels: z -> :class:`LatentMap` -> 1x1 convolutions -> params.

    Args:
        likelihood: the pixel likelihood.
        image_shape: (C, H, W).
        code_dim: D.
        channels: feature channels.
        stages: number of doublings (mirrors the encoder's stages).
    """

    def __init__(self, likelihood, image_shape, code_dim: int, channels: int, stages: int) -> None:
        super().__init__(likelihood, image_shape)
        C, H, W = image_shape
        self.trunk = LatentMap(code_dim, (H, W), channels, stages)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, likelihood.num_params(C), 1),
        )

    def params(self, x, z):
        if z is None:
            raise ValueError("the deconvolutional decoder needs a latent z")
        return self.head(self.trunk(z))
