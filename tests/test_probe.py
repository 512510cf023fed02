"""The classification probes: ~100% on separable codes, chance on random labels, honest choice."""

from __future__ import annotations

import numpy as np
import pytest

from acn.probe import knn_probe, linear_probe, pca_features, probe_all


def _clusters(n: int, seed: int, classes: int = 10, dim: int = 16, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(scale=5.0, size=(classes, dim))
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(scale=noise, size=(n, dim)), labels


def test_separable_codes_are_classified_almost_perfectly():
    train, val, test = _clusters(1000, 1), _clusters(300, 2), _clusters(300, 3)
    assert linear_probe(train, val, test)["accuracy"] >= 0.99
    assert knn_probe(train, val, test)["accuracy"] >= 0.99


def test_random_labels_give_chance():
    rng = np.random.default_rng(4)

    def draw(n):
        return rng.normal(size=(n, 16)), rng.integers(0, 10, n)

    train, val, test = draw(2000), draw(500), draw(2000)
    # Chance is 0.1 with a standard error of sqrt(0.09 / 2000) = 0.0067 on the test draw; the
    # hyperparameter is picked on an independent validation draw, so it cannot inflate the test
    # score. 0.04 is six standard errors.
    assert abs(linear_probe(train, val, test)["accuracy"] - 0.1) < 0.04
    assert abs(knn_probe(train, val, test)["accuracy"] - 0.1) < 0.04


def test_the_choice_is_the_best_on_validation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, val, test = _clusters(200, 5, noise=4.0), _clusters(200, 6, noise=4.0), _clusters(100, 7)
    result = linear_probe(train, val, test, grid=(1e-3, 1.0))
    assert set(result) == {"accuracy", "C", "val_accuracy", "grid"}
    scores = {}
    for c in (1e-3, 1.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        scores[c] = float(np.mean(model.fit(*train).predict(val[0]) == val[1]))
    assert result["val_accuracy"] == max(scores.values())
    assert scores[result["C"]] == result["val_accuracy"]
    result = knn_probe(train, val, test, grid=(1, 20))
    assert set(result) == {"accuracy", "k", "val_accuracy", "grid"}
    for k in (1, 20):
        score = float(np.mean(KNeighborsClassifier(k).fit(*train).predict(val[0]) == val[1]))
        assert score <= result["val_accuracy"]


def test_pca_keeps_the_requested_components_in_decreasing_variance():
    rng = np.random.default_rng(8)
    train = rng.normal(size=(300, 10)) * np.arange(10, 0, -1)
    projected, (other,) = pca_features(train, [rng.normal(size=(40, 10))], components=4)
    assert projected.shape == (300, 4) and other.shape == (40, 4)
    variances = projected.var(axis=0)
    assert np.all(np.diff(variances) < 0)
    capped, _ = pca_features(train[:3], [], components=16)
    assert capped.shape[1] == 3


def test_probe_all_scores_the_requested_split():
    train, val, test = _clusters(500, 9), _clusters(200, 10), _clusters(200, 11)
    features = {"train": train[0], "val": val[0], "test": test[0]}
    labels = {"train": train[1], "val": val[1], "test": (test[1] + 1) % 10}  # test labels wrong
    on_test = probe_all(features, labels, "test")
    on_val = probe_all(features, labels, "val")
    assert set(on_test) == {"linear", "knn"}
    assert on_val["linear"]["accuracy"] >= 0.99
    assert on_test["linear"]["accuracy"] <= 0.05


@pytest.mark.parametrize("probe", [linear_probe, knn_probe])
def test_probes_are_deterministic(probe):
    data = _clusters(300, 12, noise=3.0), _clusters(100, 13, noise=3.0), _clusters(100, 14)
    assert probe(*data) == probe(*data)
