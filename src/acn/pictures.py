"""``acn sample``: a trained run's sampling protocols as labelled PNG grids.

Every mode picks its real images from one split with a seeded draw, runs one protocol of
:mod:`acn.sampling` with an explicit generator, and lays the result out with the real image
in the first column. The same seed gives the same picture.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from acn import sampling
from acn.checkpoint import restore_model
from acn.codes import encode_dataset
from acn.config import Config
from acn.data import DataInfo, ImageDataset, load_splits
from acn.density import fit_code_density
from acn.errors import ConfigError
from acn.export import load_model_payload
from acn.images import grid
from acn.model import ACN
from acn.training import resolve_device

MODES = ("daydream", "reconstruct", "neighbours", "prior", "unconditional")
SPLITS = ("train", "val", "test")


@dataclass
class LoadedRun:
    """A restored model with its data, ready to sample from.

    Codes and the unconditional density are computed once and kept, so that several pictures
    of one run (a report draws five, plus the maps) do not encode the same split repeatedly.
    """

    model: ACN
    config: Config
    splits: dict[str, ImageDataset]
    info: DataInfo
    device: torch.device
    name: str
    _codes: dict = field(default_factory=dict, repr=False)
    _densities: dict = field(default_factory=dict, repr=False)

    def codes(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, labels)`` of a split, on the CPU (see :func:`acn.codes.encode_dataset`)."""
        if split not in self._codes:
            self._codes[split] = encode_dataset(self.model, self.splits[split], self.device)
        return self._codes[split]

    def density(self, seed: int):
        """The unconditional density fitted to the training codes (selected on validation)."""
        if seed not in self._densities:
            train, val = self.codes("train")[0], self.codes("val")[0]
            self._densities[seed] = fit_code_density(train, val, seed=seed)[0]
        return self._densities[seed]


def load_run(source: str | Path, device: str = "auto") -> LoadedRun:
    """Restore a run directory or checkpoint onto ``device`` with its data splits."""
    payload = load_model_payload(source)
    dev = resolve_device(device)
    model, config = restore_model(payload, dev)
    splits, info = load_splits(config.data, config.seed)
    path = Path(payload["path"])
    name = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return LoadedRun(model, config, splits, info, dev, name)


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
        raise ConfigError(f"--num {num} is more than the split's {len(dataset)} images")
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
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    for flag, value in (("--num", num), ("--steps", steps), ("--per-image", per_image)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    model, dataset = run.model, run.splits[split]
    levels = run.info.levels
    generator = torch.Generator(device=run.device).manual_seed(seed)
    started = time.perf_counter()
    if mode == "unconditional":
        conditional = model.code_dim and model.prior.conditional
        density = run.density(seed) if conditional else None
        x = sampling.unconditional(model, num, density, generator, progress)
        seconds = time.perf_counter() - started
        cols = min(8, num)
        rows = math.ceil(num / cols)
        padded = torch.zeros(rows * cols, *x.shape[1:], dtype=x.dtype, device=x.device)
        padded[:num] = x
        image = grid(padded.unflatten(0, (rows, cols)), levels)
        return Picture(image, mode, num, seconds)

    index = _pick(dataset, num, seed)
    real = dataset.images[index].to(run.device)
    rows = [_label(dataset, int(i)) for i in index]
    if mode == "daydream":
        out = sampling.daydream(model, real, steps, generator, progress)  # real image first
        cols = ["real"] + [str(s) for s in range(1, steps + 1)]
        drawn = num * steps
    elif mode == "neighbours":
        if model.code_dim == 0:
            raise ConfigError("neighbours need a model with latent codes (model.prior=none)")
        train = run.splits["train"]
        available = len(train) - (1 if split == "train" else 0)
        if per_image > available:
            raise ConfigError(
                f"--per-image {per_image} is more than the {available} training "
                "images available as neighbours"
            )
        train_codes = run.codes("train")[0]
        codes = model.encode(real)
        exclude = index.to(run.device) if split == "train" else None
        _, nearest = sampling.nearest_training(
            codes, train_codes.to(run.device), per_image, exclude
        )
        found = train.images[nearest.cpu()].to(run.device)  # (N, K, C, H, W)
        out = torch.cat([real[:, None], found], dim=1)
        cols = ["real"] + [f"nn{k}" for k in range(1, per_image + 1)]
        drawn = 0
    else:
        protocol = sampling.reconstruct if mode == "reconstruct" else sampling.prior_samples
        samples = protocol(model, real, per_image, generator, progress)
        out = torch.cat([real[:, None], samples], dim=1)
        cols = ["real"] + [str(s) for s in range(1, per_image + 1)]
        drawn = num * per_image
    seconds = time.perf_counter() - started
    return Picture(grid(out, levels, row_labels=rows, col_labels=cols), mode, drawn, seconds)


def decoder_passes(run: LoadedRun, mode: str, steps: int) -> int:
    """Total progress units :func:`sample_picture` reports for ``mode``."""
    if mode == "neighbours":
        return 0
    return sampling.pixel_passes(run.model) * (steps if mode == "daydream" else 1)
