"""``acn compress --images`` on a user's image files and ``acn decompress --out FOLDER``: a
folder of PNGs goes round the codec as the same set, the written folder compresses again to the
same set, and every image the model cannot code as it is gets one line naming the file, exit 2,
before anything is encoded, leaving nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import acn_in_process
from PIL import Image

from acn.eval.load import load_run
from acn.experiments.codec_io import png_names


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acn: error:"), result.stderr
    return lines[0]


def _listing(folder) -> dict:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {p: None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _levels(path) -> np.ndarray:
    """A binary model's levels of a PNG that holds 0 / 255 (or 0 / 1): (8, 8) uint8."""
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"))
    return pixels // 255 if pixels.max() > 1 else pixels


def _png_folder(run, folder, n: int = 12) -> np.ndarray:
    """The run's first n test images (binary, 8x8) as PNGs named in their order, in the forms a
    user may have: 8-bit grey 0 / 255, 8-bit grey 0 / 1, 1-bit, and a two-colour palette."""
    images = load_run(run).splits["test"].images.numpy()[:n, 0]  # (n, 8, 8) levels 0 / 1
    folder.mkdir()
    for i, image in enumerate(images):
        grey = Image.fromarray(image * np.uint8(255))
        form = [grey, Image.fromarray(image), grey.convert("1"), grey.convert("P")][i % 4]
        form.save(folder / f"img{i:02d}.png")
    return images


@pytest.mark.parametrize("kind", ["acn", "vae"])
def test_a_folder_of_pngs_comes_back_as_the_same_set(tiny_runs, tmp_path, kind):
    """12 images, so that names unpadded to two digits (10.png before 2.png) would fail the
    VAE, which keeps the order; the ACN gives the set back in tour order."""
    run, packed = tiny_runs[kind], tmp_path / "f.acnz"
    images = _png_folder(run, tmp_path / "in")
    args = ["compress", run, "--images", tmp_path / "in", "--out", packed, "--samples", "2"]
    result = acn_in_process(args)
    assert result.returncode == 0, result.stderr
    assert "for 12 images" in result.stdout
    back = tmp_path / "back"
    result = acn_in_process(["decompress", packed, "--model", run, "--out", back])
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in back.iterdir())
    assert names == png_names(12) == [f"{i:02d}.png" for i in range(12)]
    for name in names:
        with Image.open(back / name) as img:
            assert img.mode == "L" and set(np.unique(np.asarray(img))) <= {0, 255}
    decoded = np.stack([_levels(back / name) for name in names])
    if kind == "acn":
        assert sorted(map(bytes, decoded)) == sorted(map(bytes, images))
    else:
        np.testing.assert_array_equal(decoded, images)

    # One file per argument, in the folder's order: the same file, byte for byte.
    files = sorted((tmp_path / "in").iterdir())
    again = tmp_path / "files.acnz"
    args = ["compress", run, "--images", *files, "--out", again, "--samples", "2"]
    assert acn_in_process(args).returncode == 0
    assert again.read_bytes() == packed.read_bytes()

    # The written folder compresses to the same set, and decodes into an empty folder.
    args = ["compress", run, "--images", back, "--out", again, "--samples", "2"]
    assert acn_in_process(args).returncode == 0
    (tmp_path / "empty").mkdir()
    result = acn_in_process(["decompress", again, "--model", run, "--out", tmp_path / "empty"])
    assert result.returncode == 0, result.stderr
    twice = np.stack([_levels(tmp_path / "empty" / name) for name in png_names(12)])
    assert sorted(map(bytes, twice)) == sorted(map(bytes, images))
    if kind == "vae":
        np.testing.assert_array_equal(twice, images)


def _bad_files(folder) -> dict[str, tuple[object, str]]:
    """name: (the bad file or folder, words its error must hold)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    binary = np.zeros((8, 8), np.uint8)
    binary[2:6, 3] = 255
    mixed = binary.copy()
    mixed[0, 0] = 1
    saved = {
        "grey 256 levels": (Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)), "0 or 255"),
        "0, 1 and 255": (Image.fromarray(mixed), "0, 1, 255"),
        "RGB": (Image.fromarray(np.stack([binary] * 3, -1)), "RGB image"),
        "size": (Image.fromarray(np.zeros((8, 9), np.uint8)), "9x8 pixels"),
        "alpha": (Image.fromarray(binary).convert("LA"), "alpha"),
        "16-bit": (Image.fromarray(binary.astype(np.uint16) * 257), "not 8-bit"),
    }
    cases = {}
    for i, (name, (image, words)) in enumerate(saved.items()):
        image.save(folder / f"bad{i}.png")
        cases[name] = (folder / f"bad{i}.png", words)
    (folder / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty").mkdir()
    np.savez(folder / "some.npz", images=np.zeros((2, 8, 8), np.uint8))
    cases |= {
        "torn": (folder / "torn.png", "cannot decode"),
        "not an image": (folder / "notes.txt", "not an image file"),
        "empty folder": (folder / "empty", "no image files"),
        "missing": (folder / "none.png", "no such file"),
        "an .npz beside images": (folder / "some.npz", "read alone"),
    }
    return cases


def test_images_the_model_cannot_code_give_one_line_naming_the_file(
    tiny_runs, tmp_path, monkeypatch
):
    from acn.experiments import compress

    run, out = tiny_runs["acn"], tmp_path / "out" / "f.acnz"
    _png_folder(run, tmp_path / "good", 3)
    cases = _bad_files(tmp_path / "bad")
    before = _listing(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("an image was coded before every image was checked")

    monkeypatch.setattr(compress, "encode", no_work)
    for name, (bad, words) in cases.items():  # the good images are read first
        args = ["compress", run, "--images", tmp_path / "good", bad, "--out", out]
        summary = tmp_path / "out" / "s.json"
        line = _one_error_line(acn_in_process([*args, "--samples", "2", "--json", summary]))
        assert words in line and str(bad) in line, (name, line)
    assert _listing(tmp_path) == before  # nothing written, nothing created


def test_decompress_refuses_an_output_folder_it_would_overwrite(tiny_runs, tmp_path, monkeypatch):
    from acn.experiments import compress

    run, packed = tiny_runs["acn"], tmp_path / "f.acnz"
    _png_folder(run, tmp_path / "in", 3)
    args = ["compress", run, "--images", tmp_path / "in", "--out", packed, "--samples", "2"]
    assert acn_in_process(args).returncode == 0
    (tmp_path / "a_file").write_bytes(b"not a folder")
    before = _listing(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("the command started work before refusing its destination")

    monkeypatch.setattr(compress, "load_model", no_work)
    cases = {
        "a folder that is not empty": (tmp_path / "in", "not empty"),
        "a file where the folder goes": (tmp_path / "a_file", "it is a file"),
        "an image's name": (tmp_path / "back.png", "one image cannot hold a set"),
    }
    for name, (out, words) in cases.items():
        line = _one_error_line(acn_in_process(["decompress", packed, "--model", run, "--out", out]))
        assert words in line and "--out" in line, (name, line)
    assert _listing(tmp_path) == before


def test_a_folder_that_fails_halfway_leaves_nothing(tiny_runs, tmp_path, monkeypatch):
    """The PNGs are written into a temporary folder renamed into place at the end: a failure at
    the third file leaves neither a part of the set nor the temporary folder, and an empty
    folder that was there stays, empty."""
    from acn.experiments import codec_io

    run, packed = tiny_runs["acn"], tmp_path / "f.acnz"
    _png_folder(run, tmp_path / "in", 5)
    args = ["compress", run, "--images", tmp_path / "in", "--out", packed, "--samples", "2"]
    assert acn_in_process(args).returncode == 0
    (tmp_path / "empty").mkdir()
    before = _listing(tmp_path)
    written = codec_io.png_pixels
    calls = []

    def full_disk(image, levels):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return written(image, levels)

    monkeypatch.setattr(codec_io, "png_pixels", full_disk)
    for out in (tmp_path / "new" / "back", tmp_path / "empty"):
        calls.clear()
        line = _one_error_line(acn_in_process(["decompress", packed, "--model", run, "--out", out]))
        assert "No space left" in line and len(calls) == 3
        assert _listing(tmp_path) == before  # no new/, no .back.*.tmp/, empty/ still empty
