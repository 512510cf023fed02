"""Exact arithmetic for the portable coding path: fixed-point units, the nonlinearities as
tables, and probability rows as integers. Pure functions; no float rounding decides a result.

**Why.** A float network's outputs depend on the order its sums are taken in, which torch picks
per instruction set, thread count and device, so a file coded from floats decodes only on a
machine that reproduces them (docs/codec.md, "Where a file decodes"). Here every number is an
integer, held in float64 tensors (so that torch's convolutions and matrix products run on them,
on any device) or int64 arrays, and every intermediate sum stays below 2^53, where float64
addition is exact in any order, with or without fused multiply-adds.

**Units.** Activations are integers in units of 2^-:data:`ACT` (so 4096 means 1.0), clamped to
+-:data:`ACT_MAX`. Weights are integers below 2^:data:`WEIGHT_BITS` in magnitude with a power-of-two
scale per output channel (:mod:`acn.codec.intnet`).

**Tables.** tanh, sigmoid, exp, softplus and the normal CDF are sampled every 2^-8 of their
input, their values rounded to integers, and read with linear interpolation in integers
(:class:`Table`). The samples are computed in Python's :mod:`decimal` arithmetic, whose exp, ln
and division are correctly rounded in software: the same integers on every machine and Python
release, where libm's or numpy's float functions may differ in the last bit. Interpolating
every 2^-8 is as fine as the 2^-12 units themselves (the error of tanh is below 2e-6).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
import torch

ACT = 12  # fractional bits of an activation
ACT_MAX = 1 << 20  # |activation| <= 256.0, so that products with weights stay below 2^35
WEIGHT_BITS = 15  # |integer weight| <= 2^15
EXACT = 1 << 53  # float64 holds every integer below this exactly
SAMPLE_BITS = 8  # tables are sampled every 2^-8 of their input
PROB_BITS = 24  # the coder's probabilities: integers out of 2^24
DIGITS = 60  # decimal digits the tables are computed with
PI = "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899863"


def round_shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x / 2^bits rounded half up, for integer-valued floats below 2^52 in magnitude."""
    if bits <= 0:
        return x * 2.0**-bits
    return torch.floor((x + 2.0 ** (bits - 1)) * 2.0**-bits)


def clamp_act(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-ACT_MAX, ACT_MAX)


@dataclass(frozen=True)
class Table:
    """f sampled at ``lo + i 2^-8`` (i = 0 .. len - 1) as integers in units of 2^-``value_bits``,
    read at integer inputs in units of 2^-``in_bits`` (in_bits >= 8) by linear interpolation,
    returned in units of 2^-``out_bits`` (rounded half up). Inputs outside the range read the
    end samples.

    Attributes:
        lo: the first sample's input, in units of 2^-8.
        values: (len,) int64 samples.
    """

    lo: int
    values: np.ndarray
    value_bits: int
    in_bits: int
    out_bits: int

    @functools.cached_property
    def _dense_array(self) -> tuple[int, np.ndarray]:
        """The read at every integer input of the range, computed once by :meth:`numpy`: the
        networks' path is then one index (the same integers, a tenth of the operations)."""
        first = self.lo << (self.in_bits - SAMPLE_BITS)
        last = (self.lo + len(self.values) - 1) << (self.in_bits - SAMPLE_BITS)
        inputs = np.arange(first, last + 1, dtype=np.int64)
        return first, self.numpy(inputs).astype(np.float64)

    @functools.cached_property
    def _dense(self) -> tuple[int, torch.Tensor]:
        first, dense = self._dense_array
        return first, torch.from_numpy(dense)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The read at integer-valued float inputs (inputs outside the range read its ends)."""
        first, dense = self._dense
        index = (x - first).clamp(0, len(dense) - 1).long()
        return dense.to(x.device)[index]

    def take(self, x: np.ndarray) -> np.ndarray:
        """:meth:`__call__` on float64 arrays: the decoder's per-pixel path, where numpy's
        per-call cost is a fraction of torch's."""
        first, dense = self._dense_array
        return dense.take((x - first).astype(np.intp), mode="clip")

    def numpy(self, x: np.ndarray) -> np.ndarray:
        """The same read on int64 arrays (the latent tables' path)."""
        frac_bits = self.in_bits - SAMPLE_BITS
        top = len(self.values) - 1
        base = x >> frac_bits
        i = base - self.lo
        frac = np.where((i < 0) | (i >= top), 0, x - (base << frac_bits))
        i = np.clip(i, 0, top)
        left, right = self.values[i], self.values[np.minimum(i + 1, top)]
        v = left + _round_right((right - left) * frac, frac_bits)
        return _round_right(v, self.value_bits - self.out_bits)


# Every table computed in this process, by name: a second or more of decimal arithmetic in a
# fresh interpreter, so a decoding worker is handed them (:func:`adopt_tables`).
_COMPUTED: dict[str, Table] = {}


def _computed_once(make: Callable[[], Table]) -> Callable[[], Table]:
    @functools.wraps(make)
    def table() -> Table:
        found = _COMPUTED.get(make.__name__)
        if found is None:
            found = _COMPUTED[make.__name__] = make()
        return found

    return table


def network_tables() -> dict[str, Table]:
    """Every table an exact decode reads, computed, by name: what :func:`adopt_tables` takes
    in another process. The networks' and pixel rows' dense reads are included; the normal
    CDF's and ln's are read by interpolation (the CDF's dense read would be 10 MB)."""
    for make in (tanh_table, sigmoid_table, probability_table, exp_table, softplus_table):
        make()._dense_array  # noqa: B018 - computed here, carried along when pickled
    phi_table(), log_table()
    return dict(_COMPUTED)


def adopt_tables(tables: dict[str, Table]) -> None:
    """Use tables another process of this same code computed (:func:`network_tables`), where
    this one has not computed its own."""
    for name, table in tables.items():
        _COMPUTED.setdefault(name, table)


def _round_right(x: np.ndarray, bits: int) -> np.ndarray:
    return (x + (1 << (bits - 1))) >> bits if bits > 0 else x << -bits


def _sampled(fn, lo: int, hi: int, value_bits: int) -> np.ndarray:
    """round(fn(i / 256) * 2^value_bits) for i = lo .. hi, in decimal arithmetic."""
    scale = Decimal(2) ** value_bits
    with localcontext() as ctx:
        ctx.prec = DIGITS
        out = [
            int((fn(Decimal(i) / 256) * scale).to_integral_value(ROUND_HALF_EVEN))
            for i in range(lo, hi + 1)
        ]
    return np.array(out, dtype=np.int64)


def _tanh(x: Decimal) -> Decimal:
    e = (2 * x).exp()
    return (e - 1) / (e + 1)


def _sigmoid(x: Decimal) -> Decimal:
    return 1 / (1 + (-x).exp())


def _softplus(x: Decimal) -> Decimal:
    return (1 + x.exp()).ln()


def _upper_phi(x: Decimal) -> Decimal:
    """Phi(x) for x >= 0 from the series Phi(x) = 1/2 + phi(x) sum x^(2n+1) / (2n+1)!!, whose
    terms are all positive (no cancellation)."""
    term, total, n = x, x, 0
    x2 = x * x
    eps = Decimal(10) ** -(DIGITS - 5)
    while term > eps * total or n < 4:
        n += 1
        term = term * x2 / (2 * n + 1)
        total += term
    density = (-x2 / 2).exp() / (2 * Decimal(PI)).sqrt()
    return Decimal(1) / 2 + density * total if x > 0 else Decimal(1) / 2


@_computed_once
def tanh_table() -> Table:
    """tanh on [-8, 8] (1 - tanh(8) < 2^-22), for activations: out in activation units."""
    return Table(-8 * 256, _sampled(_tanh, -8 * 256, 8 * 256, 28), 28, ACT, ACT)


@_computed_once
def sigmoid_table() -> Table:
    """sigmoid on [-16, 16] (sigmoid(-16) < 2^-23), for the PixelCNN's gates."""
    return Table(-16 * 256, _sampled(_sigmoid, -16 * 256, 16 * 256, 28), 28, ACT, ACT)


@_computed_once
def probability_table() -> Table:
    """sigmoid on [-16, 16] in units of 2^-24: a Bernoulli pixel's probability of one."""
    return Table(-16 * 256, _sampled(_sigmoid, -16 * 256, 16 * 256, 40), 40, ACT, PROB_BITS)


@_computed_once
def exp_table() -> Table:
    """exp on [-16, 0] in units of 2^-32: softmax weights after the maximum is subtracted."""
    return Table(-16 * 256, _sampled(lambda x: x.exp(), -16 * 256, 0, 40), 40, ACT, 32)


@_computed_once
def log_table() -> Table:
    """ln on [1, 2] in units of 2^-40, read at inputs in units of 2^-20 (:func:`ln_units`)."""
    return Table(256, _sampled(lambda x: x.ln(), 256, 512, 40), 40, LN_BITS, LN_BITS)


LN_BITS = 20  # the units of ln_units: 2^-20 nats
LN2_40 = 762123384786  # round(ln 2 * 2^40): e ln 2 is rounded once, not e times


def ln_units(n: np.ndarray) -> np.ndarray:
    """ln n of positive int64 integers below 2^43, in units of 2^-20 nats (the soft tour's
    scores): n = 2^e m with m in [1, 2], read as e ln 2 + ln m from :func:`log_table` (error
    below 4e-6 nats). Integer arithmetic only."""
    n = np.asarray(n, dtype=np.int64)
    if n.size and (n.min() < 1 or n.max() >= 1 << 43):
        raise ValueError("ln_units needs integers in 1 .. 2^43 - 1")
    e = np.frexp(n.astype(np.float64))[1].astype(np.int64) - 1  # exact below 2^53
    up, down = np.maximum(LN_BITS - e, 0), np.maximum(e - LN_BITS, 0)
    half = np.where(down > 0, 1 << np.maximum(down - 1, 0), 0)
    mantissa = np.where(down > 0, (n + half) >> down, n << up)  # m in units of 2^-20
    return _round_right(e * LN2_40, 40 - LN_BITS) + log_table().numpy(mantissa)


@_computed_once
def softplus_table() -> Table:
    """softplus on [-16, 16] in units of 2^-24 (above 16 it is x to within 2^-23)."""
    return Table(-16 * 256, _sampled(_softplus, -16 * 256, 16 * 256, 32), 32, ACT, 24)


PHI_BITS = 32  # the normal CDF's units
PHI_IN = 16  # its input's fractional bits


@_computed_once
def phi_table() -> Table:
    """The standard normal CDF on [-10, 10] in units of 2^-32, read at inputs in units of 2^-16;
    symmetric by construction: Phi(-x) = 1 - Phi(x) exactly."""
    upper = _sampled(_upper_phi, 0, 10 * 256, PHI_BITS)  # x = 0 .. 10
    lower = (1 << PHI_BITS) - upper[:0:-1]  # x = -10 .. -1/256
    return Table(-10 * 256, np.concatenate([lower, upper]), PHI_BITS, PHI_IN, PHI_BITS)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus of activations (units 2^-12) in units of 2^-24."""
    return torch.where(x > 16 << ACT, x * 2.0 ** (24 - ACT), softplus_table()(x))


def exact_counts(masses: np.ndarray, total: int = 1 << PROB_BITS) -> np.ndarray:
    """Integer counts (n, K) summing to ``total`` per row, proportional to the non-negative
    int64 ``masses`` (n, K), each row's sum below 2^(63 - log2 total): the floor of each share,
    the remainder to the largest remainders (ties to the lower symbol). A row of zeros becomes
    uniform. Integer arithmetic only."""
    masses = np.asarray(masses, dtype=np.int64)
    n, k = masses.shape
    sums = masses.sum(axis=1, keepdims=True)
    empty = sums[:, 0] == 0
    if empty.any():
        masses = masses.copy()
        masses[empty] = 1
        sums = masses.sum(axis=1, keepdims=True)
    scaled = masses * total
    counts = scaled // sums
    rest = scaled - counts * sums
    short = total - counts.sum(axis=1)  # (n,) < K
    order = np.argsort(-rest, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(k)[None].repeat(n, 0), axis=1)
    return counts + (ranks < short[:, None])
