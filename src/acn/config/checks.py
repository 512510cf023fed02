"""Validation of a resolved config: the allowed choices, ranges and combinations.

Kept apart from :mod:`acn.config.schema` (the dataclasses) and :mod:`acn.config.load` (how they
are read) so that each stays small; every rule raises :class:`~acn.errors.ConfigError` naming
the key and the valid values (the names themselves are in :mod:`acn.config.choices`).
"""

from __future__ import annotations

from acn.config.choices import (
    DATASETS,
    DECODERS,
    DEVICES,
    KNN_BACKENDS,
    LIKELIHOODS,
    NEIGHBOUR_DRAWS,
    PLACEMENTS,
    PRECISIONS,
    PRIOR_NETWORKS,
    PRIORS,
    SEARCH_PRECISIONS,
    suggest,
)
from acn.config.schema import Config
from acn.errors import ConfigError

# The datasets that are binary as stored (data.binarize does not apply to them).
BINARY_DATASETS = ("mnist-static", "mnist-dynamic", "mnist5k-static", "mnist5k-dynamic")


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{key}={value!r} is not valid{suggest(value, choices)}; "
            f"choose one of: {', '.join(choices)}"
        )


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} is out of range; it must be >= {low}")


def validate(config: Config) -> None:
    """Check values and their combinations; raise :class:`ConfigError` naming the problem."""
    _check_choices(config)
    _check_data(config)
    _check_model(config)
    _check_codebank_and_training(config)


def _check_choices(config: Config) -> None:
    d, m, b, t = config.data, config.model, config.codebank, config.train
    _choice("data.name", d.name, DATASETS)
    _choice("model.prior", m.prior, PRIORS)
    _choice("model.prior_network", m.prior_network, PRIOR_NETWORKS)
    _choice("codebank.neighbours", b.neighbours, NEIGHBOUR_DRAWS)
    _choice("model.decoder", m.decoder, DECODERS)
    _choice("model.likelihood", m.likelihood, LIKELIHOODS)
    _choice("train.device", t.device, DEVICES)
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("codebank.backend", b.backend, KNN_BACKENDS)
    _choice("codebank.search_precision", b.search_precision, SEARCH_PRECISIONS)
    _choice("codebank.placement", b.placement, PLACEMENTS)
    if b.placement == "sharded" and b.unique:
        raise ConfigError(
            "codebank.unique=true needs codebank.placement=replicated: the unique-neighbour "
            "constraint resolves a batch sequentially against the whole bank"
        )
    if b.placement == "sharded" and b.neighbours == "random":
        raise ConfigError(
            "codebank.neighbours=random needs codebank.placement=replicated: a random row may "
            "lie on any rank's shard"
        )


def _check_data(config: Config) -> None:
    d = config.data
    _at_least("seed", config.seed, 0)
    _at_least("data.threshold", d.threshold, 0)
    max_level = {"digits": 16, "mnist": 255, "mnist5k": 255}.get(d.name)
    if d.binarize and max_level is None:
        raise ConfigError(
            f"data.binarize=true applies to digits, mnist and mnist5k only, not {d.name}"
            + (" (it is binary already)" if d.name in BINARY_DATASETS else "")
        )
    if max_level is not None and d.threshold > max_level:
        raise ConfigError(
            f"data.threshold={d.threshold} is out of range; {d.name} levels are 0..{max_level}"
        )
    _at_least("data.image_size", d.image_size, 4)
    if d.channels not in (1, 3):
        raise ConfigError(f"data.channels={d.channels} must be 1 (grey) or 3 (RGB)")
    _at_least("data.num_workers", d.num_workers, 0)


def _check_model(config: Config) -> None:
    d, m = config.data, config.model
    _at_least("model.code_dim", m.code_dim, 1)
    if not m.encoder_channels or min(m.encoder_channels) < 1:
        raise ConfigError("model.encoder_channels must be a non-empty list of positive widths")
    _at_least("model.prior_hidden", m.prior_hidden, 1)
    _at_least("model.prior_layers", m.prior_layers, 1)
    _at_least("model.prior_components", m.prior_components, 1)
    if m.prior_network in ("linear", "shift") and m.prior_components != 1:
        raise ConfigError(
            f"model.prior_network={m.prior_network} is one Gaussian per dimension; set "
            f"model.prior_components=1 (it is {m.prior_components})"
        )
    if not m.prior_min_scale > 0:
        raise ConfigError(f"model.prior_min_scale={m.prior_min_scale} must be > 0")
    _at_least("model.decoder_channels", m.decoder_channels, 1)
    _at_least("model.pixelcnn_layers", m.pixelcnn_layers, 1)
    _at_least("model.latent_map_channels", m.latent_map_channels, 1)
    if m.pixelcnn_kernel < 3 or m.pixelcnn_kernel % 2 == 0:
        raise ConfigError(f"model.pixelcnn_kernel={m.pixelcnn_kernel} must be odd and >= 3")
    first = m.pixelcnn_first_kernel
    if first != 0 and (first < 3 or first % 2 == 0):
        raise ConfigError(
            f"model.pixelcnn_first_kernel={first} must be 0 (the same as model.pixelcnn_kernel) "
            "or odd and >= 3"
        )
    if m.prior == "none" and m.decoder != "pixelcnn":
        raise ConfigError(
            "model.prior=none (no latent) needs model.decoder=pixelcnn: "
            "a deconv decoder without a latent has nothing to decode"
        )
    binary = d.binarize or d.name in BINARY_DATASETS
    if m.likelihood == "bernoulli" and not binary:
        raise ConfigError(
            "model.likelihood=bernoulli needs binary images (data.binarize=true, or "
            f"{' / '.join(BINARY_DATASETS)}): a Bernoulli on grey levels is not a valid likelihood"
        )
    _at_least("model.likelihood_components", m.likelihood_components, 1)


def _check_codebank_and_training(config: Config) -> None:
    b, t = config.codebank, config.train
    _at_least("codebank.k", b.k, 1)
    _at_least("codebank.chunk_size", b.chunk_size, 1)
    _at_least("train.steps", t.steps, 1)
    _at_least("train.batch_size", t.batch_size, 1)
    _at_least("train.eval_batch_size", t.eval_batch_size, 1)
    if not t.lr > 0:
        raise ConfigError(f"train.lr={t.lr} must be > 0")
    for key, beta in (("train.beta1", t.beta1), ("train.beta2", t.beta2)):
        if not 0 <= beta < 1:
            raise ConfigError(f"{key}={beta} must be in [0, 1)")
    _at_least("train.weight_decay", t.weight_decay, 0)
    _at_least("train.grad_clip", t.grad_clip, 0)
    _at_least("train.eval_every", t.eval_every, 0)
    _at_least("train.checkpoint_every", t.checkpoint_every, 1)
    _at_least("train.log_every", t.log_every, 1)
    _at_least("train.threads", t.threads, 0)
