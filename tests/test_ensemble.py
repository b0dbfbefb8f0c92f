"""Ensemble: the mean where it should be, rows sum to 1, misaligned keys raise, weights on
training folds only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spoils_tf import ensemble, labels
from spoils_tf.metrics.classification import prob_columns

BIN = labels.BINARY_CLASSES


def test_mean_ensemble_is_the_mean_and_weights_are_normalised():
    a = np.array([[1.0, 0.0], [0.2, 0.8]])
    b = np.array([[0.0, 1.0], [0.6, 0.4]])
    np.testing.assert_allclose(ensemble.mean_ensemble([a, b]), [[0.5, 0.5], [0.4, 0.6]])
    # weights 3:1 -> 0.75 a + 0.25 b: row 0 = [0.75, 0.25], row 1 = [0.3, 0.7]
    np.testing.assert_allclose(ensemble.mean_ensemble([a, b], [3, 1]),
                               [[0.75, 0.25], [0.3, 0.7]])


def test_ensemble_rows_sum_to_one():
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(labels.NUM_GRADE_CLASSES), 50) for _ in range(3)]
    out = ensemble.mean_ensemble(probs, [0.2, 0.5, 0.3])
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize("probs, weights, match", [
    ([np.full((2, 2), 0.5), np.full((3, 2), 0.5)], None, "shape"),
    ([np.full((2, 2), 0.6)], None, "sum to 1"),
    ([np.full((2, 2), 0.5)] * 2, [1, -1], "non-negative"),
    ([np.full((2, 2), 0.5)] * 2, [0, 0], "positive sum"),
    ([np.full((2, 2), 0.5)] * 2, [1], "2 non-negative"),
])
def test_mean_ensemble_rejects_bad_input(probs, weights, match):
    with pytest.raises(ValueError, match=match):
        ensemble.mean_ensemble(probs, weights)


def _table(keys, p_first, y=None) -> pd.DataFrame:
    t = pd.DataFrame(keys, columns=list(ensemble.KEYS))
    t[prob_columns(BIN)] = np.c_[p_first, 1 - np.asarray(p_first)]
    if y is not None:
        t["y_true"] = y
    return t


KEYS_3 = [("P1", 7, "L4-L5"), ("P1", 7, "L5-S1"), ("P2", 9, "L4-L5")]


def test_join_aligns_rows_by_key_not_by_position():
    a = _table(KEYS_3, [0.9, 0.2, 0.6], ["PG1-3", "PG4-5", "PG1-3"])
    # b in another order, slice as a string: still the same discs
    b = _table([(p, str(s), lvl) for p, s, lvl in KEYS_3[::-1]], [0.1, 0.4, 0.7],
               ["PG1-3", "PG4-5", "PG1-3"])
    rows, pa, pb = ensemble.join_predictions(a, b, BIN)
    assert list(rows["level"]) == ["L4-L5", "L5-S1", "L4-L5"]
    # row keys a[i] <-> b reversed: P1/L4-L5 gets b's last value 0.7, P2 gets b's first 0.1
    np.testing.assert_allclose(pb[:, 0], [0.7, 0.4, 0.1])
    np.testing.assert_allclose(ensemble.mean_ensemble([pa, pb])[:, 0], [0.8, 0.3, 0.35])
    assert list(rows["y_true"]) == ["PG1-3", "PG4-5", "PG1-3"]


@pytest.mark.parametrize("b_keys, b_y, match", [
    (KEYS_3[:2], None, "1 row.* only in a"),                                 # b lost a row
    (KEYS_3 + [("P3", 1, "L1-L2")], None, "1 only in b"),                   # b has an extra
    (KEYS_3[:2] + [("P2", 9, "L3-L4")], None, "only in a .*only in b"),     # a level differs
    (KEYS_3[:2] + [KEYS_3[0]], None, "duplicate key"),
    (KEYS_3, ["PG1-3", "PG1-3", "PG1-3"], "y_true differs"),
])
def test_join_raises_on_misaligned_keys(b_keys, b_y, match):
    a = _table(KEYS_3, [0.9, 0.2, 0.6], ["PG1-3", "PG4-5", "PG1-3"])
    b = _table(b_keys, np.full(len(b_keys), 0.5), b_y)
    with pytest.raises(ValueError, match=match):
        ensemble.join_predictions(a, b, BIN)


def test_join_requires_probability_columns():
    a = _table(KEYS_3, [0.9, 0.2, 0.6])
    with pytest.raises(ValueError, match="prob/PG4-5"):
        ensemble.join_predictions(a, a.drop(columns="prob/PG4-5"), BIN)


def test_fit_weights_by_hand():
    # A gives the true class (0) probability 1, 1, 0; B gives 0.5 everywhere.
    # loss(w) = -[2 ln(0.5 + 0.5 w) + ln(0.5 - 0.5 w)] / 3, minimum at 2/(1+w) = 1/(1-w),
    # w = 1/3; on the 0.05 grid: f(0.30) = -0.16805, f(0.35) = -0.16943 (f = -[2 ln(1+w) +
    # ln(1-w)]) -> w_A = 0.35
    a = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    b = np.full((3, 2), 0.5)
    y = np.array([0, 0, 0])
    np.testing.assert_allclose(ensemble.fit_weights([a, b], y), [0.35, 0.65])
    # a model that is always right beats one that is uniform: all weight on it
    np.testing.assert_allclose(ensemble.fit_weights([np.eye(2)[y], b], y), [1.0, 0.0])
    # identical models tie everywhere: the tie goes to equal weights
    np.testing.assert_allclose(ensemble.fit_weights([b, b], y), [0.5, 0.5])
    w3 = ensemble.fit_weights([a, b, b], y, step=0.1)
    assert w3.shape == (3,) and w3.sum() == pytest.approx(1.0) and w3.min() >= 0


def test_cross_fit_uses_other_folds_only():
    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, n)
    folds = np.arange(n) % 3
    good = np.clip(np.eye(2)[y] * 0.8 + 0.1, 0, 1)
    noisy = rng.dirichlet([1, 1], n)
    probs, weights = ensemble.cross_fit_ensemble([good, noisy], y, folds)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # fold 0 rows use the weights chosen on folds 1 and 2
    np.testing.assert_allclose(probs[folds == 0],
                               ensemble.mean_ensemble([good[folds == 0], noisy[folds == 0]],
                                                      weights[0]))
    # changing fold 0's labels cannot change fold 0's weights (they never saw them)
    y2 = y.copy()
    y2[folds == 0] = 1 - y2[folds == 0]
    _, weights2 = ensemble.cross_fit_ensemble([good, noisy], y2, folds)
    np.testing.assert_allclose(weights2[0], weights[0])
    assert not np.allclose(weights2[1], weights[1]) or not np.allclose(weights2[2], weights[2])
