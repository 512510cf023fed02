"""The codec's tours against N on log-log axes, from the benches' JSON (docs/codec.md,
"The tour at scale"):

    python scripts/plot_scaling.py --tour runs/bench-tour-*.json --soft runs/bench-soft.json \
        --out docs/images/codec-scaling.png

- the greedy tour by the exact k-NN graph (``python -m acn.experiments.bench_tour --out``),
  CPU seconds per code set, and the exhaustive tour where it ran;
- the soft tour's own work (``python -m acn.experiments.bench_soft --sizes ... --out``): the
  encoder's choices, the decoder's, and the scores.

Each series is drawn with the slope of its last two points in the legend (the growth exponent
the extrapolations in the docs use).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _slope(points: list[tuple[float, float]]) -> str:
    if len(points) < 2:
        return ""
    (n0, t0), (n1, t1) = points[-2:]
    return f" (N^{math.log(t1 / t0) / math.log(n1 / n0):.1f} at the end)"


def series(tour: dict | None, soft: dict | None) -> dict[str, list[tuple[float, float]]]:
    """Named (N, seconds) series, each sorted by N."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in (tour or {}).get("records", []):
        if r.get("d") != 16:
            continue
        out.setdefault(f"greedy tour, k-NN graph ({r['kind']} codes)", []).append(
            (r["n"], r["cpu_seconds"])
        )
        if r.get("exhaustive_seconds"):
            out.setdefault(f"greedy tour, exhaustive ({r['kind']} codes)", []).append(
                (r["n"], r["exhaustive_seconds"])
            )
    for w in (soft or {}).get("work", []):
        n = w["num_images"]
        out.setdefault("soft tour: encoder's choices", []).append((n, w["encoder_choices_seconds"]))
        out.setdefault("soft tour: decoder's choices", []).append((n, w["decoder_choices_seconds"]))
        out.setdefault("soft tour: scores (exact networks)", []).append((n, w["scores_seconds"]))
    return {name: sorted(points) for name, points in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tour", type=Path, nargs="*", default=[])
    parser.add_argument("--soft", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    records = [r for path in args.tour for r in json.loads(path.read_text())["records"]]
    tour = {"records": records}
    soft = json.loads(args.soft.read_text()) if args.soft else None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, points in series(tour, soft).items():
        ns, ts = zip(*points, strict=True)
        style = "--" if "exhaustive" in name else ":" if "scores" in name else "-"
        ax.loglog(ns, ts, style, marker="o", label=name + _slope(points))
    ax.set_xlabel("N (codes or images)")
    ax.set_ylabel("seconds (one thread)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("The codec's tours against N, one core of 2, nothing else running")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
