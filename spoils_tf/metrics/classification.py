"""Classification metrics for disc grading (numpy only, small enough to check by hand).

Conventions used by every function here:

* ``y_true``, ``y_pred``: ``int [N]`` class indices into a class list (``labels.GRADE_CLASSES``,
  ``labels.PFIRRMANN_CLASSES`` or ``labels.BINARY_CLASSES``); ``encode`` turns class names into
  indices.
* ``probs``: ``float [N, C]`` class probabilities, rows summing to 1, columns in class-list order.
* A class is *absent* when it occurs neither in ``y_true`` nor in ``y_pred``. Per-class
  Jaccard and F1 are ``NaN`` for absent classes and the macro means skip them (a class that
  nobody predicted and nobody has cannot be right or wrong). A class that occurs in only one
  of the two scores 0.
* Metric keys are built from class names (``f1/4M``, ``iou/PG3``), never from indices.
* Prediction tables (one row per disc slice) keep class probabilities in columns named
  ``prob_column(name)`` = ``"prob/<name>"``; ``classical`` and ``ensemble`` share this.

The paper reports "IoU" for classification; we read it as the macro Jaccard index
(Jaccard 1912), mean over present classes of ``TP / (TP + FP + FN)``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Sequence

import numpy as np

from spoils_tf import fileio
from spoils_tf.metrics import confusion

PROB_PREFIX = "prob/"


def prob_column(class_name: str) -> str:
    """Column name of a class's probability in a prediction table: ``"prob/<class_name>"``."""
    return f"{PROB_PREFIX}{class_name}"


def prob_columns(class_names: Sequence[str]) -> list[str]:
    """``[prob_column(c) for c in class_names]``."""
    return [prob_column(c) for c in class_names]


def encode(values: Sequence, class_names: Sequence[str], field: str = "label") -> np.ndarray:
    """Class names -> ``int64 [N]`` indices into ``class_names``.

    Raises:
      ValueError: naming ``field`` and the first unknown values if any value is not in
        ``class_names`` (missing values such as ``None``/NaN count as unknown).
    """
    index = {str(c): i for i, c in enumerate(class_names)}
    vals = [str(v) for v in values]
    bad = sorted({v for v in vals if v not in index})
    if bad:
        raise ValueError(f"{field}: unknown class name(s) {bad[:5]}; expected one of "
                         f"{tuple(class_names)}")
    return np.asarray([index[v] for v in vals], np.int64)


def _check_labels(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or p.shape != t.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got shapes "
                         f"{t.shape} and {p.shape}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{name} must hold integer class indices (use encode()), "
                             f"got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has class indices outside 0..{num_classes - 1}: "
                             f"min {a.min()}, max {a.max()}")
    return t.astype(np.int64), p.astype(np.int64)


def _check_probs(y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or t.ndim != 1 or p.shape[0] != t.shape[0]:
        raise ValueError(f"probs must be [N, C] and y_true [N], got {p.shape} and {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= p.shape[1]):
        raise ValueError(f"y_true has class indices outside 0..{p.shape[1] - 1}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or inf")
    return t.astype(np.int64), p


# === Counting (spoils_tf.metrics.confusion) ===
def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``int64 [C, C]`` counts; row = true class, column = predicted class.

    Raises:
      ValueError: ``y_true``/``y_pred`` not 1-D of equal length, not integer, or an index
        outside ``0..num_classes-1``.
    """
    t, p = _check_labels(y_true, y_pred, num_classes)
    return confusion.confusion_matrix(t, p, num_classes)


# The paper's names for the shared per-class scores: Jaccard (its classification "IoU") and
# F1 (= Dice). Each is ``float64 [C]``, NaN for absent classes; recall is NaN for a class
# absent from ``y_true``.
jaccard_per_class = confusion.iou_per_class
f1_per_class = confusion.dice_per_class
recall_per_class = confusion.recall_per_class


# === Scalar metrics ===
def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches; ``NaN`` for empty input."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred shapes differ: {t.shape} vs {p.shape}")
    return float(np.mean(t == p)) if t.size else float("nan")


def macro_jaccard(y_true, y_pred, num_classes: int) -> float:
    """Mean of ``jaccard_per_class`` over present classes (the paper's classification "IoU")."""
    return confusion.nanmean(jaccard_per_class(confusion_matrix(y_true, y_pred, num_classes)))


def macro_f1(y_true, y_pred, num_classes: int) -> float:
    """Mean of ``f1_per_class`` over present classes."""
    return confusion.nanmean(f1_per_class(confusion_matrix(y_true, y_pred, num_classes)))


def balanced_accuracy(y_true, y_pred, num_classes: int) -> float:
    """Mean recall over the classes that occur in ``y_true`` (Brodersen et al., ICPR 2010)."""
    return confusion.nanmean(recall_per_class(confusion_matrix(y_true, y_pred, num_classes)))


def quadratic_weighted_kappa(y_true, y_pred, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights ``w_ij = (i - j)^2 / (C - 1)^2`` (Cohen 1968).

    ``kappa = 1 - sum(w * O) / sum(w * E)`` with ``O`` the observed confusion matrix and ``E``
    the outer product of its marginals divided by ``N``. For ordinal targets (Pfirrmann).
    Returns ``NaN`` when ``sum(w * E) == 0`` (e.g. one class only on both sides).
    """
    o = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    n = o.sum()
    if n == 0 or num_classes < 2:
        return float("nan")
    i, j = np.meshgrid(np.arange(num_classes), np.arange(num_classes), indexing="ij")
    w = (i - j) ** 2 / (num_classes - 1) ** 2
    e = np.outer(o.sum(axis=1), o.sum(axis=0)) / n
    den = (w * e).sum()
    return float(1.0 - (w * o).sum() / den) if den > 0 else float("nan")


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, np.float64)
    sorted_scores = scores[order]
    # average ranks (1-based) over runs of equal scores
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos = positive.sum()
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc_per_class(y_true, probs) -> np.ndarray:
    """``float [C]`` one-vs-rest AUROC; ``NaN`` where the class is absent from ``y_true``
    (no positives) or is the only class in ``y_true`` (no negatives)."""
    t, p = _check_probs(y_true, probs)
    out = np.full(p.shape[1], np.nan)
    for c in range(p.shape[1]):
        pos = t == c
        if 0 < pos.sum() < t.size:
            out[c] = _binary_auc(p[:, c], pos)
    return out


def macro_auroc(y_true, probs) -> float:
    """Mean one-vs-rest AUROC over the classes present in ``y_true`` (others skipped)."""
    return confusion.nanmean(auroc_per_class(y_true, probs))


def brier_score(y_true, probs) -> float:
    """Multi-class Brier score (Brier 1950): mean over rows of ``sum_c (p_c - 1[y = c])^2``.

    0 is perfect, 2 is the worst possible (all mass on one wrong class).
    """
    t, p = _check_probs(y_true, probs)
    if t.size == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(t.size), t] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def log_loss(y_true, probs, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood ``-mean(log p[y])`` with ``p`` clipped to ``[eps, 1]``."""
    t, p = _check_probs(y_true, probs)
    if t.size == 0:
        return float("nan")
    return float(-np.mean(np.log(np.clip(p[np.arange(t.size), t], eps, 1.0))))


# === Reports ===
def classification_report(y_true, probs, class_names: Sequence[str]) -> dict[str, float]:
    """All metrics of this module for one prediction set, keyed by name.

    Args:
      y_true: ``int [N]`` true class indices.
      probs: ``float [N, C]``; the prediction is ``argmax`` over columns.
      class_names: ``C`` names (from ``labels``), used for per-class keys.

    Returns:
      ``{"n", "accuracy", "balanced_accuracy", "iou_macro", "f1_macro", "kappa_quadratic",
      "auroc_macro", "brier", "log_loss", "iou/<c>", "f1/<c>", "recall/<c>", "auroc/<c>",
      "support/<c>"}``; ``NaN`` marks a value that is undefined for this data.
    """
    t, p = _check_probs(y_true, probs)
    c = len(class_names)
    if p.shape[1] != c:
        raise ValueError(f"probs has {p.shape[1]} columns but {c} class names were given")
    pred = p.argmax(axis=1) if t.size else np.zeros(0, np.int64)
    cm = confusion_matrix(t, pred, c)
    out: dict[str, float] = {
        "n": float(t.size),
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": balanced_accuracy(t, pred, c),
        "iou_macro": confusion.nanmean(jaccard_per_class(cm)),
        "f1_macro": confusion.nanmean(f1_per_class(cm)),
        "kappa_quadratic": quadratic_weighted_kappa(t, pred, c),
        "auroc_macro": macro_auroc(t, p),
        "brier": brier_score(t, p),
        "log_loss": log_loss(t, p),
    }
    per = {"iou": jaccard_per_class(cm), "f1": f1_per_class(cm),
           "recall": recall_per_class(cm), "auroc": auroc_per_class(t, p)}
    for k, v in per.items():
        for name, x in zip(class_names, v):
            out[f"{k}/{name}"] = float(x)
    for name, s in zip(class_names, cm.sum(axis=1)):
        out[f"support/{name}"] = float(s)
    return out


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          normalize: bool = True, title: str = "") -> pathlib.Path:
    """Writes a confusion-matrix heat map PNG (matplotlib Agg) atomically and returns its path.

    Args:
      cm: ``int [C, C]`` from ``confusion_matrix`` (row = true, column = predicted).
      class_names: ``C`` axis labels (from ``labels``).
      path: output ``.png``; parent directories are created.
      normalize: colour by row-normalised recall (counts are always printed in the cells).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    c = len(class_names)
    if cm.shape != (c, c):
        raise ValueError(f"cm shape {cm.shape} does not match {c} class names")
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0) \
        if normalize else cm.astype(np.float64)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * c, 0.8 + 0.5 * c), dpi=100)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, shown.max()))
    ax.set_xticks(range(c), class_names, rotation=45, ha="right")
    ax.set_yticks(range(c), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(c):
        for j in range(c):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > 0.5 * (im.norm.vmax or 1) else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    try:
        return fileio.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# === Patient-level bootstrap ===
@dataclasses.dataclass(frozen=True)
class BootstrapCI:
    """A metric with its percentile bootstrap confidence interval.

    Attributes:
      estimate: the metric on the full data.
      low, high: the ``alpha/2`` and ``1 - alpha/2`` percentiles over resamples.
      n_boot: resamples drawn; n_valid: resamples where the metric was finite (e.g. AUROC is
        undefined when a resample has one class only); the percentiles use those.
    """

    estimate: float
    low: float
    high: float
    n_boot: int
    n_valid: int


def bootstrap_ci(metric: Callable[..., float], patients: Sequence, *arrays,
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> BootstrapCI:
    """Patient-level percentile bootstrap CI (Efron & Tibshirani 1993).

    Discs and slices of one patient are correlated, so the resampling unit is the PATIENT:
    each resample draws as many patients as there are, with replacement, and takes all rows
    of each drawn patient (a patient drawn twice contributes its rows twice).

    Args:
      metric: ``metric(*arrays_subset) -> float``, e.g. ``lambda t, p: accuracy(t, p)``.
      patients: ``[N]`` patient id of each row.
      *arrays: the metric's arguments, each with first dimension ``N``.
      n_boot: number of resamples; alpha: 0.05 gives a 95 % interval; seed: numpy seed.

    Raises:
      ValueError: if an array's length differs from ``len(patients)`` or there are no rows.
    """
    pat = np.asarray(patients)
    arrs = [np.asarray(a) for a in arrays]
    for k, a in enumerate(arrs):
        if a.shape[0] != pat.shape[0]:
            raise ValueError(f"array {k} has {a.shape[0]} rows, patients has {pat.shape[0]}")
    if pat.size == 0:
        raise ValueError("bootstrap_ci needs at least one row")
    uniq, inverse = np.unique(pat, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(uniq.size)]
    rng = np.random.default_rng(seed)
    estimate = float(metric(*arrs))
    vals = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, uniq.size, uniq.size)
        idx = np.concatenate([rows_of[i] for i in pick])
        vals[b] = float(metric(*[a[idx] for a in arrs]))
    ok = vals[np.isfinite(vals)]
    if ok.size == 0:
        return BootstrapCI(estimate, float("nan"), float("nan"), n_boot, 0)
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(estimate, float(low), float(high), n_boot, int(ok.size))


def metric_by_name(name: str, num_classes: int) -> Callable[..., float]:
    """A ``metric(y_true, probs) -> float`` for ``bootstrap_ci`` from a report key.

    Known names: accuracy, balanced_accuracy, iou_macro, f1_macro, kappa_quadratic,
    auroc_macro, brier, log_loss.

    Raises:
      KeyError: for any other name.
    """
    pred = lambda p: np.asarray(p).argmax(axis=1)  # noqa: E731
    table: dict[str, Callable[..., float]] = {
        "accuracy": lambda t, p: accuracy(t, pred(p)),
        "balanced_accuracy": lambda t, p: balanced_accuracy(t, pred(p), num_classes),
        "iou_macro": lambda t, p: macro_jaccard(t, pred(p), num_classes),
        "f1_macro": lambda t, p: macro_f1(t, pred(p), num_classes),
        "kappa_quadratic": lambda t, p: quadratic_weighted_kappa(t, pred(p), num_classes),
        "auroc_macro": macro_auroc,
        "brier": brier_score,
        "log_loss": log_loss,
    }
    if name not in table:
        raise KeyError(f"unknown metric {name!r}; expected one of {sorted(table)}")
    return table[name]
