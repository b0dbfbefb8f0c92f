"""The ensemble experiment: CNN + geometry out-of-fold tables joined on keys, the paper's
mean, cross-fitted weights from the other folds only, unmatched rows reported."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from configs import ensemble as ensemble_config
from spoils_tf import fileio, labels
from spoils_tf.metrics.classification import prob_columns
from spoils_tf.train import ensemble_lib
from spoils_tf.train import grade_geometry_lib as geo

B = labels.BINARY_CLASSES
COLS = prob_columns(B)


def _tables():
    """Binary, 4 patients x 2 discs, folds 0 (P0, P1) and 1 (P2, P3).

    Fold 0: CNN and geometry give the same probabilities, so any weight fits fold 0 equally
    and fold 1's cross-fitted weight is the tie-break 0.5 (the mean). Fold 1: the CNN is right
    with 0.9, the geometry wrong with 0.8 on the other class, so fold 0's weight is all CNN.
    """
    rows = []
    for p in range(4):
        for j, level in enumerate(("L4-L5", "L5-S1")):
            rows.append({"patient": f"P{p}", "slice": 7, "level": level, "fold": p // 2,
                         "y_true": B[j]})
    cnn = pd.DataFrame(rows)
    geom = cnn.copy()
    p_cnn = np.where(cnn["fold"].to_numpy()[:, None] == 0, [[0.6, 0.4]], [[0.9, 0.1]])
    p_cnn = np.where((cnn["y_true"] == B[1]).to_numpy()[:, None], p_cnn[:, ::-1], p_cnn)
    p_geom = p_cnn.copy()
    fold1 = (cnn["fold"] == 1).to_numpy()
    p_geom[fold1] = np.where((cnn.loc[fold1, "y_true"] == B[1]).to_numpy()[:, None],
                             [[0.8, 0.2]], [[0.2, 0.8]])
    cnn[COLS] = p_cnn
    geom[COLS] = p_geom
    return cnn, geom


def _write_inputs(tmp_path, cnn, geom, classes=B, split="patient"):
    cnn_dir, geom_dir = tmp_path / "cnn", tmp_path / "geom"
    fileio.write_table(cnn_dir / "oof_predictions", cnn)
    fileio.write_json(cnn_dir / "summary.json", {"split": split, "classes": list(classes),
                                                 "backbone": "mobilenetv2", "k": 2})
    fileio.write_table(ensemble_lib.geometry_predictions_path(geom_dir, "patient", "binary",
                                                              "gradient_boosting"), geom)
    config = ensemble_config.get_config("cpu")
    config.cnn_workdir, config.geometry_workdir = str(cnn_dir), str(geom_dir)
    config.target = "binary"
    config.eval.n_boot = 10
    return config


def test_mean_is_the_mean_and_cross_fit_uses_the_other_folds_only(tmp_path):
    cnn, geom = _tables()
    geom = pd.concat([geom, pd.DataFrame([{"patient": "P9", "slice": 3, "level": "L5-S1",
                                           "fold": 1, "y_true": None, COLS[0]: 0.5,
                                           COLS[1]: 0.5}])], ignore_index=True)
    config = _write_inputs(tmp_path, cnn, geom)
    out = tmp_path / "out"
    result = ensemble_lib.run(config, out)
    mean = geo.read_predictions(out / "predictions" / "mean")
    np.testing.assert_allclose(mean[COLS].to_numpy(),
                               (cnn[COLS].to_numpy() + geom.iloc[:8][COLS].to_numpy()) / 2)
    assert result["weights"] == {0: [1.0, 0.0], 1: [0.5, 0.5]}
    crossed = geo.read_predictions(out / "predictions" / "cross_fit")
    f1 = (crossed["fold"] == 1).to_numpy()
    np.testing.assert_allclose(crossed.loc[f1, COLS].to_numpy(), mean.loc[f1, COLS].to_numpy())
    np.testing.assert_allclose(crossed.loc[~f1, COLS].to_numpy(), cnn.loc[~f1, COLS].to_numpy())
    # the CNN is right everywhere; in fold 1 the mean is 0.55 on the right class (right too)
    acc = {m: s["pooled"]["accuracy"]["estimate"] for m, s in result["methods"].items()}
    assert acc == {"cnn:mobilenetv2": 1.0, "gradient_boosting": 0.5, "mean": 1.0,
                   "cross_fit": 1.0}
    unmatched = pd.read_csv(out / "unmatched.csv")
    assert unmatched[["patient", "only_in"]].values.tolist() == [["P9", "geometry"]]
    assert result["n_joined"] == 8 and result["n_unmatched"] == 1
    assert json.loads((out / "weights.json").read_text())["per_fold"]["0"] == [1.0, 0.0]
    assert (out / "comparison.md").is_file() and (out / "confusion_mean.png").is_file()
    config.on_unmatched = "raise"
    with pytest.raises(ValueError, match="one table only"):
        ensemble_lib.run(config, tmp_path / "out2")


def test_inputs_that_disagree_are_refused(tmp_path):
    cnn, geom = _tables()
    moved = geom.copy()
    moved.loc[0, "fold"] = 1
    with pytest.raises(ValueError, match="folds differ"):
        ensemble_lib.align(cnn, moved, B)
    relabelled = geom.copy()
    relabelled.loc[0, "y_true"] = B[1]
    with pytest.raises(ValueError, match="y_true differs"):
        ensemble_lib.align(cnn, relabelled, B)
    config = _write_inputs(tmp_path, cnn, geom, classes=labels.PFIRRMANN_CLASSES)
    with pytest.raises(ValueError, match="field 'classes'"):
        ensemble_lib.run(config, tmp_path / "out")


def test_smoke_config_runs_end_to_end(tmp_path):
    config = ensemble_config.get_config("smoke")
    config.eval.n_boot = 10
    result = ensemble_lib.run(config, tmp_path)
    assert set(result["methods"]) == {"cnn:toy", "gradient_boosting", "mean", "cross_fit"}
    # the synthetic table's unlabelled disc (3 slices) has no fake-CNN row: reported
    assert result["n_unmatched"] == 3 and result["n_joined"] == 177
    for f, w in result["weights"].items():
        assert w[0] + w[1] == pytest.approx(1.0)


def test_unmatched_rows_carry_the_cnn_skip_reason(tmp_path):
    # The CNN scored only slice 7 of P0..P3; the geometry also has slice 8 of P0 and P1
    # (dropped by the CNN's central-slice rule, listed in its skipped.csv) and slice 9 of P2
    # (not in the crops index at all); the CNN has one row (P3, slice 7, L3-L4) the geometry
    # lacks. Expected: 3 + 1 + 1 unmatched rows with those reasons; 8 joined.
    cnn, geom = _tables()
    extra = geom.iloc[[0, 2, 4]].copy()
    extra["slice"] = [8, 8, 9]
    geom = pd.concat([geom, extra], ignore_index=True)
    cnn_extra = cnn.iloc[[6]].assign(level="L3-L4")
    cnn = pd.concat([cnn, cnn_extra], ignore_index=True)
    config = _write_inputs(tmp_path, cnn, geom)
    reason = "max_slices_per_patient=3: slice 8 is 5 slices from the patient's middle slice 3"
    pd.DataFrame({"patient": ["P0", "P1", "P7"], "slice": [8, 8, 8], "level": ["L4-L5"] * 3,
                  "file": ["a.npy"] * 3, "reason": [reason] * 3}).to_csv(
            tmp_path / "cnn" / "skipped.csv", index=False)
    result = ensemble_lib.run(config, tmp_path / "out")
    assert result["n_joined"] == 8 and result["n_unmatched"] == 4
    unmatched = pd.read_csv(tmp_path / "out" / "unmatched.csv", dtype={"patient": str})
    got = dict(zip(zip(unmatched["patient"], unmatched["slice"], unmatched["only_in"]),
                   unmatched["reason_kind"]))
    assert got == {("P0", 8, "geometry"): "max_slices_per_patient=3",
                   ("P1", 8, "geometry"): "max_slices_per_patient=3",
                   ("P2", 9, "geometry"): "no crop in the CNN's crops index",
                   ("P3", 7, "cnn"): "no geometry prediction"}
    assert (unmatched.loc[unmatched["patient"] == "P0", "reason"].item()
            == "not scored by the CNN: " + reason)
    # sorted by side, then reason
    assert result["unmatched"] == ("1 only in cnn (no geometry prediction), 2 only in "
                                   "geometry (max_slices_per_patient=3), 1 only in geometry "
                                   "(no crop in the CNN's crops index)")
    assert result["unmatched"] in (tmp_path / "out" / "comparison.md").read_text()
