"""The model candidates of nested cross-validation and their cross-fitted calibration.

A candidate is one pipeline: median imputation -> standard scaling -> L1 (LASSO-type)
feature selection -> a classifier (:func:`build_pipeline`); :func:`candidate_grid` lists the
candidates of a config. Everything here is fitted only on the rows it is given, so whoever
calls it decides which rows a step may see (``spoils_tf.train.grade_nested_lib``: the inner
training folds).

:class:`CrossFitCalibrator` turns out-of-fold probabilities into a calibration map (sigmoid
or isotonic per class, one-vs-rest, then renormalised, as ``CalibratedClassifierCV`` does).
It is written here rather than calling ``CalibratedClassifierCV(cv=splits, ensemble=False)``
because the out-of-fold probabilities already exist (they chose the model), and sklearn
refits every fold again and refuses ``decision_function`` folds that miss a class, which the
rare 11-class grades do.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_sample_weight

from spoils_tf.classical.ordinal import CumulativeLogitClassifier

MODELS: tuple[str, ...] = ("logreg", "gradient_boosting", "lightgbm", "random_forest", "svm",
                           "ordinal")
CALIBRATION_METHODS: tuple[str, ...] = ("sigmoid", "isotonic", "none")


# === Feature selection ===
class L1Selector(SelectorMixin, BaseEstimator):
    """Keeps the features with a non-zero weight in an L1-penalised logistic regression.

    Args:
        C: inverse L1 strength (``liblinear``, one-vs-rest; smaller = fewer features).
        max_features: keep at most this many, by largest absolute weight over classes.
        class_weight: passed to the logistic regression.

    A feature kept for any class is kept. If no weight is non-zero, the single feature with
    the largest absolute weight at ``C * 100`` is kept, so the next step always gets input.
    Expects scaled inputs (weights are compared across features).
    """

    def __init__(self, C: float = 0.1, max_features: int = 40,
                 class_weight: Optional[str] = "balanced"):
        self.C = C
        self.max_features = max_features
        self.class_weight = class_weight

    def _weights(self, X, y, C):
        """Max |weight| over the one-vs-rest problems (liblinear is binary-only)."""
        classes = np.unique(y)
        problems = [y] if len(classes) <= 2 else [(y == c).astype(np.int64) for c in classes]
        w = np.zeros(X.shape[1])
        for t in problems:
            if len(np.unique(t)) < 2:
                continue
            lr = LogisticRegression(penalty="l1", solver="liblinear", C=C,
                                    class_weight=self.class_weight, max_iter=1000)
            lr.fit(X, t)
            w = np.maximum(w, np.abs(lr.coef_).ravel())
        return w

    def fit(self, X, y):
        X = np.asarray(X, np.float64)
        w = self._weights(X, y, float(self.C))
        if not (w > 1e-8).any():
            w = self._weights(X, y, float(self.C) * 100.0)
            keep = np.zeros(X.shape[1], bool)
            keep[int(np.argmax(w))] = True
        else:
            order = np.argsort(-w, kind="stable")[: int(self.max_features)]
            keep = np.zeros(X.shape[1], bool)
            keep[order[w[order] > 1e-8]] = True
        self.weights_ = w
        self.support_ = keep
        self.n_features_in_ = X.shape[1]
        return self

    def _get_support_mask(self):
        return self.support_


# === Classifiers ===
class BalancedGradientBoosting(GradientBoostingClassifier):
    """``GradientBoostingClassifier`` whose ``fit`` weights rows by ``n / (K n_k)`` (sklearn's
    gradient boosting has no ``class_weight``)."""

    def fit(self, X, y, sample_weight=None, monitor=None):
        w = compute_sample_weight("balanced", y)
        if sample_weight is not None:
            w = w * np.asarray(sample_weight, np.float64)
        return super().fit(X, y, sample_weight=w, monitor=monitor)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the inner-fold search: a model, its parameters, the L1 strength."""

    model: str
    params: tuple[tuple[str, Any], ...]
    select_C: float

    @property
    def name(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.model}({p})|L1 C={self.select_C:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "params": dict(self.params), "select_C": self.select_C,
                "name": self.name}


def build_classifier(model: str, params: Mapping[str, Any], seed: int,
                     class_weight: Optional[str] = "balanced"):
    """An unfitted classifier of kind ``model`` (:data:`MODELS`) with ``params``.

    Raises:
        KeyError: unknown model.
    """
    p = dict(params)
    if model == "logreg":
        return LogisticRegression(max_iter=2000, class_weight=class_weight, **p)
    if model == "gradient_boosting":
        cls = BalancedGradientBoosting if class_weight == "balanced" else \
            GradientBoostingClassifier
        return cls(random_state=seed, **p)
    if model == "lightgbm":
        from lightgbm import LGBMClassifier
        return LGBMClassifier(random_state=seed, n_jobs=1, verbose=-1,
                              class_weight=class_weight, **p)
    if model == "random_forest":
        return RandomForestClassifier(random_state=seed, n_jobs=1,
                                      class_weight=("balanced_subsample"
                                                    if class_weight == "balanced" else None),
                                      **p)
    if model == "svm":
        return SVC(probability=True, class_weight=class_weight, random_state=seed, **p)
    if model == "ordinal":
        return CumulativeLogitClassifier(class_weight=class_weight, **p)
    raise KeyError(f"unknown model {model!r}; expected one of {MODELS}")


def build_pipeline(candidate: Candidate, seed: int, *, max_features: int = 40,
                   class_weight: Optional[str] = "balanced") -> Pipeline:
    """impute (median) -> scale -> :class:`L1Selector` -> classifier, unfitted."""
    return Pipeline([
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("select", L1Selector(C=candidate.select_C, max_features=max_features,
                                  class_weight=class_weight)),
            ("model", build_classifier(candidate.model, dict(candidate.params), seed,
                                       class_weight)),
    ])


def candidate_grid(models: Sequence[str], grids: Mapping[str, Mapping[str, Sequence[Any]]],
                   select_Cs: Sequence[float], ordered_target: bool) -> list[Candidate]:
    """Every (model, parameter combination, L1 strength).

    Args:
        models: model names (:data:`MODELS`); ``ordinal`` is skipped unless
            ``ordered_target``.
        grids: ``{model: {param: [values...]}}``; a parameter with one value is fixed.
        select_Cs: the L1 selection strengths tried.
        ordered_target: the target's classes are ordered grades (Pfirrmann).
    """
    import itertools
    out = []
    for m in models:
        if m == "ordinal" and not ordered_target:
            continue
        grid = dict(grids.get(m, {}))
        keys = sorted(grid)
        for values in itertools.product(*[list(grid[k]) for k in keys]):
            for c in select_Cs:
                out.append(Candidate(m, tuple(zip(keys, values)), float(c)))
    return out


def full_proba(estimator, X, n_classes: int) -> np.ndarray:
    """``predict_proba`` spread over all ``n_classes`` integer labels 0..n-1 (a class the
    estimator never saw gets 0)."""
    p = np.asarray(estimator.predict_proba(X), np.float64)
    out = np.zeros((p.shape[0], n_classes))
    out[:, np.asarray(estimator.classes_, np.int64)] = p
    return out


# === Calibration ===
class CrossFitCalibrator:
    """Per-class one-vs-rest calibration map fitted on out-of-fold probabilities.

    Args:
        method: ``"sigmoid"`` (Platt: logistic regression on the logit of the probability),
            ``"isotonic"`` or ``"none"``.

    ``fit(oof_probs [N, C], y [N])``: the probabilities must come from models that did not
    see the row they predict (the caller's guarantee). A class absent from ``y`` maps to 0.
    ``transform(probs)``: calibrated ``[N, C]``, rows summing to 1 (uniform if all map to 0).
    """

    def __init__(self, method: str = "sigmoid"):
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method {method!r}; expected one of "
                             f"{CALIBRATION_METHODS}")
        self.method = method

    @staticmethod
    def _logit(p):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def fit(self, oof_probs, y):
        p = np.asarray(oof_probs, np.float64)
        y = np.asarray(y, np.int64)
        self.n_classes_ = p.shape[1]
        self.maps_: list[Any] = []
        for c in range(self.n_classes_):
            target = (y == c).astype(np.int64)
            # A class never (or always) seen, or a score that never varies, says nothing
            # beyond the class frequency: the map is that constant.
            if self.method == "none" or target.sum() == 0 or target.sum() == len(y) \
                    or np.ptp(p[:, c]) < 1e-9:
                self.maps_.append(float(target.mean()) if self.method != "none" else None)
                continue
            if self.method == "sigmoid":
                m = LogisticRegression(C=1e4, max_iter=1000)
                m.fit(self._logit(p[:, c])[:, None], target)
            else:
                m = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
                m.fit(p[:, c], target)
            self.maps_.append(m)
        return self

    def transform(self, probs) -> np.ndarray:
        p = np.asarray(probs, np.float64)
        out = np.zeros_like(p)
        for c, m in enumerate(self.maps_):
            if m is None:
                out[:, c] = p[:, c]
            elif isinstance(m, float):
                out[:, c] = m
            elif isinstance(m, LogisticRegression):
                out[:, c] = m.predict_proba(self._logit(p[:, c])[:, None])[:, 1]
            else:
                out[:, c] = m.predict(p[:, c])
        s = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), uniform)

