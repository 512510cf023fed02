"""A conversion cache: arrays decoded once from many source files, stored as uint8 ``.npy`` files
and memory-mapped afterwards, rebuilt whenever the sources or the conversion settings change."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acn.errors import DataError
from acn.files import atomic_write_json, json_digest

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MANIFEST = "manifest.json"


def _describe_sources(sources: Sequence[Path], base: Path) -> dict[str, Any]:
    """Names, sizes and mtimes of the sources: listed when few, summarised by a digest always."""
    rows = []
    for path in sources:
        st = path.stat()
        rows.append([path.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns])
    described: dict[str, Any] = {"count": len(rows), "sha256": json_digest(rows)}
    if len(rows) <= 64:
        described["files"] = rows
    return described


class NpyWriter:
    """A ``.npy`` file filled along its first axis with ordinary writes.

    Written through a file handle rather than a memory map, so the converted data does not
    stay resident in (and count toward) the process's memory as it would with a map.
    """

    def __init__(self, path: Path, shape: Sequence[int], dtype: type) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
        self.offset, self.shape, self.dtype = header.offset, tuple(shape), np.dtype(dtype)
        del header  # the header is written and the file sized (sparse); unmap it
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.file = path.open("r+b")

    def __setitem__(self, index: int | slice, value: np.ndarray) -> None:
        start = index.start or 0 if isinstance(index, slice) else index
        data = np.ascontiguousarray(value, self.dtype)
        rows = 1 if isinstance(index, int) else len(data)
        if data.size * self.dtype.itemsize != rows * self.row_bytes or start + rows > self.shape[0]:
            raise ValueError(f"{data.shape} does not fit rows {start}.. of {self.shape}")
        self.file.seek(self.offset + start * self.row_bytes)
        self.file.write(memoryview(data).cast("B"))

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class CacheWriter:
    """Creates the cache's arrays under temporary names; :meth:`commit` moves them into place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shapes: dict[str, list] = {}
        self._open: dict[str, tuple[Path, NpyWriter]] = {}

    def create(self, name: str, shape: Sequence[int], dtype: type = np.uint8) -> NpyWriter:
        """An array to fill by rows, which becomes ``<folder>/<name>.npy`` on commit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.npy.{os.getpid()}.tmp"
        self._open[name] = (tmp, NpyWriter(tmp, shape, dtype))
        self.shapes[name] = [list(shape), np.dtype(dtype).str]
        return self._open[name][1]

    def commit(self) -> None:
        for name, (tmp, array) in self._open.items():
            array.close()
            os.replace(tmp, self.folder / f"{name}.npy")
        self._open.clear()

    def abort(self) -> None:
        for tmp, array in self._open.values():
            array.file.close()
            tmp.unlink(missing_ok=True)
        self._open.clear()


def _open_cache(folder: Path, expected: dict[str, Any]) -> dict[str, np.ndarray] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if {k: manifest.get(k) for k in expected} != expected or "arrays" not in manifest:
        return None
    arrays = {}
    for name, (shape, dtype) in manifest["arrays"].items():
        try:
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return None
        if list(array.shape) != shape or array.dtype.str != dtype:
            return None
        arrays[name] = array
    return arrays


def cached_arrays(
    folder: Path,
    base: Path,
    sources: Sequence[Path],
    params: dict[str, Any],
    build: Callable[[CacheWriter], None],
) -> dict[str, np.ndarray]:
    """Read-only memory maps of the arrays ``build`` writes, rebuilt only when stale.

    Args:
        folder: where the cache lives.
        base: the dataset's folder; source paths are recorded relative to it.
        sources: the files the arrays derive from.
        params: conversion settings (JSON values); changing them invalidates the cache.
        build: fills, row by row or in slices of rows, the arrays it creates with
            ``writer.create(name, shape, dtype)``.

    Returns:
        ``{name: np.memmap}`` opened with ``mmap_mode="r"``.
    """
    expected = {
        "format": "acn-image-cache",
        "version": CACHE_VERSION,
        "params": params,
        "sources": _describe_sources(sources, base),
    }
    arrays = _open_cache(folder, expected)
    if arrays is not None:
        log.info("using the cache in %s", folder)
        return arrays
    log.info("converting %d source files into %s (once)", len(sources), folder)
    (folder / MANIFEST).unlink(missing_ok=True)  # no stale manifest may vouch for a rebuild
    writer = CacheWriter(folder)
    try:
        build(writer)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    atomic_write_json(folder / MANIFEST, {**expected, "arrays": writer.shapes})
    arrays = _open_cache(folder, expected)
    if arrays is None:  # pragma: no cover - only if the folder changes under us
        raise DataError(f"{folder}: the cache just written cannot be read back")
    return arrays
