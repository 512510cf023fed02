"""Readers of the standard on-disk dataset layouts, returning uint8 arrays.

Each loader reads the files as their publishers distribute them (the layouts torchvision also
uses) and returns :class:`RawData`: uint8 images (N, C, H, W), int64 labels or None, for the
splits ``train``, ``val`` and ``test``. Nothing is ever converted to float here; the networks
convert per batch. Every problem, a missing dataset included, raises :class:`DataError` with a
one-line message that names the file and says what to do.

This module holds what the readers share (:class:`RawData`, the split rules) and
:func:`load_raw`, which dispatches on a dataset name. The readers: :mod:`acn.formats_mnist`
(IDX, the static binarized ``.amat`` files), :mod:`acn.formats_cifar` (pickled batches) and
:mod:`acn.formats_images` (ImageNet 32/64, CelebA and image folders, cached as memory-mapped
``.npy`` files by :mod:`acn.formats_cache`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acn.errors import DataError

log = logging.getLogger(__name__)

DOWNLOAD_HINT = "or run with data.download=true on a machine with a network"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
AMAT_FILES = {"train": "train", "val": "valid", "test": "test"}  # split -> file stem
AMAT_PIXELS = 28 * 28
AMAT_BLOCK_LINES = 4096  # parse this many lines at a time, to bound temporary memory
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
# Validation sizes of the full datasets; :func:`holdout_size` scales them down for small files.
MNIST_VAL, MNIST_VAL_DIVISOR = 10_000, 6
CIFAR_VAL, CIFAR_VAL_DIVISOR = 5_000, 10
# Dynamic binarization: val and test are binarized once, with these seeds, so that their
# numbers are comparable across runs; only training images are redrawn at every use.
DYNAMIC_TEST_SEED = 20_180_001
DYNAMIC_VAL_SEED = DYNAMIC_TEST_SEED + 1
# Static MNIST label pairing: an image's own grey image must explain it better than its
# neighbour's by more than PAIRING_MARGIN_NATS (a likelihood ratio above e^10 ~ 22,000) for at
# least PAIRING_MIN_FRACTION of the images. Correctly paired digits win by hundreds of nats;
# mispaired ones win about half the time, so the two cases are far apart.
PAIRING_MARGIN_NATS = 10.0
PAIRING_MIN_FRACTION = 0.9


@dataclass(frozen=True)
class RawData:
    """A dataset as stored: uint8 images and optional labels per split.

    Attributes:
        splits: ``{"train", "val", "test"} -> (images, labels)``; images uint8 (N, C, H, W),
            possibly a read-only ``np.memmap``; labels int64 (N,) or None.
        levels: values a pixel takes as the model sees it (256 grey levels, 2 when binary).
        num_classes: number of label values (0 when unlabelled).
        name: the exact variant, e.g. ``"mnist-static (Larochelle binarization)"``.
        notes: how splits were formed and labels paired or verified.
        dynamic_binarization: the training images are grey (0..255) and must be binarized
            afresh at every use with :func:`binarize`; val and test are already binary.
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray | None]]
    levels: int
    num_classes: int
    name: str
    notes: str = ""
    dynamic_binarization: bool = False

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the training images."""
        return tuple(self.splits["train"][0].shape[1:])


def holdout_size(n: int, cap: int, divisor: int) -> int:
    """Validation images held out of ``n`` training images: ``min(cap, n // divisor)``.

    With the full datasets this is the standard size (MNIST 10,000 of 60,000; CIFAR-10 5,000
    of 50,000); small files, such as the synthetic ones of the tests, keep a proportional share.
    """
    return min(cap, n // divisor)


def tail_split(
    images: np.ndarray, labels: np.ndarray | None, val: int, path: Path
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """``{"train": first N - val, "val": last val}`` as views (no copies)."""
    n = len(images)
    if val < 1 or n - val < 1:
        raise DataError(f"{path}: only {n} training images, too few to hold out a validation set")
    cut = n - val
    return {
        "train": (images[:cut], None if labels is None else labels[:cut]),
        "val": (images[cut:], None if labels is None else labels[cut:]),
    }


# --- registry ---------------------------------------------------------------------------------


def _fixed(module: str, loader: str) -> Callable[[Path, int, int], RawData]:
    # Imported on use: the reader modules import this one for RawData and the split rules.
    def load(root: Path, image_size: int, channels: int) -> RawData:
        return getattr(importlib.import_module(f"acn.{module}"), loader)(root)

    return load


def _images(kind: str) -> Callable[[Path, int, int], RawData]:
    def load(root: Path, image_size: int, channels: int) -> RawData:
        # Imported here: acn.formats_images imports this module.
        from acn import formats_images

        if kind in ("imagenet32", "imagenet64"):
            return formats_images.load_imagenet(root, int(kind[-2:]))
        if kind == "celeba":
            return formats_images.load_celeba(root, image_size)
        return formats_images.load_folder(root, image_size, channels)

    return load


LOADERS: dict[str, Callable[[Path, int, int], RawData]] = {
    "mnist-static": _fixed("formats_mnist", "load_mnist_static"),
    "mnist-dynamic": _fixed("formats_mnist", "load_mnist_dynamic"),
    "mnist": _fixed("formats_mnist", "load_mnist"),
    "cifar10": _fixed("formats_cifar", "load_cifar10"),
    "imagenet32": _images("imagenet32"),
    "imagenet64": _images("imagenet64"),
    "celeba": _images("celeba"),
    "folder": _images("folder"),
}


def load_raw(name: str, root: str | Path, image_size: int, channels: int) -> RawData:
    """Load dataset ``name`` from under ``root``.

    ``image_size`` is used by ``celeba`` and ``folder``, ``channels`` by ``folder``; the other
    datasets have the geometry their files fix.
    """
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(LOADERS)}")
    return LOADERS[name](Path(root), image_size, channels)
