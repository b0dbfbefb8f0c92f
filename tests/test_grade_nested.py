"""Nested patient-grouped CV (spoils_tf.train.grade_nested_lib): no test-fold leakage into
selection or calibration, the ordinal model, ECE, and a smoke run end to end."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from spoils_tf.classical import candidates as cand
from spoils_tf.classical.ordinal import CumulativeLogitClassifier
from spoils_tf.metrics import calibration as calib
from spoils_tf.train import grade_nested_lib as gn

CFG = {"inner_k": 3, "seed": 0, "selection_metric": "log_loss", "calibration": "sigmoid",
       "max_features": 10}


def _table(seed=0, patients=12, k=4):
    table, families, _ = gn.synthetic_disc_table(patients=patients, levels=5, n_geometry=4,
                                                 n_radiomics=6, k=k, seed=seed)
    return table, families


# === Splits ===
def test_inner_splits_never_return_test_patients():
    table, _ = _table()
    y = gn.target_codes(table, "pfirrmann")
    y[3] = -1                                          # one unlabelled disc
    patients = table["patient"].to_numpy()
    folds = table["fold"].to_numpy()
    for f in range(4):
        train, test, inner = gn.nested_splits(patients, y, folds, f, 3, 0)
        test_patients = set(patients[test])
        assert set(folds[test]) == {f} and not set(folds[train]) & {f}
        assert 3 not in train                          # unlabelled rows are never fitted on
        assert len(inner) == 3
        seen = set()
        for a, b in inner:
            assert set(a) <= set(train) and set(b) <= set(train)
            assert not set(patients[a]) & test_patients
            assert not set(patients[b]) & test_patients
            assert not set(patients[a]) & set(patients[b])
            seen |= set(b)
        assert seen == set(train)                      # every training row predicted once


def test_feature_informative_only_in_test_fold_is_never_selected():
    # "leak" is 0 on every training disc and equals the grade on the test fold's discs: a
    # selection that saw the test fold would take it (it is perfect there); one that did not
    # cannot (it is constant where it looked).
    table, families = _table()
    cols = families["both"] + ["leak"]
    y = gn.target_codes(table, "pfirrmann")
    folds = table["fold"].to_numpy()
    cands = cand.candidate_grid(("logreg", "ordinal"), {"logreg": {"C": (0.5,)},
                                                        "ordinal": {"alpha": (1.0,)}},
                                (0.5, 5.0), ordered_target=True)
    from threadpoolctl import threadpool_limits
    for f in (0, 3):
        X = table[families["both"]].to_numpy(np.float64)
        leak = np.where(folds == f, y.astype(np.float64), 0.0)
        X = np.column_stack([X, leak])
        with threadpool_limits(limits=1):
            _, _, _, facts = gn.run_outer_fold(X, y, table["patient"].to_numpy(), folds, f,
                                               cols, cands, 5, CFG)
        assert "leak" not in facts["selected_features"]
        assert facts["selected_features"]              # the real features are found
        assert not set(facts["train_patients"]) & set(facts["test_patients"])
        for inner in facts["inner_test_patients"]:
            assert not set(inner) & set(facts["test_patients"])


# === Calibration ===
class Memoriser(ClassifierMixin, BaseEstimator):
    """Right with certainty on the rows it was fitted on (column 0 = row id), uniform
    elsewhere: its in-sample probabilities are perfect and its held-out ones worthless."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.seen_ = {float(i): int(c) for i, c in zip(X[:, 0], y)}
        return self

    def predict_proba(self, X):
        p = np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))
        for r, i in enumerate(X[:, 0]):
            if float(i) in self.seen_:
                p[r] = 0.0
                p[r, list(self.classes_).index(self.seen_[float(i)])] = 1.0
        return p


def test_calibration_is_fitted_on_held_out_probabilities_only():
    table, _ = _table()
    y = gn.target_codes(table, "pfirrmann")
    X = np.arange(len(y), dtype=np.float64)[:, None]
    patients, folds = table["patient"].to_numpy(), table["fold"].to_numpy()
    train, _, inner = gn.nested_splits(patients, y, folds, 0, 3, 0)
    rows, oof = gn.inner_oof_probs(Memoriser, X, y, inner, 5)
    assert np.allclose(oof, 0.2)                       # held out: the memoriser knows nothing
    calibrator = cand.CrossFitCalibrator("sigmoid").fit(oof, y[rows])
    final = Memoriser().fit(X[train], y[train])
    calibrated = calibrator.transform(cand.full_proba(final, X[train], 5))
    # fitted on held-out probabilities, the map learns that the score says nothing
    assert calibrated.max() < 0.5
    prior = np.bincount(y[train], minlength=5) / len(train)
    assert np.allclose(calibrated.mean(axis=0), prior, atol=0.05)
    # the same map fitted on in-sample probabilities would trust them (the test can fail)
    leaky = cand.CrossFitCalibrator("sigmoid").fit(cand.full_proba(final, X[train], 5),
                                                   y[train])
    assert leaky.transform(cand.full_proba(final, X[train], 5)).max() > 0.9


def test_isotonic_and_absent_class():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([[.9, .1, 0], [.8, .2, 0], [.3, .7, 0], [.2, .8, 0], [.4, .6, 0], [.6, .4, 0]])
    out = cand.CrossFitCalibrator("isotonic").fit(p, y).transform(p)
    assert np.allclose(out.sum(axis=1), 1.0) and np.all(out[:, 2] == 0.0)
    assert (out.argmax(axis=1) == y).all()


# === Ordinal model ===
def test_ordinal_predictions_are_monotone_in_its_score():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    latent = X @ np.array([1.5, -1.0, 0.5]) + rng.logistic(size=400)
    y = np.digitize(latent, [-2.0, -0.5, 0.5, 2.0])            # 5 ordered grades 0..4
    m = CumulativeLogitClassifier(alpha=1.0, class_weight=None).fit(X, y)
    assert np.all(np.diff(m.thresholds_) > 0)
    assert np.corrcoef(m.coef_, [1.5, -1.0, 0.5])[0, 1] > 0.95
    grid = np.linspace(-6, 6, 401)[:, None] * m.coef_ / (m.coef_ @ m.coef_)   # score = grid
    score = m.decision_function(grid)
    assert np.all(np.diff(score) > 0)
    assert np.all(np.diff(m.predict(grid)) >= 0)                # predicted grade
    p = m.predict_proba(grid)
    exceed = 1.0 - np.cumsum(p, axis=1)[:, :-1]                 # P(y > k) per k
    assert np.all(np.diff(exceed, axis=0) >= -1e-12)
    assert m.predict(grid)[0] == 0 and m.predict(grid)[-1] == 4


def test_ordinal_gradient_boosting_and_selection_fit_with_balanced_weights():
    table, families = _table()
    y = gn.target_codes(table, "pfirrmann")
    X = table[families["both"]].to_numpy(np.float64, copy=True)
    X[0, 0] = np.nan
    for model, params in (("ordinal", {"alpha": 1.0}), ("gradient_boosting",
                                                        {"n_estimators": 10}),
                          ("random_forest", {"n_estimators": 10}), ("svm", {}),
                          ("lightgbm", {"n_estimators": 20, "num_leaves": 4,
                                        "min_child_samples": 3})):
        pipe = cand.build_pipeline(cand.Candidate(model, tuple(params.items()), 0.5), 0)
        p = cand.full_proba(pipe.fit(X, y), X, 5)
        assert p.shape == (len(y), 5) and np.allclose(p.sum(axis=1), 1.0)


# === Metrics ===
def test_ece_by_hand():
    y = np.array([0, 1, 0, 0])
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (wrong):
    # bins (0.8, 0.9]: acc 0.5 conf 0.9; (0.5, 0.6]: acc 0.5 conf 0.6 -> 0.5 * 0.4 + 0.5 * 0.1
    p = np.array([[.9, .1], [.9, .1], [.6, .4], [.4, .6]])
    assert calib.expected_calibration_error(y, p) == pytest.approx(0.25)
    b = calib.reliability_bins(y, p)
    assert b["count"].sum() == 4 and b["count"][8] == 2 and b["count"][5] == 2


# === End to end ===
def test_smoke_run_resumes_and_writes_tables(tmp_path):
    from configs import grade_nested
    config = grade_nested.get_config("smoke")
    config.targets = ("pfirrmann", "binary")
    config.families = ("geometry", "radiomics")
    config.data.synthetic.patients = 12
    config.eval.n_boot = 20
    out = gn.run(config, tmp_path)
    assert len(out["results"]) == 4
    md = (tmp_path / "ground_truth" / "ablation.md").read_text()
    assert "| ground_truth | pfirrmann | radiomics |" in md
    assert (tmp_path / "ground_truth" / "pfirrmann" / "reliability.png").stat().st_size > 0
    meta = json.loads((tmp_path / "ground_truth" / "pfirrmann" / "geometry" / "folds"
                       / "fold_0.json").read_text())
    assert meta["chosen"]["model"] in ("logreg", "ordinal")
    pred = pd.read_csv(tmp_path / "ground_truth" / "binary" / "radiomics" /
                       "oof_predictions.csv")
    assert len(pred) == 60 and set(pred["fold"]) == {0, 1, 2, 3}
    # a second run finds every fold done and gives the same table
    config.fold = "all"
    again = gn.run(config, tmp_path)
    assert again["markdown"] == out["markdown"]


def test_imports_without_tensorflow():
    code = ("import sys, spoils_tf.train.grade_nested_lib; "
            "print(','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).resolve().parents[1], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_final_model_round_trips_through_skops_with_its_threshold(tmp_path):
    from configs import grade_nested
    from spoils_tf import labels
    from spoils_tf.classical import abstention
    from spoils_tf.classical import io as cio
    config = grade_nested.get_config("smoke")
    config.targets = ("grade_class",)
    config.families = ("geometry",)
    config.data.synthetic.patients = 12
    config.fold = "final"
    out = gn.run(config, tmp_path)
    (final,) = out["final"]
    assert final["n_patients"] == 12 and final["abstention"]["threshold"] in (
            set(abstention.THRESHOLD_GRID) | {abstention.NEVER})
    model, meta = cio.load_classifier(final["path"])
    assert tuple(meta["classes"]) == labels.GRADE_CLASSES
    table, families, _ = gn.synthetic_disc_table(patients=12)
    X = table[families["geometry"]]
    p = model.predict_proba(X)
    assert p.shape == (len(table), len(labels.GRADE_CLASSES))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # the same numbers as the calibrated pipeline before saving; columns taken by name
    np.testing.assert_allclose(model.predict_proba(X[X.columns[::-1]]), p)
    assert meta["extra"]["nested_cv_final"]["chosen"]["name"] == final["chosen"]["name"]
