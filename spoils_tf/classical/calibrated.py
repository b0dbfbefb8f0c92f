"""One shippable grader: a fitted candidate pipeline followed by its calibration map.

``CalibratedGrader(pipeline, calibrator, classes, feature_names)`` wraps what the nested CV
fits (``train.grade_nested_lib.fit_final``): the impute -> scale -> L1 selection -> model
pipeline of ``classical.candidates.build_pipeline`` (fitted on integer class codes) and a
``candidates.CrossFitCalibrator`` fitted on that candidate's inner out-of-fold
probabilities. It behaves as a fitted scikit-learn classifier over class NAMES, so
``classical.io.save_classifier`` / ``load_classifier`` and the predictor's geometry stage use
it unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class CalibratedGrader(ClassifierMixin, BaseEstimator):
    """A fitted pipeline and its calibration map, over named classes.

    Args:
        pipeline: fitted, predicting integer codes ``0..C-1`` (``classes_`` a subset).
        calibrator: a fitted ``candidates.CrossFitCalibrator`` over ``C`` classes.
        classes: the ``C`` class names, code order.
        feature_names: the ``F`` feature columns, in the order the pipeline was fitted on.

    ``predict_proba(X [N, F])`` -> ``float [N, C]`` calibrated, rows summing to 1; ``X`` may be
    a DataFrame (its columns are taken in ``feature_names`` order) or an array.
    """

    def __init__(self, pipeline: Any = None, calibrator: Any = None,
                 classes: Sequence[str] = (), feature_names: Sequence[str] = ()):
        self.pipeline = pipeline
        self.calibrator = calibrator
        self.classes = classes
        self.feature_names = feature_names

    def fit(self, X=None, y=None):
        """Sets the fitted attributes from the (already fitted) parts; ``X``, ``y`` unused."""
        self.classes_ = np.asarray([str(c) for c in self.classes], dtype=object)
        self.feature_names_in_ = np.asarray([str(f) for f in self.feature_names], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _array(self, X) -> np.ndarray:
        if hasattr(X, "columns"):
            missing = [f for f in self.feature_names_in_ if f not in X.columns]
            if missing:
                raise ValueError(f"feature columns {missing[:5]} are missing")
            X = X[list(self.feature_names_in_)]
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected [N, {self.n_features_in_}] features, got {X.shape}")
        return X

    def predict_proba(self, X) -> np.ndarray:
        from spoils_tf.classical import candidates as cand
        raw = cand.full_proba(self.pipeline, self._array(X), len(self.classes_))
        return self.calibrator.transform(raw)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
