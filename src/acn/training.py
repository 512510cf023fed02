"""The training procedure: optimise, validate, log, checkpoint, resume exactly.

A run directory holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object
per line: training averages every ``train.log_every`` steps and validation results every
``train.eval_every`` steps), ``checkpoints/last.pt`` and ``tensorboard/``.

Exact resume: the data order is a pure function of (seed, step) (see
:class:`acn.data.EpochBatchSampler`), all noise comes from one generator whose state is in the
checkpoint, validation uses its own freshly seeded generator, and the partial sums of the metrics
are checkpointed too. On resume, ``metrics.jsonl`` is cut back to the checkpoint's step. A run
stopped anywhere and resumed from its last checkpoint therefore ends with the same weights,
code bank and metrics, bit for bit on CPU, as the uninterrupted run.

Under ``torchrun`` every process runs this same loop on its share of each global batch (see
:mod:`acn.parallel` and :mod:`acn.bank_access`); the random draws are made for the global batch,
so the checkpoint, and therefore a resume, does not depend on the number of processes.
"""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from typing import Any

import torch

from acn import distributed, parallel
from acn.bank_access import ShardedAccess
from acn.checkpoint import (
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)
from acn.config import Config, from_dict, resume_conflicts
from acn.data import eval_loader, load_splits, train_loader
from acn.errors import AcnError, CheckpointError, ConfigError, TrainingError
from acn.evaluation import evaluate
from acn.model import ACN
from acn.runtime import (  # noqa: F401  (resolve_device and progress_bar: imported from here)
    MetricsLog,
    progress_bar,
    resolve_device,
    stop_on_signal,
    tensorboard_writer,
)

log = logging.getLogger(__name__)
TRAIN_KEYS = ("loss", "kl_nats", "recon_nats", "grad_norm")


class TrainingInterrupted(AcnError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved at ``step``."""

    def __init__(self, step: int, checkpoint: Path, signum: int) -> None:
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: stopped after step {step}, checkpoint saved to {checkpoint}"
        )


def _check_resume(config: Config, payload: dict[str, Any]) -> Config:
    saved = from_dict(payload["config"])
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        diffs = ", ".join(
            f"{k} ({saved.flat()[k]!r} -> {config.flat()[k]!r})" for k in conflicts[:4]
        )
        raise ConfigError(f"cannot resume {payload['path']} with a different config: {diffs}")
    return config


def _prepare_run_dir(run_dir: Path, config: Config, resuming: bool) -> None:
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists() and not resuming:
        raise ConfigError(
            f"{run_dir} already holds a run; resume it with --resume {last} or choose another --out"
        )
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(run_dir / "checkpoints")
        atomic_write_json(run_dir / "config.json", config.to_dict())
    except OSError as exc:
        raise ConfigError(
            f"cannot write to run directory {run_dir}: {exc.strerror or exc}"
        ) from None


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary checkpoint files a killed process left behind (see
    :func:`acn.checkpoint.atomic_write_bytes`); they are never read, only waste disk."""
    for tmp in folder.glob(".*.tmp"):
        log.info("removing %s, left by an interrupted checkpoint write", tmp)
        tmp.unlink(missing_ok=True)


def _nonfinite_gradient_terms(model: ACN, x, index, generator, state) -> list[bool]:
    """Which loss terms (KL, reconstruction) have a non-finite gradient, found by
    backpropagating each alone from the same noise (``state``: the generator before the failed
    step). Runs only after a failure, on the model itself: with several processes each rank
    checks its own share of the batch."""
    bad = []
    for attr in ("kl_nats", "recon_nats"):
        generator.set_state(state)
        model.zero_grad(set_to_none=True)
        terms = model(x, index=index, generator=generator, update_bank=False, split=True)
        getattr(terms, attr).mean().backward()
        bad.append(
            any(p.grad is not None and not torch.isfinite(p.grad).all() for p in model.parameters())
        )
    return bad


def train(config: Config, run_dir: str | Path, resume: str | Path | None = None) -> dict[str, Any]:
    """Train a model as configured, writing the run into ``run_dir``.

    Run under ``torchrun`` (several processes), every rank calls this: each trains on its share
    of every global batch (``train.batch_size``), and rank 0 alone logs, shows progress and
    writes checkpoints, which hold the whole model and resume on any number of processes.

    Args:
        config: the resolved config.
        run_dir: output folder (created).
        resume: a checkpoint (or run folder) to continue from; its config must agree with
            ``config`` except for scheduling keys such as ``train.steps``.

    Returns:
        A summary: ``step``, the final ``val`` metrics, the checkpoint path and this ``rank``.

    Raises:
        TrainingError: a non-finite loss or gradient (the last checkpoint is left untouched).
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint of the last finished step was saved.
    """
    run_dir = Path(run_dir)
    payload = load_checkpoint(resume) if resume is not None else None
    if payload is not None:
        config = _check_resume(config, payload)
    owns_group = not torch.distributed.is_initialized()
    ranks, device = distributed.setup(resolve_device(config.train.device))
    summary = _train(config, run_dir, payload, ranks, device)
    # Left only after a success: on an error the process is about to exit, and destroying the
    # group while the traceback still holds the DDP wrapper aborts in its destructor.
    if owns_group:
        distributed.teardown(ranks)
    return summary


def _train(
    config: Config,
    run_dir: Path,
    payload: dict[str, Any] | None,
    ranks: distributed.Ranks,
    device: torch.device,
) -> dict[str, Any]:
    splits, info = load_splits(config.data, config.seed)
    torch.manual_seed(config.seed)
    init = torch.Generator().manual_seed(config.seed)
    try:
        model = ACN(config, info, len(splits["train"]), generator=init)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if payload is not None:
        try:
            model.load_state_dict(payload["model"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{payload['path']}: does not fit this model ({exc})") from None
    model, net = parallel.prepare(model, config, ranks, device)
    t = config.train
    optimizer = torch.optim.Adam(
        model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay
    )
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    step, running = 0, {key: 0.0 for key in TRAIN_KEYS} | {"count": 0}
    if payload is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
            generator.set_state(payload["rng"]["generator"])
            torch.set_rng_state(payload["rng"]["torch"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{payload['path']}: does not fit this model ({exc})") from None
        step, running = int(payload["step"]), dict(payload["running"])
        if ranks.is_main:
            log.info("resuming from %s at step %d", payload["path"], step)
    main = ranks.is_main
    if main:
        _prepare_run_dir(run_dir, config, payload is not None)
        metrics = MetricsLog(run_dir / "metrics.jsonl", step if payload is not None else None)
    last = run_dir / "checkpoints" / "last.pt"
    writer = tensorboard_writer(run_dir, t.tensorboard) if main else None
    val_loader = eval_loader(splits["val"], t.eval_batch_size)
    steps_per_epoch = len(splits["train"]) // t.batch_size
    bf16 = parallel.use_bf16(t.precision, device)
    # Validation runs where the bank can be searched: on rank 0 alone unless the bank is
    # sharded, when every rank takes part and rank 0 reports.
    validating = main or isinstance(model.access, ShardedAccess)

    def checkpoint() -> None:
        parallel.check_replicas(model, ranks, device)  # collective
        state = parallel.full_state_dict(model, ranks)  # collective for a sharded bank
        if not main:
            return
        save_checkpoint(
            last,
            {
                "config": config.to_dict(),
                "data_info": {
                    "name": info.name,
                    "image_shape": list(info.image_shape),
                    "levels": info.levels,
                    "num_classes": info.num_classes,
                },
                "num_codes": model.num_codes,
                "step": step,
                "model": state,
                "optimizer": optimizer.state_dict(),
                "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
                "running": dict(running),
            },
        )

    def validate() -> dict[str, float]:
        if not validating:
            return {}
        result = evaluate(model, val_loader, device, seed=config.seed)
        if main:
            metrics.write({"step": step, "split": "val", **result})
            if writer is not None:
                for key in ("kl_nats", "recon_nats", "total_nats"):
                    writer.add_scalar(f"val/{key}", result[key], step)
        return result

    bar = progress_bar(t.steps, info.name, t.progress and main, initial=step)
    val_result: dict[str, float] = {}
    model.train()
    loader = train_loader(splits["train"], config, step, ranks.rank, ranks.world, device)
    try:
        with stop_on_signal() as received:
            for batch in loader:
                if model.bank is not None and model.unique and step % steps_per_epoch == 0:
                    model.bank.reset_usage()  # a new pass: every code may be a neighbour again
                x = batch["image"].to(device, non_blocking=True)
                index = batch["index"].to(device, non_blocking=True)
                noise_state = generator.get_state()
                with parallel.autocast(bf16, device):
                    terms = net(x, index=index, generator=generator, update_bank=True)
                # One collective: the global means, and every rank's verdicts, agreed.
                loss, kl, recon, kl_ok, recon_ok, stopping = parallel.batch_means(
                    terms, ranks, bool(received)
                )
                for name, ok in (("KL", kl_ok), ("reconstruction", recon_ok)):
                    if not ok:
                        raise TrainingError(
                            f"the {name} term is not finite at step {step + 1}; stopped without "
                            f"saving, the last checkpoint ({last}) is untouched"
                        )
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                max_norm = t.grad_clip if t.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                if not torch.isfinite(grad_norm):  # the same on every rank: gradients are shared
                    bad = _nonfinite_gradient_terms(model, x, index, generator, noise_state)
                    bad = parallel.agree(bad, ranks, device)
                    term = next(
                        (n for n, b in zip(("KL", "reconstruction"), bad, strict=True) if b),
                        "total (each term's gradient is finite alone)",
                    )
                    raise TrainingError(
                        f"the gradient of the {term} term is not finite at step {step + 1} "
                        f"(loss {loss.item():.4g}); stopped without saving, "
                        f"the last checkpoint ({last}) is untouched"
                    )
                optimizer.step()
                step += 1
                values = (loss, kl, recon, grad_norm)
                for key, value in zip(TRAIN_KEYS, values, strict=True):
                    running[key] += value.item()
                running["count"] += 1
                bar.update(1)
                bar.set_postfix(
                    loss=f"{values[0].item():.2f}",
                    kl=f"{values[1].item():.2f}",
                    recon=f"{values[2].item():.2f}",
                    refresh=False,
                )
                if step % t.log_every == 0 or step == t.steps:
                    record = {key: running[key] / running["count"] for key in TRAIN_KEYS}
                    if main:
                        metrics.write({"step": step, "split": "train", **record})
                    if writer is not None:
                        for key, value in record.items():
                            writer.add_scalar(f"train/{key}", value, step)
                    # The window restarts only on the log_every grid (not at the final step), so
                    # a run extended past its end logs the same windows as one run straight on.
                    if step % t.log_every == 0:
                        running = {key: 0.0 for key in TRAIN_KEYS} | {"count": 0}
                if (t.eval_every and step % t.eval_every == 0) or step == t.steps:
                    val_result = validate()
                if step % t.checkpoint_every == 0 or step == t.steps:
                    checkpoint()
                if stopping or (not ranks.active and received):
                    checkpoint()
                    raise TrainingInterrupted(step, last, (received or [signal.SIGTERM])[0])
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if not val_result and step >= t.steps and payload is not None:
        val_result = validate()
    return {
        "step": step,
        "val": val_result,
        "checkpoint": str(last),
        "data": info.name,
        "rank": ranks.rank,
    }


def ensure_trained(config: Config, run_dir: str | Path) -> dict[str, Any]:
    """The finished checkpoint of ``config`` in ``run_dir``: reused, resumed, or trained anew.

    A finished run is reused as it is, an unfinished one resumed to ``train.steps``. A run there
    with a different config (beyond scheduling keys), or trained past ``train.steps``, is refused
    rather than silently reported under the wrong settings.

    Returns:
        The loaded checkpoint payload at step ``train.steps``.
    """
    last = Path(run_dir) / "checkpoints" / "last.pt"
    payload = load_checkpoint(last) if last.exists() else None
    if payload is not None:
        _check_resume(config, payload)
        if payload["step"] > config.train.steps:
            raise ConfigError(
                f"{run_dir} holds a run trained for {payload['step']} steps, more than "
                f"train.steps={config.train.steps}; choose another output folder"
            )
    if payload is None or payload["step"] < config.train.steps:
        train(config, run_dir, resume=last if payload is not None else None)
        payload = load_checkpoint(last)
    return payload
