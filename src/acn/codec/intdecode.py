"""The integer PixelCNN decoded pixel by pixel, in numpy on the CPU.

Decoding is sequential: every layer at a pixel waits for the layer below, and the next pixel for
this one's value, so a pixel of B images is about a hundred small operations on (B, channels)
rows, and each row of the image a few larger ones for the vertical stacks. At the batches a
file's segments give (tens of images) torch spends about 10 us dispatching an operation and
numpy 1 to 2, so the decoder runs in numpy (:meth:`IntLinear.rows`, :meth:`Table.take`) with one
BLAS thread; only the latent map is computed in torch, once per step, on the model's device.
Every sum is exact (:mod:`acn.codec.intnet`), so numpy's BLAS computes the integers torch's
convolutions compute in the encoder's teacher-forced pass (:meth:`IntPixelCNN.params`), on any
machine.

Arrays are laid out so that each read is contiguous: the vertical stacks' inputs as
(rows, columns, B, C), the current row's horizontal inputs as (B, columns, C), and the vertical
stacks' share of the row, the code's added, as (columns, B, 2C); windows are read through the
layers' matrices in (row, column, channel) order. The code's conditioning is computed a row at
a time (whole-image maps for the 350 images of a 60,000-image step would take over a gigabyte).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

from acn.codec.intmath import ACT, sigmoid_table, tanh_table
from acn.codec.intnet import IntPixelCNN, clip_act_rows

# (params (B, P) in activation units, row, column) -> the pixel's levels (B, C), integers.
Chooser = Callable[[np.ndarray, int, int], np.ndarray]


def decode_pixels(
    net: IntPixelCNN, z: torch.Tensor | None, batch: int, choose: Chooser
) -> torch.Tensor:
    """Images (B, C, H, W) whose pixels are ``choose(params, row, col)``, raster order,
    computing per pixel one position per layer and per row one row per layer."""
    C, H, W = net.image_shape
    z, z_map = net.code_inputs(z)
    code = None if z is None else z.cpu().numpy()
    positions = None if z_map is None else np.ascontiguousarray(_rows_first(z_map))
    x = np.zeros((batch, C, H, W), dtype=np.int64)
    # Sequential small products: a second BLAS thread only waits (as torch's does).
    with threadpool_limits(limits=1, user_api="blas"):
        caches = [_RowCache(layer, code, positions, batch, (H, W)) for layer in net.layers]
        first, second = net.head  # 1x1 convolutions: one position each
        for row in range(H):
            if row > 0:  # row - 1 of every vertical stack, now that its pixels are known
                v = _units(x[:, :, row - 1].transpose(2, 0, 1), net.levels)  # (W, B, C)
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
    """:func:`acn.codec.intnet.input_units` on int64 arrays (float64 out)."""
    top = levels - 1
    return (((2 * x - top) * (2 << ACT) + top) // (2 * top)).astype(np.float64)


def _gate(t: np.ndarray) -> np.ndarray:
    """:func:`acn.codec.intnet.gate` on (..., 2C) rows."""
    half = t.shape[-1] // 2
    product = tanh_table().take(t[..., :half]) * sigmoid_table().take(t[..., half:])
    product += 2.0 ** (ACT - 1)
    product *= 2.0**-ACT
    return np.floor(product, out=product)


def _rows_first(t: torch.Tensor) -> np.ndarray:
    """(B, K, H, W) -> (H, W, B, K) float64 on the CPU (a view where it can be)."""
    return t.permute(2, 3, 0, 1).cpu().numpy()


class _RowCache:
    """One gated layer's state while decoding: its vertical stack's padded input rows, the
    current row's horizontal inputs, the vertical stack's share of that row with the code's
    added, and the code's share of the vertical stack's row."""

    def __init__(self, layer, code, positions, batch: int, size) -> None:
        self.layer, self.half = layer, layer.half
        (height, width), half = size, self.half
        out2, in_ch, self.kh, self.kw = layer.v_conv.weight.shape
        self.batch, self.width = batch, width
        self.v_in = np.zeros((height + half, width + 2 * half, batch, in_ch))
        self.h_in = np.zeros((batch, width + half, in_ch))
        # What the code adds everywhere (B, 4C), and the latent map whose rows add the rest.
        use_code = code is not None and layer.cond_global is not None
        self.code = layer.cond_global.rows(code) if use_code else None
        use_map = positions is not None and layer.cond_map is not None
        self.positions = positions if use_map else None
        # The row above row 0 is the zero row shift_down inserts: v_to_h adds its bias alone.
        self.vh = layer.v_to_h.rows(np.zeros((width * batch, out2))).reshape(width, batch, -1)
        self.vh_row, self.cond_v = self.vh, None

    def _code_row(self, row: int) -> np.ndarray | None:
        """What the code adds at every position of ``row``: (W or 1, B, 4C), or None."""
        out = None if self.code is None else self.code[None]
        if self.positions is not None:
            at = self.positions[row]  # (W, B, M)
            m = self.layer.cond_map.rows(at.reshape(-1, at.shape[-1])).reshape(*at.shape[:2], -1)
            out = m if out is None else m + out
        return out

    def set_v(self, row: int, values: np.ndarray) -> None:
        """A whole row (W, B, C) of this layer's vertical input."""
        half = self.half
        self.v_in[row + half, half : half + values.shape[0]] = values

    def vertical_row(self, row: int) -> np.ndarray:
        """The vertical stack's output at ``row`` (W, B, C), after :meth:`start_row` of that
        row; keeps its share of the next row's horizontal stack."""
        window = self.v_in[row : row + self.kh]  # (kh, W + kw - 1, B, C)
        patches = sliding_window_view(window, self.kw, axis=1)  # (kh, W, B, C, kw)
        patches = patches.transpose(1, 2, 0, 4, 3).reshape(self.width * self.batch, -1)
        v_pre = self.layer.v_conv.rows(patches, channels_last=True)  # (W B, 2C)
        self.vh = self.layer.v_to_h.rows(v_pre).reshape(self.width, self.batch, -1)
        v_pre = v_pre.reshape(self.width, self.batch, -1)
        if self.cond_v is not None:
            v_pre += self.cond_v
        return _gate(v_pre)

    def start_row(self, row: int) -> None:
        self.h_in.fill(0.0)  # the row's horizontal inputs start from the padding
        cond = self._code_row(row)
        if cond is None:
            self.vh_row, self.cond_v = self.vh, None
        else:  # the code's share: the vertical stack's half now, the horizontal's every pixel
            both = cond.shape[-1] // 2
            self.vh_row, self.cond_v = self.vh + cond[..., both:], cond[..., :both]

    def set_h(self, col: int, values: np.ndarray) -> None:
        self.h_in[:, col + self.half] = values

    def horizontal(self, col: int) -> np.ndarray:
        """The layer's horizontal output at (row, col), (B, C): every map at one position."""
        layer, half = self.layer, self.half
        if layer.first and col == 0:  # mask A: column 0 sees nothing
            h_pre = self.vh_row[0].copy()
        else:
            start = col - 1 if layer.first else col
            window = self.h_in[:, start : start + half + 1]  # (B, half + 1, C)
            h_pre = layer.h_conv.rows(window.reshape(self.batch, -1), channels_last=True)
            h_pre += self.vh_row[col]
        h_out = layer.h_out.rows(_gate(h_pre))  # (B, C)
        if not layer.first:
            h_out += self.h_in[:, col + half]
            clip_act_rows(h_out)
        return h_out
