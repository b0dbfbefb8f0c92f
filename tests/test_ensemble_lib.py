"""The ensemble experiment: CNN + geometry out-of-fold tables joined on keys, the paper's
mean, cross-fitted weights from the other folds only, unmatched rows reported."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from configs import ensemble as ensemble_config
from spoils_tf import labels
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
    geo.write_table(cnn, cnn_dir / "oof_predictions")
    geo.write_json(cnn_dir / "summary.json", {"split": split, "classes": list(classes),
                                              "backbone": "mobilenetv2", "k": 2})
    geo.write_table(geom, ensemble_lib.geometry_predictions_path(geom_dir, "patient", "binary",
                                                                 "gradient_boosting"))
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
