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
- KL under the unconditional density (:mod:`acn.nn.density`), the same estimator;
- for priors without a neighbour (the VAE), the KL under the model's own prior;
- an importance-weighted bound on -log p(x) from the same S samples, with q(z|x) as proposal and
  the unconditional density (ACN) or the model's prior (VAE) as prior;
- the decoder-only PixelCNN's exact -log p(x).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from acn.bank.codebank import CodeBank, uniform_pick
from acn.bank.tour import greedy_tour
from acn.data.datasets import eval_loader
from acn.eval.pools import NEIGHBOUR_KS, Pool
from acn.model import ACN
from acn.nn.density import GaussianMixtureDensity
from acn.nn.distributions import gaussian_log_prob

# Every term compression_nats reports (None where it does not apply to the model).
TERMS = ("recon", "kl_prior", "kl_unconditional", "kl_tour", "kl_pool", "iw", "exact")


def importance_weighted_nats(log_weights: torch.Tensor) -> torch.Tensor:
    """-log (1/S) sum_s w_s for log-weights (B, S): the IW bound on -log p(x), (B,) nats.

    By Jensen's inequality it is never above -mean_s log w_s, the ELBO from the same samples.
    """
    return -(torch.logsumexp(log_weights, dim=1) - math.log(log_weights.shape[1]))


def tour_predecessors(codes: torch.Tensor, start: int = 0) -> torch.Tensor:
    """For each row, the row visited just before it on the greedy tour (-1 for the start); on
    the codes' device."""
    return _predecessors(greedy_tour(codes, start)).to(codes.device)


def _predecessors(order: torch.Tensor) -> torch.Tensor:
    order = torch.as_tensor(order, dtype=torch.long)
    previous = torch.full((len(order),), -1, dtype=torch.long)
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
    tour: torch.Tensor | None = None,
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
        tour: (N,) the visiting order to use instead of computing the greedy tour (a codec that
            has it already; it must be the greedy tour's for the number to be the ordered
            bound).
        batch_size: images per batch.
        progress: optional callable advanced by the number of images done.

    Returns:
        The keys of :data:`TERMS`: ``recon``, ``kl_prior``, ``kl_unconditional``, ``kl_tour``,
        ``kl_pool`` (pool -> {K: nats or None when the pool has no K eligible codes}), ``iw``
        and ``exact``; the terms that do not apply to this model are None.
    """
    out = dict.fromkeys(TERMS)
    if model.kind == "pixelcnn":
        out["exact"] = out["recon"] = _exact_nats(model, dataset, device, batch_size, progress)
        return out
    acn = model.kind == "acn"
    if acn and density is None:
        raise ValueError("a neighbour prior's compression numbers need the unconditional density")
    scorer = _LatentScorer(
        model,
        codes.to(device),
        torch.Generator(device=device).manual_seed(seed),
        density.to(device) if acn else None,
        (tour_predecessors(codes, tour_start) if tour is None else _predecessors(tour)).to(device)
        if acn
        else None,
        _pool_banks(pools or [], device) if acn else {},
    )
    for batch in eval_loader(dataset, batch_size):
        scorer.batch(batch["image"].to(device), batch["index"].to(device), samples)
        if progress is not None:
            progress(len(batch["index"]))
    return out | scorer.means(len(dataset), samples)


def _exact_nats(model: ACN, dataset: Dataset, device, batch_size: int, progress) -> float:
    """The decoder-only model's exact -log p(x), mean nats per image."""
    total = 0.0
    for batch in eval_loader(dataset, batch_size):
        total += -model.decoder.log_prob(batch["image"].to(device), None).double().sum().item()
        if progress is not None:
            progress(len(batch["image"]))
    return total / len(dataset)


def _pool_banks(pools: list[Pool], device) -> dict[str, tuple[CodeBank, Pool, list[int]]]:
    """A searchable bank per pool, with the neighbour counts K it has enough codes for."""
    banks = {}
    for pool in pools:
        bank = CodeBank(len(pool.codes), pool.codes.shape[1]).to(device)
        bank.update(torch.arange(len(pool.codes), device=device), pool.codes.to(device))
        eligible = len(pool.codes) - (1 if pool.contains_split else 0)
        banks[pool.name] = (bank, pool, [k for k in NEIGHBOUR_KS if k <= eligible])
    return banks


class _LatentScorer:
    """Sums, over batches and the S shared latents, of every term of a model with a latent."""

    def __init__(self, model, codes, generator, density, previous, banks) -> None:
        self.model, self.codes, self.generator = model, codes, generator
        self.density, self.previous, self.banks = density, previous, banks
        self.sums = {"recon": 0.0, "kl": 0.0, "tour": 0.0, "unconditional": 0.0, "iw": 0.0}
        self.pool_sums = {name: dict.fromkeys(ks, 0.0) for name, (_, _, ks) in banks.items()}

    def batch(self, x: torch.Tensor, index: torch.Tensor, samples: int) -> None:
        """Add one batch of images (B, C, H, W) with their split rows (B,)."""
        c = self.codes[index]  # (B, D)
        nearest = {}
        for name, (bank, pool, ks) in self.banks.items():
            if ks:
                exclude = index if pool.contains_split else None
                nearest[name] = bank.knn(c, max(ks), exclude=exclude)  # (B, Kmax) each
        log_w = torch.empty(len(index), samples, dtype=torch.float64, device=c.device)
        for s in range(samples):
            z = c + torch.randn(c.shape, generator=self.generator, device=c.device, dtype=c.dtype)
            recon = -self.model.decoder.log_prob(x, z)  # (B,)
            self.sums["recon"] += recon.double().sum().item()
            if self.density is not None:
                log_prior = self._neighbour_terms(c, z, index, nearest)
            else:
                self.sums["kl"] += self.model.prior.kl(c, z).double().sum().item()
                log_prior = self.model.prior.log_prob(z)
            log_q = gaussian_log_prob(z, c, torch.ones_like(c)).sum(dim=-1)
            log_w[:, s] = (-recon + log_prior - log_q).double()
        self.sums["iw"] += importance_weighted_nats(log_w).sum().item()

    def _neighbour_terms(self, c, z, index, nearest) -> torch.Tensor:
        """Add the K-nearest, tour and unconditional KLs of one latent sample; returns the
        unconditional density's log p(z), the IW bound's prior."""
        prior = self.model.prior
        for name, (dist, ind) in nearest.items():
            pool_codes = self.banks[name][0].codes
            for k in self.pool_sums[name]:
                c_hat = pool_codes[uniform_pick(dist[:, :k], ind[:, :k], self.generator)]
                self.pool_sums[name][k] += prior.kl(c, z, c_hat).double().sum().item()
        prev = self.previous[index]  # (B,)
        tour_kl = prior.kl(c, z, self.codes[prev.clamp(min=0)])
        unconditional_kl = self.density.kl(c, z)
        # The tour's first code has no predecessor: it is paid under the unconditional density.
        tour_kl = torch.where(prev < 0, unconditional_kl, tour_kl)
        self.sums["tour"] += tour_kl.double().sum().item()
        self.sums["unconditional"] += unconditional_kl.double().sum().item()
        return self.density.log_prob(z)

    def means(self, num_images: int, samples: int) -> dict:
        """Mean nats per image of the summed terms (keys of :data:`TERMS`)."""
        per_image = num_images * samples
        out = {"recon": self.sums["recon"] / per_image, "iw": self.sums["iw"] / num_images}
        if self.density is None:
            return out | {"kl_prior": self.sums["kl"] / per_image}
        pools = {
            name: {k: (sums[k] / per_image if k in sums else None) for k in NEIGHBOUR_KS}
            for name, sums in self.pool_sums.items()
        }
        return out | {
            "kl_tour": self.sums["tour"] / per_image,
            "kl_unconditional": self.sums["unconditional"] / per_image,
            "kl_pool": pools,
        }
