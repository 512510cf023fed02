"""Readers of the standard on-disk dataset layouts, returning uint8 arrays.

Each loader reads the files as their publishers distribute them (the layouts torchvision also
uses) and returns :class:`RawData`: uint8 images (N, C, H, W), int64 labels or None, for the
splits ``train``, ``val`` and ``test``. Nothing is ever converted to float here; the networks
convert per batch. Every problem, a missing dataset included, raises :class:`DataError` with a
one-line message that names the file and says what to do.

This module holds what the readers share (:class:`RawData`, the split rules);
:func:`acn.data.formats.registry.load_raw` dispatches on a dataset name. The readers:
:mod:`acn.data.formats.mnist` (IDX, the static binarized ``.amat`` files),
:mod:`acn.data.formats.cifar` (pickled batches) and :mod:`acn.data.formats.images` (ImageNet
32/64, CelebA and image folders, cached as memory-mapped ``.npy`` files by
:mod:`acn.data.formats.cache`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acn.errors import DataError

log = logging.getLogger(__name__)

DOWNLOAD_HINT = "or run with data.download=true on a machine with a network"


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
