"""Disc-grade classifiers on the geometry feature table (scikit-learn, XGBoost, LightGBM).

Every classifier is a ``sklearn.pipeline.Pipeline``::

    impute  SimpleImputer(median, add_indicator=True)   NaN features (a failed measurement)
                                                         -> median + a 0/1 "was missing" column
    scale   StandardScaler
    clf     FixedClassesClassifier(<estimator>, classes) probabilities over a FIXED class list

``FixedClassesClassifier`` is what makes folds comparable: ``predict_proba`` always returns
``[N, len(classes)]`` columns in ``classes`` order (``labels.GRADE_CLASSES``,
``labels.PFIRRMANN_CLASSES`` or ``labels.BINARY_CLASSES``). A class that does not occur in a
training fold cannot be learned, so its column is padded with 0 (the model gives it no
mass; a held-out row of that class then counts as an error and its log-loss is clipped).
Rare classes are weighted by balanced sample weights ``n / (k * n_c)`` (sklearn's
``compute_sample_weight("balanced")``) unless ``class_weight=None``.

Probabilities: logistic regression and the boosted trees are fitted by log-loss and give
probabilities directly; SVC has none of its own, so it is wrapped in
``CalibratedClassifierCV(method="sigmoid")`` (Platt scaling, Platt 1999). Any model can be
calibrated with ``build_classifier(..., calibration="sigmoid"|"isotonic")``.

Registry names (``CLASSIFIERS``): ``logreg``, ``xgboost``, ``gradient_boosting``
(sklearn ``GradientBoostingClassifier``, the paper's "Gradient Boosting Classifier"),
``svm``, ``lightgbm``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_sample_weight

from spoils_tf import labels
from spoils_tf.metrics.classification import prob_columns

# === Targets ===
TARGETS: dict[str, tuple[str, ...]] = {
    "grade_class": labels.GRADE_CLASSES,
    "pfirrmann": labels.PFIRRMANN_CLASSES,
    "binary": labels.BINARY_CLASSES,
}
KEY_COLUMNS: tuple[str, ...] = ("patient", "slice", "level")


def target_labels(df: pd.DataFrame, target: str) -> np.ndarray:
    """Class names ``object [N]`` of ``target`` for every row; ``None`` where unknown.

    ``grade_class`` reads column ``grade_class``; ``pfirrmann`` maps column ``pfirrmann``
    (1-5) to ``PG1..PG5``; ``binary`` maps it to ``PG1-3`` / ``PG4-5`` (``labels.binary_of``).
    Empty strings and NaN count as unknown.

    Raises:
      KeyError: unknown target or missing column.
      ValueError: a value that is present but not a valid class/grade (names the row).
    """
    if target not in TARGETS:
        raise KeyError(f"unknown target {target!r}; expected one of {sorted(TARGETS)}")
    col = "grade_class" if target == "grade_class" else "pfirrmann"
    if col not in df.columns:
        raise KeyError(f"target {target!r} needs column {col!r}; table has {list(df.columns)}")
    out = np.empty(len(df), object)
    for i, v in enumerate(df[col].tolist()):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v):
            out[i] = None
            continue
        if target == "grade_class":
            if str(v) not in labels.GRADE_CLASS_ID:
                raise ValueError(f"row {df.index[i]!r}: grade_class {v!r} is not one of "
                                 f"{labels.GRADE_CLASSES}")
            out[i] = str(v)
            continue
        g = float(v)
        if g not in labels.PFIRRMANN_GRADES:
            raise ValueError(f"row {df.index[i]!r}: pfirrmann {v!r} is not one of "
                             f"{labels.PFIRRMANN_GRADES}")
        out[i] = (labels.PFIRRMANN_CLASSES[int(g) - 1] if target == "pfirrmann"
                  else labels.BINARY_CLASSES[labels.binary_of(int(g))])
    return out


# === Fixed class list ===
def _rare_class_safe(est: Any, y_local: np.ndarray) -> Any:
    """Lets ``CalibratedClassifierCV(cv=k)`` fit when a class has fewer than ``k`` rows.

    sklearn refuses an integer ``cv`` larger than the rarest class count. We hand it the
    explicit (train, test) index pairs of a shuffled ``StratifiedKFold(k)`` instead: a rare
    class then misses from some calibration members, which give it probability 0, and the
    members are averaged (``ensemble=True``), so nothing is dropped.
    """
    if not isinstance(est, CalibratedClassifierCV) or not isinstance(est.cv, int):
        return est
    if np.bincount(y_local).min() >= est.cv:
        return est
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(StratifiedKFold(est.cv, shuffle=True, random_state=0)
                      .split(np.zeros(len(y_local)), y_local))
    return est.set_params(cv=splits)


class FixedClassesClassifier(ClassifierMixin, BaseEstimator):
    """Wraps a classifier so that ``predict_proba`` covers a fixed class list.

    Args:
      estimator: an unfitted sklearn-style classifier (cloned on ``fit``).
      classes: the full class-name list; ``classes_`` is set to it.
      class_weight: ``"balanced"`` (default) or None.

    ``fit(X, y)`` takes ``y`` as class names (strings in ``classes``); the inner estimator sees
    indices ``0..k-1`` over the ``k`` classes present, so XGBoost's "labels must be 0..k-1" holds
    in every fold. With a single class present the model predicts it with probability 1.
    """

    def __init__(self, estimator: Any = None, classes: Sequence[str] = labels.GRADE_CLASSES,
                 class_weight: Optional[str] = "balanced"):
        self.estimator = estimator
        self.classes = classes
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None) -> "FixedClassesClassifier":
        """Raises ValueError if ``y`` has names outside ``classes`` or missing values."""
        classes = [str(c) for c in self.classes]
        y = np.asarray(y, object)
        bad = sorted({repr(v) for v in y if v is None or str(v) not in classes})
        if bad:
            raise ValueError(f"target has value(s) {bad[:5]} outside the class list {classes}")
        full = np.asarray([classes.index(str(v)) for v in y], np.int64)
        present = np.unique(full)
        self.classes_ = np.asarray(classes, dtype=object)
        self.present_ = present
        self.n_features_in_ = np.asarray(X).shape[1]
        if present.size == 1:
            self.estimator_ = None
            return self
        y_local = np.searchsorted(present, full)
        w = np.ones(len(y_local)) if sample_weight is None else np.asarray(sample_weight, float)
        if self.class_weight == "balanced":
            w = w * compute_sample_weight("balanced", y_local)
        elif self.class_weight is not None:
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        self.estimator_ = _rare_class_safe(clone(self.estimator), y_local)
        self.estimator_.fit(X, y_local, sample_weight=w)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """``float64 [N, len(classes)]``; columns of classes absent in training are 0."""
        n = np.asarray(X).shape[0]
        out = np.zeros((n, len(self.classes_)))
        if self.estimator_ is None:
            out[:, self.present_[0]] = 1.0
            return out
        inner = np.asarray(self.estimator_.predict_proba(X), np.float64)
        out[:, self.present_[np.asarray(self.estimator_.classes_, np.int64)]] = inner
        s = out.sum(axis=1, keepdims=True)
        return out / np.where(s > 0, s, 1.0)

    def predict(self, X) -> np.ndarray:
        """``object [N]`` class names (argmax of ``predict_proba``)."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


# === Registry ===
@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """How to make one model: ``factory(params, seed)`` and its defaults/calibration."""

    factory: Callable[[Mapping[str, Any], int], Any]
    defaults: Mapping[str, Any]
    calibration: Optional[str] = None


def _logreg(p, seed):
    return LogisticRegression(random_state=seed, **p)


def _xgboost(p, seed):
    import xgboost
    return xgboost.XGBClassifier(random_state=seed, **p)


def _gradient_boosting(p, seed):
    return GradientBoostingClassifier(random_state=seed, **p)


def _svm(p, seed):
    return SVC(random_state=seed, **p)


def _lightgbm(p, seed):
    import lightgbm
    return lightgbm.LGBMClassifier(random_state=seed, **p)


CLASSIFIERS: dict[str, ClassifierSpec] = {
    "logreg": ClassifierSpec(_logreg, {"C": 1.0, "max_iter": 2000}),
    "xgboost": ClassifierSpec(_xgboost, {"n_estimators": 200, "max_depth": 3,
                                         "learning_rate": 0.1, "tree_method": "hist",
                                         "n_jobs": 1, "verbosity": 0}),
    "gradient_boosting": ClassifierSpec(_gradient_boosting, {"n_estimators": 100,
                                                             "max_depth": 3,
                                                             "learning_rate": 0.1}),
    "svm": ClassifierSpec(_svm, {"C": 1.0, "kernel": "rbf", "gamma": "scale"},
                          calibration="sigmoid"),
    "lightgbm": ClassifierSpec(_lightgbm, {"n_estimators": 200, "num_leaves": 15,
                                           "learning_rate": 0.05, "min_child_samples": 5,
                                           "n_jobs": 1, "verbose": -1}),
}
_UNSET = object()


def build_classifier(name: str, params: Optional[Mapping[str, Any]] = None, *,
                     classes: Sequence[str] = labels.GRADE_CLASSES,
                     class_weight: Optional[str] = "balanced",
                     calibration: Any = _UNSET, calibration_cv: int = 3,
                     seed: int = 0) -> Pipeline:
    """Unfitted ``Pipeline(impute -> scale -> FixedClassesClassifier(model))``.

    Args:
      name: a key of ``CLASSIFIERS``.
      params: estimator hyper-parameters, overriding ``CLASSIFIERS[name].defaults``.
      classes: the fixed class list of ``predict_proba`` (``TARGETS[target]``).
      class_weight: ``"balanced"`` sample weights or None.
      calibration: None, ``"sigmoid"`` or ``"isotonic"``; default per model (sigmoid for svm).
      calibration_cv: folds of ``CalibratedClassifierCV`` (within the training data).
      seed: ``random_state`` of the estimator.

    Raises:
      KeyError: unknown name. ValueError: unknown calibration method.
    """
    if name not in CLASSIFIERS:
        raise KeyError(f"unknown classifier {name!r}; expected one of {sorted(CLASSIFIERS)}")
    spec = CLASSIFIERS[name]
    est = spec.factory({**spec.defaults, **dict(params or {})}, seed)
    method = spec.calibration if calibration is _UNSET else calibration
    if method is not None:
        if method not in ("sigmoid", "isotonic"):
            raise ValueError(f"calibration must be None, 'sigmoid' or 'isotonic', got {method!r}")
        est = CalibratedClassifierCV(est, method=method, cv=calibration_cv)
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", add_indicator=True,
                                 keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("clf", FixedClassesClassifier(est, classes=tuple(classes), class_weight=class_weight)),
    ])


# === Cross-validation ===
def _feature_matrix(df: pd.DataFrame, feature_cols: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in feature_cols if c not in df.columns]
    if missing:
        raise KeyError(f"feature column(s) {missing} not in the table; it has {list(df.columns)}")
    X = df[list(feature_cols)]
    non_numeric = [c for c in feature_cols if not pd.api.types.is_numeric_dtype(X[c])]
    if non_numeric:
        raise ValueError(f"feature column(s) {non_numeric} are not numeric")
    return X.astype(np.float64)


def _fold_ids(df: pd.DataFrame, folds: Union[str, Mapping[Any, int]]) -> np.ndarray:
    if isinstance(folds, str):
        if folds not in df.columns:
            raise KeyError(f"fold column {folds!r} not in the table")
        f = df[folds]
    else:
        f = df["patient"].map(lambda p: folds.get(p, folds.get(str(p))))
    if f.isna().any():
        bad = df.loc[f.isna(), "patient"].astype(str).unique()[:5].tolist()
        raise ValueError(f"rows without a fold (patients {bad}); every row needs one")
    f = f.astype(np.int64).to_numpy()
    per_patient = pd.Series(f).groupby(df["patient"].astype(str).to_numpy()).nunique()
    leaky = per_patient[per_patient > 1].index.tolist()
    if leaky:
        raise ValueError(f"patients {leaky[:5]} appear in more than one fold: folds must be "
                         "grouped by patient")
    return f


def fit_predict_folds(df: pd.DataFrame, feature_cols: Sequence[str], target: str,
                      folds: Union[str, Mapping[Any, int]] = "fold",
                      model: Union[str, Pipeline] = "gradient_boosting",
                      params: Optional[Mapping[str, Any]] = None, seed: int = 0,
                      return_models: bool = False):
    """Out-of-fold probabilities: for each fold k, fit on the other folds' PATIENTS, predict k.

    Args:
      df: one row per disc slice with ``patient`` (and optionally ``slice``, ``level``), the
        feature columns (NaN allowed) and the target's column.
      feature_cols: feature column names (e.g. ``disc_height_mm``).
      target: a key of ``TARGETS``.
      folds: a column of ``df`` holding the fold of each row (default ``"fold"``), or a
        mapping patient -> fold (e.g. from folds.json).
      model: a ``CLASSIFIERS`` name (built with ``params`` and ``seed``), or an unfitted
        Pipeline (cloned per fold).
      return_models: also return ``{fold: fitted Pipeline}``.

    Returns:
      DataFrame with the key columns present in ``df``, ``fold``, ``y_true`` (class name or
      missing), ``y_pred`` and ``prob/<class>`` for every class of the target, in ``df`` row
      order. Rows with an unknown target are not used for training but are still predicted
      (nothing is dropped).

    Raises:
      KeyError/ValueError: missing columns, rows without a fold, a patient in two folds, or a
        training split with no labelled rows.
    """
    classes = TARGETS[target] if target in TARGETS else None
    if classes is None:
        raise KeyError(f"unknown target {target!r}; expected one of {sorted(TARGETS)}")
    if "patient" not in df.columns:
        raise KeyError("the table needs a 'patient' column to split by patient")
    X = _feature_matrix(df, feature_cols)
    y = target_labels(df, target)
    fold = _fold_ids(df, folds)
    labelled = np.asarray([v is not None for v in y])
    probs = np.zeros((len(df), len(classes)))
    models = {}
    for k in np.unique(fold):
        train = (fold != k) & labelled
        test = fold == k
        if not train.any():
            raise ValueError(f"fold {k}: no labelled training rows in the other folds")
        pipe = (build_classifier(model, params, classes=classes, seed=seed)
                if isinstance(model, str) else clone(model))
        pipe.fit(X[train], y[train])
        got = list(pipe.classes_)
        if got != list(classes):
            raise ValueError(f"model classes {got} differ from target classes {list(classes)}")
        probs[test] = pipe.predict_proba(X[test])
        models[int(k)] = pipe
    out = df[[c for c in KEY_COLUMNS if c in df.columns]].copy()
    out["fold"] = fold
    out["y_true"] = y
    out["y_pred"] = np.asarray(classes, object)[probs.argmax(axis=1)]
    out[prob_columns(classes)] = probs
    return (out, models) if return_models else out
