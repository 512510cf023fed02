"""The latent z on a grid: probability tables for the posterior and the priors, and the
dithered posterior pops of bits-back coding. Pure numpy, float64.

Each dimension of z is cut into K bins of width ``delta`` over a range covering the codes with a
margin, the two outer bins reaching to -inf and +inf so that every code can be coded
(the default width, sqrt(1/2) posterior standard deviations, was chosen by measurement:
:data:`acn.codec.files.DEFAULT_DELTA`). A coded latent is its bin; the networks see the bin's
centre.

Tables are probability masses of the bins, (n, D, K): interval masses of Gaussians computed on
the side of the mean where the normal CDF keeps its precision, and mixtures of them.

**Dithered pops.** Bits-back pops z from q(z|x) with bits that the next image's prior push has
just written: when the prior is not perfectly calibrated those bits are not uniform and the
popped latents come out biased (over-dispersed, +2-5% of the file on the notes' toy). Each pop
therefore takes a uniform v in [0, T) from the stack, rotates it by an offset h that both sides
draw from a seeded stream, ``u = (v + h) mod T``, and codes the bin whose quantised interval
holds u; the position of u inside that interval is pushed back, so the net gain is exactly
-log2 of the bin's quantised mass. Whatever the bits, u is uniform over the offsets, and the
seed gives the file's other freedom: :func:`acn.codec.bitsback.compress` can try several and
keep the smallest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from acn.codec.ans import Stack, quantized_counts

# The quantised resolution of a dithered posterior pop (the stack's uniform symbols).
DITHER_TOTAL = 1 << 16
# Range of the grid beyond the codes, in posterior standard deviations.
MARGIN = 4.0
# The range of an unconditional N(0, I) prior's grid (no codes to cover): +-8.
STANDARD_RANGE = 8.0


@dataclass(frozen=True)
class LatentGrid:
    """K bins per dimension: bin j spans ``lo + (j - 1) delta .. lo + j delta``, bin 0 starts
    at -inf and bin K - 1 ends at +inf; centres at ``lo + (j - 1/2) delta``.

    Attributes:
        lo: (D,) each dimension's lowest finite edge.
        bins: K, the same for every dimension.
        delta: the bin width.
    """

    lo: np.ndarray
    bins: int
    delta: float

    @classmethod
    def covering(cls, low: np.ndarray, high: np.ndarray, delta: float) -> LatentGrid:
        """The grid over [low - MARGIN, high + MARGIN] per dimension, on multiples of delta,
        with one K for all dimensions (the widest one's; the others extend above)."""
        lo = np.floor((np.asarray(low, np.float64) - MARGIN) / delta) * delta
        hi = np.ceil((np.asarray(high, np.float64) + MARGIN) / delta) * delta
        finite = int(np.max(np.rint((hi - lo) / delta)))
        return cls(lo, finite + 2, float(delta))

    @classmethod
    def for_codes(cls, codes: np.ndarray | None, dim: int, delta: float) -> LatentGrid:
        """The grid around a bank of codes (N, D), or around N(0, I) when there are none."""
        if codes is None or len(codes) == 0:
            r = STANDARD_RANGE - MARGIN
            return cls.covering(np.full(dim, -r), np.full(dim, r), delta)
        codes = np.asarray(codes, np.float64)
        return cls.covering(codes.min(axis=0), codes.max(axis=0), delta)

    @property
    def dim(self) -> int:
        return len(self.lo)

    def edges(self) -> np.ndarray:
        """(D, K + 1) bin edges, -inf and +inf outermost."""
        inner = self.lo[:, None] + self.delta * np.arange(self.bins - 1)[None, :]
        inf = np.full((self.dim, 1), np.inf)
        return np.concatenate([-inf, inner, inf], axis=1)

    def centres(self, bins: np.ndarray) -> np.ndarray:
        """The centres of bins (n, d) of the first d dimensions -> (n, d) float64."""
        bins = np.asarray(bins)
        return self.lo[None, : bins.shape[1]] + (bins - 0.5) * self.delta

    def bin_of(self, z: np.ndarray) -> np.ndarray:
        """The bin holding each value of z (n, D) -> (n, D) int64."""
        j = np.floor((np.asarray(z, np.float64) - self.lo[None, :]) / self.delta) + 1
        return np.clip(j, 0, self.bins - 1).astype(np.int64)


def interval_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(a < X < b) for X ~ N(0, 1), elementwise (a <= b, infinities allowed), computed on the
    side of zero where the CDF does not round to one."""
    upper = a > 0
    return np.where(upper, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))


def gaussian_table(mean: np.ndarray, std: np.ndarray | float, grid: LatentGrid) -> np.ndarray:
    """Bin masses of N(mean, std^2) per dimension: mean (n, D), std (n, D) or a scalar ->
    (n, D, K)."""
    mean = np.asarray(mean, np.float64)
    std = np.broadcast_to(np.asarray(std, np.float64), mean.shape)
    edges = (grid.edges()[None] - mean[..., None]) / std[..., None]  # (n, D, K + 1)
    return interval_mass(edges[..., :-1], edges[..., 1:])


def mixture_table(
    logits: np.ndarray, mu: np.ndarray, sigma: np.ndarray, grid: LatentGrid
) -> np.ndarray:
    """Bin masses of a per-dimension Gaussian mixture, each (n, D, M) -> (n, D, K)."""
    logits = np.asarray(logits, np.float64)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)  # (n, D, M)
    edges = grid.edges()[None, :, None, :]  # (1, D, 1, K + 1)
    scaled = (edges - np.asarray(mu, np.float64)[..., None]) / np.asarray(sigma, np.float64)[
        ..., None
    ]  # (n, D, M, K + 1)
    masses = interval_mass(scaled[..., :-1], scaled[..., 1:])  # (n, D, M, K)
    return np.einsum("ndm,ndmk->ndk", weights, masses)


@dataclass(frozen=True)
class GaussianHead:
    """A full-covariance Gaussian N(mean, cov) over z, coded one dimension at a time: the
    density of each tour segment's first latent, which has no previous code.

    The conditional of dimension d given the (grid-centre) values of the dimensions before it
    is a Gaussian whose mean follows from the Cholesky factor L of ``cov``:
    z_d = mean_d + sum_{j <= d} L_dj eps_j.
    """

    mean: np.ndarray  # (D,)
    chol: np.ndarray  # (D, D) lower triangular

    @classmethod
    def fit(cls, codes: np.ndarray | None, dim: int) -> GaussianHead:
        """The Gaussian of the codes (N, D) plus the posterior's unit noise (cov + I): the
        aggregate posterior's moments. N(0, I) when there are fewer than two codes."""
        if codes is None or len(codes) < 2:
            return cls(np.zeros(dim), np.eye(dim))
        codes = np.asarray(codes, np.float64)
        cov = np.cov(codes, rowvar=False).reshape(dim, dim) + np.eye(dim)
        return cls(codes.mean(axis=0), np.linalg.cholesky(cov))

    def table(self, d: int, previous: np.ndarray, grid: LatentGrid) -> np.ndarray:
        """Bin masses of dimension d (n, K) given the centres of dimensions 0..d-1, (n, d)."""
        n = previous.shape[0]
        eps = np.zeros((n, d))
        for j in range(d):  # forward substitution, one fixed order on both sides
            eps[:, j] = (previous[:, j] - self.mean[j] - eps[:, :j] @ self.chol[j, :j]) / (
                self.chol[j, j]
            )
        mean = self.mean[d] + eps @ self.chol[d, :d]  # (n,)
        one = LatentGrid(grid.lo[d : d + 1], grid.bins, grid.delta)
        return gaussian_table(mean[:, None], self.chol[d, d], one)[:, 0]


def dither_offsets(seed: int, step: int, slots: int, dim: int) -> np.ndarray:
    """The offsets h (slots, D) of one step's pops: a function of (seed, step) alone, so the
    encoder (walking the tour backwards) and the decoder (forwards) draw the same."""
    return np.random.default_rng([seed, step]).integers(0, DITHER_TOTAL, size=(slots, dim))


def _counts(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantised counts and their cumulative starts, each (n * D, K)."""
    counts = quantized_counts(table.reshape(-1, table.shape[-1]), DITHER_TOTAL)
    return counts, np.cumsum(counts, axis=1) - counts


def pop_posterior(stack: Stack, table: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Draw bins (n, D) from the posterior masses ``table`` (n, D, K), paying with the stack's
    bits (the encoder's side of bits-back).

    One symbol at a time: each pop takes log2 T bits before the push of u's position returns
    most of them, so symbol by symbol the stack needs only log2 T bits at hand, not n D log2 T
    (a step of 8 images at D = 16 would otherwise ask for 2,048 bits at the start of the file).
    """
    counts, starts = _counts(table)
    u_offsets = offsets.reshape(-1)
    bins = np.empty(len(counts), dtype=np.int64)
    for i in range(len(counts)):
        bins[i] = pop_dithered(stack, counts[i], starts[i], int(u_offsets[i]))
    return bins.reshape(table.shape[:2])


def push_posterior(stack: Stack, bins: np.ndarray, table: np.ndarray, offsets: np.ndarray) -> None:
    """Give back the bits :func:`pop_posterior` took for ``bins`` (the decoder's side): its
    steps undone in reverse order."""
    counts, starts = _counts(table)
    flat = np.asarray(bins).reshape(-1)
    u_offsets = offsets.reshape(-1)
    for i in reversed(range(len(flat))):
        push_dithered(stack, int(flat[i]), counts[i], starts[i], int(u_offsets[i]))


def pop_dithered(stack: Stack, counts: np.ndarray, starts: np.ndarray, offset: int) -> int:
    """One dithered pop (the module doc): the symbol whose interval of the counts (K,), out of
    DITHER_TOTAL, holds u = (v + offset) mod T for a uniform v from the stack."""
    v = int(stack.pop_uniform(_TOTAL)[0])
    u = (v + offset) % DITHER_TOTAL
    b = int(np.searchsorted(starts, u, side="right")) - 1  # the interval holding u
    if counts[b] > 1:  # a one-count symbol leaves nothing to say about u's position
        stack.push_uniform(np.array([u - starts[b]]), counts[b : b + 1])
    return b


def push_dithered(
    stack: Stack, b: int, counts: np.ndarray, starts: np.ndarray, offset: int
) -> None:
    """Undo :func:`pop_dithered` of symbol ``b``: the bits it took go back."""
    within = int(stack.pop_uniform(counts[b : b + 1])[0]) if counts[b] > 1 else 0
    v = (int(starts[b]) + within - offset) % DITHER_TOTAL
    stack.push_uniform(np.array([v]), _TOTAL)


_TOTAL = np.array([DITHER_TOTAL])
