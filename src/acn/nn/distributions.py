"""Pure log-densities, KL terms and samplers. No parameters, no state, no I/O.

All quantities are in nats. Shape letters: B batch, D latent dimension, M mixture components.
The posterior everywhere is q(z|x) = N(c, I) (paper, section 2): unit variance, so its entropy
is the constant (D/2) log(2 pi e) and only the code c (its mean) is learned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def unit_gaussian_entropy(dim: int) -> float:
    """Entropy in nats of N(c, I) in ``dim`` dimensions: (D/2) log(2 pi e)."""
    return 0.5 * dim * (LOG_2PI + 1.0)


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mu, sigma^2) in nats (broadcasting)."""
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI


def mixture_log_prob(
    z: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """log p(z) under an independent 1-D Gaussian mixture per dimension, summed over D.

    p(z) = prod_d sum_m pi[d, m] N(z_d; mu[d, m], sigma[d, m]^2), pi = softmax(logits, dim=-1).

    Args:
        z: (B, D) points.
        logits, mu, sigma: (B, D, M) or (D, M) mixture parameters; sigma > 0.

    Returns:
        (B,) log-density in nats.
    """
    log_pi = F.log_softmax(logits, dim=-1)  # (B, D, M)
    per_component = gaussian_log_prob(z.unsqueeze(-1), mu, sigma)  # (B, D, M)
    return torch.logsumexp(log_pi + per_component, dim=-1).sum(dim=-1)  # (B,)


def mixture_sample(
    logits: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one z per row from the per-dimension mixture.

    Args:
        logits, mu, sigma: (B, D, M).
        generator: source of randomness (explicit, for reproducible sampling).

    Returns:
        (B, D) samples.
    """
    B, D, M = logits.shape
    probs = F.softmax(logits, dim=-1).reshape(B * D, M)
    component = torch.multinomial(probs, 1, generator=generator).reshape(B, D, 1)  # (B, D, 1)
    mu_m = mu.gather(-1, component).squeeze(-1)  # (B, D)
    sigma_m = sigma.gather(-1, component).squeeze(-1)  # (B, D)
    eps = torch.randn(mu_m.shape, generator=generator, device=mu_m.device, dtype=mu_m.dtype)
    return mu_m + sigma_m * eps


def kl_unit_gaussian_standard_normal(c: torch.Tensor) -> torch.Tensor:
    """Exact KL(N(c, I) || N(0, I)) = ||c||^2 / 2, summed over D. (B, D) -> (B,)."""
    return 0.5 * c.pow(2).sum(dim=-1)


def kl_unit_gaussian_gaussian(
    c: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Exact KL(N(c, I) || N(mu, diag(sigma^2))), summed over D. (B, D) each -> (B,)."""
    per_dim = torch.log(sigma) + (1.0 + (c - mu) ** 2) / (2 * sigma**2) - 0.5
    return per_dim.sum(dim=-1)


def kl_unit_gaussian_mixture_mc(
    z: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """One-sample Monte Carlo estimate of KL(N(c, I) || mixture), with z ~ N(c, I).

    KL = E_q[log q(z)] - E_q[log p(z)] and E_q[log q(z)] = -(D/2) log(2 pi e) exactly, so the only
    noisy part is -log p(z). Using the same z as the decoder keeps the estimate unbiased (notes,
    section 2) and costs no extra samples.

    Returns:
        (B,) estimates in nats (individually they may be negative; their mean is the KL).
    """
    return -unit_gaussian_entropy(z.shape[-1]) - mixture_log_prob(z, logits, mu, sigma)
