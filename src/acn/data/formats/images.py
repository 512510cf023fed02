"""Image datasets too large to decode at every epoch: ImageNet 32/64, CelebA, image folders.

Each is converted once into uint8 ``.npy`` files that are afterwards memory-mapped read-only,
so the whole set never has to fit in memory. The cache is written under temporary names and
renamed into place, and a JSON manifest (the source files' names, sizes and modification
times plus the conversion settings) is written last: a cache is reused only when its manifest
matches the sources, and rebuilt otherwise. Two processes building the same cache at once both
succeed (each writes its own temporary files; the renames are atomic).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from acn.data.formats.base import RawData, holdout_size, tail_split
from acn.data.formats.cache import CacheWriter, NpyWriter, cached_arrays
from acn.data.info import SPLITS
from acn.errors import DataError
from acn.files import json_digest

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
RESAMPLE = Image.Resampling.BOX  # area average: no aliasing when shrinking, no ringing
IMAGENET_VAL, IMAGENET_VAL_DIVISOR = 10_000, 10
IMAGENET_BATCHES = 10
CELEBA_CROP = 148  # the usual centre crop of the 178x218 aligned faces
FOLDER_SPLIT_SEED = 2018
FOLDER_HOLDOUT_PERCENT = 5  # val and test each; the rest (90%) trains
DECODE_BLOCK = 1024  # images decoded per block, to bound memory held by decoded results


# --- decoding ---------------------------------------------------------------------------------


def decode_image(path: Path, size: int, mode: str, max_crop: int | None = None) -> np.ndarray:
    """Decode, centre-crop to a square and box-resize one image.

    The crop side is ``min(w, h)``, capped at ``max_crop`` when given.

    Returns:
        uint8 (C, size, size) with C = 1 for mode "L", 3 for "RGB".
    """
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncation is caught here
            img = img.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None
    w, h = img.size
    side = min(w, h) if max_crop is None else min(max_crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.resize((size, size), RESAMPLE, box=(left, top, left + side, top + side))
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode_into(
    out: NpyWriter, paths: Sequence[Path], size: int, mode: str, max_crop: int | None
) -> None:
    # Pillow releases the GIL while decoding, so threads give a real speed-up here.
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), DECODE_BLOCK):
            block = paths[start : start + DECODE_BLOCK]
            done = pool.map(lambda p: decode_image(p, size, mode, max_crop), block)
            for i, array in enumerate(done, start):
                out[i] = array
            if start and start % (50 * DECODE_BLOCK) == 0:
                log.info("decoded %d / %d images", start, len(paths))


# --- ImageNet ---------------------------------------------------------------------------------


def _npz_rows(path: Path) -> int:
    """Number of rows of ``data`` in an npz, from the member's header alone."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable npz file with a 'data' array ({exc})") from None
    return int(shape[0]) if shape else 0


def _read_imagenet_npz(path: Path, size: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, size, size) uint8 and labels 0..999 of one npz batch, read in full."""
    try:
        with np.load(path) as npz:
            data, labels = npz["data"], np.asarray(npz["labels"]).reshape(-1)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: corrupt or truncated npz file ({exc})") from None
    if data.dtype != np.uint8 or data.shape != (rows, 3 * size * size):
        raise DataError(
            f"{path}: data {data.dtype} {data.shape}, expected uint8 (n, {3 * size**2})"
        )
    if len(labels) != rows or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {len(labels)} labels for {rows} images")
    if rows and (labels.min() < 1 or labels.max() > 1000):
        raise DataError(f"{path}: labels outside 1..1000")
    # Rows are plane-ordered (all R, then G, then B), which is exactly (3, size, size).
    return data.reshape(rows, 3, size, size), labels.astype(np.int64) - 1


def load_imagenet(root: str | Path, size: int) -> RawData:
    """Downsampled ImageNet of Chrabaszcz, Loshchilov & Hutter (2017), 32x32 or 64x64.

    This is the npz version from image-net.org ("Imagenet32_train_npz" / "Imagenet64_train_npz"
    and the matching val archives): ``root/imagenet{size}/train_data_batch_{1..10}.npz`` and
    ``val_data.npz``, each with ``data`` (n, 3 * size * size) uint8 in plane order and
    ``labels`` 1..1000 (returned as 0..999). It is not the PNG version of van den Oord et al.
    (2016), which was resized differently and is distributed as tar files of PNGs.

    On first use the batches are converted, one at a time (one npz member is read whole: about
    1.5 GB at 64x64), into a ``.npy`` cache in ``root/imagenet{size}/acn-cache/``; afterwards the
    arrays are memory maps. Splits: train = the training batches less their last
    V = ``min(10000, N // 10)`` images, which form val; test = ``val_data.npz``, the official
    validation set on which the literature reports.
    """
    if size not in (32, 64):
        raise DataError(f"ImageNet comes downsampled to 32 or 64 pixels, not {size}")
    folder = Path(root) / f"imagenet{size}"
    train_files = [folder / f"train_data_batch_{i}.npz" for i in range(1, IMAGENET_BATCHES + 1)]
    test_file = folder / "val_data.npz"
    if not all(p.is_file() for p in (*train_files, test_file)):
        raise DataError(
            f"ImageNet {size}x{size} not found: put train_data_batch_1.npz ... "
            f"train_data_batch_{IMAGENET_BATCHES}.npz and val_data.npz (from "
            f"Imagenet{size}_train_npz and Imagenet{size}_val_npz at image-net.org, login "
            f"needed) in {folder}/"
        )

    def build(writer: CacheWriter) -> None:
        for split, files in (("train", train_files), ("test", [test_file])):
            rows = [_npz_rows(p) for p in files]
            images = writer.create(f"{split}-images", (sum(rows), 3, size, size))
            labels = writer.create(f"{split}-labels", (sum(rows),), np.int64)
            at = 0
            for path, n in zip(files, rows, strict=True):
                images[at : at + n], labels[at : at + n] = _read_imagenet_npz(path, size, n)
                at += n

    params = {"dataset": f"imagenet{size}"}
    arrays = cached_arrays(folder / "acn-cache", folder, [*train_files, test_file], params, build)
    images, labels = arrays["train-images"], arrays["train-labels"]
    val = holdout_size(len(images), IMAGENET_VAL, IMAGENET_VAL_DIVISOR)
    splits = tail_split(images, labels, val, train_files[-1])
    splits["test"] = (arrays["test-images"], arrays["test-labels"])
    notes = f"train = training batches less their last {val} images (val); test = val_data.npz"
    name = f"imagenet{size} (Chrabaszcz et al. 2017 npz, box resize)"
    return RawData(splits, 256, 1000, name, notes)


# --- CelebA -----------------------------------------------------------------------------------


def _read_partition(path: Path) -> list[tuple[str, int]]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if (
            len(parts) != 2
            or parts[1] not in ("0", "1", "2")
            or "/" in parts[0]
            or ".." in parts[0]
        ):
            raise DataError(f"{path}, line {number}: expected '<name>.jpg <0|1|2>', got {line!r}")
        entries.append((parts[0], int(parts[1])))
    if not entries:
        raise DataError(f"{path}: no entries")
    return entries


def load_celeba(root: str | Path, image_size: int) -> RawData:
    """CelebA aligned faces, centre-cropped to 148x148 and box-resized to ``image_size``, RGB.

    Files: ``root/celeba/img_align_celeba/*.jpg`` and ``root/celeba/list_eval_partition.txt``
    (lines ``000001.jpg 0``: 0 train, 1 val, 2 test). The crop side is ``min(148, w, h)``. The
    decoded images are cached once per ``image_size`` in ``root/celeba/acn-cache/<size>px/``.
    """
    base = Path(root) / "celeba"
    image_dir, partition = base / "img_align_celeba", base / "list_eval_partition.txt"
    if not partition.is_file() or not image_dir.is_dir():
        raise DataError(
            f"CelebA not found: put list_eval_partition.txt and the img_align_celeba/ folder "
            f"(000001.jpg ...) in {base}/ (download them by hand from the CelebA site)"
        )
    entries = _read_partition(partition)
    missing = [name for name, _ in entries if not (image_dir / name).is_file()]
    if missing:
        raise DataError(
            f"{partition} names {len(missing)} images missing from {image_dir}, e.g. {missing[0]}"
        )
    paths = {
        split: [image_dir / name for name, s in entries if s == code]
        for code, split in enumerate(SPLITS)
    }

    def build(writer: CacheWriter) -> None:
        for split, files in paths.items():
            out = writer.create(f"{split}-images", (len(files), 3, image_size, image_size))
            _decode_into(out, files, image_size, "RGB", CELEBA_CROP)

    params = {"dataset": "celeba", "size": image_size, "crop": CELEBA_CROP, "resample": "box"}
    sources = [partition, *(image_dir / name for name, _ in entries)]
    arrays = cached_arrays(base / "acn-cache" / f"{image_size}px", base, sources, params, build)
    splits = {split: (arrays[f"{split}-images"], None) for split in paths}
    name = f"celeba (aligned, {CELEBA_CROP}px centre crop, box resize to {image_size})"
    return RawData(splits, 256, 0, name, "splits from list_eval_partition.txt")


# --- image folders ----------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    # Hidden files include macOS "._name.jpg" companions, which are not images.
    hidden = path.name.startswith(".")
    return not hidden and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _scan(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Images directly in ``folder`` (unlabelled) or in one sub-folder per class."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if _is_image(p)]
    classes = [p.name for p in entries if p.is_dir()]
    if images and classes:
        raise DataError(f"{folder}: holds both images and sub-folders; use one or the other")
    labels: list[int] | None = None
    if classes:
        labels = []
        for k, name in enumerate(classes):
            found = sorted(p for p in (folder / name).iterdir() if _is_image(p))
            images += found
            labels += [k] * len(found)
    if not images:
        raise DataError(
            f"no images found under {folder} (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return images, labels, classes


def _carve(n: int, parts: int, folder: Path) -> list[np.ndarray]:
    """``[rest, held_1, ..., held_parts]``: a seeded, sorted split of range(n)."""
    held = max(1, n * FOLDER_HOLDOUT_PERCENT // 100)
    if n - parts * held < 1:
        raise DataError(f"{folder}: only {n} images, too few to split into train/val/test")
    order = np.random.default_rng(FOLDER_SPLIT_SEED).permutation(n)
    cuts = [order[i * held : (i + 1) * held] for i in range(parts)]
    return [np.sort(order[parts * held :]), *map(np.sort, cuts)]


def load_folder(root: str | Path, image_size: int, channels: int) -> RawData:
    """Any folder of images, centre-cropped to a square and box-resized to ``image_size``.

    With ``root/train/`` (and optionally ``val/``, ``test/``) those are the splits, and a
    missing ``val/`` or ``test/`` is carved out of train; otherwise all of ``root`` is split.
    Carving is deterministic: of a permutation of the sorted files seeded by
    :data:`FOLDER_SPLIT_SEED`, the first 5% (rounded down, at least one image) go to val, the
    next 5% to test, the rest (90%) to train; each split keeps sorted-file order. A split
    folder holds images directly (unlabelled) or one sub-folder per class (sorted names,
    labels 0..K-1, the same classes in every split). Cached in ``root/.acn-cache/``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} not found: put images (or train/, val/, test/) there")
    if channels not in (1, 3):
        raise DataError(f"{root}: image folders are read with 1 or 3 channels, not {channels}")
    layout = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if "train" not in layout:
        layout = {"all": root}
    scanned = {s: _scan(folder) for s, folder in layout.items()}
    first, (_, first_labels, classes) = next(iter(scanned.items()))
    for split, (_, labels, names) in scanned.items():
        if names != classes or (labels is None) != (first_labels is None):
            raise DataError(f"{layout[split]}: classes {names} differ from {classes} in {first}")
    files: dict[str, list[Path]] = {}
    labels: dict[str, np.ndarray | None] = {}
    missing = [s for s in ("val", "test") if s not in layout]
    whole = "all" if "all" in scanned else "train"
    pool, pool_labels, _ = scanned.pop(whole)
    pool_labels = None if pool_labels is None else np.asarray(pool_labels, np.int64)
    keep, *held = _carve(len(pool), len(missing), layout[whole]) if missing else [None]
    for split, ix in zip(["train", *missing], [keep, *held], strict=True):
        files[split] = pool if ix is None else [pool[i] for i in ix]
        labels[split] = pool_labels if ix is None or pool_labels is None else pool_labels[ix]
    for split, (paths, split_labels, _) in scanned.items():
        files[split] = paths
        labels[split] = None if split_labels is None else np.asarray(split_labels, np.int64)
    mode = "L" if channels == 1 else "RGB"

    def build(writer: CacheWriter) -> None:
        for split, paths in files.items():
            out = writer.create(f"{split}-images", (len(paths), channels, image_size, image_size))
            _decode_into(out, paths, image_size, mode, None)

    params = {
        "dataset": "folder",
        "size": image_size,
        "mode": mode,
        "resample": "box",
        "seed": FOLDER_SPLIT_SEED,
        "splits": json_digest(
            {s: [p.relative_to(root).as_posix() for p in v] for s, v in files.items()}
        ),
    }
    sources = [p for paths in files.values() for p in paths]
    cache = root / ".acn-cache" / f"{mode}-{image_size}px"
    arrays = cached_arrays(cache, root, sources, params, build)
    splits = {s: (arrays[f"{s}-images"], labels[s]) for s in SPLITS}
    colour = "grey" if channels == 1 else "RGB"
    name = f"folder {root.name} ({image_size}x{image_size} {colour}, centre crop, box resize)"
    how = "carved with seed " + str(FOLDER_SPLIT_SEED) if missing else "from train/, val/, test/"
    return RawData(splits, 256, len(classes), name, f"splits {how}; classes: {classes}")
