"""The ablation's conditional priors (``model.prior_network``) and the random neighbour draw
(``codebank.neighbours=random``): exact KLs, valid configs only, and every tool that reads an
ACN (sampling, daydreams, the codec, export) working with each of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY

from acn import sampling
from acn.bank.codebank import CodeBank
from acn.codec import decompress, encode
from acn.config import load_config
from acn.data.info import DataInfo
from acn.errors import ConfigError
from acn.model import ACN
from acn.nn import distributions as dist
from acn.nn.prior import LinearGaussianPrior, NeighbourPrior, ShiftedGaussianPrior

MODEL_TINY = [s for s in TINY if s.startswith("model.")]
# variant -> overrides, as acn ablate names them
FAMILIES = {
    "mlp_gaussian": ["model.prior_components=1"],
    "linear": ["model.prior_network=linear", "model.prior_components=1"],
    "shift": ["model.prior_network=shift", "model.prior_components=1"],
}


def _perturbed(prior: torch.nn.Module, seed: int) -> None:
    """Parameters away from their initial values, so the test sees a general A, b and s."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("cls", [LinearGaussianPrior, ShiftedGaussianPrior])
def test_closed_form_kl_matches_monte_carlo(cls):
    torch.manual_seed(0)
    prior = cls(3)
    _perturbed(prior, 1)
    c, c_hat = torch.randn(4, 3) * 1.5, torch.randn(4, 3)
    exact = prior.kl(c, c + torch.randn_like(c), c_hat)  # (4,)
    # E_q[log q(z) - log p(z | c_hat)] by 400,000 samples of z ~ N(c, I).
    z = c + torch.randn(400_000, 4, 3, dtype=torch.float64)
    log_q = dist.gaussian_log_prob(z, c.double(), torch.ones(())).sum(-1)
    log_p = torch.stack(
        [prior.log_prob(z[:, i].float(), c_hat[i].expand(400_000, 3)) for i in range(4)], dim=1
    ).double()
    mc = (log_q - log_p).mean(0)
    stderr = (log_q - log_p).std(0) / 400_000**0.5
    assert torch.all((exact.double() - mc).abs() < 5 * stderr + 1e-4), (exact, mc, stderr)
    # Exact means no noise: the z handed in does not change it.
    assert torch.equal(exact, prior.kl(c, c + 5 * torch.randn_like(c), c_hat))


def test_the_shift_prior_is_centred_on_the_neighbour_and_the_linear_one_learns_a_map():
    shift, linear = ShiftedGaussianPrior(4), LinearGaussianPrior(4)
    c_hat = torch.randn(2, 4)
    _, mu, sigma = shift.mixture_params(c_hat, 2)
    assert torch.equal(mu[..., 0], c_hat) and torch.allclose(sigma, torch.ones(()), atol=1e-3)
    assert sum(p.numel() for p in shift.parameters()) == 4  # s alone
    assert sum(p.numel() for p in linear.parameters()) == 4 * 4 + 4 + 4  # A, b, s
    # Trained against neighbours whose codes are -2 c_hat + 1, the linear prior finds that map.
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(400):
        c_hat = torch.randn(64, 4)
        c = -2 * c_hat + 1 + 0.1 * torch.randn(64, 4)
        loss = linear.kl(c, c, c_hat).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(linear.linear.weight, -2 * torch.eye(4), atol=0.1)
    assert torch.allclose(linear.linear.bias, torch.ones(4), atol=0.1)


def test_one_gaussian_mlp_has_the_exact_kl():
    prior = NeighbourPrior(3, hidden=8, layers=2, components=1)
    c, c_hat = torch.randn(5, 3), torch.randn(5, 3)
    logits, mu, sigma = prior.mixture_params(c_hat, 5)
    expected = dist.kl_unit_gaussian_gaussian(c, mu[..., 0], sigma[..., 0])
    assert torch.equal(prior.kl(c, c + torch.randn_like(c), c_hat), expected)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.prior_network=linear"], "prior_components=1"),
        (["model.prior_network=shift", "model.prior_components=2"], "prior_components=1"),
        (["model.prior_network=lineer"], "did you mean linear"),
        (["codebank.neighbours=far"], "nearest, random"),
        (["codebank.neighbours=random", "codebank.placement=sharded"], "replicated"),
    ],
)
def test_bad_prior_settings_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("digits-acn", overrides)


def test_random_neighbours_are_uniform_over_the_other_rows():
    bank = CodeBank(6, 2, generator=torch.Generator().manual_seed(0))
    exclude = torch.arange(6).repeat(5000)  # (30000,)
    rows, c_hat = bank.draw_random(torch.zeros(30000, 2), exclude, torch.Generator().manual_seed(1))
    assert not torch.any(rows == exclude)  # never one's own code
    assert torch.equal(c_hat, bank.codes[rows])
    counts = torch.bincount(rows * 6 + exclude, minlength=36).reshape(6, 6).float()
    off_diagonal = counts[~torch.eye(6, dtype=torch.bool)]
    assert torch.all((off_diagonal - 1000).abs() < 5 * 1000**0.5)  # 1000 expected per pair
    # Without rows to exclude (validation data) every row can be drawn.
    rows, _ = bank.draw_random(torch.zeros(600, 2), None, torch.Generator().manual_seed(2))
    assert set(rows.tolist()) == set(range(6))


def test_a_random_neighbour_model_trains_on_codes_from_anywhere(monkeypatch):
    config = load_config("digits-acn", [*MODEL_TINY, "codebank.neighbours=random"])
    model = ACN(config, DataInfo("synthetic", (1, 5, 4), 2, 0), 40)
    called = []
    monkeypatch.setattr(model.bank, "draw", lambda *a, **k: called.append(1))  # the k-NN path
    x = torch.randint(0, 2, (8, 1, 5, 4))
    terms = model(x, torch.arange(8), torch.Generator().manual_seed(0), update_bank=True)
    assert not called and terms.neighbours is not None
    assert not torch.any(terms.neighbours == torch.arange(8))
    terms.loss.backward()


def _tiny_model(family: str) -> ACN:
    config = load_config("digits-acn", [*MODEL_TINY, *FAMILIES[family]])
    torch.manual_seed(0)
    model = ACN(config, DataInfo("synthetic", (1, 5, 4), 2, 0), 40)
    model.bank.update(torch.arange(40), 2 * torch.randn(40, 4))
    _perturbed(model.prior, 3)
    return model.eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_trains_samples_daydreams_compresses_and_exports(family, tmp_path):
    model = _tiny_model(family)
    assert model.kind == "acn"
    x = torch.randint(0, 2, (6, 1, 5, 4), generator=torch.Generator().manual_seed(0))
    model.train()
    terms = model(x, torch.arange(6), torch.Generator().manual_seed(0), update_bank=True)
    terms.loss.backward()
    grads = [p.grad for p in model.prior.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    chains = sampling.daydream(model, x[:2], steps=2, generator=torch.Generator().manual_seed(0))
    assert chains.shape[:2] == (2, 3) and chains.max() <= 1
    images = np.asarray(x.numpy(), np.uint8)
    encoded = encode(model, images, segments=2)
    np.testing.assert_array_equal(decompress(model, encoded.data), images[encoded.order])
    model.save_pretrained(tmp_path / "folder")
    again = ACN.from_pretrained(tmp_path / "folder").eval()
    c_hat = torch.randn(3, 4)
    pairs = zip(
        model.prior.mixture_params(c_hat, 3), again.prior.mixture_params(c_hat, 3), strict=True
    )
    for a, b in pairs:
        assert torch.equal(a, b)
