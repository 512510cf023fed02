"""Classic lossless compressors on the same images as the codec, for a comparison table.

Each baseline codes the whole set at once (or, for PNG, one file per image, summed), and its size
in bytes is turned into bits per image (``8 * bytes / N``), the unit of the codec's own sizes:

- ``gzip``, ``bz2``, ``xz``: the general-purpose compressors at their strongest settings (gzip and
  bz2 at level 9, xz at preset 9 with ``PRESET_EXTREME``, each with its container's header and
  checksum) on one byte string holding every pixel of every image in order (image, channel, row,
  column): for binary images the pixels packed 8 to a byte (:func:`pack_bits`), otherwise one byte
  per pixel, the levels themselves (:func:`raw_bytes`).
- ``png``: one PNG file per image, written by Pillow with ``optimize=True``, sizes summed, so the
  per-file overhead (signature, header and end chunks, about 60 bytes) is counted once per image;
  binary single-channel images as 1-bit ``"1"`` files, other single-channel ones as 8-bit ``"L"``
  (levels stored unscaled), three-channel ones as ``"RGB"``.
- ``jbig``: JBIG1 (ITU-T T.82), the context-modelling arithmetic coder made for bi-level images,
  on all images tiled into one bitmap (:func:`tile`), coded by jbigkit's ``pbmtojbg`` (Debian
  package ``jbigkit-bin``) with sequential coding (``-q``, no resolution reduction layers, the
  smaller lossless mode); binary single-channel images only, and only where ``pbmtojbg`` is on
  PATH.

Pure numpy and the standard library (plus Pillow); images are integer arrays, (N, C, H, W) or
(N, H, W), of levels 0..255; binary means every level is 0 or 1.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PBMTOJBG = "pbmtojbg"
# Sequential coding: one layer, no differential (progressive) resolution layers, whose extra
# layers only cost bits here. The other settings stay at jbigkit's defaults (three-line template,
# typical prediction on, adaptive template offsets up to 8).
JBIG_OPTIONS = ("-q",)


def _validate(images: np.ndarray) -> np.ndarray:
    """Integer (N, C, H, W) or (N, H, W) levels 0..255 -> a uint8 (N, C, H, W) array."""
    array = np.asarray(images)
    if array.dtype.kind not in "biu":
        raise ValueError(f"images must be an integer array of levels, not dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise ValueError(
            f"images must be 3-D (N, H, W) or 4-D (N, C, H, W), not of shape {array.shape}"
        )
    if array.ndim == 3:
        array = array[:, None]
    if array.size == 0:
        raise ValueError(f"images must hold at least one pixel, not shape {array.shape}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ValueError(f"image levels must lie in 0..255, not {low}..{high}")
    return array.astype(np.uint8, copy=False)


def _is_binary(array: np.ndarray, binary: bool | None) -> bool:
    """Whether the validated set is coded as binary: its levels' max <= 1, unless told."""
    found = int(array.max()) <= 1
    if binary and not found:
        raise ValueError(f"binary images must have levels 0 and 1 only, not up to {array.max()}")
    return found if binary is None else binary


def _require_binary(array: np.ndarray) -> None:
    if int(array.max()) > 1:
        raise ValueError(f"binary images must have levels 0 and 1 only, not up to {array.max()}")


def _require_single_channel_binary(array: np.ndarray) -> None:
    _require_binary(array)
    if array.shape[1] != 1:
        raise ValueError(f"binary single-channel images expected, not {array.shape[1]} channels")


def pack_bits(images: np.ndarray) -> bytes:
    """Binary images, every pixel of every image in order, packed 8 to a byte (MSB first)."""
    array = _validate(images)
    _require_binary(array)
    return np.packbits(array.reshape(-1)).tobytes()


def raw_bytes(images: np.ndarray) -> bytes:
    """The images' levels, one byte per pixel, every pixel of every image in order."""
    return _validate(images).tobytes()


def _payload(array: np.ndarray, binary: bool | None) -> bytes:
    return pack_bits(array) if _is_binary(array, binary) else raw_bytes(array)


def _compressed(data: bytes) -> dict[str, bytes]:
    """``data`` through each general-purpose compressor at its strongest setting."""
    return {
        "gzip": gzip.compress(data, compresslevel=9, mtime=0),
        "bz2": bz2.compress(data, compresslevel=9),
        "xz": lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME),
    }


def general_purpose(images: np.ndarray, *, binary: bool | None = None) -> dict[str, int]:
    """Bytes of gzip -9, bz2 -9 and xz -9e on the whole set (packed bits if binary, else levels).

    ``binary`` overrides the detection (levels' max <= 1), e.g. for 8-bit images that happen to
    use levels 0 and 1 only.
    """
    array = _validate(images)
    return {name: len(data) for name, data in _compressed(_payload(array, binary)).items()}


def _png_files(images: np.ndarray, binary: bool | None = None) -> list[bytes]:
    """One PNG file per image: "1" for binary single-channel, "L" for grey, "RGB" for colour."""
    array = _validate(images)
    channels = array.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"PNG needs 1 or 3 channels, not {channels}")
    one_bit = channels == 1 and _is_binary(array, binary)
    files = []
    for image in array:
        if one_bit:
            height, width = image.shape[1:]
            rows = np.packbits(image[0], axis=1).tobytes()  # Pillow's "1" layout: rows padded
            picture = Image.frombytes("1", (width, height), rows)
        elif channels == 1:
            picture = Image.fromarray(np.ascontiguousarray(image[0]), mode="L")
        else:
            picture = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGB")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        files.append(buffer.getvalue())
    return files


def png_per_image(images: np.ndarray, *, binary: bool | None = None) -> int:
    """Total bytes of one best-compression PNG file per image."""
    return sum(len(data) for data in _png_files(images, binary))


def tile(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Binary single-channel images as one 2-D uint8 bitmap, row-major tiles of ``columns``.

    Image ``i`` occupies tile row ``i // columns``, tile column ``i % columns``; ``columns``
    defaults to ceil(sqrt(N)); tiles past the last image are zero.
    """
    array = _validate(images)
    _require_single_channel_binary(array)
    count, _, height, width = array.shape
    if columns is None:
        columns = math.ceil(math.sqrt(count))
    if isinstance(columns, bool) or not isinstance(columns, int | np.integer) or columns < 1:
        raise ValueError(f"columns must be a positive integer, not {columns!r}")
    columns = int(columns)
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * columns, height, width), dtype=np.uint8)
    grid[:count] = array[:, 0]
    return (
        grid.reshape(rows, columns, height, width)
        .transpose(0, 2, 1, 3)
        .reshape(rows * height, columns * width)
    )


def _pbm(bitmap: np.ndarray) -> bytes:
    """A binary PBM (P4) file of a 2-D 0/1 bitmap (1 = black), rows padded to whole bytes."""
    height, width = bitmap.shape
    return f"P4\n{width} {height}\n".encode("ascii") + np.packbits(bitmap, axis=1).tobytes()


def _jbig_file(images: np.ndarray, columns: int | None = None) -> bytes | None:
    """The JBIG1 file (BIE) of the tiled images, or None where it does not apply."""
    array = _validate(images)
    executable = shutil.which(PBMTOJBG)
    if executable is None or array.shape[1] != 1 or int(array.max()) > 1:
        return None
    with tempfile.TemporaryDirectory(prefix="acn-jbig-") as folder:
        source, target = Path(folder) / "in.pbm", Path(folder) / "out.jbg"
        source.write_bytes(_pbm(tile(array, columns)))
        result = subprocess.run(
            [executable, *JBIG_OPTIONS, str(source), str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{PBMTOJBG} failed (exit {result.returncode}): {result.stderr.strip()}"
            )
        return target.read_bytes()


def jbig(images: np.ndarray, columns: int | None = None) -> int | None:
    """Bytes of JBIG1 on the tiled bitmap, or None without ``pbmtojbg`` or binary 1-channel data."""
    data = _jbig_file(images, columns)
    return None if data is None else len(data)


def baseline_sizes(images: np.ndarray, *, binary: bool | None = None) -> dict[str, float]:
    """Bits per image of each applicable baseline: gzip, bz2, xz, png, and jbig where available."""
    array = _validate(images)
    coded_binary = _is_binary(array, binary)
    sizes = dict(general_purpose(array, binary=coded_binary))
    sizes["png"] = png_per_image(array, binary=coded_binary)
    if coded_binary:
        jbig_bytes = jbig(array)
        if jbig_bytes is not None:
            sizes["jbig"] = jbig_bytes
    return {name: 8.0 * size / len(array) for name, size in sizes.items()}
