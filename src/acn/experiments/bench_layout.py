"""Decoding speed against a file's layout: segments and parts, side by side in one run.

    python -m acn.experiments.bench_layout RUN [--split test] [--limit N] [--exact]
        [--layouts 3x1,8x1,32x1,autoxauto,32x2] [--seeds 2] [--out FILE.json]

Each layout ``SxP`` (``auto`` for the encoder's choice by bits) is one file per dither seed of
the same images; for each, the size (bits per image, and in percent against the first layout,
paired by seed) and the encode and decode times. Decoding runs as ``acn decompress`` does: one
process per part, spawned (their start-up, a fresh interpreter importing torch, is counted).
Take the times with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from acn.codec import container, decompress, encode
from acn.eval.load import load_run

DEFAULT_LAYOUTS = "3x1,8x1,32x1,autoxauto,32x2"


def parse_layouts(text: str) -> list[tuple[int | None, int | None]]:
    """``"3x1,autoxauto"`` -> [(3, 1), (None, None)]."""
    layouts = []
    for item in text.split(","):
        segments, _, parts = item.strip().partition("x")
        if not parts:
            raise ValueError(f"a layout is SEGMENTSxPARTS (e.g. 32x2 or autoxauto), got {item!r}")
        layouts.append(tuple(None if v == "auto" else int(v) for v in (segments, parts)))
    return layouts


def bench_layout(
    source: str,
    layouts: list[tuple[int | None, int | None]],
    *,
    split: str = "test",
    limit: int | None = None,
    seeds: int = 2,
    exact: bool = False,
) -> dict:
    run = load_run(source, device="cpu")
    images = run.splits[split].images[:limit].numpy().astype(np.uint8)
    n = len(images)
    rows = []
    for segments, parts in layouts:
        sizes, encode_s, decode_s, made = [], [], [], None
        for seed in range(seeds):
            start = time.perf_counter()
            made = encode(
                run.model,
                images,
                segments=segments,
                parts=parts,
                exact=exact,
                first_seed=seed,
                verify=False,
            )
            encode_s.append(time.perf_counter() - start)
            header = container.parse(made.data).header
            start = time.perf_counter()
            back = decompress(run.model, made.data)
            decode_s.append(time.perf_counter() - start)
            if not np.array_equal(back, images[made.order]):
                raise RuntimeError(f"layout {segments}x{parts} did not decode to its images")
            sizes.append(8 * len(made.data) / n)
        rows.append(
            {
                "layout": f"{segments or 'auto'}x{parts or 'auto'}",
                "segments": header.segments,
                "parts": header.parts,
                "steps": max(plan.steps for plan in made.plans),
                "bits_per_image": statistics.fmean(sizes),
                "bits_per_seed": sizes,
                "encode_images_per_s": n / statistics.fmean(encode_s),
                "decode_images_per_s": n / statistics.fmean(decode_s),
            }
        )
    first = rows[0]["bits_per_seed"]
    for row in rows:
        change = [100 * (b / a - 1) for a, b in zip(first, row["bits_per_seed"], strict=True)]
        row["size_percent_vs_first"] = statistics.fmean(change)
        row["size_percent_stderr"] = (
            statistics.stdev(change) / len(change) ** 0.5 if len(change) > 1 else 0.0
        )
    return {"source": source, "split": split, "num_images": n, "exact": exact, "rows": rows}


def format_layouts(report: dict) -> str:
    lines = [
        f"{report['source']}, {report['split']} split, {report['num_images']} images"
        f"{', exact path' if report['exact'] else ''}",
        "| layout | segments | parts | steps | bits/image | size vs first | encode img/s "
        "| decode img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['layout']} | {row['segments']} | {row['parts']} | {row['steps']} | "
            f"{row['bits_per_image']:.1f} | {row['size_percent_vs_first']:+.2f}% "
            f"+- {row['size_percent_stderr']:.2f} | {row['encode_images_per_s']:.1f} | "
            f"{row['decode_images_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="the split's first N images")
    parser.add_argument("--layouts", default=DEFAULT_LAYOUTS)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--exact", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    report = bench_layout(
        args.run,
        parse_layouts(args.layouts),
        split=args.split,
        limit=args.limit,
        seeds=args.seeds,
        exact=args.exact,
    )
    print(format_layouts(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
