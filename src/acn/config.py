"""The typed run configuration: frozen dataclasses, TOML presets, ``key=value`` overrides.

A config is resolved in three layers: the dataclass defaults, then a preset (a name from
``acn/presets/`` or a TOML path), then command-line overrides such as ``train.lr=3e-4``. Every
unknown key and every bad value is an error that names the valid choices. The resolved config is
written to the run directory and into every checkpoint, so a run is described by its files alone.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from acn.config_checks import (  # noqa: F401  (re-exported: the choices are part of the API)
    DATASETS,
    DECODERS,
    DEVICES,
    LIKELIHOODS,
    PRIORS,
    validate,
)
from acn.config_values import coerce
from acn.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is presented to the model.

    Attributes:
        name: ``digits`` (scikit-learn's bundled 8x8 digits, the embedded default),
            ``mnist-static`` (the fixed binarized MNIST of Larochelle & Murray, the paper's),
            ``mnist-dynamic`` (MNIST binarized afresh at every use), ``mnist`` (256 grey levels),
            ``cifar10``, ``imagenet32``, ``imagenet64`` (downsampled ImageNet, the npz version),
            ``celeba`` or ``folder`` (any image folder). See :mod:`acn.datasets`.
        root: folder holding the dataset files, in torchvision's layout (``ROOT/MNIST/raw``,
            ``ROOT/cifar-10-batches-py``, ``ROOT/celeba``, ``ROOT/binarized_mnist``,
            ``ROOT/imagenet32``); for ``folder``, the image folder itself.
        binarize: threshold grey levels to {0, 1} (Bernoulli likelihood); ``digits`` and
            ``mnist`` only (the binarized MNISTs are binary already).
        threshold: a pixel is 1 when its level is >= this value; 0 means half the maximum
            level (8 for digits, 128 for MNIST).
        image_size: side of the square images ``celeba`` and ``folder`` are centre-cropped and
            resized to (the others have a fixed size).
        channels: 1 (grey) or 3 (RGB), for ``folder``.
        download: fetch missing files from the dataset's original location (checksums
            verified) where a network exists.
        num_workers: DataLoader worker processes (0 = load in the main process).
    """

    name: str = "digits"
    root: str = "data"
    binarize: bool = False
    threshold: int = 0
    image_size: int = 64
    channels: int = 3
    download: bool = False
    num_workers: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """The networks.

    Attributes:
        prior: ``acn`` (prior network conditioned on a neighbour's code, the paper's model),
            ``normal`` (standard normal, the plain VAE), ``mixture`` (unconditional learnable
            mixture) or ``none`` (no latent at all: a decoder-only PixelCNN).
        decoder: ``pixelcnn`` (gated PixelCNN conditioned on z) or ``deconv`` (conditionally
            independent pixels).
        likelihood: ``bernoulli`` for binary images, ``categorical`` (a softmax over the
            levels, 256-way for 8-bit images), ``logistic_mixture`` (PixelCNN++'s discretised
            mixture of logistics, RGB channels coupled) or ``auto`` (Bernoulli for binary data,
            else categorical).
        likelihood_components: mixture components of ``logistic_mixture``.
        code_dim: D, the dimension of the code c and the latent z.
        encoder_channels: widths of the VGG-style encoder's stages (each stage halves H and W
            until they are at most 4).
        prior_hidden: width of the prior network's tanh hidden layers.
        prior_layers: number of hidden layers in the prior network.
        prior_components: M, the Gaussians per latent dimension in the prior mixture.
        prior_min_scale: floor on the mixture scales, so the density stays bounded.
        decoder_channels: feature channels of the decoder (PixelCNN stacks or deconv trunk).
        pixelcnn_layers: gated layers in the PixelCNN.
        pixelcnn_kernel: kernel size (odd) of the PixelCNN's stacks.
        latent_map_channels: channels of the z-derived spatial map that conditions the PixelCNN.
    """

    prior: str = "acn"
    decoder: str = "pixelcnn"
    likelihood: str = "auto"
    likelihood_components: int = 10
    code_dim: int = 16
    encoder_channels: tuple[int, ...] = (32, 64)
    prior_hidden: int = 512
    prior_layers: int = 3
    prior_components: int = 3
    prior_min_scale: float = 1e-3
    decoder_channels: int = 64
    pixelcnn_layers: int = 8
    pixelcnn_kernel: int = 3
    latent_map_channels: int = 16


@dataclass(frozen=True)
class CodeBankConfig:
    """The code bank and the neighbour draw.

    Attributes:
        k: the prior is conditioned on a code drawn uniformly from the k nearest (self excluded).
        unique: the paper's unique-neighbour constraint: each code is used as a neighbour at most
            once per pass through the data.
        chunk_size: bank rows scored at once by the k-NN search (bounds memory).
        backend: the k-NN search: ``torch`` (built in, CPU or GPU) or ``faiss`` (CPU, needs
            ``pip install 'acn[faiss]'``). Both are exact; see :mod:`acn.knn`.
        search_precision: the precision in which the ``torch`` back-end scores candidates:
            ``float32``, or ``bfloat16`` / ``float16`` (faster on GPUs); candidates are then
            ranked by exactly computed distances and certified, so the result is still exact.
        placement: with several processes, ``replicated`` (every rank holds the whole bank) or
            ``sharded`` (each rank holds a slice and the ranks merge their top-k; for banks too
            large to replicate). One process always holds the whole bank.
    """

    k: int = 5
    unique: bool = False
    chunk_size: int = 65536
    backend: str = "torch"
    search_precision: str = "float32"
    placement: str = "replicated"


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation and its bookkeeping.

    Attributes:
        steps: total optimisation steps.
        batch_size: examples per step.
        lr: Adam learning rate.
        beta1, beta2, weight_decay: the rest of Adam's settings.
        grad_clip: clip the global gradient norm to this (0 disables).
        eval_every: validate every this many steps (0 disables; the last step always validates).
        checkpoint_every: write ``checkpoints/last.pt`` every this many steps (and at the end).
        log_every: average the training metrics over this many steps per ``metrics.jsonl`` line.
        eval_batch_size: batch size for validation passes.
        device: ``auto`` (CUDA, then MPS, then CPU), or a device type.
        progress: show a progress bar.
        tensorboard: also write TensorBoard events to ``RUN_DIR/tensorboard``.
        precision: ``auto`` (bf16 autocast on CUDA devices that support it, float32 elsewhere),
            ``float32``, or ``bf16`` (autocast; the likelihoods and the KL stay in float32).
        compile: wrap the encoder, prior and decoder in ``torch.compile`` (slow to start; pays
            off on long GPU runs).
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    eval_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50
    eval_batch_size: int = 256
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    precision: str = "auto"
    compile: bool = False


@dataclass(frozen=True)
class Config:
    """A whole run. ``seed`` fixes the parameters' initialisation, data order and all noise."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    codebank: CodeBankConfig = field(default_factory=CodeBankConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and checkpoint-safe nested dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def flat(self) -> dict[str, Any]:
        """The config as ``{"section.key": value}``."""
        return dict(_flatten(self.to_dict()))


# Keys that only schedule or display a run; a resumed run may change them without changing
# what it computes.
SCHEDULE_KEYS = frozenset(
    {
        "train.steps",
        "train.checkpoint_every",
        "train.eval_every",
        "train.progress",
        "train.tensorboard",
        "train.device",
        "data.num_workers",
        "data.root",
        "data.download",
        "codebank.chunk_size",
        "codebank.backend",
        "codebank.search_precision",
        "codebank.placement",
        "train.precision",
        "train.compile",
    }
)


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys() -> list[str]:
    """Every settable key, as ``section.key`` (or ``seed``)."""
    return sorted(Config().flat())


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    fields, hints = _fields(cls), _hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        choices = ", ".join(f"{prefix}{name}" for name in fields)
        raise ConfigError(f"unknown key {prefix}{unknown[0]} in {where}; valid keys: {choices}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a table of settings, got {value!r}")
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(f"{prefix}{name}", value, hint)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("acn") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {name_or_path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
            raise ConfigError(f"cannot read config file {name_or_path}: {reason}") from None
    else:
        resource = resources.files("acn") / "presets" / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown preset {name_or_path!r}; presets: {', '.join(preset_names())} "
                "(or give a path to a .toml file)"
            )
        text = resource.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name_or_path}: not valid TOML ({exc})") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=3e-4", "seed=1"]`` into a nested dict of strings."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (for example train.lr=3e-4)")
        parts = key.strip().split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is a value, not a section")
        node[parts[-1]] = value.strip()
    return tree


def from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a config from a nested dict (e.g. read back from a checkpoint)."""
    config = _build(Config, values, "")
    validate(config)
    return config


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> Config:
    """Resolve defaults, then a preset (name or TOML path), then ``key=value`` overrides."""
    values: dict[str, Any] = _read_preset(preset) if preset else {}
    values = _merge(values, parse_overrides(overrides or []))
    return from_dict(values)


def resume_conflicts(saved: Config, requested: Config) -> list[str]:
    """Keys (outside :data:`SCHEDULE_KEYS`) whose values differ between two configs."""
    a, b = saved.flat(), requested.flat()
    return sorted(k for k in a if k not in SCHEDULE_KEYS and a[k] != b.get(k))
