"""The compression numbers compute what they claim, checked against independent arithmetic.

With one mixture component per dimension the neighbour prior's KL is exact (no z noise), and so
is a one-component unconditional density's; every KL scheme can then be recomputed by hand from
the codes alone: the K = 1 neighbour is the nearest other code, the tour follows
:func:`greedy_tour`, and the VAE's KL is ||c||^2 / 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from acn.bank.tour import greedy_tour
from acn.config import load_config
from acn.data.datasets import ImageDataset, load_splits
from acn.eval.code_lengths import (
    Pool,
    compression_nats,
    importance_weighted_nats,
    tour_predecessors,
)
from acn.model import ACN
from acn.nn.density import GaussianMixtureDensity


def _model(tiny_overrides, prior: str, *extra: str) -> tuple[ACN, dict]:
    config = load_config(f"digits-{prior}", [*tiny_overrides, *extra])
    splits, info = load_splits(config.data)
    torch.manual_seed(0)
    model = ACN(config, info, len(splits["train"]), generator=torch.Generator().manual_seed(0))
    return model.eval(), splits


def _subset(dataset: ImageDataset, n: int) -> ImageDataset:
    return ImageDataset(dataset.images[:n].clone(), dataset.labels[:n].clone())


def _unit_density(dim: int, scale: float = 2.0) -> GaussianMixtureDensity:
    return GaussianMixtureDensity(
        torch.ones(1, dtype=torch.float64),
        torch.zeros(1, dim, dtype=torch.float64),
        (scale**2 * torch.eye(dim, dtype=torch.float64))[None],
    )


def _exact_kl_normal(c: torch.Tensor, scale: float) -> torch.Tensor:
    """KL(N(c, I) || N(0, scale^2 I)), by hand."""
    d = c.shape[-1]
    return 0.5 * (d / scale**2 + c.pow(2).sum(-1) / scale**2 - d + 2 * d * math.log(scale))


def test_importance_weighted_bound_arithmetic():
    log_w = torch.tensor([[-3.0, -1.0, -2.0], [-5.0, -5.0, -5.0]], dtype=torch.float64)
    iw = importance_weighted_nats(log_w)
    expected0 = -math.log((math.exp(-3) + math.exp(-1) + math.exp(-2)) / 3)
    assert iw[0].item() == pytest.approx(expected0, abs=1e-12)
    assert iw[1].item() == pytest.approx(5.0, abs=1e-12)  # equal weights: no gain from S
    # Jensen: never above the ELBO computed from the same samples.
    assert torch.all(iw <= -log_w.mean(dim=1) + 1e-12)
    assert importance_weighted_nats(log_w[:, :1]).tolist() == [3.0, 5.0]


def test_tour_on_a_line_visits_codes_in_order():
    positions = torch.tensor([4.0, 0.0, 7.0, 1.0, 2.5, 9.0, 5.5])
    codes = torch.stack([positions, torch.zeros_like(positions)], dim=1)
    leftmost = int(positions.argmin())
    order = greedy_tour(codes, leftmost)
    assert positions[order].tolist() == sorted(positions.tolist())
    previous = tour_predecessors(codes, leftmost)
    assert previous[leftmost] == -1
    for a, b in zip(order[:-1].tolist(), order[1:].tolist(), strict=True):
        assert previous[b] == a


def test_vae_kl_is_the_closed_form(tiny_overrides):
    model, splits = _model(tiny_overrides, "vae")
    test = _subset(splits["test"], 40)
    codes = model.encode(test.images)
    out = compression_nats(model, test, codes.detach(), "cpu", samples=3, seed=0, batch_size=16)
    assert out["kl_prior"] == pytest.approx(0.5 * codes.pow(2).sum(1).mean().item(), rel=1e-5)
    for key in ("kl_tour", "kl_unconditional", "kl_pool", "exact"):
        assert out[key] is None
    assert out["recon"] > 0 and out["iw"] > 0


def test_acn_kl_schemes_match_hand_computation(tiny_overrides):
    model, splits = _model(tiny_overrides, "acn", "model.prior_components=1")
    test = _subset(splits["test"], 30)
    # Spread-out codes (the function takes codes as given): an untrained encoder's are nearly
    # identical, which would make every scheme look alike.
    codes = 2 * torch.randn(30, 4, generator=torch.Generator().manual_seed(2))
    train_codes = torch.randn(50, codes.shape[1], generator=torch.Generator().manual_seed(1))
    density = _unit_density(codes.shape[1])
    pools = [
        Pool("split", codes, True, "split"),
        Pool("train", train_codes, False, "train"),
    ]
    out = compression_nats(
        model, test, codes, "cpu", samples=2, seed=0, density=density, pools=pools, batch_size=8
    )
    prior = model.prior
    with torch.no_grad():
        # K = 1 in the split's own pool: the nearest *other* code (self excluded).
        d2 = torch.cdist(codes, codes).fill_diagonal_(float("inf"))
        nearest = codes[d2.argmin(dim=1)]
        k1_split = prior.kl(codes, codes, nearest).mean().item()
        # K = 1 in the training pool: nothing to exclude.
        nearest_train = train_codes[torch.cdist(codes, train_codes).argmin(dim=1)]
        k1_train = prior.kl(codes, codes, nearest_train).mean().item()
        # Tour: each code conditioned on its predecessor, the first under the density.
        order = greedy_tour(codes, 0)
        tour = prior.kl(codes[order[1:]], codes[order[1:]], codes[order[:-1]]).sum()
        tour = (tour + _exact_kl_normal(codes[order[0]], 2.0)).item() / len(codes)
        unconditional = _exact_kl_normal(codes, 2.0).mean().item()
    assert out["kl_pool"]["split"][1] == pytest.approx(k1_split, rel=1e-5)
    assert out["kl_pool"]["train"][1] == pytest.approx(k1_train, rel=1e-5)
    assert out["kl_tour"] == pytest.approx(tour, rel=1e-5)
    assert out["kl_unconditional"] == pytest.approx(unconditional, rel=1e-5)
    # Including self would have conditioned K = 1 on the code itself: a different number.
    with torch.no_grad():
        self_kl = prior.kl(codes, codes, codes).mean().item()
    assert abs(self_kl - k1_split) > 1e-3
    assert out["kl_prior"] is None and out["exact"] is None


def test_k_larger_than_the_pool_is_reported_as_missing(tiny_overrides):
    model, splits = _model(tiny_overrides, "acn")
    test = _subset(splits["test"], 6)  # 5 other codes: K = 10 has no meaning
    with torch.no_grad():
        codes = model.encode(test.images)
    out = compression_nats(
        model,
        test,
        codes,
        "cpu",
        samples=1,
        seed=0,
        density=_unit_density(codes.shape[1]),
        pools=[Pool("split", codes, True, "split")],
    )
    assert out["kl_pool"]["split"][10] is None
    assert out["kl_pool"]["split"][5] is not None


def test_results_repeat_under_a_seed_and_change_with_it(tiny_overrides):
    model, splits = _model(tiny_overrides, "acn")  # three components: Monte Carlo KL
    test = _subset(splits["test"], 20)
    with torch.no_grad():
        codes = model.encode(test.images)
    kwargs = {
        "samples": 2,
        "density": _unit_density(codes.shape[1]),
        "pools": [Pool("split", codes, True, "split")],
    }
    a = compression_nats(model, test, codes, "cpu", seed=3, **kwargs)
    b = compression_nats(model, test, codes, "cpu", seed=3, **kwargs)
    c = compression_nats(model, test, codes, "cpu", seed=4, **kwargs)
    assert a == b
    assert a["recon"] != c["recon"]


def test_decoder_only_nats_are_exact(tiny_overrides):
    model, splits = _model(tiny_overrides, "pixelcnn")
    test = _subset(splits["test"], 25)
    out = compression_nats(model, test, None, "cpu", samples=5, seed=0, batch_size=7)
    with torch.no_grad():
        expected = -model.decoder.log_prob(test.images, None).double().mean().item()
    assert out["exact"] == pytest.approx(expected, rel=1e-9)
    assert out["iw"] is None and out["kl_prior"] is None
