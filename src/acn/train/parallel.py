"""A model made ready for this process: its bank placement, device, precision, compilation, DDP.

One process trains the model as it is. With several (see :mod:`acn.distributed`) every rank
builds the same model from the same seed, installs the bank strategy of
``codebank.placement`` (see :mod:`acn.bank.placement`) and is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients. The bank is
not a parameter and DDP must leave it alone: its rows differ between ranks in sharded mode, and
broadcasting a replicated bank every step would cost far more than the step.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from acn.bank.codebank import CodeBank
from acn.bank.placement import ReplicatedPlacement, ShardedPlacement
from acn.config import Config
from acn.distributed import Ranks, gather_rows, gather_shards_to_main, shard_range, sum_all
from acn.errors import ConfigError, TrainingError
from acn.model import ACN, LossTerms
from acn.runtime import cpu_native_bf16

BANK_BUFFERS = ("codes", "sq_norms", "used")


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``train.precision`` asks for bf16 autocast on ``device``.

    ``auto`` chooses bf16 on CUDA devices that support it and on CPUs that compute bf16 in
    hardware (:func:`acn.runtime.cpu_native_bf16`): measured on the digits and mnist5k ACNs it
    cost nothing beyond the spread over seeds at equal steps and bought 1.6x at equal time
    (docs/results.md, "bf16 on the CPU"). Elsewhere bf16 is emulated and slower: float32.
    """
    if precision == "bf16":
        return True
    if precision == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device.type == "cpu" and cpu_native_bf16()
    return False


def autocast(enabled: bool, device: torch.device):
    """bf16 autocast for the networks' forward pass, or nothing."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def prepare(
    model: ACN, config: Config, ranks: Ranks, device: torch.device
) -> tuple[ACN, nn.Module]:
    """Place ``model`` (built and loaded on the CPU) for this rank.

    Returns:
        ``(model, net)``: the model itself (state, evaluation, checkpoints) and what the training
        step calls (the DDP wrapper with several processes, else the model).
    """
    if model.bank is not None and config.codebank.backend == "faiss" and device.type != "cpu":
        raise ConfigError(
            f"codebank.backend=faiss searches on the CPU, but training runs on {device.type}; "
            "use codebank.backend=torch there (it runs on the GPU)"
        )
    if ranks.active and model.bank is not None:
        if config.codebank.placement == "sharded":
            if model.bank.num_codes < ranks.world:
                raise ConfigError(
                    f"a sharded bank of {model.bank.num_codes} codes cannot be split over "
                    f"{ranks.world} processes"
                )
            model.bank = _slice(model.bank, config, ranks)
            model.bank.placement = ShardedPlacement(ranks, model.num_codes)
        else:
            model.bank.placement = ReplicatedPlacement(ranks)
    # Every model, with a bank or without, draws z's noise for the global batch.
    model.ranks = ranks
    model = model.to(device)
    if config.train.compile:
        # In place (nn.Module.compile), so that parameter names -- and checkpoints -- are
        # the same with and without compilation.
        for part in (model.encoder, model.prior, model.decoder):
            if part is not None:
                part.compile()
    if not ranks.active:
        return model, model
    ignore = [f"bank.{name}" for name in BANK_BUFFERS] if model.bank is not None else []
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    # No buffer broadcasts: the only buffers that change are the bank's, which are kept equal
    # (or deliberately different, sharded) by the bank strategy. Newer torch renames the option.
    no_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    net = DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, **no_sync
    )
    return model, net


def _slice(bank: CodeBank, config: Config, ranks: Ranks) -> CodeBank:
    """This rank's rows of a whole bank, as a bank of their own."""
    lo, hi = shard_range(bank.num_codes, ranks)
    shard = CodeBank(
        hi - lo,
        bank.dim,
        config.codebank.chunk_size,
        backend=config.codebank.backend,
        precision=config.codebank.search_precision,
    )
    for name in BANK_BUFFERS:
        getattr(shard, name).copy_(getattr(bank, name)[lo:hi])
    return shard


def is_sharded(model: ACN) -> bool:
    """Whether each process holds only a slice of the model's code bank."""
    return model.bank is not None and isinstance(model.bank.placement, ShardedPlacement)


def full_state_dict(model: ACN, ranks: Ranks) -> dict[str, torch.Tensor] | None:
    """The model's state as one process would hold it: with a sharded bank, the slices are
    assembled on rank 0 (collective; None on the other ranks). Rank-count independent, so a
    checkpoint resumes on any number of processes."""
    state = model.state_dict()
    if not is_sharded(model):
        return state
    for name in BANK_BUFFERS:
        whole = gather_shards_to_main(getattr(model.bank, name), model.num_codes, ranks)
        state[f"bank.{name}"] = whole
    return state if ranks.is_main else None


def batch_means(
    terms: LossTerms, ranks: Ranks, stop: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, bool, bool]:
    """The global batch's mean loss, KL and reconstruction, whether each term is finite on
    every rank, and whether any rank was asked to stop: one collective for all of it.

    In one process the means are the batch's own, computed exactly as before there were ranks.
    """
    kl, recon = terms.kl_nats.detach(), terms.recon_nats.detach()
    if not ranks.active:
        return (
            terms.loss.detach(),
            kl.mean(),
            recon.mean(),
            bool(torch.isfinite(kl).all()),
            bool(torch.isfinite(recon).all()),
            stop,
        )
    flags = [~torch.isfinite(kl).all(), ~torch.isfinite(recon).all(), torch.tensor(stop)]
    packed = torch.stack(
        [kl.sum(), recon.sum(), torch.tensor(float(kl.numel()), device=kl.device)]
        + [f.to(kl.device, kl.dtype) for f in flags]
    )
    packed = sum_all(packed, ranks)
    count = packed[2]
    kl_mean, recon_mean = packed[0] / count, packed[1] / count
    bad_kl, bad_recon, stopping = (bool(v > 0) for v in packed[3:6].tolist())
    return kl_mean + recon_mean, kl_mean, recon_mean, not bad_kl, not bad_recon, stopping


def agree(flags: list[bool], ranks: Ranks, device: torch.device) -> list[bool]:
    """Each flag true on every rank if it is true on any."""
    if not ranks.active:
        return flags
    packed = sum_all(torch.tensor([float(f) for f in flags], device=device), ranks)
    return [bool(v > 0) for v in packed.tolist()]


def check_replicas(model: ACN, ranks: Ranks, device: torch.device) -> None:
    """Raise :class:`~acn.errors.TrainingError` unless every rank holds the same parameters (and,
    when replicated, the same code bank): a cheap fingerprint per tensor, compared exactly.
    Collective; run at every checkpoint, so a divergence never goes unnoticed into a file."""
    if not ranks.active:
        return
    tensors = [p.detach() for p in model.parameters()]
    if model.bank is not None and not is_sharded(model):
        tensors += [model.bank.codes, model.bank.sq_norms, model.bank.used]
    prints = []
    for t in tensors:
        flat = t.reshape(-1).double()
        weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.float64)
        prints += [flat.sum(), (flat * weights.reciprocal()).sum()]
    mine = torch.stack(prints).to(device)
    every = gather_rows(mine[None], ranks)
    if not torch.equal(every, mine[None].expand_as(every)):
        raise TrainingError(
            "the replicas on different processes diverged; this is a bug, please report it"
        )
