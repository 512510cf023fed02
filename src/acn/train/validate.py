"""Evaluation passes: mean KL, reconstruction and total nats per image on a split.

For a neighbour prior, the codes of a held-out split are conditioned on a neighbour drawn
uniformly from the k nearest codes in the *training* bank (the held-out examples are not in the
bank, so nothing needs excluding). This is the training objective measured on held-out data;
it is not an IID likelihood, since the neighbour is chosen with the example's own code. The
paper's compression tables (greedy tour, unconditional prior) are a separate evaluation.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from acn.model import ACN


@torch.no_grad()
def evaluate(
    model: ACN, loader: DataLoader, device: torch.device | str, seed: int = 0, progress=None
) -> dict[str, float]:
    """Mean per-image nats over a split with one z sample per image.

    Args:
        model: the model (its mode is restored afterwards).
        loader: batches of ``{"image", "index", "label"}``.
        device: where to compute.
        seed: seeds the z noise and the neighbour draws, so the numbers are reproducible.
        progress: optional callable advanced by the batch size after every batch.

    Returns:
        ``kl_nats``, ``recon_nats``, ``total_nats`` (per image), ``bits_per_dim`` and
        ``num_examples``.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    kl_sum = recon_sum = 0.0
    count = 0
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        terms = model(x, index=None, generator=generator, update_bank=False)
        kl_sum += terms.kl_nats.double().sum().item()
        recon_sum += terms.recon_nats.double().sum().item()
        count += x.shape[0]
        if progress is not None:
            progress(x.shape[0])
    model.train(was_training)
    kl, recon = kl_sum / max(count, 1), recon_sum / max(count, 1)
    total = kl + recon
    return {
        "kl_nats": kl,
        "recon_nats": recon,
        "total_nats": total,
        "bits_per_dim": total / (model.info.dims * math.log(2)),
        "num_examples": count,
    }
