"""``acn compress`` / ``acn decompress`` on runs: images from a split, an ``.npz`` or image
files, the file, and the model's own bounds on the same images beside it; a decoded set goes to
an ``.npz`` or a folder of PNG files (:mod:`acn.experiments.codec_io`).

The bounds are ``acn eval``'s estimators (:func:`acn.eval.code_lengths.compression_nats`) on
exactly the images coded: the ordered bound (reconstruction + KL along the greedy tour from the
first image, the tour the codec follows), the unordered one (the unconditional density), the
VAE's ELBO and the PixelCNN's exact -log p(x).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from acn.codec import decompress, encode
from acn.codec.files import as_images, log_factorial_nats
from acn.data.datasets import ImageDataset
from acn.data.formats.images import IMAGE_EXTENSIONS
from acn.errors import CodecError, DataError
from acn.eval.code_lengths import compression_nats
from acn.eval.codes import encode_dataset
from acn.eval.load import LoadedRun, load_run
from acn.experiments.codec_io import read_image_files, write_files, write_image_folder
from acn.files import atomic_write_bytes
from acn.model import ACN
from acn.store.exported import load_model_payload

LN2 = math.log(2)


def read_images(path: str | Path) -> np.ndarray:
    """The ``images`` array of an ``.npz`` file (integer levels, (N, C, H, W) or (N, H, W))."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files:
                raise DataError(f"{path} has no 'images' array (it has: {', '.join(npz.files)})")
            return npz["images"]
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read images from {path}: {error}") from None


def write_images(path: str | Path, images: np.ndarray) -> None:
    """``images`` as the ``images`` array of an ``.npz`` file, atomically."""

    def write(f) -> None:
        np.savez_compressed(f, images=images)

    _write(path, write)


def user_images(paths: Sequence[str | Path], model: ACN) -> tuple[np.ndarray, str]:
    """The images ``--images`` names, as the model codes them, and words for where they came
    from: one ``.npz`` (:func:`read_images`), or image files and folders of them
    (:func:`acn.experiments.codec_io.read_image_files`), every one checked before any is coded.
    """
    paths = [Path(p) for p in paths]
    npz = [p for p in paths if p.suffix.lower() == ".npz" and not p.is_dir()]
    if npz and len(paths) > 1:
        raise DataError(f"{npz[0]}: an .npz is read alone, not with other images")
    if npz:
        return as_images(read_images(npz[0]), model), str(npz[0])
    info = model.info
    images = read_image_files(paths, info.image_shape, info.levels)
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
    return as_images(images, model), where


# The bound beside a file costs S full decoder passes per image: ``samples="auto"`` keeps
# N S at about this many (100 per image up to 500 images, 1 per image from 50,000), so that the
# bound never dwarfs the file it describes (at 60,000 images 100 samples would be 6 million
# PixelCNN passes, hours beside a file of minutes).
BOUND_PASSES = 50_000
MAX_BOUND_SAMPLES = 100


def bound_samples(samples: int | str, images: int) -> int:
    """The latent samples per image for the bound: ``samples``, or for ``"auto"`` the most
    that keep N S near :data:`BOUND_PASSES` (between 1 and :data:`MAX_BOUND_SAMPLES`)."""
    if samples == "auto":
        return max(1, min(MAX_BOUND_SAMPLES, BOUND_PASSES // max(images, 1)))
    return int(samples)


def bounds(
    run: LoadedRun,
    images: np.ndarray,
    samples: int,
    seed: int,
    order: np.ndarray | None = None,
) -> dict[str, float | None]:
    """The model's bounds in nats per image on ``images`` (N, C, H, W) uint8; ``order``: the
    greedy tour the coder followed (the ordered bound's tour; computed when not given)."""
    model = run.model
    dataset = ImageDataset(torch.from_numpy(images))
    codes = encode_dataset(model, dataset, run.device)[0] if model.kind != "pixelcnn" else None
    density = run.density(seed) if model.kind == "acn" else None
    tour = torch.as_tensor(order) if order is not None and model.kind == "acn" else None
    terms = compression_nats(
        model, dataset, codes, run.device, samples=samples, seed=seed, density=density, tour=tour
    )
    recon = terms["recon"]
    if model.kind == "acn":
        return {"ordered": recon + terms["kl_tour"], "unordered": recon + terms["kl_unconditional"]}
    if model.kind == "vae":
        return {"elbo": recon + terms["kl_prior"]}
    return {"exact": terms["exact"]}


def compress_run(
    source: str | Path,
    out: str | Path,
    *,
    split: str | None = "test",
    images_from: Sequence[str | Path] | str | Path | None = None,
    checkpoint: str = "best",
    keep_order: bool = False,
    seeds: int = 1,
    segments: int | None = None,
    parts: int | None = None,
    threads: int = 1,
    samples: int | str = "auto",
    seed: int = 0,
    soft_tour: bool = False,
    exact: bool = False,
    json_path: str | Path | None = None,
) -> dict:
    """Compress a split of the run's data, or ``images_from`` (an ``.npz``, or image files and
    folders of them: :func:`user_images`), to ``out`` and measure the file against the model's
    bounds. Returns the summary ``acn compress`` prints, also written to ``json_path`` if given.

    Destinations that cannot be written are refused before anything runs, and every image
    before any is coded. The file and the summary are written last, all or none
    (:func:`acn.experiments.codec_io.write_files`): a failure leaves a previous ``out`` and
    ``json_path`` as they were.
    """
    paths = [images_from] if isinstance(images_from, str | Path) else list(images_from or [])
    check_destinations({"--out": out, "--json": json_path}, [*paths, source])
    run = load_run(source, device="cpu", checkpoint=checkpoint)
    if paths:
        images, where = user_images(paths, run.model)
    else:
        images = as_images(run.splits[split].images.numpy(), run.model)  # uint8: no copy
        where = f"the {split} split"
    options = {
        "keep_order": keep_order,
        "seeds": seeds,
        "segments": segments,
        "parts": parts,
        "exact": exact,
    }
    try:
        encoded = encode(run.model, images, threads=threads, soft_tour=soft_tour, **options)
    except ValueError as error:  # options the model or each other rule out
        raise CodecError(str(error)) from None
    samples = bound_samples(samples, len(images))
    # The greedy tour the coder followed (its file's order, unless the soft tour chose one).
    tour = encoded.order if run.model.kind == "acn" and not soft_tour and not keep_order else None
    measured = bounds(run, images, samples, seed, tour)
    named = {"source": str(source), "images": where, "out": str(out)}
    summary = _summary(run, encoded, measured, named, keep_order, soft_tour, threads)
    summary["exact"] = exact
    summary["bound_samples"] = samples
    files = {Path(out): encoded.data}
    if json_path is not None:  # last: a crash between the renames leaves the new file beside
        # the old summary, never a summary of a file that was not written
        files[Path(json_path)] = (json.dumps(summary, indent=2) + "\n").encode("utf-8")
    write_files(files)
    return summary


def _summary(run: LoadedRun, encoded, measured, named, keep_order, soft_tour, threads) -> dict:
    """The numbers of one file beside the model's bounds (``measured``, nats per image);
    ``named``: its source, images and path."""
    n = len(encoded.order)
    bits = 8 * len(encoded.data) / n
    reference = measured.get("ordered") or measured.get("elbo") or measured.get("exact")
    if keep_order and run.model.kind == "acn":
        reference += log_factorial_nats(n) / n
    return {
        "format": "acn-compress",
        "source": named["source"],
        "checkpoint": run.checkpoint,
        "step": run.step,
        "images": named["images"],
        "num_images": n,
        "out": named["out"],
        "bytes": len(encoded.data),
        "header_bytes": encoded.header_bytes,
        "bits_per_image": bits,
        "bits_per_dim": bits / math.prod(run.model.info.image_shape),
        "nats_per_image": bits * LN2,
        "bounds_nats": measured,
        "reference_nats": reference,
        "gap_percent": 100 * (bits * LN2 / reference - 1),
        "keep_order": keep_order,
        "soft_tour": soft_tour,
        "order_ceiling_nats": log_factorial_nats(n) / n,
        "segments": list(encoded.plan.lengths),  # every part's in turn
        "parts": len(encoded.plans),
        "seed": encoded.seed,
        "seed_sizes": encoded.sizes,
        "threads": threads,
        "seconds": encoded.seconds,
    }


def check_destinations(
    outputs: dict[str, str | Path | None], inputs: list, folders: Sequence[str] = ()
) -> None:
    """Refuse, before any work, outputs that cannot be written: a folder (for the options in
    ``folders``, which write a folder: a file, or a folder that is not empty), a path under a
    file (or under another output, which will be one), two outputs that are one file, an output
    that is one of the command's inputs, a folder that cannot be created or written in.

    Raises:
        CodecError: naming the option and the path.
    """
    named = {flag: Path(path).resolve() for flag, path in outputs.items() if path is not None}
    sources = {Path(path).resolve() for path in inputs if path is not None}
    for flag, path in named.items():
        where = f"cannot write {flag} {path}"
        if path in sources:
            raise CodecError(f"{where}: it is an input of this command")
        if flag in folders and path.is_dir() and any(path.iterdir()):
            raise CodecError(f"{where}: a folder that is not empty")
        if flag in folders and path.exists() and not path.is_dir():
            raise CodecError(f"{where}: it is a file (a path not ending in .npz names a folder)")
        if flag not in folders and path.is_dir():
            raise CodecError(f"{where}: it is a folder")
        for other, other_path in named.items():
            if other != flag and other_path == path:
                raise CodecError(f"{where}: {other} is the same file")
            if other != flag and other_path in path.parents:
                raise CodecError(f"{where}: it lies under {other} {other_path}, a file")
        folder = next(parent for parent in path.parents if parent.exists())
        if not folder.is_dir():
            raise CodecError(f"{where}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CodecError(f"{where}: {folder} is not writable")


def load_model(source: str | Path, checkpoint: str = "best") -> ACN:
    """The model alone (no data), on the CPU, in eval mode."""
    return ACN.restore(load_model_payload(source, checkpoint), torch.device("cpu")).eval()


def decompress_file(
    path: str | Path,
    model_source: str | Path,
    out: str | Path,
    checkpoint: str = "best",
    workers: int | None = None,
) -> dict:
    """Decode ``path`` with the model and write its images to ``out``, last: an ``.npz``
    (``images`` array) where ``out`` ends in ``.npz``, else a folder of PNG files
    (:func:`acn.experiments.codec_io.write_image_folder`: 0.png ... in the file's order, all or
    none; ``out`` may exist only as an empty folder). An ``out`` that cannot be written is
    refused before anything is read. ``workers``: processes decoding the file's parts side by
    side (:func:`acn.codec.decompress`)."""
    out = Path(out)
    as_folder = out.suffix.lower() != ".npz"
    if out.suffix.lower() in IMAGE_EXTENSIONS:
        raise CodecError(
            f"cannot write --out {out}: one image cannot hold a set; name a folder (for PNG "
            "files) or an .npz"
        )
    check_destinations({"--out": out}, [path, model_source], ["--out"] if as_folder else [])
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CodecError(f"cannot read {path}: {error.strerror or error}") from None
    model = load_model(model_source, checkpoint)
    start = time.perf_counter()
    images = decompress(model, data, workers)
    seconds = time.perf_counter() - start
    if not as_folder:
        write_images(out, images)
    else:
        try:
            write_image_folder(out, images, model.info.levels)
        except OSError as error:
            raise CodecError(f"cannot write {out}: {error.strerror or error}") from None
    return {
        "num_images": len(images),
        "out": str(out),
        "png_files": as_folder,
        "seconds": seconds,
        "images_per_second": len(images) / seconds,
    }


def _write(path: str | Path, write) -> None:
    try:
        atomic_write_bytes(path, write)
    except OSError as error:
        raise CodecError(f"cannot write {path}: {error.strerror or error}") from None


def format_compress(summary: dict) -> str:
    """The lines ``acn compress`` prints."""
    n = summary["num_images"]
    lines = [
        f"{summary['out']}: {summary['bytes']} bytes for {n} images ({summary['images']}; "
        f"weights: {summary['checkpoint']}, step {summary['step']})",
        f"  {summary['bits_per_image']:.2f} bits per image, {summary['bits_per_dim']:.4f} bits "
        f"per dim, {summary['nats_per_image']:.2f} nats per image "
        f"(header {summary['header_bytes']} bytes)",
    ]
    names = {
        "ordered": "ordered bound",
        "unordered": "unordered bound",
        "elbo": "ELBO (IID)",
        "exact": "exact -log p(x)",
    }
    for key, value in summary["bounds_nats"].items():
        lines.append(f"  {names[key]:<16}{value:8.2f} nats per image ({value / LN2:.2f} bits)")
    if "bound_samples" in summary and summary["bounds_nats"].keys() - {"exact"}:
        lines.append(f"  (bounds from {summary['bound_samples']} latent samples per image)")
    order = " + log N!/N for the order" if summary["keep_order"] else ""
    lines.append(
        f"  file against the {'ordered bound' if 'ordered' in summary['bounds_nats'] else 'bound'}"
        f"{order}: {summary['gap_percent']:+.2f}%"
    )
    if summary["soft_tour"]:
        lines.append(
            f"  soft tour: the order's information, log N!/N = "
            f"{summary['order_ceiling_nats']:.2f} nats per image, bounds what it can save"
        )
    if summary.get("exact"):
        lines.append(
            "  exact arithmetic: decodes on any machine, thread count or device (the bounds "
            "are the float model's)"
        )
    segs = summary["segments"]
    sec = summary["seconds"]
    lines.append(
        f"  {len(segs)} segments of {min(segs)}..{max(segs)} images"
        + (f" in {summary['parts']} parts" if summary.get("parts", 1) > 1 else "")
        + f", seed {summary['seed']} of "
        f"{len(summary['seed_sizes'])}, {summary['threads']} threads; encode {sec['encode']:.1f} s"
        + (f", verified by decoding in {sec['verify']:.1f} s" if "verify" in sec else "")
    )
    return "\n".join(lines)
