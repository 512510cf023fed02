"""Exported model folders: no pickle, identical model back, and clear errors for bad folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from acn import ACN
from acn.errors import CheckpointError
from acn.model import export_run
from acn.store.checkpoint import load_checkpoint

ACN_CLI = [sys.executable, "-m", "acn"]


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model é"  # spaces and non-ASCII just work
    proc = subprocess.run(
        [*ACN_CLI, "export", str(tiny_runs["acn"]), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_folder_holds_json_and_safetensors_only(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((exported / "config.json").read_text())
    assert meta["format"] == "acn-pretrained" and meta["config"]["model"]["prior"] == "acn"
    raw = (exported / "model.safetensors").read_bytes()
    # safetensors: an 8-byte little-endian header length, then a JSON header; no pickle opcodes.
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert "bank.codes" in header and not raw.startswith(b"\x80")


def test_from_pretrained_gives_back_the_same_model(exported, tiny_runs):
    model = ACN.from_pretrained(exported)
    original = ACN.restore(load_checkpoint(tiny_runs["acn"]))
    a, b = model.state_dict(), original.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randint(0, 2, (4, 1, 8, 8))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    with torch.no_grad():
        assert torch.equal(model(x, generator=g1).loss, original(x, generator=g2).loss)
    assert not model.training


def test_bad_folders_are_refused_with_a_reason(exported, tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        ACN.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((exported / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="corrupted: its bytes do not match the checksum"):
        ACN.from_pretrained(broken)
    weights = bytearray((exported / "model.safetensors").read_bytes())
    weights[-5] ^= 1  # one flipped bit in a weight: safetensors alone would load it silently
    (broken / "model.safetensors").write_bytes(weights)
    with pytest.raises(CheckpointError, match="corrupted"):
        ACN.from_pretrained(broken)
    meta = json.loads((exported / "config.json").read_text())
    del meta["weights_crc32"]  # without the checksum, the format check still refuses garbage
    (broken / "config.json").write_text(json.dumps(meta))
    (broken / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ACN.from_pretrained(broken)
    meta["config"]["model"]["code_dim"] = 7  # another architecture than the weights
    (broken / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes())
    (broken / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        ACN.from_pretrained(broken)
    meta["format_version"] = 99
    (broken / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        ACN.from_pretrained(broken)


def test_export_of_a_missing_run_is_one_line(tmp_path):
    proc = subprocess.run(
        [*ACN_CLI, "export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_export_function_returns_the_folder(tiny_runs, tmp_path):
    assert export_run(tiny_runs["vae"], tmp_path / "v") == tmp_path / "v"
    assert ACN.from_pretrained(tmp_path / "v").code_dim == 4
