"""The digits splits and the resumable batch order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acn.config import DataConfig
from acn.data.datasets import EpochBatchSampler, load_splits
from acn.errors import ConfigError


def test_digits_split_is_fixed_disjoint_and_stratified():
    splits, info = load_splits(DataConfig(binarize=False))
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 1257, "val": 180, "test": 360}
    assert info.image_shape == (1, 8, 8) and info.levels == 17 and info.num_classes == 10
    # Disjoint: no image row appears in two splits (compare exact pixel contents with labels).
    keys = {
        s: {(v.images[i].numpy().tobytes(), int(v.labels[i])) for i in range(len(v))}
        for s, v in splits.items()
    }
    assert sum(len(k) for k in keys.values()) == len(set().union(*keys.values()))
    for split in splits.values():
        counts = np.bincount(split.labels.numpy(), minlength=10) / len(split)
        assert np.all(np.abs(counts - 0.1) < 0.02)  # stratified: ~10% per class
    again, _ = load_splits(DataConfig(binarize=False))
    assert torch.equal(again["test"].images, splits["test"].images)


def test_items_carry_image_index_label_and_binarization():
    grey, _ = load_splits(DataConfig(binarize=False))
    binary, info = load_splits(DataConfig(binarize=True, threshold=8))
    assert info.levels == 2 and grey["train"].images.max() == 16
    item = binary["train"][5]
    assert set(item) == {"image", "index", "label"} and int(item["index"]) == 5
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, 8, 8)
    expected = (grey["train"].images[5] >= 8).to(torch.uint8)
    assert torch.equal(item["image"], expected)
    assert int(item["label"]) == int(grey["train"].labels[5])


def test_batch_order_resumes_exactly():
    full = list(EpochBatchSampler(100, 16, seed=3, start_step=0, steps=20))
    resumed = list(EpochBatchSampler(100, 16, seed=3, start_step=7, steps=20))
    assert len(full) == 20 and resumed == full[7:]
    epoch0 = [i for b in full[:6] for i in b]
    assert len(set(epoch0)) == 96  # one pass, drop_last, no repeats
    other_seed = list(EpochBatchSampler(100, 16, seed=4, start_step=0, steps=20))
    assert other_seed != full


def test_batch_larger_than_dataset_is_an_error():
    with pytest.raises(ConfigError, match="larger than the training set"):
        EpochBatchSampler(10, 16, 0, 0, 5)
