"""``acn eval``: everything the paper's tables report, for one checkpoint and one split.

What each number means, precisely:

- Codes are posterior means c(x), computed by the checkpoint's encoder for every split.
- ``nats.recon``: E_q[-log r(x|z)], the mean over S latents per image (``protocol.z_samples``).
- ``nats.kl.k1/k5/k10``: KL with the prior conditioned on a random one of the K nearest codes
  in the chosen pool (``protocol.neighbour_pool``); ``nats.kl_by_pool`` has every pool:
  ``split`` (the evaluated split's own codes, self excluded: the paper's test-time setting),
  ``train`` (the training split re-encoded by the final encoder) and ``bank`` (the code bank as
  stored in the checkpoint, up to an epoch stale). Training examples are excluded from their own
  neighbours in every pool that holds them.
- ``nats.kl.tour``: KL along the greedy tour through the split's codes, starting at row
  ``protocol.tour_start``; the first code is paid for under the unconditional density.
- ``nats.kl.unconditional``: KL under the unconditional density fitted to the training codes
  after training (family and selection in ``protocol.unconditional_density``).
- ``nats.ordered`` = recon + tour KL; ``nats.unordered`` = recon + unconditional KL (the number
  comparable with IID likelihoods); ``nats.total`` is each model's IID number (ACN: unordered;
  VAE: recon + KL; decoder-only: exact); ``nats.iw`` the importance-weighted bound on -log p(x)
  from the same S latents (prior: the VAE's own, or the ACN's unconditional density).
- ``classification``: see :mod:`acn.eval.probe`; reference rows on raw pixels and on PCA with as
  many components as the code has dimensions.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from acn.data.info import SPLITS, DataInfo
from acn.errors import ConfigError
from acn.eval.code_lengths import compression_nats
from acn.eval.codes import export_codes
from acn.eval.load import LoadedRun, load_run
from acn.eval.pools import NEIGHBOUR_KS, POOLS, Pool
from acn.eval.probe import baseline_probes, probe_all
from acn.runtime import progress_bar

log = logging.getLogger(__name__)
FORMAT = "acn-eval"


def _bits(nats: float | None, info: DataInfo) -> float | None:
    return None if nats is None else nats / (info.dims * math.log(2))


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _accuracies(rows: dict) -> dict[str, float]:
    return {"linear": rows["linear"]["accuracy"], "knn": rows["knn"]["accuracy"]}


def _classification(splits, codes, labels, split, code_dim) -> dict:
    """Probes on codes, pixels and PCA; None where the data carry no labels."""
    if any(int(labels[s].min()) < 0 for s in SPLITS):
        return {"linear": None, "knn": None, "note": "the data carry no labels"}
    y = {s: labels[s].numpy() for s in SPLITS}
    pixels = {s: splits[s].images.reshape(len(splits[s]), -1).float().numpy() for s in SPLITS}
    rows = baseline_probes(pixels, y, split, code_dim)
    result = {"linear": None, "knn": None}
    if codes is not None:
        rows["codes"] = probe_all({s: codes[s].numpy() for s in SPLITS}, y, split)
        result = _accuracies(rows["codes"])
    for name in ("pixels", "pca"):
        result[name] = _accuracies(rows[name])
    result["pca"]["components"] = rows["pca"]["components"]
    result["details"] = rows
    if split == "val":
        result["note"] = "hyperparameters were chosen on this same split: optimistic"
    elif split == "train":
        result["note"] = "scored on the probes' own training data: training accuracy"
    return result


def _check_arguments(split: str, pool: str, samples: int, batch_size: int | None) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if pool not in POOLS:
        raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")


def measure(
    source: str | Path,
    split: str = "test",
    *,
    samples: int = 100,
    seed: int | None = None,
    pool: str = "split",
    tour_start: int = 0,
    device: str = "auto",
    batch_size: int | None = None,
    export: str | Path | None = None,
    progress: bool = True,
    checkpoint: str = "best",
) -> dict:
    """Evaluate a checkpoint, run directory or exported folder on ``split``; returns the eval
    JSON as a dict (see :func:`measure_run`, whose arguments these are beside ``source``,
    ``device`` (``auto``, ``cpu``, ``cuda`` or ``mps``) and ``checkpoint``, which of a run
    directory's checkpoints: ``best`` on validation or ``last``)."""
    _check_arguments(split, pool, samples, batch_size)
    run = load_run(source, device, checkpoint)
    return measure_run(
        run,
        split,
        samples=samples,
        seed=seed,
        pool=pool,
        tour_start=tour_start,
        batch_size=batch_size,
        export=export,
        progress=progress,
    )


def measure_run(
    run: LoadedRun,
    split: str = "test",
    *,
    samples: int = 100,
    seed: int | None = None,
    pool: str = "split",
    tour_start: int = 0,
    batch_size: int | None = None,
    export: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate a loaded run on ``split``; returns the eval JSON as a dict.

    Args:
        run: the run (see :func:`acn.eval.load.load_run`).
        split: ``train``, ``val`` or ``test``.
        samples: S, latents per image for every expectation and the IW bound.
        seed: seeds everything random (default: the run's seed).
        pool: neighbour pool reported under ``nats.kl.k*`` (all pools are in ``kl_by_pool``).
        tour_start: the split row the greedy tour starts from.
        batch_size: images per batch (default: the run's ``train.eval_batch_size``).
        export: also write every split's codes and labels to this ``.npz`` file.
        progress: show progress bars on a terminal.
    """
    _check_arguments(split, pool, samples, batch_size)
    model, config, splits = run.model, run.config, run.splits
    seed = config.seed if seed is None else seed
    batch_size = batch_size or config.train.eval_batch_size
    if not 0 <= tour_start < len(splits[split]):
        raise ConfigError(f"tour_start must be in 0..{len(splits[split]) - 1}, got {tour_start}")
    codes, labels = _codes(run, batch_size, progress)
    if export is not None:
        if codes is None:
            raise ConfigError("exporting codes: this model has no latent codes (model.prior=none)")
        export_codes(export, codes, labels)
    density, density_info, pools = None, None, []
    if model.kind == "acn":
        density, density_info = run.fitted_density(seed, batch_size)
        if split == "val":
            density_info = {
                **density_info,
                "note": "its number of components was selected on this same split: optimistic",
            }
        pools = _pools(codes, split, model.bank.codes.float().cpu())
    with progress_bar(len(splits[split]), f"nats on {split}", progress) as bar:
        terms = compression_nats(
            model,
            splits[split],
            codes[split] if codes is not None else None,
            run.device,
            samples=samples,
            seed=seed,
            density=density,
            pools=pools,
            tour_start=tour_start,
            batch_size=batch_size,
            progress=bar.update,
        )
    nats = _nats(terms, model.kind, pool)
    classification = _classification(splits, codes, labels, split, config.model.code_dim)
    protocol = _protocol(model.kind, config, seed, samples, pool, pools, tour_start, density_info)
    return _result(run, split, nats, protocol, classification)


def _protocol(kind, config, seed, samples, pool, pools, tour_start, density_info) -> dict:
    """How the numbers were measured, as the eval JSON records it."""
    return {
        "seed": seed,
        "z_samples": samples if kind != "pixelcnn" else 0,
        "codes": "posterior means c(x) from the checkpoint's encoder",
        "neighbour_pool": pool if kind == "acn" else None,
        "pools": {p.name: p.description for p in pools} or None,
        "tour_start": tour_start if kind == "acn" else None,
        "unconditional_density": density_info,
        "iw_prior": {"acn": "unconditional density", "vae": config.model.prior}.get(kind),
        # The CPU threads, which set the order of floating-point reductions (acn.threads).
        "threads": torch.get_num_threads(),
    }


def _codes(run: LoadedRun, batch_size: int, progress: bool):
    """Every split's codes (None without a latent) and labels."""
    splits = run.splits
    labels = {s: splits[s].labels for s in SPLITS}
    if run.model.kind == "pixelcnn":
        return None, labels
    codes = {}
    with progress_bar(sum(len(splits[s]) for s in SPLITS), "encoding", progress) as bar:
        for s in SPLITS:
            codes[s], labels[s] = run.codes(s, batch_size, bar.update)
    return codes, labels


def _pools(codes: dict, split: str, bank_codes) -> list[Pool]:
    """The neighbour pools of a neighbour prior's K-nearest KL (see :class:`Pool`)."""
    in_train = split == "train"
    return [
        Pool("split", codes[split], True, f"the {split} split's own codes"),
        Pool("train", codes["train"], in_train, "training split, re-encoded"),
        Pool("bank", bank_codes, in_train, "code bank as trained"),
    ]


def _nats(terms: dict, kind: str, pool: str) -> dict[str, Any]:
    """The ``nats`` section of the result from :func:`compression_nats`'s terms."""
    recon = terms["recon"]
    by_pool = {
        name: {f"k{k}": v for k, v in ks.items()} for name, ks in (terms["kl_pool"] or {}).items()
    }
    chosen = by_pool.get(pool, {})
    kl = {f"k{k}": chosen.get(f"k{k}") for k in NEIGHBOUR_KS}
    kl |= {
        "tour": terms["kl_tour"],
        "unconditional": terms["kl_unconditional"],
        "prior": terms["kl_prior"],
    }
    ordered = _add(recon, terms["kl_tour"])
    unordered = _add(recon, terms["kl_unconditional"])
    # Each model's IID number: the ACN's unordered length, the VAE's ELBO, the PixelCNN exact.
    total = {"acn": unordered, "vae": _add(recon, terms["kl_prior"])}.get(kind, terms["exact"])
    return {
        "recon": recon,
        "kl": kl,
        "kl_by_pool": by_pool or None,
        "ordered": ordered,
        "unordered": unordered,
        "total": total,
        "iw": terms["iw"],
        "exact": terms["exact"],
    }


def _result(run: LoadedRun, split: str, nats: dict, protocol: dict, classification: dict) -> dict:
    """The eval JSON: what was measured, on what, how, and the numbers."""
    model, config, info = run.model, run.config, run.info
    m = config.model
    keys = ("total", "ordered", "unordered", "iw", "exact")
    return {
        "format": FORMAT,
        "split": split,
        "num_examples": len(run.splits[split]),
        "checkpoint": run.path,
        "step": run.step,
        # best: the lowest validation total the run saw; last: its latest step.
        "which_checkpoint": run.checkpoint,
        "model": {
            "prior": m.prior,
            "decoder": m.decoder,
            "likelihood": model.decoder.likelihood.name,
            "code_dim": model.code_dim,
            "k_trained": config.codebank.k if model.kind == "acn" else None,
        },
        "data": {"name": info.name, "image_shape": list(info.image_shape), "dims": info.dims},
        "protocol": protocol,
        "nats": nats,
        "bits_per_dim": {key: _bits(nats[key], info) for key in keys},
        "classification": classification,
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def format_summary(result: dict) -> str:
    """A short plain-text account of an eval result, for the terminal."""
    n, b, m = result["nats"], result["bits_per_dim"], result["model"]
    p = result["protocol"]
    lines = [
        f"{result['data']['name']}, {result['split']} split ({result['num_examples']} images), "
        f"step {result['step']} ({result['which_checkpoint']} checkpoint), "
        f"prior={m['prior']}, decoder={m['decoder']}, "
        f"{p['z_samples']} z samples per image",
        f"{'nats per image':<34}{'nats':>9}{'bits/dim':>10}",
        f"{'reconstruction':<34}{_fmt(n['recon']):>9}",
    ]
    kl = n["kl"]
    if kl["tour"] is not None:
        ks = " / ".join(_fmt(kl[f"k{k}"]) for k in NEIGHBOUR_KS)
        lines += [
            f"{'KL, K = 1 / 5 / 10 (' + p['neighbour_pool'] + ')':<34}{ks:>9}",
            f"{'KL, greedy tour':<34}{_fmt(kl['tour']):>9}",
            f"{'KL, unconditional density':<34}{_fmt(kl['unconditional']):>9}",
            f"{'ordered (recon + tour)':<34}{_fmt(n['ordered']):>9}{_fmt(b['ordered'], '.4f'):>10}",
            f"{'unordered (recon + unconditional)':<34}{_fmt(n['unordered']):>9}"
            f"{_fmt(b['unordered'], '.4f'):>10}",
        ]
    elif kl["prior"] is not None:
        lines += [
            f"{'KL, prior':<34}{_fmt(kl['prior']):>9}",
            f"{'total (recon + KL)':<34}{_fmt(n['total']):>9}{_fmt(b['total'], '.4f'):>10}",
        ]
    else:
        lines.append(f"{'exact -log p(x)':<34}{_fmt(n['exact']):>9}{_fmt(b['exact'], '.4f'):>10}")
    if n["iw"] is not None:
        label = f"IW bound ({p['z_samples']} samples)"
        lines.append(f"{label:<34}{_fmt(n['iw']):>9}{_fmt(b['iw'], '.4f'):>10}")
    c = result["classification"]
    if c.get("pixels"):
        lines.append(
            f"accuracy, linear / k-NN: codes {_fmt(c['linear'], '.3f')} / {_fmt(c['knn'], '.3f')}"
            f", pixels {_fmt(c['pixels']['linear'], '.3f')} / {_fmt(c['pixels']['knn'], '.3f')}"
            f", PCA-{c['pca']['components']} {_fmt(c['pca']['linear'], '.3f')} / "
            f"{_fmt(c['pca']['knn'], '.3f')}"
        )
    return "\n".join(lines)
