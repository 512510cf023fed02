"""``acn ablate DATASET``: does the ACN's prior need a network? The question the paper left open.

The ACN is trained with several conditional priors p(z | c_hat), and several ways of drawing
c_hat, under one encoder, decoder, data set, training budget and set of seeds (the dataset's
``DATASET-acn`` preset and the caller's overrides; only the variant's own keys differ). Each run is
evaluated on the test split exactly as ``acn reproduce`` evaluates its ACN
(:func:`acn.experiments.reproduce.train_and_evaluate`), and one table is written:
``OUT/ablation.json`` and ``OUT/ablation.md``, with the mean and the sample standard deviation
over seeds, and each variant's difference from the paper's prior paired by seed (same seed, same
initial encoder and decoder draws, same batches), which is how far a difference stands out from
the spread.

=============  ============================================  ==================================
variant        p(z | c_hat) and the draw of c_hat            what it tests
=============  ============================================  ==================================
paper          MLP (3 x 512 tanh, skips), M-mixture per dim  the paper's prior
mlp_gaussian   the same MLP, one Gaussian per dimension      is the mixture needed?
linear         N(A c_hat + b, diag s^2)                      is a network needed at all?
shift          N(c_hat, diag s^2), no parameter on c_hat     the simplest conditional prior
random         the paper's prior, c_hat uniform over bank    the association, or the network?
k1, k20        the paper's prior, trained with K = 1 / 20    how local the association must be
=============  ============================================  ==================================

Run folders are ``OUT/DATASET-acn`` (the paper's variant, first seed: the name ``acn reproduce``
gives its ACN, so ``--out`` at a reproduce or demo folder reuses that run), and
``OUT/DATASET-acn-VARIANT`` otherwise, with ``-seedS`` for extra seeds. Finished runs and their
matching evaluations are reused, unfinished ones resumed.

The training step time of each variant is measured after the trainings, all variants side by
side in alternating rounds in one process (so drift hits all alike), not taken from the
trainings, whose wall time depends on whatever else the machine ran.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from acn.config import Config, load_config
from acn.errors import ConfigError
from acn.experiments.reproduce import run_dir_name, train_and_evaluate
from acn.files import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

# variant -> (overrides on DATASET-acn, what it tests)
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "paper": ((), "the paper's prior: MLP, per-dimension mixture"),
    "mlp_gaussian": (("model.prior_components=1",), "the same MLP, one Gaussian per dimension"),
    "linear": (
        ("model.prior_network=linear", "model.prior_components=1"),
        "N(A c_hat + b, diag s^2): no network",
    ),
    "shift": (
        ("model.prior_network=shift", "model.prior_components=1"),
        "N(c_hat, diag s^2): no parameter on c_hat",
    ),
    "random": (("codebank.neighbours=random",), "paper's prior, c_hat uniform over the bank"),
    "k1": (("codebank.k=1",), "paper's prior, trained with K = 1"),
    "k20": (("codebank.k=20",), "paper's prior, trained with K = 20"),
}

# Row keys of the table, from one eval JSON (see acn.eval.measure).
NATS_KEYS = ("ordered", "unordered")
KL_KEYS = ("tour", "unconditional", "k1", "k5", "k10")
PROBE_KEYS = ("linear", "knn")


def parse_variants(text: str | None) -> list[str]:
    """``a,b,...`` -> the variants, in the order given; None or empty: all of them."""
    if not text:
        return list(VARIANTS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise ConfigError(
            f"unknown ablation variant(s) {', '.join(unknown) or repr(text)}; "
            f"choose from: {', '.join(VARIANTS)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"a variant is named twice in {text!r}")
    return names


def variant_run_name(dataset: str, variant: str, seed: int | None) -> str:
    """``DATASET-acn`` for the paper's variant, ``DATASET-acn-VARIANT`` for the others
    (``-seedS`` after either for an extra training seed)."""
    name = "acn" if variant == "paper" else f"acn-{variant.replace('_', '-')}"
    return run_dir_name(dataset, name, seed)


def row(result: dict[str, Any]) -> dict[str, float | None]:
    """One evaluation's numbers for the table (nats per image, accuracies as fractions)."""
    n, cls = result["nats"], result["classification"]
    return (
        {key: n[key] for key in NATS_KEYS}
        | {f"kl_{key}": n["kl"][key] for key in KL_KEYS}
        | {"recon": n["recon"]}
        | {f"probe_{key}": cls.get(key) for key in PROBE_KEYS}
    )


def prior_parameters(config: Config) -> int:
    """Parameters of the prior the config builds (the code bank is data, not counted)."""
    from acn.nn.build import make_prior

    prior = make_prior(config.model)
    return sum(p.numel() for p in prior.parameters()) if prior is not None else 0


def summarise(per_seed: dict[str, list[dict[str, float | None]]]) -> dict[str, Any]:
    """Mean, sample std and the difference from ``paper`` paired by seed, for every variant.

    Args:
        per_seed: variant -> one row per seed, seeds in the same order for every variant.
    """
    out: dict[str, Any] = {}
    base = per_seed.get("paper")
    for variant, rows in per_seed.items():
        keys = rows[0].keys()
        entry: dict[str, Any] = {
            "mean": {k: _mean([r[k] for r in rows]) for k in keys},
            "std": {k: _std([r[k] for r in rows]) for k in keys},
        }
        if base is not None and variant != "paper":
            diffs = {k: [_sub(r[k], b[k]) for r, b in zip(rows, base, strict=True)] for k in keys}
            entry["minus_paper"] = {k: _mean(v) for k, v in diffs.items()}
            entry["minus_paper_std"] = {k: _std(v) for k, v in diffs.items()}
        out[variant] = entry
    return out


def ablate(
    dataset: str,
    out: str | Path,
    overrides: list[str] | None = None,
    variants: list[str] | None = None,
    seeds: int = 3,
    samples: int = 100,
    seed: int | None = None,
    progress: bool = True,
    checkpoint: str = "best",
    time_rounds: int = 6,
) -> dict[str, Any]:
    """Train (or reuse) every variant for every seed, evaluate, time the steps, write the table.

    Args:
        dataset: a dataset with a ``DATASET-acn`` preset.
        out: output folder.
        overrides: ``key=value`` settings for every run (they must not set a variant's own keys).
        variants: names of :data:`VARIANTS` (default: all).
        seeds: training seeds (the config's ``seed`` and the ones after it).
        samples: latents per image in the evaluation.
        seed: evaluation seed (default: each run's seed).
        progress: show progress bars.
        checkpoint: ``best`` (lowest validation total) or ``last``.
        time_rounds: alternating rounds of step timing (0 skips the timing).

    Returns:
        The content of ``ablation.json``.
    """
    variants = variants or list(VARIANTS)
    _check_request(dataset, overrides or [], seeds, samples)
    out = Path(out)
    started = time.perf_counter()
    first = load_config(f"{dataset}-acn", list(overrides or [])).seed
    training_seeds = [first + i for i in range(seeds)]
    # Every config resolved before anything trains, so a bad one fails at once.
    configs = {
        (v, s): load_config(f"{dataset}-acn", [*(overrides or []), *VARIANTS[v][0], f"seed={s}"])
        for v in variants
        for s in training_seeds
    }
    per_seed: dict[str, list[dict[str, float | None]]] = {v: [] for v in variants}
    runs: dict[str, Any] = {}
    for s in training_seeds:  # seed-major: an interrupted call leaves whole seeds behind
        for v in variants:
            run_dir = out / variant_run_name(dataset, v, None if s == first else s)
            result, record = train_and_evaluate(
                configs[v, s], run_dir, samples, seed, progress, checkpoint
            )
            per_seed[v].append(row(result))
            runs[run_dir.name] = record | {"variant": v, "seed": s}
    firsts = {v: configs[v, first] for v in variants}
    table = {
        "dataset": dataset,
        "split": "test",
        "num_examples": result["num_examples"],
        "z_samples": samples,
        "seeds": training_seeds,
        "overrides": list(overrides or []),
        "variants": _variant_entries(firsts, per_seed, step_times(firsts, time_rounds)),
        "step_timing": {"rounds": time_rounds, "threads": torch.get_num_threads()},
        "runs": runs,
        "wall_seconds_this_call": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "ablation.json", table)
    markdown = format_ablation(table)
    atomic_write_bytes(out / "ablation.md", lambda f: f.write(markdown.encode()))
    return table


def _check_request(dataset: str, overrides: list[str], seeds: int, samples: int) -> None:
    from acn.config import preset_names

    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}")
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if f"{dataset}-acn" not in preset_names():
        have = sorted(p[: -len("-acn")] for p in preset_names() if p.endswith("-acn"))
        raise ConfigError(f"no preset {dataset}-acn; datasets with presets: {', '.join(have)}")
    _refuse_variant_keys(overrides)


def _variant_entries(
    configs: dict[str, Config],
    per_seed: dict[str, list[dict[str, float | None]]],
    timing: dict[str, float],
) -> dict[str, Any]:
    """Each variant's settings, size, step time, every seed's row and the summary."""
    summary = summarise(per_seed)
    return {
        v: {
            "overrides": list(VARIANTS[v][0]),
            "tests": VARIANTS[v][1],
            "prior_parameters": prior_parameters(config),
            "step_ms": timing.get(v),
            "per_seed": per_seed[v],
        }
        | summary[v]
        for v, config in configs.items()
    }


def _refuse_variant_keys(overrides: list[str]) -> None:
    """The variants differ in these keys alone; an override of one would blur the question."""
    own = {o.split("=", 1)[0] for extra, _ in VARIANTS.values() for o in extra}
    clash = sorted({o.split("=", 1)[0].strip() for o in overrides} & own)
    if clash:
        raise ConfigError(
            f"{', '.join(clash)} is set by the ablation's variants; leave it out of the overrides"
        )


def step_times(configs: dict[str, Config], rounds: int, per_round: int = 5) -> dict[str, float]:
    """Median training step in milliseconds of each config, timed side by side in alternating
    rounds after three warm-up steps each (``rounds`` 0: nothing is timed)."""
    if rounds < 1:
        return {}
    from acn.experiments.bench import step_timer

    device = torch.device("cpu")
    timers = {v: step_timer(c, device)[0] for v, c in configs.items()}
    for fn in timers.values():
        for i in range(3):
            fn(i)
    times: dict[str, list[float]] = {v: [] for v in timers}
    order = list(timers)
    for r in range(rounds):
        for v in order if r % 2 == 0 else order[::-1]:
            times[v] += [timers[v](r * per_round + i) for i in range(per_round)]
    return {v: 1000 * statistics.median(t) for v, t in times.items()}


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.fmean(values)


def _std(values: list[float | None]) -> float | None:
    if any(v is None for v in values) or len(values) < 2:
        return None
    return statistics.stdev(values)


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


COLUMNS = (
    ("ordered", "ordered", ".2f"),
    ("unordered", "unordered", ".2f"),
    ("kl_tour", "KL tour", ".2f"),
    ("kl_unconditional", "KL uncond.", ".2f"),
    ("kl_k1", "KL K=1", ".2f"),
    ("kl_k5", "KL K=5", ".2f"),
    ("kl_k10", "KL K=10", ".2f"),
    ("recon", "recon", ".2f"),
    ("probe_linear", "linear", ".3f"),
    ("probe_knn", "k-NN", ".3f"),
)


def format_ablation(t: dict[str, Any]) -> str:
    """The ablation as Markdown: the means ± std over seeds, then each variant's paired
    difference from the paper's prior."""
    seeds = t["seeds"]
    head = "| variant | " + " | ".join(label for _, label, _ in COLUMNS)
    head += " | prior params | step ms |"
    rule = "|---|" + "---:|" * (len(COLUMNS) + 2)
    lines = [
        f"# Prior ablation on {t['dataset']}, {t['split']} split ({t['num_examples']} images)",
        "",
        f"Nats per image ({t['z_samples']} latent samples per image), probe accuracies as "
        f"fractions; mean ± sample std over {len(seeds)} training seed(s) {seeds}. Step times: "
        f"median of side-by-side rounds on {t['step_timing']['threads']} thread(s).",
        "",
        "## Means",
        "",
        head,
        rule,
    ]
    for v, entry in t["variants"].items():
        cells = [_cell(entry["mean"][k], spec, entry["std"][k]) for k, _, spec in COLUMNS]
        step = entry["step_ms"]
        lines.append(
            f"| {v} | " + " | ".join(cells) + f" | {entry['prior_parameters']:,} | "
            f"{'-' if step is None else format(step, '.0f')} |"
        )
    diffs = [(v, e) for v, e in t["variants"].items() if "minus_paper" in e]
    if diffs:
        lines += [
            "",
            "## Difference from the paper's prior, paired by seed (mean ± std of the differences)",
            "",
            "Negative nats and positive accuracies favour the variant.",
            "",
            "| variant | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        for v, e in diffs:
            cells = [
                _cell(e["minus_paper"][k], "+" + spec, e["minus_paper_std"][k])
                for k, _, spec in COLUMNS
            ]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "Variants:", ""]
    lines += [
        f"- `{v}`: {e['tests']}" + (f" (`{' '.join(e['overrides'])}`)" if e["overrides"] else "")
        for v, e in t["variants"].items()
    ]
    return "\n".join(lines) + "\n"


def _cell(value: float | None, spec: str, std: float | None) -> str:
    if value is None:
        return "-"
    return format(value, spec) + (f" ± {format(std, spec.lstrip('+'))}" if std is not None else "")
