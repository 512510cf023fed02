"""Loading a trained run for evaluation, sampling, maps and the report: one restore path.

A source is a run directory, a checkpoint file or an exported model folder. :func:`load_run`
rebuilds the model on the requested device, loads the data splits its config names, and checks
that they are the data the model was trained on. The codes of each split and the unconditional
density are computed on first use and kept, so that several uses of one run (the report draws
five pictures and two maps) encode each split and fit the density once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from acn.config import Config
from acn.data.datasets import ImageDataset, load_splits
from acn.data.info import DataInfo
from acn.errors import DataError
from acn.eval.codes import encode_dataset
from acn.model import ACN
from acn.nn.density import GaussianMixtureDensity, fit_code_density
from acn.runtime import resolve_device
from acn.store.exported import load_model_payload


@dataclass
class LoadedRun:
    """A restored model with its data, ready to evaluate or sample from.

    Attributes:
        model: the model, in eval mode on ``device``.
        config: its config.
        splits: ``train``, ``val`` and ``test`` datasets.
        info: what the data are (checked against what the model was trained on).
        device: where the model lives.
        name: a short name for pictures and tables (the run directory's name).
        path: the file the model was read from.
        step: the training step of the weights.
        checkpoint: which weights these are: ``best`` (the run's lowest validation total),
            ``last``, ``file`` (a checkpoint given by path) or ``exported``.
    """

    model: ACN
    config: Config
    splits: dict[str, ImageDataset]
    info: DataInfo
    device: torch.device
    name: str
    path: str
    step: int
    checkpoint: str = "best"
    _codes: dict = field(default_factory=dict, repr=False)
    _densities: dict = field(default_factory=dict, repr=False)

    @property
    def folder(self) -> Path:
        """The run directory (or exported folder) the model was read from."""
        path = Path(self.path)
        if path.is_dir():
            return path
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent

    def codes(
        self, split: str, batch_size: int = 256, progress=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, labels)`` of a split, (N, D) and (N,) on the CPU (see
        :func:`acn.eval.codes.encode_dataset`); ``progress`` is advanced per image encoded."""
        key = (split, batch_size)
        if key not in self._codes:
            dataset = self.splits[split]
            self._codes[key] = encode_dataset(
                self.model, dataset, self.device, batch_size, progress
            )
        elif progress is not None:
            progress(len(self.splits[split]))
        return self._codes[key]

    def fitted_density(
        self, seed: int, batch_size: int = 256
    ) -> tuple[GaussianMixtureDensity, dict[str, Any]]:
        """The unconditional density fitted to the training codes, its number of components
        selected on the validation codes, and its description (see
        :func:`acn.nn.density.fit_code_density`)."""
        key = (seed, batch_size)
        if key not in self._densities:
            train = self.codes("train", batch_size)[0]
            val = self.codes("val", batch_size)[0]
            self._densities[key] = fit_code_density(train, val, seed=seed)
        return self._densities[key]

    def density(self, seed: int) -> GaussianMixtureDensity:
        """The unconditional density alone (see :meth:`fitted_density`)."""
        return self.fitted_density(seed)[0]


def load_run(source: str | Path, device: str = "auto", checkpoint: str = "best") -> LoadedRun:
    """Restore a run directory (its ``best`` or ``last`` checkpoint), checkpoint or exported
    folder onto ``device`` with its data.

    Raises:
        CheckpointError: the source is missing, unreadable or does not describe a model.
        DataError: the data cannot be loaded, or are not those the model was trained on.
    """
    payload = load_model_payload(source, checkpoint)
    dev = resolve_device(device)
    model = ACN.restore(payload, dev)
    config = model.config
    splits, info = load_splits(config.data, config.seed)
    if not model.info.matches(info):
        saved = model.info
        raise DataError(
            f"the checkpoint was trained on {saved.name} {saved.image_shape}, "
            f"but its config now loads {info.name} {info.image_shape}"
        )
    path = Path(payload["path"])
    name = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    step, which = int(payload["step"]), payload["checkpoint"]
    return LoadedRun(model, config, splits, info, dev, name, str(path), step, which)
