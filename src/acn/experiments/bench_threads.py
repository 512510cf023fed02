"""Thread settings on an idle and on a loaded machine, measured side by side.

Each measurement is a fresh process (``python -m acn.experiments.bench_threads --child``), since
OpenMP reads its wait policy once, when torch loads. A *setting* is the environment a process
starts with: torch's default (no variable: every core, threads that spin while they wait) or the
library's choice (:mod:`acn.threads`). Each is timed on the machine as it is, and again beside
one competing CPU-bound process that this module starts itself (a pure-Python loop, one core's
worth of work: the ordinary case of a second job on a small machine).

Workloads, each the median of repeated timings after a warm-up:

- ``train8``: a training step of the ``digits-acn`` preset (batch 64, 8x8).
- ``train28``: a training step of the ``mnist-acn`` preset's networks (batch 32, 28x28, binary
  images drawn at random: the time does not depend on the pixels).
- ``sample8``: a daydream of the ``digits-acn`` preset (8 chains x 8 steps, cached decoding).
- ``sample28``: 16 images drawn by the ``mnist-acn`` preset's decoder (cached decoding).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

WORKLOADS = ("train8", "train28", "sample8", "sample28")
# Settings by name: the environment a measured process starts with (None: unset), and whether
# the library chooses its threads (acn.threads.use) or torch's choice is left as it is.
SETTINGS: dict[str, tuple[dict[str, str | None], bool]] = {
    "torch default": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None}, False),
    "acn auto": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None}, True),
    "1 thread": ({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": None}, False),
    "passive": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": "PASSIVE"}, False),
}
_SPIN = "while True:\n    pass\n"


def _median_seconds(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_step(preset: str, shape: tuple[int, int, int], batch: int):
    import torch

    from acn.experiments.bench_decoding import synthetic_model

    n = 512
    model = synthetic_model(preset, [f"train.batch_size={batch}"], shape, "cpu", n).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=model.config.train.lr)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 2, (n, *shape), generator=g)
    step = [0]

    def run() -> None:
        index = (torch.arange(batch) + step[0] * batch) % n
        step[0] += 1
        terms = model(images[index], index=index, generator=g, update_bank=True)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()

    return run


def _daydream():
    import torch

    from acn import sampling
    from acn.experiments.bench_decoding import synthetic_model

    model = synthetic_model("digits-acn", [], (1, 8, 8), "cpu")
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 2, (8, 1, 8, 8), generator=g)
    return torch.no_grad()(lambda: sampling.daydream(model, real, 8, g))


def _decode28():
    import torch

    from acn.experiments.bench_decoding import synthetic_model

    decoder = synthetic_model("mnist-acn", [], (1, 28, 28), "cpu").decoder
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, decoder.code_dim, generator=g)
    return torch.no_grad()(lambda: decoder.sample(z, g, cached=True))


def _child(workload: str, quick: bool, choose: bool) -> dict[str, Any]:
    """Time one workload in this process, under the thread settings it started with (and, with
    ``choose``, the count the library picks)."""
    import torch

    from acn import threads

    count = threads.use() if choose else torch.get_num_threads()
    policy = os.environ.get("OMP_WAIT_POLICY", "spin")
    used = f"{count} ({policy})"
    if workload == "train8":
        fn, warmup, repeats = _train_step("digits-acn", (1, 8, 8), 64), 3, 10 if quick else 30
    elif workload == "train28":
        fn, warmup, repeats = _train_step("mnist-acn", (1, 28, 28), 32), 1, 3 if quick else 8
    elif workload == "sample8":
        fn, warmup, repeats = _daydream(), 2, 3 if quick else 15
    else:
        fn, warmup, repeats = _decode28(), 1, 2 if quick else 9
    return {"workload": workload, "threads": used, "seconds": _median_seconds(fn, warmup, repeats)}


def _environment(setting: str) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in SETTINGS[setting][0].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _measure(setting: str, workload: str, loaded: bool, quick: bool) -> dict[str, Any]:
    competitor = subprocess.Popen([sys.executable, "-c", _SPIN]) if loaded else None
    try:
        args = [sys.executable, "-m", "acn.experiments.bench_threads", "--child", workload]
        args += ["--quick"] if quick else []
        done = subprocess.run(
            [*args, *(["--choose"] if SETTINGS[setting][1] else [])],
            env=_environment(setting),
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if done.returncode != 0:
        raise RuntimeError(f"the {workload} measurement failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def thread_records(
    settings: tuple[str, ...] = ("torch default", "acn auto"),
    workloads: tuple[str, ...] = WORKLOADS,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """Seconds per workload for each setting, idle and loaded, and the ratios the targets read:
    loaded over idle, and each setting's idle time over torch's default."""
    records = []
    for workload in workloads:
        for setting in settings:
            idle = _measure(setting, workload, False, quick)
            loaded = _measure(setting, workload, True, quick)
            records.append(
                {
                    "workload": workload,
                    "setting": setting,
                    "threads_idle": idle["threads"],
                    "threads_loaded": loaded["threads"],
                    "idle_s": idle["seconds"],
                    "loaded_s": loaded["seconds"],
                    "loaded_over_idle": loaded["seconds"] / idle["seconds"],
                }
            )
        base = next((r for r in records[-len(settings) :] if r["setting"] == "torch default"), None)
        for r in records[-len(settings) :]:
            r["idle_over_torch_default"] = None if base is None else r["idle_s"] / base["idle_s"]
    return records


def format_threads(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "thread settings, idle and beside one CPU-bound process (seconds, median):",
        f"  {'workload':9s} {'setting':14s} {'threads idle/loaded':24s} {'idle':>9s} "
        f"{'loaded':>9s} {'loaded/idle':>11s} {'idle/torch':>10s}",
    ]
    for r in records:
        vs = r["idle_over_torch_default"]
        used = f"{r['threads_idle']} / {r['threads_loaded']}"
        lines.append(
            f"  {r['workload']:9s} {r['setting']:14s} {used:24s} {r['idle_s']:9.4f} "
            f"{r['loaded_s']:9.4f} {r['loaded_over_idle']:11.2f} "
            + (f"{vs:10.2f}" if vs is not None else f"{'':10s}")
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=WORKLOADS)
    parser.add_argument(
        "--settings", nargs="+", default=["torch default", "acn auto"], choices=list(SETTINGS)
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--choose", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.quick, args.choose)))
        return 0
    records = thread_records(tuple(args.settings), tuple(args.workloads), args.quick)
    print("\n".join(format_threads(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
