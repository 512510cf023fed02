"""Safe, self-describing checkpoints.

A checkpoint is a plain dict of tensors and primitives, readable with
``torch.load(path, weights_only=True)`` (which never executes code from the file), written
atomically (a temporary file in the same folder, fsync, then ``os.replace``) so that a crash or a
kill at any moment leaves either the old file or the new one, never a torn one.

A torch file checks the structure of its zip archive but not the bytes of its tensors: a flipped
bit in a weight loads silently. Every checkpoint therefore carries ``crc32``, a checksum of all its
tensors and values, verified on load.

Keys: ``format``, ``format_version``, ``acn_version``, ``crc32``, ``config`` (the resolved
config as a nested dict), ``data_info``, ``num_codes``, ``step``, ``model`` (the unwrapped
module's state dict, code bank included), ``optimizer``, ``rng`` (the training generator's and
torch's global state) and ``running`` (partial sums of the training metrics since the last log
line).

This module stores and checks bytes and tensors; rebuilding the model a checkpoint describes is
the model's own job (:meth:`acn.model.ACN.restore`).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from acn.errors import CheckpointError
from acn.files import atomic_write_bytes
from acn.store.choices import CHECKPOINTS
from acn.version import __version__

FORMAT = "acn-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("config", "step", "model", "data_info", "num_codes")


def content_crc32(value: Any, crc: int = 0) -> int:
    """A CRC-32 of a nested structure of dicts, lists, tensors and plain values: the bytes, dtype
    and shape of every tensor, and the repr of everything else, in a fixed (sorted-key) order."""
    if isinstance(value, dict):
        for key in sorted(value, key=repr):
            crc = content_crc32(value[key], zlib.crc32(repr(key).encode(), crc))
        return crc
    if isinstance(value, (list, tuple)):
        for item in value:
            crc = content_crc32(item, crc)
        return zlib.crc32(f"<{type(value).__name__} {len(value)}>".encode(), crc)
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        crc = zlib.crc32(f"{flat.dtype}{tuple(value.shape)}".encode(), crc)
        return zlib.crc32(flat.view(torch.uint8).numpy(), crc)
    return zlib.crc32(repr(value).encode(), crc)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format markers and its checksum) atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "acn_version": __version__,
        **payload,
    }
    payload["crc32"] = content_crc32(payload)
    try:
        atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; the previous one is intact"
        ) from None


def run_checkpoint(folder: str | Path, which: str = "best") -> Path:
    """The file of a run folder's ``which`` checkpoint. A run without ``best.pt`` (written by
    an older version, or not yet validated) gives ``last.pt`` for ``best`` too."""
    if which not in CHECKPOINTS:
        raise CheckpointError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
    folder = Path(folder)
    best, last = folder / "checkpoints" / "best.pt", folder / "checkpoints" / "last.pt"
    if which == "best" and best.is_file():
        return best
    if not last.is_file():
        raise CheckpointError(f"{folder} is a folder without checkpoints/last.pt")
    return last


def which_checkpoint(path: str | Path) -> str:
    """``best``, ``last`` or ``file`` (any other checkpoint file) for a checkpoint's path."""
    path = Path(path)
    if path.parent.name == "checkpoints" and path.stem in CHECKPOINTS:
        return path.stem
    return "file"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint (or a run folder's ``checkpoints/last.pt``).

    Raises:
        CheckpointError: the file is missing, unreadable, unsafe, or not an acn checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        if not candidate.is_file():
            raise CheckpointError(f"{path} is a folder without checkpoints/last.pt")
        path = candidate
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # On a garbage file torch may warn about the pickle protocol before it fails; the
            # error below says all there is to say, in one line.
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain values; a file that names a global
        # (a class or a function to call) is the case worth telling apart from mere garbage.
        unsafe = [line for line in str(exc).splitlines() if "GLOBAL" in line]
        if unsafe:
            raise CheckpointError(
                f"{path}: refused to load: it asks to run code or build objects on load "
                f"({unsafe[0].strip()[:160]}); checkpoints hold only tensors and plain values"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt pickle data)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler on garbage (seen: IndexError)
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an acn checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; "
            f"this acn reads version {FORMAT_VERSION}"
        )
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    stored = payload.pop("crc32", None)
    if stored is not None and stored != content_crc32(payload):
        raise CheckpointError(
            f"{path}: corrupted: its contents do not match the checksum written with it"
        )
    payload["path"] = str(path)
    return payload
