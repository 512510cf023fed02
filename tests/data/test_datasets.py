"""The paper's datasets through training: every preset family trains on small files written in
the real formats, under ``data.root``, and ``mnist-dynamic`` redraws its training images
reproducibly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from dataset_files import (
    bernoulli,
    digits_like,
    save_image,
    write_amat,
    write_cifar,
    write_imagenet,
    write_mnist,
)

from acn.cli.parser import main
from acn.config import load_config
from acn.data.datasets import load_splits, train_loader
from acn.errors import DataError
from acn.train.loop import train


def _mnist_static(root, rng):
    data = write_mnist(root, rng, n_train=60, n_test=12)
    grey, _ = data["train"]
    parts = (("train", grey[:50]), ("valid", grey[50:]), ("test", data["t10k"][0]))
    for split, images in parts:
        write_amat(
            root / "binarized_mnist" / f"binarized_mnist_{split}.amat", bernoulli(rng, images)
        )


def _celeba(root, rng):
    base, lines = root / "celeba", []
    for i, split in enumerate([0] * 20 + [1] * 2 + [2] * 2, 1):
        face = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        save_image(base / "img_align_celeba" / f"{i:06d}.jpg", face, quality=90)
        lines.append(f"{i:06d}.jpg {split}")
    (base / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def _folder(root, rng):
    for i in range(24):
        cls = ("cats", "dogs")[i % 2]
        save_image(root / cls / f"{i}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))


# (preset, writer, extra overrides, expected (C, H, W), levels)
FAMILIES = [
    ("mnist-acn", _mnist_static, [], (1, 28, 28), 2),
    ("mnist-vae", lambda r, g: write_mnist(r, g), ["data.name=mnist-dynamic"], (1, 28, 28), 2),
    ("mnist-pixelcnn", lambda r, g: write_mnist(r, g), ["data.name=mnist"], (1, 28, 28), 256),
    ("cifar10-acn", lambda r, g: write_cifar(r, g, per_batch=20), [], (3, 32, 32), 256),
    ("imagenet32-vae", lambda r, g: write_imagenet(r, g, per_batch=6), [], (3, 32, 32), 256),
    ("celeba-acn", _celeba, ["data.image_size=16"], (3, 16, 16), 256),
    ("cifar10-acn", _folder, ["data.name=folder", "data.image_size=8"], (3, 8, 8), 256),
]


@pytest.mark.parametrize(
    ("preset", "write", "extra", "shape", "levels"),
    FAMILIES,
    ids=[f"{f[0]}:{f[2][0] if f[2] else 'preset data'}" for f in FAMILIES],
)
def test_each_family_trains_on_files_in_the_real_format(
    tmp_path, preset, write, extra, shape, levels
):
    rng = np.random.default_rng(0)
    root = tmp_path / "data é" / ("pets" if "data.name=folder" in extra else "")
    write(root, rng)
    overrides = [*TINY, f"data.root={root}", "train.batch_size=8", *extra]
    config = load_config(preset, overrides)
    summary = train(config, tmp_path / "run")
    assert summary["step"] == 6 and np.isfinite(summary["val"]["total_nats"])
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert tuple(saved["data_info"]["image_shape"]) == shape
    assert saved["data_info"]["levels"] == levels


def test_logistic_mixture_run_reports_bits_per_dim(tmp_path):
    write_cifar(tmp_path, np.random.default_rng(1), per_batch=20)
    run = tmp_path / "run"
    train(load_config("cifar10-acn", [*TINY, f"data.root={tmp_path}", "train.batch_size=8"]), run)
    assert main(["eval", str(run), "--samples", "2", "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["model"]["likelihood"] == "logistic_mixture"
    dims = 3 * 32 * 32
    assert result["bits_per_dim"]["unordered"] == pytest.approx(
        result["nats"]["unordered"] / dims / np.log(2)
    )


def test_dynamic_binarization_redraws_per_epoch_and_resumes_exactly(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(2), n_train=60, n_test=12)
    base = [*TINY, f"data.root={tmp_path}", "data.name=mnist-dynamic", "train.batch_size=10"]
    config = load_config("mnist-acn", base)
    splits, info = load_splits(config.data, config.seed)
    train_set = splits["train"]
    assert info.levels == 2 and train_set.grey.max() > 1  # stored grey, drawn binary
    assert torch.equal(train_set.images[3], train_set[3]["image"])  # epoch-0 draws
    assert set(train_set.images.unique().tolist()) <= {0, 1}
    a, b, again = train_set[(3, 0)]["image"], train_set[(3, 1)]["image"], train_set[(3, 0)]
    assert set(a.unique().tolist()) <= {0, 1} and not torch.equal(a, b)
    assert torch.equal(a, again["image"])
    batches = list(train_loader(train_set, config, 0))
    resumed = list(train_loader(train_set, config, 2))
    assert all(
        torch.equal(x["image"], y["image"]) for x, y in zip(batches[2:], resumed, strict=True)
    )
    # 50 training images, batches of 10: step 5 starts epoch 1 with fresh draws.
    assert set(splits["test"].images.unique().tolist()) <= {0, 1}

    train(load_config("mnist-acn", base), tmp_path / "full")
    train(load_config("mnist-acn", [*base, "train.steps=3"]), tmp_path / "split")
    train(load_config("mnist-acn", base), tmp_path / "split", resume=tmp_path / "split")
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(full["model"][k], split["model"][k]) for k in full["model"])


def test_a_missing_dataset_says_which_files_to_put_where(tmp_path):
    config = load_config("mnist-acn", [*TINY, f"data.root={tmp_path}"])
    with pytest.raises(DataError, match="binarized_mnist_train.amat"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_grey_mnist_can_be_thresholded(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(3))
    config = load_config(
        "mnist-vae", [*TINY, f"data.root={tmp_path}", "data.name=mnist", "data.binarize=true"]
    )
    splits, info = load_splits(config.data)
    assert info.levels == 2 and "binarized at >= 128" in info.name
    grey = digits_like(np.random.default_rng(3), 60)  # the same draw write_mnist made
    assert torch.equal(splits["train"].images[:, 0], torch.from_numpy(grey[:50] >= 128).byte())


@pytest.mark.parametrize("decoder", ["pixelcnn", "deconv"])
@pytest.mark.parametrize("likelihood", ["categorical", "logistic_mixture"])
def test_both_8bit_likelihoods_with_both_decoders(tmp_path, decoder, likelihood):
    write_cifar(tmp_path, np.random.default_rng(4), per_batch=20)
    overrides = [*TINY, f"data.root={tmp_path}", "train.batch_size=8", "train.steps=2"]
    overrides += [f"model.decoder={decoder}", f"model.likelihood={likelihood}"]
    run = tmp_path / "run"
    summary = train(load_config("cifar10-vae", overrides), run)
    nats = summary["val"]["total_nats"]
    # Near-uniform at the start: about 3,072 x log(256) = 17,035 nats, and never below zero.
    assert 0 < nats < 5 * 17_035, nats
    sample = ["sample", str(run), "--mode", "reconstruct", "--num", "1", "--per-image", "1"]
    assert main([*sample, "--out", str(tmp_path / "s.png")]) == 0
