"""TFX-style pipeline: fingerprints, artifacts, blessing thresholds, the Pusher's guarantees,
and one smoke run of ExampleGen -> Trainer -> Evaluator -> Pusher on a tiny synthetic cohort."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib

import numpy as np
import pytest

from spoils_tf.pipeline import artifacts as art
from spoils_tf.pipeline import stages

FP = {"sha256": "ab" * 32, "n_files": 1, "total_bytes": 3}


# === Fingerprint ===
def test_fingerprint_of_one_file_by_hand(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    line = f"a.txt\t3\t{hashlib.sha256(b'abc').hexdigest()}\n".encode()
    assert art.data_fingerprint(tmp_path) == {"sha256": hashlib.sha256(line).hexdigest(),
                                              "n_files": 1, "total_bytes": 3}


def test_fingerprint_changes_with_any_data_file_but_not_hidden_ones(tmp_path):
    data = tmp_path / "data"
    (data / "labelme" / "P1").mkdir(parents=True)
    (data / "labelme" / "P1" / "P1_slice0.json").write_text('{"shapes": []}')
    (data / "patients.csv").write_text("patient\nP1\n")
    base = art.data_fingerprint(data)["sha256"]
    (data / ".P1.tmp").write_text("partial write")           # hidden: ignored
    assert art.data_fingerprint(data)["sha256"] == base
    (data / "patients.csv").write_text("patient\nP2\n")       # same size, other content
    changed = art.data_fingerprint(data)["sha256"]
    assert changed != base
    (data / "patients.csv").rename(data / "patients2.csv")    # same content, other name
    assert art.data_fingerprint(data)["sha256"] not in (base, changed)


# === Artifacts ===
def _model(tmp_path: pathlib.Path, name="Trainer") -> art.Model:
    """A Model artifact with a stand-in SavedModel (the Pusher only copies files)."""
    uri = tmp_path / name
    serving = uri / "serving_model" / "1"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"graph")
    (serving / "variables" / "variables.index").write_bytes(b"weights")
    model = art.Model(uri=str(uri), producer="Trainer", created=art.utc_now(), fingerprint=FP,
                      config={"model": {"name": "unet"}}, metrics={}, parents=("ex",),
                      kind="segmentation", model_path=str(uri / "model.keras"),
                      serving_model_dir=str(serving), examples_uri="ex")
    art.write_artifact(model)
    return model


def _blessing(tmp_path: pathlib.Path, model: art.Model, blessed: bool) -> art.ModelBlessing:
    uri = tmp_path / f"blessing_{blessed}_{pathlib.Path(model.uri).name}"
    uri.mkdir()
    (uri / (stages.BLESSED_FILE if blessed else stages.NOT_BLESSED_FILE)).touch()
    b = art.ModelBlessing(uri=str(uri), producer="Evaluator", created=art.utc_now(),
                          fingerprint=FP, config={}, metrics={"dice/fg_macro": 0.4},
                          parents=(model.uri,), blessed=blessed, checks=(),
                          failed=() if blessed else ("dice/fg_macro >= 0.5 (got 0.4)",),
                          model_uri=model.uri, evaluation_uri="ev")
    art.write_artifact(b)
    return b


def test_artifact_round_trip_and_immutability(tmp_path):
    model = _model(tmp_path)
    again = art.read_artifact(model.uri)
    assert again == model and isinstance(again, art.Model)
    with pytest.raises(FileExistsError):
        art.write_artifact(model)
    with pytest.raises(ValueError, match="expected 'Examples'"):
        art.read_artifact(model.uri, art.Examples)
    with pytest.raises(FileNotFoundError):
        art.read_artifact(tmp_path / "nothing")


# === Blessing ===
@pytest.mark.parametrize("spec, blessed", [
        ("dice/fg_macro>=0.8", True),               # equal to the threshold: met
        ("dice/fg_macro >= 0.8000001", False),
        ("dice/fg_macro>=0.5, level_accuracy>=0.75", True),
        ("dice/fg_macro>=0.5, level_accuracy>=0.76", False),
        ("level_accuracy<=0.75", True),
        ({"dice/fg_macro": 0.8}, True),
        ({"dice/fg_macro": 0.81}, False),
])
def test_bless_at_threshold_edges(spec, blessed):
    ok, checks, failed = stages.bless({"dice/fg_macro": 0.8, "level_accuracy": 0.75}, spec)
    assert ok is blessed
    assert all(c["passed"] for c in checks) is blessed
    assert len(failed) == sum(not c["passed"] for c in checks)


def test_bless_records_which_threshold_failed_and_nan_fails():
    ok, _, failed = stages.bless({"dice/fg_macro": 0.9, "level_accuracy": 0.5},
                                 "dice/fg_macro>=0.8, level_accuracy>=0.6")
    assert not ok and failed == ["level_accuracy >= 0.6 (got 0.5)"]
    ok, checks, _ = stages.bless({"dice/fg_macro": math.nan}, "dice/fg_macro>=0")
    assert not ok and checks[0]["value"] is None


@pytest.mark.parametrize("spec", ["", "dice/fg_macro>0.5", "dice/fg_macro>=x", {"dice/fg_macro": "hi"}])
def test_bad_threshold_specs_are_errors(spec):
    with pytest.raises(ValueError):
        stages.bless({"dice/fg_macro": 0.9}, spec)


def test_threshold_on_an_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="'dice/L9' is not an evaluation metric"):
        stages.bless({"dice/fg_macro": 0.9}, "dice/L9>=0.5")


# === Pusher ===
def test_pusher_refuses_an_unblessed_model(tmp_path):
    model = _model(tmp_path)
    with pytest.raises(stages.NotBlessedError, match=r"not blessed.*dice/fg_macro >= 0.5"):
        stages.pusher(model, _blessing(tmp_path, model, False), tmp_path / "serving", "seg")
    assert not (tmp_path / "serving").exists()


def test_pusher_refuses_a_blessing_of_another_model(tmp_path):
    model, other = _model(tmp_path), _model(tmp_path, "Trainer2")
    with pytest.raises(stages.NotBlessedError, match="is for model"):
        stages.pusher(model, _blessing(tmp_path, other, True), tmp_path / "serving", "seg")


def test_pusher_refuses_a_blessing_without_its_marker_file(tmp_path):
    model = _model(tmp_path)
    blessing = _blessing(tmp_path, model, True)
    (pathlib.Path(blessing.uri) / stages.BLESSED_FILE).unlink()
    with pytest.raises(stages.NotBlessedError, match="no BLESSED marker"):
        stages.pusher(model, blessing, tmp_path / "serving", "seg")


def test_pusher_takes_the_next_version_and_never_overwrites(tmp_path):
    model = _model(tmp_path)
    blessing = _blessing(tmp_path, model, True)
    v1 = tmp_path / "serving" / "seg" / "1"
    v1.mkdir(parents=True)
    (v1 / "saved_model.pb").write_bytes(b"old model")
    pushed = stages.pusher(model, blessing, tmp_path / "serving", "seg")
    assert pushed.version == 2 and pathlib.Path(pushed.uri) == v1.parent / "2"
    assert (v1 / "saved_model.pb").read_bytes() == b"old model"
    assert (v1.parent / "2" / "saved_model.pb").read_bytes() == b"graph"
    assert (v1.parent / "2" / "variables" / "variables.index").read_bytes() == b"weights"
    record = stages.read_pushed(pushed.uri)
    assert record == pushed and record.fingerprint == FP and record.blessing_uri == blessing.uri
    assert stages.pusher(model, blessing, tmp_path / "serving", "seg").version == 3
    assert sorted(p.name for p in v1.parent.iterdir()) == ["1", "2", "3"]


def test_pusher_rename_collision_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    model = _model(tmp_path)
    blessing = _blessing(tmp_path, model, True)
    v1 = tmp_path / "serving" / "seg" / "1"
    v1.mkdir(parents=True)
    (v1 / "saved_model.pb").write_bytes(b"old model")
    # A concurrent pusher took the version between our scan and our rename.
    monkeypatch.setattr(stages, "next_version", lambda model_dir: 1)
    with pytest.raises(FileExistsError):
        stages.pusher(model, blessing, tmp_path / "serving", "seg")
    assert sorted(p.name for p in v1.parent.iterdir()) == ["1"]    # no temporary folder left
    assert sorted(p.name for p in v1.iterdir()) == ["saved_model.pb"]
    assert (v1 / "saved_model.pb").read_bytes() == b"old model"


@pytest.mark.parametrize("use_renameat2", [True, False])
def test_rename_no_replace_refuses_even_an_empty_target(tmp_path, monkeypatch, use_renameat2):
    if not use_renameat2:                # the portable fallback (check, then os.rename)
        monkeypatch.setattr(stages, "_renameat2", lambda: None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_text("x")
    dst.mkdir()                         # plain os.rename would silently replace this one
    with pytest.raises(FileExistsError):
        stages.rename_no_replace(src, dst)
    assert (src / "f").is_file() and list(dst.iterdir()) == []
    stages.rename_no_replace(src, tmp_path / "new")
    assert (tmp_path / "new" / "f").read_text() == "x" and not src.exists()


# === End to end ===
def _smoke_config():
    from configs import pipeline
    c = pipeline.get_config("smoke")
    c.trainer.train.epochs = 1
    return c


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    import tensorflow as tf

    config = _smoke_config()
    result = stages.run_pipeline(config, tmp_path)
    ex, model, ev, bl, pushed = (result[k] for k in ("examples", "model", "evaluation", "blessing",
                                                      "pushed"))
    dataset = tmp_path / "synthetic"
    fingerprint = art.data_fingerprint(dataset)
    # ExampleGen: 4 patients x 1 slice, 2 folds of 2 patients, the dataset's fingerprint.
    assert ex.metrics["patients"] == 4 and ex.metrics["slices"] == 4 and ex.bad_files == ()
    assert ex.metrics["slices_without_pixel_spacing"] == 0 and ex.metrics["issues"] == []
    assert len(ex.eval_patients) == 2 and set(ex.eval_patients).isdisjoint(ex.train_patients)
    for a in (ex, model, ev, bl, pushed):
        on_disk = json.loads((pathlib.Path(a.uri) / ("assets.extra" if a is pushed else "")
                              / "metadata.json").read_text())
        assert on_disk["fingerprint"] == fingerprint and on_disk["type"] == a.TYPE
        assert on_disk["config"]
    assert model.config["model"]["name"] == "unet" and model.config["fold"] == str(ex.eval_fold)
    assert model.parents == (ex.uri,) and ev.parents == (model.uri, ex.uri)
    # Evaluator: the 2 held-out slices; "dice/fg_macro>=0" blesses any defined score.
    assert ev.metrics["slices"] == 2.0
    assert bl.blessed and (pathlib.Path(bl.uri) / stages.BLESSED_FILE).is_file()
    assert pushed.version == 1 and (pathlib.Path(pushed.uri) / "saved_model.pb").is_file()

    # The pushed SavedModel serves uint8 images at their own resolution.
    served = tf.saved_model.load(pushed.uri).signatures["serving_default"]
    out = served(images=tf.zeros([1, 40, 30, 3], tf.uint8))
    assert out["label_map"].shape == (1, 40, 30)

    # An impossible threshold: not blessed, the failed threshold recorded, the Pusher refuses.
    _, bl2 = stages.evaluator(model, ex, "dice/fg_macro>=1.01", tmp_path / "Evaluator2")
    assert not bl2.blessed and bl2.failed[0].startswith("dice/fg_macro >= 1.01 (got ")
    assert (pathlib.Path(bl2.uri) / stages.NOT_BLESSED_FILE).is_file()
    with pytest.raises(stages.NotBlessedError):
        stages.pusher(model, bl2, tmp_path / "serving", "spoils_seg")
    # Pushing the blessed model again makes version 2; version 1 is untouched.
    v1_bytes = (pathlib.Path(pushed.uri) / "saved_model.pb").read_bytes()
    again = stages.pusher(model, bl, tmp_path / "serving", "spoils_seg")
    assert again.version == 2
    assert (pathlib.Path(pushed.uri) / "saved_model.pb").read_bytes() == v1_bytes
    # A stage never writes over an existing artifact.
    with pytest.raises(FileExistsError):
        stages.example_gen(dataset, ex.uri)
    # Changing one data file changes the fingerprint a new ExampleGen records.
    png = sorted((dataset / "labelme").rglob("*.png"))[0]
    png.write_bytes(png.read_bytes() + b"\0")
    assert art.data_fingerprint(dataset)["sha256"] != fingerprint["sha256"]
    assert np.isfinite(ev.metrics["pixel_accuracy"])
