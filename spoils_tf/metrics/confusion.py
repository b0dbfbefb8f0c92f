"""Confusion matrix and per-class scores from it (numpy only): the one implementation that
``metrics.segmentation`` (pixels) and ``metrics.classification`` (discs) both use.

A confusion matrix ``cm`` is ``int64 [C, C]``: row = true class, column = predicted class.
Per class ``c``, counted one-vs-rest: ``TP = cm[c, c]``, ``FP`` = column sum - TP, ``FN`` = row
sum - TP, ``TN = N - TP - FP - FN``.

* ``accuracy_c  = (TP + TN) / N``
* ``precision_c = TP / (TP + FP)``
* ``recall_c    = TP / (TP + FN)``           (sensitivity)
* ``dice_c      = 2 TP / (2 TP + FP + FN)``  (Dice 1945; Sorensen 1948; = F1)
* ``iou_c       = TP / (TP + FP + FN)``      (Jaccard 1912)

Undefined values: a class is *absent* when ``TP + FP + FN == 0`` (neither true nor
predicted anywhere); its Dice and IoU are NaN, and :func:`nanmean` leaves NaN out of a mean.
Precision and recall have their own zero denominators (never predicted; never true); they
give ``zero_division`` there, NaN unless the caller asks for another value (scikit-learn's
argument of the same name).

The matrix is counted with one ``np.bincount`` rather than ``sklearn.metrics.confusion_matrix``
because segmentation counts every pixel of every slice (millions per fold), where a single
pass without scikit-learn's label checks and sparse matrix is faster (BUILD.md,
"Segmentation"); ``tests/test_confusion_metrics.py`` pins it to scikit-learn's.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix ``int64 [num_classes, num_classes]``, rows = truth, cols = prediction.

    Args:
      y_true, y_pred: integer class ids of the same shape, any rank (``[N]`` labels,
        ``[H, W]`` or ``[B, H, W]`` masks); each element is one sample.
      num_classes: ``C``; ids must lie in ``0..C-1``.

    Raises:
      ValueError: shapes differ, or an id is outside ``0..num_classes-1``.
    """
    t = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_pred).astype(np.int64).ravel()
    if np.shape(y_true) != np.shape(y_pred):
        raise ValueError(f"y_true shape {np.shape(y_true)} != y_pred shape {np.shape(y_pred)}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1}: "
                             f"min {a.min()}, max {a.max()}")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
            num_classes, num_classes)


def counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(TP, FP, FN, TN)``, each ``float64 [C]``, one-vs-rest from ``cm`` ``[C, C]``."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    return tp, fp, fn, tn


def present(cm: np.ndarray) -> np.ndarray:
    """``bool [C]``: the class is true or predicted at least once (``TP + FP + FN > 0``)."""
    tp, fp, fn, _ = counts(cm)
    return (tp + fp + fn) > 0


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    """``num / den``, ``zero_division`` where ``den == 0`` (no warning)."""
    return np.where(den > 0, num / np.where(den > 0, den, 1), zero_division)


def accuracy_per_class(cm: np.ndarray) -> np.ndarray:
    """``float64 [C]``: one-vs-rest ``(TP + TN) / N``; all NaN for an empty matrix."""
    tp, _, _, tn = counts(cm)
    n = np.asarray(cm).sum()
    return (tp + tn) / n if n else np.full_like(tp, np.nan)


def precision_per_class(cm: np.ndarray, zero_division: float = np.nan) -> np.ndarray:
    """``float64 [C]``: ``TP / (TP + FP)``; ``zero_division`` for a class never predicted."""
    tp, fp, _, _ = counts(cm)
    return _ratio(tp, tp + fp, zero_division)


def recall_per_class(cm: np.ndarray, zero_division: float = np.nan) -> np.ndarray:
    """``float64 [C]``: ``TP / (TP + FN)``; ``zero_division`` for a class never true."""
    tp, _, fn, _ = counts(cm)
    return _ratio(tp, tp + fn, zero_division)


def dice_per_class(cm: np.ndarray) -> np.ndarray:
    """``float64 [C]``: ``2 TP / (2 TP + FP + FN)`` (= F1); NaN for absent classes."""
    tp, fp, fn, _ = counts(cm)
    return _ratio(2 * tp, 2 * tp + fp + fn, np.nan)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """``float64 [C]``: ``TP / (TP + FP + FN)`` (Jaccard); NaN for absent classes."""
    tp, fp, fn, _ = counts(cm)
    return _ratio(tp, tp + fp + fn, np.nan)


def nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries of ``values``; NaN when there are none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
