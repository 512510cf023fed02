"""The digits demo: ``acn reproduce`` over the three digits presets, and the report.

ACN and its two baselines train into ``OUT/<preset>`` (a finished run is reused and an
unfinished one resumed, so re-running the demo costs only what is missing) and are evaluated on
the test split, exactly as :func:`acn.experiments.reproduce.train_and_evaluate` does for the
paper's tables (the ACN's total is its unordered, IID code length). The comparison is written to
``OUT/summary.json`` and ``OUT/summary.md``; the demo ends with the HTML report of the three
runs, ``OUT/report/index.html``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from acn.config import load_config
from acn.experiments.reproduce import train_and_evaluate
from acn.files import atomic_write_bytes, atomic_write_json
from acn.viz.report import build_report

log = logging.getLogger(__name__)
PRESETS = ("digits-acn", "digits-vae", "digits-pixelcnn")
DEMO_SAMPLES = 20  # latents per test image (acn reproduce uses 100)
LABELS = {"digits-acn": "ACN", "digits-vae": "VAE", "digits-pixelcnn": "PixelCNN (no latent)"}


def run_demo(
    out: str | Path,
    overrides: list[str] | None = None,
    samples: int = DEMO_SAMPLES,
    report: bool = True,
    checkpoint: str = "best",
) -> list[dict[str, Any]]:
    """Train (or reuse) the three digits models and evaluate them on the test split.

    Args:
        out: folder for the three runs and the summary.
        overrides: ``key=value`` settings applied to every preset (e.g. ``train.steps=500``).
        samples: latents per image in the evaluation.
        report: end by writing the HTML report of the three runs to ``OUT/report/index.html``.
        checkpoint: which checkpoint of each run is evaluated and shown: ``best`` (lowest
            validation total) or ``last``.

    Returns:
        One row per model: ``model``, ``preset``, ``steps``, ``train_seconds``, ``kl_nats``,
        ``recon_nats``, ``total_nats`` (the IID number: ACN unordered, VAE recon + KL, PixelCNN
        exact), ``ordered_nats`` (ACN only), ``iw_nats``, ``bits_per_dim`` (of the total),
        ``linear_accuracy`` and ``num_examples``; each model's full evaluation is written to
        ``OUT/<preset>/eval-test.json``.
    """
    out = Path(out)
    configs = {preset: load_config(preset, overrides) for preset in PRESETS}
    rows = []
    for preset, config in configs.items():
        progress = config.train.progress
        result, run = train_and_evaluate(config, out / preset, samples, None, progress, checkpoint)
        rows.append(_row(preset, result, run))
        log.info("%s: test total %.2f nats", preset, result["nats"]["total"])
    atomic_write_json(out / "summary.json", {"split": "test", "z_samples": samples, "rows": rows})
    markdown = format_table(rows)
    atomic_write_bytes(out / "summary.md", lambda f: f.write(markdown.encode()))
    if report:
        seed = configs[PRESETS[0]].seed
        runs = [out / preset for preset in PRESETS]
        build_report(runs, out / "report", seed=seed, checkpoint=checkpoint)
    return rows


def _row(preset: str, result: dict, run: dict[str, Any]) -> dict[str, Any]:
    """The summary row of one model's evaluation."""
    n = result["nats"]
    kl = n["kl"]["unconditional"] if n["kl"]["unconditional"] is not None else n["kl"]["prior"]
    return {
        "model": LABELS[preset],
        "preset": preset,
        "steps": run["steps"],
        "checkpoint": run["checkpoint"],
        "eval_step": run["eval_step"],
        "train_seconds": run["train_seconds_this_call"],
        "kl_nats": kl if kl is not None else 0.0,
        "recon_nats": n["recon"],
        "total_nats": n["total"],
        "ordered_nats": n["ordered"],
        "iw_nats": n["iw"],
        "bits_per_dim": result["bits_per_dim"]["total"],
        "linear_accuracy": result["classification"]["linear"],
        "num_examples": result["num_examples"],
    }


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the demo's rows."""
    lines = [
        "| model | KL | reconstruction | total | bits/dim | ACN ordered | IW bound "
        "| linear acc. | evaluated | steps | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['kl_nats']:.2f} | {r['recon_nats']:.2f} | {r['total_nats']:.2f} "
            f"| {r['bits_per_dim']:.3f} | {_cell(r['ordered_nats'], '.2f')} "
            f"| {_cell(r['iw_nats'], '.2f')} | {_cell(r['linear_accuracy'], '.3f')} "
            f"| {r['checkpoint']} (step {r['eval_step']}) | {r['steps']} "
            f"| {r['train_seconds']:.0f} |"
        )
    note = (
        "\nTest split, nats per image. total = KL + reconstruction, an IID code length: for the "
        "ACN the KL is under the unconditional density fitted to the training codes (the "
        "unordered number); ACN ordered pays the KL along a greedy tour through the test codes "
        "instead; IW bound: importance-weighted bound on -log p(x). Linear accuracy: "
        "logistic regression on the codes. evaluated: the checkpoint measured (best: the "
        "lowest validation total seen in training). Definitions: docs/evaluation.md.\n"
    )
    return "\n".join(lines) + "\n" + note
