"""MNIST: the IDX files (grey, 256 levels), the static binarized MNIST (``.amat``) with its
labels paired and verified, and dynamic binarization."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np
import torch

from acn.data.formats.base import DOWNLOAD_HINT, RawData, holdout_size, tail_split
from acn.errors import DataError

log = logging.getLogger(__name__)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
AMAT_FILES = {"train": "train", "val": "valid", "test": "test"}  # split -> file stem
AMAT_PIXELS = 28 * 28
AMAT_BLOCK_LINES = 4096  # parse this many lines at a time, to bound temporary memory
# The validation size of the full dataset; holdout_size scales it down for small files.
MNIST_VAL, MNIST_VAL_DIVISOR = 10_000, 6
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


# --- MNIST (IDX) ----------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST's format), gzipped when it ends in ``.gz``.

    Returns:
        A read-only uint8 array with the declared dimensions, e.g. (N, 28, 28) or (N,).
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        what = "corrupt or truncated gzip file" if path.suffix == ".gz" else "unreadable file"
        raise DataError(f"{path}: {what} ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: expected at least 4 header bytes, found {len(raw)}")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes (magic 0x{raw[:4].hex()}, "
            "expected 0x000008 followed by the number of dimensions)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated: expected {header} header bytes, found {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) < expected:
        raise DataError(f"{path}: truncated: expected {expected} bytes, found {len(raw)}")
    if len(raw) > expected:
        raise DataError(f"{path}: {len(raw) - expected} bytes beyond the declared {dims} array")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _mnist_paths(root: Path) -> dict[str, Path] | None:
    """The four MNIST files (plain preferred over ``.gz``), or None when any is missing."""
    folder = root / "MNIST" / "raw"
    found = {}
    for stem in MNIST_FILES:
        candidates = [folder / stem, folder / f"{stem}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            return None
        found[stem] = hit
    return found


def _mnist_arrays(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, Path]]:
    """``{"train", "test"} -> (images (N, 1, 28, 28), labels int64 (N,), images path)``."""
    paths = _mnist_paths(root)
    if paths is None:
        names = ", ".join(f"{s}[.gz]" for s in MNIST_FILES)
        raise DataError(
            f"MNIST not found: put {names} in {root / 'MNIST' / 'raw'}/ {DOWNLOAD_HINT}"
        )
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        image_path = paths[f"{prefix}-images-idx3-ubyte"]
        label_path = paths[f"{prefix}-labels-idx1-ubyte"]
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{image_path}: images of shape {images.shape[1:]}, expected 28x28")
        if labels.ndim != 1:
            raise DataError(f"{label_path}: labels with {labels.ndim} dimensions, expected 1")
        if len(images) != len(labels):
            raise DataError(
                f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels"
            )
        if len(labels) and labels.max() > 9:
            raise DataError(f"{label_path}: label {labels.max()} outside 0..9")
        out[split] = (images[:, None], labels.astype(np.int64), image_path)
    return out


def load_mnist(root: str | Path) -> RawData:
    """MNIST with its 256 grey levels, from ``root/MNIST/raw/`` (IDX files, optionally gzipped).

    Splits: train = the first N - V training images, val = the last V, with
    V = ``min(10000, N // 6)`` (the 50,000 / 10,000 split of the static binarized MNIST for the
    real files), test = the 10,000 ``t10k`` images.
    """
    arrays = _mnist_arrays(Path(root))
    images, labels, path = arrays["train"]
    splits = tail_split(
        images, labels, holdout_size(len(images), MNIST_VAL, MNIST_VAL_DIVISOR), path
    )
    splits["test"] = arrays["test"][:2]
    notes = (
        f"train = first {len(splits['train'][0])} of {path.name}, val = last "
        f"{len(splits['val'][0])}, test = {arrays['test'][2].name}"
    )
    return RawData(splits, 256, 10, "mnist (LeCun et al. 1998 IDX, 256 grey levels)", notes)


# --- MNIST binarized --------------------------------------------------------------------------


def read_amat(path: str | Path, pixels: int = AMAT_PIXELS) -> np.ndarray:
    """Read a ``.amat`` text file of binary images: one image per line, values "0"/"1".

    Vectorised over bytes (no Python work per value), so 50,000 lines take about a second.

    Returns:
        uint8 (N, pixels) of 0/1.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable file ({exc})") from None
    end = len(raw)
    while end and raw[end - 1] in b" \t\r\n":  # trailing blank lines are not images
        end -= 1
    if end == 0:
        raise DataError(f"{path}: empty file, expected one image of {pixels} values per line")
    buf = np.frombuffer(raw, np.uint8, count=end)
    line_ends = np.append(np.flatnonzero(buf == ord("\n")) + 1, end)  # exclusive ends
    rows, start = [], 0
    for first in range(0, len(line_ends), AMAT_BLOCK_LINES):
        ends = line_ends[first : first + AMAT_BLOCK_LINES]
        rows.append(_amat_block(buf[start : ends[-1]], ends - start, first + 1, path, pixels))
        start = int(ends[-1])
    return np.concatenate(rows)


def _amat_block(
    buf: np.ndarray, ends: np.ndarray, first_line: int, path: Path, pixels: int
) -> np.ndarray:
    """Parse whole lines ``buf`` (line ``first_line`` on, exclusive ``ends``) to (lines, pixels)."""

    def line_of(offset: int) -> int:
        return first_line + int(np.searchsorted(ends, offset, side="right"))

    digit = (buf >= ord("0")) & (buf <= ord("9"))
    space = (buf == ord(" ")) | (buf == ord("\n")) | (buf == ord("\t")) | (buf == ord("\r"))
    bad = np.flatnonzero(~(digit | space))
    if len(bad):
        char = chr(buf[bad[0]])
        raise DataError(f"{path}, line {line_of(bad[0])}: unexpected character {char!r}")
    glued = np.flatnonzero(digit[:-1] & digit[1:])
    if len(glued):
        raise DataError(f"{path}, line {line_of(glued[0])}: a value other than 0 or 1")
    at = np.flatnonzero(digit)
    counts = np.diff(np.searchsorted(at, ends), prepend=0)
    wrong = np.flatnonzero(counts != pixels)
    if len(wrong):
        k = int(wrong[0])
        raise DataError(f"{path}, line {first_line + k}: {counts[k]} values, expected {pixels}")
    values = buf[at] - ord("0")
    high = np.flatnonzero(values > 1)
    if len(high):
        line = line_of(at[high[0]])
        raise DataError(f"{path}, line {line}: value {values[high[0]]}, expected 0 or 1")
    return values.reshape(-1, pixels)


def pairing_score(
    binary: np.ndarray, grey: np.ndarray, margin_nats: float = PAIRING_MARGIN_NATS
) -> float:
    """How well grey images explain binary images drawn as Bernoulli(grey / 255), pairwise.

    For each image i, compare the log-likelihood of ``binary[i]`` under
    Bernoulli(clip(grey[i] / 255, 0.01, 0.99)) with that under its neighbour ``grey[i + 1]``
    (cyclically): a deliberately mismatched pairing. The clip keeps a single stray pixel from
    costing an infinite penalty.

    Args:
        binary: (N, ...) 0/1 images, N >= 2.
        grey: (N, ...) uint8 images of the same shape.
        margin_nats: how much better (nats per image) the claimed pairing must be to count.

    Returns:
        The fraction of images whose claimed pairing wins by more than ``margin_nats``: near 1
        for true pairs, about 0.5 or less for wrong ones.
    """
    n = len(binary)
    b, g = np.asarray(binary).reshape(n, -1), np.asarray(grey).reshape(len(grey), -1)
    if b.shape != g.shape or n < 2 or g.dtype != np.uint8:
        raise ValueError(f"need >= 2 pairs of equal shape, uint8 grey; got {b.shape}, {g.shape}")
    p = np.clip(np.arange(256) / 255.0, 0.01, 0.99)
    log_p, log_q = np.log(p), np.log1p(-p)  # log P(1), log P(0) per grey level
    wins = 0
    for start in range(0, n, 2048):  # chunks bound the float temporaries
        ix = np.arange(start, min(start + 2048, n))
        on = b[ix].astype(bool)
        own, other = g[ix], g[(ix + 1) % n]
        ll_own = np.where(on, log_p[own], log_q[own]).sum(1)
        ll_other = np.where(on, log_p[other], log_q[other]).sum(1)
        wins += int(np.count_nonzero(ll_own - ll_other > margin_nats))
    return wins / n


def load_mnist_static(root: str | Path) -> RawData:
    """The static binarized MNIST of Larochelle & Murray (2011), from ``root/binarized_mnist/``.

    Files ``binarized_mnist_{train,valid,test}.amat`` (50,000 / 10,000 / 10,000 images drawn
    once as Bernoulli(grey / 255) from MNIST). They carry no labels. When the MNIST IDX files
    are also in ``root/MNIST/raw/``, labels are paired by position (train = MNIST train[:50000],
    val = [50000:60000], test = t10k) and the pairing is verified with :func:`pairing_score`
    (at least :data:`PAIRING_MIN_FRACTION` per split); a failed check is a DataError.
    """
    root = Path(root)
    folder = root / "binarized_mnist"
    paths = {s: folder / f"binarized_mnist_{stem}.amat" for s, stem in AMAT_FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        names = ", ".join(p.name for p in paths.values())
        raise DataError(f"binarized MNIST not found: put {names} in {folder}/ {DOWNLOAD_HINT}")
    images = {s: read_amat(p).reshape(-1, 1, 28, 28) for s, p in paths.items()}
    name = "mnist-static (Larochelle binarization)"
    if _mnist_paths(root) is None:
        notes = f"no labels: put the MNIST IDX files in {root / 'MNIST' / 'raw'}/ to pair them"
        log.info("binarized MNIST: %s", notes)
        return RawData({s: (x, None) for s, x in images.items()}, 2, 0, name, notes)
    mnist = _mnist_arrays(root)
    n_train, n_val = len(images["train"]), len(images["val"])
    grey_train, labels_train, train_path = mnist["train"]
    if n_train + n_val != len(grey_train) or len(images["test"]) != len(mnist["test"][0]):
        raise DataError(
            f"{folder}: {n_train}+{n_val}+{len(images['test'])} binarized images do not match "
            f"MNIST's {len(grey_train)}+{len(mnist['test'][0])} in {train_path.parent}"
        )
    grey = {
        "train": (grey_train[:n_train], labels_train[:n_train]),
        "val": (grey_train[n_train:], labels_train[n_train:]),
        "test": mnist["test"][:2],
    }
    scores = {}
    for split, (g, _) in grey.items():
        scores[split] = pairing_score(images[split], g) if len(g) >= 2 else 1.0
        if scores[split] < PAIRING_MIN_FRACTION:
            raise DataError(
                f"{paths[split]}: the MNIST labels in {train_path.parent} do not match these "
                f"images (only {scores[split]:.0%} are explained by their paired grey image, "
                f"need {PAIRING_MIN_FRACTION:.0%}); remove those files to load without labels"
            )
    notes = "labels paired with MNIST by position and verified: " + ", ".join(
        f"{s} {v:.1%}" for s, v in scores.items()
    )
    log.info("binarized MNIST: %s", notes)
    return RawData({s: (images[s], grey[s][1]) for s in images}, 2, 10, name, notes)


def binarize(
    grey: np.ndarray | torch.Tensor, seed: int | torch.Generator
) -> np.ndarray | torch.Tensor:
    """Draw binary images as Bernoulli(grey / 255), exactly.

    Each pixel is 1 when a uniform integer in 0..254 is below its grey level, which happens
    with probability grey / 255 (0 never, 255 always).

    Args:
        grey: uint8 images of any shape, a numpy array or a tensor.
        seed: an int, or a ``torch.Generator`` on the tensor's device.

    Returns:
        uint8 0/1 of the same shape and kind (numpy in, numpy out).
    """
    as_numpy = not isinstance(grey, torch.Tensor)
    levels = torch.from_numpy(np.array(grey, dtype=np.uint8)) if as_numpy else grey
    if levels.dtype != torch.uint8:
        raise ValueError(f"binarize needs uint8 grey levels, got {levels.dtype}")
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    draws = torch.randint(
        0, 255, levels.shape, generator=generator, device=levels.device, dtype=torch.uint8
    )
    out = (draws < levels).to(torch.uint8)
    return out.numpy() if as_numpy else out


def load_mnist_dynamic(root: str | Path) -> RawData:
    """Dynamically binarized MNIST: grey training images, binarized afresh at every use.

    Same files and splits as :func:`load_mnist`. The training images stay grey (the caller
    applies :func:`binarize` per batch, so ``dynamic_binarization`` is True); validation and
    test are binarized once here with :data:`DYNAMIC_VAL_SEED` and :data:`DYNAMIC_TEST_SEED`,
    so every run is scored on the same binary images.
    """
    grey = load_mnist(root)
    splits = dict(grey.splits)
    for split, seed in (("val", DYNAMIC_VAL_SEED), ("test", DYNAMIC_TEST_SEED)):
        images, labels = splits[split]
        splits[split] = (binarize(images, seed), labels)
    notes = (
        f"{grey.notes}; train binarized at every use, val/test once with seeds "
        f"{DYNAMIC_VAL_SEED}/{DYNAMIC_TEST_SEED}"
    )
    name = "mnist-dynamic (Bernoulli(grey/255) redrawn each use; fixed val/test draws)"
    return RawData(splits, 2, 10, name, notes, dynamic_binarization=True)
