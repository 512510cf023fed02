"""Writing files so that a crash or a kill at any moment leaves the old file or the new one,
never a torn one; and the digests that tell whether a file changed.

Every file ``acn`` writes (checkpoints, exported models, metrics, dataset caches, pictures,
reports) goes through :func:`atomic_write_bytes`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then move it into place.

    The temporary file is named ``.NAME.*.tmp`` in the same folder (so the final rename is
    atomic on every POSIX file system), flushed and fsynced before the rename, and removed if
    ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON (UTF-8, trailing newline), atomically."""
    text = json.dumps(value, indent=2) + "\n"
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode("utf-8")))


def json_digest(value: Any) -> str:
    """SHA-256 (hex) of ``value``'s JSON text: a fingerprint of settings or file listings."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()
