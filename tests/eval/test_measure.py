"""``acn eval``: the JSON contract, its arithmetic, the exported codes, and its errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import acn_in_process

from acn.data.datasets import load_splits
from acn.eval.measure import measure
from acn.model import ACN
from acn.store.checkpoint import load_checkpoint

KL_KEYS = ("k1", "k5", "k10", "tour", "unconditional")


def run(args):
    return acn_in_process(args)


@pytest.fixture(scope="module")
def acn_eval(tiny_runs, tmp_path_factory):
    """One ``acn eval`` of the tiny ACN through the command line, with exported codes."""
    out = tmp_path_factory.mktemp("eval")
    proc = run(
        [
            "eval",
            str(tiny_runs["acn"]),
            "--out",
            str(out / "eval.json"),
            "--samples",
            "3",
            "--export-codes",
            str(out / "codes.npz"),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "eval.json").read_text()), out / "codes.npz", proc.stdout


def test_acn_eval_has_every_contract_key_and_consistent_totals(acn_eval):
    result, _, stdout = acn_eval
    assert result["split"] == "test" and result["num_examples"] == 360
    n = result["nats"]
    assert all(isinstance(n["kl"][k], float) for k in KL_KEYS)
    assert n["ordered"] == pytest.approx(n["recon"] + n["kl"]["tour"], abs=1e-12)
    assert n["unordered"] == pytest.approx(n["recon"] + n["kl"]["unconditional"], abs=1e-12)
    assert n["total"] == n["unordered"] and n["kl"]["prior"] is None
    # The reported K numbers are the chosen pool's; every pool is reported.
    assert set(n["kl_by_pool"]) == {"split", "train", "bank"}
    assert all(n["kl"][k] == n["kl_by_pool"]["split"][k] for k in ("k1", "k5", "k10"))
    for key in ("ordered", "unordered", "iw"):
        assert result["bits_per_dim"][key] == pytest.approx(n[key] / (64 * math.log(2)))
    c = result["classification"]
    assert 0 <= c["linear"] <= 1 and 0 <= c["knn"] <= 1
    assert c["pca"]["components"] == 4 and 0 <= c["pixels"]["linear"] <= 1
    p = result["protocol"]
    assert p["z_samples"] == 3 and p["neighbour_pool"] == "split" and p["tour_start"] == 0
    assert "Gaussian mixture" in p["unconditional_density"]["family"]
    assert "greedy tour" in stdout and "unordered" in stdout


def test_exported_codes_are_the_posterior_means(acn_eval, tiny_runs):
    _, path, _ = acn_eval
    arrays = np.load(path)
    payload = load_checkpoint(tiny_runs["acn"])
    model = ACN.restore(payload)
    config = model.config
    splits, _ = load_splits(config.data)
    for split in ("train", "val", "test"):
        codes, labels = arrays[f"{split}_codes"], arrays[f"{split}_labels"]
        assert codes.shape == (len(splits[split]), 4) and codes.dtype == np.float32
        np.testing.assert_array_equal(labels, splits[split].labels.numpy())
        with torch.no_grad():
            expected = model.encode(splits[split].images[:50]).numpy()
        np.testing.assert_allclose(codes[:50], expected, rtol=1e-5, atol=1e-6)


def test_vae_fills_what_applies_and_nulls_the_rest(tiny_runs):
    result = measure(tiny_runs["vae"], samples=4, progress=False)
    n = result["nats"]
    assert all(n["kl"][k] is None for k in KL_KEYS)
    assert n["ordered"] is None and n["unordered"] is None and n["kl_by_pool"] is None
    assert n["total"] == pytest.approx(n["recon"] + n["kl"]["prior"])
    assert isinstance(n["iw"], float) and result["protocol"]["iw_prior"] == "normal"
    assert isinstance(result["classification"]["linear"], float)


def test_pixelcnn_reports_exact_nats_and_no_codes(tiny_runs):
    result = measure(tiny_runs["pixelcnn"], split="val", progress=False)
    n = result["nats"]
    assert result["num_examples"] == 180 and result["protocol"]["z_samples"] == 0
    assert n["exact"] == n["total"] and n["iw"] is None
    assert all(v is None for v in n["kl"].values())
    assert result["classification"]["linear"] is None
    assert isinstance(result["classification"]["pixels"]["linear"], float)


def test_eval_repeats_exactly_under_its_seed(tiny_runs):
    a = measure(tiny_runs["acn"], samples=2, seed=5, progress=False)
    b = measure(tiny_runs["acn"], samples=2, seed=5, progress=False)
    assert a == b


def test_other_pools_and_tour_starts(tiny_runs):
    result = measure(
        tiny_runs["acn"], split="train", samples=1, pool="bank", tour_start=7, progress=False
    )
    n = result["nats"]
    assert result["num_examples"] == 1257
    assert all(n["kl"][k] == n["kl_by_pool"]["bank"][k] for k in ("k1", "k5", "k10"))
    assert result["protocol"]["tour_start"] == 7


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--split", "validation"], "argument --split: invalid choice"),
        (["--pool", "nearby"], "argument --pool: invalid choice"),
        (["--samples", "0"], "argument --samples: must be at least 1"),
        (["--tour-start", "999"], "tour_start must be in 0..359"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["--device", "cuda"], "no CUDA device"),
    ],
)
def test_bad_eval_arguments_get_one_clear_line(tiny_runs, tmp_path, args, needle):
    proc = run(["eval", str(tiny_runs["acn"]), "--out", str(tmp_path / "e.json"), *args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "e.json").exists()


def test_eval_of_missing_run_and_codes_of_a_codeless_model(tiny_runs, tmp_path):
    proc = run(["eval", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e.json")])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "nowhere" in proc.stderr
    proc = run(
        [
            "eval",
            str(tiny_runs["pixelcnn"]),
            "--out",
            str(tmp_path / "e.json"),
            "--export-codes",
            str(tmp_path / "c.npz"),
        ]
    )
    assert proc.returncode == 2 and "no latent codes" in proc.stderr
    assert not (tmp_path / "c.npz").exists()


def test_the_density_selected_on_the_scored_split_says_so(tiny_runs):
    val = measure(tiny_runs["acn"], "val", samples=1, progress=False)
    test = measure(tiny_runs["acn"], "test", samples=1, progress=False)
    assert "selected on this same split" in val["protocol"]["unconditional_density"]["note"]
    assert "note" not in test["protocol"]["unconditional_density"]
