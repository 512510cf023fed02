"""The brief trials behind the mnist5k presets' sizes: each candidate trains the ACN for the
same wall-clock budget on two cores, and its validation nats are compared at equal training time.

    python scripts/mnist5k_trials.py --out /tmp/trials [--seconds 180] [--threads 2]

Each candidate's seconds per step are measured first (a 4-step and a 24-step run after a
warm-up: the difference excludes start-up), then it trains for ``seconds`` of steps with four
validations. Printed: the parameters, seconds per step, and the validation total at each quarter
of the budget. Chosen on the validation split only; the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from acn import threads
from acn.config import load_config
from acn.store.checkpoint import load_checkpoint
from acn.train.loop import train

# name -> overrides of mnist5k-acn. Every PixelCNN sees the whole 28x28 image: the first
# kernel makes the reach k0//2 + (L - 1) * k//2 at least 27 (acn.nn.pixelcnn.receptive_field).
CANDIDATES: dict[str, list[str]] = {
    "C32 L6 k5 first35": [
        "model.decoder_channels=32",
        "model.pixelcnn_layers=6",
        "model.pixelcnn_kernel=5",
        "model.pixelcnn_first_kernel=35",
    ],
    "C32 L8 k3 first41": [
        "model.decoder_channels=32",
        "model.pixelcnn_layers=8",
        "model.pixelcnn_kernel=3",
        "model.pixelcnn_first_kernel=41",
    ],
    "C48 L6 k3 first45": [
        "model.decoder_channels=48",
        "model.pixelcnn_layers=6",
        "model.pixelcnn_kernel=3",
        "model.pixelcnn_first_kernel=45",
    ],
    "C64 L4 k3 first49": [
        "model.decoder_channels=64",
        "model.pixelcnn_layers=4",
        "model.pixelcnn_kernel=3",
        "model.pixelcnn_first_kernel=49",
    ],
    "C32 L4 k5 first43": [
        "model.decoder_channels=32",
        "model.pixelcnn_layers=4",
        "model.pixelcnn_kernel=5",
        "model.pixelcnn_first_kernel=43",
    ],
    "C24 L8 k3 first41": [
        "model.decoder_channels=24",
        "model.pixelcnn_layers=8",
        "model.pixelcnn_kernel=3",
        "model.pixelcnn_first_kernel=41",
    ],
    "C32 L12 k5 (no wide first)": [
        "model.decoder_channels=32",
        "model.pixelcnn_layers=12",
        "model.pixelcnn_kernel=5",
        "model.pixelcnn_first_kernel=7",
    ],
}
QUIET = ["train.progress=false", "train.tensorboard=false"]


def _timed_run(overrides: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train(load_config("mnist5k-acn", overrides), out)
    return time.perf_counter() - t0


def seconds_per_step(overrides: list[str], out: Path) -> float:
    """Training seconds per step, start-up and the final validation subtracted out."""
    short = [*overrides, *QUIET, "train.eval_every=0", "train.checkpoint_every=1000"]
    _timed_run([*short, "train.steps=2"], out / "warm")  # data read and cached, code paths warm
    a = _timed_run([*short, "train.steps=4"], out / "a")
    b = _timed_run([*short, "train.steps=24"], out / "b")
    return (b - a) / 20


def trial(name: str, overrides: list[str], out: Path, seconds: float) -> dict:
    per_step = seconds_per_step(overrides, out / "timing")
    steps = max(4, int(seconds / per_step) // 4 * 4)
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)
    config = load_config(
        "mnist5k-acn",
        [
            *overrides,
            *QUIET,
            f"train.steps={steps}",
            f"train.eval_every={steps // 4}",
            f"train.checkpoint_every={steps}",
        ],
    )
    train(config, run)
    weights = load_checkpoint(run / "checkpoints/last.pt")["model"]
    params = sum(t.numel() for k, t in weights.items() if not k.startswith("bank."))
    val = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "val"
    ]
    return {
        "name": name,
        "params": params,
        "seconds_per_step": round(per_step, 3),
        "steps": steps,
        "val_total": [
            (r["step"], round(r["step"] * per_step), round(r["total_nats"], 2)) for r in val
        ],
        "val_kl": [round(r["kl_nats"], 2) for r in val],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="candidate names (default: all)")
    args = parser.parse_args()
    threads.use(args.threads)
    results = []
    for name, overrides in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        result = trial(name, overrides, args.out / name.replace(" ", "_"), args.seconds)
        results.append(result)
        print(json.dumps(result), flush=True)
    quarters = "1/4, 2/4, 3/4, 4/4"
    print(f"\n| candidate | params | s/step | steps | val total at {quarters} of the budget | KL |")
    print("|---|---:|---:|---:|---|---|")
    for r in results:
        totals = ", ".join(f"{t:.2f}" for _, _, t in r["val_total"])
        cells = [r["name"], f"{r['params']:,}", r["seconds_per_step"], r["steps"], totals]
        print("| " + " | ".join(map(str, [*cells, r["val_kl"][-1]])) + " |")


if __name__ == "__main__":
    sys.exit(main())
