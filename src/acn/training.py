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
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from acn.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)
from acn.config import Config, from_dict, resume_conflicts
from acn.data import eval_loader, load_splits, train_loader
from acn.errors import AcnError, CheckpointError, ConfigError, TrainingError
from acn.evaluation import evaluate
from acn.model import ACN

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


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("train.device=mps but MPS is not available; use train.device=cpu")
    return torch.device(name)


@contextmanager
def _stop_on_signal():
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl``; on resume, drops lines after the resumed step."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("", encoding="utf-8")
        elif path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line torn by a kill: everything after it is newer than the checkpoint
                if record.get("step", math.inf) <= resume_step:
                    kept.append(line + "\n")
            atomic_write_bytes(path, lambda f: f.write("".join(kept).encode()))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


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


def _nonfinite_gradient_term(model: ACN, x, index, generator, state) -> str:
    """Name the loss term whose gradient is not finite, by backpropagating each alone from the
    same noise (``state``: the generator before the failed step). Runs only after a failure."""
    for name, attr in (("KL", "kl_nats"), ("reconstruction", "recon_nats")):
        generator.set_state(state)
        model.zero_grad(set_to_none=True)
        terms = model(x, index=index, generator=generator, update_bank=False)
        getattr(terms, attr).mean().backward()
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in model.parameters()):
            return name
    return "total (each term's gradient is finite alone)"


def _tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; skipping TensorBoard logging")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0):
    """The project's progress bar (tqdm), shown on a terminal only."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        # None: shown on a terminal only, so that logs and CI output stay readable.
        disable=None if enabled else True,
        desc=desc,
        dynamic_ncols=True,
        leave=False,
    )


def train(config: Config, run_dir: str | Path, resume: str | Path | None = None) -> dict[str, Any]:
    """Train a model as configured, writing the run into ``run_dir``.

    Args:
        config: the resolved config.
        run_dir: output folder (created).
        resume: a checkpoint (or run folder) to continue from; its config must agree with
            ``config`` except for scheduling keys such as ``train.steps``.

    Returns:
        A summary: ``step``, the final ``val`` metrics and the checkpoint path.

    Raises:
        TrainingError: a non-finite loss or gradient (the last checkpoint is left untouched).
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint of the last finished step was saved.
    """
    run_dir = Path(run_dir)
    payload = load_checkpoint(resume) if resume is not None else None
    if payload is not None:
        config = _check_resume(config, payload)
    device = resolve_device(config.train.device)
    splits, info = load_splits(config.data, config.seed)
    torch.manual_seed(config.seed)
    init = torch.Generator().manual_seed(config.seed)
    try:
        model = ACN(config, info, len(splits["train"]), generator=init).to(device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    t = config.train
    optimizer = torch.optim.Adam(
        model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay
    )
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    step, running = 0, {key: 0.0 for key in TRAIN_KEYS} | {"count": 0}
    if payload is not None:
        try:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            generator.set_state(payload["rng"]["generator"])
            torch.set_rng_state(payload["rng"]["torch"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{payload['path']}: does not fit this model ({exc})") from None
        step, running = int(payload["step"]), dict(payload["running"])
        log.info("resuming from %s at step %d", payload["path"], step)
    _prepare_run_dir(run_dir, config, payload is not None)
    metrics = MetricsLog(run_dir / "metrics.jsonl", step if payload is not None else None)
    last = run_dir / "checkpoints" / "last.pt"
    writer = _tensorboard(run_dir, t.tensorboard)
    val_loader = eval_loader(splits["val"], t.eval_batch_size)
    steps_per_epoch = len(splits["train"]) // t.batch_size

    def checkpoint() -> None:
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
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
                "running": dict(running),
            },
        )

    def validate() -> dict[str, float]:
        result = evaluate(model, val_loader, device, seed=config.seed)
        metrics.write({"step": step, "split": "val", **result})
        if writer is not None:
            for key in ("kl_nats", "recon_nats", "total_nats"):
                writer.add_scalar(f"val/{key}", result[key], step)
        return result

    bar = progress_bar(t.steps, info.name, t.progress, initial=step)
    val_result: dict[str, float] = {}
    model.train()
    try:
        with _stop_on_signal() as received:
            for batch in train_loader(splits["train"], config, step):
                if model.bank is not None and model.unique and step % steps_per_epoch == 0:
                    model.bank.reset_usage()  # a new pass: every code may be a neighbour again
                x = batch["image"].to(device, non_blocking=True)
                index = batch["index"].to(device, non_blocking=True)
                noise_state = generator.get_state()
                terms = model(x, index=index, generator=generator, update_bank=True)
                for name, value in (("KL", terms.kl_nats), ("reconstruction", terms.recon_nats)):
                    if not torch.isfinite(value).all():
                        raise TrainingError(
                            f"the {name} term is not finite at step {step + 1}; stopped without "
                            f"saving, the last checkpoint ({last}) is untouched"
                        )
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                max_norm = t.grad_clip if t.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                if not torch.isfinite(grad_norm):
                    term = _nonfinite_gradient_term(model, x, index, generator, noise_state)
                    raise TrainingError(
                        f"the gradient of the {term} term is not finite at step {step + 1} "
                        f"(loss {terms.loss.item():.4g}); stopped without saving, "
                        f"the last checkpoint ({last}) is untouched"
                    )
                optimizer.step()
                step += 1
                values = (terms.loss, terms.kl_nats.mean(), terms.recon_nats.mean(), grad_norm)
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
                if received:
                    checkpoint()
                    raise TrainingInterrupted(step, last, received[0])
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if not val_result and step >= t.steps and payload is not None:
        val_result = evaluate(model, val_loader, device, seed=config.seed)
    return {"step": step, "val": val_result, "checkpoint": str(last), "data": info.name}


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
