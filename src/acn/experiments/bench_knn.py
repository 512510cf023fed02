"""Timing of the code bank's exact k-NN search per back-end, side by side in one run.

Every back-end searches the same random bank with the same queries (near bank rows, each
excluding its own row, as in training). The back-ends are timed in alternating order, one call
each per round, so that drift in the machine's speed hits them alike; the median is reported.
FAISS's prebuilt ``IndexFlatL2`` is timed alongside as the reference (built outside the timing;
it copies the bank, which the training loop could not afford to do every step), with FAISS's
default settings and with its BLAS path forced (FAISS 1.15 keeps batches with B x D < 128000
off BLAS, which at these shapes is the slower choice). FAISS records are left out silently where
faiss is not installed or the device is not the CPU.

Run ``python -m acn.experiments.bench_knn`` for the table at the standard shapes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from acn.bank.codebank import CodeBank
from acn.bank.search import FAISS_BLAS_THRESHOLD

KNN_SHAPES = ((60_000, 16), (1_281_167, 128))
# Record name -> (codebank.backend, codebank.search_precision); the FAISS indexes are extra.
SEARCHES = {
    "torch": ("torch", "float32"),
    "torch-bf16": ("torch", "bfloat16"),
    "torch-fp16": ("torch", "float16"),
    "faiss": ("faiss", "float32"),
}
FLAT = "faiss-IndexFlatL2"
# The same index with FAISS's BLAS path forced.
FLAT_BLAS = "faiss-IndexFlatL2-blas"
DEFAULT_BACKENDS = ("torch", "torch-bf16", "faiss", FLAT, FLAT_BLAS)


def _faiss_or_none() -> ModuleType | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def thread_counts() -> dict[str, int | None]:
    """The CPU threads torch and FAISS (OpenMP) use; FAISS's is None without faiss."""
    faiss = _faiss_or_none()
    return {
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads() if faiss is not None else None,
    }


def _timers(
    names: Sequence[str], num_codes: int, dim: int, queries: int, k: int, device: torch.device
) -> tuple[dict[str, Any], dict[str, CodeBank]]:
    """One callable per available back-end, all on the same bank and queries."""
    faiss = _faiss_or_none()
    with_faiss = faiss is not None and device.type == "cpu"
    usable = [n for n in names if with_faiss or not _needs_faiss(n)]
    if not usable:
        return {}, {}
    base = CodeBank(num_codes, dim, generator=torch.Generator().manual_seed(0)).to(device)
    banks: dict[str, CodeBank] = {}
    for name in usable:
        if name in (FLAT, FLAT_BLAS):
            continue
        backend, precision = SEARCHES[name]
        bank = base
        if (backend, precision) != ("torch", "float32"):
            bank = CodeBank(num_codes, dim, backend=backend, precision=precision).to(device)
            # The same rows for every back-end: share them (one copy of a large bank is enough).
            bank.codes, bank.sq_norms = base.codes, base.sq_norms
        banks[name] = bank
    g = torch.Generator().manual_seed(1)
    own = torch.randint(num_codes, (queries,), generator=g).to(device)
    q = base.codes[own] + 0.1 * torch.randn(queries, dim, generator=g).to(device)
    timers: dict[str, Any] = {n: (lambda b=b: b.knn(q, k, exclude=own)) for n, b in banks.items()}
    if FLAT in usable or FLAT_BLAS in usable:
        index = faiss.IndexFlatL2(dim)
        index.add(base.codes.numpy())
        xq = q.numpy()
        # k + 1: the query's own row comes back.
        flat = {
            FLAT: lambda: index.search(xq, k + 1),
            FLAT_BLAS: lambda: _blas(faiss, index, xq, k + 1),
        }
        timers.update({name: fn for name, fn in flat.items() if name in usable})
    return timers, banks


def _needs_faiss(name: str) -> bool:
    """Whether the record ``name`` times FAISS."""
    return name in (FLAT, FLAT_BLAS) or SEARCHES[name][0] == "faiss"


def _blas(faiss: ModuleType, index: Any, xq: Any, k: int) -> None:
    """``index.search(xq, k)`` with FAISS's BLAS path forced, as
    :class:`acn.bank.search.FaissSearch`
    does."""
    saved = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_THRESHOLD
    try:
        index.search(xq, k)
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved


def knn_records(
    shapes: Sequence[tuple[int, int]] = KNN_SHAPES,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    queries: int = 128,
    k: int = 5,
    repeats: int = 7,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Median time of one exact k-NN call (own row excluded) per back-end and bank shape.

    Args:
        shapes: (N, D) bank shapes.
        backends: names from ``SEARCHES``, ``"faiss-IndexFlatL2"`` and
            ``"faiss-IndexFlatL2-blas"``.
        queries: B, queries per call.
        k: neighbours per query.
        repeats: timed calls per back-end, after one warm-up call each.
        device: where the bank lives (FAISS records only on the CPU).

    Returns:
        One dict per (shape, back-end): ``backend``, ``N``, ``D``, ``B``, ``k``, ``ms`` (median)
        and ``fallbacks`` (queries whose first proof failed over the timed calls; None for the
        prebuilt index, which has no proof).
    """
    unknown = [n for n in backends if n not in SEARCHES and n not in (FLAT, FLAT_BLAS)]
    if unknown:
        choices = [*SEARCHES, FLAT, FLAT_BLAS]
        raise ValueError(f"unknown k-NN back-ends {unknown}; choose from {choices}")
    device = torch.device(device)
    faiss = _faiss_or_none()
    saved = faiss.omp_get_max_threads() if faiss is not None else None
    if faiss is not None:  # the same CPU threads for both, so that neither is handicapped
        faiss.omp_set_num_threads(torch.get_num_threads())
    records = []
    try:
        for num_codes, dim in shapes:
            timers, banks = _timers(backends, num_codes, dim, queries, k, device)
            for fn in timers.values():
                fn()  # warm-up
            for bank in banks.values():
                bank.fallbacks = 0
            times: dict[str, list[float]] = {name: [] for name in timers}
            names = list(timers)
            for r in range(repeats):
                for name in names if r % 2 == 0 else names[::-1]:
                    _sync(device)
                    start = time.perf_counter()
                    timers[name]()
                    _sync(device)
                    times[name].append(time.perf_counter() - start)
            for name in names:
                records.append(
                    {
                        "backend": name,
                        "N": num_codes,
                        "D": dim,
                        "B": queries,
                        "k": k,
                        "ms": 1000 * statistics.median(times[name]),
                        "fallbacks": banks[name].fallbacks if name in banks else None,
                    }
                )
            del timers, banks
    finally:
        if faiss is not None:
            faiss.omp_set_num_threads(saved)
    return records


def format_records(records: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`knn_records`."""
    lines = []
    for r in records:
        fallbacks = "-" if r["fallbacks"] is None else str(r["fallbacks"])
        lines.append(
            f"  {r['backend']:22s} N={r['N']:>9,d} D={r['D']:>3d} B={r['B']} k={r['k']}: "
            f"{r['ms']:9.2f} ms   fallbacks {fallbacks}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(thread_counts())
    print(format_records(knn_records()))
