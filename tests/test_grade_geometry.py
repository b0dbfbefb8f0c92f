"""Geometry classifiers, cross-validated: a smoke run on a synthetic feature table, the folds,
the leakage mode, hand-checked metrics, saved models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from configs import grade_geometry
from spoils_tf import labels
from spoils_tf.classical import io as cio
from spoils_tf.classical import models as cmodels
from spoils_tf.data import folds as folds_lib
from spoils_tf.metrics.classification import prob_columns
from spoils_tf.train import grade_geometry_lib as geo

MODELS = ("logreg", "gradient_boosting")


def _smoke_config(**overrides):
    c = grade_geometry.get_config("smoke")
    c.models = MODELS
    c.leakage_models = ("gradient_boosting",)
    c.eval.n_boot = 20
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """12 patients x 3 slices x 5 levels = 180 rows, one unlabelled disc (3 rows), 3 folds."""
    workdir = tmp_path_factory.mktemp("grade_geometry")
    config = _smoke_config()
    return workdir, config, geo.run(config, workdir)


def test_smoke_run_writes_the_tables_with_the_paper_beside(smoke):
    workdir, _, result = smoke
    for target in cmodels.TARGETS:
        for name in ("comparison.md", "comparison.csv", "comparison.json"):
            assert (workdir / "patient" / target / name).is_file()
        for model in MODELS:
            d = workdir / "patient" / target / model
            for name in ("oof_predictions.csv", "oof_predictions.parquet", "fold_metrics.csv",
                         "summary.json", "confusion.png"):
                assert (d / name).is_file(), d / name
    for name in ("summary.md", "leakage.md", "leakage.csv", "config.json", "folds.json"):
        assert (workdir / name).is_file()
    table = pd.read_csv(workdir / "patient" / "grade_class" / "comparison.csv")
    assert list(table["model"]) == list(MODELS)
    gb = table.set_index("model").loc["gradient_boosting"]
    assert (gb["paper_accuracy_pct"], gb["paper_iou_macro_pct"]) == (91.65, 84.59)
    assert np.isnan(table.set_index("model").loc["logreg", "paper_accuracy_pct"])
    # 3 folds, each with labelled rows: mean over folds of the fold accuracies
    folds = pd.read_csv(workdir / "patient" / "grade_class" / "logreg" / "fold_metrics.csv")
    assert len(folds) == 3
    assert table.loc[0, "accuracy_mean"] == pytest.approx(folds["accuracy"].mean())
    # the Pfirrmann table carries the anchors of the issue
    md = (workdir / "patient" / "pfirrmann" / "comparison.md").read_text()
    assert "0.867" not in md and "86.70" in md and "SpineNet" in md


def test_every_row_is_predicted_probabilities_sum_to_one_unlabelled_reported(smoke):
    workdir, _, result = smoke
    for target, classes in cmodels.TARGETS.items():
        oof = geo.read_predictions(workdir / "patient" / target / "logreg" / "oof_predictions")
        assert len(oof) == 180  # 12 x 3 x 5, nothing dropped
        probs = oof[prob_columns(classes)].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        assert oof["y_true"].isna().sum() == 3  # the unlabelled disc, 3 slices
        summary = result["splits"]["patient"]["targets"][target][0]
        assert (summary["n_scored"], summary["n_unlabelled"]) == (177, 3)
    assert "| 177 (12) | 3 |" in (workdir / "patient" / "binary" / "comparison.md").read_text()


def test_patient_folds_never_mix_patients_and_slice_folds_do(smoke):
    workdir, _, _ = smoke
    used = json.loads((workdir / "patient" / "folds_used.json").read_text())
    per_patient = pd.DataFrame(used["rows"]).groupby("patient")["fold"].nunique()
    assert len(per_patient) == 12 and (per_patient == 1).all()
    pat = pd.read_csv(workdir / "patient" / "binary" / "gradient_boosting" / "fold_metrics.csv")
    assert (pat["patients_in_train_and_test"] == 0).all()
    assert pat["n_test_patients"].sum() == 12
    sli = pd.read_csv(workdir / "slice" / "binary" / "gradient_boosting" / "fold_metrics.csv")
    assert (sli["patients_in_train_and_test"] > 0).all()


def test_leakage_mode_is_labelled_and_inflates_the_numbers(smoke):
    workdir, _, result = smoke
    leak = pd.read_csv(workdir / "leakage.csv")
    # gradient boosting only, 3 targets x 4 metrics
    assert len(leak) == 12 and set(leak["model"]) == {"gradient_boosting"}
    assert "LEAKY" in (workdir / "slice" / "grade_class" / "comparison.md").read_text()
    assert "LEAKY" not in (workdir / "patient" / "grade_class" / "comparison.md").read_text()
    acc = leak[(leak["target"] == "grade_class") & (leak["metric"] == "accuracy")].iloc[0]
    # slices of one disc share a disc effect (sd 0.8 vs slice noise 0.15): the leaky split
    # can match a test slice to its own disc's other slices
    assert acc["slice_pooled"] > acc["patient_pooled"]
    assert acc["inflation"] == pytest.approx(acc["slice_pooled"] - acc["patient_pooled"])


def test_saved_models_reload_and_match_a_refit(smoke):
    workdir, config, result = smoke
    assert len(result["models_saved"]) == len(MODELS) * len(cmodels.TARGETS)
    model, meta = cio.load_classifier(workdir / "models" / "pfirrmann" / "gradient_boosting.skops")
    assert meta["feature_names"] == result["features"]
    assert meta["classes"] == list(labels.PFIRRMANN_CLASSES)
    df = geo.load_feature_table(workdir / "synthetic_features.parquet")
    X = df[result["features"]]
    y = cmodels.target_labels(df, "pfirrmann")
    lab = np.asarray([v is not None for v in y])
    refit = cmodels.build_classifier("gradient_boosting", geo.model_params(config,
                                     "gradient_boosting"), classes=labels.PFIRRMANN_CLASSES)
    refit.fit(X[lab], y[lab])
    np.testing.assert_allclose(model.predict_proba(X), refit.predict_proba(X))


def test_evaluate_predictions_on_a_hand_made_table():
    b = labels.BINARY_CLASSES
    pred = pd.DataFrame({
        "patient": ["A", "A", "B", "B", "B"], "fold": [0, 0, 1, 1, 1],
        "y_true": [b[0], b[1], b[0], b[1], None],
        prob_columns(b)[0]: [0.9, 0.2, 0.4, 0.3, 0.5],
        prob_columns(b)[1]: [0.1, 0.8, 0.6, 0.7, 0.5]})
    ev = geo.evaluate_predictions(pred, b, n_boot=0)
    assert (ev["n_scored"], ev["n_unlabelled"], ev["n_patients"]) == (4, 1, 2)
    # fold 0: 2/2 right, fold 1: 1/2 right (B's PG1-3 row has 0.4 < 0.6)
    assert [f["accuracy"] for f in ev["per_fold"]] == [1.0, 0.5]
    assert ev["mean"]["accuracy"] == pytest.approx(0.75)
    assert ev["sd"]["accuracy"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert ev["pooled"]["accuracy"]["estimate"] == pytest.approx(0.75)
    # Brier: (2 x 0.1^2 + 2 x 0.2^2 + 2 x 0.6^2 + 2 x 0.3^2) / 4 = (0.02+0.08+0.72+0.18)/4
    assert ev["pooled"]["brier"]["estimate"] == pytest.approx(0.25)
    assert ev["confusion"] == [[1, 1], [0, 2]]
    bad = pred.assign(**{prob_columns(b)[0]: 0.9})
    with pytest.raises(ValueError, match="sum to 1"):
        geo.evaluate_predictions(bad, b, n_boot=0)


def test_slice_level_folds_keep_a_slice_together_and_balance_sizes():
    df = pd.DataFrame([{"patient": f"P{p}", "slice": s, "level": lv}
                       for p in range(3) for s in range(4) for lv in ("L4-L5", "L5-S1")])
    fold = geo.slice_level_folds(df, k=5, seed=0)
    per_slice = pd.Series(fold).groupby([df["patient"], df["slice"]]).nunique()
    assert (per_slice == 1).all()  # both discs of a slice share the fold
    sizes = np.bincount(fold[::2], minlength=5)  # 12 slices over 5 folds: 3,3,2,2,2
    assert sorted(sizes.tolist()) == [2, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="fewer than k=13"):
        geo.slice_level_folds(df, k=13, seed=0)


def test_fold_spec_parsing():
    assert geo.folds_to_run("all", 3) == [0, 1, 2]
    assert geo.folds_to_run("0,2", 3) == [0, 2]
    with pytest.raises(ValueError, match="outside 0..2"):
        geo.folds_to_run("3", 3)


def test_feature_columns_come_from_the_geometry_module():
    from spoils_tf.geometry import measure
    default = geo.default_feature_columns()
    assert "disc_height_mm" in default and "canal_ap_diameter_mm" in default
    assert set(default).isdisjoint({"level", "reason", "centroid_row", "slice", "ivd_label"})
    assert set(default) >= set(measure.MEASUREMENT_COLUMNS) - set(geo.NON_FEATURE_COLUMNS)
    df = pd.DataFrame({"patient": ["a"], "slice": [1], "level": ["L4-L5"],
                       "disc_height_mm": [9.0], "tilt_deg": ["x"]})
    used, missing = geo.resolve_feature_columns(df, ("disc_height_mm",))
    assert used == ["disc_height_mm"] and missing == []
    used, missing = geo.resolve_feature_columns(df.drop(columns="tilt_deg"))
    assert used == ["disc_height_mm"] and "disc_width_mm" in missing
    with pytest.raises(KeyError, match="disc_width_mm"):
        geo.resolve_feature_columns(df, ("disc_width_mm",))
    with pytest.raises(ValueError, match="tilt_deg"):
        geo.resolve_feature_columns(df, ("tilt_deg",))
    assert geo.add_level_index(df)[geo.LEVEL_INDEX_COLUMN].tolist() == [
        float(labels.DISC_NAMES.index("L4-L5"))]


def test_table_fold_column_disagreeing_with_folds_json_is_stale(tmp_path):
    df = geo.synthetic_feature_table(n_patients=4, slices_per_patient=1, n_levels=2)
    assignment = {p: i % 2 for i, p in enumerate(sorted(df["patient"].unique()))}
    folds_lib.write_folds(tmp_path / "folds.json", assignment, k=2, seed=0,
                          stratified_by="none", source="test")
    config = _smoke_config()
    df["fold"] = df["patient"].map(assignment)
    fold, k, source = geo.patient_folds(df, config, tmp_path, tmp_path / "features.parquet")
    assert k == 2 and source == str(tmp_path / "folds.json")
    assert fold.tolist() == df["fold"].tolist()
    df.loc[df["patient"] == "syn000", "fold"] = 1 - assignment["syn000"]
    with pytest.raises(ValueError, match="stale.*syn000|syn000.*stale"):
        geo.patient_folds(df, config, tmp_path, tmp_path / "features.parquet")


def test_feature_table_with_a_duplicated_key_or_no_file_is_refused(tmp_path):
    df = geo.synthetic_feature_table(n_patients=2, slices_per_patient=1, n_levels=2)
    pd.concat([df, df.iloc[:1]]).to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(ValueError, match="1 duplicated"):
        geo.load_feature_table(tmp_path / "f.csv")
    with pytest.raises(FileNotFoundError, match="spoils features"):
        geo.load_feature_table(tmp_path / "missing.parquet")
