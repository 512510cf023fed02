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
import statistics
import time
from pathlib import Path
from typing import Any

from acn.config import Config, load_config, preset_names
from acn.errors import ConfigError
from acn.eval.measure import measure
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

# The paper's numbers (binarized MNIST, static binarisation, test set; notes, section 3).
PAPER = {
    "dataset": "binarized MNIST (static binarisation), test set",
    "table1": {
        "pixelcnn": 81.3,
        "gated_pixelcnn": 81.6,
        "gated_pixelvae": 79.5,
        "acn_unordered": 80.9,
        "acn_ordered": 73.9,
    },
    "table2": {"k1": 2.6, "k5": 3.5, "k10": 4.1, "tour": 3.6, "unconditional": 10.6, "recon": 70.3},
    "table3": {"pca": 0.828, "pixels": 0.894, "vae": 0.954, "gated_pixelvae": 0.979, "acn": 0.985},
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


# Table 1 row -> (model, key of its nats and bits_per_dim in the eval JSON).
TABLE1_SOURCES = {
    "pixelcnn": ("pixelcnn", "exact"),
    "vae": ("vae", "total"),
    "vae_iw": ("vae", "iw"),
    "acn_unordered": ("acn", "unordered"),
    "acn_ordered": ("acn", "ordered"),
    "acn_iw": ("acn", "iw"),
    "vae_deconv": ("vae_deconv", "total"),
    "acn_deconv_unordered": ("acn_deconv", "unordered"),
    "acn_deconv_ordered": ("acn_deconv", "ordered"),
}


def build_tables(evals: dict[str, dict]) -> dict[str, Any]:
    """Tables 1-3 (and their companions) from the five eval results."""
    n = {name: e["nats"] for name, e in evals.items()}
    cls = {name: e["classification"] for name, e in evals.items()}
    table1 = {row: n[model][key] for row, (model, key) in TABLE1_SOURCES.items()}
    table1_bits = {
        row: evals[model]["bits_per_dim"][key] for row, (model, key) in TABLE1_SOURCES.items()
    }

    def table2(name: str) -> dict[str, float | None]:
        kl = n[name]["kl"]
        keys = ("k1", "k5", "k10", "tour", "unconditional")
        return {key: kl[key] for key in keys} | {"recon": n[name]["recon"]}

    def table3(key: str) -> dict[str, float | None]:
        ref = cls["acn"]
        return {
            "pca": ref["pca"][key] if ref.get("pca") else None,
            "pixels": ref["pixels"][key] if ref.get("pixels") else None,
            "vae": cls["vae"][key],
            "acn": cls["acn"][key],
            "vae_deconv": cls["vae_deconv"][key],
            "acn_deconv": cls["acn_deconv"][key],
        }

    tables = {
        "table1": table1,
        "table1_bits_per_dim": table1_bits,
        "table2": table2("acn"),
        "table2_deconv": table2("acn_deconv"),
        "table3": table3("linear"),
        "table3_knn": table3("knn"),
        "pca_components": cls["acn"]["pca"]["components"] if cls["acn"].get("pca") else None,
    }
    return tables | {"checks": claims(tables)}


def claims(t: dict[str, Any]) -> dict[str, bool | None]:
    """The paper's qualitative claims, checked on one set of tables (None: a number is missing).
    Strict inequalities: a tie does not support a claim."""
    t1, t2, t3 = t["table1"], t["table2"], t["table3"]
    return {
        "kl_grows_with_k": _increasing(t2["k1"], t2["k5"], t2["k10"]),
        "tour_below_unconditional": _less(t2["tour"], t2["unconditional"]),
        "acn_codes_beat_vae_codes_linear": _less(t3["vae"], t3["acn"]),
        "acn_codes_beat_pca_linear": _less(t3["pca"], t3["acn"]),
        "acn_codes_beat_pixels_linear": _less(t3["pixels"], t3["acn"]),
        "acn_unordered_below_pixelcnn": _less(t1["acn_unordered"], t1["pixelcnn"]),
        "acn_ordered_below_unordered": _less(t1["acn_ordered"], t1["acn_unordered"]),
        "acn_ordered_below_pixelcnn": _less(t1["acn_ordered"], t1["pixelcnn"]),
    }


# The keys of build_tables() that hold numbers, averaged over seeds by over_seeds().
NUMERIC_TABLES = (
    "table1",
    "table1_bits_per_dim",
    "table2",
    "table2_deconv",
    "table3",
    "table3_knn",
)


def over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One seed's tables as they are; several seeds' as means, with ``std`` (the sample
    standard deviation of every number), ``per_seed``, the claims checked on the means, and
    ``checks_held``: in how many seeds each claim held."""
    if len(per_seed) == 1:
        return {k: v for k, v in per_seed[0].items() if k != "seed"}
    means, spread = {}, {}
    for key in NUMERIC_TABLES:
        columns = {row: [t[key][row] for t in per_seed] for row in per_seed[0][key]}
        means[key] = {row: _mean(values) for row, values in columns.items()}
        spread[key] = {row: _std(values) for row, values in columns.items()}
    means["pca_components"] = per_seed[0]["pca_components"]
    held = {
        claim: sum(t["checks"][claim] is True for t in per_seed) for claim in per_seed[0]["checks"]
    }
    return means | {
        "checks": claims(means),
        "checks_held": held,
        "std": spread,
        "per_seed": per_seed,
    }


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.fmean(values)


def _std(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.stdev(values)


def _less(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a < b


def _increasing(*values: float | None) -> bool | None:
    if any(v is None for v in values):
        return None
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def _cell(value: float | None, spec: str, std: float | None = None) -> str:
    if value is None:
        return "-"
    return format(value, spec) + (f" ± {format(std, spec)}" if std is not None else "")


TABLE1_ROWS = (
    # Our decoder alone is a gated PixelCNN: beside the paper's Gated PixelCNN (81.6), not its
    # original PixelCNN (81.3).
    ("pixelcnn", "Gated PixelCNN, no latent (exact)", "gated_pixelcnn"),
    ("vae", "VAE, PixelCNN decoder (recon + KL)", None),
    ("vae_iw", "VAE, PixelCNN decoder (IW bound)", None),
    ("acn_unordered", "ACN unordered (recon + unconditional KL)", "acn_unordered"),
    ("acn_iw", "ACN, unconditional density (IW bound)", None),
    ("acn_ordered", "ACN ordered (recon + tour KL)", "acn_ordered"),
    ("vae_deconv", "VAE, deconv decoder (recon + KL)", None),
    ("acn_deconv_unordered", "ACN unordered, deconv decoder", None),
    ("acn_deconv_ordered", "ACN ordered, deconv decoder", None),
)
TABLE2_ROWS = (
    ("k1", "KL, random neighbour of K = 1"),
    ("k5", "KL, K = 5"),
    ("k10", "KL, K = 10"),
    ("tour", "KL, greedy tour"),
    ("unconditional", "KL, unconditional density"),
    ("recon", "reconstruction"),
)
TABLE3_ROWS = (
    ("pca", "PCA"),
    ("pixels", "pixels"),
    ("vae", "VAE codes (PixelCNN decoder)"),
    ("acn", "ACN codes (PixelCNN decoder)"),
    ("vae_deconv", "VAE codes (deconv decoder)"),
    ("acn_deconv", "ACN codes (deconv decoder)"),
)


def format_tables(t: dict[str, Any]) -> str:
    """The three tables as Markdown, ours beside the paper's (means ± standard deviations when
    there are several seeds)."""
    paper = t["paper"]
    seeds = t.get("seeds", [None])
    std = t.get("std", {})

    def cell(table: str, key: str, spec: str) -> str:
        return _cell(t[table][key], spec, std.get(table, {}).get(key))

    spread = _seeds_sentence(seeds)
    lines = [
        f"# Tables on {t['data']}, {t['split']} split ({t['num_examples']} images)",
        "",
        f"Ours: nats per image, {t['z_samples']} latent samples per image; accuracies as "
        f"fractions.{spread} Paper: {paper['dataset']}. The datasets differ, so compare "
        "orderings and gaps, not values. Definitions: `acn.eval.measure` and docs/evaluation.md.",
        "",
        "## Table 1: compression",
        "",
        "| model | nats | bits/dim | paper nats |",
        "|---|---:|---:|---:|",
    ]
    for key, label, paper_key in TABLE1_ROWS:
        ref = paper["table1"].get(paper_key) if paper_key else None
        prefix = "<= " if key == "acn_ordered" and ref is not None else ""
        lines.append(
            f"| {label} | {cell('table1', key, '.2f')} | "
            f"{cell('table1_bits_per_dim', key, '.4f')} | "
            f"{prefix}{_cell(ref, '.1f')} |"
        )
    lines += [
        "",
        "## Table 2: ACN's costs",
        "",
        "| term | ACN, PixelCNN decoder | ACN, deconv decoder | paper |",
        "|---|---:|---:|---:|",
    ]
    for key, label in TABLE2_ROWS:
        lines.append(
            f"| {label} | {cell('table2', key, '.2f')} | "
            f"{cell('table2_deconv', key, '.2f')} | {_cell(paper['table2'][key], '.1f')} |"
        )
    lines += [
        "",
        f"## Table 3: classification from codes (PCA: {t['pca_components']} components)",
        "",
        "| features | linear | k-NN | paper (linear) |",
        "|---|---:|---:|---:|",
    ]
    for key, label in TABLE3_ROWS:
        lines.append(
            f"| {label} | {cell('table3', key, '.3f')} | {cell('table3_knn', key, '.3f')}"
            f" | {_cell(paper['table3'].get(key), '.3f')} |"
        )
    lines += _claims_lines(t)
    return "\n".join([*lines, *_runs_table(t["runs"])]) + "\n"


def _seeds_sentence(seeds: list[int | None]) -> str:
    """What the numbers are over: several seeds' means, one seed, or (old tables) unknown."""
    if len(seeds) > 1:
        return (
            f" Each number is the mean ± standard deviation over {len(seeds)} training seeds "
            f"({', '.join(map(str, seeds))}); the claims are checked on the means."
        )
    return f" One training seed ({seeds[0]})." if seeds[0] is not None else ""


def _claims_lines(t: dict[str, Any]) -> list[str]:
    """The claims' verdicts, with how many seeds each held in when there are several."""
    lines = ["", "## The paper's claims, checked on these numbers", ""]
    held = t.get("checks_held")
    for key, value in t["checks"].items():
        verdict = {True: "yes", False: "**no**", None: "n/a"}[value]
        if held is not None:
            verdict += f" (held in {held[key]} of {len(t['seeds'])} seeds)"
        lines.append(f"- {key.replace('_', ' ')}: {verdict}")
    return lines


def _runs_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The runs behind the tables, with the checkpoint each was evaluated at."""
    lines = [
        "",
        "## Runs",
        "",
        "| model | seed | run directory | steps | evaluated |",
        "|---|---:|---|---:|---|",
    ]
    for name, run in runs.items():
        # Records written before best checkpoints (and seeds) existed lack those fields.
        evaluated = f"{run.get('checkpoint', 'last')} (step {run.get('eval_step', run['steps'])})"
        lines.append(
            f"| {run.get('model', name)} | {run.get('seed', '-')} | `{run['run_dir']}` | "
            f"{run['steps']} | {evaluated} |"
        )
    return lines
