"""Fixed-spacing segmentation training (``configs/seg_unet.py:spider_cpu_smoke``) end to end.

The first run goes through ``python -m experiments.seg`` in a fresh interpreter, as a user
would; the later ones call ``seg_lib.run`` in-process on the same workdir (same config, the
``--fold`` flag set as ``config.fold``) to keep the file within a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import pytest

from configs import seg_unet

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/seg_unet.py:spider_cpu_smoke"

pytestmark = pytest.mark.slow


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _config(fold: str):
    c = seg_unet.get_config("spider_cpu_smoke")
    c.fold = fold
    c.train.verbose = 0
    return c


@pytest.fixture(scope="module")
def fold0(tmp_path_factory):
    """Workdir after ``experiments.seg --fold=0`` (the subprocess result is kept too)."""
    workdir = tmp_path_factory.mktemp("spacing") / "w"
    result = _run("experiments.seg", f"--config={CONFIG}", f"--workdir={workdir}", "--fold=0")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_fold0_writes_model_metrics_and_progress(fold0):
    workdir, result = fold0
    fold_dir = workdir / "fold_0"
    assert (fold_dir / "model.keras").is_file()
    assert "fold 0 (middle slices, after level labelling)" in result.stdout
    m = json.loads((fold_dir / "metrics.json").read_text())
    for key in ("middle/raw/dice/fg_macro", "middle/levels/level_accuracy",
                "all/raw/tissue/dice/fg_macro", "all/levels/disc_detection",
                "middle/raw/dice/L4-L5", "all/raw/pixel_accuracy"):
        assert key in m, key
        assert math.isnan(m[key]) or 0.0 <= m[key] <= 1.0, key
    # the smoke cohort: 4 patients x 2 slices, 2 folds, 4 steps of batch 2 at 1.5 mm
    assert m["fold"] == 0 and m["steps"] == 4 and m["train_images"] == 8
    assert m["train_patients"] == 2 and m["test_patients"] == 2
    assert m["all/raw/slices"] == 4.0 and m["train_slices"] == 4
    assert m["target_spacing_mm"] == 1.5 and math.isfinite(m["train_loss_last"])
    progress = json.loads((fold_dir / "progress.json").read_text())
    assert progress["train_seconds"] > 0 and progress["step"] == 4
    assert m["train_seconds"] == pytest.approx(progress["train_seconds"])
    assert json.loads((workdir / "config.json").read_text())["data"]["target_spacing_mm"] == 1.5


def test_second_call_reuses_the_fold_without_retraining(fold0):
    from spoils_tf.train import seg_lib
    workdir, _ = fold0
    model = workdir / "fold_0" / "model.keras"
    before = (model.stat().st_mtime_ns, (workdir / "fold_0" / "metrics.json").read_text())
    out = seg_lib.run(_config("0"), workdir)
    assert (model.stat().st_mtime_ns, (workdir / "fold_0" / "metrics.json").read_text()) == before
    assert out["folds"][0]["train_seconds"] == json.loads(before[1])["train_seconds"]
    assert list(out["folds"]) == [0] and out["summary"] is None


def test_all_folds_write_the_cv_table(fold0):
    from spoils_tf.train import seg_lib
    workdir, _ = fold0
    mtime0 = (workdir / "fold_0" / "model.keras").stat().st_mtime_ns
    c = _config("all")
    c.train.eval_every_epochs = 1                # fold 1 also writes its held-out curve
    out = seg_lib.run(c, workdir)
    assert sorted(out["folds"]) == [0, 1]
    assert (workdir / "fold_1" / "model.keras").is_file()
    curve = (workdir / "fold_1" / "curve.csv").read_text().splitlines()
    assert curve[0] == ("step,train_minutes,dice_fg_macro,tissue_dice_fg_macro,"
                        "level_accuracy,disc_detection")
    assert [int(r.split(",")[0]) for r in curve[1:]] == [2, 4]   # 2 "epochs" of 2 steps
    assert (workdir / "fold_0" / "model.keras").stat().st_mtime_ns == mtime0   # fold 0 reused
    md = (workdir / "seg_cv_table.md").read_text()
    assert "tissue Dice" in md and "level accuracy (discs)" in md and "| L4-L5 |" in md
    s = json.loads((workdir / "seg_cv_table.json").read_text())
    assert s["n_folds"] == 2 and s["steps"] == [4]
    key = "middle/raw/dice/fg_macro"
    values = [out["folds"][i][key] for i in (0, 1)]
    assert s["metrics"][key]["mean"] == pytest.approx(sum(values) / 2)
    assert s["metrics"][key]["n"] == 2
    assert (workdir / "seg_cv_per_class_dice.csv").read_text().startswith(
            "subset,variant,class,dice_mean,dice_sd,n_folds")


def test_final_trains_on_every_patient(fold0):
    from spoils_tf.train import seg_lib
    workdir, _ = fold0
    out = seg_lib.run(_config("final"), workdir)
    assert (workdir / "final" / "model.keras").is_file()
    m = json.loads((workdir / "final" / "metrics.json").read_text())
    patients = json.loads((workdir / "synthetic" / "folds.json").read_text())["folds"]
    assert m["train_patients"] == len(patients) == 4
    assert m["test_patients"] == 0 and m["train_slices"] == 8
    assert not any(k.startswith(("all/", "middle/")) for k in m)   # nothing held out
    assert out["final"]["train_patients"] == 4 and out["folds"] == {}


def test_final_with_a_letterbox_config_is_refused(tmp_path):
    from configs import seg_unet as cfg
    from spoils_tf.train import seg_lib

    class Folds:
        k, assignment = 2, {"a": 0, "b": 1}

    c = cfg.get_config("smoke")
    c.fold = "final"
    assert c.data.target_spacing_mm == 0.0
    with pytest.raises(ValueError, match="target_spacing_mm") as err:
        seg_lib.run(c, tmp_path / "w", examples=object(), folds=Folds())
    assert "--fold=final" in str(err.value)
    assert not (tmp_path / "w" / "final").exists()


def test_resume_after_a_kill_continues_the_step_count(tmp_path):
    """A run killed after its first "epoch" resumes at step 2 (BackupAndRestore) and the
    training seconds of both runs add up in progress.json."""
    import keras
    from spoils_tf.train import seg_lib, seg_spacing_lib

    class CrashAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("simulated kill at epoch 1")

    c = _config("0")
    dataset_dir, _ = seg_lib.resolve_dataset_dir(c, tmp_path)
    from spoils_tf.data import tfds_builder
    examples, _ = tfds_builder.load_dataset(dataset_dir, tmp_path / "tfds", "synthetic")
    train, test = seg_lib.ensure_folds(dataset_dir, c).split(0)
    fold_dir = tmp_path / "fold_0"
    with pytest.raises(RuntimeError, match="simulated kill"):
        seg_spacing_lib.train_fold(c, fold_dir, examples, train, test, extra_callbacks=[CrashAt()])
    first = json.loads((fold_dir / "progress.json").read_text())
    assert first["step"] == 2 and first["train_seconds"] > 0
    assert not (fold_dir / "model.keras").exists()
    m = seg_spacing_lib.train_fold(c, fold_dir, examples, train, test)
    done = json.loads((fold_dir / "progress.json").read_text())
    assert done["step"] == 4 and done["train_seconds"] > first["train_seconds"]
    assert m["train_seconds"] == pytest.approx(done["train_seconds"])
    with open(fold_dir / "history.csv") as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == [0, 1]
