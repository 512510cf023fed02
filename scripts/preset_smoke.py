"""Train every dataset preset, at its full architecture, for a few steps on synthetic files of
the right shape and format: that each one trains, and how long its steps take here.

    python scripts/preset_smoke.py --out /tmp/presets [--steps 3] [--batch-size 8]

Not a result about what the presets reach: the data are noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_datasets import _celeba, _mnist_static  # noqa: E402
from test_formats import write_cifar, write_imagenet  # noqa: E402

from acn.config import load_config  # noqa: E402
from acn.train.loop import train  # noqa: E402

WRITERS = {
    "mnist": _mnist_static,
    "cifar10": lambda root, rng: write_cifar(root, rng, per_batch=20),
    "imagenet32": lambda root, rng: write_imagenet(root, rng, per_batch=6),
    "celeba": _celeba,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(
        "| preset | image | likelihood | parameters "
        f"| wall s ({args.steps} steps + validation) | val nats |"
    )
    print("|---|---|---|---:|---:|---:|")
    for dataset, write in WRITERS.items():
        root = args.out / "data" / dataset
        if not root.exists():
            write(root, np.random.default_rng(0))
        for kind in ("acn", "vae", "pixelcnn"):
            preset = f"{dataset}-{kind}"
            overrides = [
                f"data.root={root}",
                f"train.steps={args.steps}",
                f"train.batch_size={args.batch_size}",
                "train.eval_batch_size=8",
                "train.progress=false",
                "train.tensorboard=false",
            ]
            config = load_config(preset, overrides)
            run = args.out / "runs" / preset
            started = time.perf_counter()
            summary = train(config, run)
            seconds = time.perf_counter() - started
            import torch

            state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            params = sum(v.numel() for k, v in state["model"].items() if not k.startswith("bank"))
            shape = "x".join(map(str, state["data_info"]["image_shape"]))
            print(
                f"| {preset} | {shape} | {config.model.likelihood} | {params:,} | "
                f"{seconds:.1f} | {summary['val']['total_nats']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
