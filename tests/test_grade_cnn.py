"""Tests for spoils_tf.train.grade_cnn_lib (+ configs/grade_cnn.py and its absl entry) on a
tiny toy crops dir: 3 patients x 10 crops of 32x64 px, grade-dependent images."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import PIL.Image
import pytest

from spoils_tf import labels
from spoils_tf.data import folds as folds_lib
from spoils_tf.metrics import classification as cm
from spoils_tf.models import classifiers
from spoils_tf.train import grade_cnn_lib as lib

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from configs import grade_cnn as grade_cnn_config  # noqa: E402


def smoke_config(**overrides):
    config = grade_cnn_config.get_config("smoke")
    config.train.epochs = 8
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> pathlib.Path:
    return lib.write_toy_crops(tmp_path_factory.mktemp("toy"), n_patients=3,
                               crops_per_patient=10, height=32, width=64, seed=0)


@pytest.fixture(scope="module")
def smoke_run(toy_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    summary = lib.run(smoke_config(**{"data.crops_dir": str(toy_dir)}), workdir)
    return workdir, summary


def test_toy_crops_are_class_dependent(toy_dir):
    index = lib.read_crops_index(toy_dir)
    assert len(index) == 30 and index["patient"].nunique() == 3
    assert set(index["grade_class"]) <= set(labels.GRADE_CLASSES)
    # Band (rows 16 +- 2, central columns) intensity = 1 - 0.15 (grade - 1) plus noise of SD
    # 0.05: grade 1 -> 1.0, grade 5 -> 0.4 (x 255 in the PNG).
    x, y, rows, skipped = lib.load_crops(toy_dir, index, "pfirrmann5")
    assert x.shape == (30, 32, 64, 1) and skipped.empty
    band = x[:, 14:18, 16:48, 0].mean(axis=(1, 2))
    for grade_id in np.unique(y):
        expected = 1.0 - 0.15 * grade_id
        assert band[y == grade_id].mean() == pytest.approx(expected, abs=0.03)


def test_smoke_run_writes_everything(smoke_run):
    workdir, summary = smoke_run
    classes = labels.GRADE_CLASSES
    for name in ("config.json", "folds.json", "folds_used.json", "skipped.csv",
                 "oof_predictions.csv", "oof_predictions.parquet", "fold_metrics.csv",
                 "summary.json", "summary.md", "confusion.png"):
        assert (workdir / name).is_file(), name
    for f in range(3):
        for name in ("model.keras", "predictions.csv", "history.csv", "metrics.json"):
            assert (workdir / "folds" / f"fold_{f}" / name).is_file(), (f, name)
    assert json.loads((workdir / "config.json").read_text())["model"]["backbone"] == "cnn"
    oof = pd.read_parquet(workdir / "oof_predictions.parquet")
    # every crop predicted exactly once, out of fold
    assert len(oof) == 30
    assert not oof.duplicated(["patient", "slice", "level"]).any()
    assert list(oof.columns[:7]) == ["patient", "slice", "level", "fold", "target", "y_true",
                                     "y_pred"]
    assert list(oof.columns[7:]) == cm.prob_columns(classes) == [f"prob/{c}" for c in classes]
    np.testing.assert_allclose(oof[cm.prob_columns(classes)].sum(axis=1), 1.0, atol=1e-5)
    assert summary["n_oof"] == 30 and summary["folds"] == [0, 1, 2] and not summary["leaky"]
    acc = (oof["y_true"] == oof["y_pred"]).mean()
    assert summary["pooled"]["accuracy"]["estimate"] == pytest.approx(acc)
    fold_df = pd.read_csv(workdir / "fold_metrics.csv")
    assert summary["mean"]["accuracy"] == pytest.approx(fold_df["accuracy"].mean())
    assert summary["sd"]["accuracy"] == pytest.approx(fold_df["accuracy"].std(ddof=1))
    table = (workdir / "summary.md").read_text()
    assert "| accuracy |" in table and "86.40" in table and "97.84" in table
    assert "LEAKY" not in table


def test_no_patient_in_train_and_test(smoke_run, toy_dir):
    workdir, _ = smoke_run
    folds = folds_lib.load_folds(workdir / "folds.json")
    assert folds.k == 3
    for f in range(3):
        m = json.loads((workdir / "folds" / f"fold_{f}" / "metrics.json").read_text())
        assert not set(m["train_patients"]) & set(m["test_patients"])
        assert m["patients_in_train_and_test"] == 0
        train_p, test_p = folds.split(f)
        assert m["test_patients"] == test_p and m["train_patients"] == train_p
        pred = pd.read_csv(workdir / "folds" / f"fold_{f}" / "predictions.csv",
                           dtype={"patient": str})
        assert set(pred["patient"]) == set(test_p)


def test_training_lowers_the_loss(smoke_run):
    workdir, _ = smoke_run
    for f in range(3):
        history = pd.read_csv(workdir / "folds" / f"fold_{f}" / "history.csv")
        assert len(history) == 8
        assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_class_weights_come_from_the_training_fold(smoke_run, toy_dir):
    workdir, _ = smoke_run
    index = lib.read_crops_index(toy_dir)
    folds = folds_lib.load_folds(workdir / "folds.json")
    m = json.loads((workdir / "folds" / "fold_0" / "metrics.json").read_text())
    train_p, _ = folds.split(0)
    y_train = [labels.GRADE_CLASS_ID[c] for c in index.loc[index["patient"].isin(train_p),
                                                           "grade_class"]]
    want = classifiers.balanced_class_weights(y_train, labels.NUM_GRADE_CLASSES)
    assert m["class_weight"] == pytest.approx({labels.GRADE_CLASSES[c]: w
                                               for c, w in want.items()})
    assert m["n_train"] == len(y_train) == 20


def test_saved_model_reproduces_fold_predictions(smoke_run, toy_dir):
    workdir, _ = smoke_run
    model = keras.models.load_model(workdir / "folds" / "fold_1" / "model.keras")
    pred = pd.read_csv(workdir / "folds" / "fold_1" / "predictions.csv", dtype={"patient": str})
    index = lib.read_crops_index(toy_dir)
    rows = index.merge(pred[["patient", "slice", "level"]], on=["patient", "slice", "level"])
    x, _, rows, _ = lib.load_crops(toy_dir, rows, "grade11")
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, pred[cm.prob_columns(labels.GRADE_CLASSES)].to_numpy(),
                               atol=1e-5)


def test_slice_split_is_labelled_leaky(toy_dir, tmp_path):
    config = smoke_config(**{"data.crops_dir": str(toy_dir), "split": "slice", "fold": "0",
                             "train.epochs": 1, "model.target": "binary"})
    summary = lib.run(config, tmp_path)
    assert summary["leaky"] and summary["folds"] == [0]
    m = json.loads((tmp_path / "folds" / "fold_0" / "metrics.json").read_text())
    # 30 slices in 3 folds of 10, drawn ignoring patients: with 10 slices per patient every
    # patient has slices on both sides unless all 10 fell in fold 0 (not the case for seed 0).
    assert m["patients_in_train_and_test"] >= 1 and m["n_test"] == 10
    assert (tmp_path / "summary.md").read_text().startswith("**LEAKY SPLIT")
    oof = pd.read_csv(tmp_path / "oof_predictions.csv")
    assert list(oof.columns[7:]) == ["prob/PG1-3", "prob/PG4-5"]


def test_bad_rows_are_skipped_and_reported(toy_dir, tmp_path):
    index = lib.read_crops_index(toy_dir)
    index.loc[0, "file_png"] = "missing/nowhere.png"
    index.loc[1, "grade_class"] = np.nan
    x, y, rows, skipped = lib.load_crops(toy_dir, index, "grade11")
    assert len(x) == len(rows) == 28 and len(skipped) == 2
    assert "nowhere.png" in skipped.loc[0, "reason"]
    assert "grade_class" in skipped.loc[1, "reason"]
    # the binary target uses pfirrmann, which row 1 still has
    _, _, rows_b, skipped_b = lib.load_crops(toy_dir, index, "binary")
    assert len(rows_b) == 29 and len(skipped_b) == 1


def test_load_crop_normalisation(tmp_path):
    np.save(tmp_path / "u8.npy", np.array([[0, 255], [51, 102]], np.uint8))
    np.testing.assert_allclose(lib.load_crop(tmp_path / "u8.npy")[..., 0], [[0, 1], [0.2, 0.4]])
    np.save(tmp_path / "z.npy", np.array([[-1.0, 1.0], [0.0, 3.0]]))  # min-max -> /4 after +1
    np.testing.assert_allclose(lib.load_crop(tmp_path / "z.npy")[..., 0], [[0, 0.5], [0.25, 1]])
    np.save(tmp_path / "ctx.npy", np.zeros((4, 8, 3), np.float32))
    assert lib.load_crop(tmp_path / "ctx.npy").shape == (4, 8, 3)
    rgb = np.zeros((4, 8, 3), np.uint8)
    rgb[..., 2] = 255  # context PNG of `spoils crops --context-slices 1`: (k-1, k, k+1)
    PIL.Image.fromarray(rgb).save(tmp_path / "ctx.png")
    np.testing.assert_array_equal(lib.load_crop(tmp_path / "ctx.png")[0, 0], [0, 0, 1])
    np.save(tmp_path / "bad.npy", np.zeros((4, 8, 2), np.float32))
    with pytest.raises(ValueError, match="bad.npy"):
        lib.load_crop(tmp_path / "bad.npy")


def test_index_file_columns(tmp_path):
    np.save(tmp_path / "a.npy", np.full((4, 8), 0.5, np.float32))
    PIL.Image.fromarray(np.zeros((4, 8), np.uint8)).save(tmp_path / "a.png")
    index = pd.DataFrame({"patient": ["p", "p", "p"], "slice": [1, 2, 3],
                          "level": ["L4-L5"] * 3, "pfirrmann": [2, 4, 3],
                          "file_npy": ["a.npy", "", ""], "file_png": ["a.png", "a.png", ""]})
    index.to_csv(tmp_path / "index.csv", index=False)
    x, y, rows, skipped = lib.load_crops(tmp_path, lib.read_crops_index(tmp_path), "binary")
    assert x[:, 0, 0, 0].tolist() == [0.5, 0.0]  # the NPY wins over the PNG
    assert y.tolist() == [0, 1] and rows["slice"].tolist() == [1, 2]
    assert skipped["slice"].tolist() == [3] and "file_npy" in skipped.loc[0, "reason"]
    index.drop(columns=["file_npy", "file_png"]).to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(ValueError, match="index.csv: missing column"):
        lib.read_crops_index(tmp_path)


def test_central_slice_rows_by_hand():
    # Patient a: slices 0..10 over all levels -> middle 5. L4-L5 has slices 2, 4, 6, 7, 9:
    # distances 3, 1, 1, 2, 4 -> n=2 keeps 4 and 6 (tie at distance 1), n=3 adds 7.
    # Patient b: slices 20..23 -> middle 21.5; L4-L5 at 20, 23 (distances 1.5, 1.5: the tie
    # goes to the lower slice 20), L5-S1 at 22 only (kept: fewer rows than n).
    index = pd.DataFrame({
            "patient": ["a"] * 7 + ["b"] * 3,
            "slice": [0, 2, 4, 6, 7, 9, 10, 20, 23, 22],
            "level": ["L1-L2"] + ["L4-L5"] * 5 + ["L1-L2"] + ["L4-L5", "L4-L5", "L5-S1"],
            "file_npy": [f"f{i}.npy" for i in range(10)]})
    kept, dropped = lib.central_slice_rows(index, 1)
    assert list(zip(kept["patient"], kept["slice"])) == [("a", 0), ("a", 4), ("b", 20),
                                                         ("b", 22)]
    assert len(kept) + len(dropped) == len(index)
    assert list(dropped.columns) == list(lib.SKIPPED_COLUMNS)
    assert dropped["file"].tolist() == ["f1.npy", "f3.npy", "f4.npy", "f5.npy", "f6.npy",
                                        "f8.npy"]
    assert "max_slices_per_patient=1" in dropped.loc[0, "reason"]
    assert "3 slices from the patient's middle slice 5" in dropped.loc[0, "reason"]
    kept, _ = lib.central_slice_rows(index, 2)
    assert kept.loc[kept["level"] == "L4-L5", "slice"].tolist() == [4, 6, 20, 23]
    kept, _ = lib.central_slice_rows(index, 3)
    assert kept.loc[(kept["patient"] == "a") & (kept["level"] == "L4-L5"),
                    "slice"].tolist() == [4, 6, 7]
    kept, dropped = lib.central_slice_rows(index, 0)
    assert len(kept) == 10 and dropped.empty
    with pytest.raises(ValueError, match="max_slices_per_patient"):
        lib.central_slice_rows(index, -1)


@pytest.mark.slow  # trains (and traces) a model: 25-40 s on 2 busy cores
def test_max_slices_per_patient_rows_go_to_skipped_csv(toy_dir, tmp_path):
    # Toy patient: slices 0..9 (middle 4.5), level = DISC_NAMES[slice % 6]. With n = 1 the
    # levels with two slices keep the nearer one: {0, 6} -> 6, {1, 7} -> 7, {2, 8} -> 2,
    # {3, 9} -> 3; slices 4 and 5 are alone. Dropped per patient: 0, 1, 8, 9.
    config = smoke_config(**{"data.crops_dir": str(toy_dir), "data.max_slices_per_patient": 1,
                             "fold": "0", "train.epochs": 1})
    lib.run(config, tmp_path)
    skipped = pd.read_csv(tmp_path / "skipped.csv", dtype={"patient": str})
    assert len(skipped) == 12
    assert sorted(set(skipped["slice"])) == [0, 1, 8, 9]
    assert skipped["reason"].str.startswith("max_slices_per_patient=1").all()
    m = json.loads((tmp_path / "folds" / "fold_0" / "metrics.json").read_text())
    assert m["n_train"] + m["n_test"] == 18
    used = json.loads((tmp_path / "folds_used.json").read_text())["rows"]
    assert sorted({r["slice"] for r in used}) == [2, 3, 4, 5, 6, 7]


def test_batchnorm_momentum_reaches_nested_layers():
    model = classifiers.DiscClassifier("cnn", "binary", 16, 16, cnn_filters=(4, 4))
    bns = [l for l in model.get_layer("cnn_backbone").layers
           if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 2 and {b.momentum for b in bns} == {0.99}
    assert lib.set_batchnorm_momentum(model, 0.9) == 2
    assert {b.momentum for b in bns} == {0.9}
    # momentum 0.9 after one training-mode batch: moving mean = 0.9 * 0 + 0.1 * batch mean
    x = np.full((4, 16, 16, 1), 0.5, np.float32)
    model(x, training=True)
    conv = model.get_layer("cnn_backbone").get_layer("block1_conv")
    features = conv(np.concatenate([x, x, x], axis=-1))
    np.testing.assert_allclose(bns[0].moving_mean.numpy(),
                               0.1 * np.mean(features.numpy(), axis=(0, 1, 2)), atol=1e-6)
    with pytest.raises(ValueError, match="bn_momentum"):
        lib.set_batchnorm_momentum(model, 1.0)


@pytest.mark.slow  # trains (and traces) a model: 25-40 s on 2 busy cores
def test_reused_model_trains_like_a_new_one(toy_dir):
    # With the same seed a reused model (whose weights, dropout random state and Adam
    # moments came from another fold) must retrace nothing and follow the same loss curve
    # as a new model; without the optimizer or random-state reset the curves would differ.
    config = smoke_config(**{"model.dropout": 0.5, "train.epochs": 3})
    x, y, _, _ = lib.load_crops(toy_dir, lib.read_crops_index(toy_dir), "grade11")
    _, new_history, _ = lib.train_fold(config, x[:20], y[:20], seed=1)
    other, _, _ = lib.train_fold(config, x[10:], y[10:], seed=2)
    assert int(other.optimizer.iterations.numpy()) == 3 * 3  # 20 crops / batch 8 = 3 steps
    step = other.train_function
    reused, reused_history, _ = lib.train_fold(config, x[:20], y[:20], seed=1, model=other)
    assert reused is other and reused.train_function is step
    assert int(reused.optimizer.iterations.numpy()) == 3 * 3
    np.testing.assert_allclose(reused_history["loss"], new_history["loss"], rtol=1e-4)
    assert lib.reset_optimizer(reused.optimizer) == 1 + 2 * len(reused.trainable_weights)
    assert int(reused.optimizer.iterations.numpy()) == 0


def test_folds_to_run_and_slice_folds():
    assert lib.folds_to_run("all", 3) == [0, 1, 2]
    assert lib.folds_to_run("0,2", 3) == [0, 2]
    with pytest.raises(ValueError, match="config.fold"):
        lib.folds_to_run("3", 3)
    rows = pd.DataFrame({"patient": ["a"] * 4 + ["b"] * 3, "slice": [0, 0, 1, 2, 0, 1, 2],
                         "level": ["L4-L5", "L5-S1", "L4-L5", "L4-L5", "L4-L5", "L4-L5", "L4-L5"]})
    fold = lib.slice_level_folds(rows, 3, seed=0)
    assert fold[0] == fold[1]  # two discs of one slice stay together
    # 6 distinct slices in 3 folds -> 2 slices per fold
    slices_per_fold = [len({(p, s) for p, s, f in zip(rows["patient"], rows["slice"], fold)
                            if f == k}) for k in range(3)]
    assert slices_per_fold == [2, 2, 2]


def test_config_variants():
    paper = grade_cnn_config.get_config("paper")
    assert paper.train.epochs == 150 and paper.model.backbone == "mobilenetv2"
    assert paper.model.target == "grade11" and paper.split == "patient" and paper.data.k == 8
    cpu = grade_cnn_config.get_config("cpu")
    assert cpu.model.backbone == "mobilenetv2" and cpu.model.target == "grade11"
    assert cpu.data.max_slices_per_patient == 3 and cpu.model.bn_momentum == 0.9
    assert paper.data.max_slices_per_patient == 0 and paper.model.bn_momentum == 0.0
    assert grade_cnn_config.get_config("smoke").data.toy.enabled
    with pytest.raises(ValueError, match="unknown experiment"):
        grade_cnn_config.get_config("huge")
    with pytest.raises(ValueError, match="config.split"):
        lib.run(smoke_config(split="disc"), "/nonexistent/never_written")


@pytest.mark.slow  # a fresh interpreter importing TensorFlow: ~15-40 s on 2 shared cores
def test_experiment_entry_point(tmp_path):
    result = subprocess.run(
            [sys.executable, "-m", "experiments.grade_cnn", "--config=configs/grade_cnn.py:smoke",
             f"--workdir={tmp_path}", "--fold=2", "--config.train.epochs=1"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| accuracy |" in result.stdout
    assert (tmp_path / "toy_crops" / "index.csv").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["folds"] == [2]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["epochs"] == 1
