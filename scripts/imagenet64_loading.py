"""Loading time and peak memory of a synthetic ImageNet-64-sized set (1,281,167 training images
in the ten npz batch files of the downsampled-ImageNet release, plus 50,000 validation images).

    python scripts/imagenet64_loading.py --root /big/disk/folder [--images 1281167]

Writes the npz files (15.7 GB for the full size; the pixels are a cheap pattern, which does not
matter to loading) unless they are there already, then loads them twice through
``acn.data.datasets.load_splits``, each time in a fresh process: the first load converts the
batches into
the memory-mapped uint8 cache, the second maps the cache. Prints wall time and the process's
peak resident memory for each (which counts the pages of mapped files it touched, page cache
the kernel can drop) and its private memory at the end, after reading 128 images spread over
the set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
import torch
from acn.config import load_config
from acn.data.datasets import load_splits
started = time.perf_counter()
config = load_config("imagenet32-acn", ["data.name=imagenet64", "data.root=" + sys.argv[1]])
splits, info = load_splits(config.data)
seconds = time.perf_counter() - started
batch = splits["train"].images[torch.arange(0, len(splits["train"]), 10007)].float().mean()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
anon = int(status["RssAnon"].split()[0]) / 2**20  # private memory; the rest is page cache
print(json.dumps({"seconds": seconds, "peak_rss_gib": peak, "train": len(splits["train"]),
                  "anon_gib": anon,
                  "val": len(splits["val"]), "test": len(splits["test"]),
                  "shape": list(info.image_shape), "name": info.name, "mean": float(batch)}))
"""


def write(root: Path, images: int, val_images: int) -> float:
    folder = root / "imagenet64"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    per_batch = -(-images // 10)
    row = (np.arange(3 * 64 * 64) % 251).astype(np.uint8)
    for i in range(1, 11):
        path = folder / f"train_data_batch_{i}.npz"
        n = min(per_batch, images - (i - 1) * per_batch)
        if not path.exists():
            data = np.empty((n, row.size), np.uint8)
            data[:] = row
            data[:, 0] = np.arange(n) % 256  # rows differ a little
            np.savez(path, data=data, labels=np.arange(n) % 1000 + 1)
            del data
    val = folder / "val_data.npz"
    if not val.exists():
        data = np.tile(row, (val_images, 1))
        np.savez(val, data=data, labels=np.arange(val_images) % 1000 + 1)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1_281_167)
    parser.add_argument("--val-images", type=int, default=50_000)
    args = parser.parse_args()
    print(f"writing npz files: {write(args.root, args.images, args.val_images):.0f} s")
    for label in ("first load (builds the cache)", "second load (maps the cache)"):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.root)], capture_output=True, text=True
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{label}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_gib']:.2f} GiB "
            f"(private memory at the end {result['anon_gib']:.2f} GiB), "
            f"splits {result['train']}/{result['val']}/{result['test']} of {result['shape']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
