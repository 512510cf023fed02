"""How a file is cut for decoding speed: into segments and parts, as far as its bits allow.

Decoding runs the PixelCNN once per pixel for a batch of one image per segment, so the more
segments, the fewer passes: on 2 cores a 28x28 pass of 3 images costs little less than one of
30. An ACN pays for each segment's first image: its latent is coded under the Gaussian head
instead of the neighbour prior, the difference between the unconditional and the tour's KL (a
few bits). Parts are independent stacks, one per process (:mod:`acn.codec.parts`); each costs
its own check bits, a length in the header and its stack's last word, about
:data:`PART_BITS`.

The encoder spends :data:`SHARE` of the file on both: two parts where the file is large enough
that the second costs at most half of it, and as many segments as the rest pays for. A VAE's or
a PixelCNN's segments cost nothing (every latent is under the same prior), so they take
:data:`MOST_BY_DEFAULT`.

The numbers are the encoder's choice, written in the header: the decoder never recomputes them,
so the estimate here may use the float model on any machine.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from acn.codec import container
from acn.codec.latents import GaussianHead
from acn.codec.tensors import as_tensor
from acn.model import ACN

SHARE = 0.002  # what segment heads and parts may add to the file, at most
PART_BITS = 80  # a part's cost: 32 check bits, 16 of length, up to 32 of its last word
DEFAULT_PARTS = 2  # the cores of a small machine; more with --parts
# Past about a thousand images a step, a 28x28 pass is as fast per image as it will get, and the
# batch's caches stay within a few hundred MB.
MOST_BY_DEFAULT = 1024
# What a segment costs beyond its head's KL, per latent dimension, chosen on the validation
# splits (scripts/codec_constants.py, exact files, format 4): the extra segments cost far more
# than the heads' estimated KL (digits: 8-26 bits a head against 1.0 estimated; mnist5k: 9
# against 6.4), most likely in the joining images' pops, which find a short stack. With a bit a
# dimension added the rule picks 1 segment for the 180 validation digits (the best measured:
# 4 and 9 segments cost +1.6% and +1.4%) and 5 for the 500 validation mnist5k digits (8 cost
# +0.10%, 18 +0.14%, 32 +0.46%).
JOIN_BITS_PER_DIM = 1.0
SAMPLE = 128  # tour positions the costs are estimated from
DRAWS = 2  # posterior samples per position


class Layout(NamedTuple):
    segments: int
    parts: int


def layout_by_bits(model: ACN, x: np.ndarray, order: np.ndarray | None) -> Layout:
    """The default segments and parts for images ``x`` (N, C, H, W) coded in ``order`` (tour
    position -> row; None for the soft tour, whose order is chosen as it goes: then the
    estimate takes each sampled image's nearest code as its predecessor)."""
    costs = estimate_costs(model, x, order)
    budget = SHARE * costs["image_bits"] * len(x)
    parts = DEFAULT_PARTS if budget / 2 >= (DEFAULT_PARTS - 1) * PART_BITS else 1
    if model.kind != "acn":
        return Layout(max(parts, min(len(x), MOST_BY_DEFAULT)), parts)
    left = budget - (parts - 1) * PART_BITS
    per_segment = costs["head_bits"] + JOIN_BITS_PER_DIM * model.code_dim
    fit = math.floor(left / per_segment)
    most = min(MOST_BY_DEFAULT, container.MAX_SEGMENTS_4)
    return Layout(int(min(max(parts, fit), most)), parts)


@torch.no_grad()
def estimate_costs(model: ACN, x: np.ndarray, order: np.ndarray | None) -> dict[str, float]:
    """Bits per image (reconstruction and KL under the neighbour prior, at posterior draws)
    and a head's extra bits (the Gaussian head's cost less the neighbour prior's at the same
    draws), averaged over up to :data:`SAMPLE` tour positions spread evenly along it."""
    n = len(x)
    device = next(model.parameters()).device
    if model.kind != "acn" or n < 2:
        return {"image_bits": _image_bits(model, x, device), "head_bits": 0.0}
    positions = np.unique(np.linspace(1, n - 1, min(SAMPLE, n - 1)).round().astype(np.int64))
    if order is not None:
        rows, previous = order[positions], order[positions - 1]
        c, c_prev = _codes(model, x, rows, device), _codes(model, x, previous, device)
    else:
        rows = positions
        c = _codes(model, x, rows, device)
        c_prev = _nearest(c, _codes(model, x, np.arange(n), device), rows)
    bank = model.bank.codes.detach().double().cpu().numpy()
    head = GaussianHead.fit(bank, model.code_dim)
    generator = torch.Generator(device="cpu").manual_seed(0)
    image, extra = [], []
    for _ in range(DRAWS):
        z = c + torch.randn(c.shape, generator=generator).to(device)
        kl = model.prior.kl(c, z, c_prev)
        recon = -model.decoder.log_prob(as_tensor(x[rows]).to(device), z)
        image.append((kl + recon).double().cpu())
        neighbour = model.prior.log_prob(z, c_prev).double().cpu()
        extra.append(neighbour - _head_log_density(head, z.double().cpu().numpy()))
    nats = 1 / math.log(2)
    return {
        "image_bits": float(torch.stack(image).mean()) * nats,
        "head_bits": max(0.0, float(torch.stack(extra).mean()) * nats),
    }


@torch.no_grad()
def _image_bits(model: ACN, x: np.ndarray, device) -> float:
    """A VAE's or PixelCNN's bits per image (its loss: reconstruction and KL at a posterior
    draw), or an ACN's on fewer than two images, on up to :data:`SAMPLE` images."""
    rows = np.unique(np.linspace(0, len(x) - 1, min(SAMPLE, len(x))).round().astype(np.int64))
    images = as_tensor(x[rows]).to(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    recon = kl = torch.zeros(len(rows))
    if model.encoder is not None:
        c = model.encode(images).float()
        z = c + torch.randn(c.shape, generator=generator).to(device)
        prior = None if model.kind != "acn" else c  # an ACN's one image: its own code
        kl = model.prior.kl(c, z, prior).double().cpu()
        recon = -model.decoder.log_prob(images, z).double().cpu()
    else:
        recon = -model.decoder.log_prob(images, None).double().cpu()
    return float((recon + kl).mean()) / math.log(2)


def _codes(model: ACN, x: np.ndarray, rows: np.ndarray, device) -> torch.Tensor:
    return torch.cat(
        [
            model.encode(as_tensor(x[rows[i : i + 256]]).to(device)).float()
            for i in range(0, len(rows), 256)
        ]
    )


def _nearest(c: torch.Tensor, every: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    distances = torch.cdist(c, every)
    distances[torch.arange(len(rows)), torch.from_numpy(rows)] = float("inf")  # not itself
    return every[distances.argmin(dim=1)]


def _head_log_density(head: GaussianHead, z: np.ndarray) -> torch.Tensor:
    """log N(z; mean, L L^T) of each row of ``z`` (n, D), in nats."""
    eps = np.linalg.solve(head.chol, (z - head.mean).T).T  # L eps = z - mean
    log_det = np.log(np.diag(head.chol)).sum()
    dim = z.shape[1]
    return torch.from_numpy(
        -0.5 * (eps**2).sum(axis=1) - log_det - 0.5 * dim * math.log(2 * math.pi)
    )
