"""Readers of the on-disk dataset layouts, on small files written in the real formats."""

from __future__ import annotations

import gzip
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import (
    bernoulli,
    digits_like,
    save_image,
    write_amat,
    write_cifar,
    write_idx,
    write_imagenet,
    write_mnist,
)

from acn.data.formats import mnist as formats
from acn.data.formats.cifar import load_cifar10
from acn.data.formats.images import (
    FOLDER_SPLIT_SEED,
    decode_image,
    load_celeba,
    load_folder,
    load_imagenet,
)
from acn.data.formats.mnist import (
    binarize,
    load_mnist,
    load_mnist_dynamic,
    load_mnist_static,
    pairing_score,
    read_amat,
    read_idx,
)
from acn.data.formats.registry import load_raw
from acn.errors import DataError

# --- writers of the real formats --------------------------------------------------------------


def inode(path: Path) -> int:
    return path.stat().st_ino


def assert_names(excinfo, path: Path) -> None:
    assert str(path) in str(excinfo.value) or path.name in str(excinfo.value), excinfo.value


# --- MNIST (IDX) ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / f"x-idx3-ubyte{suffix}", array))
    assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_read_idx_errors_name_the_file(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = write_idx(tmp_path / "a-idx3-ubyte", array)
    data = raw.read_bytes()
    cases = {
        "truncated.idx": (data[:-100], "truncated: expected 1584 bytes, found 1484"),
        "magic.idx": (b"\x00\x00\x0d\x03" + data[4:], "not an IDX file"),
        "long.idx": (data + b"xx", "2 bytes beyond"),
        "corrupt.gz": (b"\x1f\x8b\x08\x00" + bytes(range(60)), "corrupt or truncated gzip"),
        "truncated.gz": (gzip.compress(data)[:-30], "corrupt or truncated gzip"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message) as excinfo:
            read_idx(tmp_path / name)
        assert_names(excinfo, tmp_path / name)


def test_load_mnist_splits_and_labels(tmp_path):
    data = write_mnist(tmp_path, np.random.default_rng(1), n_train=60, n_test=12, gz=False)
    raw = load_mnist(tmp_path)
    (train, ytr), (val, yva), (test, yte) = (raw.splits[s] for s in ("train", "val", "test"))
    # val = last min(10000, 60 // 6) = 10 training images
    assert train.shape == (50, 1, 28, 28) and val.shape == (10, 1, 28, 28)
    assert test.shape == (12, 1, 28, 28) and train.dtype == np.uint8
    assert np.array_equal(val[:, 0], data["train"][0][50:]) and np.array_equal(
        yva, data["train"][1][50:]
    )
    assert ytr.dtype == np.int64 and np.array_equal(yte, data["t10k"][1])
    assert raw.levels == 256 and raw.num_classes == 10 and raw.image_shape == (1, 28, 28)


def test_load_mnist_problems(tmp_path):
    with pytest.raises(DataError, match="data.download=true") as excinfo:
        load_mnist(tmp_path)
    assert "train-images-idx3-ubyte[.gz]" in str(excinfo.value)
    assert str(tmp_path / "MNIST" / "raw") in str(excinfo.value)
    rng = np.random.default_rng(2)
    write_mnist(tmp_path, rng)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(59, np.uint8))
    with pytest.raises(DataError, match="60 images but .* has 59 labels"):
        load_mnist(tmp_path)
    write_idx(labels, np.full(60, 10, np.uint8))
    with pytest.raises(DataError, match="label 10 outside 0..9") as excinfo:
        load_mnist(tmp_path)
    assert_names(excinfo, labels)


# --- binarized MNIST --------------------------------------------------------------------------


def test_read_amat_parses_and_reports_line_numbers(tmp_path):
    binary = (np.random.default_rng(3).random((4, 784)) < 0.3).astype(np.uint8)
    path = write_amat(tmp_path / "ok.amat", binary)
    assert np.array_equal(read_amat(path), binary)
    crlf = tmp_path / "crlf.amat"
    crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"\n\n")
    assert np.array_equal(read_amat(crlf), binary)
    lines = path.read_text().splitlines()
    bad = {
        "char.amat": (lines[:2] + [lines[2].replace("0", "x", 1)] + lines[3:], "line 3: unexp"),
        "two.amat": (lines[:1] + ["2" + lines[1][1:]] + lines[2:], "line 2: value 2"),
        "glued.amat": (lines[:3] + ["10" + lines[3][1:]], "line 4: a value other than 0 or 1"),
        "short.amat": (lines[:3] + [lines[3][:401]], "line 4: 201 values, expected 784"),
        "blank.amat": (lines[:1] + [""] + lines[1:], "line 2: 0 values"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text("\n".join(text) + "\n")
        with pytest.raises(DataError, match=message) as excinfo:
            read_amat(tmp_path / name)
        assert_names(excinfo, tmp_path / name)
    (tmp_path / "empty.amat").write_text("\n")
    with pytest.raises(DataError, match="empty file"):
        read_amat(tmp_path / "empty.amat")


def test_read_amat_is_fast_on_a_full_size_file(tmp_path):
    bits = (np.random.default_rng(4).random((50_000, 784)) < 0.13).astype(np.uint8)
    text = np.full((50_000, 1568), ord(" "), np.uint8)
    text[:, 0::2] = bits + ord("0")
    text[:, -1] = ord("\n")
    path = tmp_path / "big.amat"
    path.write_bytes(text.tobytes())
    start = time.perf_counter()
    out = read_amat(path)
    assert time.perf_counter() - start < 10  # about 1 s; a per-value Python loop takes minutes
    assert out.shape == (50_000, 784) and np.array_equal(out, bits)


def test_pairing_score_accepts_true_pairs_and_rejects_wrong_ones():
    rng = np.random.default_rng(5)
    grey = digits_like(rng, 300)
    binary = bernoulli(rng, grey)
    true = pairing_score(binary, grey)
    shuffled = pairing_score(binary, grey[rng.permutation(300)])
    # Off by one: binary[i] really drawn from grey[i + 1], the very image used as the mismatch.
    shifted = pairing_score(np.roll(binary, -1, axis=0), grey)
    assert true >= 0.99 and true >= formats.PAIRING_MIN_FRACTION
    assert shuffled < 0.6 and shifted < 0.1
    with pytest.raises(ValueError):
        pairing_score(binary[:10], grey[:9])


def test_static_mnist_labels_are_paired_and_verified(tmp_path):
    rng = np.random.default_rng(6)
    folder = tmp_path / "binarized_mnist"
    for split, n in (("train", 50), ("valid", 10), ("test", 12)):
        write_amat(folder / f"binarized_mnist_{split}.amat", bernoulli(rng, digits_like(rng, n)))
    unlabelled = load_mnist_static(tmp_path)  # no MNIST files: no labels, and said so
    assert unlabelled.splits["train"][1] is None and unlabelled.num_classes == 0
    assert "no labels" in unlabelled.notes and unlabelled.levels == 2
    assert unlabelled.splits["train"][0].shape == (50, 1, 28, 28)
    data = write_mnist(tmp_path, rng, n_train=60, n_test=12)
    grey_train, labels_train = data["train"]
    for split, grey in (
        ("train", grey_train[:50]),
        ("valid", grey_train[50:]),
        ("test", data["t10k"][0]),
    ):
        write_amat(folder / f"binarized_mnist_{split}.amat", bernoulli(rng, grey))
    raw = load_mnist_static(tmp_path)
    assert np.array_equal(raw.splits["train"][1], labels_train[:50])
    assert np.array_equal(raw.splits["val"][1], labels_train[50:])
    assert np.array_equal(raw.splits["test"][1], data["t10k"][1])
    assert raw.num_classes == 10 and "verified" in raw.notes
    train = folder / "binarized_mnist_train.amat"
    write_amat(train, bernoulli(rng, grey_train[:50][rng.permutation(50)]))
    with pytest.raises(DataError, match="do not match these images") as excinfo:
        load_mnist_static(tmp_path)
    assert_names(excinfo, train)
    write_amat(train, bernoulli(rng, grey_train[:49]))
    with pytest.raises(DataError, match="do not match MNIST"):
        load_mnist_static(tmp_path)
    train.unlink()
    with pytest.raises(DataError, match="binarized_mnist_train.amat.*data.download=true"):
        load_mnist_static(tmp_path)


def test_binarize_is_bernoulli_grey_over_255_and_seeded():
    grey = np.full((200, 784), 64, np.uint8)
    a, b, c = binarize(grey, 1), binarize(grey, 1), binarize(grey, 2)
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and set(np.unique(a)) == {0, 1}
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(a.mean() - 64 / 255) < 0.005  # 156,800 draws: standard error 0.001
    # Exact at the ends: 0 never fires and 255 always does (a draw in 0..255 would miss).
    assert binarize(np.zeros(100_000, np.uint8), 0).max() == 0
    assert binarize(np.full(100_000, 255, np.uint8), 0).min() == 1
    tensor = binarize(torch.full((8, 8), 128, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8


def test_dynamic_mnist_keeps_train_grey_and_fixes_val_and_test(tmp_path):
    data = write_mnist(tmp_path, np.random.default_rng(7))
    raw, again = load_mnist_dynamic(tmp_path), load_mnist_dynamic(tmp_path)
    assert raw.dynamic_binarization and raw.levels == 2
    assert np.array_equal(raw.splits["train"][0][:, 0], data["train"][0][:50])  # still grey
    for split in ("val", "test"):
        images = raw.splits[split][0]
        assert images.max() == 1 and np.array_equal(images, again.splits[split][0])
    test = raw.splits["test"][0]
    assert np.array_equal(test, binarize(data["t10k"][0][:, None], formats.DYNAMIC_TEST_SEED))


# --- CIFAR-10 ---------------------------------------------------------------------------------


def test_load_cifar10(tmp_path):
    data = write_cifar(tmp_path, np.random.default_rng(8))
    raw = load_cifar10(tmp_path)
    train, val, test = (raw.splits[s] for s in ("train", "val", "test"))
    assert train[0].shape == (225, 3, 32, 32) and val[0].shape == (25, 3, 32, 32)  # 250 // 10
    assert np.array_equal(val[0], data["data_batch_5"][0][25:])
    assert np.array_equal(train[1][:50], data["data_batch_1"][1]) and train[1].dtype == np.int64
    assert np.array_equal(test[0], data["test_batch"][0]) and raw.num_classes == 10


def test_cifar10_corrupt_truncated_and_missing(tmp_path):
    write_cifar(tmp_path, np.random.default_rng(9))
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    content = batch.read_bytes()
    batch.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as excinfo:
        load_cifar10(tmp_path)
    assert_names(excinfo, batch)
    batch.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)))
    with pytest.raises(DataError) as excinfo:
        load_cifar10(tmp_path)
    assert_names(excinfo, batch)
    batch.write_bytes(pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0] * 3}, 2))
    with pytest.raises(DataError, match="expected 3072"):
        load_cifar10(tmp_path)
    batch.unlink()
    with pytest.raises(DataError, match="data_batch_1, .*test_batch.*data.download=true"):
        load_cifar10(tmp_path)


def _py2_str(b: bytes) -> bytes:
    # Python 2 wrote str (bytes) with SHORT_BINSTRING / BINSTRING, which Python 3 never emits.
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + len(b).to_bytes(4, "little") + b


def _py2_int(n: int) -> bytes:
    return b"K" + bytes([n]) if n < 256 else b"M" + n.to_bytes(2, "little")


def py2_cifar_batch(data: np.ndarray, labels) -> bytes:
    """A batch pickled as the real files were: Python 2, protocol 2, numpy.core names."""
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
    dtype += b"(" + _py2_int(3) + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
    dtype += _py2_int(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0)
    array += b"\x85" + _py2_str(b"b") + b"\x87R(" + _py2_int(1) + _py2_int(data.shape[0])
    array += _py2_int(data.shape[1]) + b"\x86" + dtype + b"\x89" + _py2_str(data.tobytes()) + b"tb"
    label_list = b"](" + b"".join(_py2_int(int(v)) for v in labels) + b"e"
    return b"\x80\x02}(" + _py2_str(b"data") + array + _py2_str(b"labels") + label_list + b"u."


def test_cifar10_reads_python2_batches(tmp_path):
    data = write_cifar(tmp_path, np.random.default_rng(16), per_batch=20, n_test=5)
    for name, (images, labels) in data.items():
        batch = py2_cifar_batch(images.reshape(len(images), -1), labels)
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(batch)
    raw = load_cifar10(tmp_path)
    assert np.array_equal(raw.splits["test"][0], data["test_batch"][0])
    assert np.array_equal(raw.splits["train"][1][:20], data["data_batch_1"][1])


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_Payload(armed), protocol=2))  # the payload does run elsewhere
    assert armed.exists()
    write_cifar(tmp_path, np.random.default_rng(10))
    marker = tmp_path / "marker"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="not a genuine CIFAR-10 batch.*refused to load") as excinfo:
        load_cifar10(tmp_path)
    assert_names(excinfo, batch) and "system" in str(excinfo.value)
    assert not marker.exists()


# --- ImageNet ---------------------------------------------------------------------------------


def test_imagenet_is_cached_as_memmaps_and_rebuilt_when_sources_change(tmp_path):
    data = write_imagenet(tmp_path, np.random.default_rng(11))
    raw = load_imagenet(tmp_path, 32)
    (train, ytr), (val, yva), (test, yte) = (raw.splits[s] for s in ("train", "val", "test"))
    assert train.shape == (27, 3, 32, 32) and val.shape == (3, 3, 32, 32)  # 30 // 10 held out
    assert isinstance(train, np.memmap) and train.dtype == np.uint8 and not train.flags.writeable
    first = data["train_data_batch_1"][0][0]
    assert np.array_equal(train[0, 0].ravel(), first[:1024])  # plane order: R first
    assert np.array_equal(train[0, 2].ravel(), first[2048:])
    assert np.array_equal(yte, data["val_data"][1] - 1) and ytr.min() >= 0 and yte.shape == (4,)
    assert np.array_equal(test.reshape(4, -1), data["val_data"][0])
    cache = tmp_path / "imagenet32" / "acn-cache" / "train-images.npy"
    before = inode(cache)
    load_imagenet(tmp_path, 32)
    assert inode(cache) == before  # unchanged sources: reused
    batch = tmp_path / "imagenet32" / "train_data_batch_4.npz"
    new = np.random.default_rng(12).integers(0, 256, (3, 3072), dtype=np.uint8)
    np.savez(batch, data=new, labels=np.ones(3, np.int64))
    os.utime(batch, ns=(time.time_ns() + 10**9,) * 2)  # same size: the mtime tells
    rebuilt = load_imagenet(tmp_path, 32)
    assert inode(cache) != before
    assert np.array_equal(rebuilt.splits["train"][0][9].ravel(), new[0])


def test_imagenet_corrupt_truncated_and_missing(tmp_path):
    with pytest.raises(DataError, match="train_data_batch_1.npz .* val_data.npz .*imagenet64"):
        load_imagenet(tmp_path, 64)
    write_imagenet(tmp_path, np.random.default_rng(13))
    batch = tmp_path / "imagenet32" / "train_data_batch_2.npz"
    content = batch.read_bytes()
    batch.write_bytes(content[: len(content) - 200])
    with pytest.raises(DataError) as excinfo:
        load_imagenet(tmp_path, 32)
    assert_names(excinfo, batch)
    corrupt = bytearray(content)
    corrupt[len(content) // 2 : len(content) // 2 + 8] = b"corrupt!"  # inside the data member
    batch.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="corrupt or truncated npz") as excinfo:
        load_imagenet(tmp_path, 32)
    assert_names(excinfo, batch)
    batch.write_bytes(b"PK\x03\x04" + bytes(300))
    with pytest.raises(DataError, match="not a readable npz") as excinfo:
        load_imagenet(tmp_path, 32)
    assert_names(excinfo, batch)
    np.savez(batch, data=np.zeros((3, 3072), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="labels outside 1..1000"):
        load_imagenet(tmp_path, 32)
    assert not list((tmp_path / "imagenet32" / "acn-cache").glob("*.tmp"))  # aborted cleanly


# --- CelebA -----------------------------------------------------------------------------------


def write_celeba(root: Path, splits=(0, 0, 0, 1, 1, 2)) -> Path:
    base = root / "celeba"
    lines = []
    for i, split in enumerate(splits, 1):
        face = np.zeros((218, 178, 3), np.uint8)
        face[...] = (200, 0, 0)  # red border, cropped away
        face[35:183, 15:163] = (0, 0, 40 * i)  # the 148x148 centre
        save_image(base / "img_align_celeba" / f"{i:06d}.jpg", face, quality=95)
        lines.append(f"{i:06d}.jpg {split}")
    (base / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return base


def test_celeba_centre_crop_resize_and_cache(tmp_path):
    base = write_celeba(tmp_path)
    raw = load_raw("celeba", tmp_path, 16, 3)
    train, val, test = (raw.splits[s][0] for s in ("train", "val", "test"))
    assert train.shape == (3, 3, 16, 16) and val.shape == (2, 3, 16, 16) and len(test) == 1
    assert isinstance(train, np.memmap) and raw.splits["train"][1] is None
    assert train[:, 0].max() < 30  # no red: the border lies outside the centre crop
    assert abs(int(test[0, 2].mean()) - 240) < 8 and abs(int(train[1, 2].mean()) - 80) < 8
    cache = base / "acn-cache" / "16px" / "train-images.npy"
    before = inode(cache)
    load_celeba(tmp_path, 16)
    assert inode(cache) == before
    load_celeba(tmp_path, 8)  # another size, another cache
    assert inode(cache) == before and (base / "acn-cache" / "8px" / "train-images.npy").is_file()


def test_celeba_problems_name_the_file(tmp_path):
    with pytest.raises(DataError, match="list_eval_partition.txt and the img_align_celeba"):
        load_celeba(tmp_path, 16)
    base = write_celeba(tmp_path)
    jpeg = base / "img_align_celeba" / "000002.jpg"
    content = jpeg.read_bytes()
    jpeg.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="cannot decode") as excinfo:
        load_celeba(tmp_path, 16)
    assert_names(excinfo, jpeg)
    jpeg.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="cannot decode") as excinfo:
        load_celeba(tmp_path, 16)
    assert_names(excinfo, jpeg)
    jpeg.unlink()
    with pytest.raises(DataError, match="1 images missing .* e.g. 000002.jpg"):
        load_celeba(tmp_path, 16)
    partition = base / "list_eval_partition.txt"
    partition.write_text("000001.jpg 0\n000003.jpg train\n")
    with pytest.raises(DataError, match="line 2") as excinfo:
        load_celeba(tmp_path, 16)
    assert_names(excinfo, partition)


# --- image folders ----------------------------------------------------------------------------


def test_folder_with_split_and_class_folders(tmp_path):
    rng = np.random.default_rng(14)
    counts = {"train": 4, "val": 2, "test": 1}
    for split, n in counts.items():
        for cls, value in (("cat", 30), ("dog", 220)):
            for i in range(n):
                image = np.full((20, 30, 3), value, np.uint8)
                save_image(tmp_path / split / cls / f"{i}.PNG", image)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    raw = load_folder(tmp_path, 8, 1)
    images, labels = raw.splits["train"]
    assert images.shape == (8, 1, 8, 8) and raw.num_classes == 2 and isinstance(images, np.memmap)
    assert (
        labels.tolist() == [0] * 4 + [1] * 4 and images[0].max() == 30 and images[-1].min() == 220
    )
    assert raw.splits["test"][0].shape == (2, 1, 8, 8)
    save_image(tmp_path / "val" / "bird" / "0.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="classes .*bird.* differ"):
        load_folder(tmp_path, 8, 1)
    del rng


def test_folder_without_splits_is_carved_90_5_5_and_cached(tmp_path):
    rng = np.random.default_rng(15)
    for i in range(40):
        save_image(tmp_path / f"img{i:02d}.png", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    raw = load_raw("folder", tmp_path, 6, 3)
    sizes = {s: len(raw.splits[s][0]) for s in ("train", "val", "test")}
    assert sizes == {"train": 36, "val": 2, "test": 2} and raw.num_classes == 0
    assert raw.splits["train"][1] is None and raw.image_shape == (3, 6, 6)
    again = load_folder(tmp_path, 6, 3)
    assert np.array_equal(again.splits["val"][0], raw.splits["val"][0])  # deterministic
    files = sorted(tmp_path.glob("*.png"))
    decoded = [decode_image(f, 6, "RGB").tobytes() for f in files]
    order = np.random.default_rng(FOLDER_SPLIT_SEED).permutation(40)  # val, test, then train
    expected = {"val": order[:2], "test": order[2:4], "train": order[4:]}
    for split, ix in expected.items():
        got = sorted(image.tobytes() for image in raw.splits[split][0])
        assert got == sorted(decoded[i] for i in ix), split
    cache = next((tmp_path / ".acn-cache").rglob("train-images.npy"))
    before = inode(cache)
    load_folder(tmp_path, 6, 3)
    assert inode(cache) == before
    save_image(tmp_path / "img40.png", np.zeros((5, 5, 3), np.uint8))
    assert len(load_folder(tmp_path, 6, 3).splits["train"][0]) == 37 and inode(cache) != before


def test_folder_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found under .*empty"):
        load_folder(tmp_path / "empty", 8, 3)
    folder = tmp_path / "pics"
    for i in range(5):
        save_image(folder / f"{i}.png", np.full((8, 8), 9 * i, np.uint8))
    good = (folder / "0.png").read_bytes()
    (folder / "3.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot decode") as excinfo:
        load_folder(folder, 8, 3)
    assert_names(excinfo, folder / "3.png")
    (folder / "3.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="cannot decode") as excinfo:
        load_folder(folder, 8, 3)
    assert_names(excinfo, folder / "3.png")
    (folder / "sub").mkdir()
    with pytest.raises(DataError, match="both images and sub-folders"):
        load_folder(folder, 8, 3)
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_folder(folder, 8, 2)


def test_load_raw_rejects_unknown_names(tmp_path):
    with pytest.raises(
        DataError, match="data.name='svhn' is not valid; choose one of: mnist-static, .*folder"
    ):
        load_raw("svhn", tmp_path, 32, 3)
