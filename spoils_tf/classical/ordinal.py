"""A cumulative-link (proportional-odds) logistic model for ordered grades, L2-penalised.

``P(y <= k | x) = sigmoid(theta_k - x . w)`` for ``k = 0 .. K-2`` with ordered thresholds
``theta_0 < theta_1 < ...`` (McCullagh 1980). One weight vector for every grade: a disc's
score ``x . w`` (``decision_function``) moves it along the grade scale, and the class
probabilities are the differences of consecutive cumulative probabilities.

Written here because no maintained scikit-learn-compatible implementation with a penalty and
class weights fits: statsmodels' ``OrderedModel`` has no penalty (hundreds of radiomics
features on ~200 discs are separable), and ``mord`` has not been released since 2023. The fit
is a plain L-BFGS on the penalised negative log-likelihood with its analytic gradient; the
thresholds are parametrised as ``theta_0 + cumsum(exp(delta))`` so they stay ordered.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import optimize, special
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_sample_weight

_EPS = 1e-12


class CumulativeLogitClassifier(ClassifierMixin, BaseEstimator):
    """Proportional-odds logistic regression (sklearn API).

    Args:
        alpha: L2 penalty on ``w`` (not on the thresholds), in units of the mean weighted
            log-likelihood: the objective is ``mean_i s_i nll_i + alpha / (2 N) |w|^2``.
        class_weight: ``"balanced"`` (weights ``n / (K n_k)``) or None.
        max_iter: L-BFGS iterations.

    ``fit(X, y)``: ``y`` are class labels whose sorted order is the grade order
    (``classes_ = np.unique(y)``); classes absent from ``y`` are unknown to the model.
    Attributes after fit: ``coef_ [d]``, ``thresholds_ [K-1]`` (increasing), ``classes_``.
    """

    def __init__(self, alpha: float = 1.0, class_weight: Optional[str] = "balanced",
                 max_iter: int = 500):
        self.alpha = alpha
        self.class_weight = class_weight
        self.max_iter = max_iter

    # --- parameters <-> (w, theta) ---
    @staticmethod
    def _thresholds(c0: float, delta: np.ndarray) -> np.ndarray:
        return c0 + np.concatenate([[0.0], np.cumsum(np.exp(delta))])

    def fit(self, X, y, sample_weight=None):
        X = np.asarray(X, np.float64)
        self.classes_, yk = np.unique(np.asarray(y), return_inverse=True)
        k, (n, d) = len(self.classes_), X.shape
        if k < 2:
            raise ValueError(f"CumulativeLogitClassifier needs >= 2 classes, got {k}")
        s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if self.class_weight == "balanced":
            s = s * compute_sample_weight("balanced", yk)
        s = s / s.sum()
        # Start: w = 0, thresholds at the logits of the cumulative class frequencies.
        cum = np.clip(np.cumsum(np.bincount(yk, minlength=k))[:-1] / n, 0.02, 0.98)
        theta0 = special.logit(cum)
        theta0 = np.maximum.accumulate(theta0 + np.arange(k - 1) * 1e-3)
        p0 = np.concatenate([np.zeros(d), [theta0[0]], np.log(np.maximum(np.diff(theta0),
                                                                          1e-3))])
        lam = float(self.alpha) / n

        def objective(params):
            w, c0, delta = params[:d], params[d], params[d + 1:]
            theta = self._thresholds(c0, delta)
            eta = X @ w
            upper = np.concatenate([theta, [np.inf]])[yk] - eta     # theta_k - eta
            lower = np.concatenate([[-np.inf], theta])[yk] - eta    # theta_{k-1} - eta
            fu, fl = special.expit(upper), special.expit(lower)
            p = np.maximum(fu - fl, _EPS)
            du, dl = fu * (1 - fu), fl * (1 - fl)                   # densities (0 at +-inf)
            nll = -np.sum(s * np.log(p)) + 0.5 * lam * w @ w
            # d(-log p)/d eta = (du - dl) / p ; d/d theta_k = -du / p ; d/d theta_{k-1} = dl / p
            g_eta = s * (du - dl) / p
            g_w = X.T @ g_eta + lam * w
            g_theta = np.zeros(k - 1)
            up_idx, lo_idx = yk, yk - 1
            m_up, m_lo = up_idx < k - 1, lo_idx >= 0
            np.add.at(g_theta, up_idx[m_up], -(s * du / p)[m_up])
            np.add.at(g_theta, lo_idx[m_lo], (s * dl / p)[m_lo])
            g_c0 = g_theta.sum()
            # theta_j = c0 + sum_{m < j} exp(delta_m): d theta_j / d delta_m = exp(delta_m), j > m
            g_delta = np.exp(delta) * np.cumsum(g_theta[::-1])[::-1][1:]
            return nll, np.concatenate([g_w, [g_c0], g_delta])

        res = optimize.minimize(objective, p0, jac=True, method="L-BFGS-B",
                                options={"maxiter": int(self.max_iter)})
        self.coef_ = res.x[:d]
        self.thresholds_ = self._thresholds(res.x[d], res.x[d + 1:])
        self.n_iter_ = int(res.nit)
        self.n_features_in_ = d
        return self

    def decision_function(self, X) -> np.ndarray:
        """The latent score ``x . w`` ``[N]``: higher = higher grade."""
        return np.asarray(X, np.float64) @ self.coef_

    def predict_proba(self, X) -> np.ndarray:
        """``[N, K]`` class probabilities (differences of the cumulative probabilities)."""
        eta = self.decision_function(X)
        cum = special.expit(self.thresholds_[None, :] - eta[:, None])
        cum = np.concatenate([np.zeros((len(eta), 1)), cum, np.ones((len(eta), 1))], axis=1)
        p = np.clip(np.diff(cum, axis=1), 0.0, 1.0)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
