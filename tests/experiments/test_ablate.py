"""``acn ablate``: each variant trained as itself, the table made of the evals' numbers, the
paired differences computed per seed, and bad requests refused before anything trains."""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import TINY

from acn.errors import ConfigError
from acn.experiments.ablate import (
    VARIANTS,
    ablate,
    parse_variants,
    prior_parameters,
    summarise,
    variant_run_name,
)

CHOSEN = ["paper", "shift", "random"]


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate")
    table = ablate(
        "digits",
        out,
        list(TINY),
        variants=CHOSEN,
        seeds=2,
        samples=2,
        progress=False,
        time_rounds=1,
    )
    return out, table


def test_each_run_is_its_variant_and_the_table_is_its_eval(ablated):
    out, table = ablated
    assert json.loads((out / "ablation.json").read_text()) == table
    assert list(table["variants"]) == CHOSEN and table["seeds"] == [0, 1]
    for variant in CHOSEN:
        for i, seed in enumerate((None, 1)):
            run = out / variant_run_name("digits", variant, seed)
            config = json.loads((run / "config.json").read_text())
            assert config["seed"] == (seed or 0)
            evaluation = json.loads((run / "eval-test.json").read_text())
            numbers = table["variants"][variant]["per_seed"][i]
            assert numbers["ordered"] == evaluation["nats"]["ordered"]
            assert numbers["kl_tour"] == evaluation["nats"]["kl"]["tour"]
            assert numbers["probe_linear"] == evaluation["classification"]["linear"]
            prior = {"paper": "mlp", "shift": "shift", "random": "mlp"}[variant]
            assert config["model"]["prior_network"] == prior
            draw = "random" if variant == "random" else "nearest"
            assert config["codebank"]["neighbours"] == draw
    assert (out / "digits-acn").is_dir()  # the paper's first seed keeps reproduce's name
    shift = table["variants"]["shift"]
    assert shift["prior_parameters"] == 4  # TINY's code_dim: s alone
    assert table["variants"]["paper"]["prior_parameters"] > 100
    assert all(v["step_ms"] > 0 for v in table["variants"].values())
    # The paired difference is the mean of per-seed differences, not a difference of means of
    # other runs.
    diffs = [
        s["ordered"] - p["ordered"]
        for s, p in zip(shift["per_seed"], table["variants"]["paper"]["per_seed"], strict=True)
    ]
    assert shift["minus_paper"]["ordered"] == pytest.approx(statistics.fmean(diffs))
    markdown = (out / "ablation.md").read_text()
    assert "| shift |" in markdown and "paired by seed" in markdown


def test_a_second_call_reuses_every_run(ablated):
    out, table = ablated
    again = ablate(
        "digits",
        out,
        list(TINY),
        variants=CHOSEN,
        seeds=2,
        samples=2,
        progress=False,
        time_rounds=0,
    )
    assert all(r["train_seconds_this_call"] < 5 for r in again["runs"].values())
    for v in CHOSEN:
        assert again["variants"][v]["per_seed"] == table["variants"][v]["per_seed"]
        assert again["variants"][v]["step_ms"] is None  # not timed


def test_summary_statistics_by_hand():
    rows = {
        "paper": [{"x": 1.0}, {"x": 3.0}, {"x": 5.0}],
        "shift": [{"x": 0.0}, {"x": 3.0}, {"x": 3.0}],
    }
    s = summarise(rows)
    assert s["paper"]["mean"]["x"] == 3.0 and s["paper"]["std"]["x"] == 2.0
    assert "minus_paper" not in s["paper"]
    assert s["shift"]["minus_paper"]["x"] == pytest.approx(-1.0)  # (-1, 0, -2)
    assert s["shift"]["minus_paper_std"]["x"] == pytest.approx(1.0)


def test_prior_sizes_follow_the_family():
    from acn.config import load_config

    def count(*overrides):
        return prior_parameters(load_config("digits-acn", list(overrides)))

    d = 16
    assert count("model.prior_network=shift", "model.prior_components=1") == d
    assert count("model.prior_network=linear", "model.prior_components=1") == d * d + 2 * d
    # The paper's MLP: three 512-wide layers with input skips, an output fed by all of them.
    h = 512
    mlp_hidden = (d * h + h) + 2 * ((d + h) * h + h)
    assert count() == mlp_hidden + (d + 3 * h) * d * 3 * 3 + d * 3 * 3
    assert count("model.prior_components=1") == mlp_hidden + (d + 3 * h) * d * 3 + d * 3


@pytest.mark.parametrize(
    "text, message",
    [("paper,shfit", "unknown ablation variant"), ("paper,paper", "twice"), (",", "unknown")],
)
def test_bad_variant_lists_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_variants(text)


def test_everything_is_checked_before_training(tmp_path):
    assert parse_variants(None) == list(VARIANTS)
    with pytest.raises(ConfigError, match="codebank.k is set by the ablation"):
        ablate("digits", tmp_path, ["codebank.k=3"], progress=False)
    with pytest.raises(ConfigError, match="no preset cifar11-acn"):
        ablate("cifar11", tmp_path, progress=False)
    with pytest.raises(ConfigError, match="model.code_dim"):
        ablate("digits", tmp_path, ["model.code_dim=0"], progress=False)
    assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "paper,mlp"], "unknown ablation variant(s) mlp"),
        (["codebank.neighbours=random"], "codebank.neighbours is set by the ablation"),
        (["--seeds", "0"], "seeds"),
    ],
)
def test_the_command_refuses_with_one_line(argv, message, tmp_path, capsys):
    from acn.cli.parser import main

    try:
        code = main(["ablate", "digits", *argv, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
