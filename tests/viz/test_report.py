"""Pictures, latent maps and the HTML report, the last checked in a real headless browser."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import acn_in_process

from acn.cli.parser import main
from acn.eval.measure import measure
from acn.viz.latent_maps import export_projector, pca_2d, scatter_png, tsne_2d

PNG = b"\x89PNG\r\n\x1a\n"


def run(args):
    return acn_in_process(args)


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data.startswith(PNG)
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize(
    "mode", ["daydream", "reconstruct", "neighbours", "prior", "unconditional"]
)
def test_sample_modes_write_reproducible_pngs(tiny_runs, tmp_path, mode):
    args = ["sample", str(tiny_runs["acn"]), "--mode", mode, "--num", "3", "--steps", "2"]
    a = run([*args, "--per-image", "2", "--out", str(tmp_path / "a.png")])
    assert a.returncode == 0, a.stderr
    # The repeats run in-process: the same entry point, without paying the start-up again.
    assert main([*args, "--per-image", "2", "--out", str(tmp_path / "b.png")]) == 0
    assert main([*args, "--per-image", "2", "--seed", "1", "--out", str(tmp_path / "c.png")]) == 0
    first = (tmp_path / "a.png").read_bytes()
    assert first == (tmp_path / "b.png").read_bytes()  # same seed, same picture
    assert first != (tmp_path / "c.png").read_bytes()  # another seed, another picture
    width, height = _png_size(first)
    assert width > 3 * 8 and height > 2 * 8
    if mode != "neighbours":
        assert "images/s" in a.stdout


def test_sample_grid_layout_is_rows_of_real_plus_samples(tiny_runs, tmp_path):
    from acn.eval.load import load_run
    from acn.viz.samples import sample_picture

    loaded = load_run(tiny_runs["acn"])
    small = sample_picture(loaded, "reconstruct", num=2, per_image=3).image.size
    wide = sample_picture(loaded, "reconstruct", num=2, per_image=6).image.size
    tall = sample_picture(loaded, "reconstruct", num=4, per_image=3).image.size
    assert wide[0] > small[0] and wide[1] == small[1]  # more samples: more columns
    assert tall[1] > small[1] and tall[0] == small[0]  # more images: more rows


@pytest.mark.parametrize(
    ("run_name", "args", "needle"),
    [
        ("vae", ["--mode", "daydream"], "neighbour-conditioned prior"),
        ("pixelcnn", ["--mode", "reconstruct"], "latent codes"),
        ("acn", ["--mode", "dream"], "argument --mode: invalid choice"),
        ("acn", ["--mode", "daydream", "--num", "5000"], "more than the split's 360"),
        ("acn", ["--mode", "daydream", "--steps", "0"], "argument --steps: must be at least 1"),
        ("acn", ["--mode", "neighbours", "--per-image", "9999"], "more than the 1257 training"),
    ],
)
def test_bad_sample_requests_get_one_clear_line(tiny_runs, tmp_path, run_name, args, needle):
    proc = run(["sample", str(tiny_runs[run_name]), *args, "--out", str(tmp_path / "x.png")])
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_pca_map_and_tsne():
    rng = np.random.default_rng(0)
    line = np.outer(rng.normal(size=200), [1.0, 2.0, -1.0]) + 1e-3 * rng.normal(size=(200, 3))
    points, explained = pca_2d(line)
    assert points.shape == (200, 2) and explained[0] > 0.999
    # The first axis is the line itself: distances along it are preserved.
    np.testing.assert_allclose(
        np.abs(points[:, 0]),
        np.abs((line - line.mean(0)) @ np.array([1, 2, -1]) / 6**0.5),
        atol=1e-2,
    )
    two_blobs = np.concatenate([rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) + 20])
    embedded = tsne_2d(two_blobs, seed=0)
    gap = np.linalg.norm(embedded[:60].mean(0) - embedded[60:].mean(0))
    spread = embedded[:60].std(0).mean()
    assert embedded.shape == (120, 2) and gap > 3 * spread
    assert _png_size(scatter_png(points, np.arange(200) % 3, "t"))[0] > 100


def test_projector_export_has_codes_labels_and_sprite(tmp_path):
    import torch

    codes = torch.randn(12, 4)
    labels = torch.arange(12) % 3
    images = torch.randint(0, 2, (12, 1, 8, 8))
    export_projector(tmp_path, codes, labels, images, levels=2)
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert "metadata_path" in config and "sprite" in config
    # Follow the paths the config names, as TensorBoard does.
    paths = dict(re.findall(r'(\w+_path): "([^"]+)"', config))
    tensors = np.loadtxt(tmp_path / paths["tensor_path"])
    np.testing.assert_allclose(tensors, codes.numpy(), rtol=1e-5, atol=1e-6)
    metadata = (tmp_path / paths["metadata_path"]).read_text().split()
    assert metadata == [str(int(v)) for v in labels]
    assert (tmp_path / paths["image_path"]).read_bytes().startswith(PNG)


@pytest.fixture(scope="module")
def report(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    runs = tmp_path_factory.mktemp("runs")
    # Copies, so that the evaluation written beside the ACN does not touch the shared runs.
    copies = {}
    for name in ("acn", "vae", "pixelcnn"):
        copies[name] = runs / f"digits-{name}"
        shutil.copytree(tiny_runs[name], copies[name])
    result = measure(copies["acn"], samples=2, progress=False)
    # Any name: the report recognises an evaluation by its content (acn eval RUN --out
    # RUN/eval.json is the natural spelling), and skips other JSON files.
    (copies["acn"] / "eval.json").write_text(json.dumps(result))
    (copies["acn"] / "notes.json").write_text(json.dumps({"split": "test", "nats": 1}))
    proc = run(
        [
            "report",
            *(str(copies[n]) for n in ("acn", "vae", "pixelcnn")),
            "--out",
            str(out),
            "--num",
            "2",
            "--steps",
            "2",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    return out, result, proc.stdout


def test_report_page_holds_every_section(report):
    out, result, stdout = report
    page = (out / "index.html").read_text(encoding="utf-8")
    assert str(out / "index.html") in stdout
    for name in ("digits-acn", "digits-vae", "digits-pixelcnn"):
        assert f"<h2>{name}</h2>" in page
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]+)"', page)
    # ACN: curves, 5 pictures, 2 maps; VAE: curves, 3 pictures, 2 maps; PixelCNN: curves, 1.
    assert len(images) == 8 + 6 + 2
    assert {"digits-acn daydream", "digits-acn PCA map", "digits-vae t-SNE map"} <= set(images)
    assert "digits-vae daydream" not in images  # a VAE has no neighbour prior to daydream with
    assert f"{result['nats']['ordered']:.2f}" in page  # the evaluation table, from the JSON
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    assert (out / "projector" / "digits-acn" / "projector_config.pbtxt").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is missing in CI: ./dev test installs Debian's chromium")
        pytest.skip("chromium is not installed (./dev test installs it where apt is usable)")
    out, _, _ = report
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # required when running as root, as CI does
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (out / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    dom = proc.stdout
    assert proc.returncode == 0 and "<body" in dom, proc.stderr[-2000:]
    total = re.search(r'data-images="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, "the page's load check did not run"
    assert int(total.group(1)) == 16 and int(loaded.group(1)) == 16
    assert dom.count("<table") >= 1 and "unordered total" in dom


def test_map_command_writes_both_maps_and_the_projector(tiny_runs, tmp_path):
    proc = run(["map", str(tiny_runs["vae"]), "--out", str(tmp_path / "maps"), "--split", "val"])
    assert proc.returncode == 0, proc.stderr
    for name in ("pca", "tsne"):
        assert _png_size((tmp_path / "maps" / f"{name}.png").read_bytes())[0] > 100
    assert (tmp_path / "maps" / "projector" / "projector_config.pbtxt").exists()
    proc = run(["map", str(tiny_runs["pixelcnn"]), "--out", str(tmp_path / "none")])
    assert proc.returncode == 2 and "latent codes" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
