"""Priors over the latent z, all behind one interface.

- :class:`NeighbourPrior`: the paper's prior network p(z | c_hat), an MLP conditioned on a
  neighbour's code, emitting an independent M-component Gaussian mixture per latent dimension
  (M = 1: one Gaussian per dimension).
- :class:`LinearGaussianPrior` and :class:`ShiftedGaussianPrior`: the ablation's simpler
  conditional priors, N(A c_hat + b, diag s^2) and N(c_hat, diag s^2). They answer the question
  the paper left open: does the prior need a network at all?
- :class:`StandardNormalPrior`: N(0, I), the plain VAE.
- :class:`MixturePrior`: a learnable unconditional mixture of the same family (no input), for the
  unordered compression number and for sampling with no starting image.

Every prior gives ``kl(c, z, c_hat)``: KL(N(c, I) || p(z | c_hat)) per example in nats, exact
where a closed form exists and otherwise the unbiased one-sample estimate using the decoder's z.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from acn.nn import distributions as dist


class Prior(nn.Module):
    """Interface. ``conditional`` priors need a neighbour code ``c_hat`` (B, D)."""

    conditional: bool = False

    def log_prob(self, z: torch.Tensor, c_hat: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z | c_hat), (B, D) -> (B,) nats."""
        raise NotImplementedError

    def kl(
        self, c: torch.Tensor, z: torch.Tensor, c_hat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """KL(N(c, I) || p(. | c_hat)) per example, (B,) nats.

        z ~ N(c, I) is the decoder's sample, used by the Monte Carlo estimate where needed.
        """
        raise NotImplementedError

    def sample(
        self,
        c_hat: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        num: int | None = None,
    ) -> torch.Tensor:
        """Draw z ~ p(z | c_hat): (B, D) for a conditional prior, else (num, D)."""
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I). The KL is exact: ||c||^2 / 2."""

    def __init__(self, code_dim: int) -> None:
        super().__init__()
        self.code_dim = code_dim
        # Gives the module a device, so that sample() can place its noise without inputs.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z, c_hat=None):
        return dist.gaussian_log_prob(z, torch.zeros_like(z), torch.ones_like(z)).sum(dim=-1)

    def kl(self, c, z, c_hat=None):
        return dist.kl_unit_gaussian_standard_normal(c)

    def sample(self, c_hat=None, generator=None, num=None):
        n = num if num is not None else (c_hat.shape[0] if c_hat is not None else 1)
        return torch.randn(n, self.code_dim, generator=generator, device=self._anchor.device)


class _MixtureFamily(Prior):
    """Shared parts of the two mixture priors: raw outputs -> (logits, mu, sigma)."""

    def __init__(self, code_dim: int, components: int, min_scale: float) -> None:
        super().__init__()
        self.code_dim, self.components, self.min_scale = code_dim, components, min_scale

    def mixture_params(self, c_hat: torch.Tensor | None, batch: int):
        """(logits, mu, sigma), each (B, D, M)."""
        raise NotImplementedError

    def _split(self, raw: torch.Tensor):
        logits, mu, pre_sigma = raw.unflatten(-1, (self.code_dim, self.components, 3)).unbind(-1)
        # softplus keeps sigma positive without exp's overflow; the floor keeps the density
        # bounded so that one code cannot earn unbounded negative KL.
        sigma = F.softplus(pre_sigma) + self.min_scale
        return logits, mu, sigma

    def log_prob(self, z, c_hat=None):
        return dist.mixture_log_prob(z, *self.mixture_params(c_hat, z.shape[0]))

    def kl(self, c, z, c_hat=None):
        logits, mu, sigma = self.mixture_params(c_hat, c.shape[0])
        if self.components == 1:
            # One Gaussian per dimension: the KL has a closed form, so use it (no MC noise).
            return dist.kl_unit_gaussian_gaussian(c, mu[..., 0], sigma[..., 0])
        return dist.kl_unit_gaussian_mixture_mc(z, logits, mu, sigma)

    def sample(self, c_hat=None, generator=None, num=None):
        batch = num if num is not None else (c_hat.shape[0] if c_hat is not None else 1)
        return dist.mixture_sample(*self.mixture_params(c_hat, batch), generator=generator)


class NeighbourPrior(_MixtureFamily):
    """The paper's prior network p(z | c_hat) (section 2).

    An MLP of ``layers`` tanh layers of width ``hidden``; the input c_hat is fed to every hidden
    layer and every hidden layer feeds the output (skip connections), which gives, for each of
    the D latent dimensions, M (logit, mean, scale) triples.

    Args:
        code_dim: D.
        hidden: width of each hidden layer (paper: 512).
        layers: number of hidden layers (paper: 3).
        components: M.
        min_scale: floor on each component's scale.
    """

    conditional = True

    def __init__(
        self,
        code_dim: int,
        hidden: int = 512,
        layers: int = 3,
        components: int = 3,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__(code_dim, components, min_scale)
        self.hidden = nn.ModuleList(
            nn.Linear(code_dim + (hidden if i else 0), hidden) for i in range(layers)
        )
        self.out = nn.Linear(code_dim + layers * hidden, code_dim * components * 3)

    def mixture_params(self, c_hat, batch):
        if c_hat is None:
            raise ValueError("the neighbour prior needs a neighbour code c_hat")
        h = None
        outputs = [c_hat]  # input skip to the output layer
        for layer in self.hidden:
            inputs = c_hat if h is None else torch.cat([c_hat, h], dim=-1)  # input skip
            h = torch.tanh(layer(inputs))  # (B, hidden)
            outputs.append(h)  # hidden-to-output skip
        return self._split(self.out(torch.cat(outputs, dim=-1)))  # 3 x (B, D, M)


class _GaussianOnNeighbour(_MixtureFamily):
    """One Gaussian per dimension around a function of c_hat, with scales learned per dimension
    and not conditioned on c_hat. Written as a one-component mixture so that sampling, the
    codec's bin tables and export read it like the paper's prior; the KL is exact."""

    conditional = True

    def __init__(self, code_dim: int, min_scale: float = 1e-3) -> None:
        super().__init__(code_dim, 1, min_scale)
        # softplus(0.5413) = 1: unit scales at the start, like the posterior's.
        self.pre_scale = nn.Parameter(torch.full((code_dim,), 0.5413))

    def mean(self, c_hat: torch.Tensor) -> torch.Tensor:
        """The prior's mean given the neighbour's code, (B, D) -> (B, D)."""
        raise NotImplementedError

    def mixture_params(self, c_hat, batch):
        if c_hat is None:
            raise ValueError(f"the {type(self).__name__} needs a neighbour code c_hat")
        mu = self.mean(c_hat).unsqueeze(-1)  # (B, D, 1)
        sigma = (F.softplus(self.pre_scale) + self.min_scale).expand_as(c_hat).unsqueeze(-1)
        return torch.zeros_like(mu), mu, sigma


class LinearGaussianPrior(_GaussianOnNeighbour):
    """p(z | c_hat) = N(A c_hat + b, diag s^2): A (D x D), b and s learned.

    A starts at the identity, so at initialisation it is the shifted Gaussian below; what it
    learns beyond that is what a linear map of the neighbour's code is worth.
    """

    def __init__(self, code_dim: int, min_scale: float = 1e-3) -> None:
        super().__init__(code_dim, min_scale)
        self.linear = nn.Linear(code_dim, code_dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(code_dim))
            self.linear.bias.zero_()

    def mean(self, c_hat):
        return self.linear(c_hat)


class ShiftedGaussianPrior(_GaussianOnNeighbour):
    """p(z | c_hat) = N(c_hat, diag s^2): the neighbour's code itself is the mean, s learned per
    dimension. No parameter touches c_hat: the simplest conditional prior there is."""

    def mean(self, c_hat):
        return c_hat


class MixturePrior(_MixtureFamily):
    """A learnable unconditional mixture: the same per-dimension family with no input.

    The means start spread over [-2, 2] so that the components do not begin identical.
    """

    def __init__(self, code_dim: int, components: int = 3, min_scale: float = 1e-3) -> None:
        super().__init__(code_dim, components, min_scale)
        spread = torch.linspace(-2.0, 2.0, components) if components > 1 else torch.zeros(1)
        raw = torch.zeros(code_dim, components, 3)
        raw[..., 1] = spread
        raw[..., 2] = 0.5413  # softplus(0.5413) = 1: unit scales
        self.raw = nn.Parameter(raw.flatten())

    def mixture_params(self, c_hat, batch):
        logits, mu, sigma = self._split(self.raw)  # (D, M) each
        shape = (batch, self.code_dim, self.components)
        return logits.expand(shape), mu.expand(shape), sigma.expand(shape)
