"""The codec measured: the file against the model's bounds and against classic compressors, with
its speed, on a run's test split (``acn bench --codec RUN``, or
``python -m acn.experiments.bench_codec RUN``).

For every dither seed the file is made without seed search (its gap to the ordered bound is what
one encode gives), and the best of them is the ``--seeds`` file. The seeds also make disjoint
seed searches of ``search`` seeds each (seeds 0-3, 4-7, ... for 4: the file ``acn compress
--seeds 4`` keeps from each range, header included), so that seed search too is averaged over
seeds. For an ACN the soft tour's file is made with each seed as well. Compression and
decompression are timed separately (compression includes no verification here; ``acn
compress`` adds one decode).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from acn.codec import decompress, encode
from acn.codec.baselines import baseline_sizes
from acn.eval.load import load_run
from acn.experiments.compress import LN2, bounds
from acn.threads import using


def bench_codec(
    source: str,
    *,
    seeds: int = 4,
    split: str = "test",
    threads: int = 1,
    samples: int = 100,
    limit: int | None = None,
    search: int = 4,
    segments: int | None = None,
) -> dict:
    """Bits per image of the codec (each seed, and the best), of the baselines and the bounds,
    the gap to the bound in percent, and images per second encoding and decoding (``limit``:
    only the split's first images; ``segments``: the codec's default unless given)."""
    run = load_run(source, device="cpu")
    images = (
        run.splits[split].images[:limit].numpy().astype(np.uint8)
    )  # levels, as the codec holds them
    n = len(images)
    measured = bounds(run, images, samples, seed=0)
    reference = next(measured[k] for k in ("ordered", "elbo", "exact") if k in measured)
    options = {"threads": threads, "segments": segments}
    files, encode_s, decode_s = _timed_files(run.model, images, seeds, options)
    best = min(files, key=lambda f: len(f.data))
    nats = [8 * len(f.data) * LN2 / n for f in files]
    soft = _soft_tour(run.model, images, seeds, options) if run.model.kind == "acn" else None
    exact = _exact_path(run.model, images, seeds, options, nats, reference)
    others = baseline_sizes(images)
    return {
        "source": str(source),
        "split": split,
        "num_images": n,
        "image_shape": list(run.model.info.image_shape),
        "kind": run.model.kind,
        "threads": threads,
        "bounds_nats": measured,
        "reference": "ordered" if "ordered" in measured else next(iter(measured)),
        "file_nats_per_seed": nats,
        "gap_percent_per_seed": [100 * (v / reference - 1) for v in nats],
        "gap_percent_mean": 100 * (float(np.mean(nats)) / reference - 1),
        "seed_search": _searches(nats, search, reference),
        "best_of_seeds": {
            "seeds": seeds,
            "bits_per_image": 8 * len(best.data) / n,
            "gap_percent": 100 * (8 * len(best.data) * LN2 / n / reference - 1),
        },
        "segments": len(best.plan.lengths),
        "header_bytes": best.header_bytes,
        "baselines_bits_per_image": others,
        "codec_bits_per_image": 8 * len(best.data) / n,
        "soft_tour": soft
        and {
            "file_nats_per_seed": soft,
            "gap_percent_per_seed": [100 * (v / reference - 1) for v in soft],
            "gap_percent_mean": 100 * (float(np.mean(soft)) / reference - 1),
            "saving_nats_per_image": float(np.mean(nats) - np.mean(soft)),
            "ceiling_nats_per_image": math.lgamma(n + 1) / n,
        },
        "encode_images_per_s": n / float(np.median(encode_s)),
        "decode_images_per_s": n / decode_s,
        "exact_path": exact,
    }


def _exact_path(model, images, seeds: int, options: dict, nats, reference: float) -> dict:
    """The exact path's files for the same seeds, beside the float path's ``nats``."""
    n = len(images)
    files, encode_s, decode_s = _timed_files(model, images, seeds, {**options, "exact": True})
    exact_nats = [8 * len(f.data) * LN2 / n for f in files]
    return {
        "file_nats_per_seed": exact_nats,
        "gap_percent_mean": 100 * (float(np.mean(exact_nats)) / reference - 1),
        "size_vs_float_percent": 100 * (float(np.mean(exact_nats) / np.mean(nats)) - 1),
        "encode_images_per_s": n / float(np.median(encode_s)),
        "decode_images_per_s": n / decode_s,
    }


def _timed_files(model, images, seeds: int, options: dict) -> tuple[list, list[float], float]:
    """One file per seed (no seed search: the size of each, as a user without one gets it),
    their encode times, and the time to decode the smallest (checked against the images)."""
    files, encode_s = [], []
    for seed in range(seeds):
        start = time.perf_counter()
        made = encode(model, images, seeds=1, verify=False, first_seed=seed, **options)
        encode_s.append(time.perf_counter() - start)
        files.append(made)
    best = min(files, key=lambda f: len(f.data))
    with using(options["threads"]):
        start = time.perf_counter()
        back = decompress(model, best.data)
        decode_s = time.perf_counter() - start
    if not np.array_equal(back, images[best.order]):
        raise AssertionError("the codec's file did not decode to the images")
    return files, encode_s, decode_s


def _searches(nats: list[float], size: int, reference: float) -> dict | None:
    """The smallest file of each disjoint run of ``size`` seeds, and their mean gap."""
    groups = [nats[i : i + size] for i in range(0, len(nats) - size + 1, size)]
    if size < 2 or not groups:
        return None
    kept = [min(g) for g in groups]
    return {
        "seeds_per_search": size,
        "file_nats_per_search": kept,
        "gap_percent_per_search": [100 * (v / reference - 1) for v in kept],
        "gap_percent_mean": 100 * (float(np.mean(kept)) / reference - 1),
    }


def _soft_tour(model, images, seeds: int, options: dict) -> list[float]:
    """Nats per image of the soft tour's file for each seed (each decoded and compared)."""
    out = []
    for seed in range(seeds):
        made = encode(model, images, seeds=1, first_seed=seed, soft_tour=True, **options)
        out.append(8 * len(made.data) * LN2 / len(images))
    return out


def format_codec(report: dict) -> str:
    """A Markdown table of one bench_codec report."""
    n, b, kind = report["num_images"], report["bounds_nats"], report["kind"]
    rows = [
        f"{report['source']}, {report['split']} split ({n} images "
        f"{'x'.join(map(str, report['image_shape']))}), {report['threads']} threads",
        "",
        "| coder | bits per image | vs the bound |",
        "|---|---:|---:|",
    ]
    reference = b[report["reference"]]
    for key, value in b.items():
        rows.append(f"| bound: {key} | {value / LN2:.2f} | |")
    best = report["best_of_seeds"]
    rows.append(
        f"| acn compress ({kind}), one seed (mean of {len(report['file_nats_per_seed'])}) | "
        f"{np.mean(report['file_nats_per_seed']) / LN2:.2f} | {report['gap_percent_mean']:+.2f}% |"
    )
    search = report.get("seed_search")
    if search:
        rows.append(
            f"| acn compress ({kind}), search of {search['seeds_per_search']} seeds (mean of "
            f"{len(search['file_nats_per_search'])}) | "
            f"{np.mean(search['file_nats_per_search']) / LN2:.2f} | "
            f"{search['gap_percent_mean']:+.2f}% |"
        )
    rows.append(
        f"| acn compress ({kind}), best of {best['seeds']} seeds | {best['bits_per_image']:.2f} | "
        f"{best['gap_percent']:+.2f}% |"
    )
    exact, soft = report.get("exact_path"), report.get("soft_tour")
    for name, part in (("--exact", exact), ("soft tour", soft)):
        if part:
            rows.append(
                f"| acn compress ({kind}), {name} (mean of {len(part['file_nats_per_seed'])}) | "
                f"{np.mean(part['file_nats_per_seed']) / LN2:.2f} | "
                f"{part['gap_percent_mean']:+.2f}% |"
            )
    for name, bits in report["baselines_bits_per_image"].items():
        rows.append(f"| {name} | {bits:.2f} | {100 * (bits * LN2 / reference - 1):+.0f}% |")
    rows.append("")
    rows.append(
        f"encode {report['encode_images_per_s']:.1f} images/s, decode "
        f"{report['decode_images_per_s']:.1f} images/s ({report['segments']} segments)"
    )
    if exact:
        rows.append(
            f"exact path: encode {exact['encode_images_per_s']:.1f} images/s, decode "
            f"{exact['decode_images_per_s']:.1f} images/s; files "
            f"{exact['size_vs_float_percent']:+.2f}% against the float path's"
        )
    if soft:
        rows.append(
            f"soft tour: saves {soft['saving_nats_per_image'] / LN2:.2f} bits per image on the "
            f"greedy tour's file; ceiling log N!/N = {soft['ceiling_nats_per_image'] / LN2:.2f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--search", type=int, default=4, help="seeds per seed search")
    parser.add_argument("--limit", type=int, help="only the split's first images")
    parser.add_argument("--segments", type=int, help="segments (default: the codec's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    report = bench_codec(
        args.source,
        seeds=args.seeds,
        split=args.split,
        threads=args.threads,
        search=args.search,
        limit=args.limit,
        segments=args.segments,
    )
    print(format_codec(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
