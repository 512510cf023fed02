"""A fresh process for the portability tests of the exact coding path (test_exact.py): under
whatever kernel settings its environment gives, it decodes the file it is handed and codes the
images itself.

    python portable_worker.py DIR TAG [--threads N] [--matmul high]

DIR holds ``model`` (save_pretrained), ``images.npy``, ``reference.acnz`` and
``reference-soft.acnz`` (the soft tour's); the worker writes ``TAG.npy`` and ``TAG-soft.npy``
(its decodes of the reference files) and ``TAG.acnz`` and ``TAG-soft.acnz`` (its own files of
the images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from acn.codec import decompress, encode
from acn.model import ACN


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("tag")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--matmul", default="highest")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul)
    model = ACN.from_pretrained(args.dir / "model").eval()
    images = np.load(args.dir / "images.npy")
    for suffix, soft in (("", False), ("-soft", True)):
        back = decompress(model, (args.dir / f"reference{suffix}.acnz").read_bytes())
        np.save(args.dir / f"{args.tag}{suffix}.npy", back)
        made = encode(model, images, exact=True, segments=3, threads=args.threads, soft_tour=soft)
        (args.dir / f"{args.tag}{suffix}.acnz").write_bytes(made.data)
    print(torch.backends.cpu.get_cpu_capability(), file=sys.stderr)


if __name__ == "__main__":
    main()
