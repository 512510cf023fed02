"""k-NN search back-ends for the code bank: each proposes candidates and bounds what it left out.

A back-end scores every bank row against each query in a fast, inexact way and returns the
``keep`` best-scored eligible rows as candidates, together with a certified lower bound on the
true squared distance from the query to every eligible row it did not return.
:class:`acn.bank.codebank.CodeBank` computes the candidates' distances exactly; where the k-th
of them is strictly below the bound, no other row can be nearer and the answer is proven exact,
and where it is not, the bank searches that query again more carefully. So a back-end may trade
accuracy for speed and the search stays exact.

- :class:`TorchSearch`: chunked matrix products on the bank's own device (CPU or GPU), in float32,
  or in bfloat16 / float16 for speed, or in float64 (the bank's fallback).
- :class:`FaissSearch`: FAISS's brute-force ``knn_L2sqr`` on the CPU, zero-copy on the bank.

The bound on what a back-end left out is derived in :mod:`acn.bank.bounds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Protocol

import numpy as np
import torch

from acn.bank.bounds import (
    ScoreRounding,
    max_row_norm,
    score_error,
    score_rounding,
    unit_roundoff,
)
from acn.config.choices import KNN_BACKENDS, SEARCH_PRECISIONS, pick, registry
from acn.errors import ConfigError

# The config's scoring precisions, and float64 for the bank's own careful retries.
PRECISIONS = (*SEARCH_PRECISIONS, "float64")
FAISS_MISSING = "codebank.backend=faiss needs faiss: pip install 'acn[faiss]'"

# Rows scored per block: B x rows scores (8 MiB of float32 for 2^21) stay in the CPU's caches
# between the matrix product and the selection, which is most of the speed on a CPU.
BLOCK_SCORES = 2**21
# Rows per group for the pre-selection in :func:`smallest`.
GROUP = 16
# FAISS sends a batch to BLAS from this size on (B x D since FAISS 1.15, B before).
FAISS_BLAS_THRESHOLD = 20
# float16 operands are scaled so that every |element| and every |dot product| stays far below
# the format's largest finite value 65504: ||q s|| <= 32 and ||c s|| <= 32 give |q.c| <= 1024.
FP16_NORM = 32.0


class FaissUnavailableError(ConfigError, ImportError):
    """``codebank.backend=faiss`` was asked for and faiss is not installed."""


class CandidateSearch(Protocol):
    """What a k-NN back-end does for :class:`acn.bank.codebank.CodeBank`.

    Attributes:
        margin: candidates to ask for beyond k. The proof needs a gap between the k-th exact
            distance and the worst kept score that exceeds the scores' error, so coarser scores
            want more candidates.
    """

    margin: int

    def candidates(
        self,
        codes: torch.Tensor,
        sq_norms: torch.Tensor,
        queries: torch.Tensor,
        keep: int,
        exclude: torch.Tensor | None,
        allowed: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Propose candidate rows per query and bound the distance to all others.

        Args:
            codes: (N, D) float32 bank rows.
            sq_norms: (N,) their squared norms, current with ``codes``.
            queries: (B, D) float32.
            keep: candidates per query, 1 <= keep <= N.
            exclude: (B, E) long rows never proposed for that query (entries outside [0, N)
                are ignored), or None.
            allowed: (N,) bool; rows that are False are never proposed. Or None.

        Returns:
            ``(idx, bound)``: (B, keep) long candidate rows, padded with -1 where fewer than
            ``keep`` rows are eligible, and (B,) float64 lower bounds on the true squared
            distance from each query to every eligible row not among its candidates (+inf when
            all eligible rows are candidates).
        """
        ...


def smallest(scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The m smallest scores per query of an (n, B) block (rows x queries), unordered.

    A full top-m over n entries costs more than the matrix product that made them when D is
    small, so large blocks take a detour. The first GROUP x w rows (w = n // GROUP) are read as
    a GROUP x w grid; the element-wise minimum down the grid (contiguous, vectorised) gives each
    grid column its minimum per query, the m smallest minima pick m grid columns, and the top-m
    runs over their m x GROUP rows plus the rows past the grid. Exact: the m picked minima are
    m entries no larger than mu, the m-th smallest minimum, so the m-th smallest candidate is at
    most mu; and every entry of an unpicked column is at least its column's minimum, at least
    mu. So every entry left out is at least the m-th returned.

    Returns:
        ``(values, rows)``, each (B, m): the scores and their rows in the block.
    """
    n, B = scores.shape
    m = min(m, n)
    w = n // GROUP
    per_query = scores.T  # (B, n), a view
    if w < max(4 * m, 256):  # too few rows for the detour to pay (measured on a CPU)
        return per_query.topk(m, dim=1, largest=False, sorted=False)
    minima = scores[: GROUP * w].view(GROUP, w, B).amin(dim=0)  # (w, B)
    _, picked = minima.T.topk(m, dim=1, largest=False, sorted=False)  # (B, m) grid columns
    offsets = torch.arange(0, GROUP * w, w, device=scores.device)
    rows = (picked[:, None, :] + offsets[None, :, None]).reshape(B, GROUP * m)
    if n > GROUP * w:
        rest = torch.arange(GROUP * w, n, device=scores.device).expand(B, -1)
        rows = torch.cat([rows, rest], dim=1)
    values, pos = per_query.gather(1, rows).topk(m, dim=1, largest=False, sorted=False)
    return values, rows.gather(1, pos)


def finish_candidates(
    scores: torch.Tensor,
    idx: torch.Tensor,
    exclude: torch.Tensor | None,
    allowed: torch.Tensor | None,
    keep: int,
    offset: torch.Tensor,
    eps: torch.Tensor,
    whole: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """From a ranked list to ``keep`` candidates and the bound of :class:`CandidateSearch`.

    Args:
        scores: (B, m) approximate scores, ascending, m >= keep; every row not in the list
            scored at least the list's last entry. Rows the search itself ruled out score +inf
            or come back as -1.
        idx: (B, m) their rows, -1 for none.
        exclude: (B, E) rows to drop, or None.
        allowed: (N,) bool rows to keep, or None (checked here too, so that a search that
            ignored the mask costs a weaker bound, never a wrong answer).
        keep: candidates to return.
        offset: (B,) float64 added to a score to make it a squared distance (||q||^2 or 0).
        eps: (B,) float64 bound on the scores' error.
        whole: the list holds every row of the bank.

    Returns:
        ``(idx, bound)`` as :meth:`CandidateSearch.candidates` describes.
    """
    bad = (idx < 0) | torch.isinf(scores)
    # The list ran dry (its last entry ruled out): no row outside it is eligible.
    dry = bad[:, -1] | whole
    if exclude is not None:
        bad |= (idx[:, :, None] == exclude[:, None, :]).any(dim=2)
    if allowed is not None:
        bad |= ~allowed[idx.clamp(min=0)]
    # Eligible entries first, in their ranked order.
    order = bad.to(torch.int8).argsort(dim=1, stable=True)[:, :keep]
    kept, idx, short = scores.gather(1, order), idx.gather(1, order), bad.gather(1, order)[:, -1]
    # Left out: eligible entries after the kept ones (scores >= the keep-th), and rows off the
    # list (scores >= its last). With fewer than ``keep`` eligible, only the latter remain.
    worst = torch.where(short, scores[:, -1], kept[:, -1]).double()
    bound = torch.where(short & dry, math.inf, offset + worst - eps)
    return idx.masked_fill(bad.gather(1, order), -1), bound


class TorchSearch:
    """Chunked matrix-product search on the bank's device, memory O(B x chunk).

    Each block of rows is scored as ||c||^2 - 2 q.c (||q||^2 is constant per query and left
    out), the block's best entries are pre-selected by :func:`smallest`, and one top-k over all
    blocks ranks them. In ``bfloat16`` / ``float16`` the product runs in that format, on the
    queries and on each block cast as it is scored (nothing is cached, so nothing goes stale when
    rows are updated); float16 operands are first scaled by powers of two so that nothing
    overflows. Norms and scores stay in float32, in float64 for ``float64``.

    Args:
        chunk_size: at most this many rows are scored at once (fewer when a smaller block keeps
            the scores in cache).
        precision: ``float32``, ``bfloat16``, ``float16`` or ``float64``.
    """

    def __init__(self, chunk_size: int = 65536, precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; choose one of {', '.join(PRECISIONS)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        self.chunk_size, self.precision = chunk_size, precision
        # bfloat16's 8-bit mantissa leaves errors of ~1% of ||q|| ||c||: with 8 extra candidates
        # about half the queries of a random bank failed their proof, with 56 none did.
        self.margin = 8 if precision in ("float32", "float64") else 56

    @torch.no_grad()
    def candidates(
        self,
        codes: torch.Tensor,
        sq_norms: torch.Tensor,
        queries: torch.Tensor,
        keep: int,
        exclude: torch.Tensor | None,
        allowed: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`CandidateSearch.candidates`."""
        (B, D), N = queries.shape, codes.shape[0]
        m = min(keep + (exclude.shape[1] if exclude is not None else 0), N)
        wide = torch.float64 if self.precision == "float64" else torch.float32
        q_norm = queries.double().pow(2).sum(dim=1).sqrt()  # (B,)
        max_norm = max_row_norm(sq_norms, D)
        s_q, s_c = self._scales(float(q_norm.max()), max_norm)
        narrow = getattr(torch, self.precision)
        q = queries.to(wide) if narrow == wide else (queries * s_q).to(narrow)
        rows = min(self.chunk_size, max(GROUP * 256, BLOCK_SCORES // B))
        buffer = torch.empty(B * min(rows, N), dtype=wide, device=codes.device)
        found_s, found_i = [], []
        # Narrow products must keep float32 partial sums on CUDA too, as the bound assumes.
        with float32_sums(codes.device.type, self.precision):
            for start in range(0, N, rows):
                stop = min(start + rows, N)
                block = codes[start:stop]
                if wide == torch.float64:  # the float64 fallback needs float64 norms too
                    bias = block.double().pow(2).sum(dim=1)
                else:
                    bias = sq_norms[start:stop]
                if allowed is not None:
                    bias = bias.masked_fill(~allowed[start:stop], math.inf)
                # Scores as (rows, queries): the product then reads the row-major block as it
                # lies, measured 20-25% faster on a CPU than (queries, rows) at D = 128.
                out = buffer[: B * (stop - start)].view(stop - start, B)
                if narrow == wide:  # ||c||^2 - 2 c.q in one fused product
                    torch.addmm(bias[:, None], block.to(wide), q.T, alpha=-2, out=out)
                else:
                    product = (block * s_c if s_c != 1 else block).to(narrow) @ q.T
                    torch.add(bias[:, None], product, alpha=-2 / (s_q * s_c), out=out)
                s, i = smallest(out, m)
                found_s.append(s)
                found_i.append(i + start)
            rounding = score_rounding(self.precision, codes.device.type)
        scores, idx = torch.cat(found_s, dim=1), torch.cat(found_i, dim=1)
        # The m best of all blocks, ascending (one block's m need only be sorted: cheaper).
        scores, pos = scores.sort(dim=1) if scores.shape[1] == m else scores.topk(m, largest=False)
        idx = idx.gather(1, pos)
        eps = score_error(q_norm, max_norm, D, rounding, (s_q, s_c))
        return finish_candidates(scores, idx, exclude, allowed, keep, q_norm**2, eps, whole=m == N)

    def _scales(self, q_max: float, c_max: float) -> tuple[float, float]:
        """Powers of two for the float16 operands (1 otherwise); exact, so only the underflow
        term of the bound sees them. The exponent is clamped so that 1 / (s_q s_c) stays finite
        in float32; what underflows then is in the bound."""
        if self.precision != "float16":
            return 1.0, 1.0

        def scale(norm: float) -> float:
            if not norm > 0 or not math.isfinite(norm):
                return 1.0
            # norm < 2^e, so norm * 2^(log2(FP16_NORM) - e) < FP16_NORM.
            shift = math.frexp(FP16_NORM)[1] - 1 - math.frexp(norm)[1]
            return math.ldexp(1.0, min(60, max(-60, shift)))

        return scale(q_max), scale(c_max)


class FaissSearch:
    """FAISS's exhaustive ``knn_L2sqr`` on zero-copy numpy views of the CPU bank.

    No index is built (the bank changes every step): the call reads the rows and the cached
    norms where they lie. It asks for ``keep + E`` neighbours and drops the excluded ones. An
    ``allowed`` mask goes to FAISS as an ``IDSelectorBitmap`` (N / 8 bytes per call, no copy of
    the bank); FAISS then scores row by row instead of with BLAS, slower but still exact.
    FAISS always scores in float32. Its distances carry the same kind of rounding as the
    float32 expanded form (and are clamped at 0, which the bound tolerates).
    """

    margin = 8

    def __init__(self) -> None:
        _faiss()  # fail now, with the install hint, rather than at the first search

    @torch.no_grad()
    def candidates(
        self,
        codes: torch.Tensor,
        sq_norms: torch.Tensor,
        queries: torch.Tensor,
        keep: int,
        exclude: torch.Tensor | None,
        allowed: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`CandidateSearch.candidates`."""
        if codes.device.type != "cpu":
            raise ValueError(
                f"codebank.backend=faiss searches on the CPU, but the bank is on {codes.device}; "
                "use codebank.backend=torch there"
            )
        if codes.dtype != torch.float32:
            raise ValueError(f"codebank.backend=faiss needs float32 codes, not {codes.dtype}")
        faiss = _faiss()
        (B, D), N = queries.shape, codes.shape[0]
        m = min(keep + (exclude.shape[1] if exclude is not None else 0), N)
        xb, norms = codes.contiguous().numpy(), sq_norms.contiguous().numpy()
        xq = queries.float().contiguous().numpy()
        dist, ids = np.empty((B, m), dtype=np.float32), np.empty((B, m), dtype=np.int64)
        selector, bits = None, None
        if allowed is not None:
            bits = np.packbits(allowed.numpy(), bitorder="little")  # kept alive for the call
            selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        ptr = faiss.swig_ptr
        # FAISS 1.15 leaves batches with B x D < 128000 to a SIMD loop over pairs instead of
        # BLAS; for a batch against a large bank BLAS measured 2-6x faster (B = 128, D = 16 and
        # 128), so lower the threshold for this call (older FAISS compares B alone with it).
        saved = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_THRESHOLD
        try:
            faiss.knn_L2sqr(ptr(xq), ptr(xb), D, B, N, m, ptr(dist), ptr(ids), ptr(norms), selector)
        finally:
            faiss.cvar.distance_compute_blas_threshold = saved
        q_norm = queries.double().pow(2).sum(dim=1).sqrt()
        u32, t32 = unit_roundoff(torch.float32), torch.finfo(torch.float32).smallest_normal
        rounding = ScoreRounding(
            inputs=0.0, accumulate=u32, output=u32, norms=u32, add=u32, tiny=t32, tiny_add=t32
        )
        eps = score_error(q_norm, max_row_norm(sq_norms, D), D, rounding)
        scores = torch.from_numpy(dist)
        offset = torch.zeros_like(q_norm)  # FAISS's distances include ||q||^2 already
        return finish_candidates(
            scores, torch.from_numpy(ids), exclude, allowed, keep, offset, eps, whole=m == N
        )


@contextmanager
def float32_sums(device_type: str, precision: str) -> Iterator[None]:
    """Within: cuBLAS keeps the partial sums of bfloat16 / float16 products in float32.

    By default cuBLAS may add split-K partial sums in the narrow format, which would make the
    accumulation error gamma_D of the narrow format's roundoff (no useful bound at D = 128 in
    bfloat16). The flag is read at each product, so it is switched off around the search only.
    """
    if device_type != "cuda" or precision not in ("bfloat16", "float16"):
        yield
        return
    settings = torch.backends.cuda.matmul
    flag = f"allow_{'bf16' if precision == 'bfloat16' else 'fp16'}_reduced_precision_reduction"
    saved = getattr(settings, flag)
    setattr(settings, flag, False)
    try:
        yield
    finally:
        setattr(settings, flag, saved)


def _faiss() -> ModuleType:
    """Import faiss, or raise :class:`FaissUnavailableError` with the install hint."""
    try:
        import faiss
    except ImportError as err:
        raise FaissUnavailableError(FAISS_MISSING) from err
    return faiss


def _faiss_search(chunk_size: int, precision: str) -> FaissSearch:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; choose one of {', '.join(PRECISIONS)}")
    return FaissSearch()  # FAISS scores in float32 whatever the precision asked


# codebank.backend -> (chunk_size, precision) -> the candidate search
BACKENDS: dict[str, Callable[[int, str], CandidateSearch]] = registry(
    "codebank.backend", KNN_BACKENDS, {"torch": TorchSearch, "faiss": _faiss_search}
)


def make_search(
    backend: str, chunk_size: int = 65536, precision: str = "float32"
) -> CandidateSearch:
    """The back-end named by ``codebank.backend`` and ``codebank.search_precision``.

    Args:
        backend: ``torch`` or ``faiss``.
        chunk_size: rows scored at once by ``torch``.
        precision: the ``torch`` scoring precision; ``faiss`` always scores in float32.

    Returns:
        A :class:`CandidateSearch`.
    """
    return pick("codebank.backend", BACKENDS, backend)(chunk_size, precision)
