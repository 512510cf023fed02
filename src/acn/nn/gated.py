"""One gated layer of the PixelCNN's two stacks and the pure functions it is built from.

Causality without a blind spot comes from two stacks:
- the vertical stack sees the rows above and the current row (all columns), and is shifted down
  one row whenever it feeds the horizontal stack, so that the horizontal stack only ever receives
  rows strictly above;
- the horizontal stack sees the current row to the left; its first layer excludes the current
  pixel itself (mask "A"), later layers include their own position (mask "B"), which carries only
  information from strictly earlier pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shift_down(t: torch.Tensor) -> torch.Tensor:
    """Move every row one down (row 0 becomes zeros): row i then holds row i - 1."""
    return F.pad(t, (0, 0, 1, 0))[:, :, :-1, :]


def shift_right(t: torch.Tensor) -> torch.Tensor:
    """Move every column one right (column 0 becomes zeros)."""
    return F.pad(t, (1, 0, 0, 0))[:, :, :, :-1]


def gate(t: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a) * sigmoid(b) over the two halves of the channels."""
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer of both stacks.

    Args:
        in_channels: channels of the incoming stacks (the image's C for the first layer).
        channels: feature channels of this layer's outputs.
        kernel: odd kernel size k.
        first: mask "A" (exclude the current pixel) and no residual connection.
        code_dim: D for the global conditioning (0 for none).
        map_channels: channels of the spatial conditioning map (0 for none).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel: int,
        first: bool,
        code_dim: int,
        map_channels: int,
    ) -> None:
        super().__init__()
        self.first, self.half = first, kernel // 2
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (self.half + 1, kernel))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.half + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond_global = nn.Linear(code_dim, 4 * channels) if code_dim else None
        self.cond_map = nn.Conv2d(map_channels, 4 * channels, 1) if map_channels else None

    def forward(self, v, h, z=None, z_map=None):
        """v, h: (B, in_channels, H, W) -> (B, channels, H, W) each."""
        # Vertical: pad k//2 rows above and k//2 columns each side, none below: row i sees
        # rows i - k//2 .. i.
        v_pre = self.v_conv(F.pad(v, (self.half, self.half, self.half, 0)))  # (B, 2C, H, W)
        # Horizontal: pad k//2 columns on the left: column j sees j - k//2 .. j.
        h_pre = self.h_conv(F.pad(h, (self.half, 0, 0, 0)))  # (B, 2C, H, W)
        if self.first:
            h_pre = shift_right(h_pre)  # mask A: column j sees j - k//2 - 1 .. j - 1
        h_pre = h_pre + self.v_to_h(shift_down(v_pre))  # only rows strictly above reach h
        cond = 0
        if self.cond_global is not None and z is not None:
            cond = cond + self.cond_global(z)[:, :, None, None]  # (B, 4C, 1, 1)
        if self.cond_map is not None and z_map is not None:
            cond = cond + self.cond_map(z_map)  # (B, 4C, H, W)
        if torch.is_tensor(cond):
            cond_v, cond_h = cond.chunk(2, dim=1)
            v_pre, h_pre = v_pre + cond_v, h_pre + cond_h
        v_out = gate(v_pre)  # (B, C, H, W)
        h_out = self.h_out(gate(h_pre))  # (B, C, H, W)
        if not self.first:
            h_out = h_out + h  # residual on the horizontal stack
        return v_out, h_out
