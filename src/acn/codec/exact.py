"""The portable coding path: every probability the coder is given is computed in integers.

:class:`ExactNetworks` answers what :class:`acn.codec.bitsback.Networks` answers (codes, the
latent grid, posterior and prior bin tables, the segment heads' density, pixel distributions)
from the integer networks of :mod:`acn.codec.intnet` and the tables of
:mod:`acn.codec.intmath`. Each table reaches the coder as integer counts out of 2^24, written as
exact float64 fractions, so the coder's own quantisation sees the same numbers on every machine.
A file made this way decodes on any CPU, thread count or device (docs/codec.md, "Where a file
decodes"); its fingerprint covers only what decides its bits
(:meth:`ExactNetworks.fingerprint`).

What differs from the float path, besides exactness:

- the latent grid's bins are whole activation units (the width sqrt(1/2) becomes 2896/4096);
- the segments' first latents' Gaussian has its Cholesky factor computed in decimal
  arithmetic, not by LAPACK (whose results may differ between machines);
- the encoder scores an image in one teacher-forced pass: exact arithmetic gives the decoder's
  pixel-by-pixel numbers without running its path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
import torch

from acn.codec.ans import Stack, coder_version
from acn.codec.intdecode import decode_pixels
from acn.codec.intmath import (
    ACT,
    PHI_IN,
    PROB_BITS,
    exact_counts,
    exp_table,
    phi_table,
    probability_table,
)
from acn.codec.intnet import IntEncoder, IntMixture, IntPrior, input_units, quantize_decoder
from acn.codec.latents import MARGIN, STANDARD_RANGE
from acn.errors import CodecError
from acn.model import ACN
from acn.nn.likelihoods import Bernoulli, Categorical

ONE = 1 << ACT
SCALE_BITS = 24  # a Gaussian's standard deviation in units of 2^-24
TOTAL = 1 << PROB_BITS
EXACT_ARITHMETIC = 1  # bump when any rule here or in intmath / intnet changes a table


@dataclass(frozen=True)
class ExactGrid:
    """:class:`acn.codec.latents.LatentGrid` in activation units: bin j spans
    ``lo + (j - 1) delta .. lo + j delta`` (bins 0 and K - 1 reach to -inf and +inf); its centre
    is ``lo + (j - 1) delta + delta // 2``."""

    lo: np.ndarray  # (D,) int64
    bins: int
    delta: int

    @classmethod
    def covering(cls, low: np.ndarray, high: np.ndarray, delta: int) -> ExactGrid:
        margin = int(MARGIN * ONE)
        lo = np.floor_divide(low - margin, delta) * delta
        hi = -np.floor_divide(-(high + margin), delta) * delta
        return cls(lo.astype(np.int64), int(np.max((hi - lo) // delta)) + 2, delta)

    @classmethod
    def for_codes(cls, codes: np.ndarray | None, dim: int, delta: int) -> ExactGrid:
        if codes is None or len(codes) == 0:
            r = int((STANDARD_RANGE - MARGIN) * ONE)
            return cls.covering(np.full(dim, -r), np.full(dim, r), delta)
        return cls.covering(codes.min(axis=0), codes.max(axis=0), delta)

    @property
    def dim(self) -> int:
        return len(self.lo)

    def inner_edges(self) -> np.ndarray:
        """(D, K - 1) the finite edges."""
        return self.lo[:, None] + self.delta * np.arange(self.bins - 1)[None, :]

    def centres(self, bins: np.ndarray) -> np.ndarray:
        bins = np.asarray(bins, dtype=np.int64)
        return self.lo[None, : bins.shape[1]] + (bins - 1) * self.delta + self.delta // 2


def gaussian_masses(means: np.ndarray, scales: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin masses in units of 2^-32 of N(mean, scale^2): means (..., ) in activation units,
    scales (...,) in units of 2^-24, edges (..., K - 1) the finite edges -> (..., K)."""
    diff = edges - means[..., None]  # activation units
    shift = PHI_IN + SCALE_BITS - ACT
    scales = np.maximum(scales, 1)  # a zero floor on a prior's scales must not divide by 0
    t = np.floor_divide(diff << shift, scales[..., None])  # units of 2^-PHI_IN
    cdf = phi_table().numpy(t)
    zeros = np.zeros(cdf.shape[:-1] + (1,), dtype=np.int64)
    cdf = np.concatenate([zeros, cdf, zeros + (1 << 32)], axis=-1)
    return np.diff(cdf, axis=-1)


def mixture_rows(mixture: IntMixture, edges: np.ndarray) -> np.ndarray:
    """A per-dimension mixture's bin probabilities (B, D, K) as exact multiples of 2^-24."""
    weights = mixture.weights.cpu().numpy().astype(np.int64)  # (B, D, M), units 2^-32
    means = mixture.means.cpu().numpy().astype(np.int64)
    scales = mixture.scales.cpu().numpy().astype(np.int64)
    masses = gaussian_masses(means, scales, edges[None, :, None, :])  # (B, D, M, K)
    w = (weights << 16) // weights.sum(axis=-1, keepdims=True)  # normalised to 2^16
    mixed = np.einsum("bdm,bdmk->bdk", w, masses) >> 16  # units 2^-32
    return rows_of(mixed)


def rows_of(masses: np.ndarray) -> np.ndarray:
    """Integer masses (..., K) -> probabilities, integer counts out of 2^24 as exact floats."""
    shape = masses.shape
    counts = exact_counts(masses.reshape(-1, shape[-1]), TOTAL)
    return (counts.astype(np.float64) / TOTAL).reshape(shape)


@dataclass(frozen=True)
class ExactHead:
    """:class:`acn.codec.latents.GaussianHead` in integers: the codes' Gaussian (their mean and
    covariance plus the posterior's unit covariance), coded one dimension at a time given the
    bin centres of the dimensions before it.

    The moments are exact integer sums; the Cholesky factor is computed in decimal arithmetic
    (correctly rounded square roots and divisions: the same digits everywhere, where LAPACK's
    may differ) and rounded to units of 2^-24; the conditionals use integer arithmetic only.
    """

    mean: np.ndarray  # (D,) activation units
    chol: tuple[tuple[int, ...], ...]  # (D, D) lower triangular, units of 2^-24

    @classmethod
    def fit(cls, codes: np.ndarray | None, dim: int) -> ExactHead:
        one = 1 << SCALE_BITS
        if codes is None or len(codes) < 2:
            eye = tuple(tuple(one if i == j else 0 for j in range(dim)) for i in range(dim))
            return cls(np.zeros(dim, np.int64), eye)
        n = len(codes)
        mean = codes.sum(axis=0) // n
        centred = [[int(v) for v in row] for row in (codes - mean).T]  # (D, N) Python ints
        with localcontext() as ctx:
            ctx.prec = 40
            unit = Decimal(n) * Decimal(1 << 2 * ACT)
            cov = [
                [
                    Decimal(sum(a * b for a, b in zip(centred[i], centred[j], strict=True))) / unit
                    + (1 if i == j else 0)
                    for j in range(dim)
                ]
                for i in range(dim)
            ]
            chol = [[Decimal(0)] * dim for _ in range(dim)]
            for i in range(dim):
                for j in range(i + 1):
                    rest = cov[i][j] - sum(chol[i][k] * chol[j][k] for k in range(j))
                    chol[i][j] = rest.sqrt() if i == j else rest / chol[j][j]
            scaled = tuple(
                tuple(int((v * one).to_integral_value(ROUND_HALF_EVEN)) for v in row)
                for row in chol
            )
        return cls(mean.astype(np.int64), scaled)

    def table(self, d: int, previous: np.ndarray, grid: ExactGrid) -> np.ndarray:
        """Bin probabilities (n, K) of dimension d given the centres (n, d) before it."""
        L, up = self.chol, 2 * SCALE_BITS - ACT  # activation units -> units of 2^-48
        means = []
        for row in np.asarray(previous, dtype=np.int64):
            eps = []  # units of 2^-24, by forward substitution in one fixed order
            for j in range(d):
                rest = (int(row[j]) - int(self.mean[j])) << up
                rest -= sum(L[j][k] * eps[k] for k in range(j))
                eps.append(rest // L[j][j])
            total = (int(self.mean[d]) << up) + sum(L[d][j] * eps[j] for j in range(d))
            means.append((total + (1 << (up - 1))) >> up)
        means = np.array(means, dtype=np.int64)
        scales = np.full(len(means), L[d][d], dtype=np.int64)
        edges = grid.inner_edges()[d]
        edges = np.broadcast_to(edges, (len(means), len(edges)))
        return rows_of(gaussian_masses(means, scales, edges))


class ExactPixels:
    """A pixel's coder rows from its integer parameters (B, P): Bernoulli probabilities of one,
    or categorical rows, each an exact multiple of 2^-24."""

    def __init__(self, likelihood, channels: int) -> None:
        if not isinstance(likelihood, Bernoulli | Categorical):
            raise CodecError(
                f"the exact path codes Bernoulli and categorical pixels, not "
                f"{type(likelihood).__name__}"
            )
        self.bernoulli = isinstance(likelihood, Bernoulli)
        self.levels, self.channels = likelihood.levels, channels

    def distribution(self, params: np.ndarray) -> np.ndarray:
        """Coder rows from float64 parameters (n, P) in activation units."""
        if self.bernoulli:
            p = np.clip(probability_table().take(params.reshape(-1)), 1, TOTAL - 1)
            return p / TOTAL
        logits = params.reshape(-1, self.levels)
        weights = exp_table().take(logits - logits.max(axis=1, keepdims=True))
        return rows_of(weights.astype(np.int64))

    def push_image(self, stack: Stack, params: torch.Tensor, x: torch.Tensor) -> None:
        """Images (B, C, H, W) under every pixel's parameters (B, P, H, W), raster order."""
        B, C, H, W = x.shape
        # (H, W, B, P) -> one pixel's rows are consecutive, images side by side
        ordered = params.permute(2, 3, 0, 1).reshape(H * W * B, -1).cpu().numpy()
        values = x.permute(2, 3, 0, 1).reshape(-1).cpu().numpy()
        self._push(stack, values, self.distribution(ordered))

    def _push(self, stack: Stack, values: np.ndarray, dist: np.ndarray) -> None:
        if self.bernoulli:
            stack.push_bernoulli(values, dist)
        else:
            stack.push_categorical(values, dist)

    def pop_pixel(self, stack: Stack, params: np.ndarray) -> np.ndarray:
        """One pixel of B images from its parameters (B, P) -> (B, C) levels."""
        dist = self.distribution(params)
        values = stack.pop_bernoulli(dist) if self.bernoulli else stack.pop_categorical(dist)
        return values.astype(np.int64).reshape(-1, self.channels)


class ExactNetworks:
    """:class:`acn.codec.bitsback.Networks` in exact arithmetic (the same methods)."""

    batch_invariant = True  # integers: the same whatever the batch
    code_units = 1.0  # codes are integers in activation units already

    def __init__(self, model: ACN, delta: float, start_delta: float) -> None:
        self.model, self.kind = model, model.kind
        self.device = next(model.parameters()).device
        self.dim = model.code_dim
        decoder = model.decoder
        self.decoder = quantize_decoder(decoder)
        self.autoregressive = self.decoder.autoregressive
        self.pixels = ExactPixels(decoder.likelihood, decoder.image_shape[0])
        self.encoder = IntEncoder(model.encoder) if self.dim else None
        self.prior_net = IntPrior(model.prior, self.dim) if self.dim else None
        bank = None
        if model.bank is not None:
            bank = torch.round(model.bank.codes.detach().cpu().double() * ONE).long().numpy()
        self.bank = bank
        self.grid = ExactGrid.for_codes(bank, self.dim, grid_units(delta)) if self.dim else None
        wide = grid_units(max(delta, start_delta))
        self.start_grid = ExactGrid.for_codes(bank, self.dim, wide) if self.dim else None
        self.head = ExactHead.fit(bank, self.dim) if self.kind == "acn" else None

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) codes in activation units (integers in float64)."""
        return self.encoder(input_units(x.to(self.device), self.model.info.levels))

    @torch.no_grad()
    def tour_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The codes the coding order is chosen from: the float encoder's, as on the float path.
        Only the encoder follows the tour (the decoder reads the images in the order coded), so
        it need not be portable; and the greedy tour is chaotic: codes moved by 3e-4 gave the
        digits test split a tour 44% longer in squared distance, and a file 2% larger."""
        return self.model.encode(x.to(self.device)).float()

    def grid_at(self, step: int, plan) -> ExactGrid:
        return self.start_grid if step == plan.steps - 1 else self.grid

    def posterior(self, c: torch.Tensor, grid: ExactGrid) -> np.ndarray:
        means = c.cpu().numpy().astype(np.int64)
        scales = np.full_like(means, 1 << SCALE_BITS)
        return rows_of(gaussian_masses(means, scales, grid.inner_edges()[None]))

    @torch.no_grad()
    def prior(self, c_prev, batch: int, grid: ExactGrid) -> np.ndarray:
        """(batch, D, K) bin probabilities of p(z | c_prev) (or N(0, I))."""
        return mixture_rows(self.prior_net(c_prev, batch), grid.inner_edges())

    def latent(self, bins: np.ndarray, grid: ExactGrid) -> torch.Tensor:
        return torch.from_numpy(grid.centres(bins).astype(np.float64)).to(self.device)

    @torch.no_grad()
    def pixel_params(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return self.decoder.params(x.to(self.device), z)

    @torch.no_grad()
    def pop_pixels(self, stack: Stack, z: torch.Tensor | None, batch: int) -> torch.Tensor:
        pixels = self.pixels
        if self.autoregressive:
            return decode_pixels(self.decoder, z, batch, lambda p, r, c: pixels.pop_pixel(stack, p))
        params = self.decoder.params(None, z).cpu().numpy()  # (B, P, H, W)
        C, H, W = self.decoder.image_shape
        x = np.zeros((batch, C, H, W), dtype=np.int64)
        for row in range(H):
            for col in range(W):
                x[:, :, row, col] = pixels.pop_pixel(stack, params[:, :, row, col])
        return torch.from_numpy(x)

    def fingerprint(self, settings: bytes) -> int:
        """32 bits of a SHA-256 over what decides an exact file's bits: the settings (format
        version, grid width), the arithmetic's version (which fixes the tables: they are
        computed in decimal arithmetic, the same digits everywhere, and a test pins them), the
        integer weights, the quantised codes (grid and head), and constriction's major.minor
        version (its quantisation of the 2^-24 probabilities; no other package decides a
        bit)."""
        h = hashlib.sha256(settings)
        h.update(f"exact {EXACT_ARITHMETIC} constriction {_major_minor(coder_version())}".encode())
        parts = self.decoder.tensors()
        parts += self.encoder.tensors() if self.encoder is not None else []
        parts += self.prior_net.tensors() if self.prior_net is not None else []
        for t in parts:
            h.update(t.detach().cpu().double().numpy().astype("<f8").tobytes())
        if self.bank is not None:  # the grid and the head
            h.update(self.bank.astype("<i8").tobytes())
        h.update(f"{self.kind} {self.model.info.image_shape} {self.model.info.levels}".encode())
        return int.from_bytes(h.digest()[:4], "little")


def grid_units(delta: float) -> int:
    """A grid width in whole activation units (sqrt(1/2) -> 2896)."""
    return max(1, round(delta * ONE))


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
