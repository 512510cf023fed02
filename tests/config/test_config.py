"""The typed config: presets, overrides, and errors that name the valid choices."""

from __future__ import annotations

import pytest

from acn.config import Config, load_config, preset_names, resume_conflicts, valid_keys
from acn.errors import ConfigError


def test_presets_resolve_and_differ_only_in_the_prior():
    assert {"digits-acn", "digits-vae", "digits-pixelcnn"} <= set(preset_names())
    acn, vae, pix = (load_config(p).flat() for p in ("digits-acn", "digits-vae", "digits-pixelcnn"))
    assert (acn["model.prior"], vae["model.prior"], pix["model.prior"]) == ("acn", "normal", "none")
    for other in (vae, pix):
        diff = {k for k in acn if acn[k] != other[k]}
        assert diff == {"model.prior"}


def test_overrides_are_typed():
    cfg = load_config(
        "digits-acn",
        [
            "train.lr=3e-4",
            "seed=7",
            "codebank.unique=true",
            "model.encoder_channels=16,32,64",
            "train.steps=1_000",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.seed == 7 and cfg.codebank.unique is True and cfg.train.steps == 1000
    assert cfg.model.encoder_channels == (16, 32, 64)


def test_required_contract_keys_exist():
    keys = set(valid_keys())
    for key in (
        "seed",
        "train.steps",
        "train.checkpoint_every",
        "train.batch_size",
        "train.lr",
        "model.prior",
        "model.decoder",
        "codebank.k",
    ):
        assert key in keys


def test_toml_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('seed = 3\n[model]\nprior = "normal"\ndecoder = "deconv"\n')
    cfg = load_config(str(path), ["codebank.k=2"])
    assert (cfg.seed, cfg.model.prior, cfg.model.decoder, cfg.codebank.k) == (
        3,
        "normal",
        "deconv",
        2,
    )


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.lrr=1"], "valid keys: train.steps"),
        (["bogus=1"], "valid keys"),
        (["nosection.x=1"], "unknown key nosection"),
        (["model.prior=gaussian"], "choose one of: acn, normal, mixture, none"),
        (["model.decoder=rnn"], "choose one of: pixelcnn, deconv"),
        (["train.steps=-5"], "train.steps=-5 is out of range"),
        (["train.steps=ten"], "train.steps: expected an integer"),
        (["train.lr=0"], "train.lr=0.0 must be > 0"),
        (["train.lr=nan"], "finite"),
        (["model.prior_components=0"], "model.prior_components=0 is out of range"),
        (["codebank.k=0"], "codebank.k=0 is out of range"),
        (["codebank.unique=maybe"], "expected true or false"),
        (["model.pixelcnn_kernel=4"], "must be odd"),
        (["model.prior=none", "model.decoder=deconv"], "needs model.decoder=pixelcnn"),
        (["data.binarize=false", "model.likelihood=bernoulli"], "not a valid likelihood"),
        (["train.beta1=1.5"], "must be in [0, 1)"),
        (["noequals"], "is not KEY=VALUE"),
        (["data.threshold=17"], "digits levels are 0..16"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config("digits-acn", overrides)
    assert needle in str(err.value)


def test_unknown_preset_lists_presets(tmp_path):
    with pytest.raises(ConfigError, match="presets: celeba-acn.*digits-acn"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nprior=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))


def test_round_trip_through_dict():
    cfg = load_config("digits-acn", ["model.encoder_channels=8,16"])
    from acn.config import from_dict

    assert from_dict(cfg.to_dict()) == cfg


def test_resume_conflicts_ignore_schedule_keys():
    a = Config()
    b = load_config(None, ["train.steps=99", "train.checkpoint_every=7"])
    c = load_config(None, ["train.lr=0.5"])
    assert resume_conflicts(a, b) == []
    assert resume_conflicts(a, c) == ["train.lr"]


def test_a_typo_gets_the_likely_name():
    with pytest.raises(ConfigError, match=r"unknown key train.stpes .*did you mean train.steps\?"):
        load_config("digits-acn", ["train.stpes=3"])
    with pytest.raises(ConfigError, match=r"did you mean digits-acn\?"):
        load_config("digits-acnn")
    with pytest.raises(ConfigError, match=r"model.prior='normla' .*did you mean normal\?"):
        load_config("digits-acn", ["model.prior=normla"])
    with pytest.raises(ConfigError) as far:
        load_config("digits-acn", ["train.zzzz=3"])
    assert "did you mean" not in str(far.value)  # no suggestion when nothing is close


# Presets whose PixelCNN does not see every earlier pixel, and why that is kept.
PARTIAL_VIEW = {
    "digits": "reach 6 of 7 on the 8x8 digits; every published digits number is of these nets",
    "celeba": "64x64: whole-image reach would need a 71-wide first layer",
}
IMAGE_SIZES = {
    "digits": 8,
    "mnist": 28,
    "mnist5k": 28,
    "cifar10": 32,
    "imagenet32": 32,
    "celeba": 64,
}


@pytest.mark.parametrize("name", preset_names())
def test_preset_decoders_see_the_whole_image(name):
    from acn.nn.pixelcnn import layer_kernels, sees_whole_image

    m = load_config(name).model
    kernels = layer_kernels(m.pixelcnn_layers, m.pixelcnn_kernel, m.pixelcnn_first_kernel)
    dataset = name.rsplit("-", 1)[0]
    size = IMAGE_SIZES[dataset]
    assert sees_whole_image(kernels, size, size) == (dataset not in PARTIAL_VIEW)
