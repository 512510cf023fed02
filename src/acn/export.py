"""Shareable model folders: ``config.json`` plus ``model.safetensors``, no pickle anywhere.

A training checkpoint carries the optimiser, random states and running sums, and is a torch
pickle (loaded with ``weights_only=True``, but a pickle all the same). What people share is
the model alone, in a format that cannot execute anything when read: safetensors holds only
named tensors, and the JSON holds only the config. ``ACN.from_pretrained(DIR)`` rebuilds the
model from the config and loads the tensors with every name and shape checked.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch

from acn import __version__
from acn.checkpoint import atomic_write_bytes, atomic_write_json, build_model, load_checkpoint
from acn.errors import CheckpointError

FORMAT = "acn-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def export_run(source: str | Path, out: str | Path) -> Path:
    """Write the model of a run directory or checkpoint to the folder ``out``.

    Returns:
        ``out``, holding ``config.json`` and ``model.safetensors`` (code bank included).
    """
    from safetensors.torch import save

    payload = load_checkpoint(source)
    build_model(payload, payload["model"], payload["path"])  # export only what loads
    out = Path(out)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "acn_version": __version__,
        "step": int(payload["step"]),
        "num_codes": int(payload["num_codes"]),
        "data_info": payload["data_info"],
        "config": payload["config"],
    }
    # safetensors refuses tensors that share memory or are not contiguous; copies are cheap.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in payload["model"].items()}
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


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model an exported folder describes; it is returned in eval mode."""
    meta, tensors = read_pretrained(folder)
    model, _ = build_model(meta, tensors, str(folder))
    return model.to(device).eval()


def is_exported(folder: str | Path) -> bool:
    """True for a folder holding ``config.json`` and ``model.safetensors``."""
    return all((Path(folder) / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE))


def load_model_payload(source: str | Path) -> dict[str, Any]:
    """What evaluation and sampling need from a run directory, a checkpoint or an exported
    folder: ``config``, ``data_info``, ``num_codes``, ``step``, ``model`` (the state dict) and
    ``path``, checked as :func:`acn.checkpoint.load_checkpoint` and :func:`read_pretrained` do."""
    if Path(source).is_dir() and is_exported(source):
        meta, tensors = read_pretrained(source)
        return {**meta, "model": tensors, "path": str(source)}
    return load_checkpoint(source)
