"""Codes of whole splits: batched encoding and the ``--export-codes`` file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from acn.data.datasets import eval_loader
from acn.files import atomic_write_bytes
from acn.model import ACN


@torch.no_grad()
def encode_dataset(
    model: ACN,
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int = 256,
    progress=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes c(x) (posterior means) of every example, in dataset order.

    Returns:
        ``(codes, labels)``: (N, D) float32 and (N,) int64, on the CPU.
    """
    codes, labels = [], []
    for batch in eval_loader(dataset, batch_size):
        codes.append(model.encode(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"])
        if progress is not None:
            progress(len(batch["label"]))
    return torch.cat(codes), torch.cat(labels)


def export_codes(
    path: str | Path, codes: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]
) -> None:
    """Write ``{split}_codes`` and ``{split}_labels`` arrays to an ``.npz`` file, atomically."""
    arrays = {}
    for split in codes:
        arrays[f"{split}_codes"] = codes[split].numpy().astype(np.float32)
        arrays[f"{split}_labels"] = labels[split].numpy().astype(np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(path), lambda f: f.write(buffer.getvalue()))
