"""CIFAR-10's Python pickle batches, read with an unpickler that can build numpy arrays and
nothing else: the files come from elsewhere and a pickle can run code."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from acn.data.formats.base import DOWNLOAD_HINT, RawData, holdout_size, tail_split
from acn.errors import DataError

log = logging.getLogger(__name__)

CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
# The validation size of the full dataset; holdout_size scales it down for small files.
CIFAR_VAL, CIFAR_VAL_DIVISOR = 5_000, 10


# --- CIFAR-10 ---------------------------------------------------------------------------------


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR-10 batch never contains."""


def _latin1_encode(text: object, encoding: str = "latin1", errors: str = "strict") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); allow
    # exactly that, never an arbitrary codec.
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise _Refused(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


def _numpy_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and bytes, and refuses every other global.

    A pickle can name any importable callable (``os.system`` ...) and have it called while it
    loads; CIFAR files are downloaded from the internet, so only what genuine batches contain
    (written by Python 2 or by Python 3 with protocol 2) is resolved.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): bytes,  # an empty bytes object in a protocol-2 pickle
        ("builtins", "bytes"): bytes,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"refused to load {module}.{name}") from None


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: images uint8 (n, 3, 32, 32) and labels int64 (n,), safely unpickled."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except _Refused as exc:
        raise DataError(f"{path}: not a genuine CIFAR-10 batch, {exc}") from None
    except Exception as exc:  # any failure to parse an untrusted file is a data problem
        raise DataError(f"{path}: corrupt or truncated CIFAR-10 batch ({exc!r})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: no uint8 'data' matrix in this CIFAR-10 batch")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: rows of {data.shape[1]} bytes, expected 3072 (3x32x32)")
    labels = np.asarray(labels if labels is not None else [])
    if labels.shape != (len(data),) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{path}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root: str | Path) -> RawData:
    """CIFAR-10 from ``root/cifar-10-batches-py/`` (the python version of the archive).

    Splits: train = the first N - V of the 50,000 training images, val = the last
    V = ``min(5000, N // 10)``, test = ``test_batch``.
    """
    folder = Path(root) / "cifar-10-batches-py"
    names = (*CIFAR_TRAIN_FILES, "test_batch")
    if not all((folder / n).is_file() for n in names):
        raise DataError(
            f"CIFAR-10 not found: put {', '.join(names)} (from cifar-10-python.tar.gz) in "
            f"{folder}/ {DOWNLOAD_HINT}"
        )
    batches = [read_cifar_batch(folder / n) for n in CIFAR_TRAIN_FILES]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    val = holdout_size(len(images), CIFAR_VAL, CIFAR_VAL_DIVISOR)
    splits = tail_split(images, labels, val, folder / CIFAR_TRAIN_FILES[-1])
    splits["test"] = read_cifar_batch(folder / "test_batch")
    notes = f"train = first {len(images) - val} of data_batch_1..5, val = last {val}"
    return RawData(splits, 256, 10, "cifar10 (Krizhevsky 2009, python batches)", notes)
