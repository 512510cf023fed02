"""The brief trials behind the mnist5k presets' sizes: each candidate trains the ACN for about
the same wall-clock budget on two cores, and the validation totals are compared at equal
measured training time.

    python scripts/mnist5k_trials.py --out /tmp/trials [--seconds 200] [--threads 2]

Each candidate's seconds per step are estimated first (a 2-step and a 102-step run after a
warm-up: the difference cancels start-up, which alone varies by 1-3 s), which sets its number
of steps for ``seconds``; then it trains with four validations, timed. A validation's time is
its share of the measured run (steps / total steps). Printed: parameters, seconds per step,
every validation with its time, and each candidate's validation total interpolated at the
shortest run's measured time, the number the candidates are ranked by. Chosen on the
validation split only; the test split is never read.
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

# name -> overrides of mnist5k-acn. All but the last see the whole 28x28 image: the first kernel
# makes the reach k0//2 + (L - 1) * k//2 at least 27 (acn.nn.pixelcnn.receptive_field); the last,
# a deep stack of 5x5 layers with a 7x7 first one, reaches 25.
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
    "C32 L12 k5 first7": [
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
    """Training seconds per step, start-up and the final validation cancelled out."""
    short = [*overrides, *QUIET, "train.eval_every=0", "train.checkpoint_every=1000"]
    _timed_run([*short, "train.steps=2"], out / "warm")  # data read and cached, code paths warm
    a = _timed_run([*short, "train.steps=2"], out / "a")
    b = _timed_run([*short, "train.steps=102"], out / "b")
    return (b - a) / 100


def trial(name: str, overrides: list[str], out: Path, seconds: float) -> dict:
    per_step = seconds_per_step(overrides, out / "timing")
    steps = max(4, int(seconds / per_step) // 4 * 4)
    config = [
        *overrides,
        *QUIET,
        f"train.steps={steps}",
        f"train.eval_every={steps // 4}",
        f"train.checkpoint_every={steps}",
    ]
    run = out / "run"
    elapsed = _timed_run(config, run)
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
        "seconds": round(elapsed, 1),
        # (step, measured seconds at that validation, validation total nats)
        "val_total": [
            (r["step"], round(elapsed * r["step"] / steps, 1), round(r["total_nats"], 2))
            for r in val
        ],
        "val_kl": [round(r["kl_nats"], 2) for r in val],
    }


def at_time(curve: list[tuple[int, float, float]], seconds: float) -> float:
    """A validation curve's total at ``seconds``, linear between its points (clamped to them)."""
    times, totals = [t for _, t, _ in curve], [v for _, _, v in curve]
    if seconds <= times[0]:
        return totals[0]
    points = list(zip(times, totals, strict=True))
    for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
        if seconds <= t1:
            return v0 + (v1 - v0) * (seconds - t0) / (t1 - t0)
    return totals[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=200.0)
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
    common = min(r["seconds"] for r in results)
    print(
        f"\n| candidate | params | s/step | steps | measured s | val total at 1/4..4/4 | "
        f"val total at {common:.0f} s | KL |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in sorted(results, key=lambda r: at_time(r["val_total"], common)):
        totals = ", ".join(f"{v:.2f}" for _, _, v in r["val_total"])
        cells = [r["name"], f"{r['params']:,}", r["seconds_per_step"], r["steps"], r["seconds"]]
        cells += [totals, f"{at_time(r['val_total'], common):.2f}", r["val_kl"][-1]]
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    sys.exit(main())
