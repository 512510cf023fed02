"""Sampling protocols (notes, section 5), as pure functions of a model and explicit generators.

Every function batches all of its chains or samples together, because sampling a PixelCNN is
sequential over pixels: one pass per pixel serves the whole batch, so B images cost about as
much as one. ``progress`` callables receive increments; every batched decode adds
:func:`pixel_passes` in all.

- :func:`daydream`: the paper's protocol exactly: x -> c(x) -> *sample* z ~ p(z|c) -> *sample*
  x' ~ r(x|z) -> c(x') -> ... Never the prior's mean, never a shortcut through the image's own
  code in place of the sampled z.
- :func:`reconstruct`: several decoder samples from z ~ q(z|x) for each image.
- :func:`prior_samples`: decoder samples from z ~ p(z|c_hat), c_hat the code of a real image.
- :func:`unconditional`: samples with no starting image: z from the unconditional density (or
  the VAE's prior), or nothing at all for the decoder-only model.
- :func:`nearest_training`: the K nearest training examples to each image, by code.
"""

from __future__ import annotations

import torch

from acn.bank.codebank import CodeBank
from acn.errors import ConfigError
from acn.model import ACN
from acn.nn.density import GaussianMixtureDensity


def _need_latent(model: ACN, what: str) -> None:
    if model.kind == "pixelcnn":
        raise ConfigError(f"{what} needs a model with latent codes (this one has model.prior=none)")


def _need_neighbour_prior(model: ACN, what: str) -> None:
    _need_latent(model, what)
    if model.kind != "acn":
        raise ConfigError(
            f"{what} needs the ACN's neighbour-conditioned prior (model.prior=acn); "
            f"this model's prior is unconditional"
        )


def pixel_passes(model: ACN) -> int:
    """Progress units of one batched decode: H * W sequential passes for a PixelCNN."""
    _, h, w = model.info.image_shape
    return h * w


def _decode(model: ACN, z: torch.Tensor | None, generator, num=None, progress=None):
    """x ~ r(x|z) for a batch; ``progress`` gets increments summing to :func:`pixel_passes`."""
    done = 0

    def tick(pixels: int) -> None:
        nonlocal done
        progress(pixels - done)
        done = pixels

    x = model.decoder.sample(z, generator, num=num, progress=tick if progress else None)
    if progress is not None and done < pixel_passes(model):  # one-shot decoders
        progress(pixel_passes(model) - done)
    return x


def _per_image(model: ACN, images, num: int, draw_z, generator, progress) -> torch.Tensor:
    """``num`` decoder samples per image, z = draw_z(codes), all in one batch: (N, num, ...)."""
    c = model.encode(images).repeat_interleave(num, dim=0)  # (N * num, D)
    x = _decode(model, draw_z(c), generator, progress=progress)
    return x.unflatten(0, (len(images), num))


@torch.no_grad()
def daydream(
    model: ACN,
    images: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    progress=None,
) -> torch.Tensor:
    """Daydream chains from real images.

    Args:
        model: an ACN (neighbour prior).
        images: (N, C, H, W) integer levels, the chains' starting points.
        steps: new images per chain.
        generator: every random draw comes from it (on the model's device).
        progress: optional callable given progress increments (``steps`` decodes in all).

    Returns:
        (N, steps + 1, C, H, W): each chain, its real image first.
    """
    _need_neighbour_prior(model, "daydreaming")
    chain = [images]
    x = images
    for _ in range(steps):
        c = model.encode(x)  # the code of the current image
        z = model.prior.sample(c, generator)  # z ~ p(z | c): sampled, not the mean
        x = _decode(model, z, generator, progress=progress)  # x ~ r(x | z): sampled
        chain.append(x)
    return torch.stack(chain, dim=1)


@torch.no_grad()
def reconstruct(
    model: ACN,
    images: torch.Tensor,
    num: int,
    generator: torch.Generator | None = None,
    progress=None,
) -> torch.Tensor:
    """``num`` decoder samples per image from z ~ q(z|x) = N(c(x), I): (N, num, C, H, W)."""
    _need_latent(model, "reconstruction")

    def posterior(c):  # z ~ N(c, I)
        return c + torch.randn(c.shape, generator=generator, device=c.device, dtype=c.dtype)

    return _per_image(model, images, num, posterior, generator, progress)


@torch.no_grad()
def prior_samples(
    model: ACN,
    images: torch.Tensor,
    num: int,
    generator: torch.Generator | None = None,
    progress=None,
) -> torch.Tensor:
    """``num`` decoder samples per image from z ~ p(z | c(image)): (N, num, C, H, W)."""
    _need_neighbour_prior(model, "prior sampling")
    return _per_image(
        model, images, num, lambda c: model.prior.sample(c, generator), generator, progress
    )


@torch.no_grad()
def unconditional(
    model: ACN,
    num: int,
    density: GaussianMixtureDensity | None = None,
    generator: torch.Generator | None = None,
    progress=None,
) -> torch.Tensor:
    """``num`` samples with no starting image: (num, C, H, W).

    The ACN draws z from ``density`` (the unconditional density over codes, required); a VAE
    from its own prior; the decoder-only PixelCNN needs no z.
    """
    if model.kind == "pixelcnn":
        return _decode(model, None, generator, num=num, progress=progress)
    if model.kind == "acn":
        if density is None:
            raise ValueError("an ACN samples unconditionally through a fitted density over codes")
        z = density.to(_device(model)).sample(num, generator).to(_dtype(model))
    else:
        z = model.prior.sample(None, generator, num=num)
    return _decode(model, z, generator, progress=progress)


@torch.no_grad()
def nearest_training(
    codes: torch.Tensor,
    train_codes: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest training codes to each code: ``(distances, indices)``, each (N, k).

    Args:
        codes: (N, D) query codes.
        train_codes: (M, D) codes of the training split.
        k: neighbours per query.
        exclude: (N,) training rows to leave out (the queries' own rows when they are training
            images), or None.
    """
    bank = CodeBank(len(train_codes), train_codes.shape[1]).to(train_codes.device)
    bank.update(torch.arange(len(train_codes), device=train_codes.device), train_codes)
    return bank.knn(codes.to(train_codes.device), k, exclude=exclude)


def _device(model: ACN) -> torch.device:
    return next(model.parameters()).device


def _dtype(model: ACN) -> torch.dtype:
    return next(model.parameters()).dtype
