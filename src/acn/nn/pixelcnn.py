"""The gated PixelCNN decoder (van den Oord et al., 2016), optionally conditioned on z.

A stack of :class:`~acn.nn.gated.GatedLayer` (vertical and horizontal stacks, no blind spot)
and a 1x1 head that gives the likelihood's parameters for every pixel. The latent enters every
layer twice: as a global bias (linear in z) and through a z-derived spatial feature map (so
position-specific content is cheap to express). Without a latent the same network is the
decoder-only model (the paper's "Gated PixelCNN (ours)" row).

Training and scoring run the network over the whole image at once (teacher forcing); sampling
runs :class:`~acn.nn.incremental.IncrementalPixelCNN`, which computes only what each new pixel
needs and gives the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from acn.nn.decoder import Decoder, LatentMap
from acn.nn.gated import GatedLayer
from acn.nn.incremental import IncrementalPixelCNN


def layer_kernels(layers: int, kernel: int, first_kernel: int | None = None) -> list[int]:
    """Each gated layer's kernel size, the first layer's first (None or 0: ``kernel``)."""
    return [first_kernel or kernel] + [kernel] * (layers - 1)


def receptive_field(kernels: list[int]) -> tuple[int, int]:
    """How far the output at a pixel sees, for gated layers of these kernel sizes (first first):
    ``(rows, columns)``: in each of the ``rows`` rows above, the pixels up to ``columns`` to
    either side of its column; in its own row, the ``columns + 1`` pixels to its left.

    Each layer's vertical stack reaches k//2 rows further up and k//2 columns further to each
    side; the horizontal stack reads it shifted one row down, and its first layer excludes the
    current pixel (mask A), hence the extra row and the extra column on the left.
    """
    reach = sum(k // 2 for k in kernels)
    return reach + 1, reach


def sees_whole_image(kernels: list[int], height: int, width: int) -> bool:
    """Whether every pixel's distribution can depend on every pixel before it."""
    rows, columns = receptive_field(kernels)
    return rows >= height - 1 and columns >= width - 1


class GatedPixelCNN(Decoder):
    """Gated PixelCNN over integer-level images, conditioned on z when ``code_dim`` > 0.

    Args:
        likelihood: the pixel likelihood (its parameters are the network's outputs).
        image_shape: (C, H, W).
        code_dim: D, or 0 for no latent (decoder-only model).
        channels: feature channels of the stacks.
        layers: number of gated layers.
        kernel: odd kernel size.
        map_channels: channels of the z-derived spatial map.
        stages: doublings of the spatial map (mirrors the encoder).
        first_kernel: odd kernel size of the first layer (None or 0: ``kernel``).
    """

    autoregressive = True

    def __init__(
        self,
        likelihood,
        image_shape,
        code_dim: int,
        channels: int = 64,
        layers: int = 8,
        kernel: int = 3,
        map_channels: int = 16,
        stages: int = 2,
        first_kernel: int | None = None,
    ) -> None:
        super().__init__(likelihood, image_shape)
        C, H, W = image_shape
        self.code_dim = code_dim
        self.latent_map = LatentMap(code_dim, (H, W), map_channels, stages) if code_dim else None
        mc = map_channels if code_dim else 0
        self.kernels = layer_kernels(layers, kernel, first_kernel)
        self.layers = nn.ModuleList(
            GatedLayer(C if i == 0 else channels, channels, k, i == 0, code_dim, mc)
            for i, k in enumerate(self.kernels)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, likelihood.num_params(C), 1),
        )

    def params(self, x, z):
        if x is None:
            raise ValueError("the PixelCNN reads the image: give x")
        return self._params(x, z, self.sampling_context(z))

    def sampling_context(self, z):
        if self.code_dim and z is None:
            raise ValueError("this PixelCNN is conditioned on z: give z")
        # The z-derived map does not change while an image is sampled: compute it once.
        return self.latent_map(z) if self.latent_map is not None else None  # (B, Cz, H, W)

    @torch.no_grad()
    def sample(self, z, generator=None, num=None, progress=None, cached: bool = True):
        """Draw x ~ r(x|z) pixel by pixel (see :meth:`Decoder.sample`). ``cached`` (default)
        decodes incrementally, a few positions per layer and pixel; ``cached=False`` runs the
        network over the rows so far for every pixel (the reference the cache is checked
        against, and what the benchmark compares it with)."""
        if not cached:
            return super().sample(z, generator, num, progress)
        return IncrementalPixelCNN(self, z, num).sample(generator, progress)

    def params_up_to_row(self, x, z, row, context):
        # Every layer pads only above and to the left, so rows 0..row of the output depend only
        # on rows 0..row of the input and of the map: the rows below need not be computed.
        z_map = context[:, :, : row + 1] if context is not None else None
        return self._params(x[:, :, : row + 1], z, z_map)

    def _params(self, x, z, z_map):
        z = z if self.code_dim else None
        v = h = self._inputs(x)  # (B, C, H', W) in [-1, 1]
        for layer in self.layers:
            v, h = layer(v, h, z, z_map)
        return self.head(h)  # (B, C * P, H', W)
