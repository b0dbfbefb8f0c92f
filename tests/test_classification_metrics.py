"""Classification metrics on tiny arrays whose values are worked out by hand in comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.metrics import classification as cls

# Shared 3-class example: y_true = 0 0 1 1 2 2, y_pred = 0 1 1 1 2 0
#   cm = [[1, 1, 0],      TP = [1, 2, 1]
#         [0, 2, 0],      FP = colsum - TP = [2, 3, 1] - TP = [1, 1, 0]
#         [1, 0, 1]]      FN = rowsum - TP = [2, 2, 2] - TP = [1, 0, 1]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_confusion_matrix_rows_true_columns_predicted():
    cm = cls.confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_accuracy_jaccard_f1_balanced_accuracy_by_hand():
    assert cls.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    # Jaccard TP/(TP+FP+FN) = 1/3, 2/3, 1/2 -> mean 0.5
    cm = cls.confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_allclose(cls.jaccard_per_class(cm), [1 / 3, 2 / 3, 1 / 2])
    assert cls.macro_jaccard(Y_TRUE, Y_PRED, 3) == pytest.approx(0.5)
    # F1 2TP/(2TP+FP+FN) = 2/4, 4/5, 2/3 -> mean (0.5 + 0.8 + 0.6667) / 3 = 0.65556
    np.testing.assert_allclose(cls.f1_per_class(cm), [0.5, 0.8, 2 / 3])
    assert cls.macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # recalls 1/2, 2/2, 1/2 -> 2/3
    assert cls.balanced_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx(2 / 3)


def test_absent_class_is_excluded_from_macro_means():
    # same data with a 4th class nobody has and nobody predicted: its IoU/F1 are NaN and the
    # macro means do not change
    cm = cls.confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert math.isnan(cls.jaccard_per_class(cm)[3])
    assert cls.macro_jaccard(Y_TRUE, Y_PRED, 4) == pytest.approx(0.5)
    assert cls.macro_f1(Y_TRUE, Y_PRED, 4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_class_only_predicted_scores_zero_not_skipped():
    # y_true 0 0, y_pred 0 1: class 0 J = 1/(1+0+1) = 0.5, class 1 J = 0/(0+1+0) = 0 -> 0.25
    assert cls.macro_jaccard([0, 0], [0, 1], 2) == pytest.approx(0.25)
    # balanced accuracy only averages over classes in y_true: recall(0) = 1/2
    assert cls.balanced_accuracy([0, 0], [0, 1], 2) == pytest.approx(0.5)


def test_quadratic_kappa_by_hand_and_against_sklearn():
    # y_true 0 1 2, y_pred 0 2 2; O = [[1,0,0],[0,0,1],[0,0,1]], marginals rows 1 1 1,
    # cols 1 0 2 -> E rows = [1/3, 0, 2/3]; w = (i-j)^2/4.
    # sum wO = w[1,2] = 1/4; sum wE = 2/3 + 1/4 + 1/3 = 5/4 -> kappa = 1 - (1/4)/(5/4) = 0.8
    assert cls.quadratic_weighted_kappa([0, 1, 2], [0, 2, 2], 3) == pytest.approx(0.8)
    assert cls.quadratic_weighted_kappa([0, 1, 2], [0, 1, 2], 3) == pytest.approx(1.0)
    from sklearn.metrics import cohen_kappa_score
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
    assert cls.quadratic_weighted_kappa(t, p, 5) == pytest.approx(
        cohen_kappa_score(t, p, weights="quadratic"))


def test_auroc_one_vs_rest_by_hand_and_absent_class_skipped():
    # class 0 positives score 0.9, 0.4; negatives 0.6, 0.1: pairs won 3 of 4 -> 0.75;
    # class 1 is the mirror image -> 0.75; class 2 has no positives -> NaN, skipped
    probs = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    y = np.array([0, 0, 1, 1])
    per = cls.auroc_per_class(y, probs)
    np.testing.assert_allclose(per[:2], [0.75, 0.75])
    assert math.isnan(per[2])
    assert cls.macro_auroc(y, probs) == pytest.approx(0.75)
    # all scores tied -> 0.5
    assert cls.macro_auroc(y, np.full((4, 2), 0.5)) == pytest.approx(0.5)


def test_brier_and_log_loss_by_hand():
    # row 0 exact (0); row 1 (0.5)^2 + (0.5)^2 = 0.5 -> mean 0.25
    assert cls.brier_score([0, 1], [[1.0, 0.0], [0.5, 0.5]]) == pytest.approx(0.25)
    assert cls.brier_score([0], [[0.0, 1.0]]) == pytest.approx(2.0)  # the worst case
    # -(ln 0.5 + ln 0.8) / 2 = (0.693147 + 0.223144) / 2 = 0.458145
    assert cls.log_loss([0, 1], [[0.5, 0.5], [0.2, 0.8]]) == pytest.approx(0.458145, abs=1e-6)


def test_encode_and_bad_input_errors():
    np.testing.assert_array_equal(cls.encode(["1L", "5H", "4M"], labels.GRADE_CLASSES),
                                  [0, 10, 6])
    with pytest.raises(ValueError, match="grade_class.*'6X'"):
        cls.encode(["1L", "6X"], labels.GRADE_CLASSES, field="grade_class")
    with pytest.raises(ValueError, match="outside 0..2"):
        cls.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="integer"):
        cls.confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1]), 3)


def test_report_keys_come_from_label_names():
    probs = np.eye(labels.NUM_GRADE_CLASSES)[[0, 6, 6]]
    y = np.array([0, 6, 5])
    rep = cls.classification_report(y, probs, labels.GRADE_CLASSES)
    assert rep["accuracy"] == pytest.approx(2 / 3)
    # 4M: TP 1, FP 1 (the 4L predicted as 4M), FN 0 -> F1 2/3, IoU 1/2
    assert rep["f1/4M"] == pytest.approx(2 / 3)
    assert rep["iou/4M"] == pytest.approx(0.5)
    assert rep["support/4L"] == 1.0
    assert math.isnan(rep["iou/5H"])
    assert cls.prob_columns(labels.BINARY_CLASSES) == ["prob/PG1-3", "prob/PG4-5"]


def test_confusion_plot_writes_png_and_leaves_no_temp_file(tmp_path):
    cm = cls.confusion_matrix(Y_TRUE, Y_PRED, 3)
    out = cls.plot_confusion_matrix(cm, labels.PFIRRMANN_CLASSES[:3], tmp_path / "sub" / "cm.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["cm.png"]
    with pytest.raises(ValueError, match="class names"):
        cls.plot_confusion_matrix(cm, labels.PFIRRMANN_CLASSES, tmp_path / "x.png")


def test_bootstrap_resamples_patients_not_rows():
    # patient A: 2 rows both right; patient B: 2 rows both wrong. Resampling PATIENTS gives
    # only AA (acc 1), AB (0.5) or BB (0); resampling rows would also give 0.25 and 0.75.
    patients = np.array(["A", "A", "B", "B"])
    t = np.array([0, 1, 0, 1])
    p = np.array([0, 1, 1, 0])
    seen: list[tuple[int, float]] = []

    def acc(tt, pp):
        seen.append((len(tt), cls.accuracy(tt, pp)))
        return seen[-1][1]

    ci = cls.bootstrap_ci(acc, patients, t, p, n_boot=400, seed=3)
    assert ci.estimate == pytest.approx(0.5)
    assert {n for n, _ in seen} == {4}
    assert {round(v, 6) for _, v in seen[1:]} == {0.0, 0.5, 1.0}
    # P(BB) = P(AA) = 1/4 > 2.5 %, so the 95 % interval spans 0..1
    assert (ci.low, ci.high, ci.n_valid) == (0.0, 1.0, 400)
    again = cls.bootstrap_ci(lambda a, b: cls.accuracy(a, b), patients, t, p, n_boot=400, seed=3)
    assert again == ci  # seedable


def test_bootstrap_single_patient_has_zero_width_and_checks_lengths():
    ci = cls.bootstrap_ci(cls.metric_by_name("accuracy", 2), ["P"] * 3, [0, 1, 1],
                          np.eye(2)[[0, 0, 1]], n_boot=20)
    assert ci.estimate == ci.low == ci.high == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="rows"):
        cls.bootstrap_ci(cls.accuracy, ["P"] * 2, [0, 1, 1], [0, 1, 1])
