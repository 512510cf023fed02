"""The unconditional density over latents, fitted to the training codes after training.

It replaces the ACN's conditional prior for the *unordered* compression number (notes, section
4), codes the first element of the greedy tour, and allows sampling with no starting image.

Family (the paper is silent): a Gaussian mixture with full covariances, fitted by EM to the
training codes c (the posterior means) and then convolved with the posterior's unit noise:

    p(z) = sum_k w_k N(z; m_k, S_k + I).

If the codes were exactly distributed as the fitted mixture, p would be exactly the aggregate
posterior q(z) = E_x N(z; c(x), I), the best unconditional prior there is for the KL term. It is
a proper density, and its KL from N(c, I) is estimated the same way as the neighbour prior's:
-(D/2) log(2 pi e) - log p(z), with the z the decoder uses (exact, like the neighbour prior's,
when there is a single component). The number of components is chosen on the validation codes
by that same estimated KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from acn.nn.distributions import LOG_2PI, unit_gaussian_entropy

FAMILY = "Gaussian mixture, full covariance, fitted by EM to the training codes, plus I"
DEFAULT_COMPONENTS = (1, 2, 4, 8, 16, 32)


@dataclass
class GaussianMixtureDensity:
    """p(z) = sum_k weights[k] N(z; means[k], covariances[k]), all float64.

    Attributes:
        weights: (K,) mixing proportions, summing to one.
        means: (K, D).
        covariances: (K, D, D) symmetric positive definite.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    def __post_init__(self) -> None:
        self._chol = torch.linalg.cholesky(self.covariances)  # (K, D, D)
        self._log_norm = (
            torch.log(self.weights)
            - torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(dim=-1)
            - 0.5 * self.dim * LOG_2PI
        )  # (K,) log w_k - log |S_k|^(1/2) - (D/2) log 2 pi

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def components(self) -> int:
        return self.means.shape[0]

    def to(self, device: torch.device | str) -> GaussianMixtureDensity:
        return GaussianMixtureDensity(
            self.weights.to(device), self.means.to(device), self.covariances.to(device)
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats, (B, D) -> (B,) in z's dtype (computed in float64)."""
        diff = z.to(self.means)[None] - self.means[:, None, :]  # (K, B, D)
        white = torch.linalg.solve_triangular(self._chol, diff.transpose(1, 2), upper=False)
        per_component = self._log_norm[:, None] - 0.5 * white.pow(2).sum(dim=1)  # (K, B)
        return torch.logsumexp(per_component, dim=0).to(z.dtype)

    def kl(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """KL(N(c, I) || p) per row, (B,) nats.

        Exact for one component; otherwise the unbiased one-sample estimate with z ~ N(c, I).
        The neighbour prior follows the same rule (exact with one component per dimension).
        """
        if self.components == 1:
            return self._kl_single(c)
        return -unit_gaussian_entropy(c.shape[-1]) - self.log_prob(z)

    def _kl_single(self, c: torch.Tensor) -> torch.Tensor:
        """KL(N(c, I) || N(m, S)) = (tr S^-1 + (m - c)' S^-1 (m - c) - D + log det S) / 2."""
        chol = self._chol[0]  # (D, D), S = L L'
        inv_chol = torch.linalg.solve_triangular(
            chol, torch.eye(self.dim, dtype=chol.dtype, device=chol.device), upper=False
        )
        trace = inv_chol.pow(2).sum()  # tr S^-1 = ||L^-1||_F^2
        diff = (self.means[0] - c.to(self.means)).T  # (D, B)
        mahalanobis = torch.linalg.solve_triangular(chol, diff, upper=False).pow(2).sum(dim=0)
        log_det = 2 * torch.log(torch.diagonal(chol)).sum()
        return (0.5 * (trace + mahalanobis - self.dim + log_det)).to(c.dtype)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``num`` latents z ~ p, (num, D) float32."""
        component = torch.multinomial(self.weights, num, replacement=True, generator=generator)
        eps = torch.randn(
            num, self.dim, 1, generator=generator, device=self.means.device, dtype=self.means.dtype
        )
        z = self.means[component] + (self._chol[component] @ eps).squeeze(-1)
        return z.float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}


def fit_gaussian_mixture(
    codes: np.ndarray, components: int, seed: int = 0
) -> GaussianMixtureDensity:
    """EM fit of a full-covariance mixture to ``codes`` (N, D), then add I to each covariance."""
    from sklearn.mixture import GaussianMixture

    if components > len(codes):
        raise ValueError(f"cannot fit {components} components to {len(codes)} codes")
    gm = GaussianMixture(
        n_components=components,
        covariance_type="full",
        reg_covar=1e-6,
        max_iter=500,
        random_state=seed,
    ).fit(np.asarray(codes, dtype=np.float64))
    dim = codes.shape[1]
    covariances = torch.from_numpy(gm.covariances_) + torch.eye(dim, dtype=torch.float64)
    return GaussianMixtureDensity(
        torch.from_numpy(gm.weights_).clone(), torch.from_numpy(gm.means_).clone(), covariances
    )


def mean_kl(density: GaussianMixtureDensity, codes: torch.Tensor, samples: int, seed: int) -> float:
    """Mean over ``codes`` of the one-sample KL estimate, ``samples`` z per code.

    Always the Monte Carlo estimate (even for one component), and the same z for a given seed:
    candidates compared with it see identical noise, so their differences are not noise.
    """
    generator = torch.Generator().manual_seed(seed)
    c = codes.double().repeat(samples, 1)
    z = c + torch.randn(c.shape, generator=generator, dtype=c.dtype)
    return float((-unit_gaussian_entropy(c.shape[-1]) - density.log_prob(z)).mean())


def fit_code_density(
    train_codes: torch.Tensor,
    val_codes: torch.Tensor | None,
    components: tuple[int, ...] = DEFAULT_COMPONENTS,
    seed: int = 0,
    max_fit: int = 200_000,
    val_samples: int = 8,
) -> tuple[GaussianMixtureDensity, dict]:
    """Fit the unconditional density, choosing the number of components on validation codes.

    Args:
        train_codes: (N, D) posterior means of the training split.
        val_codes: (V, D) posterior means of the validation split, or None to use the largest
            candidate that fits.
        components: candidate numbers of components (those above N are skipped; if none is
            left, one component). Ties go to the fewer components.
        seed: EM initialisation, subsampling and the selection's z noise.
        max_fit: at most this many training codes (a fixed random subset) enter EM.
        val_samples: z samples per validation code for the selection.

    Returns:
        ``(density, description)``: the description names the family and the selection.
    """
    codes = train_codes.detach().cpu().double().numpy()
    if len(codes) > max_fit:
        keep = np.random.default_rng(seed).choice(len(codes), max_fit, replace=False)
        codes = codes[np.sort(keep)]
    candidates = sorted({m for m in components if m <= len(codes)}) or [1]
    if val_codes is None:
        candidates = candidates[-1:]  # the largest that fits
    best, best_kl, scores = None, math.inf, []
    for m in candidates:
        density = fit_gaussian_mixture(codes, m, seed)
        score = (
            mean_kl(density, val_codes.cpu(), val_samples, seed) if val_codes is not None else None
        )
        scores.append({"components": m, "val_kl": score})
        if score is None or score < best_kl:
            best, best_kl = density, (score if score is not None else math.inf)
    description = {
        "family": FAMILY,
        "components": best.components,
        "fitted_on": f"{len(codes)} training codes (posterior means)",
        "selected_by": "mean estimated KL of the validation codes"
        if val_codes is not None
        else "no validation split: largest candidate",
        "selection": scores,
    }
    return best, description
