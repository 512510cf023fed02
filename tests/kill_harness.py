"""Kill a training run with SIGKILL again and again, resume it each time, compare with one
uninterrupted run.

Used by ``tests/train/test_faults.py`` and runnable on its own for a longer trial::

    python tests/kill_harness.py --kills 60 --out /tmp/kills

Each life of the run is a real process running ``acn train`` (forked from a preloaded server,
see ``tests/forked.py``, so that a life does not spend seconds importing torch). The harness
kills it either at a random moment after it has made progress (a checkpoint step moved), or as
soon as a temporary checkpoint file appears, that is, while ``checkpoints/last.pt`` is being
written. The next life resumes from whatever ``last.pt`` holds (or starts afresh if none was
written yet). When all the kills are spent the last life runs to the end, and the final
checkpoint (weights, code bank, optimiser, random states, running sums) and ``metrics.jsonl``
must equal the uninterrupted run's, bit for bit, and so must ``best.pt`` (the step with the
lowest validation total, written whenever a validation improves on it).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import forked
import torch
from conftest import TINY

# Checkpoint every step, log every step, a tiny network: many checkpoint writes per second, so
# kills land in every phase of a step, including the write.
TRAIN_ARGS = (
    "digits-acn",
    *TINY,  # the test suite's tiny network; the settings below override its schedule
    "train.log_every=1",
    "train.eval_every=10",
    "train.checkpoint_every=1",
    "codebank.unique=true",
)


@dataclass
class KillReport:
    """What a trial did: kills delivered, how many hit a checkpoint write, lives, equality."""

    kills: int = 0
    during_write: int = 0
    before_first_checkpoint: int = 0
    lives: int = 0
    equal: bool = False
    mismatches: list[str] = field(default_factory=list)
    steps_at_kills: list[int] = field(default_factory=list)

    def line(self) -> str:
        verdict = "bit-identical to the uninterrupted run" if self.equal else "DIFFERENT"
        return (
            f"survived {self.kills} SIGKILLs ({self.during_write} while a checkpoint was being "
            f"written, {self.before_first_checkpoint} before the first checkpoint) over "
            f"{self.lives} lives (resumed from steps {self.steps_at_kills}): final weights, "
            f"code bank, optimiser, random states, best.pt and metrics {verdict}"
        )


def _command(out: Path, resume: bool, steps: int) -> list[str]:
    cmd = ["train", *TRAIN_ARGS, f"train.steps={steps}", "--out", str(out)]
    return [*cmd, "--resume", str(out)] if resume else cmd


def _step(last: Path) -> int | None:
    try:
        return int(torch.load(last, weights_only=True)["step"])
    except Exception:  # noqa: BLE001 - absent, or (impossible by design) torn: the caller checks
        return None


def _temporaries(folder: Path) -> list[Path]:
    return list(folder.glob(".*.tmp")) if folder.is_dir() else []


def _differences(a: dict, b: dict, name: str) -> list[str]:
    diffs = [
        f"{name}.{k}" for k in ("step", "running", "num_codes", "best") if a.get(k) != b.get(k)
    ]
    diffs += [
        f"{name}.model.{k}" for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])
    ]
    diffs += [f"{name}.rng.{k}" for k in a["rng"] if not torch.equal(a["rng"][k], b["rng"][k])]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    diffs += [
        f"{name}.optimizer.{i}.{n}"
        for i in sa
        for n in sa[i]
        if not torch.equal(torch.as_tensor(sa[i][n]), torch.as_tensor(sb[i][n]))
    ]
    return diffs


def compare(reference: Path, other: Path) -> list[str]:
    """Names of everything that differs between two finished runs (empty when bit-identical):
    ``last.pt``, ``best.pt`` (the lowest validation total) and ``metrics.jsonl``."""
    diffs = []
    for name in ("last", "best"):
        a_path, b_path = (r / "checkpoints" / f"{name}.pt" for r in (reference, other))
        if not a_path.exists() or not b_path.exists():
            diffs += [] if a_path.exists() == b_path.exists() else [f"{name}.pt missing"]
            continue
        a, b = (torch.load(p, weights_only=True) for p in (a_path, b_path))
        diffs += _differences(a, b, name)
    if (reference / "metrics.jsonl").read_bytes() != (other / "metrics.jsonl").read_bytes():
        diffs.append("metrics.jsonl")
    return diffs


def run_trial(out: Path, kills: int, seed: int = 0, write_fraction: float = 0.4) -> KillReport:
    """Train once uninterrupted into ``out/reference`` and once with ``kills`` SIGKILLs into
    ``out/killed``; ``write_fraction`` of the kills aim at a checkpoint write."""
    rng = random.Random(seed)
    # Enough steps that the kills, each after a little progress, are spent before the end.
    steps = 20 + 6 * kills
    reference, killed = out / "reference", out / "killed"
    # The uninterrupted run trains beside the killed lives (one thread each, two cores).
    uninterrupted = forked.Command(_command(reference, False, steps), out / "logs" / "reference")
    last = killed / "checkpoints" / "last.pt"
    report = KillReport()
    while True:
        report.lives += 1
        start_step = _step(last)
        stale = set(_temporaries(last.parent))
        logs = out / "logs" / f"life-{report.lives}"
        proc = forked.Command(_command(killed, last.exists(), steps), logs)
        if report.kills < kills and _kill_at_some_moment(
            proc, last, start_step, stale, rng, write_fraction
        ):
            report.kills += 1
            report.during_write += bool(set(_temporaries(last.parent)) - stale)
            report.before_first_checkpoint += not last.exists()
            report.steps_at_kills.append(_step(last) or 0)
            continue
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"life {report.lives} failed (exit {proc.returncode}):\n{err}")
        if report.kills >= kills or _step(last) == steps:
            break
    _, err = uninterrupted.communicate(timeout=600)
    if uninterrupted.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{err}")
    report.mismatches = compare(reference, killed)
    report.equal = not report.mismatches and not _temporaries(last.parent)
    return report


def _kill_at_some_moment(proc, last: Path, start_step, stale, rng, write_fraction) -> bool:
    """SIGKILL ``proc`` at a moment of one of three kinds, drawn from ``rng``: during its n-th
    checkpoint write (n from 1 to 4), at a random moment after it made progress, or at a random
    moment of its start-up. False if it finished first."""
    weights = (write_fraction, 0.9 - write_fraction, 0.1)
    kind = rng.choices(("write", "progress", "startup"), weights)[0]
    nth_write, extra = rng.randint(1, 4), rng.uniform(0.0, 0.1)
    # Start-up kills only: a forked life loads the data and builds the model in well under 0.5 s.
    deadline = time.perf_counter() + rng.uniform(0.0, 0.5)
    seen: set[Path] = set()
    progressed_at = None
    while proc.poll() is None:
        if kind == "write":
            seen |= set(_temporaries(last.parent)) - stale
            if len(seen) >= nth_write and set(_temporaries(last.parent)) - stale:
                break
        elif kind == "startup":
            if time.perf_counter() >= deadline:
                break
        elif progressed_at is None:
            step = _step(last) if last.exists() else None
            if step is not None and step != start_step:
                progressed_at = time.perf_counter()
        elif time.perf_counter() - progressed_at >= extra:
            break
        time.sleep(0.0005 if kind == "write" else 0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    return True


def main() -> int:
    # One thread: the harness and the run share a small machine, and equality needs the same
    # reduction order in every life (the forked lives inherit it from this environment).
    os.environ["OMP_NUM_THREADS"] = "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    report = run_trial(args.out, args.kills, args.seed)
    print(report.line())
    if report.mismatches:
        print("differs: " + ", ".join(report.mismatches))
    print(f"{time.perf_counter() - started:.0f} s")
    return 0 if report.equal else 1


if __name__ == "__main__":
    sys.exit(main())
