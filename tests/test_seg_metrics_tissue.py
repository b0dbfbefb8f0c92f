"""Tissue-level metrics, disc detection and TwoLevelMetrics on hand-made masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.metrics import segmentation as seg_metrics

ID = labels.SEG_ID


def _spine() -> np.ndarray:
    """A 20 x 12 mask: L3 (rows 2-4), L3-L4 disc (rows 6-7), L4 (rows 9-11), L4-L5 disc
    (rows 13-14), L5 (rows 16-18), all in columns 2-7; canal in columns 9-10, rows 1-18."""
    m = np.zeros((20, 12), np.int32)
    m[2:5, 2:8] = ID["L3"]
    m[6:8, 2:8] = ID["L3-L4"]
    m[9:12, 2:8] = ID["L4"]
    m[13:15, 2:8] = ID["L4-L5"]
    m[16:19, 2:8] = ID["L5"]
    m[1:19, 9:11] = ID["canal"]
    return m


def test_tissue_names_and_map_of_every_class():
    assert seg_metrics.TISSUE_NAMES == ("background", "vertebra", "disc", "canal")
    every = np.arange(labels.NUM_SEG_CLASSES).reshape(2, 7)
    expected = np.array([[0, 1, 1, 1, 1, 1, 1],      # background, L1..L5, S1
                         [2, 2, 2, 2, 2, 2, 3]])     # T12-L1..L5-S1, canal
    out = seg_metrics.tissue_map(every)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_tissue_map_of_a_hand_made_mask():
    t = seg_metrics.tissue_map(_spine())
    assert t.shape == (20, 12)
    # counts by hand: 3 bodies of 3x6 = 54 px, 2 discs of 2x6 = 24 px, canal 18x2 = 36 px
    assert np.bincount(t.ravel(), minlength=4).tolist() == [240 - 54 - 24 - 36, 54, 24, 36]
    assert t[3, 4] == 1 and t[7, 4] == 2 and t[10, 9] == 3 and t[0, 0] == 0
    # a batch keeps its leading axis
    assert seg_metrics.tissue_map(np.stack([_spine(), _spine()])).shape == (2, 20, 12)


def _disc_with_coverage(covered_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """One L4-L5 disc of 2 x 10 = 20 px; the prediction labels the first ``covered_cols``
    columns (2 px each) as L3-L4 (a wrong level) and the rest as background."""
    truth = np.zeros((6, 14), np.int32)
    truth[2:4, 2:12] = ID["L4-L5"]
    pred = np.zeros_like(truth)
    pred[2:4, 2:2 + covered_cols] = ID["L3-L4"]
    return truth, pred


def test_disc_detection_60_percent_covered_by_a_wrong_level_is_detected():
    truth, pred = _disc_with_coverage(6)      # 12 of 20 px = 60 %
    assert seg_metrics.disc_detection(truth, pred) == {"discs": 1, "detected": 1}
    # the level is wrong, so level accuracy still counts it as an error
    assert seg_metrics.level_accuracy(truth, pred)["correct"] == 0


def test_disc_detection_40_percent_covered_is_not_detected():
    truth, pred = _disc_with_coverage(4)      # 8 of 20 px = 40 %
    assert seg_metrics.disc_detection(truth, pred) == {"discs": 1, "detected": 0}


def test_disc_detection_exactly_half_counts_and_threshold_is_adjustable():
    truth, pred = _disc_with_coverage(5)      # 10 of 20 px = 50 % >= min_covered 0.5
    assert seg_metrics.disc_detection(truth, pred)["detected"] == 1
    assert seg_metrics.disc_detection(truth, pred, min_covered=0.6)["detected"] == 0


def test_disc_detection_counts_components_and_ignores_non_disc_predictions():
    truth = _spine()
    # two separate L3-L4 components (8-connectivity) + one L4-L5 = 3 discs
    truth[18:20, 0:2] = ID["L3-L4"]           # not touching the L3-L4 disc at rows 6-7
    pred = truth.copy()
    pred[13:15, 2:8] = ID["L4"]               # L4-L5 called a vertebra: not a disc
    out = seg_metrics.disc_detection(truth, pred)
    assert out == {"discs": 3, "detected": 2}
    assert seg_metrics.disc_detection(truth, np.zeros_like(truth)) == {"discs": 3, "detected": 0}
    with pytest.raises(ValueError, match="shape"):
        seg_metrics.disc_detection(truth, truth[:-1])


def test_two_level_metrics_for_swapped_disc_levels():
    truth = _spine()
    pred = truth.copy()
    pred[truth == ID["L3-L4"]] = ID["L4-L5"]
    pred[truth == ID["L4-L5"]] = ID["L3-L4"]
    m = seg_metrics.TwoLevelMetrics()
    m.update(truth, pred)
    r = m.result()
    for key in ("dice/fg_macro", "tissue/dice/fg_macro", "tissue/dice/disc",
                "tissue/dice/vertebra", "tissue/dice/canal", "tissue/pixel_accuracy",
                "level_accuracy", "disc_detection", "discs", "discs_detected", "discs_missed",
                "dice/L3-L4", "iou/fg_macro"):
        assert key in r, key
    # tissue keys carry no level/disc counts (those belong to the 14-class scores)
    assert not any(k.startswith(("tissue/level", "tissue/discs")) for k in r)
    assert r["tissue/dice/fg_macro"] == 1.0 and r["tissue/pixel_accuracy"] == 1.0
    assert r["dice/L3-L4"] == 0.0 and r["dice/L4-L5"] == 0.0 and r["dice/L4"] == 1.0
    # 14-class fg macro over the 6 present classes: (4 * 1 + 2 * 0) / 6
    assert r["dice/fg_macro"] == pytest.approx(4 / 6)
    assert r["level_accuracy"] == 0.0 and r["discs"] == 2.0 and r["discs_missed"] == 0.0
    assert r["disc_detection"] == 1.0 and r["discs_detected"] == 2.0
    assert math.isnan(r["dice/L1"])           # absent from truth and prediction


def test_two_level_metrics_pool_over_slices():
    truth = _spine()
    missed = truth.copy()
    missed[truth == ID["L4-L5"]] = 0          # second slice: L4-L5 disc not found at all
    m = seg_metrics.TwoLevelMetrics()
    m.update(truth, truth)
    m.update(truth, missed)
    r = m.result()
    assert r["discs"] == 4.0 and r["discs_missed"] == 1.0
    assert r["level_accuracy"] == pytest.approx(3 / 4)
    assert r["disc_detection"] == pytest.approx(3 / 4) and r["discs_detected"] == 3.0
    # pooled tissue disc Dice: TP = 24 + 12, FN = 12, FP = 0 -> 72 / 84
    assert r["tissue/dice/disc"] == pytest.approx(72 / 84)
    assert r["tissue/dice/vertebra"] == 1.0


def test_two_level_metrics_without_discs_gives_nan_rates():
    truth = np.zeros((8, 8), np.int32)
    truth[2:5, 2:5] = ID["L2"]
    m = seg_metrics.TwoLevelMetrics()
    m.update(truth, truth)
    r = m.result()
    assert math.isnan(r["level_accuracy"]) and math.isnan(r["disc_detection"])
    assert r["tissue/dice/vertebra"] == 1.0 and math.isnan(r["tissue/dice/disc"])
