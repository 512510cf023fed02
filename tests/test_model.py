"""The specification of Algorithm 1, a test for each line of ``ACN.forward``:

c = c(x)                          the posterior mean, q(z|x) = N(c, I)
c_hat ~ U(KNN(c))                 the k nearest bank codes, x's own row excluded, no gradient
C[x] <- c                         written after the search
z = c + eps, eps ~ N(0, I)        one z, used by the KL and the reconstruction alike
L = KL(q(z|x) || p(z|c_hat)) - log r(x|z)
"""

from __future__ import annotations

import pytest
import torch

from acn.config import load_config
from acn.data.datasets import load_splits
from acn.model import ACN


def _model(tiny, *extra):
    config = load_config("digits-acn", [*tiny, *extra])
    splits, info = load_splits(config.data)
    torch.manual_seed(0)  # the networks' initialisation
    model = ACN(config, info, len(splits["train"]), generator=torch.Generator().manual_seed(0))
    return model, splits["train"]


class _Spy:
    """Records the arguments of the prior's KL and the decoder's log-likelihood."""

    def __init__(self, model, monkeypatch) -> None:
        self.kl_args, self.recon_z = [], []
        kl, log_prob = model.prior.kl, model.decoder.log_prob

        def spy_kl(c, z, c_hat=None):
            self.kl_args.append((c.detach().clone(), z.detach().clone(), c_hat))
            return kl(c, z, c_hat)

        def spy_log_prob(x, z):
            self.recon_z.append(z.detach().clone())
            return log_prob(x, z)

        monkeypatch.setattr(model.prior, "kl", spy_kl)
        monkeypatch.setattr(model.decoder, "log_prob", spy_log_prob)


def test_c_is_the_posterior_mean_and_z_is_c_plus_unit_noise(tiny_overrides, monkeypatch):
    model, train = _model(tiny_overrides)
    spy = _Spy(model, monkeypatch)
    x, index = train.images[:8], torch.arange(8)
    g = torch.Generator().manual_seed(3)
    terms = model(x, index=index, generator=g, update_bank=False)
    assert torch.equal(terms.codes, model.encode(x))
    c, z, _ = spy.kl_args[0]
    # Replay the generator: the neighbour draw, then eps ~ N(0, I) for the batch.
    replay = torch.Generator().manual_seed(3)
    model.bank.draw(c, model.k, index, replay)
    eps = torch.randn(c.shape, generator=replay)
    assert torch.equal(z, c + eps)


def test_the_same_z_enters_the_kl_and_the_reconstruction(tiny_overrides, monkeypatch):
    model, train = _model(tiny_overrides)
    spy = _Spy(model, monkeypatch)
    model(train.images[:8], index=torch.arange(8), generator=torch.Generator().manual_seed(4))
    assert len(spy.kl_args) == len(spy.recon_z) == 1
    assert torch.equal(spy.kl_args[0][1], spy.recon_z[0])


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


def test_c_hat_is_drawn_uniformly_from_the_k_nearest(tiny_overrides):
    model, train = _model(tiny_overrides, "codebank.k=3")
    x, index = train.images[:1].expand(600, -1, -1, -1), torch.zeros(600, dtype=torch.long)
    g = torch.Generator().manual_seed(5)
    terms = model(x, index=index, generator=g)  # one example, drawn 600 times
    nearest = model.bank.knn(terms.codes[:1].detach(), 3, exclude=index[:1])[1][0]
    counts = torch.stack([(terms.neighbours == row).sum() for row in nearest])
    assert counts.sum() == 600  # only the three nearest are ever drawn
    assert counts.min() > 150 and counts.max() < 250  # each about 200 of 600


def test_the_bank_is_written_after_the_search(tiny_overrides, monkeypatch):
    """The neighbours (and their codes) come from the bank as it was before this batch: a batch
    of twin images must not find each other's fresh codes."""
    model, train = _model(tiny_overrides, "codebank.k=1")
    spy = _Spy(model, monkeypatch)
    x = train.images[:1].expand(2, -1, -1, -1)  # rows 0 and 1 hold the same image
    index = torch.tensor([0, 1])
    before = model.bank.codes.clone()
    terms = model(x, index=index, generator=torch.Generator().manual_seed(6), update_bank=True)
    c = terms.codes.detach()
    expected = model.bank.knn(c, 1, exclude=index)[1][:, 0]  # the bank now holds the twins
    assert torch.equal(model.bank.codes[index], c)
    model.bank.update(torch.arange(len(before)), before)  # the bank before the batch
    stale = model.bank.knn(c, 1, exclude=index)[1][:, 0]
    assert torch.equal(terms.neighbours, stale)
    assert not torch.equal(stale, expected)  # a search after the write finds the twin
    assert torch.equal(spy.kl_args[0][2], before[stale])  # c_hat: the stale codes
    assert not torch.equal(spy.kl_args[0][2], c.flip(0))  # not the twin's fresh code


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


def test_the_loss_is_the_mean_of_kl_plus_reconstruction(tiny_overrides, monkeypatch):
    model, train = _model(tiny_overrides)
    spy = _Spy(model, monkeypatch)
    x = train.images[:8]
    terms = model(x, index=torch.arange(8), generator=torch.Generator().manual_seed(7))
    c, z, c_hat = spy.kl_args[0]
    with torch.no_grad():
        kl = model.prior.__class__.kl(model.prior, c, z, c_hat)
        recon = -model.decoder.__class__.log_prob(model.decoder, x, z)
    torch.testing.assert_close(terms.kl_nats.detach(), kl)
    torch.testing.assert_close(terms.recon_nats.detach(), recon)
    torch.testing.assert_close(terms.loss.detach(), (kl + recon).mean())


def test_held_out_data_leaves_the_bank_alone(tiny_overrides):
    model, train = _model(tiny_overrides)
    before = model.bank.codes.clone()
    terms = model(train.images[:8], index=None, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model.bank.codes, before)
    assert terms.neighbours.shape == (8,)
    with pytest.raises(ValueError, match="needs the examples' indices"):
        model(train.images[:8], index=None, update_bank=True)


def test_the_same_generator_gives_the_same_step(tiny_overrides):
    a, train = _model(tiny_overrides)
    b, _ = _model(tiny_overrides)
    x, index = train.images[:8], torch.arange(8)
    ta = a(x, index=index, generator=torch.Generator().manual_seed(8), update_bank=True)
    tb = b(x, index=index, generator=torch.Generator().manual_seed(8), update_bank=True)
    assert torch.equal(ta.loss, tb.loss) and torch.equal(ta.neighbours, tb.neighbours)
    assert torch.equal(a.bank.codes, b.bank.codes)


def test_baselines_share_encoder_and_decoder_shapes(tiny_overrides):
    acn, _ = _model(tiny_overrides)
    vae, train = _model(tiny_overrides, "model.prior=normal")
    pix, _ = _model(tiny_overrides, "model.prior=none")
    assert (acn.kind, vae.kind, pix.kind) == ("acn", "vae", "pixelcnn")
    shapes = lambda m, part: {k: v.shape for k, v in getattr(m, part).state_dict().items()}  # noqa: E731
    assert shapes(acn, "encoder") == shapes(vae, "encoder")
    assert shapes(acn, "decoder") == shapes(vae, "decoder")
    assert vae.bank is None and pix.encoder is None and pix.bank is None
    terms = vae(train.images[:4], generator=torch.Generator().manual_seed(0))
    c = vae.encode(train.images[:4])
    assert torch.allclose(terms.kl_nats, 0.5 * c.pow(2).sum(1))  # exact KL to N(0, I)
    pixel_terms = pix(train.images[:4])
    assert torch.equal(pixel_terms.kl_nats, torch.zeros(4))
