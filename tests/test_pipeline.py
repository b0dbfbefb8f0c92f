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
from spoils_tf.pipeline import common, evaluator, example_gen, pusher, runner

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
    (uri / (common.BLESSED_FILE if blessed else common.NOT_BLESSED_FILE)).touch()
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
    ok, checks, failed = evaluator.bless({"dice/fg_macro": 0.8, "level_accuracy": 0.75}, spec)
    assert ok is blessed
    assert all(c["passed"] for c in checks) is blessed
    assert len(failed) == sum(not c["passed"] for c in checks)


def test_bless_records_which_threshold_failed_and_nan_fails():
    ok, _, failed = evaluator.bless({"dice/fg_macro": 0.9, "level_accuracy": 0.5},
                                 "dice/fg_macro>=0.8, level_accuracy>=0.6")
    assert not ok and failed == ["level_accuracy >= 0.6 (got 0.5)"]
    ok, checks, _ = evaluator.bless({"dice/fg_macro": math.nan}, "dice/fg_macro>=0")
    assert not ok and checks[0]["value"] is None


@pytest.mark.parametrize("spec", ["", "dice/fg_macro>0.5", "dice/fg_macro>=x", {"dice/fg_macro": "hi"}])
def test_bad_threshold_specs_are_errors(spec):
    with pytest.raises(ValueError):
        evaluator.bless({"dice/fg_macro": 0.9}, spec)


def test_threshold_on_an_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="'dice/L9' is not an evaluation metric"):
        evaluator.bless({"dice/fg_macro": 0.9}, "dice/L9>=0.5")


# === Pusher ===
def test_pusher_refuses_an_unblessed_model(tmp_path):
    model = _model(tmp_path)
    with pytest.raises(pusher.NotBlessedError, match=r"not blessed.*dice/fg_macro >= 0.5"):
        pusher.pusher(model, _blessing(tmp_path, model, False), tmp_path / "serving", "seg")
    assert not (tmp_path / "serving").exists()


def test_pusher_refuses_a_blessing_of_another_model(tmp_path):
    model, other = _model(tmp_path), _model(tmp_path, "Trainer2")
    with pytest.raises(pusher.NotBlessedError, match="is for model"):
        pusher.pusher(model, _blessing(tmp_path, other, True), tmp_path / "serving", "seg")


def test_pusher_refuses_a_blessing_without_its_marker_file(tmp_path):
    model = _model(tmp_path)
    blessing = _blessing(tmp_path, model, True)
    (pathlib.Path(blessing.uri) / common.BLESSED_FILE).unlink()
    with pytest.raises(pusher.NotBlessedError, match="no BLESSED marker"):
        pusher.pusher(model, blessing, tmp_path / "serving", "seg")


def test_pusher_takes_the_next_version_and_never_overwrites(tmp_path):
    model = _model(tmp_path)
    blessing = _blessing(tmp_path, model, True)
    v1 = tmp_path / "serving" / "seg" / "1"
    v1.mkdir(parents=True)
    (v1 / "saved_model.pb").write_bytes(b"old model")
    pushed = pusher.pusher(model, blessing, tmp_path / "serving", "seg")
    assert pushed.version == 2 and pathlib.Path(pushed.uri) == v1.parent / "2"
    assert (v1 / "saved_model.pb").read_bytes() == b"old model"
    assert (v1.parent / "2" / "saved_model.pb").read_bytes() == b"graph"
    assert (v1.parent / "2" / "variables" / "variables.index").read_bytes() == b"weights"
    record = pusher.read_pushed(pushed.uri)
    assert record == pushed and record.fingerprint == FP and record.blessing_uri == blessing.uri
    assert pusher.pusher(model, blessing, tmp_path / "serving", "seg").version == 3
    assert sorted(p.name for p in v1.parent.iterdir()) == ["1", "2", "3"]


def test_pusher_rename_collision_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    model = _model(tmp_path)
    blessing = _blessing(tmp_path, model, True)
    v1 = tmp_path / "serving" / "seg" / "1"
    v1.mkdir(parents=True)
    (v1 / "saved_model.pb").write_bytes(b"old model")
    # A concurrent pusher took the version between our scan and our rename.
    monkeypatch.setattr(pusher, "next_version", lambda model_dir: 1)
    with pytest.raises(FileExistsError):
        pusher.pusher(model, blessing, tmp_path / "serving", "seg")
    assert sorted(p.name for p in v1.parent.iterdir()) == ["1"]    # no temporary folder left
    assert sorted(p.name for p in v1.iterdir()) == ["saved_model.pb"]
    assert (v1 / "saved_model.pb").read_bytes() == b"old model"


# === Bundle push (stand-in models: the Pusher only copies files) ===
def _classifier(tmp_path: pathlib.Path, name: str) -> art.Model:
    """A crop or geometry classifier Model artifact with stand-in files and card fields."""
    from spoils_tf import labels
    from spoils_tf.serve import bundle

    uri = tmp_path / name
    export = uri / "export"
    export.mkdir(parents=True)
    if name == bundle.CROP:
        (export / "model.keras").write_bytes(b"keras zip")
        model_file = "model.keras"
        card = {"target": "grade_class", "classes": list(labels.GRADE_CLASSES),
                "crop_height": 64, "crop_width": 128, "context_slices": 0, "margin_frac": 0.15}
    else:
        (export / "model.skops").write_bytes(b"skops")
        (export / "model.skops.json").write_text("{}")
        model_file = "model.skops"
        card = {"target": "grade_class", "classes": list(labels.GRADE_CLASSES),
                "model_name": "gradient_boosting", "features": ["disc_height_mm", "tilt_deg"]}
    model = art.Model(uri=str(uri), producer="Trainer", created=art.utc_now(), fingerprint=FP,
                      config={"target": "grade_class"}, metrics={}, parents=("ex",),
                      kind=bundle.KIND_OF[name], model_path=str(export / model_file),
                      serving_model_dir=str(export), examples_uri="ex", model_file=model_file,
                      card=card)
    art.write_artifact(model)
    return model


def _bundle(tmp_path: pathlib.Path, blessed: bool = True):
    from spoils_tf.serve import bundle

    models = {bundle.SEG: _model(tmp_path), bundle.CROP: _classifier(tmp_path, bundle.CROP),
              bundle.GEOMETRY: _classifier(tmp_path, bundle.GEOMETRY)}
    seg = models[bundle.SEG]
    uri = tmp_path / f"bundle_blessing_{blessed}"
    uri.mkdir()
    (uri / (common.BLESSED_FILE if blessed else common.NOT_BLESSED_FILE)).touch()
    b = art.ModelBlessing(uri=str(uri), producer="Evaluator", created=art.utc_now(),
                          fingerprint=FP, config={}, metrics={"grade/ensemble/accuracy": 0.5},
                          parents=(seg.uri,), blessed=blessed, checks=(),
                          failed=() if blessed else ("grade/ensemble/accuracy >= 0.6 (got 0.5)",),
                          model_uri=seg.uri, evaluation_uri="ev",
                          model_uris=tuple(m.uri for m in models.values()))
    art.write_artifact(b)
    return models, b


def test_push_bundle_twice_gives_versions_1_and_2_of_every_model_and_loads(tmp_path):
    from spoils_tf.serve import bundle

    models, blessing = _bundle(tmp_path)
    base = tmp_path / "serving"
    first = pusher.push_bundle(models, blessing, base)
    assert {n: p.version for n, p in first.items()} == {n: 1 for n in bundle.MODEL_NAMES}
    v1_card = bundle.card_path(base / bundle.CROP / "1").read_bytes()
    second = pusher.push_bundle(models, blessing, base)
    assert {n: p.version for n, p in second.items()} == {n: 2 for n in bundle.MODEL_NAMES}
    for name in bundle.MODEL_NAMES:
        assert sorted(p.name for p in (base / name).iterdir()) == ["1", "2"]  # no temp folders
    assert bundle.card_path(base / bundle.CROP / "1").read_bytes() == v1_card
    loaded = bundle.load_bundle(base)
    assert {n: m.version for n, m in loaded.items()} == {n: 2 for n in bundle.MODEL_NAMES}
    geo = loaded[bundle.GEOMETRY]
    assert geo.card["kind"] == "geometry_classifier" and geo.card["features"] == [
            "disc_height_mm", "tilt_deg"]
    assert geo.model_path.read_bytes() == b"skops"
    assert (geo.version_dir / "model.skops.json").read_text() == "{}"   # the sidecar too
    assert loaded[bundle.CROP].card["crop_width"] == 128
    assert loaded[bundle.SEG].card["resize_mode"] == "letterbox"        # the documented default
    # Each card names the versions pushed together and keeps only its own held-out metrics.
    assert geo.card["bundle"]["versions"] == {n: 2 for n in bundle.MODEL_NAMES}
    assert geo.card["metrics"] == {"grade/ensemble/accuracy": 0.5}
    assert loaded[bundle.SEG].card["metrics"] == {}
    assert pusher.read_pushed(geo.version_dir).model_uri == models[bundle.GEOMETRY].uri


def test_push_bundle_refuses_an_unblessed_bundle_and_pushes_nothing(tmp_path):
    models, blessing = _bundle(tmp_path, blessed=False)
    with pytest.raises(pusher.NotBlessedError, match="grade/ensemble/accuracy >= 0.6"):
        pusher.push_bundle(models, blessing, tmp_path / "serving")
    assert not (tmp_path / "serving").exists()


def test_push_bundle_refuses_a_classifier_the_blessing_does_not_cover(tmp_path):
    from spoils_tf.serve import bundle

    models, blessing = _bundle(tmp_path)
    models[bundle.CROP] = _classifier(tmp_path / "other_run", bundle.CROP)
    with pytest.raises(pusher.NotBlessedError, match="is for model"):
        pusher.push_bundle(models, blessing, tmp_path / "serving")
    assert not (tmp_path / "serving").exists()


def test_push_bundle_collision_on_the_last_model_takes_the_others_back(tmp_path, monkeypatch):
    from spoils_tf import fileio
    from spoils_tf.serve import bundle

    models, blessing = _bundle(tmp_path)
    base = tmp_path / "serving"
    pusher.push_bundle(models, blessing, base)                 # version 1 of each
    real = fileio.rename_no_replace

    def collide_on_geometry(src, dst):                         # a concurrent pusher wins
        if pathlib.Path(dst).parent.name == bundle.GEOMETRY:
            raise FileExistsError(f"{dst} already exists")
        real(src, dst)

    monkeypatch.setattr(fileio, "rename_no_replace", collide_on_geometry)
    with pytest.raises(FileExistsError):
        pusher.push_bundle(models, blessing, base)
    for name in bundle.MODEL_NAMES:                            # version 2 of none survives
        assert sorted(p.name for p in (base / name).iterdir()) == ["1"]


def test_push_bundle_rejects_a_model_under_the_wrong_name(tmp_path):
    from spoils_tf.serve import bundle

    models, blessing = _bundle(tmp_path)
    models[bundle.CROP], models[bundle.GEOMETRY] = models[bundle.GEOMETRY], models[bundle.CROP]
    with pytest.raises(ValueError, match="must be 'crop_classifier'"):
        pusher.push_bundle(models, blessing, tmp_path / "serving")
    with pytest.raises(ValueError, match="needs its segmentation model"):
        pusher.push_bundle({bundle.CROP: models[bundle.GEOMETRY]}, blessing, tmp_path / "s")


def test_card_metrics_keep_each_models_own_keys():
    metrics = {"dice/fg_macro": 0.7, "level_accuracy": 0.9, "grade/cnn/accuracy": 0.4,
               "grade/geometry/accuracy": 0.5, "grade/ensemble/accuracy": 0.6,
               "grade/eval_seconds": 3.0}
    assert pusher.card_metrics("segmentation", metrics) == {"dice/fg_macro": 0.7,
                                                            "level_accuracy": 0.9}
    assert pusher.card_metrics("crop_classifier", metrics) == {"grade/cnn/accuracy": 0.4,
                                                               "grade/ensemble/accuracy": 0.6}
    assert pusher.card_metrics("geometry_classifier", metrics) == {
            "grade/geometry/accuracy": 0.5, "grade/ensemble/accuracy": 0.6}


def test_grade_metric_keys_and_thresholds_on_them():
    from spoils_tf.serve import bundle

    assert evaluator.grade_metric_keys({}) == []
    keys = evaluator.grade_metric_keys({bundle.CROP: None, bundle.GEOMETRY: None})
    assert len(keys) == 3 * len(common.GRADE_METRICS)
    assert "grade/ensemble/accuracy" in keys and "grade/cnn/f1_macro" in keys
    only_geo = evaluator.grade_metric_keys({bundle.GEOMETRY: None})
    assert not any(k.startswith(("grade/ensemble/", "grade/cnn/")) for k in only_geo)
    ok, _, failed = evaluator.bless({"dice/fg_macro": 0.7, "grade/ensemble/accuracy": 0.15},
                                 "dice/fg_macro>=0.6, grade/ensemble/accuracy>=0.2")
    assert not ok and failed == ["grade/ensemble/accuracy >= 0.2 (got 0.15)"]


def test_an_artifact_recorded_before_the_bundle_fields_still_reads(tmp_path):
    model = _model(tmp_path)
    path = pathlib.Path(model.uri) / art.METADATA_FILE
    raw = json.loads(path.read_text())
    del raw["model_file"], raw["card"]                 # a record from before these fields
    path.write_text(json.dumps(raw))
    again = art.read_artifact(model.uri, art.Model)
    assert again.model_file == "." and again.card == {}
    del raw["kind"]                                    # a field without a default: still required
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="field 'kind' is missing"):
        art.read_artifact(model.uri)


# === End to end ===
def _smoke_config():
    from configs import pipeline
    c = pipeline.get_config("smoke")
    c.trainer.train.epochs = 1
    c.classifiers.cnn.train.epochs = 1
    return c


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    import tensorflow as tf

    config = _smoke_config()
    result = runner.run_pipeline(config, tmp_path)
    ex, model, ev, bl, pushed = (result[k] for k in ("examples", "model", "evaluation", "blessing",
                                                      "pushed"))
    dataset = tmp_path / "synthetic"
    fingerprint = art.data_fingerprint(dataset)
    from spoils_tf import labels
    from spoils_tf.serve import bundle
    from spoils_tf.classical import io as cio

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
    classifiers = result["classifiers"]
    assert set(classifiers) == {bundle.CROP, bundle.GEOMETRY}
    assert model.parents == (ex.uri,) and ev.parents[:2] == (model.uri, ex.uri)
    assert bl.model_uris == (model.uri, classifiers[bundle.CROP].uri,
                             classifiers[bundle.GEOMETRY].uri)
    # The classifiers were trained on the training patients only.
    _, meta = cio.load_classifier(classifiers[bundle.GEOMETRY].model_path)
    assert meta["classes"] == list(labels.GRADE_CLASSES)
    assert classifiers[bundle.GEOMETRY].metrics["train_patients"] == len(ex.train_patients)
    assert classifiers[bundle.CROP].metrics["train_patients"] <= len(ex.train_patients)
    # Evaluator: the 2 held-out slices; "dice/fg_macro>=0" blesses any defined score.
    assert ev.metrics["slices"] == 2.0
    assert bl.blessed and (pathlib.Path(bl.uri) / common.BLESSED_FILE).is_file()
    assert pushed.version == 1 and (pathlib.Path(pushed.uri) / "saved_model.pb").is_file()

    # The bundle: all three models at version 1, cards with the right kind/classes/features.
    loaded = bundle.load_bundle(tmp_path / "serving")
    assert {n: m.version for n, m in loaded.items()} == {n: 1 for n in bundle.MODEL_NAMES}
    assert {n: m.card["kind"] for n, m in loaded.items()} == bundle.KIND_OF
    for name in (bundle.CROP, bundle.GEOMETRY):
        assert loaded[name].card["classes"] == list(labels.GRADE_CLASSES)
        assert loaded[name].card["target"] == "grade_class"
        assert loaded[name].card["data_fingerprint"] == fingerprint["sha256"]
    geo_card = loaded[bundle.GEOMETRY].card
    assert geo_card["features"] == meta["feature_names"]
    assert "disc_height_mm" in geo_card["features"]
    assert "disc_volume_mm3" not in geo_card["features"]        # excluded by the config
    crop_card = loaded[bundle.CROP].card
    assert [crop_card["crop_height"], crop_card["crop_width"]] == \
        list(config.classifiers.crop_size)
    assert crop_card["margin_frac"] == config.classifiers.margin_frac
    assert crop_card["context_slices"] == 0
    assert loaded[bundle.SEG].card["metrics"]["dice/fg_macro"] == ev.metrics["dice/fg_macro"]
    assert (loaded[bundle.SEG].version_dir / loaded[bundle.SEG].card["keras_file"]).is_file()
    assert crop_card["metrics"]["grade/cnn/n"] == ev.metrics["grade/cnn/n"]

    # Classifier metrics are in the evaluation; n counts the held-out discs scored.
    import pandas as pd
    preds = pd.read_csv(pathlib.Path(ev.uri) / "grade_predictions.csv", dtype={"patient": str})
    assert set(preds["patient"]) <= set(ex.eval_patients)
    for short in ("cnn", "geometry", "ensemble"):
        assert ev.metrics[f"grade/{short}/n"] == (preds["model"] == short).sum() > 0
        assert 0.0 <= ev.metrics[f"grade/{short}/accuracy"] <= 1.0
        assert f"grade/{short}/f1_macro" in ev.metrics and f"grade/{short}/iou_macro" in ev.metrics
    # The ensemble is the mean of the two models' probabilities, disc by disc.
    prob = [f"prob/{c}" for c in labels.GRADE_CLASSES]
    by = {m: g.set_index(["patient", "slice", "level"])[prob] for m, g in preds.groupby("model")}
    keys = by["ensemble"].index
    mean = (by["cnn"].loc[keys].to_numpy() + by["geometry"].loc[keys].to_numpy()) / 2
    np.testing.assert_allclose(by["ensemble"].to_numpy(), mean, atol=1e-6)

    # The pushed SavedModel serves uint8 images at their own resolution.
    served = tf.saved_model.load(pushed.uri).signatures["serving_default"]
    out = served(images=tf.zeros([1, 40, 30, 3], tf.uint8))
    assert out["label_map"].shape == (1, 40, 30)

    # An impossible classifier threshold: not blessed, the failed threshold recorded, and the
    # Pusher refuses every model of the bundle: nothing new is pushed, no classifier either.
    _, bl2 = evaluator.evaluator(model, ex, "grade/ensemble/accuracy>=1.01", tmp_path / "Evaluator2",
                              classifiers=classifiers)
    assert not bl2.blessed and bl2.failed[0].startswith("grade/ensemble/accuracy >= 1.01 (got ")
    assert (pathlib.Path(bl2.uri) / common.NOT_BLESSED_FILE).is_file()
    with pytest.raises(pusher.NotBlessedError):
        pusher.push_bundle({bundle.SEG: model, **classifiers}, bl2, tmp_path / "serving")
    with pytest.raises(pusher.NotBlessedError):
        pusher.pusher(classifiers[bundle.CROP], bl2, tmp_path / "serving", bundle.CROP)
    assert {n: m.version for n, m in bundle.load_bundle(tmp_path / "serving").items()} == \
        {n: 1 for n in bundle.MODEL_NAMES}
    # A threshold on a classifier metric without classifiers is an unknown metric.
    with pytest.raises(ValueError, match="not an evaluation metric"):
        evaluator.evaluator(model, ex, "grade/ensemble/accuracy>=0", tmp_path / "Evaluator3")
    # Pushing the blessed bundle again makes version 2 of every model; version 1 is untouched.
    v1_bytes = (pathlib.Path(pushed.uri) / "saved_model.pb").read_bytes()
    again = pusher.push_bundle({bundle.SEG: model, **classifiers}, bl, tmp_path / "serving")
    assert {n: p.version for n, p in again.items()} == {n: 2 for n in bundle.MODEL_NAMES}
    assert (pathlib.Path(pushed.uri) / "saved_model.pb").read_bytes() == v1_bytes
    # A stage never writes over an existing artifact.
    with pytest.raises(FileExistsError):
        example_gen.example_gen(dataset, ex.uri)
    # Changing one data file changes the fingerprint a new ExampleGen records.
    png = sorted((dataset / "labelme").rglob("*.png"))[0]
    png.write_bytes(png.read_bytes() + b"\0")
    assert art.data_fingerprint(dataset)["sha256"] != fingerprint["sha256"]
    assert np.isfinite(ev.metrics["pixel_accuracy"])


def test_run_pipeline_chains_the_stages_and_times_each(tmp_path, monkeypatch):
    # Stand-in stages (no data, no training): the runner must call them in order, pass each
    # one's artifact to the next, push only when blessed and record one time per stage.
    import types

    import ml_collections

    calls = []

    def stage(name, result):
        def run(*args, **kwargs):
            calls.append(name)
            return result
        return run

    blessing = types.SimpleNamespace(uri="b", blessed=True, failed=())
    monkeypatch.setattr(runner, "example_gen", stage("ExampleGen", types.SimpleNamespace(uri="e")))
    monkeypatch.setattr(runner, "trainer", stage("Trainer", types.SimpleNamespace(uri="m")))
    monkeypatch.setattr(runner, "evaluator",
                        stage("Evaluator", (types.SimpleNamespace(uri="v"), blessing)))
    monkeypatch.setattr(runner, "pusher", stage("Pusher", types.SimpleNamespace(uri="p")))
    config = ml_collections.ConfigDict({
        "examples": {"labelme_dir": str(tmp_path / "data"), "k": 2, "seed": 0, "eval_fold": 0,
                     "tfds_config": ""},
        "trainer": {}, "evaluator": {"thresholds": "dice/fg_macro>=0"},
        "pusher": {"base_dir": "", "model_name": "seg"}})
    result = runner.run_pipeline(config, tmp_path / "work")
    assert calls == ["ExampleGen", "Trainer", "Evaluator", "Pusher"]
    assert list(result["seconds"]) == calls
    assert result["pushed"].uri == "p" and result["run_dir"].name == "run_1"
    assert json.loads((result["run_dir"] / "run_summary.json").read_text())["pushed"] == "p"
    blessing.blessed = False
    calls.clear()
    result = runner.run_pipeline(config, tmp_path / "work")
    assert calls == ["ExampleGen", "Trainer", "Evaluator"] and result["pushed"] is None
    assert result["run_dir"].name == "run_2"
