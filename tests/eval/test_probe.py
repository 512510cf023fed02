"""The classification probes: ~100% on separable codes, chance on random labels, honest choice.

Proves: both probes classify well-separated clusters almost perfectly and random labels at
chance; the hyperparameter returned is the best on validation (refitting it reproduces its
validation accuracy); PCA keeps the requested, capped number of components in decreasing
variance; ``probe_all`` scores on the split it is asked for; the pixel and PCA baselines are
computed once per data set and equal the probes fitted directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import acn.eval.probe as probe_module
from acn.eval.probe import (
    KNN_GRID,
    LINEAR_GRID,
    baseline_probes,
    knn_probe,
    linear_probe,
    pca_features,
    probe_all,
)


def _clusters(n: int, seed: int, classes: int = 10, dim: int = 16, noise: float = 0.3):
    """``n`` points around fixed class centres (the same for every seed), labels uniform."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(scale=5.0, size=(classes, dim))
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(scale=noise, size=(n, dim)), labels


def _val_accuracy(model, train, val) -> float:
    return float(np.mean(model.fit(*train).predict(val[0]) == val[1]))


def test_separable_codes_are_classified_almost_perfectly():
    # Centres ~5 * sqrt(2 * 16) = 28 apart, noise 0.3: any sane probe is (near) perfect.
    train, val, test = _clusters(1000, 1), _clusters(300, 2), _clusters(300, 3)
    linear = linear_probe(train, val, test)
    knn = knn_probe(train, val, test)
    assert linear["accuracy"] >= 0.99 and linear["val_accuracy"] >= 0.99
    assert knn["accuracy"] >= 0.99 and knn["val_accuracy"] >= 0.99


def test_random_labels_give_chance():
    rng = np.random.default_rng(4)

    def draw(n):
        return rng.normal(size=(n, 16)), rng.integers(0, 10, n)

    train, val, test = draw(2000), draw(500), draw(2000)
    # The test labels are independent of everything the probe saw (train, val, the choice of C
    # or k, the test features), so whatever it predicts, each test point is right with
    # probability 0.1: the accuracy is Binomial(2000, 0.1) / 2000, standard error
    # sqrt(0.09 / 2000) = 0.0067. Picking the hyperparameter on val can only inflate *val*
    # accuracy, never test; the 0.05 margin (7.5 standard errors) leaves room to spare anyway.
    linear = linear_probe(train, val, test)
    knn = knn_probe(train, val, test)
    assert abs(linear["accuracy"] - 0.1) < 0.05
    assert abs(knn["accuracy"] - 0.1) < 0.05


def test_the_choice_is_the_best_on_validation():
    # Heavy noise and few training points: the grid's validation accuracies differ (too strong
    # regularisation collapses the linear probe; k changes the vote), so the choice matters.
    train, val, test = _clusters(200, 5, noise=4.0), _clusters(200, 6, noise=4.0), _clusters(100, 7)

    result = linear_probe(train, val, test)
    assert set(result) == {"accuracy", "C", "val_accuracy", "grid"}
    assert result["grid"] == list(LINEAR_GRID)
    scores = {
        c: _val_accuracy(
            make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)), train, val
        )
        for c in LINEAR_GRID
    }
    assert len(set(scores.values())) > 1  # precondition: regularisation matters here
    # The chosen C is the first best on validation (ties keep the earlier, stronger one), and
    # refitting it reproduces the reported validation accuracy.
    assert result["C"] == max(scores, key=scores.get)
    assert result["val_accuracy"] == scores[result["C"]]

    result = knn_probe(train, val, test)
    assert set(result) == {"accuracy", "k", "val_accuracy", "grid"}
    assert result["grid"] == list(KNN_GRID)
    scores = {k: _val_accuracy(KNeighborsClassifier(k), train, val) for k in KNN_GRID}
    assert len(set(scores.values())) > 1
    assert result["k"] == max(scores, key=scores.get)
    assert result["val_accuracy"] == scores[result["k"]]


def test_knn_skips_k_larger_than_the_training_set():
    train, val, test = _clusters(4, 15), _clusters(20, 16), _clusters(20, 17)
    result = knn_probe(train, val, test, grid=(1, 3, 10))
    assert result["k"] in (1, 3)  # k = 10 > 4 training points cannot be fitted


def test_pca_keeps_the_requested_components_in_decreasing_variance():
    rng = np.random.default_rng(8)
    # Axis scales 10, 9, ..., 1: distinct variances, so the principal order is well defined.
    train = rng.normal(size=(300, 10)) * np.arange(10, 0, -1)
    other_in = rng.normal(size=(40, 10))
    projected, (other,) = pca_features(train, [other_in], components=4)
    assert projected.shape == (300, 4) and other.shape == (40, 4)
    variances = projected.var(axis=0)
    assert np.all(np.diff(variances) < 0)
    # The kept directions are the top ones: the first has the widest axis's variance (~100).
    assert variances[0] == pytest.approx(train.var(axis=0).max(), rel=0.2)
    # The others go through the same (train-fitted) projection, centred on the train mean.
    _, (train_again,) = pca_features(train, [train], components=4)
    np.testing.assert_allclose(train_again, projected, atol=1e-10)
    # Capped at min(n, F): 3 samples, and 10 features with a request for 16.
    capped, (capped_other,) = pca_features(train[:3], [other_in], components=16)
    assert capped.shape == (3, 3) and capped_other.shape == (40, 3)
    capped, _ = pca_features(train[:, :5], [], components=16)
    assert capped.shape == (300, 5)


def test_probe_all_scores_the_requested_split():
    train, val, test = _clusters(500, 9), _clusters(200, 10), _clusters(200, 11)
    features = {"train": train[0], "val": val[0], "test": test[0]}
    # Test labels shifted by one class: a perfect classifier scores 0 on "test", 1 on "val".
    labels = {"train": train[1], "val": val[1], "test": (test[1] + 1) % 10}
    on_test = probe_all(features, labels, "test")
    on_val = probe_all(features, labels, "val")
    assert set(on_test) == {"linear", "knn"} == set(on_val)
    assert "C" in on_test["linear"] and "k" in on_test["knn"]
    for name in ("linear", "knn"):
        assert on_val[name]["accuracy"] >= 0.99
        assert on_test[name]["accuracy"] <= 0.05
        # The choice is made on val either way; only the scored split changes.
        assert on_test[name]["val_accuracy"] == on_val[name]["val_accuracy"]


@pytest.mark.parametrize("probe", [linear_probe, knn_probe])
def test_probes_are_deterministic(probe):
    data = _clusters(300, 12, noise=3.0), _clusters(100, 13, noise=3.0), _clusters(100, 14)
    assert probe(*data) == probe(*data)


def test_baselines_equal_direct_probes_and_are_computed_once_per_data(monkeypatch):
    train, val, test = _clusters(300, 20, noise=2.0), _clusters(100, 21), _clusters(100, 22)
    pixels = {"train": train[0], "val": val[0], "test": test[0]}
    labels = {"train": train[1], "val": val[1], "test": test[1]}
    fits = []
    real = probe_module.probe_all
    monkeypatch.setattr(probe_module, "probe_all", lambda *a: fits.append(1) or real(*a))
    first = baseline_probes(pixels, labels, "test", 4)
    assert len(fits) == 2  # pixels and PCA
    pca_train, (pca_val, pca_test) = pca_features(
        pixels["train"], [pixels["val"], pixels["test"]], 4
    )
    pca = {"train": pca_train, "val": pca_val, "test": pca_test}
    assert first["pixels"] == real(pixels, labels, "test")
    assert first["pca"] == {**real(pca, labels, "test"), "components": 4}
    first["pixels"]["linear"]["accuracy"] = -1.0  # a caller's change does not reach the cache
    again = baseline_probes({k: v.copy() for k, v in pixels.items()}, labels, "test", 4)
    assert len(fits) == 2 and again["pixels"] == real(pixels, labels, "test")
    # Other pixels, another split or another number of components: fitted afresh.
    baseline_probes(pixels, labels, "val", 4)
    baseline_probes(pixels, labels, "test", 3)
    baseline_probes({**pixels, "train": pixels["train"] + 1.0}, labels, "test", 4)
    assert len(fits) == 8
