"""The ACN: encoder, prior, decoder and code bank composed, and the loss in one place.

The same class covers the baselines, so that they differ from the ACN in the prior alone:
``model.prior=normal`` is the plain VAE, ``mixture`` a VAE with a learnable unconditional mixture
prior, and ``none`` drops the latent altogether (the decoder-only PixelCNN). :attr:`ACN.kind`
names which of the three a model is.

A model carries its config and data description, so it rebuilds itself from a checkpoint or an
exported folder (:meth:`ACN.restore`, :meth:`ACN.load`, :meth:`ACN.from_pretrained`) and writes
the shareable folder itself (:meth:`ACN.save_pretrained`); storage below it moves bytes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from acn.bank.codebank import CodeBank
from acn.config import Config, from_dict
from acn.data.info import DataInfo
from acn.distributed import SINGLE, Ranks, standard_normal
from acn.errors import CheckpointError, ConfigError
from acn.nn.build import make_decoder, make_encoder, make_prior
from acn.nn.likelihoods import to_network_input
from acn.store.exported import load_model_payload, read_pretrained, write_exported

# What a model is, by its prior: a neighbour prior (the ACN), a latent under an unconditional
# prior (the VAE baselines), or no latent at all (the decoder-only PixelCNN).
Kind = Literal["acn", "vae", "pixelcnn"]


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
        config: the run's config (model and code bank sections are read; kept as ``config``).
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
        self.config, self.info, self.num_codes = config, info, num_codes
        self.k, self.unique = bank.k, bank.unique
        self.random_neighbours = bank.neighbours == "random"
        self.code_dim = m.code_dim if m.prior != "none" else 0
        # Built in this order (the global seed's draws initialise them in turn).
        self.encoder = make_encoder(m, info.image_shape)
        self.prior = make_prior(m)
        self.decoder = make_decoder(m, info.image_shape, info.levels, self.code_dim)
        # Training on several processes, each holds a slice of the global batch; the noise of z
        # is drawn for the global batch (see posterior_noise). Set by acn.train.parallel.
        self.ranks: Ranks = SINGLE
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

    @property
    def kind(self) -> Kind:
        """``acn`` (neighbour prior and code bank), ``vae`` (a latent under an unconditional
        prior) or ``pixelcnn`` (no latent)."""
        if self.bank is not None:
            return "acn"
        return "vae" if self.encoder is not None else "pixelcnn"

    # --- Algorithm 1 ---------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes c(x), (B, C, H, W) integer levels -> (B, D): the posterior means."""
        if self.encoder is None:
            raise ValueError("this model has no latent (model.prior=none)")
        return self.encoder(to_network_input(x, self.info.levels))

    def posterior_noise(self, c: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """eps ~ N(0, I) for z = c + eps, (B, D). In training on several processes the batch is
        this process's slice of the global batch: the global batch's noise is drawn and this
        slice kept, so N processes draw exactly what one process would."""
        return standard_normal(c, generator, self.ranks if self.training else SINGLE)

    def forward(
        self,
        x: torch.Tensor,
        index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        update_bank: bool = False,
    ) -> LossTerms:
        """The ACN loss on one batch: Algorithm 1 of the paper, line by line.

        Args:
            x: (B, C, H, W) integer levels.
            index: (B,) the examples' rows in the code bank (training data), or None for data
                outside the bank (validation, test), which then needs no exclusion.
            generator: source of the neighbour draw and of z's noise.
            update_bank: write the fresh codes into the bank (training only).
        """
        if update_bank and index is None:
            raise ValueError("updating the code bank needs the examples' indices")
        if self.encoder is None:  # decoder-only model: no latent, nothing to pay in KL
            recon = -self.decoder.log_prob(x, None)  # (B,)
            return LossTerms(recon.mean(), torch.zeros_like(recon), recon)
        # c(x), the mean of q(z|x) = N(c, I); float32 even under autocast, as the bank, the
        # noise and the KL want full precision.  (B, D)
        c = self.encode(x).float()
        c_hat = neighbours = None
        if self.bank is not None:
            # c_hat uniform over KNN(x), the k nearest codes, x's own row excluded (else its
            # stale copy is nearest and the prior is handed the answer). No gradient: data.
            unique = self.unique and update_bank
            # (B,) rows, (B, D) codes
            if self.random_neighbours:  # the ablation: any other code, not a near one
                ranks = self.ranks if self.training else SINGLE
                neighbours, c_hat = self.bank.draw_random(c, index, generator, ranks)
            else:
                neighbours, c_hat = self.bank.draw(c, self.k, index, generator, unique)
            if update_bank:
                self.bank.write(index, c)  # C[x] <- c(x), after the search
        z = c + self.posterior_noise(c, generator)  # z ~ q(z|x)  (B, D)
        with torch.autocast(c.device.type, enabled=False):
            kl = self.prior.kl(c, z, c_hat)  # KL(q(z|x) || p(z|c_hat))  (B,)
        recon = -self.decoder.log_prob(x, z)  # -log r(x|z), the same z  (B,)
        return LossTerms((kl + recon).mean(), kl, recon, c, neighbours)

    # --- building and loading ------------------------------------------------------------------

    def describe(self, step: int) -> dict[str, Any]:
        """What rebuilds this model, as checkpoints and exported folders store it:
        ``config``, ``data_info``, ``num_codes`` and ``step``."""
        return {
            "config": self.config.to_dict(),
            "data_info": self.info.to_dict(),
            "num_codes": self.num_codes,
            "step": int(step),
        }

    @classmethod
    def from_state(
        cls, meta: dict[str, Any], state: dict[str, torch.Tensor], where: str = "checkpoint"
    ) -> ACN:
        """Rebuild the model ``meta`` describes (see :meth:`describe`) and load ``state`` into
        it, strictly; ``where`` names the source in errors. On the CPU, in training mode.

        Raises:
            CheckpointError: the config describes no model, or the weights do not fit it.
        """
        try:
            config = from_dict(meta["config"])
            model = cls(config, DataInfo.from_dict(meta["data_info"]), int(meta["num_codes"]))
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{where}: its config does not describe a model ({exc})"
            ) from None
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            # torch's message starts with a generic header; the first mismatch is what helps.
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
            raise CheckpointError(
                f"{where}: weights do not fit the architecture ({detail[:200]})"
            ) from None
        return model

    @classmethod
    def restore(cls, payload: dict[str, Any], device: str | torch.device = "cpu") -> ACN:
        """The model of a loaded checkpoint or exported folder (``payload``: its meta, the state
        dict under ``model`` and the source under ``path``), in eval mode on ``device``."""
        model = cls.from_state(payload, payload["model"], payload.get("path", "checkpoint"))
        return model.to(device).eval()

    @classmethod
    def load(
        cls, source: str | Path, device: str | torch.device = "cpu", checkpoint: str = "best"
    ) -> ACN:
        """The model of a run directory (its ``best`` or ``last`` checkpoint), a checkpoint file
        or an exported folder, in eval mode."""
        return cls.restore(load_model_payload(source, checkpoint), device)

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
        from acn.store.hub import download_from_hub, is_repo_id

        if is_repo_id(name_or_path):
            name_or_path = download_from_hub(
                str(name_or_path),
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
        meta, tensors = read_pretrained(name_or_path)
        return cls.from_state(meta, tensors, str(name_or_path)).to(device).eval()

    def save_pretrained(self, out: str | Path, step: int = 0) -> Path:
        """Write the shareable folder ``out``: ``config.json`` and ``model.safetensors`` (code
        bank included), which :meth:`from_pretrained` reads back. ``step`` is recorded."""
        return write_exported(out, self.describe(step), self.state_dict())


def export_run(source: str | Path, out: str | Path, checkpoint: str = "best") -> Path:
    """Write the model of a run directory or checkpoint to the folder ``out`` (only a model
    that loads is exported).

    Returns:
        ``out``, holding ``config.json`` and ``model.safetensors``.
    """
    payload = load_model_payload(source, checkpoint)
    model = ACN.from_state(payload, payload["model"], payload["path"])
    return model.save_pretrained(out, int(payload["step"]))
