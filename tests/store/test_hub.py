"""The Hugging Face Hub extra, offline: a push goes to a local folder standing in for the Hub,
and ``ACN.from_pretrained("owner/name")`` reads it back through huggingface_hub's real download
code from a local cache with ``local_files_only=True``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from acn import ACN
from acn.errors import AcnError, CheckpointError
from acn.model import export_run
from acn.store.checkpoint import load_checkpoint
from acn.store.hub import is_repo_id, push_to_hub

pytest.importorskip("huggingface_hub")  # in the dev extra, so CI always runs these

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalHub:
    """Records what ``HfApi`` would be asked, and keeps uploaded files in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root, self.created = root, []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.created.append((repo_id, private))

    def upload_folder(self, repo_id, folder_path, allow_patterns, revision, commit_message):
        target = self.root / repo_id
        target.mkdir(parents=True, exist_ok=True)
        for name in allow_patterns:
            shutil.copy(Path(folder_path) / name, target / name)
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT}"


def _as_hub_cache(hub_root: Path, repo_id: str, cache: Path) -> None:
    """Lay the pushed files out the way huggingface_hub caches a downloaded snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(hub_root / repo_id, repo / "snapshots" / COMMIT)


def test_push_then_load_by_repo_id(tiny_runs, tmp_path):
    hub = LocalHub(tmp_path / "hub")
    folder = export_run(tiny_runs["acn"], tmp_path / "exported")
    url = push_to_hub(folder, "someone/acn-digits", private=True, api=hub)
    assert url.endswith(COMMIT) and hub.created == [("someone/acn-digits", True)]
    pushed = sorted(p.name for p in (tmp_path / "hub" / "someone" / "acn-digits").iterdir())
    assert pushed == ["config.json", "model.safetensors"]  # no optimiser, no pickle

    cache = tmp_path / "cache"
    _as_hub_cache(tmp_path / "hub", "someone/acn-digits", cache)
    model = ACN.from_pretrained("someone/acn-digits", cache_dir=cache, local_files_only=True)
    original = ACN.restore(load_checkpoint(tiny_runs["acn"]))
    a, b = model.state_dict(), original.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_repo_missing_offline_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="could not get nobody/nothing from the Hub"):
        ACN.from_pretrained("nobody/nothing", cache_dir=tmp_path, local_files_only=True)


def test_a_local_folder_wins_over_a_repo_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert is_repo_id("other/name") and not is_repo_id("owner/name")
    assert not is_repo_id("a/b/c") and not is_repo_id("no-slash")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        ACN.from_pretrained("owner/name")  # read as the local folder, not fetched


def test_without_the_extra_the_error_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    with pytest.raises(AcnError, match=r"pip install 'acn\[hub\]'"):
        ACN.from_pretrained("someone/model", cache_dir=tmp_path)


def test_a_failed_push_is_one_line(tiny_runs, tmp_path):
    class Refusing(LocalHub):
        def upload_folder(self, **kwargs):
            raise RuntimeError("401 Client Error:\nUnauthorized for url")

    folder = export_run(tiny_runs["acn"], tmp_path / "exported")
    with pytest.raises(AcnError, match="could not push to the Hub repo a/b: 401 Client Error"):
        push_to_hub(folder, "a/b", api=Refusing(tmp_path))
    with pytest.raises(AcnError, match="not a Hub repo id"):
        push_to_hub(folder, "not a repo", api=Refusing(tmp_path))
    with pytest.raises(AcnError, match="not an exported model folder"):
        push_to_hub(tiny_runs["acn"], "a/b", api=Refusing(tmp_path))  # a run: export it first
