"""The ACN step wired as Algorithm 1: self never its own neighbour, bank written, no leaks."""

from __future__ import annotations

import torch

from acn.config import load_config
from acn.data import load_splits
from acn.model import ACN


def _model(tiny, *extra):
    config = load_config("digits-acn", [*tiny, *extra])
    splits, info = load_splits(config.data)
    model = ACN(config, info, len(splits["train"]), generator=torch.Generator().manual_seed(0))
    return model, splits["train"]


def test_own_code_is_never_the_neighbour_even_when_it_is_the_nearest(tiny_overrides):
    model, train = _model(tiny_overrides, "codebank.k=1")
    index = torch.arange(32)
    x = train.images[index]
    g = torch.Generator().manual_seed(0)
    first = model(x, index=index, generator=g, update_bank=True)
    assert torch.equal(model.bank.codes[index], first.codes.detach())  # C[x] <- c(x)
    # Now every example's own row holds exactly its code (distance 0): with k = 1 a search that
    # forgot the exclusion would return it every time.
    second = model(x, index=index, generator=g, update_bank=True)
    assert not (second.neighbours == index).any()
    nearest_other = model.bank.knn(second.codes.detach(), 1, exclude=index)[1][:, 0]
    assert torch.equal(second.neighbours, nearest_other)


def test_neighbour_code_carries_no_gradient_and_kl_uses_it(tiny_overrides):
    model, train = _model(tiny_overrides)
    index = torch.arange(16)
    terms = model(
        train.images[index],
        index=index,
        generator=torch.Generator().manual_seed(1),
        update_bank=True,
    )
    terms.loss.backward()
    assert not model.bank.codes.requires_grad and model.bank.codes.grad is None
    assert all(p.grad is not None for p in model.prior.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    # The KL must depend on which neighbour was drawn: move the bank, the KL changes.
    model.bank.codes.add_(5.0)
    g = torch.Generator().manual_seed(1)
    moved = model(train.images[index], index=index, generator=g, update_bank=False)
    assert not torch.allclose(moved.kl_nats, terms.kl_nats.detach())


def test_held_out_data_leaves_the_bank_alone(tiny_overrides):
    model, train = _model(tiny_overrides)
    before = model.bank.codes.clone()
    terms = model(train.images[:8], index=None, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model.bank.codes, before)
    assert terms.neighbours.shape == (8,)


def test_baselines_share_encoder_and_decoder_shapes(tiny_overrides):
    acn, _ = _model(tiny_overrides)
    vae, train = _model(tiny_overrides, "model.prior=normal")
    pix, _ = _model(tiny_overrides, "model.prior=none")
    shapes = lambda m, part: {k: v.shape for k, v in getattr(m, part).state_dict().items()}  # noqa: E731
    assert shapes(acn, "encoder") == shapes(vae, "encoder")
    assert shapes(acn, "decoder") == shapes(vae, "decoder")
    assert vae.bank is None and pix.encoder is None and pix.bank is None
    terms = vae(train.images[:4], generator=torch.Generator().manual_seed(0))
    c = vae.encode(train.images[:4])
    assert torch.allclose(terms.kl_nats, 0.5 * c.pow(2).sum(1))  # exact KL to N(0, I)
    pixel_terms = pix(train.images[:4])
    assert torch.equal(pixel_terms.kl_nats, torch.zeros(4))
