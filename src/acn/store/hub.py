"""The Hugging Face Hub, behind the optional ``hub`` extra (``pip install 'acn[hub]'``).

What travels is exactly an exported folder (:mod:`acn.store.exported`): ``config.json`` and
``model.safetensors``, so nothing downloaded from a hub can execute code when loaded. Pushing a
run directory exports it first; loading by repo id downloads those two files (into the Hub's own
cache, which also works offline once filled) and reads them like any exported folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from acn.errors import AcnError, CheckpointError
from acn.store.exported import CONFIG_FILE, WEIGHTS_FILE, is_exported

log = logging.getLogger(__name__)
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE)
# owner/name, the Hub's repo id syntax (letters, digits, "-", "_", ".").
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise AcnError(
            "the Hugging Face Hub needs the optional extra: pip install 'acn[hub]'"
        ) from None
    return huggingface_hub


def is_repo_id(name: str | Path) -> bool:
    """True for ``owner/name`` strings that are not an existing local path."""
    text = str(name)
    return bool(REPO_ID.match(text)) and not Path(text).exists()


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> str:
    """Upload a model to the Hub repo ``repo_id`` (created if needed).

    Args:
        folder: an exported folder (``acn export``, :meth:`acn.model.ACN.save_pretrained`).
        repo_id: ``owner/name``.
        private: create the repo private.
        token: a Hub token (default: the one ``huggingface-cli login`` stored).
        revision: branch to push to (default: main).
        commit_message: the commit's message.
        api: an ``huggingface_hub.HfApi``-like object (default: a new ``HfApi``).

    Returns:
        The commit's URL as the Hub reports it.
    """
    if not REPO_ID.match(repo_id):
        raise AcnError(f"{repo_id!r} is not a Hub repo id (owner/name)")
    if api is None:
        api = _hub().HfApi(token=token)
    folder = Path(folder)
    if not (folder.is_dir() and is_exported(folder)):
        raise AcnError(
            f"{folder} is not an exported model folder; export a run first (acn export RUN "
            "--out DIR, or ACN.save_pretrained)"
        )
    try:
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            allow_patterns=list(HUB_FILES),
            revision=revision,
            commit_message=commit_message or "Upload ACN model (config.json, safetensors)",
        )
    except Exception as exc:  # noqa: BLE001 - network, auth and HTTP errors, one line each
        raise AcnError(f"could not push to the Hub repo {repo_id}: {_one_line(exc)}") from None
    return str(getattr(info, "commit_url", None) or info)


def download_from_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` of ``repo_id``; returns their folder."""
    from acn.version import __version__

    hub = _hub()
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            token=token,
            local_files_only=local_files_only,
            allow_patterns=list(HUB_FILES),
            library_name="acn",
            library_version=__version__,
        )
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, auth: one line each
        raise CheckpointError(f"could not get {repo_id} from the Hub: {_one_line(exc)}") from None
    return Path(folder)


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
