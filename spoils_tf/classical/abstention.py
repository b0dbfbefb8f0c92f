"""The abstention threshold of the intervention tiers, chosen on inner out-of-fold predictions.

Decision support withholds a surgical consultation or an injection when the grader's
probability for the predicted grade class of every disc driving it is below a threshold
(``clinical.rules.DecisionConfig.intervention_min_probability``). This module chooses that
threshold from held-out predictions of the training patients only, so the number reported
on a test fold was never tuned on it.

Per disc (the decision uses the worst disc, so each disc is one possible driver):

* the predicted class is ``argmax`` of the calibrated probabilities ``[C]`` over
  ``labels.GRADE_CLASSES``; its tier is ``clinical.strata.CLASS_TIER``;
* an **intervention call** is a disc whose predicted tier is ``injection`` or ``surgical``;
* the call **acts** when the predicted class's probability is >= the threshold;
* an acted call **over-treats** when the true class's tier is less intensive than the
  predicted one (``strata.TIERS`` order): a 4H read on a 2L disc, the output this software
  must not give confidently.

:func:`choose_threshold` takes the smallest threshold of ``THRESHOLD_GRID`` at which at least
``MIN_ACTED`` calls act and the one-sided 95 % Wilson lower bound of the fraction of acted
calls that do not over-treat is at least ``TARGET_PRECISION``: the evidence, not just the
point estimate, must say the acted calls are right (the inner folds hold a few dozen calls,
so a point estimate of 90 % can be 22 of 24 by luck). When no threshold of the grid achieves
that, it returns ``NEVER`` (1.0): interventions are always withheld and the report says why.

The probabilities it chooses on must themselves be held out: :func:`cross_fit_calibrated`
calibrates each inner fold's out-of-fold probabilities with a map fitted on the other inner
folds only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from spoils_tf import labels
from spoils_tf.clinical import strata

# thresholds tried, ascending (probability of the predicted class)
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))
# the one-sided 95 % lower bound of the fraction of acted intervention calls that do not
# over-treat must reach this
TARGET_PRECISION: float = 0.80
WILSON_Z: float = 1.645          # one-sided 95 %
# a threshold is trusted only when this many calls act at it on the inner folds
MIN_ACTED: int = 5
# "no threshold works": every intervention is withheld
NEVER: float = 1.0

INTERVENTION_TIERS: tuple[str, ...] = ("injection", "surgical")


def _tier_rank(classes: Sequence[str]) -> np.ndarray:
    """``int [C]``: the ``strata.TIERS`` index of each class's tier."""
    return np.asarray([strata.TIERS.index(strata.CLASS_TIER[c]) for c in classes], np.int64)


def wilson_lower_bound(successes: int, n: int, z: float = WILSON_Z) -> float:
    """The Wilson score lower bound of a proportion (NaN when ``n`` is 0)."""
    if n <= 0:
        return float("nan")
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def threshold_curve(probs: np.ndarray, y: np.ndarray, thresholds: Sequence[float],
                    classes: Sequence[str] = labels.GRADE_CLASSES) -> list[dict[str, Any]]:
    """What each threshold would do to the intervention calls of labelled discs.

    Args:
        probs: ``float [N, C]`` calibrated probabilities over ``classes``.
        y: ``int [N]`` true class index (rows with -1 are ignored).
        thresholds: the thresholds to evaluate.

    Returns:
        one dict per threshold: ``threshold``, ``calls`` (intervention calls), ``acted``,
        ``over_treating`` (acted calls whose true tier is less intensive), ``precision``
        (``1 - over_treating / acted``; NaN when nothing acts), ``precision_lower`` (its
        :func:`wilson_lower_bound`), ``withheld_correct`` (calls withheld although the true
        tier was as intensive).
    """
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    keep = y >= 0
    probs, y = probs[keep], y[keep]
    rank = _tier_rank(classes)
    pred = probs.argmax(axis=1)
    p_pred = probs[np.arange(len(pred)), pred]
    interventions = {strata.TIERS.index(t) for t in INTERVENTION_TIERS}
    call = np.isin(rank[pred], sorted(interventions))
    over = rank[y] < rank[pred]
    out = []
    for t in thresholds:
        acted = call & (p_pred >= t)
        n_acted = int(acted.sum())
        n_over = int((acted & over).sum())
        out.append({"threshold": float(t), "calls": int(call.sum()), "acted": n_acted,
                    "over_treating": n_over,
                    "precision": (1.0 - n_over / n_acted) if n_acted else float("nan"),
                    "precision_lower": wilson_lower_bound(n_acted - n_over, n_acted),
                    "withheld_correct": int((call & ~acted & ~over).sum())})
    return out


def choose_threshold(probs: np.ndarray, y: np.ndarray, *,
                     classes: Sequence[str] = labels.GRADE_CLASSES,
                     grid: Sequence[float] = THRESHOLD_GRID,
                     target_precision: float = TARGET_PRECISION,
                     min_acted: int = MIN_ACTED) -> dict[str, Any]:
    """The smallest threshold of ``grid`` whose acted calls (at least ``min_acted``) have a
    not-over-treating fraction with a Wilson lower bound >= ``target_precision`` (module
    docstring), else :data:`NEVER`.

    Args:
        probs, y: held-out calibrated probabilities ``[N, C]`` and true indices ``[N]``.

    Returns:
        ``{"threshold", "reason", "curve", "target_precision", "min_acted"}``.
    """
    curve = threshold_curve(probs, y, grid, classes)
    for row in curve:
        if row["acted"] >= min_acted and row["precision_lower"] >= target_precision:
            reason = (f"smallest threshold at which >= {min_acted} intervention calls act and "
                      f"{row['acted'] - row['over_treating']} of {row['acted']} do not "
                      f"over-treat (95 % lower bound {row['precision_lower']:.0%}, needs "
                      f"{target_precision:.0%})")
            return {"threshold": row["threshold"], "reason": reason, "curve": curve,
                    "target_precision": target_precision, "min_acted": min_acted}
    return {"threshold": NEVER,
            "reason": (f"no threshold in {grid[0]:g}..{grid[-1]:g} gives >= {min_acted} "
                       "intervention calls whose fraction not over-treating has a 95 % lower "
                       f"bound of {target_precision:.0%}: interventions are always withheld"),
            "curve": curve, "target_precision": target_precision, "min_acted": min_acted}


def cross_fit_calibrated(oof_probs: np.ndarray, y: np.ndarray, groups: np.ndarray,
                         method: str) -> np.ndarray:
    """Calibrates each group's rows with a map fitted on the other groups' rows only.

    Args:
        oof_probs: ``float [N, C]`` out-of-fold probabilities (each row from a model that did
            not see it).
        y: ``int [N]`` true class indices.
        groups: ``[N]`` the inner fold each row was held out in.
        method: ``classical.candidates.CALIBRATION_METHODS``.

    Returns:
        ``float [N, C]``: calibrated probabilities, no row calibrated by a map that saw it.
    """
    from spoils_tf.classical import candidates as cand
    oof_probs = np.asarray(oof_probs, np.float64)
    y = np.asarray(y, np.int64)
    groups = np.asarray(groups)
    out = np.zeros_like(oof_probs)
    for g in np.unique(groups):
        held = groups == g
        calibrator = cand.CrossFitCalibrator(method).fit(oof_probs[~held], y[~held])
        out[held] = calibrator.transform(oof_probs[held])
    return out


def deployment_threshold(final_choice: dict[str, Any], outer_pooled: dict[str, Any],
                         *, target_precision: float = TARGET_PRECISION,
                         min_acted: int = MIN_ACTED) -> dict[str, Any]:
    """The threshold to ship: the final fit's inner-fold choice only if the same choosing
    procedure held up on the outer folds of its nested CV, else :data:`NEVER`.

    Args:
        final_choice: :func:`choose_threshold` of the model fitted on every patient.
        outer_pooled: ``grade_nested_lib.abstention_summary(...)["pooled"]``: over the outer
            test folds, ``acted`` calls (at each fold's own inner-fold threshold) and how many
            of them were ``over_treating``.

    Returns:
        ``{"threshold", "reason"}``: the procedure passes when at least ``min_acted`` calls
        acted on the outer folds and the Wilson lower bound of their not-over-treating
        fraction reaches ``target_precision`` (the criterion the inner folds apply).
    """
    acted, over = int(outer_pooled["acted"]), int(outer_pooled["over_treating"])
    lower = wilson_lower_bound(acted - over, acted)
    outer = (f"on the held-out outer folds, {acted - over} of {acted} intervention calls that "
             f"reached their fold's threshold did not over-treat")
    if acted >= min_acted and lower >= target_precision:
        return {"threshold": float(final_choice["threshold"]),
                "reason": f"{final_choice['reason']}; {outer} (95 % lower bound {lower:.0%})"}
    return {"threshold": NEVER,
            "reason": (f"the threshold chosen on inner folds did not hold up: {outer}"
                       + (f" (95 % lower bound {lower:.0%}, needs {target_precision:.0%})"
                          if acted else "")
                       + "; interventions are always withheld")}
