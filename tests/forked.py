"""``acn`` commands in real, separate processes, forked from one server that has loaded the library.

A fresh ``python -m acn`` spends about 3.5 s importing torch, the optimiser's lazy
``torch._dynamo`` and scikit-learn before it does anything; the kill, signal and multi-process
tests start dozens of processes. Here each process is forked from a multiprocessing forkserver
that imported all of that once. The server is a fresh interpreter (not a fork of the test
process, so no thread or OpenMP state is inherited), and each child is an ordinary process with
its own pid: it receives real signals, dies for real under SIGKILL, and runs the same
``acn.cli.main`` that ``python -m acn`` runs. tests/cli/test_cli.py still starts the real
``python -m acn`` and the console script.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch.multiprocessing as mp

# What every forked process would otherwise import afresh.
PRELOAD = [
    "torch",
    "torch._dynamo",
    "sklearn.datasets",
    "sklearn.model_selection",
    "acn.cli.commands",
    "acn.train.loop",
    "dist_workers",
]


def context():
    """The forkserver context, its server preloaded (started on first use, once per session)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _run_cli(argv: list[str], stdout: str, stderr: str) -> None:
    for path, fd in ((stdout, 1), (stderr, 2)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    # The forkserver's children ignore SIGINT by default; a user's Ctrl-C must reach the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from acn.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


class Command:
    """``acn ARGV`` running in a forked process, with a ``subprocess.Popen``-like face."""

    def __init__(self, argv: list[str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self._out, self._err = logs / "stdout.txt", logs / "stderr.txt"
        self._process = context().Process(
            target=_run_cli, args=([str(a) for a in argv], str(self._out), str(self._err))
        )
        self._process.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code; -N when signal N killed the process; None while it runs."""
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self._process.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
            raise TimeoutError(f"acn did not finish within {timeout} s")
        return self._process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait, then return what the process wrote to stdout and stderr."""
        self.wait(timeout)
        return self.stdout, self.stderr

    @property
    def stdout(self) -> str:
        return self._out.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self._err.read_text(encoding="utf-8", errors="replace")


def run(argv: list[str], logs: Path, timeout: float = 600) -> Command:
    """Run ``acn ARGV`` in a forked process to the end."""
    command = Command(argv, logs)
    command.wait(timeout)
    return command
