"""The ACN: encoder, prior, decoder and code bank composed, and the loss in one place.

The same class covers the baselines, so that they differ from the ACN in the prior alone:
``model.prior=normal`` is the plain VAE, ``mixture`` a VAE with a learnable unconditional mixture
prior, and ``none`` drops the latent altogether (the decoder-only PixelCNN).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from acn.bank_access import LOCAL
from acn.codebank import CodeBank
from acn.config import Config
from acn.data import DataInfo
from acn.decoder import Decoder, DeconvDecoder
from acn.encoder import Encoder
from acn.likelihoods import make_likelihood, to_network_input
from acn.pixelcnn import GatedPixelCNN
from acn.prior import make_prior


@dataclass
class LossTerms:
    """One batch's loss and its parts, per example in nats.

    Attributes:
        loss: scalar, mean over the batch of kl_nats + recon_nats (what is minimised).
        kl_nats: (B,) KL(q(z|x) || p(z|c_hat)) (an unbiased estimate for mixture priors).
        recon_nats: (B,) -log r(x|z) at the sampled z.
        codes: (B, D) the codes c(x), or None without a latent.
        neighbours: (B,) bank rows used as c_hat, or None without a neighbour prior.
    """

    loss: torch.Tensor
    kl_nats: torch.Tensor
    recon_nats: torch.Tensor
    codes: torch.Tensor | None = None
    neighbours: torch.Tensor | None = None


class ACN(nn.Module):
    """Associative Compression Network (or one of its baselines, by ``config.model.prior``).

    Args:
        config: the run's config (model and code bank sections are read).
        info: the data's shape and number of levels.
        num_codes: N, rows in the code bank (the training set's size).
        generator: source of the code bank's N(0, I) initial codes.
    """

    def __init__(
        self,
        config: Config,
        info: DataInfo,
        num_codes: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        m, bank = config.model, config.codebank
        C, H, W = info.image_shape
        self.info, self.num_codes = info, num_codes
        self.k, self.unique = bank.k, bank.unique
        self.code_dim = m.code_dim if m.prior != "none" else 0
        likelihood = make_likelihood(m.likelihood, info.levels, m.likelihood_components)
        stages = len(m.encoder_channels)
        self.encoder = Encoder(C, (H, W), m.encoder_channels, m.code_dim) if self.code_dim else None
        self.prior = make_prior(
            m.prior,
            m.code_dim,
            m.prior_hidden,
            m.prior_layers,
            m.prior_components,
            m.prior_min_scale,
        )
        self.decoder: Decoder
        if m.decoder == "pixelcnn":
            self.decoder = GatedPixelCNN(
                likelihood,
                info.image_shape,
                self.code_dim,
                m.decoder_channels,
                m.pixelcnn_layers,
                m.pixelcnn_kernel,
                m.latent_map_channels,
                stages,
            )
        else:
            self.decoder = DeconvDecoder(
                likelihood, info.image_shape, m.code_dim, m.decoder_channels, stages
            )
        # How a batch reaches the bank: one process by default; training on several processes
        # installs a replicated or sharded strategy. A plain attribute, not part of the state.
        self.access = LOCAL
        self.bank = None
        if self.prior is not None and self.prior.conditional:
            if bank.k >= num_codes:
                raise ValueError(
                    f"codebank.k={bank.k} must be smaller than the bank ({num_codes} codes)"
                )
            self.bank = CodeBank(
                num_codes,
                m.code_dim,
                bank.chunk_size,
                generator,
                backend=bank.backend,
                precision=bank.search_precision,
            )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
    ) -> ACN:
        """Load a model folder written by ``acn export`` (config JSON + safetensors, no pickle),
        or, given a Hugging Face Hub repo id ``owner/name`` that is not a local path, the same
        two files from the Hub (needs ``pip install 'acn[hub]'``; ``revision``, ``cache_dir``
        and ``local_files_only`` are passed to the Hub's download).

        Returns:
            The model in eval mode on ``device``.
        """
        from acn.export import load_pretrained
        from acn.hub import download_from_hub, is_repo_id

        if is_repo_id(name_or_path):
            name_or_path = download_from_hub(
                str(name_or_path),
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
        return load_pretrained(name_or_path, device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes c(x), (B, C, H, W) integer levels -> (B, D): the posterior means."""
        if self.encoder is None:
            raise ValueError("this model has no latent (model.prior=none)")
        return self.encoder(to_network_input(x, self.info.levels))

    def forward(
        self,
        x: torch.Tensor,
        index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        update_bank: bool = False,
        split: bool | None = None,
    ) -> LossTerms:
        """The ACN loss on one batch: Algorithm 1 of the paper, line by line.

        Args:
            x: (B, C, H, W) integer levels.
            index: (B,) the examples' rows in the code bank (training data), or None for data
                outside the bank (validation, test), which then needs no exclusion.
            generator: source of z's noise and of the neighbour draw.
            update_bank: write the fresh codes into the bank (training only).
            split: the batch is this rank's slice of a global batch (see
                :mod:`acn.bank_access`); defaults to ``update_bank``. Irrelevant in one process.
        """
        split = update_bank if split is None else split
        if self.encoder is None:  # decoder-only model: no latent, nothing to pay in KL
            recon = -self.decoder.log_prob(x, None)  # (B,)
            return LossTerms(recon.mean(), torch.zeros_like(recon), recon)
        # c(x), the mean of q(z|x) = N(c, I), in float32 even under autocast: the bank, the
        # noise and the KL all want full precision.  (B, D)
        c = self.encode(x).float()
        c_hat, neighbours = None, None
        if self.bank is not None:
            # KNN(x) = the k nearest codes in the bank; x's own row is excluded, otherwise its
            # stale copy is the nearest and the prior is handed the answer. c_hat is uniform over
            # KNN(x) and is data: no gradient flows into the bank.
            unique = self.unique and update_bank
            neighbours, c_hat = self.access.draw(
                self.bank, c, index, self.k, generator, unique, split
            )  # (B,), (B, D)
        if update_bank:
            if index is None:
                raise ValueError("updating the code bank needs the examples' indices")
            if self.bank is not None:
                self.access.update(self.bank, index, c, split)  # C[x] <- c(x)
        z = c + self.access.noise(c, generator, split)  # z ~ q(z|x)  (B, D)
        with torch.autocast(c.device.type, enabled=False):
            kl = self.prior.kl(c, z, c_hat)  # KL(q(z|x) || p(z|c_hat))  (B,)
        recon = -self.decoder.log_prob(x, z)  # -log r(x|z)  (B,)
        return LossTerms((kl + recon).mean(), kl, recon, c, neighbours)
