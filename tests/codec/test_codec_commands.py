"""``acn compress`` / ``acn decompress`` from the command line: the file, the numbers beside it,
and one line with exit 2 for every bad input, leaving nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import acn_in_process

from acn.eval.load import load_run


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acn: error:"), result.stderr
    return lines[0]


def _few(run, tmp_path, n: int = 12):
    """The first n test images of a run, as an .npz for --images."""
    images = load_run(run).splits["test"].images.numpy()[:n]
    np.savez(tmp_path / "few.npz", images=images)
    return tmp_path / "few.npz", images


def test_a_split_is_compressed_whole(tiny_runs, tmp_path):
    run, packed = tiny_runs["acn"], tmp_path / "test.acnz"
    result = acn_in_process(["compress", run, "--split", "val", "--out", packed, "--samples", "1"])
    assert result.returncode == 0, result.stderr
    assert "the val split" in result.stdout and "ordered bound" in result.stdout
    n = len(load_run(run).splits["val"])
    assert f"for {n} images" in result.stdout


@pytest.mark.parametrize("kind", ["acn", "vae", "pixelcnn"])
def test_images_round_trip_and_are_measured_against_the_bound(tiny_runs, tmp_path, kind):
    run, packed, out = tiny_runs[kind], tmp_path / "test.acnz", tmp_path / "back.npz"
    summary = tmp_path / "summary.json"
    few, test = _few(run, tmp_path)  # the run's first test images
    result = acn_in_process(
        ["compress", run, "--images", few, "--out", packed, "--samples", "2", "--json", summary]
    )
    assert result.returncode == 0, result.stderr
    assert "bits per image" in result.stdout and "bits per dim" in result.stdout
    report = json.loads(summary.read_text())
    assert report["bytes"] == packed.stat().st_size
    assert report["checkpoint"] == "best" and report["bounds_nats"]
    assert acn_in_process(["decompress", packed, "--model", run, "--out", out]).returncode == 0
    with np.load(out) as back:
        images = back["images"]
    assert images.dtype == np.uint8 and images.shape == test.shape
    if kind == "acn":  # the set, in tour order
        assert sorted(map(bytes, images)) == sorted(map(bytes, test))
    else:
        np.testing.assert_array_equal(images, test)


def test_the_soft_tour_from_the_command_line(tiny_runs, tmp_path):
    run, packed, out = tiny_runs["acn"], tmp_path / "soft.acnz", tmp_path / "back.npz"
    few, test = _few(run, tmp_path)
    args = ["compress", run, "--images", few, "--out", packed, "--samples", "2", "--soft-tour"]
    result = acn_in_process(args)
    assert result.returncode == 0, result.stderr
    assert "soft tour" in result.stdout and "log N!/N" in result.stdout
    assert acn_in_process(["decompress", packed, "--model", run, "--out", out]).returncode == 0
    with np.load(out) as back:
        assert sorted(map(bytes, back["images"])) == sorted(map(bytes, test))
    refused = acn_in_process([*args, "--keep-order"])
    assert refused.returncode == 2 and "keep_order" in _one_error_line(refused)
    vae = ["compress", tiny_runs["vae"], "--images", few, "--out", tmp_path / "v.acnz"]
    refused = acn_in_process([*vae, "--soft-tour", "--samples", "2"])
    assert refused.returncode == 2 and "needs an ACN" in _one_error_line(refused)


def test_images_from_an_npz_keep_their_order(tiny_runs, tmp_path):
    run = tiny_runs["acn"]
    images = load_run(run).splits["test"].images.numpy()[:9, 0]  # (N, H, W)
    np.savez(tmp_path / "in.npz", images=images)
    packed, out = tmp_path / "f.acnz", tmp_path / "out.npz"
    args = ["compress", run, "--images", tmp_path / "in.npz", "--out", packed, "--keep-order"]
    assert acn_in_process([*args, "--samples", "2", "--seeds", "2"]).returncode == 0
    assert acn_in_process(["decompress", packed, "--model", run, "--out", out]).returncode == 0
    with np.load(out) as back:
        np.testing.assert_array_equal(back["images"][:, 0], images)


def test_bad_inputs_give_one_line_and_leave_nothing(tiny_runs, tmp_path):
    acn, vae = tiny_runs["acn"], tiny_runs["vae"]
    good, few = tmp_path / "good.acnz", _few(acn, tmp_path, 5)[0]
    args = ["compress", acn, "--images", few, "--out", good, "--samples", "2"]
    assert acn_in_process(args).returncode == 0
    data = good.read_bytes()
    (tmp_path / "trunc.acnz").write_bytes(data[: len(data) // 2])
    (tmp_path / "foreign.acnz").write_bytes(b"GIF89a" + bytes(40))
    np.savez(tmp_path / "wrong.npz", images=np.zeros((3, 7, 7), np.uint8))
    np.savez(tmp_path / "levels.npz", images=np.full((3, 8, 8), 5, np.uint8))
    np.savez(tmp_path / "nokey.npz", pixels=np.zeros((3, 8, 8), np.uint8))
    out = tmp_path / "out.npz"
    cases = {
        "truncated": ["decompress", tmp_path / "trunc.acnz", "--model", acn, "--out", out],
        "foreign": ["decompress", tmp_path / "foreign.acnz", "--model", acn, "--out", out],
        "missing": ["decompress", tmp_path / "none.acnz", "--model", acn, "--out", out],
        "other model": ["decompress", good, "--model", vae, "--out", out],
        "shape": ["compress", acn, "--images", tmp_path / "wrong.npz", "--out", out],
        "levels": ["compress", acn, "--images", tmp_path / "levels.npz", "--out", out],
        "no images key": ["compress", acn, "--images", tmp_path / "nokey.npz", "--out", out],
        "unwritable": ["compress", acn, "--images", few, "--out", good / "f.acnz"],
        "no model": ["decompress", good, "--model", tmp_path / "nothing", "--out", out],
    }
    for name, args in cases.items():
        extra = ["--samples", "2"] if args[0] == "compress" else []
        line = _one_error_line(acn_in_process([*args, *extra]))
        assert "Traceback" not in line, name
        assert not out.exists(), name
    assert not list((tmp_path).glob("*.tmp*"))
