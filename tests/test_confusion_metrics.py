"""spoils_tf.metrics.confusion: the shared confusion matrix and per-class scores, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics

from spoils_tf.metrics import confusion

# truth 0 0 1 1 2 2, prediction 0 1 1 1 2 0; class 3 never occurs.
# CM rows = truth: [1 1 0 0], [0 2 0 0], [1 0 1 0], [0 0 0 0]
# TP 1 2 1 0, FP 1 1 0 0, FN 1 0 1 0, TN 3 3 4 6, N 6.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_confusion_matrix_by_hand_and_as_sklearn():
    cm = confusion.confusion_matrix(Y_TRUE, Y_PRED, 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert cm.dtype == np.int64
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, (7, 9)), rng.integers(0, 5, (7, 9))
    np.testing.assert_array_equal(
            confusion.confusion_matrix(t, p, 5),
            sklearn.metrics.confusion_matrix(t.ravel(), p.ravel(), labels=range(5)))


def test_counts_and_per_class_scores_by_hand():
    cm = confusion.confusion_matrix(Y_TRUE, Y_PRED, 4)
    tp, fp, fn, tn = confusion.counts(cm)
    np.testing.assert_array_equal(tp, [1, 2, 1, 0])
    np.testing.assert_array_equal(fp, [1, 1, 0, 0])
    np.testing.assert_array_equal(fn, [1, 0, 1, 0])
    np.testing.assert_array_equal(tn, [3, 3, 4, 6])
    np.testing.assert_array_equal(confusion.present(cm), [True, True, True, False])
    np.testing.assert_allclose(confusion.accuracy_per_class(cm), [4 / 6, 5 / 6, 5 / 6, 1.0])
    np.testing.assert_allclose(confusion.dice_per_class(cm), [2 / 4, 4 / 5, 2 / 3, np.nan])
    np.testing.assert_allclose(confusion.iou_per_class(cm), [1 / 3, 2 / 3, 1 / 2, np.nan])
    np.testing.assert_allclose(confusion.precision_per_class(cm), [1 / 2, 2 / 3, 1.0, np.nan])
    np.testing.assert_allclose(confusion.recall_per_class(cm), [1 / 2, 1.0, 1 / 2, np.nan])


def test_zero_division_is_per_denominator():
    # class 1 predicted once, never true: precision 0/1 = 0; recall 0/0 -> zero_division
    cm = confusion.confusion_matrix([0, 0], [0, 1], 2)
    assert confusion.precision_per_class(cm)[1] == 0.0
    assert math.isnan(confusion.recall_per_class(cm)[1])
    assert confusion.recall_per_class(cm, zero_division=0.0)[1] == 0.0
    assert confusion.dice_per_class(cm)[1] == 0.0


def test_nanmean_skips_nan_and_empty_is_nan():
    assert confusion.nanmean([0.5, np.nan, 1.0]) == pytest.approx(0.75)
    assert math.isnan(confusion.nanmean([np.nan, np.nan]))
    assert math.isnan(confusion.nanmean([]))
    assert all(math.isnan(v) for v in confusion.accuracy_per_class(np.zeros((2, 2), int)))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion.confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError, match="shape"):
        confusion.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)
