"""Start-up time of the command line and the package, this tree against an earlier commit.

    python scripts/bench_startup.py --before 2d86fec [--rounds 15]

Extracts ``src/`` of the ``--before`` commit into a temporary folder and runs each command with
that tree and with this one on ``PYTHONPATH``, alternating (so that a busy machine slows both
alike), ``--rounds`` times each. Prints the median wall time of each side and their ratio, and
whether each side imported torch. Take it with nothing else running.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "acn --help": (
        "from acn.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    ),
    "acn config": "from acn.cli import main\nmain(['config'])",
    "acn config digits-acn": "from acn.cli import main\nmain(['config', 'digits-acn'])",
    "import acn": "import acn",
}
# The flat layout had acn.cli as a module with main; both spellings import it the same way.
PROBE = "\nimport sys\nsys.stderr.write('TORCH=%d\\n' % ('torch' in sys.modules))"


def _extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _time(src: Path, code: str) -> tuple[float, bool]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code + PROBE], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed under {src}: {done.stderr.strip()[-300:]}")
    return seconds, "TORCH=1" in done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit (any git rev)")
    parser.add_argument("--rounds", type=int, default=15, help="runs per command and side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acn-startup-") as tmp:
        before = _extract(args.before, Path(tmp))
        now = ROOT / "src"
        print(f"{'command':<24}{'before s':>10}{'now s':>9}{'ratio':>8}  torch before/now")
        for name, code in COMMANDS.items():
            times: dict[Path, list[float]] = {before: [], now: []}
            torch_loaded = {}
            for _ in range(args.rounds):
                for src in (before, now):
                    seconds, torch_loaded[src] = _time(src, code)
                    times[src].append(seconds)
            b, n = statistics.median(times[before]), statistics.median(times[now])
            flags = (
                f"{'yes' if torch_loaded[before] else 'no'}/{'yes' if torch_loaded[now] else 'no'}"
            )
            print(f"{name:<24}{b:>10.3f}{n:>9.3f}{b / n:>7.1f}x  {flags}")


if __name__ == "__main__":
    main()
