"""The paper's three tables from ``acn reproduce``'s evaluations: built per seed, averaged over
seeds, checked against the paper's qualitative claims, and written as Markdown beside the
paper's numbers. Pure functions of the eval JSONs; nothing here trains or reads files.
"""

from __future__ import annotations

import statistics
from typing import Any

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
