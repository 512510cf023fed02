"""The model's networks in exact integer arithmetic, for the portable coding path.

:func:`quantize` turns a trained model's encoder, prior and decoder into integer networks:
every Linear, Conv2d and ConvTranspose2d gets integer weights (below 2^15 in magnitude) with a
power-of-two scale per output channel, its bias an integer in the accumulator's units, and its
output is rescaled to activation units by an exact shift (:class:`IntLinear`); tanh, sigmoid,
softplus and exp are tables (:mod:`acn.codec.intmath`). Every value is an integer held in
float64, and :class:`IntLinear` checks when it is built that no sum it computes can reach 2^53,
so convolutions and matrix products are exact whatever order a kernel adds in: the same bits on
any instruction set, thread count or device. The quantisation itself is exact too (a
power-of-two scaling and a rounding of the float32 weights), so a shared model folder is all a
decoder needs.

Exactness also frees the two sides from computing the same way: the encoder scores a whole
image in one teacher-forced pass (:meth:`IntPixelCNN.params`), the decoder pixel by pixel with
cached rows (:mod:`acn.codec.intdecode`), and the two agree to the bit because both are exact.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from acn.codec.intmath import (
    ACT,
    ACT_MAX,
    EXACT,
    WEIGHT_BITS,
    clamp_act,
    exp_table,
    round_shift,
    sigmoid_table,
    softplus,
    tanh_table,
)
from acn.errors import CodecError
from acn.nn.decoder import DeconvDecoder, LatentMap
from acn.nn.encoder import Encoder
from acn.nn.gated import shift_down, shift_right
from acn.nn.pixelcnn import GatedPixelCNN
from acn.nn.prior import (
    LinearGaussianPrior,
    NeighbourPrior,
    ShiftedGaussianPrior,
    StandardNormalPrior,
)

ONE = 1 << ACT  # 1.0 in activation units
# The most float64 elements a convolution's unfolded windows take at once (32 MB): the
# encoder's whole-image passes over a step of a hundred 28x28 images would unfold 350 MB per
# layer (a 20,000-image encode spent 40% of its CPU time in the kernel, most likely on these).
WINDOW_ELEMENTS = 1 << 22
# The most elements of the widest activation a teacher-forced pass holds at once (8 MB): the
# encoder's steps bring hundreds of images, and a pass over 256 mnist5k digits at once took
# 2.6x as long as the same pass 32 at a time (its tensors no longer fit the caches).
PASS_ELEMENTS = 1 << 20


class IntLinear:
    """A Linear, Conv2d or ConvTranspose2d with integer weights: activations in, activations
    out (rounded half up, clamped).

    Output channel c computes acc = sum w_c x + b_c in units of 2^-(ACT + e_c), where
    w_c = round(weight_c 2^e_c) and e_c puts the channel's largest weight in [2^14, 2^15), then
    shifts it right by e_c.
    """

    def __init__(self, module: nn.Module) -> None:
        self.kind = type(module).__name__
        w = module.weight.detach().double()
        out_dim = 1 if isinstance(module, nn.ConvTranspose2d) else 0
        per_out = w.transpose(0, out_dim).flatten(1)  # (out, fan-in)
        largest = per_out.abs().amax(dim=1)
        _, exponent = torch.frexp(largest)  # largest = m 2^exponent, m in [0.5, 1)
        e = torch.where(largest > 0, WEIGHT_BITS - exponent, torch.zeros_like(exponent)).double()
        shape = [1] * w.dim()
        shape[out_dim] = -1
        self.weight = torch.round(w * torch.exp2(e).view(shape))
        bias = module.bias.detach().double() if module.bias is not None else torch.zeros_like(e)
        self.bias = torch.round(bias * torch.exp2(e + ACT))
        self.e = e
        self.module = module
        fan = self.weight.transpose(0, out_dim).flatten(1).abs().sum(dim=1)
        bound = fan * ACT_MAX + self.bias.abs() + torch.exp2(e)
        if bool((bound >= EXACT).any()):
            raise CodecError(
                f"a {self.kind} of this model has weights too wide for exact integer sums "
                f"(bound 2^{math.log2(float(bound.max())):.1f} >= 2^53): it cannot use --exact"
            )

    def _accumulate(self, x: torch.Tensor) -> torch.Tensor:
        m, dev = self.module, x.device
        w, b = self.weight.to(dev), self.bias.to(dev)
        if isinstance(m, nn.Linear):
            return F.linear(x, w, b)
        if (
            isinstance(m, nn.Conv2d)
            and m.stride == (1, 1)
            and m.padding == (0, 0)
            and m.dilation == (1, 1)
            and m.groups == 1
        ):
            return self._windows(x, w, b)
        if isinstance(m, nn.ConvTranspose2d):
            return F.conv_transpose2d(
                x, w, b, m.stride, m.padding, m.output_padding, m.groups, m.dilation
            )
        return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)

    def _windows(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """A stride-1 unpadded convolution as one matrix product over the unfolded windows:
        float64 convolutions take a slow generic path, and the decoder calls these on a row
        or a pixel at a time."""
        out, _, kh, kw = w.shape
        per_image = x.shape[1] * (x.shape[2] - kh + 1) * (x.shape[3] - kw + 1) * kh * kw
        step = max(1, WINDOW_ELEMENTS // max(1, per_image))
        if len(x) > step:  # exact sums: any split of the batch gives the same integers
            return torch.cat([self._windows(x[i : i + step], w, b) for i in range(0, len(x), step)])
        patches = x.unfold(2, kh, 1).unfold(3, kw, 1)  # (B, in, Ho, Wo, kh, kw)
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3)  # (B, Ho, Wo, in kh kw)
        return F.linear(patches, w.reshape(out, -1), b).permute(0, 3, 1, 2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            return self._requantize(self._accumulate(x))
        # cuDNN may pick FFT or Winograd convolutions, which are not sums of products.
        with torch.backends.cudnn.flags(enabled=False):
            return self._requantize(self._accumulate(x))

    def rows(self, x: np.ndarray, channels_last: bool = False) -> np.ndarray:
        """The layer at one output position on float64 rows (n, fan-in): a convolution's window
        flattened in (channel, row, column) order, or (row, column, channel) with
        ``channels_last``. The decoder's path (:mod:`acn.codec.intdecode`): the same integer
        sums in numpy, whose calls cost a fraction of torch's on arrays this small."""
        w, offset, scale = self._rows[channels_last]
        acc = x @ w
        acc += offset  # the bias and the rounding's half, one exact sum
        acc *= scale
        np.floor(acc, out=acc)
        return clip_act_rows(acc)

    @functools.cached_property
    def _rows(self) -> dict[bool, tuple[np.ndarray, ...]]:
        """(fan-in, out) matrices in both window orders, bias + 2^(e_c - 1), and 2^-e_c."""
        if isinstance(self.module, nn.ConvTranspose2d):  # pragma: no cover - not per position
            raise CodecError("a transposed convolution has no per-position matrix")
        w = self.weight.cpu()
        w = w if w.dim() == 4 else w[:, :, None, None]
        e = self.e.cpu()
        offset = (self.bias.cpu() + torch.exp2(e - 1)).numpy()
        return {
            last: (
                np.ascontiguousarray((w.permute(0, 2, 3, 1) if last else w).flatten(1).T.numpy()),
                offset,
                torch.exp2(-e).numpy(),
            )
            for last in (False, True)
        }

    def _requantize(self, acc: torch.Tensor) -> torch.Tensor:
        """acc / 2^e_c per channel, rounded half up: (acc + 2^(e_c - 1)) 2^-e_c, floored."""
        half, scale = self._shift[acc.dim()]
        if half.device != acc.device:
            half, scale = half.to(acc.device), scale.to(acc.device)
        return clamp_act(torch.floor((acc + half) * scale))

    @functools.cached_property
    def _shift(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """(2^(e_c - 1), 2^-e_c) shaped for outputs of 2 (Linear) and 4 dimensions."""
        return {
            2: (torch.exp2(self.e - 1), torch.exp2(-self.e)),
            4: (torch.exp2(self.e - 1).view(-1, 1, 1), torch.exp2(-self.e).view(-1, 1, 1)),
        }

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight, self.bias, self.e]


def clip_act_rows(a: np.ndarray) -> np.ndarray:
    """:func:`clamp_act` in place on a float64 array (two ufuncs: ``np.clip``'s own checks cost
    more than the work on a decoder's rows)."""
    np.maximum(a, -ACT_MAX, out=a)
    return np.minimum(a, ACT_MAX, out=a)


def gate(t: torch.Tensor) -> torch.Tensor:
    """tanh(a) sigmoid(b) over the channel halves, in activation units."""
    a, b = t.chunk(2, dim=1)
    return round_shift(tanh_table()(a) * sigmoid_table()(b), ACT)


def input_units(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer levels 0 .. L-1 as the networks' input in [-1, 1], in activation units, rounded
    half up in integer arithmetic."""
    top = levels - 1
    num = (2 * x.long() - top) * (2 * ONE) + top
    return torch.div(num, 2 * top, rounding_mode="floor").double()


class IntEncoder:
    def __init__(self, encoder: Encoder) -> None:
        self.convs = [IntLinear(m) for m in encoder.features if isinstance(m, nn.Conv2d)]
        self.head = IntLinear(encoder.head)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) activation units -> (B, D) codes in activation units."""
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.flatten(1))

    def tensors(self):
        return [t for layer in [*self.convs, self.head] for t in layer.tensors()]


@dataclass
class IntMixture:
    """A per-dimension Gaussian mixture: weights (B, D, M) in units of 2^-32 (unnormalised),
    means (B, D, M) in activation units, scales (B, D, M) in units of 2^-24."""

    weights: torch.Tensor
    means: torch.Tensor
    scales: torch.Tensor


class IntPrior:
    """p(z | c_hat) (or N(0, I)) as an :class:`IntMixture`."""

    def __init__(self, prior: nn.Module, code_dim: int) -> None:
        self.kind = type(prior).__name__
        self.dim = code_dim
        self.min_scale = round(getattr(prior, "min_scale", 0.0) * 2**24)
        self.layers: list[IntLinear] = []
        self.pre_scale = None
        if isinstance(prior, NeighbourPrior):
            self.layers = [IntLinear(m) for m in prior.hidden] + [IntLinear(prior.out)]
            self.components = prior.components
        elif isinstance(prior, LinearGaussianPrior | ShiftedGaussianPrior):
            if isinstance(prior, LinearGaussianPrior):
                self.layers = [IntLinear(prior.linear)]
            self.pre_scale = torch.round(prior.pre_scale.detach().double() * ONE)
            self.components = 1
        elif isinstance(prior, StandardNormalPrior):
            self.components = 1
        else:
            raise CodecError(f"the exact path has no integer version of a {self.kind}")

    def __call__(self, c_hat: torch.Tensor | None, batch: int) -> IntMixture:
        if self.kind == "StandardNormalPrior":
            shape = (batch, self.dim, 1)
            return IntMixture(
                torch.ones(shape, dtype=torch.float64),
                torch.zeros(shape, dtype=torch.float64),
                torch.full(shape, float(1 << 24), dtype=torch.float64),
            )
        if c_hat is None:
            raise CodecError("a conditional prior needs the previous code")
        if self.kind == "NeighbourPrior":
            return self._mlp(c_hat)
        mean = self.layers[0](c_hat) if self.layers else c_hat
        scale = softplus(self.pre_scale.to(c_hat.device)) + self.min_scale
        mean = mean.unsqueeze(-1)
        return IntMixture(torch.ones_like(mean), mean, scale.expand_as(c_hat).unsqueeze(-1))

    def _mlp(self, c_hat: torch.Tensor) -> IntMixture:
        *hidden, out = self.layers
        h, outputs = None, [c_hat]
        for layer in hidden:
            h = tanh_table()(layer(c_hat if h is None else torch.cat([c_hat, h], dim=-1)))
            outputs.append(h)
        raw = out(torch.cat(outputs, dim=-1)).unflatten(-1, (self.dim, self.components, 3))
        logits, mean, pre = raw.unbind(-1)
        weights = exp_table()(logits - logits.amax(dim=-1, keepdim=True))
        return IntMixture(weights, mean, softplus(pre) + self.min_scale)

    def tensors(self):
        extra = [self.pre_scale] if self.pre_scale is not None else []
        return [t for layer in self.layers for t in layer.tensors()] + extra


class IntLatentMap:
    def __init__(self, latent_map: LatentMap) -> None:
        self.linear = IntLinear(latent_map.linear)
        self.start = latent_map.start
        self.layers = [IntLinear(m) for m in latent_map.layers if not isinstance(m, nn.ReLU)]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.linear(z)).view(-1, *self.start)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return h

    def tensors(self):
        return [t for layer in [self.linear, *self.layers] for t in layer.tensors()]


class _IntGated:
    """One gated layer's integer maps (:class:`acn.nn.gated.GatedLayer`)."""

    def __init__(self, layer) -> None:
        self.first, self.half = layer.first, layer.half
        self.v_conv, self.h_conv = IntLinear(layer.v_conv), IntLinear(layer.h_conv)
        self.v_to_h, self.h_out = IntLinear(layer.v_to_h), IntLinear(layer.h_out)
        self.cond_global = IntLinear(layer.cond_global) if layer.cond_global is not None else None
        self.cond_map = IntLinear(layer.cond_map) if layer.cond_map is not None else None

    def conditioning(self, z, z_map) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What z adds to the vertical and horizontal pre-activations, (B, 2C, H or 1, W or 1)
        each, or None."""
        cond = None
        if self.cond_global is not None and z is not None:
            cond = self.cond_global(z)[:, :, None, None]
        if self.cond_map is not None and z_map is not None:
            m = self.cond_map(z_map)
            cond = m if cond is None else cond + m
        return cond.chunk(2, dim=1) if cond is not None else (None, None)

    def forward(self, v, h, cond_v, cond_h):
        """The full pass over whole images, as :meth:`acn.nn.gated.GatedLayer.forward`."""
        half = self.half
        v_pre = self.v_conv(F.pad(v, (half, half, half, 0)))
        h_pre = self.h_conv(F.pad(h, (half, 0, 0, 0)))
        if self.first:
            h_pre = shift_right(h_pre)
        h_pre = h_pre + self.v_to_h(shift_down(v_pre))
        if cond_v is not None:
            v_pre, h_pre = v_pre + cond_v, h_pre + cond_h
        h_out = self.h_out(gate(h_pre))
        return gate(v_pre), h_out if self.first else clamp_act(h_out + h)

    def tensors(self):
        maps = [self.v_conv, self.h_conv, self.v_to_h, self.h_out, self.cond_global, self.cond_map]
        return [t for m in maps if m is not None for t in m.tensors()]


class IntPixelCNN:
    """The gated PixelCNN (:class:`acn.nn.pixelcnn.GatedPixelCNN`) in integers."""

    autoregressive = True

    def __init__(self, net: GatedPixelCNN) -> None:
        self.image_shape, self.levels = net.image_shape, net.likelihood.levels
        self.code_dim = net.code_dim
        self.latent_map = IntLatentMap(net.latent_map) if net.latent_map is not None else None
        self.layers = [_IntGated(layer) for layer in net.layers]
        self.head = [IntLinear(m) for m in net.head if isinstance(m, nn.Conv2d)]

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        first, second = self.head
        return second(torch.relu(first(torch.relu(h))))

    def code_inputs(self, z) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the layers' conditioning is computed from: the code (B, D) and the latent map
        (B, M, H, W), each None where the model has none."""
        z = z if self.code_dim else None
        z_map = self.latent_map(z) if self.latent_map is not None and z is not None else None
        return z, z_map

    def conditioning(self, z):
        """Each layer's (vertical, horizontal) conditioning maps from the code, or Nones."""
        z, z_map = self.code_inputs(z)
        return [layer.conditioning(z, z_map) for layer in self.layers]

    def params(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Every pixel's parameters (B, P, H, W) with the pixels of ``x`` (levels) given, a few
        images at a time (:data:`PASS_ELEMENTS`; exact sums: any split gives the same
        integers)."""
        C, H, W = self.image_shape
        widest = 2 * max(layer.v_conv.weight.shape[0] for layer in self.layers)
        step = max(1, PASS_ELEMENTS // (widest * H * W))
        if len(x) <= step:
            return self._params(x, z)
        pieces = [
            self._params(x[i : i + step], z[i : i + step] if z is not None else None)
            for i in range(0, len(x), step)
        ]
        return torch.cat(pieces)

    def _params(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        v = h = input_units(x, self.levels)
        for layer, (cond_v, cond_h) in zip(self.layers, self.conditioning(z), strict=True):
            v, h = layer.forward(v, h, cond_v, cond_h)
        return self._head(h)

    def tensors(self):
        parts = [t for layer in self.layers for t in layer.tensors()]
        parts += [t for m in self.head for t in m.tensors()]
        return parts + (self.latent_map.tensors() if self.latent_map is not None else [])


class IntDeconv:
    """The deconvolutional decoder (:class:`acn.nn.decoder.DeconvDecoder`) in integers."""

    autoregressive = False

    def __init__(self, net: DeconvDecoder) -> None:
        self.image_shape, self.levels = net.image_shape, net.likelihood.levels
        self.trunk = IntLatentMap(net.trunk)
        self.head = [IntLinear(m) for m in net.head if isinstance(m, nn.Conv2d)]

    def params(self, x, z):
        first, second = self.head
        return second(torch.relu(first(self.trunk(z))))

    def tensors(self):
        return self.trunk.tensors() + [t for m in self.head for t in m.tensors()]


def quantize_decoder(decoder: nn.Module):
    if isinstance(decoder, GatedPixelCNN):
        return IntPixelCNN(decoder)
    if isinstance(decoder, DeconvDecoder):
        return IntDeconv(decoder)
    raise CodecError(f"the exact path has no integer version of a {type(decoder).__name__}")
