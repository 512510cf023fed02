"""How many CPU threads torch computes with: every free core, counted when a command starts.

torch's default is one intra-op thread per core, and its OpenMP threads spin while they wait for
each other. On an idle machine that is the fastest choice for our models (a digits training
step is 1.5x faster on two threads than on one). Beside another CPU-bound process it is the
slowest: every operation waits at a barrier for the thread that shares its core, and the small
operations of the digits models and of per-pixel decoding make that the whole cost (measured on
2 cores beside one busy process: a digits step 4.2x, a digits daydream 2.7x, a 28x28 decode 4.5x
slower than idle, where one thread loses almost nothing; docs/results.md, and
``python -m acn.experiments.bench_threads`` measures it again).

So *auto* (``threads=0``, the default everywhere) counts the cores that other processes keep
busy at the moment it is asked, from the kernel's count of runnable tasks, and uses the rest
(at least one). It is decided once, when a command starts: the thread count changes the order of
floating-point reductions, so a run keeps one count from start to end (and records it, so that a
rerun with the same config computes the same numbers). ``OMP_NUM_THREADS``, when set, is what
auto uses. The count a command used is recorded beside its numbers.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

AUTO = 0
# Samples of the run queue, this far apart: one reading can catch a process between two bursts.
_SAMPLES, _SPACING_S = 5, 0.01
_CORES: list[int] = []  # torch's own default, read once before the first change


def cores() -> int:
    """The cores this process may use: torch's default thread count (one per core)."""
    import torch

    if not _CORES:
        _CORES.append(torch.get_num_threads())
    return _CORES[0]


def _own_running() -> int:
    """Threads of this process that are running or runnable now."""
    count = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            # The state follows the command name, which is in parentheses and may hold spaces.
            state = stat.read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        count += state == "R"
    return max(count, 1)


def busy_cores() -> int | None:
    """Cores kept busy by other processes now (the median of a few readings of the kernel's
    runnable-task count, less this process's own); None where the kernel does not say."""
    readings = []
    for i in range(_SAMPLES):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        readings.append(max(0, running - _own_running()))
        if i + 1 < _SAMPLES:
            time.sleep(_SPACING_S)
    return int(statistics.median(readings))


def _from_environment() -> int | None:
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def choose(requested: int = AUTO) -> int:
    """The thread count for ``requested``: itself when positive; for auto, ``OMP_NUM_THREADS``
    when set, else the cores no other process keeps busy (at least 1)."""
    if requested < 0:
        raise ValueError(f"threads must be 0 (auto) or a positive count, got {requested}")
    if requested > 0:
        return requested
    from_env = _from_environment()
    if from_env is not None:
        return from_env
    total = cores()
    busy = busy_cores()
    return total if busy is None else max(1, total - busy)


def use(requested: int = AUTO) -> int:
    """Set torch's intra-op thread count to :func:`choose` of ``requested``; returns it."""
    import torch

    count = choose(requested)
    cores()  # remember torch's default before it is changed
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


@contextmanager
def using(requested: int = AUTO) -> Iterator[int]:
    """:func:`use` for the duration of a block, then the count the process had before."""
    import torch

    before = torch.get_num_threads()
    try:
        yield use(requested)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
