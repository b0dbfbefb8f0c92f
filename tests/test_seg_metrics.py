"""Segmentation metrics on tiny masks worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.metrics import segmentation as seg

# 3 classes (0 = background). Truth / prediction, 2 x 3 pixels:
#   truth  0 0 1     pred  0 1 1
#          1 2 2           1 2 0
# CM rows = truth: [1 1 0], [0 2 0], [1 0 1]  -> TP 1 2 1, FP 1 1 0, FN 1 0 1, N 6.
TRUE = np.array([[0, 0, 1], [1, 2, 2]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])
NAMES3 = ("background", "a", "b")


def test_confusion_matrix_by_hand():
    cm = seg.confusion_matrix(TRUE, PRED, num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_per_class_and_means_by_hand():
    m = seg.segmentation_metrics(seg.confusion_matrix(TRUE, PRED, 3), NAMES3)
    assert m["pixel_accuracy"] == pytest.approx(4 / 6)
    assert m["dice/background"] == pytest.approx(2 / 4)      # 2*1 / (2+1+1)
    assert m["dice/a"] == pytest.approx(4 / 5)               # 2*2 / (4+1+0)
    assert m["dice/b"] == pytest.approx(2 / 3)               # 2*1 / (2+0+1)
    assert m["iou/a"] == pytest.approx(2 / 3)
    assert m["iou/b"] == pytest.approx(1 / 2)
    assert m["precision/a"] == pytest.approx(2 / 3)
    assert m["recall/a"] == pytest.approx(1.0)
    assert m["precision/b"] == pytest.approx(1.0)
    assert m["recall/b"] == pytest.approx(1 / 2)
    assert m["accuracy/background"] == pytest.approx(4 / 6)  # (TP 1 + TN 3) / 6
    assert m["dice/fg_macro"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert m["dice/macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_absent_class_is_nan_and_left_out_of_means():
    names4 = NAMES3 + ("c",)
    m = seg.segmentation_metrics(seg.confusion_matrix(TRUE, PRED, 4), names4)
    assert math.isnan(m["dice/c"]) and math.isnan(m["precision/c"])
    assert m["dice/fg_macro"] == pytest.approx((4 / 5 + 2 / 3) / 2)


def test_class_only_predicted_scores_zero_not_nan():
    t = np.zeros((2, 2), int)
    p = np.array([[0, 1], [0, 0]])
    m = seg.segmentation_metrics(seg.confusion_matrix(t, p, 2), ("background", "a"))
    assert m["dice/a"] == 0.0 and m["recall/a"] == 0.0 and m["precision/a"] == 0.0


def test_keys_come_from_labels():
    cm = seg.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int))
    m = seg.segmentation_metrics(cm)
    assert "dice/L4-L5" in m and "iou/canal" in m and "dice/fg_macro" in m
    assert m["dice/background"] == 1.0 and math.isnan(m["dice/L4-L5"])


def test_out_of_range_ids_raise():
    with pytest.raises(ValueError, match="outside 0..2"):
        seg.confusion_matrix(np.array([0, 3]), np.array([0, 0]), 3)


def test_level_accuracy_by_hand():
    l45, l5s1, l34 = labels.SEG_ID["L4-L5"], labels.SEG_ID["L5-S1"], labels.SEG_ID["L3-L4"]
    t = np.zeros((6, 6), int)
    t[0:2, 0:3] = l45     # disc 1: 6 px
    t[4:6, 0:3] = l5s1    # disc 2: 6 px
    t[4:6, 5] = l34       # disc 3: 2 px, will be missed
    p = np.zeros_like(t)
    p[0:2, 0:3] = l45
    p[0, 0] = l34         # disc 1: 5 px L4-L5, 1 px L3-L4 -> majority right
    p[4:6, 0:2] = l45     # disc 2: 4 px L4-L5, 2 px background -> wrong level
    r = seg.level_accuracy(t, p)
    assert r == {"level_accuracy": 1 / 3, "discs": 3, "correct": 1, "missed": 1}


def test_accumulator_sums_batches():
    acc = seg.SegmentationMetrics(3, NAMES3)
    acc.update(TRUE[:1], PRED[:1])
    acc.update(TRUE[1:], PRED[1:])
    np.testing.assert_array_equal(acc.cm, seg.confusion_matrix(TRUE, PRED, 3))
    assert acc.result()["dice/a"] == pytest.approx(4 / 5)
    acc.reset()
    assert acc.cm.sum() == 0
