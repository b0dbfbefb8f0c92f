"""Segmentation metrics over class-id masks (numpy only), MONAI style.

Plain functions (:func:`confusion_matrix`, :func:`per_class_metrics`,
:func:`segmentation_metrics`, :func:`level_accuracy`) plus a thin accumulator
(:class:`SegmentationMetrics`) that sums a confusion matrix over batches.

Definitions (computed by :mod:`spoils_tf.metrics.confusion`), per class c with TP/FP/FN/TN
counted one-vs-rest over all pixels:

* accuracy_c  = (TP + TN) / N               (one-vs-rest pixel accuracy)
* precision_c = TP / (TP + FP)
* recall_c    = TP / (TP + FN)               (sensitivity)
* dice_c      = 2 TP / (2 TP + FP + FN)      (Dice 1945; Sorensen 1948; = F1)
* iou_c       = TP / (TP + FP + FN)          (Jaccard index)
* ``pixel_accuracy`` = trace(CM) / N, the fraction of pixels whose class is right (what the
  SPOILS paper and Keras call "accuracy").

Absent classes: a class absent from both the truth and the prediction has no defined score;
all its metrics are NaN and it is left out of every mean (not counted as 1.0, which would
reward a model for classes that were never there; MONAI's ``ignore_empty=True``). A class
present in only one of them is scored normally: precision is 0 when it was never predicted,
recall is 0 when it was predicted but never there (scikit-learn's ``zero_division=0``).

Means: ``<metric>/macro`` averages the per-class values over all classes, ``<metric>/fg_macro``
over the foreground classes only (``labels.FOREGROUND_IDS``, background excluded), both with
``np.nanmean`` semantics. Keys are built from ``labels.SEG_NAMES``: ``dice/L4-L5``.

Scores are pooled: the accumulator sums one confusion matrix over every image of a test fold
and scores that (the whole fold is one big image). Per-image averaging would weight small
and large structures differently; pooled counts are what the paper's single numbers suggest.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.ndimage

from spoils_tf import labels
from spoils_tf.metrics import confusion

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "dice", "iou")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray,
                     num_classes: int = labels.NUM_SEG_CLASSES) -> np.ndarray:
    """Pixel confusion matrix ``int64 [num_classes, num_classes]``, rows = truth, cols = prediction.

    :func:`spoils_tf.metrics.confusion.confusion_matrix` with the 14 segmentation classes as
    the default.

    Args:
      y_true, y_pred: integer class-id masks of the same shape (any rank: ``[H, W]`` or
        ``[B, H, W]``).

    Raises:
      ValueError: shapes differ, or an id is outside ``0..num_classes-1``.
    """
    return confusion.confusion_matrix(y_true, y_pred, num_classes)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class metrics from a confusion matrix.

    Returns:
      ``{"accuracy"|"precision"|"recall"|"dice"|"iou": float64 [C]}``, NaN for classes absent
      from both truth and prediction (module docstring); precision and recall of a class
      present on one side only are 0.
    """
    is_present = confusion.present(cm)
    out = {
            "accuracy": confusion.accuracy_per_class(cm),
            "precision": confusion.precision_per_class(cm, zero_division=0.0),
            "recall": confusion.recall_per_class(cm, zero_division=0.0),
            "dice": confusion.dice_per_class(cm),
            "iou": confusion.iou_per_class(cm),
    }
    return {k: np.where(is_present, v, np.nan) for k, v in out.items()}


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str] = labels.SEG_NAMES,
                         background_id: int = labels.BACKGROUND_ID) -> dict[str, float]:
    """Named scalar metrics from a confusion matrix.

    Returns:
      ``{"pixel_accuracy": float, "<metric>/<class name>": float, "<metric>/macro": float,
      "<metric>/fg_macro": float}`` for every metric in ``METRIC_NAMES``; NaN where undefined.

    Raises:
      ValueError: the matrix is not ``[len(class_names), len(class_names)]``.
    """
    cm = np.asarray(cm)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix shape {cm.shape}; expected "
                         f"({len(class_names)}, {len(class_names)}) for classes {class_names}")
    total = cm.sum()
    result: dict[str, float] = {
            "pixel_accuracy": float(np.trace(cm) / total) if total else float("nan")}
    fg = np.array([i != background_id for i in range(len(class_names))])
    for metric, values in per_class_metrics(cm).items():
        for name, v in zip(class_names, values):
            result[f"{metric}/{name}"] = float(v)
        result[f"{metric}/macro"] = confusion.nanmean(values)
        result[f"{metric}/fg_macro"] = confusion.nanmean(values[fg])
    return result


def level_accuracy(true_masks: np.ndarray, pred_masks: np.ndarray,
                   disc_ids: Sequence[int] = labels.DISC_IDS) -> dict[str, float]:
    """How often a ground-truth disc gets the right level in the prediction.

    Definition: every 8-connected component of a disc class in a true mask is one
    ground-truth disc of level X. Among its pixels, take those the prediction labels with
    *any* disc class; the disc is **correct** when the most frequent of those predicted disc
    classes is X (ties count as wrong), and **missed** (wrong) when none of its pixels is
    predicted as a disc. This scores level *naming* separately from boundary quality (Dice):
    a disc found but shifted by one level (L4-L5 called L3-L4) is wrong however well it
    overlaps.

    Args:
      true_masks, pred_masks: integer masks ``[H, W]`` or ``[B, H, W]`` of the same shape.
      disc_ids: class ids that are discs (default ``labels.DISC_IDS``).

    Returns:
      ``{"level_accuracy": correct / discs (NaN when there are no discs), "discs": int count,
      "correct": int, "missed": int}``.

    Raises:
      ValueError: shapes differ or the masks are not 2-D / 3-D.
    """
    t = np.asarray(true_masks)
    p = np.asarray(pred_masks)
    if t.shape != p.shape:
        raise ValueError(f"true_masks shape {t.shape} != pred_masks shape {p.shape}")
    if t.ndim == 2:
        t, p = t[None], p[None]
    if t.ndim != 3:
        raise ValueError(f"masks must be [H, W] or [B, H, W], got shape {t.shape}")
    disc_ids = np.asarray(disc_ids)
    structure = np.ones((3, 3), bool)
    discs = correct = missed = 0
    for t_img, p_img in zip(t, p):
        for level in disc_ids:
            components, n = scipy.ndimage.label(t_img == level, structure=structure)
            for k in range(1, n + 1):
                predicted = p_img[components == k]
                predicted = predicted[np.isin(predicted, disc_ids)]
                discs += 1
                if predicted.size == 0:
                    missed += 1
                    continue
                values, counts = np.unique(predicted, return_counts=True)
                top = counts == counts.max()
                if top.sum() == 1 and values[top][0] == level:
                    correct += 1
    return {"level_accuracy": correct / discs if discs else float("nan"),
            "discs": discs, "correct": correct, "missed": missed}


class SegmentationMetrics:
    """Accumulates a confusion matrix (and disc-level counts) over batches.

    >>> m = SegmentationMetrics()
    >>> m.update(y_true, y_pred)      # int [B, H, W] or [H, W]
    >>> m.result()                    # segmentation_metrics(...) + level accuracy keys
    """

    def __init__(self, num_classes: int = labels.NUM_SEG_CLASSES,
                 class_names: Sequence[str] = labels.SEG_NAMES):
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.discs = self.correct = self.missed = 0

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Adds one batch of integer masks (same shape, ``[H, W]`` or ``[B, H, W]``)."""
        self.cm += confusion_matrix(y_true, y_pred, self.num_classes)
        if self.num_classes == labels.NUM_SEG_CLASSES:
            lv = level_accuracy(y_true, y_pred)
            self.discs += lv["discs"]
            self.correct += lv["correct"]
            self.missed += lv["missed"]

    def result(self) -> dict[str, float]:
        """``segmentation_metrics`` of the summed matrix plus ``level_accuracy`` and counts."""
        out = segmentation_metrics(self.cm, self.class_names)
        out["level_accuracy"] = self.correct / self.discs if self.discs else float("nan")
        out["discs"] = float(self.discs)
        out["discs_missed"] = float(self.missed)
        return out


# === Tissue level (bodies, discs, canal merged) ===
TISSUE_NAMES: tuple[str, ...] = ("background", "vertebra", "disc", "canal")


def tissue_map(mask: np.ndarray) -> np.ndarray:
    """``int [..., H, W]`` 14-class ids -> ``uint8`` tissue ids (index into ``TISSUE_NAMES``):
    every vertebral body 1, every disc 2, the canal 3, the rest 0."""
    lut = np.zeros(labels.NUM_SEG_CLASSES, np.uint8)
    for c in labels.SEG_CLASSES:
        if c.kind in TISSUE_NAMES:
            lut[c.id] = TISSUE_NAMES.index(c.kind)
    return lut[np.asarray(mask)]


def disc_detection(true_mask: np.ndarray, pred_mask: np.ndarray,
                   min_covered: float = 0.5) -> dict[str, int]:
    """How many annotated discs the prediction finds, whatever level it names them.

    Every 8-connected component of a disc class in ``true_mask`` ``[H, W]`` is one disc; it is
    **detected** when at least ``min_covered`` of its pixels are predicted as some disc class.

    Returns:
      ``{"discs": int, "detected": int}``.
    """
    t, p = np.asarray(true_mask), np.asarray(pred_mask)
    if t.shape != p.shape:
        raise ValueError(f"true_mask shape {t.shape} != pred_mask shape {p.shape}")
    pred_disc = np.isin(p, labels.DISC_IDS)
    structure = np.ones((3, 3), bool)
    discs = detected = 0
    for level in labels.DISC_IDS:
        components, n = scipy.ndimage.label(t == level, structure=structure)
        if not n:
            continue
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        hits = np.bincount(components.ravel(), weights=pred_disc.ravel(), minlength=n + 1)
        discs += n
        detected += int(np.sum(hits[1:] >= min_covered * sizes[1:]))
    return {"discs": discs, "detected": detected}


class TwoLevelMetrics:
    """14-class and tissue-level scores plus level accuracy and disc detection, pooled.

    >>> m = TwoLevelMetrics()
    >>> m.update(y_true, y_pred)     # int [H, W] each, one slice
    >>> m.result()   # {"dice/fg_macro", "tissue/dice/fg_macro", "level_accuracy",
    ...              #  "disc_detection", ...}
    """

    def __init__(self):
        self.classes = SegmentationMetrics()
        self.tissue = SegmentationMetrics(len(TISSUE_NAMES), TISSUE_NAMES)
        self.discs = self.detected = 0

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Adds one slice (``int [H, W]`` masks of the same shape)."""
        self.classes.update(y_true, y_pred)
        self.tissue.update(tissue_map(y_true), tissue_map(y_pred))
        det = disc_detection(y_true, y_pred)
        self.discs += det["discs"]
        self.detected += det["detected"]

    def result(self) -> dict[str, float]:
        """``SegmentationMetrics.result()`` keys, the tissue ones prefixed ``tissue/``, and
        ``disc_detection`` = detected / annotated discs."""
        out = self.classes.result()
        tissue = self.tissue.result()
        out.update({f"tissue/{k}": v for k, v in tissue.items()
                    if not k.startswith(("level_accuracy", "discs"))})
        out["disc_detection"] = self.detected / self.discs if self.discs else float("nan")
        out["discs_detected"] = float(self.detected)
        return out
