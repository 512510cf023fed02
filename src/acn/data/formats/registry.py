"""Dataset name -> the reader of its files (one entry per name of
:data:`acn.config.choices.FILE_DATASETS`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from acn.config.choices import FILE_DATASETS, pick, registry
from acn.data.formats.base import RawData
from acn.data.formats.cifar import load_cifar10
from acn.data.formats.images import load_celeba, load_folder, load_imagenet
from acn.data.formats.mnist import load_mnist, load_mnist_dynamic, load_mnist_static
from acn.errors import DataError

# (root, image_size, channels) -> RawData; image_size and channels matter to some readers only.
Reader = Callable[[Path, int, int], RawData]

READERS: dict[str, Reader] = registry(
    "data.name",
    FILE_DATASETS,
    {
        "mnist-static": lambda root, size, channels: load_mnist_static(root),
        "mnist-dynamic": lambda root, size, channels: load_mnist_dynamic(root),
        "mnist": lambda root, size, channels: load_mnist(root),
        "cifar10": lambda root, size, channels: load_cifar10(root),
        "imagenet32": lambda root, size, channels: load_imagenet(root, 32),
        "imagenet64": lambda root, size, channels: load_imagenet(root, 64),
        "celeba": lambda root, size, channels: load_celeba(root, size),
        "folder": load_folder,
    },
)


def load_raw(name: str, root: str | Path, image_size: int, channels: int) -> RawData:
    """Load dataset ``name`` from under ``root``.

    ``image_size`` is used by ``celeba`` and ``folder``, ``channels`` by ``folder``; the other
    datasets have the geometry their files fix.
    """
    try:
        reader = pick("data.name", READERS, name)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return reader(Path(root), image_size, channels)
