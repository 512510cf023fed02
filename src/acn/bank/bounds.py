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
u_out) 2 Q M + gamma_D(u_norm) (Q^2 + M^2) + 2 u_add (Q + M)^2 (+ an underflow term for the
narrow formats), and :func:`score_error` returns twice that. Every row a back-end discarded
scored at least the worst kept score A, so its true squared distance is at least Q^2 + A - eps.
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
        tiny: the spacing of the product format's subnormal numbers (underflow), 0 to ignore.
    """

    inputs: float
    accumulate: float
    output: float
    norms: float
    add: float
    tiny: float = 0.0


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
    if r.tiny:
        # Below the smallest normal number rounding is absolute, at most tiny / 2 per element:
        # sum_i (|e_qi| |c_i s_c| + |q_i s_q| |e_ci|) <= tiny / 2 sqrt(D) (Q s_q + M s_c), plus
        # tiny / 2 for the product itself, in scaled units; the score carries it twice.
        s_q, s_c = scales
        spill = r.tiny / 2 * math.sqrt(dim) * (Q * s_q + M * s_c) + dim * r.tiny**2 + r.tiny
        eps = eps + 2 * spill / (s_q * s_c)
    return 2 * eps


def max_row_norm(sq_norms: torch.Tensor, dim: int) -> float:
    """M: at least the norm of every row, from float32 squared norms (each within gamma_D)."""
    top = float(sq_norms.max()) if sq_norms.numel() else 0.0
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
    u32 = unit_roundoff(torch.float32)
    if precision == "float64":
        u64 = unit_roundoff(torch.float64)
        return ScoreRounding(inputs=0.0, accumulate=u64, output=u64, norms=u64, add=u64)
    if precision == "float32":
        u_in = fp32_matmul_roundoff(device_type)
        return ScoreRounding(inputs=u_in, accumulate=u32, output=u32, norms=u32, add=u32)
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
    tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    return ScoreRounding(
        inputs=u_low,
        accumulate=u_low if narrow_sums else u32,
        output=u_low,
        norms=u32,
        add=u32,
        tiny=tiny,
    )
