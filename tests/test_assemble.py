"""``spoils bundle`` (spoils_tf/serve/assemble.py): experiment outputs -> a bundle predict can use.

Tiny untrained models are written in the experiments' layouts (``<workdir>/config.json``,
``fold_0/model.keras`` + ``metrics.json``; ``folds/fold_0/model.keras``; a ``.skops`` with
its sidecar), assembled, and the bundle is loaded by ``spoils predict``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from tiny_models import tiny_geometry_classifier

from spoils_tf import labels
from spoils_tf.cli import bundle as bundle_cmd
from spoils_tf.serve import assemble, bundle

SPACING = (1.2, 1.2)  # mm, the 256x256 synthetic slice


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Paths of one model per experiment kind, in the experiments' layouts."""
    import keras

    from spoils_tf.classical import io as cio
    from spoils_tf.models.classifiers import DiscClassifier
    from spoils_tf.models.unet import UNet

    root = tmp_path_factory.mktemp("runs")
    keras.utils.set_random_seed(0)
    seg_dir = root / "seg" / "fold_0"
    seg_dir.mkdir(parents=True)
    (root / "seg" / "config.json").write_text(json.dumps(
            {"experiment": "seg_unet:smoke", "data": {"resize_mode": "letterbox"}}))
    (seg_dir / "metrics.json").write_text(
            '{"pixel_accuracy": 0.9, "dice/fg_macro": NaN, "level_accuracy": 0.5}')
    UNet(input_shape=(32, 32, 3), filters=(4, 8)).save(seg_dir / "model.keras")

    cnn_dir = root / "grade_cnn" / "folds" / "fold_0"
    cnn_dir.mkdir(parents=True)
    (root / "grade_cnn" / "config.json").write_text(json.dumps({"experiment": "grade_cnn:cpu"}))
    DiscClassifier(backbone="cnn", target="grade11", input_height=32, input_width=64,
                   input_channels=1, cnn_filters=(4, 8)).save(cnn_dir / "model.keras")

    gb, feats = tiny_geometry_classifier()
    geo = cio.save_classifier(gb, root / "grade_geometry" / "models" / "grade_class" /
                              "gradient_boosting.skops", feature_names=feats,
                              target="grade_class", classes=labels.GRADE_CLASSES,
                              extra={"model": "gradient_boosting"})
    return {"seg": seg_dir / "model.keras", "crop": cnn_dir / "model.keras", "geometry": geo,
            "features": feats}


def _no_staging_left(out: pathlib.Path) -> bool:
    return not out.exists() or not any(p.name.startswith(".") for p in out.iterdir())


@pytest.mark.slow   # SavedModel export + predict: ~30 s
def test_assembled_bundle_is_read_by_predict(runs, tmp_path, capsys):
    out = tmp_path / "models"
    assert bundle_cmd.main(["--out", str(out), "--seg", str(runs["seg"]), "--crop",
                          str(runs["crop"]), "--geometry", str(runs["geometry"])]) == 0
    printed = capsys.readouterr().out
    found = bundle.load_bundle(out)
    assert sorted(found) == sorted(bundle.MODEL_NAMES)
    assert all(m.version == 1 for m in found.values())
    for name in bundle.MODEL_NAMES:
        assert f"{name}: {out / name / '1'}" in printed
    seg = found[bundle.SEG].card
    assert seg["resize_mode"] == "letterbox"                   # from the run's config.json
    assert seg["metrics"] == {"pixel_accuracy": 0.9, "level_accuracy": 0.5}  # NaN left out
    assert seg["config"]["experiment"] == "seg_unet:smoke"
    assert (found[bundle.SEG].version_dir / "saved_model.pb").is_file()
    crop = found[bundle.CROP].card
    assert (crop["target"], crop["crop_height"], crop["crop_width"], crop["context_slices"]) == \
        ("grade_class", 32, 64, 0)
    assert crop["classes"] == list(labels.GRADE_CLASSES)
    assert crop["config"]["experiment"] == "grade_cnn:cpu"      # two folders up
    geo = found[bundle.GEOMETRY].card
    assert geo["features"] == runs["features"] and geo["model_name"] == "gradient_boosting"
    assert (found[bundle.GEOMETRY].version_dir / "model.skops").read_bytes() == \
        runs["geometry"].read_bytes()
    assert seg["bundle"]["versions"] == {n: 1 for n in bundle.MODEL_NAMES}
    assert _no_staging_left(out)

    import PIL.Image

    from spoils_tf.serve import run
    from spoils_tf.data import synthetic
    anat = synthetic.sample_patient(0, 0)
    image, mask, _, _ = synthetic.generate_slice(anat, 0, 2, 5, size=256)
    png, mask_png = tmp_path / "slice.png", tmp_path / "mask.png"
    PIL.Image.fromarray(image).save(png)
    PIL.Image.fromarray(mask.astype(np.uint8)).save(mask_png)
    rep = run.run_predict(png, out, tmp_path / "report", odi=40, nrs=6, mask_path=mask_png,
                          pixel_spacing=SPACING)
    assert rep["status"] == "ok"
    assert {d["level"] for d in rep["discs"]} == set(labels.DISC_NAMES)
    for d in rep["discs"]:                 # both assembled classifiers took part in each grade
        assert d["predicted_class"] in labels.GRADE_CLASSES
        assert d["ensemble"]["members"] == ["crop_classifier", "geometry_classifier"]
        assert d["classifiers"]["crop_classifier"]["model"] == "spoils_grade_cnn v1"


@pytest.mark.slow
def test_a_second_assembly_adds_versions_and_keeps_the_first(runs, tmp_path):
    out = tmp_path / "models"
    assemble.assemble_bundle(out, seg=runs["seg"], geometry=runs["geometry"])
    second = assemble.assemble_bundle(out, crop=runs["crop"], geometry=runs["geometry"])
    assert second == {bundle.CROP: out / bundle.CROP / "1",
                      bundle.GEOMETRY: out / bundle.GEOMETRY / "2"}
    assert bundle.versions(out / bundle.SEG) == [1]
    assert bundle.versions(out / bundle.GEOMETRY) == [1, 2]
    assert bundle.read_card(second[bundle.CROP])["bundle"]["models"] == [bundle.CROP,
                                                                         bundle.GEOMETRY]
    assert _no_staging_left(out)


def test_refusals_name_the_problem_and_publish_nothing(runs, tmp_path, capsys):
    out = tmp_path / "models"
    assert bundle_cmd.main(["--out", str(out)]) == 2
    assert "give at least one of --seg, --crop, --geometry" in capsys.readouterr().err
    # Classifiers alone cannot start a bundle: predict needs a segmentation model.
    assert bundle_cmd.main(["--out", str(out), "--crop", str(runs["crop"])]) == 2
    assert "needs a segmentation model" in capsys.readouterr().err
    assert bundle_cmd.main(["--out", str(out), "--seg", str(tmp_path / "none.keras")]) == 2
    assert "none.keras: model file not found" in capsys.readouterr().err
    assert all(bundle.versions(out / name) == [] for name in bundle.MODEL_NAMES)
    assert _no_staging_left(out)


def test_seg_without_resize_mode_or_config_is_refused(runs, tmp_path, capsys):
    lone = tmp_path / "lone" / "model.keras"
    lone.parent.mkdir()
    lone.write_bytes(runs["seg"].read_bytes())
    out = tmp_path / "models"
    assert bundle_cmd.main(["--out", str(out), "--seg", str(lone)]) == 2
    err = capsys.readouterr().err
    assert "field 'data.resize_mode' not found; give --resize-mode" in err
    assert bundle.versions(out / bundle.SEG) == [] and _no_staging_left(out)
    assert bundle_cmd.main(["--out", str(out), "--seg", str(lone), "--resize-mode", "crop"]) == 2
    assert "expected one of ['letterbox', 'resize']" in capsys.readouterr().err


def test_a_segmentation_model_given_as_crop_classifier_is_refused(runs, tmp_path, capsys):
    out = tmp_path / "models"
    assert bundle_cmd.main(["--out", str(out), "--seg", str(runs["seg"]),
                          "--crop", str(runs["seg"])]) == 2
    assert "not a DiscClassifier" in capsys.readouterr().err
    # The segmentation model staged before the refusal is not published either.
    assert bundle.versions(out / bundle.SEG) == [] and _no_staging_left(out)
