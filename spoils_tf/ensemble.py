"""Combining class probabilities of several models (the paper: MobileNetV2 CNN + Gradient
Boosting, "combined by taking the mean of their outputs").

* ``join_predictions(a, b)`` lines two prediction tables up on ``(patient, slice, level)``
  and raises on any mismatch (duplicate keys, a row in one table only, disagreeing
  ``y_true``): rows are never dropped silently.
* ``mean_ensemble(probs_list, weights=None)``: (weighted) mean of ``[N, C]`` probabilities;
  the paper's ensemble is ``weights=None`` (equal weights).
* ``fit_weights(probs_list, y)``: convex weights on a grid minimising log-loss. Choose them
  on TRAINING folds only; ``cross_fit_ensemble`` does that per fold (weights for fold k are
  chosen on the out-of-fold probabilities of the other folds, then applied to fold k).

Prediction tables: one row per disc slice, key columns, optional ``y_true`` and
``prob/<class>`` columns (``metrics.classification.prob_column``).
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from spoils_tf.metrics.classification import log_loss, prob_columns

KEYS: tuple[str, ...] = ("patient", "slice", "level")


def _check_probs_list(probs_list: Sequence) -> list[np.ndarray]:
    arrs = [np.asarray(p, np.float64) for p in probs_list]
    if not arrs:
        raise ValueError("probs_list is empty")
    shape = arrs[0].shape
    for i, a in enumerate(arrs):
        if a.ndim != 2 or a.shape != shape:
            raise ValueError(f"probs_list[{i}] has shape {a.shape}, expected 2-D {shape}")
        if not np.all(np.isfinite(a)) or a.min() < 0:
            raise ValueError(f"probs_list[{i}] has NaN, inf or negative values")
        if a.size and not np.allclose(a.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError(f"probs_list[{i}] rows do not sum to 1 (max deviation "
                             f"{np.abs(a.sum(axis=1) - 1).max():.3g})")
    return arrs


def mean_ensemble(probs_list: Sequence, weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Weighted mean of aligned probability arrays.

    Args:
      probs_list: K arrays ``float [N, C]``, same rows (aligned, see ``join_predictions``) and
        same class columns, each row summing to 1.
      weights: K non-negative weights (normalised to sum 1); None = equal (the paper).

    Returns:
      ``float64 [N, C]``, rows summing to 1.

    Raises:
      ValueError: shapes differ, rows do not sum to 1, or weights are negative/all zero/the
        wrong count.
    """
    arrs = _check_probs_list(probs_list)
    w = np.ones(len(arrs)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(arrs),) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(arrs)} non-negative numbers with a positive "
                         f"sum, got {weights!r}")
    w = w / w.sum()
    return np.tensordot(w, np.stack(arrs), axes=1)


def join_predictions(a: pd.DataFrame, b: pd.DataFrame, class_names: Sequence[str],
                     keys: Sequence[str] = KEYS
                     ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Aligns two prediction tables row by row on ``keys``.

    Keys are compared as strings, so ``slice`` 7 and ``"7"`` match.

    Returns:
      ``(rows, probs_a, probs_b)``: ``rows`` = the key columns (+ ``y_true`` if a table has
      it) in ``a``'s row order; ``probs_a``, ``probs_b``: ``float64 [N, C]`` in that order.

    Raises:
      ValueError: a key or ``prob/<class>`` column is missing, a key repeats within a table,
        a key is in one table only (counts and examples of each side are named), or the two
        tables' ``y_true`` disagree on a row.
    """
    cols = prob_columns(class_names)
    for name, t in (("a", a), ("b", b)):
        missing = [c for c in list(keys) + cols if c not in t.columns]
        if missing:
            raise ValueError(f"prediction table {name}: missing column(s) {missing}")
    ka = a[list(keys)].astype(str).apply(tuple, axis=1)
    kb = b[list(keys)].astype(str).apply(tuple, axis=1)
    for name, k in (("a", ka), ("b", kb)):
        dup = k[k.duplicated()]
        if len(dup):
            raise ValueError(f"prediction table {name}: {len(dup)} duplicate key(s) on "
                             f"{tuple(keys)}, e.g. {dup.iloc[:3].tolist()}")
    set_a, set_b = set(ka), set(kb)
    only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
    if only_a or only_b:
        raise ValueError(f"prediction tables do not align on {tuple(keys)}: {len(only_a)} "
                         f"row(s) only in a (e.g. {only_a[:3]}), {len(only_b)} only in b "
                         f"(e.g. {only_b[:3]})")
    pos_b = pd.Series(np.arange(len(b)), index=pd.Index(kb.to_list(), tupleize_cols=False))
    order_b = pos_b.loc[pd.Index(ka.to_list(), tupleize_cols=False)].to_numpy()
    rows = a[list(keys)].reset_index(drop=True)
    if "y_true" in a.columns or "y_true" in b.columns:
        ya = a["y_true"].reset_index(drop=True) if "y_true" in a.columns else None
        yb = b["y_true"].iloc[order_b].reset_index(drop=True) if "y_true" in b.columns else None
        if ya is not None and yb is not None:
            diff = ~((ya.astype(str) == yb.astype(str)) | (ya.isna() & yb.isna()))
            if diff.any():
                i = int(np.flatnonzero(diff.to_numpy())[0])
                raise ValueError(f"y_true differs between the tables on {diff.sum()} row(s), "
                                 f"e.g. {tuple(ka.iloc[i])}: {ya[i]!r} vs {yb[i]!r}")
        rows["y_true"] = ya if ya is not None else yb
    return (rows, a[cols].to_numpy(np.float64),
            b[cols].to_numpy(np.float64)[order_b])


def _simplex_grid(k: int, step: float) -> np.ndarray:
    n = int(round(1.0 / step))
    if n < 1 or abs(n * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 evenly (e.g. 0.05), got {step}")
    pts = [c for c in itertools.product(range(n + 1), repeat=k - 1) if sum(c) <= n]
    return np.asarray([list(c) + [n - sum(c)] for c in pts], np.float64) / n


def fit_weights(probs_list: Sequence, y, step: float = 0.05) -> np.ndarray:
    """Convex weights (``>= 0``, sum 1) minimising the ensemble's log-loss on ``y``.

    A grid over the simplex with spacing ``step`` (for two models: w in 0, 0.05, ..., 1).
    Ties (within 1e-12) go to the weights closest to equal. Call it on TRAINING-fold rows only
    (or use ``cross_fit_ensemble``); choosing weights on the rows you report is leakage.

    Args:
      probs_list: K arrays ``float [N, C]``; y: ``int [N]`` true class indices.

    Returns:
      ``float64 [K]``.
    """
    arrs = _check_probs_list(probs_list)
    y = np.asarray(y)
    if y.shape != (arrs[0].shape[0],):
        raise ValueError(f"y has shape {y.shape}, expected ({arrs[0].shape[0]},)")
    stack = np.stack(arrs)
    grid = _simplex_grid(len(arrs), step)
    losses = np.array([log_loss(y, np.tensordot(w, stack, axes=1)) for w in grid])
    best = losses.min()
    ties = grid[losses <= best + 1e-12]
    uniform = np.full(len(arrs), 1.0 / len(arrs))
    return ties[np.argmin(np.abs(ties - uniform).sum(axis=1))]


def cross_fit_ensemble(probs_list: Sequence, y, folds, step: float = 0.05
                       ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Weighted ensemble where each fold's weights come from the OTHER folds only.

    Args:
      probs_list: K out-of-fold arrays ``float [N, C]`` (aligned rows).
      y: ``int [N]`` true class indices (rows with ``y < 0`` are never used to fit weights).
      folds: ``int [N]`` fold of each row (patient-grouped).

    Returns:
      ``(probs [N, C], {fold: weights [K]})``.

    Raises:
      ValueError: shape mismatch, or a fold whose other folds have no labelled rows.
    """
    arrs = _check_probs_list(probs_list)
    y = np.asarray(y)
    folds = np.asarray(folds)
    if y.shape != folds.shape or y.shape != (arrs[0].shape[0],):
        raise ValueError(f"y {y.shape} and folds {folds.shape} must both be "
                         f"({arrs[0].shape[0]},)")
    out = np.zeros_like(arrs[0])
    weights: dict[int, np.ndarray] = {}
    for k in np.unique(folds):
        train = (folds != k) & (y >= 0)
        if not train.any():
            raise ValueError(f"fold {k}: no labelled rows in the other folds to fit weights on")
        w = fit_weights([a[train] for a in arrs], y[train], step)
        test = folds == k
        out[test] = mean_ensemble([a[test] for a in arrs], w)
        weights[int(k)] = w
    return out, weights
