"""Sampling protocols follow the paper exactly, batch their chains, and repeat under a seed."""

from __future__ import annotations

import pytest
import torch

from acn import sampling
from acn.config import load_config
from acn.data.datasets import load_splits
from acn.errors import ConfigError
from acn.model import ACN
from acn.nn.density import GaussianMixtureDensity


def _model(tiny_overrides, prior: str) -> tuple[ACN, torch.Tensor]:
    config = load_config(f"digits-{prior}", tiny_overrides)
    splits, info = load_splits(config.data)
    torch.manual_seed(0)
    model = ACN(config, info, len(splits["train"]), generator=torch.Generator().manual_seed(0))
    return model.eval(), splits["test"].images[:3]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_daydream_samples_the_prior_from_each_new_images_code(tiny_overrides, monkeypatch):
    model, real = _model(tiny_overrides, "acn")
    calls = []
    encode, prior_sample, decoder_sample = model.encode, model.prior.sample, model.decoder.sample

    def spy_encode(x):
        c = encode(x)
        calls.append(("encode", x.clone(), c.clone()))
        return c

    def spy_prior(c_hat=None, generator=None, num=None):
        z = prior_sample(c_hat, generator, num)
        calls.append(("prior", c_hat.clone(), z.clone()))
        return z

    def spy_decoder(z, generator=None, num=None, progress=None):
        x = decoder_sample(z, generator, num, progress)
        calls.append(("decode", z.clone(), x.clone()))
        return x

    monkeypatch.setattr(model, "encode", spy_encode)
    monkeypatch.setattr(model.prior, "sample", spy_prior)
    monkeypatch.setattr(model.decoder, "sample", spy_decoder)
    chains = sampling.daydream(model, real, steps=2, generator=_gen(0))
    assert chains.shape == (3, 3, *real.shape[1:])
    assert torch.equal(chains[:, 0], real)  # the real image first
    assert [kind for kind, *_ in calls] == ["encode", "prior", "decode"] * 2
    # Step 1 encodes the real image; step 2 encodes the image step 1 drew.
    assert torch.equal(calls[0][1], real) and torch.equal(calls[3][1], chains[:, 1])
    for step in range(2):
        (_, _, code), (_, c_hat, z), (_, z_used, x) = calls[3 * step : 3 * step + 3]
        assert torch.equal(c_hat, code)  # the prior is conditioned on the image's code
        assert torch.equal(z_used, z)  # the decoder gets the *sampled* z ...
        assert not torch.allclose(z, code)  # ... which is not the code (no shortcut)
        assert z.shape[0] == 3  # all chains in one batch
        assert torch.equal(x, chains[:, step + 1])


def test_daydream_uses_a_sample_not_the_prior_mean(tiny_overrides):
    model, real = _model(tiny_overrides, "acn")
    c = model.encode(real)
    draws = torch.stack([model.prior.sample(c, _gen(s)) for s in range(50)])
    # Different generators give different z for the same code: a sample, not a point.
    assert draws.std(dim=0).min() > 0.01


def test_reproducible_under_a_seed_and_different_across_seeds(tiny_overrides):
    model, real = _model(tiny_overrides, "acn")
    a = sampling.daydream(model, real, 2, _gen(1))
    b = sampling.daydream(model, real, 2, _gen(1))
    c = sampling.daydream(model, real, 2, _gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    r = sampling.reconstruct(model, real, 4, _gen(1))
    assert r.shape == (3, 4, *real.shape[1:]) and torch.equal(
        r, sampling.reconstruct(model, real, 4, _gen(1))
    )
    assert int(r.min()) >= 0 and int(r.max()) <= 1


def test_protocols_refuse_models_they_do_not_apply_to(tiny_overrides):
    vae, real = _model(tiny_overrides, "vae")
    with pytest.raises(ConfigError, match="neighbour-conditioned prior"):
        sampling.daydream(vae, real, 1, _gen(0))
    with pytest.raises(ConfigError, match="neighbour-conditioned prior"):
        sampling.prior_samples(vae, real, 2, _gen(0))
    pixelcnn, _ = _model(tiny_overrides, "pixelcnn")
    with pytest.raises(ConfigError, match="latent codes"):
        sampling.reconstruct(pixelcnn, real, 2, _gen(0))


def test_unconditional_for_every_kind_of_model(tiny_overrides):
    for prior in ("vae", "pixelcnn"):
        model, _ = _model(tiny_overrides, prior)
        x = sampling.unconditional(model, 5, generator=_gen(0))
        assert x.shape == (5, 1, 8, 8)
    acn, _ = _model(tiny_overrides, "acn")
    with pytest.raises(ValueError, match="density"):
        sampling.unconditional(acn, 2, generator=_gen(0))
    density = GaussianMixtureDensity(
        torch.ones(1, dtype=torch.float64),
        torch.zeros(1, 4, dtype=torch.float64),
        torch.eye(4, dtype=torch.float64)[None],
    )
    x = sampling.unconditional(acn, 3, density, _gen(0))
    assert x.shape == (3, 1, 8, 8)


def test_progress_counts_one_pass_per_pixel_per_batched_decode(tiny_overrides):
    model, real = _model(tiny_overrides, "acn")
    seen = []
    sampling.daydream(model, real, 2, _gen(0), progress=seen.append)
    assert sum(seen) == 2 * sampling.pixel_passes(model) == 2 * 64


def test_nearest_training_is_brute_force_and_excludes():
    g = _gen(3)
    train = torch.randn(40, 3, generator=g)
    queries = train[:5] + 0.01
    dist, idx = sampling.nearest_training(queries, train, 3)
    exact = (queries[:, None, :] - train[None]).norm(dim=-1)  # direct differences, no cancellation
    expected = exact.topk(3, largest=False)
    assert torch.equal(idx, expected.indices)
    torch.testing.assert_close(dist, expected.values)
    _, idx = sampling.nearest_training(queries, train, 3, exclude=torch.arange(5))
    assert all(i not in row for i, row in enumerate(idx.tolist()))
