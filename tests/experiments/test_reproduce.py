"""``acn reproduce``: five models trained or reused, and tables that are the evals' numbers."""

from __future__ import annotations

import json

import pytest

from acn.config import load_config
from acn.errors import ConfigError
from acn.experiments.reproduce import MODELS, PAPER, reproduce, run_dir_name
from acn.train.loop import ensure_trained


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    from conftest import TINY

    out = tmp_path_factory.mktemp("reproduce")
    tables = reproduce("digits", out, list(TINY), samples=2, progress=False)
    return out, tables


def test_tables_contract_and_their_source(reproduced):
    out, tables = reproduced
    assert json.loads((out / "tables.json").read_text()) == tables
    # The decoder alone is a gated PixelCNN: it stands beside the paper's Gated PixelCNN.
    markdown = (out / "tables.md").read_text()
    assert "| Gated PixelCNN, no latent (exact) |" in markdown
    row = next(line for line in markdown.splitlines() if "Gated PixelCNN, no latent" in line)
    assert row.endswith("| 81.6 |")
    assert {"pixelcnn", "vae", "acn_unordered", "acn_ordered"} <= set(tables["table1"])
    assert set(tables["table2"]) == {"k1", "k5", "k10", "tour", "unconditional", "recon"}
    assert {"pca", "pixels", "vae", "acn"} <= set(tables["table3"])
    evals = {
        name: json.loads((out / run_dir_name("digits", name) / "eval-test.json").read_text())
        for name in MODELS
    }
    acn, vae, pixelcnn = evals["acn"]["nats"], evals["vae"]["nats"], evals["pixelcnn"]["nats"]
    assert tables["table1"]["acn_ordered"] == acn["ordered"]
    assert tables["table1"]["acn_unordered"] == acn["unordered"]
    assert tables["table1"]["vae"] == vae["total"]
    assert tables["table1"]["pixelcnn"] == pixelcnn["exact"]
    assert tables["table1"]["acn_deconv_ordered"] == evals["acn_deconv"]["nats"]["ordered"]
    assert (
        tables["table2"]["tour"] == acn["kl"]["tour"] and tables["table2"]["recon"] == acn["recon"]
    )
    assert tables["table3"]["acn"] == evals["acn"]["classification"]["linear"]
    assert tables["table3"]["vae"] == evals["vae"]["classification"]["linear"]
    assert tables["table3"]["pixels"] == evals["acn"]["classification"]["pixels"]["linear"]
    assert evals["acn_deconv"]["model"]["decoder"] == "deconv"
    assert evals["vae_deconv"]["model"]["prior"] == "normal"
    assert tables["paper"] == PAPER
    # The checks are computed from the numbers, whichever way they fall.
    t2 = tables["table2"]
    assert tables["checks"]["tour_below_unconditional"] == (t2["tour"] < t2["unconditional"])
    markdown = (out / "tables.md").read_text()
    assert "## Table 1" in markdown and "## Table 3" in markdown
    assert f"{tables['table1']['acn_ordered']:.2f}" in markdown


def test_second_call_reuses_runs_and_evaluations(reproduced):
    out, tables = reproduced
    from conftest import TINY

    stamps = {
        p: p.stat().st_mtime_ns
        for name in MODELS
        for p in (
            out / run_dir_name("digits", name) / "checkpoints" / "last.pt",
            out / run_dir_name("digits", name) / "eval-test.json",
        )
    }
    again = reproduce("digits", out, list(TINY), samples=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for key in ("table1", "table2", "table3"):
        assert again[key] == tables[key]


def test_unknown_dataset_and_bad_samples_fail_before_any_training(tmp_path):
    with pytest.raises(
        ConfigError, match="datasets with presets: celeba, cifar10, digits, imagenet32, mnist"
    ):
        reproduce("imagenet1k", tmp_path)
    with pytest.raises(ConfigError, match="samples must be at least 1"):
        reproduce("digits", tmp_path, samples=0)
    assert not any(tmp_path.iterdir())


def test_a_run_trained_past_its_budget_or_with_another_config_is_refused(tiny_runs):
    from conftest import TINY

    with pytest.raises(ConfigError, match="more than train.steps=3"):
        ensure_trained(load_config("digits-acn", [*TINY, "train.steps=3"]), tiny_runs["acn"])
    with pytest.raises(ConfigError, match="model.code_dim"):
        ensure_trained(load_config("digits-acn", [*TINY, "model.code_dim=5"]), tiny_runs["acn"])
