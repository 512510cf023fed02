"""The integer PixelCNN decoded pixel by pixel: a row's vertical stacks in torch, each pixel's
horizontal stacks in numpy.

Decoding is sequential: every layer at a pixel waits for the layer below, and the next pixel for
this one's value, so a pixel of B images is some seventy small operations on (B, channels)
rows. At the batches a file's segments give (tens of images), torch spends about 10 us
dispatching each, numpy about 1-2: the per-pixel maps run in numpy (:meth:`IntLinear.rows`,
:meth:`Table.take`), once per row the vertical stacks run in torch on the model's device. Both
compute the same integers as the teacher-forced pass (:meth:`IntPixelCNN.params`), so which
library adds them up does not matter: every sum is exact (:mod:`acn.codec.intnet`).

Layouts are chosen so each pixel's reads are contiguous: the horizontal inputs as
(B, columns, C), read through the window's matrix in (column, channel) order; the vertical
stack's share and the code's conditioning as (columns, B, 2C).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from acn.codec.intmath import ACT, sigmoid_table, tanh_table
from acn.codec.intnet import IntPixelCNN, clip_act_rows, gate, input_units

# (params (B, P) in activation units, row, column) -> the pixel's levels (B, C), integers.
Chooser = Callable[[np.ndarray, int, int], np.ndarray]


def decode_pixels(
    net: IntPixelCNN, z: torch.Tensor | None, batch: int, choose: Chooser
) -> torch.Tensor:
    """Images (B, C, H, W) whose pixels are ``choose(params, row, col)``, raster order,
    computing per pixel one position per layer and per row one row per layer."""
    C, H, W = net.image_shape
    device = z.device if z is not None else torch.device("cpu")
    caches = [
        _RowCache(layer, cond, batch, (H, W), device)
        for layer, cond in zip(net.layers, net.conditioning(z), strict=True)
    ]
    first, second = net.head  # 1x1 convolutions: one position each
    x = np.zeros((batch, C, H, W), dtype=np.int64)
    for row in range(H):
        if row > 0:  # row - 1 of every vertical stack, now that its pixels are known
            v = input_units(torch.from_numpy(x[:, :, row - 1]), net.levels).to(device)
            for cache in caches:
                cache.set_v(row - 1, v)
                v = cache.vertical_row(row - 1)
        for cache in caches:
            cache.start_row(row)
        for col in range(W):
            h = None
            for cache in caches:
                if h is not None:
                    cache.set_h(col, h)
                h = cache.horizontal(col)
            params = second.rows(np.maximum(first.rows(np.maximum(h, 0.0)), 0.0))  # (B, P)
            value = np.asarray(choose(params, row, col), dtype=np.int64).reshape(batch, C)
            x[:, :, row, col] = value
            caches[0].set_h(col, _units(value, net.levels))
    return torch.from_numpy(x)


def _units(x: np.ndarray, levels: int) -> np.ndarray:
    """:func:`acn.codec.intnet.input_units` on int64 arrays."""
    top = levels - 1
    return ((2 * x - top) * (2 << ACT) + top) // (2 * top)


def _gate(t: np.ndarray) -> np.ndarray:
    """:func:`acn.codec.intnet.gate` on (B, 2C) rows."""
    half = t.shape[1] // 2
    product = tanh_table().take(t[:, :half]) * sigmoid_table().take(t[:, half:])
    product += 2.0 ** (ACT - 1)
    product *= 2.0**-ACT
    return np.floor(product, out=product)


class _RowCache:
    """One layer's cached inputs while decoding: the vertical stack's padded input rows (torch,
    on the device), the current row's horizontal inputs and the vertical stack's share of it
    (numpy)."""

    def __init__(self, layer, cond, batch: int, size, device) -> None:
        self.layer, self.half = layer, layer.half
        cond_v, cond_h = cond
        (height, width), half = size, self.half
        out2, in_ch = layer.v_conv.weight.shape[:2]
        new = {"dtype": torch.float64, "device": device}
        self.v_in = torch.zeros(batch, in_ch, height + half, width + 2 * half, **new)
        self.h_in = np.zeros((batch, width + half, in_ch))
        self.cond_v = cond_v
        # (H or 1, W or 1, B, 2C): one position's conditioning is a contiguous (B, 2C) block
        self.cond_h = None if cond_h is None else _positions_first(cond_h)
        # The row above row 0 is the zero row shift_down inserts: v_to_h adds its bias alone.
        self.vh = _positions_first(layer.v_to_h(torch.zeros(batch, out2, 1, width, **new)))[0]
        self.cond_row = None

    def set_v(self, row: int, values: torch.Tensor) -> None:
        """A whole row (B, C, W) of this layer's vertical input."""
        half = self.half
        self.v_in[:, :, row + half, half : half + values.shape[2]] = values

    def vertical_row(self, row: int) -> torch.Tensor:
        """The vertical stack's output at ``row`` (B, C, W); keeps its share of the next row's
        horizontal stack."""
        window = self.v_in[:, :, row : row + self.half + 1]
        v_pre = self.layer.v_conv(window)  # (B, 2C, 1, W)
        self.vh = _positions_first(self.layer.v_to_h(v_pre))[0]
        if self.cond_v is not None:
            r = 0 if self.cond_v.shape[2] == 1 else row
            v_pre = v_pre + self.cond_v[:, :, r : r + 1]
        return gate(v_pre)[:, :, 0]

    def start_row(self, row: int) -> None:
        self.h_in.fill(0.0)  # the row's horizontal inputs start from the padding
        if self.cond_h is not None:
            self.cond_row = self.cond_h[0 if len(self.cond_h) == 1 else row]  # (W or 1, B, 2C)

    def set_h(self, col: int, values: np.ndarray) -> None:
        self.h_in[:, col + self.half] = values

    def horizontal(self, col: int) -> np.ndarray:
        """The layer's horizontal output at (row, col), (B, C): every map at one position."""
        layer, half = self.layer, self.half
        if layer.first and col == 0:  # mask A: column 0 sees nothing
            h_pre = self.vh[0].copy()
        else:
            start = col - 1 if layer.first else col
            window = self.h_in[:, start : start + half + 1]  # (B, half + 1, C)
            h_pre = layer.h_conv.rows(window.reshape(len(window), -1), channels_last=True)
            h_pre += self.vh[col]
        if self.cond_row is not None:
            h_pre += self.cond_row[0 if len(self.cond_row) == 1 else col]
        h_out = layer.h_out.rows(_gate(h_pre))  # (B, C)
        if not layer.first:
            h_out += self.h_in[:, col + half]
            clip_act_rows(h_out)
        return h_out


def _positions_first(t: torch.Tensor) -> np.ndarray:
    """(B, K, H, W) -> contiguous float64 (H, W, B, K) on the CPU."""
    return np.ascontiguousarray(t.permute(2, 3, 0, 1).cpu().numpy())
