"""Config names -> network parts: one table per kind of choice, keyed by the names of
:mod:`acn.config.choices` (a table that misses or adds a name fails at import)."""

from __future__ import annotations

from collections.abc import Callable

from acn.config import choices
from acn.config.choices import pick, registry
from acn.config.schema import ModelConfig
from acn.nn.decoder import Decoder, DeconvDecoder
from acn.nn.encoder import Encoder
from acn.nn.likelihoods import Bernoulli, Categorical, Likelihood
from acn.nn.logistic import DiscretizedLogisticMixture
from acn.nn.pixelcnn import GatedPixelCNN
from acn.nn.prior import (
    LinearGaussianPrior,
    MixturePrior,
    NeighbourPrior,
    Prior,
    ShiftedGaussianPrior,
    StandardNormalPrior,
)

# model.likelihood -> (levels, mixture components) -> likelihood
LIKELIHOODS: dict[str, Callable[[int, int], Likelihood]] = registry(
    "model.likelihood",
    choices.LIKELIHOODS,
    {
        # Bernoulli for binary data, else a softmax over the levels.
        "auto": lambda levels, k: Bernoulli(levels) if levels == 2 else Categorical(levels),
        "bernoulli": lambda levels, k: Bernoulli(levels),
        "categorical": lambda levels, k: Categorical(levels),
        "logistic_mixture": DiscretizedLogisticMixture,
    },
)

# model.prior_network -> the model's settings -> the ACN's conditional prior p(z | c_hat)
PRIOR_NETWORKS: dict[str, Callable[[ModelConfig], Prior]] = registry(
    "model.prior_network",
    choices.PRIOR_NETWORKS,
    {
        "mlp": lambda m: NeighbourPrior(
            m.code_dim, m.prior_hidden, m.prior_layers, m.prior_components, m.prior_min_scale
        ),
        "linear": lambda m: LinearGaussianPrior(m.code_dim, m.prior_min_scale),
        "shift": lambda m: ShiftedGaussianPrior(m.code_dim, m.prior_min_scale),
    },
)

# model.prior -> the model's settings -> prior (None: no latent at all)
PRIORS: dict[str, Callable[[ModelConfig], Prior | None]] = registry(
    "model.prior",
    choices.PRIORS,
    {
        "acn": lambda m: pick("model.prior_network", PRIOR_NETWORKS, m.prior_network)(m),
        "normal": lambda m: StandardNormalPrior(m.code_dim),
        "mixture": lambda m: MixturePrior(m.code_dim, m.prior_components, m.prior_min_scale),
        "none": lambda m: None,
    },
)

# model.decoder -> (settings, likelihood, (C, H, W), code dim, encoder stages) -> decoder
DECODERS: dict[str, Callable[..., Decoder]] = registry(
    "model.decoder",
    choices.DECODERS,
    {
        "pixelcnn": lambda m, likelihood, shape, code_dim, stages: GatedPixelCNN(
            likelihood,
            shape,
            code_dim,
            m.decoder_channels,
            m.pixelcnn_layers,
            m.pixelcnn_kernel,
            m.latent_map_channels,
            stages,
            m.pixelcnn_first_kernel,
        ),
        "deconv": lambda m, likelihood, shape, code_dim, stages: DeconvDecoder(
            likelihood, shape, code_dim, m.decoder_channels, stages
        ),
    },
)


def make_likelihood(name: str, levels: int, components: int = 10) -> Likelihood:
    """The likelihood ``model.likelihood=name`` for images of ``levels`` values per pixel;
    ``components`` is the number of mixture components of ``logistic_mixture``."""
    return pick("model.likelihood", LIKELIHOODS, name)(levels, components)


def make_prior(m: ModelConfig) -> Prior | None:
    """The prior of ``model.prior`` (None for ``none``: the model has no latent)."""
    return pick("model.prior", PRIORS, m.prior)(m)


def make_encoder(m: ModelConfig, image_shape: tuple[int, int, int]) -> Encoder | None:
    """The encoder of codes c(x), or None for a model without a latent."""
    if m.prior == "none":
        return None
    C, H, W = image_shape
    return Encoder(C, (H, W), m.encoder_channels, m.code_dim)


def make_decoder(
    m: ModelConfig, image_shape: tuple[int, int, int], levels: int, code_dim: int
) -> Decoder:
    """The decoder of ``model.decoder``, with its likelihood; ``code_dim`` 0 means no latent."""
    likelihood = make_likelihood(m.likelihood, levels, m.likelihood_components)
    build = pick("model.decoder", DECODERS, m.decoder)
    return build(m, likelihood, image_shape, code_dim, len(m.encoder_channels))
