"""The typed run configuration: frozen dataclasses (:mod:`~acn.config.schema`), the names each
choice may take (:mod:`~acn.config.choices`), their checks (:mod:`~acn.config.checks`), and how
a config is resolved from defaults, a preset and ``key=value`` overrides
(:mod:`~acn.config.load`). Nothing here imports torch."""

from acn.config.checks import validate
from acn.config.choices import (
    DATASETS,
    DECODERS,
    DEVICES,
    KNN_BACKENDS,
    LIKELIHOODS,
    PLACEMENTS,
    PRECISIONS,
    PRIORS,
    SEARCH_PRECISIONS,
)
from acn.config.load import (
    from_dict,
    load_config,
    parse_overrides,
    preset_names,
    resume_conflicts,
    valid_keys,
)
from acn.config.schema import (
    SCHEDULE_KEYS,
    CodeBankConfig,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "DATASETS",
    "DECODERS",
    "DEVICES",
    "KNN_BACKENDS",
    "LIKELIHOODS",
    "PLACEMENTS",
    "PRECISIONS",
    "PRIORS",
    "SCHEDULE_KEYS",
    "SEARCH_PRECISIONS",
    "CodeBankConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "from_dict",
    "load_config",
    "parse_overrides",
    "preset_names",
    "resume_conflicts",
    "valid_keys",
    "validate",
]
