"""User-facing errors.

Everything the user can cause (a bad config value, a missing file, an unreadable checkpoint, a
diverged loss) raises a subclass of :class:`AcnError`. The CLI turns these into one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
from pathlib import Path


class AcnError(Exception):
    """Base class for errors caused by input, configuration or the run's state."""


class ConfigError(AcnError):
    """An unknown key, a wrong type or an out-of-range value in a config."""


class DataError(AcnError):
    """A dataset that is missing, unreadable or of the wrong shape."""


class CheckpointError(AcnError):
    """A checkpoint that cannot be read, is not ours, or does not fit the model."""


class CodecError(AcnError):
    """A compressed file that cannot be read (foreign, truncated, corrupted, made by another
    model), or images the model cannot code."""


class TrainingError(AcnError):
    """Training cannot go on (for example a NaN or infinite loss)."""


class TrainingInterrupted(AcnError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved at ``step``."""

    def __init__(self, step: int, checkpoint: Path, signum: int) -> None:
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: stopped after step {step}, checkpoint saved to {checkpoint}"
        )
