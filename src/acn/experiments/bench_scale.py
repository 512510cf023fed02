"""The codec on a whole data set: compress and decompress tens of thousands of images, bit-exact,
with the wall time and peak memory of each side (``acn bench --codec-scale RUN``, or
``python -m acn.experiments.bench_scale RUN [--copies 12] [--flips 3] [--float] [--soft-tour]``).

The images are every image of the run's data set (all its splits: mnist5k's 5,000), each
repeated ``copies`` times with ``flips`` pixels changed at random in every copy (binary
levels flip; others move to a random level), so that the set is as large as a real one and
no two copies are equal. The model is the run's; the file is made with the exact path unless
``exact=False``, in the encoder's default layout (segments and parts by bits) unless given.

Peak memory is this process's resident high-water mark (``ru_maxrss``) after each side. A
decoding worker's own peak is not reported: Linux counts a spawned child's high-water mark from
before its exec, when it still shared this process's pages. Take the times with nothing else
running.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import numpy as np

from acn.codec import container, decompress, encode
from acn.eval.load import load_run


def flipped_copies(images: np.ndarray, copies: int, flips: int, levels: int, seed: int = 0):
    """(N * copies, C, H, W) uint8: copy k of every image with ``flips`` random pixels changed."""
    rng = np.random.default_rng(seed)
    out = np.repeat(images[None], copies, axis=0).reshape(-1, *images.shape[1:]).copy()
    flat = out.reshape(len(out), -1)
    where = np.stack([rng.choice(flat.shape[1], flips, replace=False) for _ in range(len(out))])
    rows = np.arange(len(out))[:, None]
    if levels == 2:
        flat[rows, where] = 1 - flat[rows, where]
    else:  # a level other than the pixel's own
        shift = rng.integers(1, levels, size=where.shape)
        flat[rows, where] = (flat[rows, where].astype(np.int64) + shift) % levels
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_scale(
    source: str,
    *,
    copies: int = 12,
    flips: int = 3,
    exact: bool = True,
    segments: int | None = None,
    parts: int | None = None,
    soft_tour: bool = False,
) -> dict:
    run = load_run(source, device="cpu")
    base = np.concatenate([split.images.numpy() for split in run.splits.values()])
    x = flipped_copies(base.astype(np.uint8), copies, flips, run.model.info.levels)
    n = len(x)
    start = time.perf_counter()
    made = encode(
        run.model,
        x,
        exact=exact,
        segments=segments,
        parts=parts,
        verify=False,
        soft_tour=soft_tour,
    )
    encode_s = time.perf_counter() - start
    encode_peak = _peak_mb()
    start = time.perf_counter()
    back = decompress(run.model, made.data)
    decode_s = time.perf_counter() - start
    if not np.array_equal(back, x[made.order]):
        raise RuntimeError("the file did not decode to its images")
    header = container.parse(made.data).header
    bits = 8 * len(made.data) / n
    return {
        "source": str(source),
        "num_images": n,
        "base_images": len(base),
        "copies": copies,
        "flips": flips,
        "exact": exact,
        "soft_tour": soft_tour,
        "segments": header.segments,
        "parts": header.parts,
        "bytes": len(made.data),
        "bits_per_image": bits,
        "order_bits_per_image": math.lgamma(n + 1) / math.log(2) / n,
        "encode_seconds": encode_s,
        "decode_seconds": decode_s,
        "encode_images_per_s": n / encode_s,
        "decode_images_per_s": n / decode_s,
        "peak_mb_after_encode": encode_peak,
        "peak_mb_after_decode": _peak_mb(),
    }


def format_scale(report: dict) -> str:
    r = report
    return "\n".join(
        [
            f"{r['source']}: {r['num_images']:,} images ({r['base_images']:,} x {r['copies']}, "
            f"{r['flips']} pixels flipped per copy){', exact path' if r['exact'] else ''}"
            f"{', soft tour' if r.get('soft_tour') else ''}",
            f"  {r['bytes']:,} bytes, {r['bits_per_image']:.1f} bits per image "
            f"(log2 N!/N = {r['order_bits_per_image']:.1f} bits: what an order costs, and what "
            "coding the set saves)",
            f"  {r['segments']} segments in {r['parts']} parts; encode {r['encode_seconds']:.0f} s "
            f"({r['encode_images_per_s']:.0f} images/s), decode {r['decode_seconds']:.0f} s "
            f"({r['decode_images_per_s']:.0f} images/s), bit-exact",
            f"  peak memory: {r['peak_mb_after_encode']:.0f} MB after encoding, "
            f"{r['peak_mb_after_decode']:.0f} MB after decoding (this process)",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--flips", type=int, default=3)
    parser.add_argument("--float", action="store_true", help="the float path, not the exact")
    parser.add_argument("--segments", type=int, default=None)
    parser.add_argument("--parts", type=int, default=None)
    parser.add_argument("--soft-tour", action="store_true", help="the soft tour's file")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    report = bench_scale(
        args.run,
        copies=args.copies,
        flips=args.flips,
        exact=not args.float,
        segments=args.segments,
        parts=args.parts,
        soft_tour=args.soft_tour,
    )
    print(format_scale(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
