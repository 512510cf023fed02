"""The paper's compression numbers on one split, in nats per image (notes, section 4).

Every image's code c is its posterior mean; S latents z_s = c + eps_s are drawn per image and
*shared* by every term below, so differences between the KL schemes are not blurred by
independent noise:

- reconstruction: mean over s of -log r(x | z_s);
- KL under a neighbour prior, for K in (1, 5, 10) and each neighbour pool: for every sample a
  neighbour c_hat drawn uniformly from the K nearest pool codes (the image's own row excluded
  when it is in the pool), KL(N(c, I) || p(z | c_hat)) estimated as in training;
- KL along the greedy tour through the split's codes: each code's prior is conditioned on the
  previous code of the tour, the first code's on the unconditional density;
- KL under the unconditional density (:mod:`acn.density`), the same estimator;
- for priors without a neighbour (the VAE), the KL under the model's own prior;
- an importance-weighted bound on -log p(x) from the same S samples, with q(z|x) as proposal and
  the unconditional density (ACN) or the model's prior (VAE) as prior;
- the decoder-only PixelCNN's exact -log p(x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from acn.codebank import CodeBank, uniform_pick
from acn.data import eval_loader
from acn.density import GaussianMixtureDensity
from acn.distributions import gaussian_log_prob
from acn.model import ACN
from acn.tour import greedy_tour

NEIGHBOUR_KS = (1, 5, 10)


@dataclass
class Pool:
    """Where test-time neighbours come from.

    Attributes:
        name: ``split``, ``train`` or ``bank``.
        codes: (N, D) the pool's codes.
        contains_split: the evaluated split's example i is row i of the pool (so row i is
            excluded from its own neighbours).
        description: one line for the report.
    """

    name: str
    codes: torch.Tensor
    contains_split: bool
    description: str


def importance_weighted_nats(log_weights: torch.Tensor) -> torch.Tensor:
    """-log (1/S) sum_s w_s for log-weights (B, S): the IW bound on -log p(x), (B,) nats.

    By Jensen's inequality it is never above -mean_s log w_s, the ELBO from the same samples.
    """
    return -(torch.logsumexp(log_weights, dim=1) - math.log(log_weights.shape[1]))


def tour_predecessors(codes: torch.Tensor, start: int = 0) -> torch.Tensor:
    """For each row, the row visited just before it on the greedy tour (-1 for the start)."""
    order = greedy_tour(codes, start)
    previous = torch.full((codes.shape[0],), -1, dtype=torch.long)
    previous[order[1:]] = order[:-1]
    return previous


@torch.no_grad()
def compression_nats(
    model: ACN,
    dataset: Dataset,
    codes: torch.Tensor | None,
    device: torch.device | str,
    *,
    samples: int,
    seed: int,
    density: GaussianMixtureDensity | None = None,
    pools: list[Pool] | None = None,
    tour_start: int = 0,
    batch_size: int = 256,
    progress=None,
) -> dict:
    """Mean nats per image of every term that applies to ``model`` on ``dataset``.

    Args:
        model: a trained model in eval mode.
        dataset: the split, in the order of ``codes``.
        codes: (N, D) the split's posterior means (None for the decoder-only model).
        device: where to compute.
        samples: S, latents per image.
        seed: seeds every random draw (latents, neighbour picks), so results repeat exactly.
        density: the unconditional density (required for a neighbour prior).
        pools: neighbour pools for the K-nearest schemes (neighbour prior only).
        tour_start: the split row the greedy tour starts from.
        batch_size: images per batch.
        progress: optional callable advanced by the number of images done.

    Returns:
        Keys ``recon``, ``kl_prior``, ``kl_unconditional``, ``kl_tour``, ``kl_pool`` (pool ->
        {K: nats or None when the pool has no K eligible codes}), ``iw`` and ``exact``; the terms
        that do not apply to this model are None.
    """
    out = {
        "recon": None,
        "kl_prior": None,
        "kl_unconditional": None,
        "kl_tour": None,
        "kl_pool": None,
        "iw": None,
        "exact": None,
    }
    if model.code_dim == 0:
        total = 0.0
        for batch in eval_loader(dataset, batch_size):
            total += -model.decoder.log_prob(batch["image"].to(device), None).double().sum().item()
            if progress is not None:
                progress(len(batch["image"]))
        out["exact"] = out["recon"] = total / len(dataset)
        return out
    conditional = model.prior.conditional
    if conditional and density is None:
        raise ValueError("a neighbour prior's compression numbers need the unconditional density")
    density = density.to(device) if density is not None else None
    pools = pools or []
    generator = torch.Generator(device=device).manual_seed(seed)
    codes_dev = codes.to(device)
    previous = tour_predecessors(codes, tour_start).to(device) if conditional else None
    banks = {}
    for pool in pools if conditional else []:
        bank = CodeBank(len(pool.codes), pool.codes.shape[1]).to(device)
        bank.update(torch.arange(len(pool.codes), device=device), pool.codes.to(device))
        eligible = len(pool.codes) - (1 if pool.contains_split else 0)
        banks[pool.name] = (bank, pool, [k for k in NEIGHBOUR_KS if k <= eligible])
    sums: dict[str, float] = {"recon": 0.0, "kl": 0.0, "tour": 0.0, "unconditional": 0.0}
    pool_sums = {name: dict.fromkeys(ks, 0.0) for name, (_, _, ks) in banks.items()}
    iw_sum = 0.0
    for batch in eval_loader(dataset, batch_size):
        index = batch["index"].to(device)
        x = batch["image"].to(device)
        c = codes_dev[index]  # (B, D)
        nearest = {}
        for name, (bank, pool, ks) in banks.items():
            if ks:
                exclude = index if pool.contains_split else None
                nearest[name] = bank.knn(c, max(ks), exclude=exclude)  # (B, Kmax) each
        log_w = torch.empty(len(index), samples, dtype=torch.float64, device=device)
        for s in range(samples):
            z = c + torch.randn(c.shape, generator=generator, device=device, dtype=c.dtype)
            recon = -model.decoder.log_prob(x, z)  # (B,)
            sums["recon"] += recon.double().sum().item()
            if conditional:
                for name, (dist, ind) in nearest.items():
                    pool_codes = banks[name][0].codes
                    for k in pool_sums[name]:
                        c_hat = pool_codes[uniform_pick(dist[:, :k], ind[:, :k], generator)]
                        pool_sums[name][k] += model.prior.kl(c, z, c_hat).double().sum().item()
                prev = previous[index]  # (B,)
                first = prev < 0
                tour_kl = model.prior.kl(c, z, codes_dev[prev.clamp(min=0)])
                unconditional_kl = density.kl(c, z)
                tour_kl = torch.where(first, unconditional_kl, tour_kl)
                sums["tour"] += tour_kl.double().sum().item()
                sums["unconditional"] += unconditional_kl.double().sum().item()
                log_prior = density.log_prob(z)
            else:
                sums["kl"] += model.prior.kl(c, z).double().sum().item()
                log_prior = model.prior.log_prob(z)
            log_q = gaussian_log_prob(z, c, torch.ones_like(c)).sum(dim=-1)
            log_w[:, s] = (-recon + log_prior - log_q).double()
        iw_sum += importance_weighted_nats(log_w).sum().item()
        if progress is not None:
            progress(len(index))
    per_image = len(dataset) * samples
    out["recon"] = sums["recon"] / per_image
    out["iw"] = iw_sum / len(dataset)
    if conditional:
        out["kl_tour"] = sums["tour"] / per_image
        out["kl_unconditional"] = sums["unconditional"] / per_image
        out["kl_pool"] = {
            name: {
                k: (pool_sums[name][k] / per_image if k in pool_sums[name] else None)
                for k in NEIGHBOUR_KS
            }
            for name in banks
        }
    else:
        out["kl_prior"] = sums["kl"] / per_image
    return out
