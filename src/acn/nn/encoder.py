"""The encoder: a small VGG-style convnet mapping an image to its code c (the posterior mean).

No batch normalisation: a code must depend on its own image only, never on the rest of the
batch, because codes are stored in the bank and compared across batches and across time.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_SPATIAL = 4  # stop halving H and W once they reach this size


def downsampled_sizes(size: int, stages: int) -> list[int]:
    """Spatial size after each stage: halve (rounding up) while above :data:`MIN_SPATIAL`."""
    sizes = [size]
    for _ in range(stages):
        s = sizes[-1]
        sizes.append((s + 1) // 2 if s > MIN_SPATIAL else s)
    return sizes


class Encoder(nn.Module):
    """VGG-style stages of two 3x3 convolutions, each stage halving H and W down to 4x4.

    Args:
        in_channels: image channels C.
        image_size: (H, W).
        channels: width of each stage.
        code_dim: D.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        channels: tuple[int, ...],
        code_dim: int,
    ) -> None:
        super().__init__()
        hs = downsampled_sizes(image_size[0], len(channels))
        ws = downsampled_sizes(image_size[1], len(channels))
        layers: list[nn.Module] = []
        width = in_channels
        for i, out in enumerate(channels):
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU()]
            # A stride of 2 halves a side, 1 keeps it; the sides are independent (8x4 images
            # stop halving their width before their height).
            stride = (2 if hs[i + 1] < hs[i] else 1, 2 if ws[i + 1] < ws[i] else 1)
            layers += [nn.Conv2d(out, out, 3, stride=stride, padding=1), nn.ReLU()]
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width * hs[-1] * ws[-1], code_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) floats in [-1, 1] -> (B, D) codes."""
        return self.head(self.features(x).flatten(1))
