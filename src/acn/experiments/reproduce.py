"""``acn reproduce DATASET``: the paper's three tables for our models, beside the paper's numbers.

Five models are trained (or reused) under ``OUT``, one run directory each, all from the
dataset's presets with the same encoder and decoder sizes:

==================  ==========================  ===============================================
run directory       preset + overrides          role
==================  ==========================  ===============================================
DATASET-acn         DATASET-acn                 ACN, gated PixelCNN decoder
DATASET-vae         DATASET-vae                 VAE baseline, same encoder and decoder
DATASET-pixelcnn    DATASET-pixelcnn            the decoder alone, no latent
DATASET-acn-deconv  DATASET-acn, deconv         ACN, conditionally independent decoder
DATASET-vae-deconv  DATASET-vae, deconv         VAE, conditionally independent decoder
==================  ==========================  ===============================================

Each is evaluated on the test split by :func:`acn.eval.measure.measure` (its JSON beside the run as
``eval-test.json``), and the tables are written to ``OUT/tables.json`` and ``OUT/tables.md``.
The three digits presets are the demo's, so ``--out`` pointing at a demo folder reuses its runs.

With ``seeds=N`` every model is trained with the N training seeds ``s, s + 1, ...`` (``s`` the
config's ``seed``): the first seed's runs keep the names above (so one-seed folders are reused),
the others are ``DATASET-acn-seed1`` and so on. The tables then hold the mean over seeds, with
the sample standard deviation beside them (``std``), every seed's own tables (``per_seed``), and
the paper's claims checked on the means, with how many seeds each held in (``checks_held``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from acn.config import Config, load_config, preset_names
from acn.errors import ConfigError
from acn.eval.measure import measure
from acn.experiments.tables import PAPER, build_tables, format_tables, over_seeds
from acn.files import atomic_write_bytes, atomic_write_json
from acn.store.checkpoint import run_checkpoint, which_checkpoint
from acn.train.loop import ensure_trained

log = logging.getLogger(__name__)

# name -> (preset suffix, extra overrides)
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "acn": ("acn", ()),
    "vae": ("vae", ()),
    "pixelcnn": ("pixelcnn", ()),
    "acn_deconv": ("acn", ("model.decoder=deconv",)),
    "vae_deconv": ("vae", ("model.decoder=deconv",)),
}


def run_dir_name(dataset: str, name: str, seed: int | None = None) -> str:
    """``acn_deconv`` -> ``DATASET-acn-deconv`` (the first training seed), or
    ``DATASET-acn-deconv-seed7`` for the run of an extra training seed 7."""
    return f"{dataset}-{name.replace('_', '-')}" + (f"-seed{seed}" if seed is not None else "")


def _evaluate(
    run_dir: Path,
    last: dict[str, Any],
    checkpoint: str,
    samples: int,
    seed: int | None,
    progress: bool,
) -> dict:
    """The test-split eval of the run's ``checkpoint`` (``best`` or ``last``), reused from
    ``eval-test.json`` when it is of those weights and that protocol. ``last`` is the finished
    run's last checkpoint, which records the best one's step: the weights are read only to
    evaluate."""
    chosen = run_checkpoint(run_dir, checkpoint)
    # A best.pt without its record in last.pt (files moved by hand) matches no cached eval.
    best_step = (last.get("best") or {}).get("step", -1)
    step = int(best_step if chosen.name == "best.pt" else last["step"])
    path = run_dir / "eval-test.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            same = (
                cached.get("step") == step
                and cached.get("which_checkpoint") == which_checkpoint(chosen)
                and cached["protocol"]["z_samples"] in (samples, 0)
                and (seed is None or cached["protocol"]["seed"] == seed)
            )
            if same:
                return cached
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or from another version: evaluate again
    result = measure(chosen, "test", samples=samples, seed=seed, progress=progress)
    atomic_write_json(path, result)
    return result


def train_and_evaluate(
    config: Config,
    run_dir: Path,
    samples: int,
    seed: int | None,
    progress: bool,
    checkpoint: str = "best",
) -> tuple[dict, dict[str, Any]]:
    """Train (or reuse, or resume) one model, then evaluate its ``checkpoint`` (``best`` on
    validation, or ``last``) on the test split (or reuse its matching ``eval-test.json``).

    Returns:
        ``(eval result, run record)``: the record has ``run_dir``, ``steps`` (trained), the
        evaluated ``checkpoint`` and its ``eval_step``, and the seconds this call spent training
        and evaluating.
    """
    t0 = time.perf_counter()
    payload = ensure_trained(config, run_dir)
    t1 = time.perf_counter()
    result = _evaluate(run_dir, payload, checkpoint, samples, seed, progress)
    log.info("%s: done in %.0f s", run_dir.name, time.perf_counter() - t0)
    return result, {
        "run_dir": str(run_dir),
        "steps": int(payload["step"]),
        "checkpoint": result["which_checkpoint"],
        "eval_step": result["step"],
        "train_seconds_this_call": round(t1 - t0, 1),
        "eval_seconds_this_call": round(time.perf_counter() - t1, 1),
    }


def _check_presets(dataset: str) -> None:
    """One clear error when ``dataset`` lacks any of the three presets reproduce needs."""
    missing = [
        f"{dataset}-{s}"
        for s in ("acn", "vae", "pixelcnn")
        if f"{dataset}-{s}" not in preset_names()
    ]
    if missing:
        datasets = sorted({p.rsplit("-", 1)[0] for p in preset_names() if p.endswith("-acn")})
        raise ConfigError(
            f"no presets {', '.join(missing)} for dataset {dataset!r}; "
            f"datasets with presets: {', '.join(datasets)}"
        )


def reproduce(
    dataset: str,
    out: str | Path,
    overrides: list[str] | None = None,
    samples: int = 100,
    seed: int | None = None,
    progress: bool = True,
    checkpoint: str = "best",
    seeds: int = 1,
) -> dict[str, Any]:
    """Train or reuse the five models, evaluate them, write ``tables.json`` and ``tables.md``.

    Args:
        dataset: a dataset with ``DATASET-acn``, ``-vae`` and ``-pixelcnn`` presets.
        out: output folder.
        overrides: ``key=value`` settings for every model (e.g. ``train.steps=100000``).
        samples: latents per image in the evaluation.
        seed: evaluation seed (default: each run's seed).
        progress: show progress bars.
        checkpoint: which checkpoint of each run is evaluated: ``best`` (the lowest validation
            total; chosen on validation, never on test) or ``last``.
        seeds: training seeds per model (the config's ``seed`` and the ones after it); the
            tables are then means with their standard deviations.

    Returns:
        The content of ``tables.json``.
    """
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}")
    _check_presets(dataset)
    out = Path(out)
    started = time.perf_counter()
    # Every config is resolved before anything trains, so a bad override fails at once.
    first = load_config(f"{dataset}-acn", list(overrides or [])).seed
    training_seeds = [first + i for i in range(seeds)]
    configs = {
        (name, s): load_config(f"{dataset}-{suffix}", [*extra, *(overrides or []), f"seed={s}"])
        for s in training_seeds
        for name, (suffix, extra) in MODELS.items()
    }
    per_seed, runs = [], {}
    for s in training_seeds:
        evals = {}
        for name, (suffix, extra) in MODELS.items():
            run_dir = out / run_dir_name(dataset, name, None if s == first else s)
            evals[name], record = train_and_evaluate(
                configs[name, s], run_dir, samples, seed, progress, checkpoint
            )
            runs[run_dir.name] = record | {
                "model": name,
                "seed": s,
                "preset": f"{dataset}-{suffix}",
                "overrides": list(extra),
            }
        per_seed.append(build_tables(evals) | {"seed": s})
    tables = over_seeds(per_seed)
    tables |= {
        "dataset": dataset,
        "data": evals["acn"]["data"]["name"],
        "split": "test",
        "num_examples": evals["acn"]["num_examples"],
        "z_samples": samples,
        "seeds": training_seeds,
        "runs": runs,
        "paper": PAPER,
        "wall_seconds_this_call": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "tables.json", tables)
    markdown = format_tables(tables)
    atomic_write_bytes(out / "tables.md", lambda f: f.write(markdown.encode()))
    return tables
