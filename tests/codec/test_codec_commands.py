"""``acn compress`` / ``acn decompress`` from the command line: the file, the numbers beside it,
and one line with exit 2 for every bad input, leaving nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import acn_in_process

from acn.errors import CodecError
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


def test_exact_files_from_the_command_line(tiny_runs, tmp_path):
    """--exact: the header says so, the summary and output say so, and decompress needs no
    flag (the file says how it was made)."""
    run, packed, out = tiny_runs["acn"], tmp_path / "x.acnz", tmp_path / "back.npz"
    summary = tmp_path / "x.json"
    few, test = _few(run, tmp_path)
    args = ["compress", run, "--images", few, "--out", packed, "--exact", "--json", summary]
    result = acn_in_process([*args, "--samples", "2"])
    assert result.returncode == 0, result.stderr
    assert "exact arithmetic" in result.stdout
    assert json.loads(summary.read_text())["exact"] is True
    from acn.codec import container

    assert container.parse(packed.read_bytes()).header.exact
    assert acn_in_process(["decompress", packed, "--model", run, "--out", out]).returncode == 0
    with np.load(out) as back:
        assert sorted(map(bytes, back["images"])) == sorted(map(bytes, test))
    soft = tmp_path / "soft.acnz"  # the soft tour has an exact path too (format 5)
    made = acn_in_process([*args[:-4], soft, "--exact", "--soft-tour", "--samples", "2"])
    assert made.returncode == 0, made.stderr
    header = container.parse(soft.read_bytes()).header
    assert header.exact and header.soft_tour and header.version == container.SOFT_VERSION
    assert acn_in_process(["decompress", soft, "--model", run, "--out", out]).returncode == 0
    with np.load(out) as back:
        assert sorted(map(bytes, back["images"])) == sorted(map(bytes, test))


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


def test_impossible_destinations_are_refused_before_any_work(tiny_runs, tmp_path, monkeypatch):
    """An output that cannot be written is refused with one line before the model is even
    loaded (let alone the images encoded), and nothing is left behind."""
    from acn.experiments import compress

    acn = tiny_runs["acn"]
    few = _few(acn, tmp_path, 5)[0]
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"not a folder")
    packed, summary = tmp_path / "new.acnz", tmp_path / "new.json"
    (tmp_path / "old.acnz").write_bytes(b"\xac")
    before = sorted(tmp_path.rglob("*"))

    def no_work(*args, **kwargs):
        raise AssertionError("the command started work before refusing its destination")

    monkeypatch.setattr(compress, "load_run", no_work)
    monkeypatch.setattr(compress, "load_model", no_work)
    run = ["compress", acn, "--images", few, "--samples", "2"]
    cases = {
        "out under a file": ([*run, "--out", a_file / "f.acnz"], "a file, not a folder"),
        "out in a folder under a file": ([*run, "--out", a_file / "d" / "f.acnz"], "not a folder"),
        "out is a folder": ([*run, "--out", tmp_path], "is a folder"),
        "out is the images": ([*run, "--out", few], "input"),
        "json under out": ([*run, "--out", packed, "--json", packed / "s.json"], "lies under"),
        "json is out": ([*run, "--out", packed, "--json", packed], "same file"),
        "json under a file": ([*run, "--out", packed, "--json", a_file / "s.json"], "not a folder"),
        "decompress out under a file": (
            ["decompress", tmp_path / "old.acnz", "--model", acn, "--out", a_file / "x.npz"],
            "not a folder",
        ),
        "decompress out is its file": (
            ["decompress", tmp_path / "old.acnz", "--model", acn, "--out", tmp_path / "old.acnz"],
            "input",
        ),
    }
    for name, (args, words) in cases.items():
        line = _one_error_line(acn_in_process(args))
        assert words in line and "--" in line, (name, line)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, nothing created
    assert not summary.exists() and not packed.exists()


def _listing(folder) -> dict:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {p: None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def test_a_failed_write_leaves_the_old_file_and_summary(tiny_runs, tmp_path, monkeypatch):
    """The file and its summary are staged in temporary files and renamed into place only once
    both are written: a failure at any point (after encoding, staging the summary, renaming
    the summary after the file) leaves a previous --out and --json as they were, and nothing
    new: no temporary file, no folder made for them."""
    from acn.experiments import codec_io, compress

    acn = tiny_runs["acn"]
    few = _few(acn, tmp_path, 5)[0]
    packed, summary = tmp_path / "f.acnz", tmp_path / "s.json"
    packed.write_bytes(b"the old file")
    summary.write_text("the old summary")
    args = ["compress", acn, "--images", few, "--out", packed, "--json", summary, "--samples", "2"]
    before = _listing(tmp_path)
    staged = codec_io._stage
    replace = codec_io.os.replace

    def full_disk(path, data):  # the file is staged for real, the summary is not
        if path.suffix == ".json":
            raise OSError(28, "No space left on device")
        return staged(path, data)

    def summary_refused(tmp, path):  # the file's rename done, the summary's refused
        if Path(path).suffix == ".json":
            raise OSError(13, "Permission denied")
        return replace(tmp, path)

    with monkeypatch.context() as patch:  # a failure after encoding: the bounds
        patch.setattr(compress, "bounds", lambda *a: (_ for _ in ()).throw(CodecError("late")))
        assert "late" in _one_error_line(acn_in_process(args))
    assert _listing(tmp_path) == before
    with monkeypatch.context() as patch:
        patch.setattr(codec_io, "_stage", full_disk)
        line = _one_error_line(acn_in_process(args))
        assert "No space left" in line and str(summary) in line
    assert _listing(tmp_path) == before
    with monkeypatch.context() as patch:
        patch.setattr(codec_io.os, "replace", summary_refused)
        line = _one_error_line(acn_in_process(args))
        assert "Permission denied" in line and str(summary) in line
    assert _listing(tmp_path) == before  # the old file put back
    new = ["--out", tmp_path / "new" / "f.acnz", "--json", tmp_path / "other" / "d" / "s.json"]
    with monkeypatch.context() as patch:  # the folders made for the outputs go too
        patch.setattr(codec_io, "_stage", full_disk)
        _one_error_line(acn_in_process([*args[:4], *new, "--samples", "2"]))
    assert _listing(tmp_path) == before
    assert acn_in_process(args).returncode == 0
    assert json.loads(summary.read_text())["bytes"] == packed.stat().st_size
    assert packed.read_bytes()[:1] == b"\xad"
    assert sorted(_listing(tmp_path)) == sorted(before)  # replaced, no temporary file beside


def test_crafted_and_old_files_give_one_line_at_once(tiny_runs, tmp_path):
    from acn.codec import container

    acn = tiny_runs["acn"]
    few = _few(acn, tmp_path, 5)[0]
    good, out = tmp_path / "good.acnz", tmp_path / "out.npz"
    args = ["compress", acn, "--images", few, "--out", good, "--samples", "2"]
    assert acn_in_process(args).returncode == 0
    data = good.read_bytes()
    crafted = {
        "huge N": data[:2] + container._varint(2**63) + data[3:],
        "N at its limit": data[:2] + container._varint(2**24) + data[3:],
        "format 2": data[:1] + bytes([(2 << 6) | (data[1] & 0x3F)]) + data[2:],
        "damaged N": data[:2] + bytes([data[2] ^ 0x04]) + data[3:],
    }
    for name, blob in crafted.items():
        (tmp_path / "bad.acnz").write_bytes(blob)
        line = _one_error_line(
            acn_in_process(["decompress", tmp_path / "bad.acnz", "--model", acn, "--out", out])
        )
        assert not out.exists(), name
        if name == "format 2":
            assert "version 2" in line


def test_parts_and_workers_from_the_command_line(tiny_runs, tmp_path):
    """--parts P: the header and summary say P, and decompress decodes them in --workers
    processes (spawned from the command) to the same images as one."""
    run, packed, summary = tiny_runs["acn"], tmp_path / "p.acnz", tmp_path / "p.json"
    few, test = _few(run, tmp_path, n=20)
    args = ["compress", run, "--images", few, "--out", packed, "--samples", "1", "--exact"]
    result = acn_in_process([*args, "--parts", "2", "--segments", "4", "--json", summary])
    assert result.returncode == 0, result.stderr
    assert "4 segments" in result.stdout and "in 2 parts" in result.stdout
    assert json.loads(summary.read_text())["parts"] == 2
    from acn.codec import container

    assert container.parse(packed.read_bytes()).header.parts == 2
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"back{workers}.npz"
        decoded = acn_in_process(
            ["decompress", packed, "--model", run, "--out", out, "--workers", workers]
        )
        assert decoded.returncode == 0, decoded.stderr
        with np.load(out) as back:
            outs.append(back["images"])
    assert np.array_equal(outs[0], outs[1])
    assert sorted(map(bytes, outs[0])) == sorted(map(bytes, test))
    assert "parts must be in 1..64" in _one_error_line(acn_in_process([*args, "--parts", "65"]))
    refused = acn_in_process([*args, "--parts", "0"])  # the parser's line
    assert refused.returncode == 2 and "--parts: must be at least 1" in refused.stderr
