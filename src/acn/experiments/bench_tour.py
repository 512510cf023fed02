"""Timing and memory of the greedy tour by the exact k-NN graph, against N.

Each record makes N codes of dimension D, runs :func:`acn.bank.tour.graph_tour` and reports its
wall and CPU seconds, the process's peak resident memory, the steps that fell back (the k-NN
list used up), the (query, row) pairs its search scored against N^2, and the tour's total
squared distance. Up to ``--exhaustive-max`` codes the exhaustive tour runs too, and the two
orders must be equal (the bench fails otherwise). Outside ``--quick`` each record runs in a
fresh process, so that its peak memory is its own.

Codes:

- ``mixture``: a Gaussian mixture, ``--clusters`` centres drawn N(0, 9 I), unit spread: every
  cluster a full-dimensional blob (the hard case for any exact search).
- ``trained``: shaped after a trained ACN's code bank (mnist5k, D = 16, whose covariance has 5
  large eigenvalues, 33 to 2.8, and a tail from 0.26 to 0.014): 10 classes in 5 strong
  directions, a weak Gaussian tail (standard deviations 0.5 down to 0.12) in the others,
  randomly rotated.
- ``--codes FILE``: real codes, from a checkpoint's ``model['bank.codes']`` or a ``.npy``.

Run ``python -m acn.experiments.bench_tour`` for the standard table (slow: it goes to 1.28M
codes), ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from acn.bank.tour import DEFAULT_K, exhaustive_tour, graph_tour
from acn.bank.tourgraph import sq_distances

SIZES = (5_000, 20_000, 60_000, 250_000, 1_280_000)
QUICK = ({"n": 1_500, "d": 8, "kind": "mixture"}, {"n": 1_500, "d": 16, "kind": "trained"})


def mixture_codes(n: int, d: int, clusters: int = 50, seed: int = 0) -> torch.Tensor:
    """(n, d) float32 codes of a Gaussian mixture (module doc)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g) * 3
    pick = torch.randint(0, clusters, (n,), generator=g)
    return centres[pick] + torch.randn(n, d, generator=g)


def trained_codes(n: int, d: int, seed: int = 0, classes: int = 10, strong: int = 5):
    """(n, d) float32 codes shaped like a trained ACN's code bank (module doc)."""
    g = torch.Generator().manual_seed(seed)
    r = min(strong, d)
    centres = torch.randn(classes, r, generator=g) * 4
    pick = torch.randint(0, classes, (n,), generator=g)
    z = centres[pick] + torch.randn(n, r, generator=g) * torch.linspace(2, 1, r)
    weak = torch.logspace(math.log10(0.5), math.log10(0.12), max(d - r, 1))[: d - r]
    x = torch.cat([z, torch.randn(n, d - r, generator=g) * weak], dim=1)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (x.double() @ rotation).float()


def load_codes(path: str) -> torch.Tensor:
    """Codes from a checkpoint (``model['bank.codes']``) or a ``.npy`` file."""
    if path.endswith(".npy"):
        import numpy as np

        return torch.from_numpy(np.load(path)).float()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["model"]["bank.codes"].float()


def _codes(spec: dict[str, Any]) -> torch.Tensor:
    if spec["kind"] == "mixture":
        return mixture_codes(spec["n"], spec["d"], spec.get("clusters", 50))
    if spec["kind"] == "trained":
        return trained_codes(spec["n"], spec["d"])
    return load_codes(spec["kind"])


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _total(codes: torch.Tensor, order: torch.Tensor) -> float:
    x = codes.double()[order]
    return math.fsum(sq_distances(x[:-1], x[1:]).tolist())


def measure(spec: dict[str, Any], exhaustive_max: int, k: int = DEFAULT_K) -> dict[str, Any]:
    """One record (module doc) for ``spec``: ``n``, ``d``, ``kind`` (and ``clusters``)."""
    codes = _codes(spec)
    n, d = codes.shape
    before = _peak_mib()
    wall, cpu = time.perf_counter(), time.process_time()
    order, stats = graph_tour(codes, 0, k=k)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    record = {
        **spec,
        "n": n,
        "d": d,
        "k": stats.k,
        "seconds": wall,
        "cpu_seconds": cpu,
        "peak_mib": _peak_mib(),
        "codes_mib": before,  # the peak before the tour: interpreter, libraries, codes
        "fallbacks": stats.fallbacks,
        "cells": stats.graph.cells,
        "scored_fraction": stats.graph.scored / max(1, n * n),
        "exhaustive_lists": stats.graph.exhaustive,
        "total_sq_distance": _total(codes, order),
        "exhaustive_seconds": None,
        "same_as_exhaustive": None,
    }
    if n <= exhaustive_max:
        cpu = time.process_time()
        reference = exhaustive_tour(codes, 0)
        record["exhaustive_seconds"] = time.process_time() - cpu
        record["same_as_exhaustive"] = bool(torch.equal(reference, order))
        assert record["same_as_exhaustive"], f"the graph tour differs at {spec}"
        assert _total(codes, reference) == record["total_sq_distance"]
    return record


def _in_child(spec: dict[str, Any], exhaustive_max: int, threads: int) -> dict[str, Any]:
    """:func:`measure` in a fresh process, so that the peak memory is the record's own."""
    argv = [sys.executable, "-m", "acn.experiments.bench_tour", "--child", json.dumps(spec)]
    argv += ["--exhaustive-max", str(exhaustive_max), "--threads", str(threads)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(threads)


def _label(record: dict[str, Any]) -> str:
    """``mixture-50``, ``trained``, or the run (or file) the real codes came from."""
    kind = record["kind"]
    if kind == "mixture":
        return f"mixture-{record.get('clusters', 50)}"
    path = Path(kind)
    return path.parents[1].name if path.parent.name == "checkpoints" else path.name


def format_records(records: list[dict[str, Any]]) -> str:
    """The records as a Markdown table."""
    head = (
        "| codes | N | D | s | CPU s | peak MiB (tour) | fallbacks | scored / N^2 "
        "| tour sq. distance | exhaustive CPU s | same |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        kind = _label(r)
        same = {True: "yes", None: "-"}.get(r["same_as_exhaustive"], "NO")
        tour_mib = r["peak_mib"] - r["codes_mib"]
        ex = "-" if r["exhaustive_seconds"] is None else f"{r['exhaustive_seconds']:.2f}"
        lines.append(
            f"| {kind} | {r['n']:,} | {r['d']} | {r['seconds']:.2f} "
            f"| {r['cpu_seconds']:.2f} | {r['peak_mib']:.0f} ({tour_mib:+.0f}) "
            f"| {r['fallbacks']:,} ({r['fallbacks'] / max(1, r['n']):.1%}) "
            f"| {r['scored_fraction']:.4f} | {r['total_sq_distance']:.6g} | {ex} | {same} |"
        )
    return "\n".join(lines)


def _specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.quick:
        return [dict(s) for s in QUICK]
    kinds = [k for k in args.kinds.split(",") if k] + ([args.codes] if args.codes else [])
    specs = []
    for kind in kinds:
        if kind not in ("mixture", "trained"):
            specs.append({"n": None, "d": None, "kind": kind})
            continue
        for n in (int(s) for s in args.sizes.split(",") if s):
            specs.append({"n": n, "d": 16, "kind": kind, "clusters": args.clusters})
        if args.wide:
            specs.append({"n": args.wide, "d": 128, "kind": kind, "clusters": args.clusters})
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small sets, in this process")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="N at D = 16")
    parser.add_argument("--wide", type=int, default=60_000, help="N at D = 128 (0: none)")
    parser.add_argument("--kinds", default="mixture,trained")
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--codes", help="real codes: a checkpoint or a .npy")
    parser.add_argument("--exhaustive-max", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the records as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.exhaustive_max)))
        return 0
    records = []
    for spec in _specs(args):
        if args.quick:
            records.append(measure(spec, args.exhaustive_max))
        else:
            records.append(_in_child(spec, args.exhaustive_max, args.threads))
        print(format_records(records[-1:]).splitlines()[-1], flush=True)
    print(format_records(records))
    if args.out:
        report = {"threads": args.threads, "records": records}
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
