"""What surrounds a training run: the device, signals, the metrics file, TensorBoard, the bar.

Kept apart from :mod:`acn.train.loop` so that the training loop reads as the loop alone.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from acn.errors import ConfigError
from acn.files import atomic_write_bytes

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("train.device=mps but MPS is not available; use train.device=cpu")
    return torch.device(name)


def cpu_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware: x86 with AVX-512 BF16 or AMX-BF16, or an Arm
    core with the BF16 extension (Linux's ``/proc/cpuinfo`` flags; macOS's
    ``hw.optional.arm.FEAT_BF16``). torch offers no public check; without native support its
    bf16 kernels emulate and are slower than float32. ``cpuinfo``: the file's text (tests).
    The instruction set torch dispatches to must allow AVX-512 too: ``ATEN_CPU_CAPABILITY=avx2``
    or ``default`` turns it off."""
    import platform
    import subprocess

    if cpuinfo is None and platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            return out.stdout.strip() == "1"
        except (OSError, subprocess.SubprocessError):
            return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    if "bf16" in flags:  # aarch64's Features
        return True
    x86 = bool(flags & {"avx512_bf16", "amx_bf16"})
    return x86 and torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16")


@contextmanager
def stop_on_signal():
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl``; on resume, drops lines after the resumed step."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("", encoding="utf-8")
        elif path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line torn by a kill: everything after it is newer than the checkpoint
                if record.get("step", math.inf) <= resume_step:
                    kept.append(line + "\n")
            atomic_write_bytes(path, lambda f: f.write("".join(kept).encode()))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def tensorboard_writer(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; skipping TensorBoard logging")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0):
    """The project's progress bar (tqdm), shown on a terminal only."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        # None: shown on a terminal only, so that logs and CI output stay readable.
        disable=None if enabled else True,
        desc=desc,
        dynamic_ncols=True,
        leave=False,
    )
