"""Small dataset files in the real on-disk formats (MNIST IDX, binarized-MNIST ``.amat``,
CIFAR-10 pickles, downsampled-ImageNet ``.npz``, images), written by the tests that read them."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> Path:
    """IDX as MNIST ships it: 0x0000, type 0x08 (ubyte), ndim, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def digits_like(rng: np.random.Generator, n: int, size: int = 28) -> np.ndarray:
    """(n, size, size) uint8: dark background, a few bright strokes with grey edges."""
    images = np.zeros((n, size, size), np.uint8)
    for image in images:
        for _ in range(3):
            r, c = rng.integers(4, size - 8, 2)
            h, w = rng.integers(2, 8, 2)
            image[r - 1 : r + h + 1, c - 1 : c + w + 1] = np.maximum(
                image[r - 1 : r + h + 1, c - 1 : c + w + 1], 120
            )
            image[r : r + h, c : c + w] = rng.integers(200, 256)
    return images


def write_mnist(root: Path, rng, n_train=60, n_test=12, gz=True):
    raw, ext = root / "MNIST" / "raw", ".gz" if gz else ""
    data = {
        "train": (digits_like(rng, n_train), rng.integers(0, 10, n_train).astype(np.uint8)),
        "t10k": (digits_like(rng, n_test), rng.integers(0, 10, n_test).astype(np.uint8)),
    }
    for prefix, (images, labels) in data.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return data


def write_amat(path: Path, binary: np.ndarray) -> Path:
    lines = [" ".join(map(str, row)) for row in binary.reshape(len(binary), -1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def bernoulli(rng, grey: np.ndarray) -> np.ndarray:
    return (rng.random(grey.shape) < grey / 255.0).astype(np.uint8)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A batch as in cifar-10-python.tar.gz: a protocol-2 pickle of a dict with bytes keys."""
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


def write_cifar(root: Path, rng, per_batch=50, n_test=20):
    folder = root / "cifar-10-batches-py"
    out = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        write_cifar_batch(folder / name, images, labels)
        out[name] = (images, labels)
    return out


def write_imagenet(root: Path, rng, size=32, per_batch=3, n_val=4):
    folder = root / f"imagenet{size}"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    names = [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]
    for name in names:
        n = n_val if name == "val_data" else per_batch
        data = rng.integers(0, 256, (n, 3 * size * size), dtype=np.uint8)
        labels = rng.integers(1, 1001, n)
        np.savez(folder / f"{name}.npz", data=data, labels=labels)
        out[name] = (data, labels)
    return out


def save_image(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path
