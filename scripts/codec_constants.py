"""The codec's three format constants re-chosen on a validation split: the latent grid's bin
width, the segment rule and the start grid's width (the encoder's first latent).

    python scripts/codec_constants.py RUN [--split val] [--seeds 16] [--segments auto,1,8]
        [--deltas 0.5,0.7071,1] [--starts 1,2,4] [--exact] [--threads 1] [--out FILE.json]

For each candidate value (the others at the format's defaults) every dither seed's file is
made without seed search (``verify=False``: its size is what is measured; the round trips are
the test suite's job), and the mean file size is set against the model's ordered bound on the
same images (100 latent samples). Printed: the mean gap in percent with its standard error over
seeds, per candidate. Run it on ``val`` to choose, then once on ``test`` to report. A segment
count of ``auto`` is the encoder's own choice by bits (:mod:`acn.codec.segments`); ``--exact``
measures the exact path's files (on 28x28 digits 3-4x faster to encode than the float path's).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

from acn import threads
from acn.codec import bitsback, container, encode, files
from acn.codec.files import DEFAULT_DELTA
from acn.eval.load import load_run
from acn.experiments.compress import LN2, bounds

DELTAS = (0.5, 2**-0.5, 1.0)
START_DELTAS = (1.0, 2.0, 4.0)


def _width(text: str) -> float:
    """A bin width as given (0.7071 for sqrt(1/2)), snapped to the power of sqrt(1/2) it names."""
    return container.delta_of(round(-2 * math.log2(float(text))))


def _gaps(model, images, reference: float, seeds: int, **options) -> dict:
    """Every seed's file for one candidate, its mean gap printed as soon as it is measured (a
    sweep takes tens of minutes on 2 cores: what is done survives an interruption)."""
    n = len(images)
    nats = []
    for seed in range(seeds):
        made = encode(model, images, seeds=1, first_seed=seed, verify=False, **options)
        nats.append(8 * len(made.data) * LN2 / n)
    gaps = [100 * (v / reference - 1) for v in nats]
    result = {
        "options": {k: v for k, v in options.items()},
        "nats_per_image": statistics.fmean(nats),
        "gap_percent": statistics.fmean(gaps),
        "stderr_percent": statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else 0.0,
        "segments": len(made.plan.lengths),
    }
    print(
        f"  {options}: {result['nats_per_image']:8.3f} nats, gap {result['gap_percent']:+.2f}% "
        f"+- {result['stderr_percent']:.2f} ({result['segments']} segments)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="val")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--segments", default="auto,1,2,4", help="segment counts to try")
    parser.add_argument("--exact", action="store_true", help="the exact path's files")
    parser.add_argument("--deltas", default=",".join(f"{d:g}" for d in DELTAS))
    parser.add_argument("--starts", default=",".join(f"{d:g}" for d in START_DELTAS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    threads.use(args.threads)
    run = load_run(args.run, device="cpu")
    images = run.splits[args.split].images.numpy()
    start = time.perf_counter()
    measured = bounds(run, images, samples=100, seed=0)
    reference = measured["ordered"]
    report = {"run": args.run, "split": args.split, "num_images": len(images), "bounds": measured}
    print(
        f"{args.run}, {args.split} split, {len(images)} images, ordered bound {reference:.3f} "
        f"nats; {args.seeds} seeds per candidate",
        flush=True,
    )
    exact = {"exact": True} if args.exact else {}
    report["exact"] = args.exact
    report["delta"] = {
        f"{d:.3f}": _gaps(run.model, images, reference, args.seeds, delta=d, **exact)
        for d in (_width(v) for v in args.deltas.split(",") if v)
    }
    report["segments"] = {
        s: _gaps(
            run.model,
            images,
            reference,
            args.seeds,
            segments=None if s == "auto" else int(s),
            **exact,
        )
        for s in args.segments.split(",")
    }
    saved = bitsback.START_DELTA
    report["start_delta"] = {}
    try:
        for width in (
            float(v) for v in args.starts.split(",") if v
        ):  # the float path reads bitsback's, the exact path files'
            bitsback.START_DELTA = files.START_DELTA = width
            report["start_delta"][f"{width:g}"] = _gaps(
                run.model, images, reference, args.seeds, delta=DEFAULT_DELTA, **exact
            )
    finally:
        bitsback.START_DELTA = files.START_DELTA = saved
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{report['seconds']} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
