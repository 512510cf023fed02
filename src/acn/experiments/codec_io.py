"""The files of ``acn compress`` / ``acn decompress``: a user's image files read exactly as the
model codes them, a decoded set written back as a folder of PNG files, and writes staged so that
a failure leaves every file that was there as it was.

Image files are read as they are: no crop, no resize and no colour conversion that loses
anything (the ``folder`` dataset's reader, :mod:`acn.data.formats.images`, does all three to
build a training set). An image the model cannot code as it is is refused, naming the file and
what is wrong, before anything is encoded. The rules are in docs/codec.md, "Image files".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from acn.data.formats.images import IMAGE_EXTENSIONS
from acn.errors import CodecError, DataError

_EXTENSIONS = ", ".join(IMAGE_EXTENSIONS)


# --- reading ----------------------------------------------------------------------------------


def image_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The image files that ``paths`` name: a file stands for itself, a folder for the images
    directly in it (the ``folder`` dataset's extensions, hidden files skipped), sorted by name.

    Raises:
        DataError: a path that does not exist, a file that is not an image, a folder without
            images.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if _is_image(p) and p.name[0] != ".")
            if not found:
                raise DataError(f"{path}: no image files in this folder ({_EXTENSIONS})")
            files += found
        elif not path.exists():
            raise DataError(f"{path}: no such file or folder")
        elif not _is_image(path):
            raise DataError(f"{path}: not an image file ({_EXTENSIONS}), a folder or an .npz")
        else:
            files.append(path)
    return files


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def read_image_files(
    paths: Sequence[str | Path], shape: tuple[int, int, int], levels: int
) -> np.ndarray:
    """The images of :func:`image_paths` as a model of ``shape`` (C, H, W) and ``levels``
    codes them (:func:`read_image_file`), in that order.

    Returns:
        (N, C, H, W) uint8 levels.
    """
    files = image_paths(paths)
    images = np.empty((len(files), *shape), np.uint8)
    for i, path in enumerate(files):
        images[i] = read_image_file(path, shape, levels)
    return images


def read_image_file(path: Path, shape: tuple[int, int, int], levels: int) -> np.ndarray:
    """One image file as the levels of a model of ``shape`` (C, H, W) and ``levels``.

    A one-channel model takes grey files (1-bit or 8-bit grey, or a palette of greys); a
    three-channel model takes RGB files, and grey ones as RGB with equal channels. Two levels:
    pixels 0 are level 0, pixels 1 or 255 level 1 (an image holds 0/1 or 0/255, not both);
    L levels otherwise: pixels 0..L-1 are those levels (0..255 for 8-bit models).

    Returns:
        (C, H, W) uint8 levels.

    Raises:
        DataError: a file that does not decode.
        CodecError: an image the model cannot code as it is (its mode, channels, size or
            pixel values), naming the file and what is wrong.
    """
    C, H, W = shape
    if C not in (1, 3):
        raise CodecError(f"image files are read for 1- or 3-channel models, this one has {C}")
    pixels = _decode(path)  # (H, W) grey or (H, W, 3) RGB
    if pixels.ndim == 3 and C == 1:
        raise CodecError(f"{path}: an RGB image; this model codes grey images (one channel)")
    if pixels.shape[:2] != (H, W):
        h, w = pixels.shape[:2]
        raise CodecError(f"{path}: {w}x{h} pixels; this model codes {W}x{H} (width x height)")
    pixels = _as_levels(path, pixels, levels)
    if pixels.ndim == 2:  # grey: one channel, or three equal ones
        return np.broadcast_to(pixels, (C, H, W))
    return pixels.transpose(2, 0, 1)


def _decode(path: Path) -> np.ndarray:
    """A file's pixels as they are: (H, W) grey or (H, W, 3) RGB uint8."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncation is caught here
            mode = img.mode
            if mode == "1":
                return np.asarray(img.convert("L"))  # 0 / 255
            if mode in ("L", "RGB"):
                return np.asarray(img)
            if mode == "P" and "transparency" not in img.info:
                rgb = np.asarray(img.convert("RGB"))  # a palette counts by its colours
                return rgb[..., 0] if (rgb == rgb[..., :1]).all() else rgb
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None
    if "A" in mode or "a" in mode or mode == "P":
        why = "it has an alpha channel or transparency"
    elif mode.startswith("I") or mode == "F":
        why = "its pixels are not 8-bit (16-bit, 32-bit or float)"
    else:
        why = "it is neither grey nor RGB"
    raise CodecError(f"{path}: PIL mode {mode}: {why}; images must be 1- or 8-bit grey or RGB")


def _as_levels(path: Path, pixels: np.ndarray, levels: int) -> np.ndarray:
    """Pixel values as levels: 0 / 1 or 0 / 255 for two levels, 0..L-1 otherwise."""
    values = np.unique(pixels)
    shown = (
        ", ".join(map(str, values))
        if len(values) <= 4
        else f"{values[0]}..{values[-1]} ({len(values)} distinct)"
    )
    if levels == 2:
        if values[-1] <= 1:
            return pixels
        if np.isin(values, (0, 255)).all():
            return pixels // 255
        raise CodecError(
            f"{path}: pixel values {shown}; this model codes binary images, every pixel 0 or "
            "255 (or every pixel 0 or 1)"
        )
    if values[-1] >= levels:
        raise CodecError(
            f"{path}: pixel values {shown}; this model codes {levels} levels, pixels "
            f"0..{levels - 1}"
        )
    return pixels


# --- writing ----------------------------------------------------------------------------------


def png_names(n: int) -> list[str]:
    """``0.png`` .. ``{n-1}.png``, zero-padded to the digits of n - 1 so that names sort in
    order: 12 images are 00.png .. 11.png."""
    width = len(str(n - 1))
    return [f"{i:0{width}d}.png" for i in range(n)]


def png_pixels(image: np.ndarray, levels: int) -> np.ndarray:
    """(C, H, W) levels as a PNG's pixels, (H, W) grey or (H, W, 3) RGB: two levels as 0 / 255,
    other levels as they are."""
    pixels = image * np.uint8(255) if levels == 2 else image
    return pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)


def write_image_folder(out: str | Path, images: np.ndarray, levels: int) -> None:
    """Write ``images`` (N, C, H, W) levels as ``out/``:func:`png_names` (8-bit grey or RGB
    PNGs, :func:`png_pixels`), all or none: into a temporary folder beside ``out``, renamed into
    place once every file is written. ``out`` may exist only as an empty folder (the rename
    replaces it); anything else there makes the rename fail and leaves it as it was.

    Raises:
        OSError: the folder could not be written; nothing is left behind.
    """
    out = Path(out)
    created, tmp = new_folders(out.parent), None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's folder is private (0700); the output is not
        for name, image in zip(png_names(len(images)), images, strict=True):
            with open(tmp / name, "wb") as f:
                Image.fromarray(png_pixels(image, levels)).save(f, "PNG")
                f.flush()
                os.fsync(f.fileno())
        _fsync_folder(tmp)
        os.rename(tmp, out)  # atomic; onto an existing folder only if it is empty
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_folders(created)
        raise
    _fsync_folder(out.parent)


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
