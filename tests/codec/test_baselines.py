"""The classic lossless baselines: payloads, round trips, tiling, and input checks."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from acn.codec import baselines

RNG = np.random.default_rng(0)
BINARY = RNG.integers(0, 2, size=(20, 8, 8), dtype=np.uint8)
GREY = RNG.integers(0, 256, size=(5, 1, 6, 7), dtype=np.int64)
RGB = RNG.integers(0, 256, size=(4, 3, 5, 6), dtype=np.uint8)
DECOMPRESS = {"gzip": gzip.decompress, "bz2": bz2.decompress, "xz": lzma.decompress}
needs_jbig = pytest.mark.skipif(
    shutil.which("pbmtojbg") is None or shutil.which("jbgtopbm") is None,
    reason="jbigkit's pbmtojbg/jbgtopbm not on PATH (apt-get install jbigkit-bin)",
)


def read_pbm(data: bytes) -> np.ndarray:
    magic, width, height, pixels = data.split(maxsplit=3)
    assert magic == b"P4"
    width, height = int(width), int(height)
    rows = np.frombuffer(pixels, dtype=np.uint8).reshape(height, -1)
    return np.unpackbits(rows, axis=1)[:, :width]


@pytest.mark.parametrize("shape", [(20, 8, 8), (3, 1, 5, 7), (1, 1, 1, 1)])
def test_pack_bits_length_and_order(shape):
    images = RNG.integers(0, 2, size=shape)
    packed = baselines.pack_bits(images)
    assert len(packed) == math.ceil(math.prod(shape) / 8)
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[: images.size]
    np.testing.assert_array_equal(bits, images.reshape(-1))


def test_raw_bytes_are_the_levels():
    assert baselines.raw_bytes(GREY) == GREY.astype(np.uint8).tobytes()


@pytest.mark.parametrize("images", [BINARY, GREY, RGB], ids=["binary", "grey", "rgb"])
def test_general_purpose_round_trips(images):
    payload = baselines.pack_bits(images) if images.max() <= 1 else baselines.raw_bytes(images)
    compressed = baselines._compressed(payload)
    assert set(compressed) == {"gzip", "bz2", "xz"}
    for name, data in compressed.items():
        assert DECOMPRESS[name](data) == payload, name
    sizes = baselines.general_purpose(images)
    assert sizes == {name: len(data) for name, data in compressed.items()}


@pytest.mark.parametrize(
    ("images", "mode"), [(BINARY, "1"), (GREY, "L"), (RGB, "RGB")], ids=["binary", "grey", "rgb"]
)
def test_png_files_decode_to_the_same_pixels(images, mode):
    files = baselines._png_files(images)
    assert len(files) == len(images)
    assert baselines.png_per_image(images) == sum(map(len, files))
    array = images[:, None] if images.ndim == 3 else images
    for data, image in zip(files, array, strict=True):
        picture = Image.open(io.BytesIO(data))
        assert picture.format == "PNG" and picture.mode == mode
        pixels = np.asarray(picture).astype(np.int64)
        expected = image[0] if mode != "RGB" else image.transpose(1, 2, 0)
        np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize("columns", [None, 3, 7, 20, 25])
def test_tile_places_each_image(columns):
    bitmap = baselines.tile(BINARY, columns)
    cols = columns or math.ceil(math.sqrt(len(BINARY)))
    rows = math.ceil(len(BINARY) / cols)
    assert bitmap.shape == (rows * 8, cols * 8)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        block = bitmap[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8]
        np.testing.assert_array_equal(block, BINARY[i] if i < len(BINARY) else 0)


@needs_jbig
def test_jbig_round_trips_through_jbgtopbm(tmp_path):
    data = baselines._jbig_file(BINARY, columns=6)
    assert baselines.jbig(BINARY, columns=6) == len(data)
    (tmp_path / "x.jbg").write_bytes(data)
    subprocess.run(["jbgtopbm", str(tmp_path / "x.jbg"), str(tmp_path / "x.pbm")], check=True)
    decoded = read_pbm((tmp_path / "x.pbm").read_bytes())
    np.testing.assert_array_equal(decoded, baselines.tile(BINARY, columns=6))


def test_jbig_is_none_where_it_does_not_apply(monkeypatch):
    assert baselines.jbig(GREY) is None
    assert baselines.jbig(RGB) is None
    monkeypatch.setattr(baselines.shutil, "which", lambda name: None)
    assert baselines.jbig(BINARY) is None
    assert "jbig" not in baselines.baseline_sizes(BINARY)


def test_baseline_sizes_separate_zeros_from_noise():
    # 32x32, so that PNG's fixed ~68 bytes per file do not swamp the pixels.
    noise = baselines.baseline_sizes(RNG.integers(0, 2, size=(20, 32, 32)))
    zeros = baselines.baseline_sizes(np.zeros((20, 32, 32), dtype=np.uint8))
    expected = {"gzip", "bz2", "xz", "png"} | ({"jbig"} if shutil.which("pbmtojbg") else set())
    assert set(noise) == set(zeros) == expected
    for name in expected:
        assert zeros[name] < 0.5 * noise[name], name
    # Noise cannot be compressed below its 1,024 bits per image.
    assert min(noise.values()) > 1024
    assert set(baselines.baseline_sizes(GREY)) == {"gzip", "bz2", "xz", "png"}


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 8, 8), dtype=np.float32),
        np.zeros((8, 8), dtype=np.uint8),
        np.zeros((1, 1, 1, 8, 8), dtype=np.uint8),
        np.zeros((0, 8, 8), dtype=np.uint8),
        np.full((2, 8, 8), 256),
        np.full((2, 8, 8), -1),
    ],
    ids=["float", "2-D", "5-D", "empty", "over-255", "negative"],
)
def test_bad_input_raises(bad):
    for function in (baselines.raw_bytes, baselines.general_purpose, baselines.baseline_sizes):
        with pytest.raises(ValueError):
            function(bad)


def test_binary_only_functions_reject_levels():
    for function in (baselines.pack_bits, baselines.tile):
        with pytest.raises(ValueError, match="binary"):
            function(GREY)
    with pytest.raises(ValueError, match="channels"):
        baselines.tile(RNG.integers(0, 2, size=(2, 3, 4, 4)))
    with pytest.raises(ValueError, match="binary"):
        baselines.general_purpose(GREY, binary=True)
    with pytest.raises(ValueError, match="channels"):
        baselines.png_per_image(np.zeros((2, 2, 4, 4), dtype=np.uint8))
