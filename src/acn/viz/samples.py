"""``acn sample``: a trained run's sampling protocols as labelled PNG grids.

Every mode picks its real images from one split with a seeded draw, runs one protocol of
:mod:`acn.sampling` with an explicit generator, and lays the result out with the real image
in the first column. The same seed gives the same picture.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from acn import sampling
from acn.config.choices import suggest
from acn.data.datasets import ImageDataset
from acn.data.info import SPLITS
from acn.errors import ConfigError
from acn.eval.load import LoadedRun
from acn.viz.grid import grid
from acn.viz.modes import MODES


@dataclass
class Picture:
    """A sampled grid and what it took."""

    image: object  # PIL.Image
    mode: str
    images_drawn: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images_drawn / self.seconds if self.seconds > 0 else math.inf


def _pick(dataset: ImageDataset, num: int, seed: int) -> torch.Tensor:
    """``num`` distinct example indices, drawn with a seeded generator, in sorted order."""
    if num > len(dataset):
        raise ConfigError(f"num={num} is more than the split's {len(dataset)} images")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return order[:num].sort().values


def _label(dataset: ImageDataset, index: int) -> str:
    value = int(dataset.labels[index])
    return f"#{index} ({value})" if value >= 0 else f"#{index}"


@torch.no_grad()
def sample_picture(
    run: LoadedRun,
    mode: str,
    num: int = 8,
    steps: int = 8,
    per_image: int = 8,
    seed: int = 0,
    split: str = "test",
    progress=None,
) -> Picture:
    """Draw one mode's grid.

    Args:
        run: the restored run.
        mode: one of :data:`MODES`.
        num: real images (rows), or samples for ``unconditional``.
        steps: daydream steps per chain.
        per_image: samples (``reconstruct``, ``prior``) or neighbours (``neighbours``) per row.
        seed: seeds the choice of images and every random draw.
        split: where the real images come from.
        progress: optional callable taking increments of sequential decoder passes.
    """
    _check_arguments(mode, split, num, steps, per_image)
    generator = torch.Generator(device=run.device).manual_seed(seed)
    started = time.perf_counter()
    if mode == "unconditional":
        density = run.density(seed) if run.model.kind == "acn" else None
        x = sampling.unconditional(run.model, num, density, generator, progress)
        return Picture(_rows_of_eight(x, run.info.levels), mode, num, _since(started))
    dataset = run.splits[split]
    index = _pick(dataset, num, seed)
    real = dataset.images[index].to(run.device)
    if mode == "neighbours":
        out, cols, drawn = _neighbours(run, real, index, split, per_image)
    elif mode == "daydream":
        out = sampling.daydream(run.model, real, steps, generator, progress)  # real image first
        cols, drawn = ["real"] + [str(s) for s in range(1, steps + 1)], num * steps
    else:
        protocol = sampling.reconstruct if mode == "reconstruct" else sampling.prior_samples
        samples = protocol(run.model, real, per_image, generator, progress)
        out = torch.cat([real[:, None], samples], dim=1)
        cols, drawn = ["real"] + [str(s) for s in range(1, per_image + 1)], num * per_image
    seconds = _since(started)
    rows = [_label(dataset, int(i)) for i in index]
    image = grid(out, run.info.levels, row_labels=rows, col_labels=cols)
    return Picture(image, mode, drawn, seconds)


def _check_arguments(mode: str, split: str, num: int, steps: int, per_image: int) -> None:
    if mode not in MODES:
        raise ConfigError(
            f"mode must be one of {', '.join(MODES)}, got {mode!r}{suggest(mode, MODES)}"
        )
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    for name, value in (("num", num), ("steps", steps), ("per_image", per_image)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")


def _since(started: float) -> float:
    return time.perf_counter() - started


def _rows_of_eight(x: torch.Tensor, levels: int):
    """Unlabelled samples (N, C, H, W) as a grid of up to eight per row."""
    num = x.shape[0]
    cols = min(8, num)
    rows = math.ceil(num / cols)
    padded = torch.zeros(rows * cols, *x.shape[1:], dtype=x.dtype, device=x.device)
    padded[:num] = x
    return grid(padded.unflatten(0, (rows, cols)), levels)


def _neighbours(run: LoadedRun, real: torch.Tensor, index: torch.Tensor, split: str, k: int):
    """Each real image beside its k nearest training images in code space."""
    if run.model.kind == "pixelcnn":
        raise ConfigError("neighbours need a model with latent codes (model.prior=none)")
    train = run.splits["train"]
    available = len(train) - (1 if split == "train" else 0)
    if k > available:
        raise ConfigError(
            f"per_image={k} is more than the {available} training images available as neighbours"
        )
    train_codes = run.codes("train")[0]
    codes = run.model.encode(real)
    exclude = index.to(run.device) if split == "train" else None
    _, nearest = sampling.nearest_training(codes, train_codes.to(run.device), k, exclude)
    found = train.images[nearest.cpu()].to(run.device)  # (N, K, C, H, W)
    out = torch.cat([real[:, None], found], dim=1)
    return out, ["real"] + [f"nn{i}" for i in range(1, k + 1)], 0


def decoder_passes(run: LoadedRun, mode: str, steps: int) -> int:
    """Total progress units :func:`sample_picture` reports for ``mode``."""
    if mode == "neighbours":
        return 0
    return sampling.pixel_passes(run.model) * (steps if mode == "daydream" else 1)
