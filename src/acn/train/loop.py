"""The training procedure: optimise, validate, log, checkpoint, resume exactly.

A run directory holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object
per line: training averages every ``train.log_every`` steps and validation results every
``train.eval_every`` steps), ``checkpoints/last.pt`` and ``tensorboard/``.

Exact resume: the data order is a pure function of (seed, step) (see
:class:`acn.data.datasets.EpochBatchSampler`), all noise comes from one generator whose state is
in the checkpoint, validation uses its own freshly seeded generator, and the partial sums of the
metrics are checkpointed too. On resume, ``metrics.jsonl`` is cut back to the checkpoint's step.
A run stopped anywhere and resumed from its last checkpoint therefore ends with the same
weights, code bank and metrics, bit for bit on CPU, as the uninterrupted run.

Under ``torchrun`` every process runs this same loop on its share of each global batch (see
:mod:`acn.train.parallel` and :mod:`acn.bank.placement`); the random draws are made for the
global batch, so the checkpoint, and therefore a resume, does not depend on the number of
processes.
"""

from __future__ import annotations

import logging
import math
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from acn import distributed, threads
from acn.config import Config, from_dict, resume_conflicts
from acn.data.datasets import eval_loader, load_splits, train_loader
from acn.errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from acn.files import atomic_write_json
from acn.model import ACN
from acn.runtime import (
    MetricsLog,
    progress_bar,
    resolve_device,
    stop_on_signal,
    tensorboard_writer,
)
from acn.store.checkpoint import load_checkpoint, save_checkpoint
from acn.train import parallel
from acn.train.validate import evaluate

log = logging.getLogger(__name__)
TRAIN_KEYS = ("loss", "kl_nats", "recon_nats", "grad_norm")


def _requested_threads(config: Config, payload: dict[str, Any] | None) -> int:
    """``train.threads``; auto on resume means the count the run recorded, so that a resumed
    run reduces in the order the uninterrupted one would have."""
    if config.train.threads != threads.AUTO or payload is None:
        return config.train.threads
    return from_dict(payload["config"]).train.threads


def _check_resume(config: Config, payload: dict[str, Any]) -> Config:
    saved = from_dict(payload["config"])
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        diffs = ", ".join(
            f"{k} ({saved.flat()[k]!r} -> {config.flat()[k]!r})" for k in conflicts[:4]
        )
        raise ConfigError(f"cannot resume {payload['path']} with a different config: {diffs}")
    return config


def _check_run_dir(run_dir: Path, resuming: bool) -> None:
    """Refuse a folder that holds another run, or that cannot be made because a file stands
    in its way; creates nothing, so that a run failing later (bad data) leaves no folder."""
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists() and not resuming:
        raise ConfigError(
            f"{run_dir} already holds a run; resume it with --resume {last} or choose another --out"
        )
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ConfigError(f"cannot write to run directory {run_dir}: {existing} is not a folder")


def _prepare_run_dir(run_dir: Path, config: Config) -> None:
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
    :func:`acn.store.checkpoint.atomic_write_bytes`); they are never read, only waste disk."""
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
        # In training mode, as the failed step was: this rank's slice of the global batch.
        terms = model(x, index=index, generator=generator, update_bank=False)
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
    distributed.local_batch(config.train.batch_size, ranks.world)  # before any data is read
    with threads.using(_requested_threads(config, payload)) as used:
        config = replace(config, train=replace(config.train, threads=used))  # as recorded
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
    run = _Run(config, run_dir, payload, ranks, device)
    try:
        run.loop()
    finally:
        run.close()
    if not run.val_result and run.step >= config.train.steps and payload is not None:
        run.val_result = run.validate()
    return {
        "step": run.step,
        "val": run.val_result,
        "checkpoint": str(run.last),
        "best": dict(run.best) | ({"checkpoint": str(run.best_path)} if run.best else {}),
        "data": run.info.name,
        "rank": ranks.rank,
    }


def _fresh_window() -> dict[str, float]:
    """Empty partial sums of the training metrics of one ``train.log_every`` window."""
    return {key: 0.0 for key in TRAIN_KEYS} | {"count": 0}


def _build_model(config: Config, info, num_codes: int, payload: dict[str, Any] | None) -> ACN:
    """The model as configured (its initialisation seeded by ``seed``), with a checkpoint's
    weights and code bank when resuming; on the CPU."""
    torch.manual_seed(config.seed)
    init = torch.Generator().manual_seed(config.seed)
    try:
        model = ACN(config, info, num_codes, generator=init)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if payload is not None:
        try:
            model.load_state_dict(payload["model"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{payload['path']}: does not fit this model ({exc})") from None
    return model


class _Run:
    """One training run on this process: the model and its optimiser, the generator of every
    random draw, the step, the running metrics and the run's files (rank 0's)."""

    def __init__(self, config, run_dir: Path, payload, ranks, device) -> None:
        t = config.train
        self.config, self.ranks, self.device, self.main = config, ranks, device, ranks.is_main
        if self.main:  # an unusable run folder is reported before any data is read
            _check_run_dir(run_dir, payload is not None)
        self.splits, self.info = load_splits(config.data, config.seed)
        model = _build_model(config, self.info, len(self.splits["train"]), payload)
        self.model, self.net = parallel.prepare(model, config, ranks, device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.step, self.running = 0, _fresh_window()
        # The lowest validation total so far and its step: what checkpoints/best.pt holds.
        self.best: dict[str, Any] = {}
        if payload is not None:
            self._restore(payload)
        if self.main:
            _prepare_run_dir(run_dir, config)
            resumed_at = self.step if payload is not None else None
            self.metrics = MetricsLog(run_dir / "metrics.jsonl", resumed_at)
        self.last = run_dir / "checkpoints" / "last.pt"
        self.best_path = run_dir / "checkpoints" / "best.pt"
        self.writer = tensorboard_writer(run_dir, t.tensorboard) if self.main else None
        self.val_loader = eval_loader(self.splits["val"], t.eval_batch_size)
        self.steps_per_epoch = len(self.splits["train"]) // t.batch_size
        self.bf16 = parallel.use_bf16(t.precision, device)
        if self.main:
            log.info(
                "precision: %s (train.precision=%s)",
                "bf16" if self.bf16 else "float32",
                t.precision,
            )
        # Validation runs where the bank can be searched: on rank 0 alone unless the bank is
        # sharded, when every rank takes part and rank 0 reports.
        self.validating = self.main or parallel.is_sharded(self.model)
        self.val_result: dict[str, float] = {}
        self.bar = progress_bar(t.steps, self.info.name, t.progress and self.main, self.step)

    def _restore(self, payload: dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
            self.generator.set_state(payload["rng"]["generator"])
            torch.set_rng_state(payload["rng"]["torch"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{payload['path']}: does not fit this model ({exc})") from None
        self.step, self.running = int(payload["step"]), dict(payload["running"])
        self.best = dict(payload.get("best") or {})  # absent in checkpoints of older versions
        if self.main:
            log.info("resuming from %s at step %d", payload["path"], self.step)

    def loop(self) -> None:
        """Train from the current step to ``train.steps``, validating, logging and
        checkpointing on their schedules; stop with a checkpoint on SIGINT/SIGTERM."""
        t, model = self.config.train, self.model
        model.train()
        loader = train_loader(
            self.splits["train"],
            self.config,
            self.step,
            self.ranks.rank,
            self.ranks.world,
            self.device,
        )
        with stop_on_signal() as received:
            for batch in loader:
                if (
                    model.bank is not None
                    and model.unique
                    and self.step % self.steps_per_epoch == 0
                ):
                    model.bank.reset_usage()  # a new pass: every code may be a neighbour again
                stopping = self.train_step(batch, bool(received))
                if (t.eval_every and self.step % t.eval_every == 0) or self.step == t.steps:
                    self.val_result = self.validate()
                    self.keep_best()
                if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                    self.checkpoint()
                if stopping or (not self.ranks.active and received):
                    self.checkpoint()
                    signum = (received or [signal.SIGTERM])[0]
                    raise TrainingInterrupted(self.step, self.last, signum)

    def train_step(self, batch: dict[str, torch.Tensor], stop_requested: bool) -> bool:
        """One optimisation step on this rank's share of a global batch; returns whether any
        rank was asked to stop. Raises :class:`TrainingError` on a non-finite loss or gradient
        before the optimiser touches the weights."""
        x = batch["image"].to(self.device, non_blocking=True)
        index = batch["index"].to(self.device, non_blocking=True)
        noise_state = self.generator.get_state()
        with parallel.autocast(self.bf16, self.device):
            terms = self.net(x, index=index, generator=self.generator, update_bank=True)
        # One collective: the global means, and every rank's verdicts, agreed.
        loss, kl, recon, kl_ok, recon_ok, stopping = parallel.batch_means(
            terms, self.ranks, stop_requested
        )
        for name, ok in (("KL", kl_ok), ("reconstruction", recon_ok)):
            if not ok:
                raise TrainingError(
                    f"the {name} term is not finite at step {self.step + 1}; stopped without "
                    f"saving, the last checkpoint ({self.last}) is untouched"
                )
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        max_norm = self.config.train.grad_clip if self.config.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if not torch.isfinite(grad_norm):  # the same on every rank: gradients are shared
            self._raise_nonfinite_gradient(x, index, noise_state, loss)
        self.optimizer.step()
        self.step += 1
        self._record((loss, kl, recon, grad_norm))
        return stopping

    def _raise_nonfinite_gradient(self, x, index, noise_state, loss) -> None:
        bad = _nonfinite_gradient_terms(self.model, x, index, self.generator, noise_state)
        bad = parallel.agree(bad, self.ranks, self.device)
        term = next(
            (n for n, b in zip(("KL", "reconstruction"), bad, strict=True) if b),
            "total (each term's gradient is finite alone)",
        )
        raise TrainingError(
            f"the gradient of the {term} term is not finite at step {self.step + 1} "
            f"(loss {loss.item():.4g}); stopped without saving, "
            f"the last checkpoint ({self.last}) is untouched"
        )

    def _record(self, values: tuple[torch.Tensor, ...]) -> None:
        """Add a step's metrics to the window; write the window's means every log_every."""
        t = self.config.train
        for key, value in zip(TRAIN_KEYS, values, strict=True):
            self.running[key] += value.item()
        self.running["count"] += 1
        self.bar.update(1)
        loss, kl, recon = (f"{v.item():.2f}" for v in values[:3])
        self.bar.set_postfix(loss=loss, kl=kl, recon=recon, refresh=False)
        if self.step % t.log_every == 0 or self.step == t.steps:
            record = {key: self.running[key] / self.running["count"] for key in TRAIN_KEYS}
            if self.main:
                self.metrics.write({"step": self.step, "split": "train", **record})
            if self.writer is not None:
                for key, value in record.items():
                    self.writer.add_scalar(f"train/{key}", value, self.step)
            # The window restarts only on the log_every grid (not at the final step), so a run
            # extended past its end logs the same windows as one run straight on.
            if self.step % t.log_every == 0:
                self.running = _fresh_window()

    def validate(self) -> dict[str, float]:
        """The validation metrics (on the ranks that validate), logged by rank 0."""
        if not self.validating:
            return {}
        result = evaluate(self.model, self.val_loader, self.device, seed=self.config.seed)
        if self.main:
            self.metrics.write({"step": self.step, "split": "val", **result})
            if self.writer is not None:
                for key in ("kl_nats", "recon_nats", "total_nats"):
                    self.writer.add_scalar(f"val/{key}", result[key], self.step)
        return result

    def keep_best(self) -> None:
        """After a validation: if its total is the lowest so far, write ``checkpoints/best.pt``
        (rank 0 decides, as it alone may validate; every rank takes part in the write)."""
        total = self.val_result.get("total_nats", math.inf) if self.main else math.inf
        better = math.isfinite(total) and total < self.best.get("total_nats", math.inf)
        if parallel.agree([better], self.ranks, self.device)[0]:  # collective
            self.best = {"step": self.step, "total_nats": total} if self.main else {}
            self.checkpoint(self.best_path)

    def checkpoint(self, path: Path | None = None) -> None:
        """Write ``checkpoints/last.pt`` (or ``path``) (rank 0; collective for the replica check
        and a sharded bank). Written as best.pt, it is the same resumable checkpoint."""
        parallel.check_replicas(self.model, self.ranks, self.device)  # collective
        state = parallel.full_state_dict(self.model, self.ranks)  # collective when sharded
        if not self.main:
            return
        payload = self.model.describe(self.step) | {
            "model": state,
            "optimizer": self.optimizer.state_dict(),
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state()},
            "running": dict(self.running),
            "best": dict(self.best),
        }
        save_checkpoint(path or self.last, payload)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


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
