"""Cached incremental decoding of the gated PixelCNN: one pixel costs a few positions per layer.

A full pass of :class:`~acn.nn.pixelcnn.GatedPixelCNN` computes every layer over the whole image;
sampling runs it once per pixel. Following Ramachandran et al. (2017, "Fast Generation for
Convolutional Autoregressive Models"), this decoder computes only what the next pixel needs and
keeps the rest:

- the vertical stack of row i depends on rows i - k//2 .. i of the layer below, so once row i of
  the image is drawn, row i of every layer's vertical stack is computed once (a row of W
  positions per layer) and cached;
- the horizontal stack at (i, j) depends on columns j - k//2 .. j of row i of the layer below and
  on the vertical stack of row i - 1 at column j, so a pixel costs one position per layer.

Every weight is the full network's, applied to the same inputs (including the zero padding, and
the bias-free zero column of the first layer's mask-A shift), so each pixel's parameters equal
those of one teacher-forced pass over the finished image up to float rounding:
:meth:`IncrementalPixelCNN.teacher_forced_params` runs this very path with the pixels given, which
is how the tests, and a codec that must compute the same probabilities when encoding and
decoding, use it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from acn.nn.decoder import Decoder
from acn.nn.gated import GatedLayer, gate
from acn.nn.likelihoods import to_network_input

# (params (B, C * P, 1, 1), row, column) -> the pixel's values (B, C), integer levels.
Chooser = Callable[[torch.Tensor, int, int], torch.Tensor]


def _flat(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution's weight as a (out, in * kh * kw) matrix, and its bias (out,)."""
    return conv.weight.reshape(conv.out_channels, -1), conv.bias


class _LayerCache:
    """One gated layer's weights as matrices, its conditioning, and its cached activations.

    Attributes:
        v_in: (B, in, H + k//2, W + 2 k//2) the vertical stack's input, zero-padded as the full
            pass pads it (k//2 rows above, k//2 columns each side); row r lives at r + k//2.
        h_in: (B, in, W + k//2) the horizontal stack's input for the current row, zero-padded
            k//2 columns on the left; column c lives at c + k//2.
        vh: (B, 2C, W) what the vertical stack of the row above adds to the horizontal stack.
    """

    def __init__(self, layer: GatedLayer, in_channels: int, shape, z, z_map, like) -> None:
        B, H, W = shape
        self.layer, self.half, self.first = layer, layer.half, layer.first
        self.v_w, self.v_b = layer.v_conv.weight, layer.v_conv.bias
        self.h_w, self.h_b = _flat(layer.h_conv)
        self.vh_w, self.vh_b = _flat(layer.v_to_h)
        self.out_w, self.out_b = _flat(layer.h_out)
        cond = None  # (B, 4C, H, W) or (B, 4C, 1, 1), as the full pass sums it
        if layer.cond_global is not None and z is not None:
            cond = layer.cond_global(z)[:, :, None, None]
        if layer.cond_map is not None and z_map is not None:
            cond = layer.cond_map(z_map) if cond is None else cond + layer.cond_map(z_map)
        self.cond_v, self.cond_h = cond.chunk(2, dim=1) if cond is not None else (None, None)
        half = self.half
        self.v_in = like.new_zeros(B, in_channels, H + half, W + 2 * half)
        self.h_in = like.new_zeros(B, in_channels, W + half)
        # The row above row 0 is the zero row shift_down inserts: v_to_h adds its bias alone.
        zeros = like.new_zeros(B, self.vh_w.shape[1], W)
        self.vh = self._project_rows_above(zeros)

    def _project_rows_above(self, v_pre_row: torch.Tensor) -> torch.Tensor:
        """v_to_h, the 1x1 convolution, over a row (B, 2C, W) -> (B, 2C, W)."""
        return torch.einsum("oc,bcw->bow", self.vh_w, v_pre_row) + self.vh_b[None, :, None]

    def vertical_row(self, row: int) -> torch.Tensor:
        """The vertical stack's output at ``row`` (B, C, W), whose inputs are all cached; also
        prepares the horizontal stack's share of the row below."""
        window = self.v_in[:, :, row : row + self.half + 1]  # rows row - k//2 .. row
        v_pre = F.conv2d(window, self.v_w, self.v_b)[:, :, 0]  # (B, 2C, W)
        self.vh = self._project_rows_above(v_pre)
        if self.cond_v is not None:
            v_pre = v_pre + self._cond(self.cond_v, row)
        return gate(v_pre[:, :, :, None])[:, :, :, 0]

    def horizontal(self, row: int, col: int) -> torch.Tensor:
        """The horizontal stack's output at (row, col), (B, C), from this row's cached inputs."""
        half = self.half
        if self.first and col == 0:  # mask A: column 0 sees nothing (shift_right's zeros)
            h_pre = self.vh[:, :, 0].new_zeros(self.vh.shape[:2])
        else:
            start = col - 1 if self.first else col  # mask A: columns col - 1 - k//2 .. col - 1
            window = self.h_in[:, :, start : start + half + 1].reshape(self.h_in.shape[0], -1)
            h_pre = torch.addmm(self.h_b, window, self.h_w.t())  # (B, 2C)
        h_pre = h_pre + self.vh[:, :, col]
        if self.cond_h is not None:
            h_pre = h_pre + self._cond(self.cond_h, row, col)
        h_out = torch.addmm(self.out_b, gate(h_pre[:, :, None, None])[:, :, 0, 0], self.out_w.t())
        if not self.first:
            h_out = h_out + self.h_in[:, :, col + half]  # the residual: the layer below at col
        return h_out

    @staticmethod
    def _cond(cond: torch.Tensor, row: int, col: int | None = None) -> torch.Tensor:
        r = 0 if cond.shape[2] == 1 else row  # a global bias is (B, 2C, 1, 1)
        if col is None:
            return cond[:, :, r] if cond.shape[3] > 1 else cond[:, :, r, :1]
        return cond[:, :, r, 0 if cond.shape[3] == 1 else col]


class IncrementalPixelCNN:
    """Pixel-by-pixel decoding of a :class:`~acn.nn.pixelcnn.GatedPixelCNN` with cached
    activations.

    Args:
        net: the gated PixelCNN (its weights are used as they are; nothing is copied).
        z: (B, D) latents, or None for the decoder-only model.
        batch: B when ``z`` is None.
    """

    def __init__(self, net: Decoder, z: torch.Tensor | None, batch: int | None = None):
        if net.code_dim and z is None:
            raise ValueError("this PixelCNN is conditioned on z: give z")
        self.net = net
        self.z = z if net.code_dim else None
        self.batch = z.shape[0] if z is not None else batch
        if self.batch is None:
            raise ValueError("give a latent z or the number of images to sample")
        self.like = next(net.parameters())

    def sample(self, generator: torch.Generator | None = None, progress=None) -> torch.Tensor:
        """Draw x ~ r(x|z), (B, C, H, W) integer levels, in raster order; ``progress`` gets the
        number of pixels done."""
        likelihood = self.net.likelihood

        def draw(params: torch.Tensor, row: int, col: int) -> torch.Tensor:
            return likelihood.sample(params, generator)[:, :, 0, 0]

        return self._run(draw, None, progress)[0]

    def decode(self, choose: Chooser) -> torch.Tensor:
        """Images (B, C, H, W) whose every pixel is ``choose(params, row, col)``, given that
        pixel's parameters (B, C * P, 1, 1): how an entropy decoder reads pixels off its
        stream, on the path :meth:`teacher_forced_params` runs when encoding."""
        return self._run(choose, None, None)[0]

    def teacher_forced_params(self, x: torch.Tensor) -> torch.Tensor:
        """Every pixel's parameters (B, C * P, H, W) with the pixels of ``x`` given: the
        sampling path itself, for comparison with the full pass and for coding ``x``."""
        return self._run(lambda params, row, col: x[:, :, row, col], x, None)[1]

    @torch.no_grad()
    def _run(self, choose: Chooser, x_given, progress) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        C, H, W = net.image_shape
        B = self.batch
        z_map = net.sampling_context(self.z)
        layers = [
            _LayerCache(layer, layer.v_conv.in_channels, (B, H, W), self.z, z_map, self.like)
            for layer in net.layers
        ]
        x = torch.zeros(B, C, H, W, dtype=torch.long, device=self.like.device)
        num_params = net.likelihood.num_params(C)
        all_params = self.like.new_empty(B, num_params, H, W)
        levels = net.likelihood.levels
        for row in range(H):
            if row > 0:
                self._advance_vertical(layers, row - 1)
            for col in range(W):
                h = None
                for cache in layers:
                    if h is not None:
                        cache.h_in[:, :, col + cache.half] = h
                    h = cache.horizontal(row, col)
                params = net.head(h[:, :, None, None])  # (B, C * P, 1, 1)
                all_params[:, :, row, col] = params[:, :, 0, 0]
                value = choose(params, row, col)  # (B, C)
                x[:, :, row, col] = value
                first = layers[0]
                pixel = to_network_input(value, levels).to(self.like.dtype)
                first.h_in[:, :, col + first.half] = pixel
                first.v_in[:, :, row + first.half, col + first.half] = pixel
                if progress is not None:
                    progress(row * W + col + 1)
            for cache in layers:  # the next row's horizontal inputs start from the padding
                cache.h_in.zero_()
        return x, all_params

    @staticmethod
    def _advance_vertical(layers: list[_LayerCache], row: int) -> None:
        """Row ``row`` of every layer's vertical stack, now that the image's row is drawn."""
        for i, cache in enumerate(layers):
            v = cache.vertical_row(row)  # (B, C, W)
            if i + 1 < len(layers):
                nxt = layers[i + 1]
                nxt.v_in[:, :, row + nxt.half, nxt.half : nxt.half + v.shape[2]] = v
