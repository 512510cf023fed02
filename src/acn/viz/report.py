"""``acn report``: one self-contained HTML page about one or more runs.

The page holds, per run: its config, training curves, daydreams, reconstructions, neighbours,
prior and unconditional samples, and latent maps (PCA, t-SNE); across runs: their evaluation
tables side by side, read from the evaluation files in each run's folder (any ``*.json``
that ``acn eval`` wrote, recognised by its content: ``acn eval RUN --out RUN/eval.json``,
``acn reproduce`` and the demo). Every image is embedded as a data URI,
so the single ``index.html`` opens anywhere with no network. The codes, labels and thumbnails
are also exported for TensorBoard's projector under ``OUT/projector/<run>``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from acn.data.info import SPLITS
from acn.errors import ConfigError
from acn.eval.load import LoadedRun, load_run
from acn.eval.measure import FORMAT as EVAL_FORMAT
from acn.files import atomic_write_bytes
from acn.viz.grid import plot_png, png_bytes
from acn.viz.latent_maps import export_projector, latent_maps
from acn.viz.samples import sample_picture

log = logging.getLogger(__name__)

EVAL_ROWS = (
    ("reconstruction", ("nats", "recon")),
    ("KL, K = 1", ("nats", "kl", "k1")),
    ("KL, K = 5", ("nats", "kl", "k5")),
    ("KL, K = 10", ("nats", "kl", "k10")),
    ("KL, greedy tour", ("nats", "kl", "tour")),
    ("KL, unconditional density", ("nats", "kl", "unconditional")),
    ("KL, prior (VAE)", ("nats", "kl", "prior")),
    ("ordered total", ("nats", "ordered")),
    ("unordered total", ("nats", "unordered")),
    ("total (IID)", ("nats", "total")),
    ("IW bound", ("nats", "iw")),
    ("bits/dim (total)", ("bits_per_dim", "total")),
    ("linear accuracy", ("classification", "linear")),
    ("k-NN accuracy", ("classification", "knn")),
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { font-size: .85em; color: #555; max-width: 520px; }
img { image-rendering: pixelated; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { color: #555; font-size: .9em; }
"""

# Marks the page once every image has decoded, so a headless browser can check it.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-loaded", String(ok.length));
});
"""


def _img(data: bytes, alt: str, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _curves_png(metrics_path: Path) -> bytes | None:
    """Training (lines) and validation (points) loss, KL and reconstruction against step."""
    if not metrics_path.exists():
        return None
    train, val = [], []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        (val if record.get("split") == "val" else train).append(record)
    if not train and not val:
        return None
    panels = (
        ("loss", "total_nats", "loss (nats)"),
        ("kl_nats", "kl_nats", "KL (nats)"),
        ("recon_nats", "recon_nats", "reconstruction (nats)"),
    )

    def draw(fig, axes):
        for ax, (train_key, val_key, title) in zip(axes, panels, strict=True):
            ax.plot([r["step"] for r in train], [r[train_key] for r in train], label="train")
            ax.plot([r["step"] for r in val], [r[val_key] for r in val], "o-", label="validation")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step", fontsize=9)
            ax.legend(fontsize=8, frameon=False)

    return plot_png(draw, figsize=(12, 3.2), dpi=90, ncols=3)


def _evals(run_dir: Path) -> dict[str, dict]:
    """The run's evaluations by split: every JSON file in the run folder that ``acn eval``
    wrote, recognised by its content whatever its name; of several for a split, the newest."""
    found = {}
    for path in sorted(run_dir.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, OSError):
            log.warning("skipping unreadable %s", path)
            continue
        if isinstance(value, dict) and value.get("format") == EVAL_FORMAT:
            found[str(value.get("split"))] = value
    return found


def _dig(tree: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1.5 else f"{value:.2f}"
    return html.escape(str(value))


def _eval_table(names: list[str], evals: list[dict | None]) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    splits = "".join(f"<td>{_cell(e.get('split') if e else None)}</td>" for e in evals)
    rows = [f"<tr><td>split</td>{splits}</tr>"]
    for label, keys in EVAL_ROWS:
        cells = "".join(f"<td>{_cell(_dig(e, keys) if e else None)}</td>" for e in evals)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return f'<table class="eval"><tr><th>nats per image</th>{head}</tr>{"".join(rows)}</table>'


def _pictures(run: LoadedRun, seed: int, split: str, num: int, steps: int) -> list[str]:
    latent = run.model.kind != "pixelcnn"
    conditional = run.model.kind == "acn"
    modes = [
        (
            "daydream",
            conditional,
            "Daydreams: each row starts from a real image; every step "
            "samples z ~ p(z | code of the last image), then x ~ r(x|z).",
        ),
        (
            "reconstruct",
            latent,
            "Reconstructions: decoder samples from z ~ q(z|x) of the real "
            "image in the first column.",
        ),
        ("neighbours", latent, "The nearest training images to each real image, by code."),
        ("prior", conditional, "Prior samples: x ~ r(x|z), z ~ p(z | code of the real image)."),
        (
            "unconditional",
            True,
            "Samples with no starting image (z from the unconditional "
            "density over codes, the VAE's prior, or no z for the decoder alone).",
        ),
    ]
    out = []
    for mode, applies, caption in modes:
        if not applies:
            continue
        started = time.perf_counter()
        picture = sample_picture(
            run, mode, num=num, steps=steps, per_image=steps, seed=seed, split=split
        )
        seconds = time.perf_counter() - started
        log.info("%s %s: %.1f s", run.name, mode, seconds)
        # The decoder samples pixel by pixel: at 28x28 and up the time is part of the result.
        timing = f" Drawn in {seconds:.1f} s on {run.device.type}."
        out.append(_img(png_bytes(picture.image), f"{run.name} {mode}", caption + timing))
    return out


def _latent_maps(run: LoadedRun, split: str, seed: int, projector_dir: Path) -> list[str]:
    if run.model.kind == "pixelcnn":
        return []
    dataset = run.splits[split]
    codes, labels = run.codes(split)
    maps = latent_maps(codes.numpy(), labels.numpy(), run.name, split, seed)
    export_projector(projector_dir, codes, labels, dataset.images, run.info.levels)
    alts = {"pca": "PCA map", "tsne": "t-SNE map"}
    return [_img(png, f"{run.name} {alts[key]}", caption) for key, (png, caption) in maps.items()]


def build_report(
    sources: list[str | Path],
    out: str | Path,
    seed: int = 0,
    split: str = "test",
    num: int = 8,
    steps: int = 8,
    device: str = "auto",
    checkpoint: str = "best",
) -> Path:
    """Write ``OUT/index.html`` (and ``OUT/projector/``) for the given runs (each run's ``best``
    or ``last`` checkpoint); returns the page."""
    if not sources:
        raise ConfigError("give at least one run directory")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    out = Path(out)
    runs = [(Path(s), load_run(s, device, checkpoint)) for s in sources]
    names = [run.name for _, run in runs]
    if len(set(names)) != len(names):  # two runs with the same folder name: disambiguate
        names = [f"{i + 1}: {n}" for i, n in enumerate(names)]
    parts = _evaluation_section([run.folder for _, run in runs], names, split)
    for (source, run), name in zip(runs, names, strict=True):
        parts += _run_section(source, run, name, seed, split, num, steps, out)
    parts.append(
        f"<p class='note'>Seed {seed}; real images from the {html.escape(split)} split. "
        "TensorBoard projector: <code>tensorboard --logdir "
        f"{html.escape(str(out / 'projector'))}</code>.</p></body></html>"
    )
    page = out / "index.html"
    text = "\n".join(parts)
    atomic_write_bytes(page, lambda f: f.write(text.encode("utf-8")))
    return page


def _evaluation_section(run_dirs: list[Path], names: list[str], split: str) -> list[str]:
    """The page's head and the side-by-side evaluation table of the runs."""
    evals = [_evals(run_dir) for run_dir in run_dirs]
    chosen = [e.get(split) or next(iter(e.values()), None) for e in evals]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>acn report: {html.escape(', '.join(names))}</title>",
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>",
        f"<h1>ACN report: {html.escape(', '.join(names))}</h1>",
        "<h2>Evaluation</h2>",
    ]
    if any(chosen):
        parts.append(_eval_table(names, chosen))
        parts.append(
            "<p class='note'>From each run's evaluation files (<code>acn eval</code>'s JSON, "
            f"the <code>{html.escape(split)}</code> split where present). Definitions: "
            "docs/evaluation.md.</p>"
        )
    else:
        parts.append(
            "<p class='note'>No evaluation found; run <code>acn eval RUN --out "
            "RUN/eval-test.json</code> and build the report again.</p>"
        )
    return parts


def _run_section(source, run: LoadedRun, name, seed, split, num, steps, out: Path) -> list[str]:
    """One run's part of the page: what it is, its curves, pictures, maps and config."""
    m = run.config.model
    parts = [
        f"<h2>{html.escape(name)}</h2>",
        f"<p>{html.escape(run.info.name)}; prior <b>{m.prior}</b>, decoder <b>{m.decoder}"
        f"</b>, code dimension {run.model.code_dim}; source <code>"
        f"{html.escape(str(source))}</code>.</p>",
    ]
    curves = _curves_png(run.folder / "metrics.jsonl")
    if curves is not None:
        parts.append(_img(curves, f"{name} training curves", "Training curves."))
    parts.extend(_pictures(run, seed, split, num, steps))
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)  # one projector folder per column
    parts.extend(_latent_maps(run, split, seed, out / "projector" / folder))
    config = json.dumps(run.config.to_dict(), indent=2)
    parts.append(f"<details><summary>config</summary><pre>{html.escape(config)}</pre></details>")
    return parts
