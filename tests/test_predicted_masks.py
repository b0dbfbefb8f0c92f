"""Predicted-mask datasets: held-out fold models only, a complete spoils layout, and scoring
that counts missed discs."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from configs import seg_unet
from spoils_tf import fileio, labels
from spoils_tf.cli import folds as folds_cmd
from spoils_tf.cli import predicted_masks as pm_cmd
from spoils_tf.data import folds as folds_lib
from spoils_tf.cli import synth
from spoils_tf.data import layout
from spoils_tf.data.labelme_io import read_labelme
from spoils_tf.geometry.features import build_feature_table
from spoils_tf.train import predicted_masks as pm

SIZE = 32
# The model of fold k paints every bright pixel with disc FOLD_CLASS[k]: the class in a
# predicted mask tells which fold's model made it.
FOLD_CLASS = {0: labels.DISC_IDS[-1], 1: labels.DISC_IDS[-2]}


def bright_pixel_model(class_id: int) -> keras.Model:
    """``[B, 32, 32, 3]`` normalised image -> softmax whose argmax is ``class_id`` where the
    blue channel is above the ImageNet mean (raw grey > 104), background elsewhere."""
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(labels.NUM_SEG_CLASSES, 1, activation="softmax")
    outputs = conv(inputs)
    kernel = np.zeros((1, 1, 3, labels.NUM_SEG_CLASSES), np.float32)
    kernel[0, 0, 0, class_id] = 1.0
    conv.set_weights([kernel, np.zeros(labels.NUM_SEG_CLASSES, np.float32)])
    return keras.Model(inputs, outputs)


def make_seg_run(run: pathlib.Path, data: pathlib.Path, folds: folds_lib.Folds,
                 classes=FOLD_CLASS, folds_path: str = "") -> None:
    """A seg_lib-shaped run: config.json (real smoke config) and fold_<k>/{model.keras,
    metrics.json} with the fields seg_lib.run writes."""
    c = seg_unet.get_config("smoke")
    c.data.labelme_dir = str(data)
    c.data.folds_path = folds_path
    c.data.image_size = (SIZE, SIZE)
    c.data.k = folds.k
    fileio.save_config(c, run)
    for k in range(folds.k):
        train, test = folds.split(k)
        (run / f"fold_{k}").mkdir(parents=True)
        bright_pixel_model(classes[k]).save(run / f"fold_{k}" / "model.keras")
        (run / f"fold_{k}" / "metrics.json").write_text(json.dumps(
                {"fold": k, "train_patients": len(train), "test_patients": len(test),
                 "dice/fg_macro": 0.5, "level_accuracy": 0.5, "slices": 2.0}))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> pathlib.Path:
    data = tmp_path_factory.mktemp("syn") / "data"
    assert synth.main(["--patients", "4", "--slices-per-patient", "2", "--seed", "0",
                           "--size", "64", "--out", str(data), "--no-progress"]) == 0
    assert folds_cmd.main(["--data", str(data), "--k", "2"]) == 0
    return data


@pytest.fixture(scope="module")
def predicted(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    folds = folds_lib.load_folds(dataset / layout.FOLDS_JSON)
    make_seg_run(root / "seg", dataset, folds)
    rc = pm_cmd.main(["--data", str(dataset), "--seg-workdir", str(root / "seg"),
                  "--out", str(root / "out"), "--no-progress"])
    return dataset, root / "out", folds, rc


def test_layout_and_copied_tables(predicted):
    data, out, folds, rc = predicted
    assert rc == 0
    src = [p.relative_to(data) for p in layout.list_labelme_jsons(data)]
    dst = [p.relative_to(out) for p in layout.list_labelme_jsons(out)]
    assert len(src) == 8 and dst == src
    for name in (layout.PATIENTS_CSV, layout.DISCS_CSV, layout.FOLDS_JSON, layout.CLINICAL_CSV):
        assert (out / name).read_bytes() == (data / name).read_bytes()
    assert pd.read_csv(out / layout.ISSUES_CSV).columns.tolist() == list(layout.ISSUE_COLUMNS)
    assert len(pd.read_csv(out / layout.ISSUES_CSV)) == 0
    assert not list(out.parent.glob("out.partial-*"))
    for rel in dst:
        raw = json.loads((out / rel).read_text())
        assert raw["imagePath"] == rel.with_suffix(".png").name   # sibling, inside out/
        a, b = read_labelme(data / rel), read_labelme(out / rel)
        np.testing.assert_array_equal(a.image, b.image)           # same pixels
        assert (b.patient, b.slice, b.pixel_spacing_mm) == (a.patient, a.slice,
                                                            a.pixel_spacing_mm)


def test_each_patient_predicted_by_its_own_folds_model(predicted):
    data, out, folds, _ = predicted
    prov = json.loads((out / pm.PROVENANCE_JSON).read_text())
    assert prov["slices"] == {"total": 8, "written": 8, "failed": 0}
    for path in layout.list_labelme_jsons(out):
        rec = read_labelme(path)
        k = folds.fold_of(rec.patient)
        present = set(np.unique(rec.mask).tolist()) - {labels.BACKGROUND_ID}
        assert present == {FOLD_CLASS[k]}, (path.name, k, present)
        assert prov["patients"][rec.patient]["fold"] == k
        assert prov["patients"][rec.patient]["model"].endswith(f"fold_{k}/model.keras")
    for k in range(folds.k):
        assert prov["folds"][str(k)]["test_patients"] == folds.split(k)[1]


def test_feature_table_reads_the_output(predicted):
    data, out, folds, _ = predicted
    table, _, issues = build_feature_table(out, progress=False)
    # every file either gave disc rows or is listed as skipped: none lost
    assert len(set(table["file"])) + len(issues) == 8
    assert len(table) > 0
    assert set(table["level"]) <= {labels.SEG_NAMES[c] for c in FOLD_CLASS.values()}
    for _, r in table.iterrows():
        assert r["level"] == labels.SEG_NAMES[FOLD_CLASS[folds.fold_of(r["patient"])]]
        assert r["fold"] == folds.fold_of(r["patient"])


def test_disc_matches_account_for_every_ground_truth_disc(predicted):
    data, out, _, _ = predicted
    m = pd.read_csv(out / pm.DISC_MATCHES_CSV, dtype={"patient": str})
    gt = pd.read_csv(data / layout.DISCS_CSV, dtype={"patient": str})
    gt_rows = m[m["status"] != "extra"]
    assert sorted(zip(gt_rows["patient"], gt_rows["slice"], gt_rows["level"])) == \
        sorted(zip(gt["patient"], gt["slice"], gt["level"]))
    assert set(m["status"]) <= set(pm.DISC_STATUSES)


def _swap_folds(path: pathlib.Path, folds: folds_lib.Folds) -> None:
    swapped = {p: 1 - f for p, f in folds.assignment.items()}   # every patient moves fold
    folds_lib.write_folds(path, swapped, k=2, seed=0, stratified_by="none", source="test",
                          overwrite=True)


def test_refuses_folds_that_differ_from_the_run(dataset, tmp_path):
    folds = folds_lib.load_folds(dataset / layout.FOLDS_JSON)
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    # the run trained with its own copy of the original folds; the dataset's are then swapped
    shutil.copy2(dataset / layout.FOLDS_JSON, tmp_path / "run_folds.json")
    make_seg_run(tmp_path / "seg", data, folds, folds_path=str(tmp_path / "run_folds.json"))
    _swap_folds(data / layout.FOLDS_JSON, folds)
    with pytest.raises(pm.FoldModelError, match="differ"):
        pm.predict_dataset(data, tmp_path / "seg", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_folds_rewritten_after_training(dataset, tmp_path):
    folds = folds_lib.load_folds(dataset / layout.FOLDS_JSON)
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    make_seg_run(tmp_path / "seg", data, folds)
    _swap_folds(data / layout.FOLDS_JSON, folds)   # same sizes: counts alone cannot tell
    later = (tmp_path / "seg" / "fold_1" / "model.keras").stat().st_mtime + 10
    os.utime(data / layout.FOLDS_JSON, (later, later))
    with pytest.raises(pm.FoldModelError, match="modified after"):
        pm.check_fold_models(data, tmp_path / "seg")
    # the same content, only a newer time (a copy): accepted with the flag
    shutil.copy(dataset / layout.FOLDS_JSON, data / layout.FOLDS_JSON)
    os.utime(data / layout.FOLDS_JSON, (later, later))
    with pytest.raises(pm.FoldModelError, match="modified after"):
        pm.check_fold_models(data, tmp_path / "seg")
    _, models, _ = pm.check_fold_models(data, tmp_path / "seg", allow_newer_folds=True)
    assert [m.test_patients for m in models.values()] == [tuple(folds.split(k)[1])
                                                          for k in range(2)]


def test_refuses_fold_metrics_that_disagree(dataset, tmp_path):
    folds = folds_lib.load_folds(dataset / layout.FOLDS_JSON)
    make_seg_run(tmp_path / "seg", dataset, folds)
    path = tmp_path / "seg" / "fold_1" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["fold"] = 0
    path.write_text(json.dumps(metrics))
    with pytest.raises(pm.FoldModelError, match="field 'fold'"):
        pm.check_fold_models(dataset, tmp_path / "seg")
    assert pm_cmd.main(["--data", str(dataset), "--seg-workdir", str(tmp_path / "seg"),
                    "--out", str(tmp_path / "out"), "--no-progress"]) == 2


def test_bad_slice_is_listed_and_the_batch_goes_on(dataset, tmp_path):
    folds = folds_lib.load_folds(dataset / layout.FOLDS_JSON)
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = layout.list_labelme_jsons(data)[3]
    bad.write_text("{not json")
    make_seg_run(tmp_path / "seg", data, folds)
    rc = pm_cmd.main(["--data", str(data), "--seg-workdir", str(tmp_path / "seg"),
                  "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 1
    issues = pd.read_csv(tmp_path / "out" / layout.ISSUES_CSV)
    assert issues["file"].tolist() == [str(bad.relative_to(data))]
    assert "invalid JSON" in issues["reason"].iloc[0]
    assert len(layout.list_labelme_jsons(tmp_path / "out")) == 7
    # an existing output is kept unless --overwrite
    assert pm_cmd.main(["--data", str(data), "--seg-workdir", str(tmp_path / "seg"),
                    "--out", str(tmp_path / "out"), "--no-progress"]) == 2


def test_match_discs_by_hand():
    a, b, c = labels.DISC_IDS[-1], labels.DISC_IDS[-2], labels.DISC_IDS[-3]
    gt = np.zeros((4, 6), np.int32)
    pred = np.zeros((4, 6), np.int32)
    gt[0, 0:4] = a          # 4 px, predicted 2 px of a and 1 px of b -> same_level
    pred[0, 0:2] = a
    pred[0, 2] = b
    gt[1, 0:3] = b          # 3 px, predicted only as c -> other_level
    pred[1, 0:3] = c
    gt[2, 0:2] = c          # 2 px, nothing predicted there -> missed
    pred[3, 0:5] = labels.DISC_IDS[0]   # T12-L1 predicted where no disc is -> extra
    rows = {r["level"]: r for r in pm.match_discs(gt, pred)}
    ra, rb, rc = (rows[labels.SEG_NAMES[i]] for i in (a, b, c))
    assert (ra["status"], ra["gt_px"], ra["pred_px_same_level"], ra["overlap_same_level_px"]) \
        == ("same_level", 4, 2, 2)
    assert ra["dice_same_level"] == pytest.approx(2 * 2 / (4 + 2))
    assert (rb["status"], rb["best_pred_level"], rb["overlap_best_px"]) == \
        ("other_level", labels.SEG_NAMES[c], 3)
    assert (rc["status"], rc["gt_px"], rc["best_pred_level"]) == ("missed", 2, "")
    extra = rows[labels.SEG_NAMES[labels.DISC_IDS[0]]]
    assert (extra["status"], extra["pred_px_same_level"], extra["best_pred_level"]) == \
        ("extra", 5, "")


def _oof(rows):
    return pd.DataFrame(rows, columns=["patient", "slice", "level", "fold", "y_true", "y_pred"])


def test_all_disc_scores_count_a_missed_disc_as_wrong():
    classes = labels.BINARY_CLASSES
    lo, hi = classes
    gt = _oof([("p1", 1, "L4-L5", 0, lo, lo), ("p1", 1, "L5-S1", 0, hi, hi),
               ("p2", 1, "L4-L5", 1, lo, lo), ("p2", 1, "L5-S1", 1, hi, lo),
               ("p2", 2, "L5-S1", 1, None, lo)])                      # unlabelled: not scored
    pred = _oof([("p1", 1, "L4-L5", 0, lo, lo),                      # correct
                 ("p2", 1, "L4-L5", 1, lo, hi),                      # wrong
                 ("p2", 1, "L5-S1", 1, hi, hi),                      # correct
                 ("p2", 1, "L3-L4", 1, None, hi)])                   # extra, unlabelled
    s = pm.all_disc_scores(gt, pred, classes, n_boot=20)
    assert (s["n_gt_scored"], s["n_found"], s["n_missed"], s["correct_found"]) == (4, 3, 1, 2)
    assert s["n_pred_not_in_gt"] == 0
    assert s["pooled"]["accuracy"]["estimate"] == pytest.approx(2 / 4)
    # fold 0: 1 of 2 right (L5-S1 missed); fold 1: 1 of 2 right
    assert s["per_fold"][0]["accuracy"] == pytest.approx(0.5)
    assert s["mean"]["accuracy"] == pytest.approx(0.5)
    # pooled: lo TP 1, FN 1 (predicted hi), FP 0 -> F1 2/3; hi TP 1, FN 1 (missed), FP 1
    # -> F1 2/4; macro 7/12. Jaccard: lo 1/2, hi 1/3 -> 5/12.
    assert s["pooled"]["f1_macro"]["estimate"] == pytest.approx(7 / 12)
    assert s["pooled"]["iou_macro"]["estimate"] == pytest.approx(5 / 12)


def test_all_disc_scores_refuse_different_labels():
    lo, hi = labels.BINARY_CLASSES
    gt = _oof([("p1", 1, "L4-L5", 0, lo, lo)])
    pred = _oof([("p1", 1, "L4-L5", 0, hi, hi)])
    with pytest.raises(ValueError, match="different labels"):
        pm.all_disc_scores(gt, pred, labels.BINARY_CLASSES, n_boot=0)


def test_compare_runs_counts_missed_discs(tmp_path):
    from configs import grade_geometry
    from spoils_tf.train import grade_geometry_lib as ggl

    c = grade_geometry.get_config("smoke")
    c.split, c.models, c.targets = "patient", ("logreg",), ("binary",)
    c.eval.n_boot, c.save_models = 20, False
    ggl.run(c, tmp_path / "gt")
    table = pd.read_parquet(tmp_path / "gt" / "synthetic_features.parquet")
    labelled = table.index[table["pfirrmann"].notna()]
    # 7 labelled discs the "masks" lost
    table.drop(index=labelled[:7]).to_parquet(tmp_path / "pred.parquet", index=False)
    c.data.synthetic.enabled = False
    c.data.features_path = str(tmp_path / "pred.parquet")
    c.data.folds_path = str(tmp_path / "gt" / "folds.json")
    ggl.run(c, tmp_path / "pred")

    rows = pm.compare_runs(tmp_path / "gt", tmp_path / "pred", tmp_path / "cmp",
                           n_boot=20)["rows"]
    by = {r["features"]: r for r in rows}
    assert set(by) == {"GT masks", "pred, found", "pred, all discs"}
    n_gt = int(table["pfirrmann"].notna().sum())
    assert by["GT masks"]["n_scored"] == n_gt and by["GT masks"]["n_missed"] == 0
    assert by["pred, found"]["n_scored"] == n_gt - 7
    assert by["pred, all discs"]["n_scored"] == n_gt and by["pred, all discs"]["n_missed"] == 7
    oof = ggl.read_predictions(tmp_path / "pred" / "patient" / "binary" / "logreg"
                               / "oof_predictions")
    correct = int((oof["y_true"] == oof["y_pred"]).sum())
    assert by["pred, all discs"]["accuracy_pooled_estimate"] == pytest.approx(correct / n_gt)
    assert by["pred, found"]["accuracy_pooled_estimate"] == pytest.approx(correct / (n_gt - 7))
    assert (tmp_path / "cmp" / "gt_vs_pred.md").read_text().count("| logreg |") == 3


def test_spoils_predicted_masks_help_names_both_commands(capsys):
    """``spoils predicted-masks --help`` lists ``--seg-workdir`` and ``--out``;
    ``spoils predicted-masks compare --help`` lists ``--gt-workdir``; both exit 0."""
    from spoils_tf import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predicted-masks", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spoils predicted-masks") and "--seg-workdir" in out
    assert "--out" in out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predicted-masks", "compare", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spoils predicted-masks compare") and "--gt-workdir" in out
