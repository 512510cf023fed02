"""Classification from features: the paper's Table 3 protocol, and a k-NN companion.

Labels never touch training of the model; they are used here only. Both probes are fitted on the
training split's features, their one hyperparameter is chosen on the validation split, and the
chosen probe is scored on the requested split.

- Linear: multinomial logistic regression (L-BFGS) on standardised features (statistics from the
  training split), inverse regularisation strength C chosen from a log grid.
- k-NN: majority vote among the k nearest training features, Euclidean on the raw features (for
  codes, the metric the ACN itself searches with), k chosen from a small grid.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections import OrderedDict

import numpy as np

LINEAR_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
KNN_GRID = (1, 3, 5, 10, 20)


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x) == y))


def _best_on_validation(name, candidates, fit, val, test, grid) -> dict:
    """Fit every candidate, keep the first best on ``val``, score it on ``test``."""
    best, best_val, best_value = None, -1.0, None
    for value in candidates:
        model = fit(value)
        score = _accuracy(model, *val)
        if score > best_val:
            best, best_val, best_value = model, score, value
    return {
        "accuracy": _accuracy(best, *test),
        name: best_value,
        "val_accuracy": best_val,
        "grid": list(grid),
    }


def linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    grid: tuple[float, ...] = LINEAR_GRID,
    max_iter: int = 2000,
) -> dict:
    """Accuracy of the best-on-validation logistic regression.

    Each argument pair is ``(features (N, F), labels (N,))``.

    Returns:
        ``accuracy`` on ``test``, the chosen ``C``, its ``val_accuracy`` and the ``grid``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not grid:
        raise ValueError("linear_probe needs at least one value of C")

    def fit(c: float):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
        with warnings.catch_warnings():
            # A strongly unregularised fit on separable features may stop at max_iter; its
            # validation accuracy is still a fair score of what it reached.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(*train)

    # Ascending C: ties keep the stronger regularisation.
    return _best_on_validation("C", sorted(grid), fit, val, test, grid)


def knn_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    grid: tuple[int, ...] = KNN_GRID,
) -> dict:
    """Accuracy of the best-on-validation k-nearest-neighbour vote."""
    from sklearn.neighbors import KNeighborsClassifier

    # k beyond the training set is meaningless; fall back to the whole set if nothing is left.
    ks = sorted({k for k in grid if k <= len(train[0])}) or [len(train[0])]
    return _best_on_validation(
        "k", ks, lambda k: KNeighborsClassifier(n_neighbors=k).fit(*train), val, test, grid
    )


def pca_features(
    train: np.ndarray, others: list[np.ndarray], components: int, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Project onto the first ``components`` principal components of ``train``."""
    from sklearn.decomposition import PCA

    components = min(components, train.shape[0], train.shape[1])
    pca = PCA(n_components=components, random_state=seed).fit(train)
    return pca.transform(train), [pca.transform(x) for x in others]


def probe_all(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], split: str) -> dict:
    """Both probes on one feature set: fit on ``train``, chosen on ``val``, scored on ``split``."""
    train = (features["train"], labels["train"])
    val = (features["val"], labels["val"])
    test = (features[split], labels[split])
    return {"linear": linear_probe(train, val, test), "knn": knn_probe(train, val, test)}


# Baseline probes of recent data sets, by a digest of their pixels and labels: the pixel and PCA
# probes depend on the data alone, and the demo and ``acn reproduce`` score several models of one
# data set in a process (each baseline is a dozen L-BFGS fits). A few entries: the rows are small.
_BASELINES: OrderedDict[str, dict] = OrderedDict()
_BASELINES_KEPT = 4


def _digest(arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], *extra) -> str:
    h = hashlib.blake2b(repr(extra).encode(), digest_size=16)
    for name in sorted(arrays):
        for a in (arrays[name], labels[name]):
            a = np.ascontiguousarray(a)
            h.update(f"{name}{a.dtype}{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()


def baseline_probes(
    pixels: dict[str, np.ndarray], labels: dict[str, np.ndarray], split: str, components: int
) -> dict:
    """Both probes on raw pixels and on their first ``components`` principal components (fitted
    on ``train``): ``{"pixels": ..., "pca": {..., "components": n}}``, as :func:`probe_all`
    gives them. The same data, split and components give the same rows, computed once."""
    key = _digest(pixels, labels, split, components)
    if key not in _BASELINES:
        pca_train, pca_rest = pca_features(
            pixels["train"], [pixels["val"], pixels[split]], components
        )
        pca = {"train": pca_train, "val": pca_rest[0], split: pca_rest[1]}
        rows = {"pixels": probe_all(pixels, labels, split), "pca": probe_all(pca, labels, split)}
        rows["pca"]["components"] = pca_train.shape[1]
        _BASELINES[key] = rows
        while len(_BASELINES) > _BASELINES_KEPT:
            _BASELINES.popitem(last=False)
    _BASELINES.move_to_end(key)
    return copy.deepcopy(_BASELINES[key])  # callers annotate their copy
