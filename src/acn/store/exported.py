"""Shareable model folders: ``config.json`` plus ``model.safetensors``, no pickle anywhere.

A training checkpoint carries the optimiser, random states and running sums, and is a torch
pickle (loaded with ``weights_only=True``, but a pickle all the same). What people share is
the model alone, in a format that cannot execute anything when read: safetensors holds only
named tensors, and the JSON holds only the config. This module writes and reads those bytes;
``ACN.save_pretrained`` and ``ACN.from_pretrained`` (:mod:`acn.model`) turn them into a model
and back, with every name and shape checked.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch

from acn.errors import CheckpointError
from acn.files import atomic_write_bytes, atomic_write_json
from acn.store.checkpoint import load_checkpoint, run_checkpoint, which_checkpoint
from acn.version import __version__

FORMAT = "acn-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def write_exported(out: str | Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``config.json`` (``meta`` plus the format markers and the weights' checksum) and
    ``model.safetensors`` (``tensors``) into the folder ``out``, each atomically.

    Args:
        out: the folder (created).
        meta: what rebuilds the model: ``config``, ``data_info``, ``num_codes``, ``step``.
        tensors: the model's state dict, code bank included.

    Returns:
        ``out``.
    """
    from safetensors.torch import save

    out = Path(out)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "acn_version": __version__,
        **meta,
    }
    # safetensors refuses tensors that share memory or are not contiguous; copies are cheap.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    data = save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    # safetensors checks its header, not its tensor bytes: a checksum catches a flipped bit.
    meta["weights_crc32"] = zlib.crc32(data)
    try:
        atomic_write_bytes(out / WEIGHTS_FILE, lambda f: f.write(data))
        atomic_write_json(out / CONFIG_FILE, meta)
    except OSError as exc:
        raise CheckpointError(f"could not write {out}: {exc.strerror or exc}") from None
    return out


def read_pretrained(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checked ``config.json`` content and the tensors of an exported folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{folder} is not an exported acn model: {path.name} is missing")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: not an exported acn model")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format version {meta.get('format_version')!r}; this acn reads "
            f"version {FORMAT_VERSION}"
        )
    data = weights_path.read_bytes()
    expected = meta.get("weights_crc32")
    if expected is not None and zlib.crc32(data) != expected:
        raise CheckpointError(
            f"{weights_path}: corrupted: its bytes do not match the checksum in {CONFIG_FILE}"
        )
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    return meta, tensors


def is_exported(folder: str | Path) -> bool:
    """True for a folder holding ``config.json`` and ``model.safetensors``."""
    return all((Path(folder) / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE))


def load_model_payload(source: str | Path, checkpoint: str = "best") -> dict[str, Any]:
    """What evaluation and sampling need from a run directory, a checkpoint or an exported
    folder: ``config``, ``data_info``, ``num_codes``, ``step``, ``model`` (the state dict),
    ``path`` and ``checkpoint`` (``best``, ``last``, ``file`` or ``exported``: which weights these
    are), checked as :func:`acn.store.checkpoint.load_checkpoint` and :func:`read_pretrained`
    do. Of a run directory, ``checkpoint`` picks ``best.pt`` or ``last.pt``
    (:func:`acn.store.checkpoint.run_checkpoint`); a file or an exported folder is what it is."""
    if Path(source).is_dir() and is_exported(source):
        meta, tensors = read_pretrained(source)
        return {**meta, "model": tensors, "path": str(source), "checkpoint": "exported"}
    path = run_checkpoint(source, checkpoint) if Path(source).is_dir() else Path(source)
    return load_checkpoint(path) | {"checkpoint": which_checkpoint(path)}
