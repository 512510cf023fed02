"""Outputs of ``acn compress``: files written all or none, so that a failure leaves every file
that was there as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from acn.errors import CodecError


def write_files(files: dict[Path, bytes]) -> None:
    """Write every file of ``files`` or none, in the given order.

    Each is staged in a temporary file beside its path (``.NAME.*.tmp``, as
    :func:`acn.files.atomic_write_bytes` names them), flushed and fsynced; only once all are
    staged are they renamed into place, one after the other. On any failure the temporary files
    and the folders made for them are removed, and every file that was there is as it was (one
    already replaced is put back from a link to the old file, kept until the last rename).

    Raises:
        CodecError: naming the file that could not be written.
    """
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    done = False
    try:
        for path, data in files.items():
            try:
                created += new_folders(path.parent)
                staged.append((_stage(path, data), path))
            except OSError as error:
                raise CodecError(f"cannot write {path}: {error.strerror or error}") from None
        _replace_all(staged)
        done = True
    finally:
        for tmp, _ in staged:  # gone once renamed
            tmp.unlink(missing_ok=True)
        if not done:
            remove_folders(created)


def _stage(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, flushed and fsynced: its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _replace_all(staged: list[tuple[Path, Path]]) -> None:
    """Rename each staged file onto its path, in order; if a rename fails, put back the files
    the earlier ones replaced (and remove the ones they created)."""
    kept: list[Path] = []  # links to the old files, until every rename is done
    done: list[tuple[Path, Path | None]] = []
    try:
        for i, (tmp, path) in enumerate(staged):
            old = None
            try:
                if i < len(staged) - 1 and path.exists():  # the last has no rename after it
                    old = tmp.with_name(tmp.name.removesuffix(".tmp") + ".old.tmp")
                    kept.append(old)
                    _keep(path, old)
                os.replace(tmp, path)
            except OSError as error:
                raise CodecError(f"cannot write {path}: {error.strerror or error}") from None
            done.append((path, old))
    except BaseException:
        for path, old in reversed(done):
            with contextlib.suppress(OSError):
                if old is None:
                    path.unlink()  # it was not there
                else:
                    os.replace(old, path)
        raise
    finally:
        for old in kept:
            old.unlink(missing_ok=True)
    for folder in {path.parent for _, path in staged}:
        _fsync_folder(folder)


def _keep(path: Path, old: Path) -> None:
    """``old``: the file at ``path`` now, a hard link where the file system has them."""
    try:
        os.link(path, old)
    except OSError:
        shutil.copyfile(path, old)


def new_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the ones made."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove_folders(folders: list[Path]) -> None:
    """Remove the folders that are still empty, deepest first."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
