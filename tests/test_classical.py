"""Geometry classifiers on a small synthetic table; skops save/load round trips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spoils_tf import labels
from spoils_tf.classical import io as cio
from spoils_tf.classical import models
from spoils_tf.metrics.classification import prob_columns

FEATURES = ["disc_height_mm", "signal_ratio"]
SMALL = {"xgboost": {"n_estimators": 10}, "gradient_boosting": {"n_estimators": 10},
         "lightgbm": {"n_estimators": 10}}
PRESENT = ("1L", "3M", "5H")  # 8 of the 11 grade classes never occur in this table


def _table(n_patients: int = 12, seed: int = 0) -> pd.DataFrame:
    """n_patients x 3 discs; the class decides the features (separable), fold = patient % 3."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for j, level in enumerate(("L3-L4", "L4-L5", "L5-S1")):
            cls = PRESENT[(p + j) % 3]
            g = labels.pfirrmann_of(cls)
            rows.append({"patient": f"P{p:02d}", "slice": 7, "level": level,
                         "grade_class": cls, "pfirrmann": g, "fold": p % 3,
                         "disc_height_mm": 12.0 - 2.0 * g + rng.normal(0, 0.2),
                         "signal_ratio": 1.2 - 0.2 * g + rng.normal(0, 0.02)})
    df = pd.DataFrame(rows)
    df.loc[[0, 5], "signal_ratio"] = np.nan  # a failed measurement
    return df


@pytest.mark.parametrize("name", sorted(models.CLASSIFIERS))
def test_each_model_gives_probabilities_over_all_eleven_classes(name):
    df = _table()
    pipe = models.build_classifier(name, SMALL.get(name))
    assert [s for s, _ in pipe.steps] == ["impute", "scale", "clf"]
    pipe.fit(df[FEATURES], df["grade_class"])
    probs = pipe.predict_proba(df[FEATURES])
    assert list(pipe.classes_) == list(labels.GRADE_CLASSES)
    assert probs.shape == (len(df), labels.NUM_GRADE_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    absent = [labels.GRADE_CLASS_ID[c] for c in labels.GRADE_CLASSES if c not in PRESENT]
    assert np.all(probs[:, absent] == 0.0)  # padded, never learned
    # the classes are separable by disc height: every model fits them in-sample
    assert np.mean(pipe.predict(df[FEATURES]) == df["grade_class"].to_numpy()) >= 0.9


def test_out_of_fold_trains_on_other_patients_only_and_predicts_every_row():
    df = _table()
    df.loc[3, "grade_class"] = ""  # unknown label: predicted, never trained on
    out, fitted = models.fit_predict_folds(df, FEATURES, "grade_class", folds="fold",
                                           model="logreg", return_models=True)
    assert len(out) == len(df) and list(out["patient"]) == list(df["patient"])
    assert pd.isna(out.loc[3, "y_true"])
    # 12 patients x 3 discs, 4 patients per fold: a fold's model saw the 24 rows of the other
    # 8 patients, minus the unlabelled row 3 (patient P01, fold 1) when it is in training
    seen = {k: int(m.named_steps["scale"].n_samples_seen_) for k, m in fitted.items()}
    assert seen == {0: 23, 1: 24, 2: 23}
    np.testing.assert_allclose(out[prob_columns(labels.GRADE_CLASSES)].sum(axis=1), 1.0)
    lab = out["y_true"].notna()
    assert (out.loc[lab, "y_pred"] == out.loc[lab, "y_true"]).mean() >= 0.9


def test_folds_as_mapping_equal_folds_as_column():
    df = _table()
    by_col = models.fit_predict_folds(df, FEATURES, "binary", model="logreg")
    mapping = {p: int(p[1:]) % 3 for p in df["patient"].unique()}
    by_map = models.fit_predict_folds(df.drop(columns="fold"), FEATURES, "binary",
                                      folds=mapping, model="logreg")
    cols = prob_columns(labels.BINARY_CLASSES)
    np.testing.assert_allclose(by_col[cols].to_numpy(), by_map[cols].to_numpy())


def test_patient_leakage_and_missing_fold_are_errors():
    df = _table()
    df.loc[0, "fold"] = 2  # P00 now spans folds 0 and 2
    with pytest.raises(ValueError, match="P00.*more than one fold"):
        models.fit_predict_folds(df, FEATURES, "grade_class", model="logreg")
    with pytest.raises(ValueError, match="without a fold"):
        models.fit_predict_folds(_table(), FEATURES, "grade_class", folds={"P00": 0},
                                 model="logreg")
    with pytest.raises(KeyError, match="not_a_feature"):
        models.fit_predict_folds(_table(), ["not_a_feature"], "grade_class", model="logreg")


def test_targets_map_pfirrmann_to_fixed_class_lists():
    df = pd.DataFrame({"pfirrmann": [1, 3, 4, 5, np.nan], "grade_class": ["1L", "3M", "4H",
                                                                          "5L", None]})
    assert list(models.target_labels(df, "pfirrmann")) == ["PG1", "PG3", "PG4", "PG5", None]
    assert list(models.target_labels(df, "binary")) == ["PG1-3", "PG1-3", "PG4-5", "PG4-5",
                                                        None]
    assert list(models.target_labels(df, "grade_class")) == ["1L", "3M", "4H", "5L", None]
    out = models.fit_predict_folds(_table(), FEATURES, "pfirrmann", model="logreg")
    assert [c for c in out.columns if c.startswith("prob/")] == \
        prob_columns(labels.PFIRRMANN_CLASSES)
    with pytest.raises(ValueError, match="grade_class '6L'"):
        models.target_labels(pd.DataFrame({"grade_class": ["6L"]}), "grade_class")


def test_balanced_weights_predict_the_rare_class_more_often():
    # 90 rows of 1L around x=0, 10 of 5H around x=1, overlapping (sd 1): unweighted logistic
    # regression almost never predicts 5H; balanced weights must predict it more often
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (90, 1)), rng.normal(1, 1, (10, 1))]
    y = np.array(["1L"] * 90 + ["5H"] * 10)
    n_rare = {}
    for cw in ("balanced", None):
        pipe = models.build_classifier("logreg", class_weight=cw).fit(X, y)
        n_rare[cw] = int(np.sum(pipe.predict(X) == "5H"))
    assert n_rare["balanced"] > n_rare[None] + 10


def test_single_class_fold_and_svm_with_a_one_row_class():
    pipe = models.build_classifier("logreg").fit(np.zeros((4, 1)), ["3M"] * 4)
    probs = pipe.predict_proba(np.zeros((2, 1)))
    assert probs[:, labels.GRADE_CLASS_ID["3M"]].tolist() == [1.0, 1.0]
    # a class with 1 row is fewer than the 3 calibration folds: still fits, still sums to 1
    rng = np.random.default_rng(0)
    X = rng.normal(size=(21, 2))
    y = ["1L"] * 10 + ["5H"] * 10 + ["4L"]
    probs = models.build_classifier("svm").fit(X, y).predict_proba(X)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="outside the class list"):
        models.build_classifier("logreg").fit(np.zeros((2, 1)), ["1L", "PG3"])
    with pytest.raises(KeyError, match="unknown classifier"):
        models.build_classifier("random_forest")


# === Saving ===
@pytest.mark.parametrize("name", sorted(models.CLASSIFIERS))
def test_skops_round_trip_each_model(tmp_path, name):
    df = _table()
    pipe = models.build_classifier(name, SMALL.get(name)).fit(df[FEATURES], df["grade_class"])
    path = cio.save_classifier(pipe, tmp_path / f"{name}.skops", feature_names=FEATURES,
                               target="grade_class", extra={"model": name})
    meta = json.loads(cio.sidecar_path(path).read_text())
    assert meta["classes"] == list(labels.GRADE_CLASSES)
    assert meta["feature_names"] == FEATURES and meta["extra"] == {"model": name}
    loaded, meta2 = cio.load_classifier(path)
    np.testing.assert_allclose(loaded.predict_proba(df[FEATURES]),
                               pipe.predict_proba(df[FEATURES]))
    assert meta2 == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.skops", f"{name}.skops.json"]


def test_loader_refuses_tampered_unlisted_or_unverified_files(tmp_path):
    df = _table()
    pipe = models.build_classifier("logreg").fit(df[FEATURES], df["grade_class"])
    path = cio.save_classifier(pipe, tmp_path / "m.skops", feature_names=FEATURES)
    with pytest.raises(cio.UntrustedTypeError, match="FixedClassesClassifier"):
        cio.load_classifier(path, allowed_types={"numpy.dtype"})
    with pytest.raises(ValueError, match="feature_names"):
        cio.save_classifier(pipe, tmp_path / "x.skops", feature_names=FEATURES[::-1])
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(cio.ModelIntegrityError, match="sha256"):
        cio.load_classifier(path)
    cio.sidecar_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        cio.load_classifier(path)
