"""Rigorous floating-point error bounds for the expanded-form scores of the k-NN back-ends.

The back-ends of :mod:`acn.bank.search` rank a row c by the expanded form ||c||^2 - 2 q.c (FAISS
adds ||q||^2), computed in floating point. A dot product of length D accumulated with unit
roundoff u, in any order, with or without FMA, is off by at most gamma_D(u) sum_i |q_i c_i| <=
gamma_D(u) ||q|| ||c|| (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3, and
Cauchy-Schwarz), gamma_n(u) = n u / (1 - n u). Rounding q and c to a narrower product format
first (unit roundoff u_in) scales each product by (1 + d1)(1 + d2), |d| <= u_in: a further (2
u_in + u_in^2) sum |q_i c_i|; rounding the product to that format adds u_out |q.c|. The cached
norms were summed in float32 (gamma_D(u32) ||c||^2, the same for ||q||^2), and the final
additions add u_add of magnitudes at most (||q|| + ||c||)^2. With Q = ||q|| and M >= ||c|| the
largest norm in the bank, the score error is at most eps = (2 u_in + u_in^2 + gamma_D(u_acc) +
u_out) 2 Q M + gamma_D(u_norm) (Q^2 + M^2) + 2 u_add (Q + M)^2 + an underflow term, and
:func:`score_error` returns twice that. Every row a back-end discarded scored at least the worst
kept score A, so its true squared distance is at least Q^2 + A - eps.

Underflow. The relative model above fails below a format's smallest normal number lambda:
there a result is off by an absolute amount, at most lambda u with gradual underflow, but up to
lambda itself where the hardware flushes subnormal results to zero or reads subnormal inputs as
zero (the bfloat16 dot-product instructions of AVX512-BF16 and AMX CPUs do, whatever the FPU
mode; any float32 kernel does under ``torch.set_flush_denormal(True)``, or once a library built
with fast-math has set that mode). So
each operation is taken as fl(x) = x (1 + d) + e with |e| <= lambda, flushing or not: the inputs
(lambda sqrt(D) (Q + M)), the D products and D - 1 partial sums, the output, the 2 D operations
of each squared norm and the few additions of the score. The term is negligible unless the
squared distances come within a few hundred lambda of zero (codes of norm ~1e-18 in float32);
such queries fail their proof and the float64 retry, which does not underflow there, answers
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScoreRounding:
    """Unit roundoffs of the steps that compute an expanded-form score (see the module doc).

    Attributes:
        inputs: rounding of q and c to the product format (0 when they are used as they are).
        accumulate: the format in which the dot product's partial sums are kept.
        output: rounding of the dot product to the format it is returned in.
        norms: the format in which the squared norms were summed.
        add: the format of the additions that assemble the score.
        tiny: the smallest normal number of the product format (and of its accumulator when
            that is narrower), which bounds each underflow in the product; 0 to ignore.
        tiny_add: the smallest normal number of the formats of the norms and the additions,
            which bounds each underflow there; 0 to ignore.
    """

    inputs: float
    accumulate: float
    output: float
    norms: float
    add: float
    tiny: float = 0.0
    tiny_add: float = 0.0


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the machine epsilon: the largest relative error of rounding to ``dtype``."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, u: float) -> float:
    """gamma_n(u) = n u / (1 - n u), the error factor of n roundings; inf where n u >= 1."""
    return n * u / (1 - n * u) if n * u < 1 else math.inf


def score_error(
    q_norm: torch.Tensor,
    max_norm: float,
    dim: int,
    rounding: ScoreRounding,
    scales: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """A conservative bound on the error of a computed expanded-form score, per query.

    Args:
        q_norm: (B,) float64 query norms Q.
        max_norm: M, at least the norm of every bank row.
        dim: D, the code dimension.
        rounding: the unit roundoffs of the computation.
        scales: the powers of two (s_q, s_c) the queries and rows were multiplied by before
            rounding to the product format; only the underflow term depends on them.

    Returns:
        (B,) float64, twice the first-order bound of the module doc (the factor of two covers the
        second-order terms and the float64 arithmetic of the bound itself).
    """
    r, Q, M = rounding, q_norm, max_norm
    product = 2 * r.inputs + r.inputs**2 + gamma(dim, r.accumulate) + r.output
    eps = product * 2 * Q * M + gamma(dim, r.norms) * (Q**2 + M**2) + 2 * r.add * (Q + M) ** 2
    return 2 * (eps + underflow(Q, M, dim, rounding, scales))


def underflow(
    q_norm: torch.Tensor,
    max_norm: float,
    dim: int,
    rounding: ScoreRounding,
    scales: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """The absolute error of the score's underflows (the module doc), per query, unscaled.

    Each underflow is bounded by the smallest normal number, not by half the subnormal spacing
    (gradual underflow): bfloat16 products on AVX512-BF16 / AMX CPUs flush subnormal results to
    zero, and a bound that trusted gradual underflow certified wrong neighbours there (codes of
    scale 1e-20). Scaling the operands by powers of two, as ``float16`` does against overflow,
    would not make that bound rigorous: a row or an element far below the largest norm, which
    sets the scale, still underflows, and the float32 norms and additions are not scaled. So
    every underflow is bounded, flushed or not, and the rare query near underflow fails its
    proof and is answered in float64 instead.

    Returns:
        (B,) float64, added to the first-order bound by :func:`score_error`.
    """
    (s_q, s_c), t, Q, M = scales, rounding.tiny, q_norm, max_norm
    # In scaled units: an input off by e_q (e_c), |e| <= t, moves sum_i q_i c_i by at most
    # t sqrt(D) (Q s_q + M s_c) + D t^2 (Cauchy-Schwarz); then D products, D - 1 partial sums
    # and the rounded output, t each. The score carries the dot product twice.
    product = t * math.sqrt(dim) * (Q * s_q + M * s_c) + dim * t**2 + (2 * dim + 1) * t
    # Unscaled: two squared norms of D squares and D - 1 sums, and at most four operations
    # (scaling, adding the norms) to assemble the score.
    assembly = (4 * dim + 4) * rounding.tiny_add
    return 2 * product / (s_q * s_c) + assembly


def max_row_norm(sq_norms: torch.Tensor, dim: int) -> float:
    """M: at least the norm of every row, from float32 squared norms (each within gamma_D, and
    within 2 D smallest normals where its D squares and D - 1 sums underflowed)."""
    top = float(sq_norms.max()) if sq_norms.numel() else 0.0
    top += 2 * dim * torch.finfo(torch.float32).smallest_normal
    return math.sqrt(top / (1 - gamma(dim, unit_roundoff(torch.float32))))


def fp32_matmul_roundoff(device_type: str) -> float:
    """The unit roundoff to which torch may round float32 matmul inputs on this device.

    ``torch.set_float32_matmul_precision("high")``, ``allow_tf32`` or the per-backend
    ``fp32_precision`` settings let matmuls round their inputs to TF32 (10-bit mantissa) or
    bfloat16; the bound must know. 0 when inputs are used as they are.
    """
    levels = {"highest": 0.0, "high": 2.0**-11, "medium": 2.0**-8}
    u = levels[torch.get_float32_matmul_precision()]
    if device_type == "cuda":
        settings = torch.backends.cuda.matmul
        if getattr(settings, "allow_tf32", False):
            u = max(u, 2.0**-11)
    else:
        settings = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    setting = getattr(settings, "fp32_precision", "none")
    return max(u, {"tf32": 2.0**-11, "bf16": 2.0**-8}.get(setting, 0.0))


def score_rounding(precision: str, device_type: str) -> ScoreRounding:
    """The :class:`ScoreRounding` of :class:`acn.bank.search.TorchSearch` in ``precision`` on
    a device."""
    u32, t32 = unit_roundoff(torch.float32), torch.finfo(torch.float32).smallest_normal
    if precision == "float64":
        u64, t64 = unit_roundoff(torch.float64), torch.finfo(torch.float64).smallest_normal
        return ScoreRounding(
            inputs=0.0, accumulate=u64, output=u64, norms=u64, add=u64, tiny=t64, tiny_add=t64
        )
    if precision == "float32":
        u_in = fp32_matmul_roundoff(device_type)
        return ScoreRounding(
            inputs=u_in, accumulate=u32, output=u32, norms=u32, add=u32, tiny=t32, tiny_add=t32
        )
    dtype = getattr(torch, precision)
    u_low = unit_roundoff(dtype)
    # CPU kernels accumulate narrow products in float32; cuBLAS may reduce split-K partial sums
    # in the narrow format unless that is switched off (TorchSearch does, see
    # acn.bank.search.float32_sums), and other devices are not known. GPU accumulators that truncate
    # rather than round (unit 2 u32) are inside score_error's factor of two.
    flag = f"allow_{'bf16' if precision == 'bfloat16' else 'fp16'}_reduced_precision_reduction"
    narrow_sums = {
        "cpu": False,
        "cuda": getattr(torch.backends.cuda.matmul, flag, True),
    }.get(device_type, True)
    # The product's underflows: bfloat16 shares float32's exponent range, float16's smallest
    # normal (2^-14) is above float32's, so the product format's bounds its accumulator's too.
    return ScoreRounding(
        inputs=u_low,
        accumulate=u_low if narrow_sums else u32,
        output=u_low,
        norms=u32,
        add=u32,
        tiny=torch.finfo(dtype).smallest_normal,
        tiny_add=t32,
    )
