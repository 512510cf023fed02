"""The bound printed beside a compressed file: a sample count that fits the set, and the tour
the coder followed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acn.eval.load import load_run
from acn.experiments.compress import (
    BOUND_PASSES,
    MAX_BOUND_SAMPLES,
    bound_samples,
    bounds,
    compress_run,
    format_compress,
)


def test_auto_samples_keep_the_bound_near_its_budget():
    assert bound_samples("auto", 360) == MAX_BOUND_SAMPLES
    assert bound_samples("auto", 500) == BOUND_PASSES // 500
    assert bound_samples("auto", 5_000) == 10
    assert bound_samples("auto", 60_000) == 1
    assert bound_samples("auto", 1_280_000) == 1
    assert bound_samples(7, 60_000) == 7  # a count given is a count kept


def test_the_bound_follows_the_tour_it_is_given(tiny_runs):
    run = load_run(tiny_runs["acn"], device="cpu")
    images = run.splits["test"].images[:40].numpy().astype(np.uint8)
    computed = bounds(run, images, 2, 0)
    from acn.bank.tour import greedy_tour
    from acn.data.datasets import ImageDataset
    from acn.eval.codes import encode_dataset

    codes = encode_dataset(run.model, ImageDataset(torch.from_numpy(images)), "cpu")[0]
    greedy = greedy_tour(codes, 0).numpy()
    assert bounds(run, images, 2, 0, greedy) == pytest.approx(computed, abs=1e-9)
    reversed_tour = bounds(run, images, 2, 0, greedy[::-1].copy())
    assert reversed_tour["ordered"] != pytest.approx(computed["ordered"], abs=1e-6)
    assert reversed_tour["unordered"] == pytest.approx(computed["unordered"], abs=1e-9)


def test_compress_says_how_many_samples_its_bound_used(tiny_runs, tmp_path):
    summary = compress_run(tiny_runs["acn"], tmp_path / "x.acnz", split="val")
    n = summary["num_images"]
    assert summary["bound_samples"] == bound_samples("auto", n)
    assert f"bounds from {summary['bound_samples']} latent samples per image" in format_compress(
        summary
    )
