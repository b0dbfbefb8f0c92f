"""``spoils predict`` end to end on a tiny bundle built in a tmp dir (untrained models).

The bundle (module-scope fixture): a 2-level U-Net at 32x32 exported as a SavedModel, a plain
CNN ``DiscClassifier`` (32x64 crops) fitted for one epoch on random crops, and a
gradient-boosting pipeline (5 trees) fitted on ``grade_geometry_lib.synthetic_feature_table``
with the level index, each with its model card (``spoils_tf.serve.bundle.write_card``). Numbers
checked: levels of the ground-truth mask, probabilities summing to 1, the ensemble equal to
the mean of the two classifiers, the decision equal to ``clinical.rules.decide`` on the
predicted classes; PHI absence; exit codes 2 / 3 and no files left on errors.

The HTML page (``spoils_tf.serve.report``) is checked on hand-made report dicts: levels as rows of
the measurement table, only held-out metrics in the models table, the uncertainty caution, the
grade-code explanation, plain-language reasons, and an overlay whose labels leave the spinal
canal untouched.
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest
from tiny_models import tiny_geometry_classifier
from dicom_writer import write_mr_slice

from spoils_tf import labels
from spoils_tf.serve import bundle, overlay
from spoils_tf.cli import predict as predict_cmd
from spoils_tf.serve import predictor as pr
from spoils_tf.serve import report_data as rd
from spoils_tf.serve import run

PHI = {"PatientName": "Doe^Jane", "PatientID": "PHI-12345", "PatientBirthDate": "19491231"}
PHI_STRINGS = ("Doe^Jane", "PHI-12345", "19491231")   # searched in every byte written
PHI_WORDS = ("Doe", "Jane")       # searched in the text outputs (too short for binary PNGs)
SAGITTAL = [0, 1, 0, 0, 0, -1]    # columns -> posterior, rows -> feet: display orientation
AXIAL = [1, 0, 0, 0, 1, 0]
SPACING = (1.2, 1.2)              # mm, of the 256x256 synthetic slice (307.2 mm field of view)


# === Fixtures ===
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    import keras

    from spoils_tf.classical import io as cio
    from spoils_tf.export import serving
    from spoils_tf.models.classifiers import DiscClassifier
    from spoils_tf.models.unet import UNet

    base = tmp_path_factory.mktemp("bundle")
    keras.utils.set_random_seed(0)
    common = {"created": "2026-01-01T00:00:00Z", "data_fingerprint": "", "config": {}}
    # Segmentation: untrained 2-level U-Net.
    seg = UNet(input_shape=(32, 32, 3), filters=(4, 8))
    seg_dir = serving.export_saved_model(seg, base, bundle.SEG, version=1)
    bundle.write_card(seg_dir, {"kind": "segmentation", "model_file": ".",
                                "resize_mode": "letterbox", "metrics": {"dice/fg_macro": 0.1},
                                **common})
    # Crop classifier: plain CNN, one epoch on random crops.
    cnn = DiscClassifier(backbone="cnn", target="grade11", input_height=32, input_width=64,
                         input_channels=1, cnn_filters=(4, 8))
    cnn.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    rng = np.random.default_rng(0)
    cnn.fit(rng.random((22, 32, 64, 1), dtype=np.float32),
            np.arange(22) % labels.NUM_GRADE_CLASSES, epochs=1, batch_size=11, verbose=0)
    cnn_dir = base / bundle.CROP / "1"
    cnn_dir.mkdir(parents=True)
    cnn.save(cnn_dir / "model.keras")
    bundle.write_card(cnn_dir, {"kind": "crop_classifier", "model_file": "model.keras",
                                "target": "grade_class", "classes": list(labels.GRADE_CLASSES),
                                "crop_height": 32, "crop_width": 64, "context_slices": 0,
                                "margin_frac": 0.15, "metrics": {"accuracy": 0.2}, **common})
    # Geometry classifier: gradient boosting (5 trees) on the synthetic feature table.
    gb, feats = tiny_geometry_classifier()
    geo_dir = base / bundle.GEOMETRY / "1"
    cio.save_classifier(gb, geo_dir / "model.skops", feature_names=feats, target="grade_class",
                        classes=labels.GRADE_CLASSES)
    bundle.write_card(geo_dir, {"kind": "geometry_classifier", "model_file": "model.skops",
                                "target": "grade_class", "classes": list(labels.GRADE_CLASSES),
                                "model_name": "gradient_boosting", "features": feats,
                                "metrics": {"accuracy": 0.3}, **common})
    return base


@pytest.fixture(scope="module")
def predictor(models_dir):
    return pr.Predictor(models_dir)


def _write_dicom_series(folder: pathlib.Path, image: np.ndarray, iop, n: int = 3,
                        spacing=SPACING) -> pathlib.Path:
    """``n`` classic MR slices of ``image`` (stored x 4 as uint16) with the PHI fields set."""
    folder.mkdir(parents=True)
    for k in range(n):
        write_mr_slice(folder / f"im{k:03d}.dcm", image.astype(np.uint16) * 4, k, iop=iop,
                       phi=PHI, spacing_between=4.0, pixel_spacing=spacing, slice_thickness=4.0,
                       series_uid="1.2.826.0.1.3680043.8.498.7", series_number=3)
    return folder


def _png(path: pathlib.Path, arr: np.ndarray) -> pathlib.Path:
    import PIL.Image
    PIL.Image.fromarray(arr).save(path)
    return path


def _files_text(folder: pathlib.Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


# === Tests ===
@pytest.mark.slow   # the module bundle fixture: ~40 s to build
def test_supplied_mask_report_levels_probabilities_ensemble_and_decision(predictor, case):
    from spoils_tf.clinical import rules
    image, mask = case
    rep = predictor.predict([image], SPACING, odi=45, nrs=7, masks=[mask])
    assert rep["status"] == "ok"
    assert rep["input"]["segmentation"] == "supplied mask"
    levels_in_mask = [d for d in labels.DISC_NAMES if np.any(mask == labels.SEG_ID[d])]
    assert [d["level"] for d in rep["discs"]] == levels_in_mask
    graded = {}
    for d in rep["discs"]:
        assert d["found"], d["reasons"]
        cnn = np.array(list(d["classifiers"]["crop_classifier"]["probabilities"].values()))
        geo = np.array(list(d["classifiers"]["geometry_classifier"]["probabilities"].values()))
        ens = np.array([d["ensemble"]["probabilities"][c] for c in labels.GRADE_CLASSES])
        for p in (cnn, geo, ens):
            assert p.shape == (labels.NUM_GRADE_CLASSES,)
            assert abs(p.sum() - 1.0) < 1e-6
        np.testing.assert_allclose(ens, (cnn + geo) / 2.0, atol=1e-9)
        assert d["predicted_class"] == labels.GRADE_CLASSES[int(np.argmax(ens))]
        assert d["predicted_probability"] == pytest.approx(float(ens.max()))
        assert d["measurements"]["disc_height_mm"]["unit"] == "mm"
        assert d["measurements"]["disc_height_mm"]["value"] > 0
        for c in (d["classifiers"]["crop_classifier"], d["classifiers"]["geometry_classifier"],
                  d["ensemble"]):
            p = list(c["probabilities"].values())
            assert c["uncertain"] == (max(p) < 2.0 / len(p))
        graded[d["level"]] = d["predicted_class"]
    expected = rules.decide(graded, 45, 7, probabilities={
        d["level"]: d["predicted_probability"] for d in rep["discs"]})
    rec = rep["recommendation"]
    assert rec["recommendation"] == expected.recommendation
    assert rec["rule_id"] == expected.rule_id
    assert [tuple(x) for x in rec["driving_discs"]] == list(expected.driving_discs)
    assert set(rep["timing_ms"]) == set(pr.STAGES)
    assert rep["models"]["ensemble"]["calibrated"] is False      # no card says calibrated
    assert rep["decision_rules"]["intervention_min_probability"] == \
        rules.DEFAULT_CONFIG.intervention_min_probability
    json.dumps(rep, allow_nan=False)     # strictly valid JSON (no NaN)


@pytest.mark.slow   # the module bundle fixture: ~40 s to build
def test_without_scores_grades_only(predictor, case):
    image, mask = case
    rep = predictor.predict([image], SPACING, masks=[mask])
    assert rep["recommendation"] is None
    assert rep["recommendation_note"] == pr.NO_SCORES_NOTE
    assert all(d["predicted_class"] in labels.GRADE_CLASSES for d in rep["discs"])


@pytest.mark.slow   # the module bundle fixture: ~40 s to build
def test_absent_classifier_is_reported_and_ensemble_is_the_other(models_dir, case, tmp_path):
    import shutil
    only = tmp_path / "bundle"
    shutil.copytree(models_dir / bundle.SEG, only / bundle.SEG)
    shutil.copytree(models_dir / bundle.GEOMETRY, only / bundle.GEOMETRY)
    rep = pr.Predictor(only).predict([case[0]], SPACING, masks=[case[1]])
    assert rep["models"]["crop_classifier"]["present"] is False
    assert rep["models"]["ensemble"]["members"] == ["geometry_classifier"]
    d = rep["discs"][0]
    assert d["classifiers"]["crop_classifier"] == {"present": False}
    assert d["ensemble"]["probabilities"] == d["classifiers"]["geometry_classifier"]["probabilities"]


@pytest.mark.slow   # the module bundle fixture: ~40 s to build
def test_untrained_segmenter_gives_no_disc_and_exit_3(models_dir, case, tmp_path, capsys):
    png = _png(tmp_path / "slice.png", case[0])
    out = tmp_path / "out"
    code = predict_cmd.main(["--input", str(png), "--models", str(models_dir), "--out", str(out),
                    "--pixel-spacing", *map(str, SPACING), "--odi", "45", "--nrs", "7"])
    assert code == predict_cmd.EXIT_NO_DISC
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "no_disc"
    assert rep["recommendation"] is None
    assert all(d["predicted_class"] is None for d in rep["discs"])
    assert "no_disc" in capsys.readouterr().out
    # the CLI warms the models up on the input's size first: tracing is not in timing_ms
    assert rep["warmup_ms"] > 0
    assert rep["timing_ms_note"] == rd.TIMING_NOTE_WARM


@pytest.mark.slow   # the module bundle fixture: ~40 s to build
def test_dicom_series_end_to_end_without_phi(models_dir, case, tmp_path, capfd, caplog):
    image, mask = case
    series = _write_dicom_series(tmp_path / "series", image, SAGITTAL)
    mask_png = _png(tmp_path / "mask.png", mask.astype(np.uint8))
    out = tmp_path / "out"
    code = predict_cmd.main(["--input", str(series), "--models", str(models_dir), "--out", str(out),
                    "--mask", str(mask_png), "--odi", "30", "--nrs", "4"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(run.REPORT_FILES.values())
    rep = json.loads((out / "report.json").read_text())
    assert rep["input"]["kind"] == "dicom_series"
    assert rep["input"]["pixel_spacing_mm"] == list(SPACING)
    assert rep["input"]["segmentation"] == "supplied mask"
    assert rep["recommendation"] is not None
    blob = (_files_text(out) + captured.out.encode() + captured.err.encode()
            + caplog.text.encode())
    for s in PHI_STRINGS:
        assert s.encode() not in blob, s
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "",
                  (out / "report.html").read_text(encoding="utf-8"))
    text = (out / "report.json").read_text() + page + captured.out + captured.err + caplog.text
    for s in PHI_WORDS:
        assert s not in text, s
    assert str(series).encode() not in _files_text(out)   # the input path is not reported


def test_axial_series_exit_2_names_plane_and_writes_nothing(case, tmp_path, capsys):
    # The input is checked before any model is loaded: a models dir is not even needed.
    series = _write_dicom_series(tmp_path / "axial", case[0], AXIAL)
    out = tmp_path / "out"
    out.mkdir()
    code = predict_cmd.main(["--input", str(series), "--models", str(tmp_path / "none"), "--out",
                    str(out)])
    assert code == predict_cmd.EXIT_BAD_INPUT
    assert "axial" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_png_without_pixel_spacing_exit_2(case, tmp_path, capsys):
    png = _png(tmp_path / "slice.png", case[0])
    code = predict_cmd.main(["--input", str(png), "--models", str(tmp_path / "none"), "--out",
                    str(tmp_path / "out")])
    assert code == predict_cmd.EXIT_BAD_INPUT
    assert "pixel-spacing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("odi,nrs,field", [("120", "5", "odi"), ("abc", "5", "odi"),
                                           ("40", "11", "nrs"), ("40", None, "nrs")])
def test_bad_scores_exit_2_naming_the_field(case, tmp_path, capsys, odi, nrs, field):
    png = _png(tmp_path / "slice.png", case[0])
    argv = ["--input", str(png), "--models", str(tmp_path / "none"), "--out", str(tmp_path / "out"),
            "--pixel-spacing", "1", "1", "--odi", odi]
    if nrs is not None:
        argv += ["--nrs", nrs]
    assert predict_cmd.main(argv) == predict_cmd.EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith(f"spoils predict: {field}:")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow   # the module bundle fixture: ~40 s to build
def test_html_has_disclaimer_recommendation_and_no_url(models_dir, case, tmp_path):
    image, mask = case
    png = _png(tmp_path / "slice.png", image)
    mask_png = _png(tmp_path / "mask.png", mask.astype(np.uint8))
    rep = run.run_predict(png, models_dir, tmp_path / "out", odi=50, nrs=8, mask_path=mask_png,
                          pixel_spacing=SPACING)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert rd.DISCLAIMER in page
    import html
    assert html.escape(rep["recommendation"]["reason"]) in page
    assert "data:image/png;base64," in page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page).lower()
    for token in ("http", "<link", "<script", "url(", "@import", "href"):
        assert token not in text, token
    for c in labels.SEG_CLASSES[1:]:
        r, g, b = c.color
        assert f"rgb({r},{g},{b})" in page
    key_table = _section(page, "<h2>Measurements", "<details>")
    for d in rep["discs"]:
        assert key_table.count(f'<th scope="row">{d["level"]}</th>') == 1, d["level"]
    assert "<pre" not in page and "Recommendation:" not in page


def test_report_escapes_html(case):
    from spoils_tf.serve import report as report_mod
    rep = {"status": "ok", "disclaimer": "<script>x</script>", "discs": [],
           "input": {"note": "<b>"}, "models": {}}
    page = report_mod.render_html(rep, b"\x89PNG")
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    assert "<b>" not in page.split("</style>")[1].replace("<b>No recommendation.</b>", "")


def test_default_offsets_units_and_scores():
    assert pr.default_offsets(1) == [0]
    assert pr.default_offsets(4) == [0, -1, 1, -2]
    assert rd.unit_of("disc_height_mm") == "mm"
    assert rd.unit_of("disc_area_mm2") == "mm²"
    assert rd.unit_of("disc_volume_mm3") == "mm³"
    assert rd.unit_of("tilt_deg") == "degrees"
    assert rd.unit_of("disc_height_index") == "ratio"
    assert pr.check_scores(None, None) == (None, None)
    assert pr.check_scores("20", "3") == (20.0, 3)
    with pytest.raises(ValueError, match="^nrs: missing"):
        pr.check_scores(20, None)
    with pytest.raises(ValueError, match="^odi: "):
        pr.check_scores(100.5, 3)


def test_a_speck_of_disc_label_is_not_graded():
    import types

    def level_table(areas):
        return {d: {0: types.SimpleNamespace(values={"disc_area_mm2": a, "reason": ""})}
                for d, a in areas.items()}

    # median of (300, 320, 310, 40) = 305; a quarter of it = 76.25 > 40 only
    per_level = level_table({"L2-L3": 300.0, "L3-L4": 320.0, "L4-L5": 310.0, "L5-S1": 40.0})
    out = pr.Predictor._implausible_discs(per_level, {d: [0] for d in per_level}, 1)
    assert out == [("L5-S1", 0)]
    assert per_level["L5-S1"][0].values["reason"] == pr.IMPLAUSIBLE_AREA_REASON
    # with two discs there is no reference: nothing is dropped
    per_level = level_table({"L4-L5": 310.0, "L5-S1": 40.0})
    assert pr.Predictor._implausible_discs(per_level, {d: [0] for d in per_level}, 1) == []


# === Abstention on an unconfident grade (hand-made cases) ===
def _graded_case(grades: dict, odi=50.0, nrs=8) -> pr.PatientCase:
    """A case past the ensemble stage: level -> (class, its probability); the rest of the
    probability is spread evenly over the other 10 classes."""
    import types
    case = pr.PatientCase(slices=[np.zeros((8, 8), np.uint8)], spacing_mm=(1.0, 1.0),
                          offsets=[0], slice_spacing_mm=None, odi=odi, nrs=nrs, source=None,
                          orientation_from_header=False)
    case.status, case.levels = rd.STATUS_OK, list(grades)
    case.found = {d: [0] for d in grades}
    case.members = [types.SimpleNamespace(key="geometry_classifier")]
    for d, (cls, p) in grades.items():
        probs = np.full(labels.NUM_GRADE_CLASSES, (1.0 - p) / (labels.NUM_GRADE_CLASSES - 1))
        probs[labels.GRADE_CLASS_ID[cls]] = p
        case.ensemble[d] = probs
    return case


def test_an_unconfident_5H_grade_gives_no_surgical_recommendation():
    from spoils_tf.clinical import rules, strata
    case = _graded_case({"L4-L5": ("2L", 0.95), "L5-S1": ("5H", 0.4)})
    pr.recommend(case, rules.DEFAULT_CONFIG)
    assert case.recommendation is None
    note = case.recommendation_note
    assert "surgical consultation" in note and "L5-S1 graded 5H with probability 0.40" in note
    assert f"threshold {strata.INTERVENTION_MIN_PROBABILITY:.2f}" in note


def test_a_confident_5H_grade_gives_the_surgical_recommendation():
    from spoils_tf.clinical import rules, strata
    case = _graded_case({"L4-L5": ("2L", 0.95), "L5-S1": ("5H", 0.9)})
    pr.recommend(case, rules.DEFAULT_CONFIG)
    assert case.recommendation_note is None
    rec = case.recommendation
    assert (rec["recommendation"], rec["rule_id"]) == (strata.SURGICAL_CONSULTATION, "SURG-HIGH")
    assert rec["driving_discs"] == [["L5-S1", "5H"]]
    assert rec["grade_probabilities"] == [["L4-L5", 0.95], ["L5-S1", 0.9]]


def test_threshold_and_calibration_from_the_grader_cards(tmp_path):
    import types
    from spoils_tf.clinical import strata

    def member(card):
        entry = types.SimpleNamespace(card=card, version_dir=tmp_path, label="g v1")
        return types.SimpleNamespace(entry=entry)
    cfg, source = pr.Predictor._decision_config([member({})])
    assert cfg.intervention_min_probability == strata.INTERVENTION_MIN_PROBABILITY
    assert source.endswith("INTERVENTION_MIN_PROBABILITY")
    cfg, source = pr.Predictor._decision_config(
        [member({"intervention_min_probability": 0.7}),
         member({"intervention_min_probability": 0.8})])
    assert (cfg.intervention_min_probability, source) == (0.8, "model card of g v1")
    with pytest.raises(bundle.BundleError, match="intervention_min_probability"):
        pr.Predictor._decision_config([member({"intervention_min_probability": 60})])
    assert pr.Predictor._calibrated([member({})]) is False
    assert pr.Predictor._calibrated([member({"calibrated": True})]) is True
    assert pr.Predictor._calibrated([member({"calibrated": True})] * 2) is False
    with pytest.raises(bundle.BundleError, match="calibrated"):
        pr.Predictor._calibrated([member({"calibrated": "yes"})])


def test_page_shows_probability_calibration_and_threshold():
    from spoils_tf.clinical import rules, strata
    from spoils_tf.serve import report as report_mod
    rep = _hand_report()
    rep["discs"][0]["predicted_probability"] = 0.9
    rep["decision_rules"] = {"intervention_min_probability": 0.6, "threshold_source": "s",
                             "abstention_rule": rules.abstention_rule_text(),
                             "rule_table": rules.rule_table_lines()}
    page = report_mod.render_html(rep, b"\x89PNG")
    grades = _section(page, "<h2>Disc grades", "<h2>Measurements")
    assert "<strong>uncalibrated</strong>" in grades and "probability 0.90" in grades
    rules_part = _section(page, "<h2>Recommendation", "<h2>Segmentation")
    assert f"below {strata.INTERVENTION_MIN_PROBABILITY:.2f}" in rules_part
    assert "SURG-HIGH (paper)" in rules_part


# === The HTML page on hand-made reports ===
def _section(page: str, start: str, end: str) -> str:
    i = page.index(start)
    return page[i:page.index(end, i)]


def _measurements(values: dict) -> dict:
    """Every reported column, value None except those in ``values``."""
    return {c: {"value": values.get(c), "unit": rd.unit_of(c)} for c in rd.measurement_columns()}


def _clf(probs: list, uncertain: bool) -> dict:
    pr_ = dict(zip(labels.GRADE_CLASSES, probs))
    return {"present": True, "in_ensemble": True, "classes": list(labels.GRADE_CLASSES),
            "probabilities": pr_, "top3": rd._top(pr_), "uncertain": uncertain}


def _hand_report() -> dict:
    n = labels.NUM_GRADE_CLASSES
    uniform = [1.0 / n] * n
    peaked = [0.0] * n
    peaked[labels.GRADE_CLASS_ID["4M"]] = 0.9
    peaked[labels.GRADE_CLASS_ID["4L"]] = 0.1
    discs = []
    for level, height in (("L3-L4", 10.04), ("L4-L5", 9.96), ("L5-S1", 7.0)):
        discs.append({
            "level": level, "found": True, "found_on_slice_offsets": [0],
            "measured_on_slice_offset": 0,
            "measurements": _measurements({"disc_height_mm": height, "disc_height_index": 0.456,
                                           "disc_area_mm2": 301.6, "disc_volume_n_slices": 1.0}),
            "reasons": ["volume_slice_spacing_missing"] + (
                ["disc_specks_dropped"] if level == "L5-S1" else []),
            "classifiers": {"crop_classifier": _clf(uniform, True),
                            "geometry_classifier": _clf(peaked, False)},
            "ensemble": {"probabilities": dict(zip(labels.GRADE_CLASSES, peaked)),
                         "top3": rd._top(dict(zip(labels.GRADE_CLASSES, peaked))),
                         "uncertain": False},
            "predicted_class": "4M", "pfirrmann": 4, "severity": "moderate"})
    discs.append({"level": "L2-L3", "found": False, "found_on_slice_offsets": [],
                  "measured_on_slice_offset": 0, "measurements": _measurements({}),
                  "reasons": ["disc_fragmented", "volume_slice_spacing_missing"],
                  "classifiers": {"crop_classifier": {"present": True, "probabilities": None,
                                                      "note": "disc not found: not classified"},
                                  "geometry_classifier": {"present": False}},
                  "ensemble": None, "predicted_class": None})
    return {
        "status": "ok", "status_message": "3 disc(s) found and graded", "disclaimer": "D",
        "discs": discs,
        "input": {"image_shape_hw": [256, 256], "pixel_spacing_mm": [1.2, 1.2],
                  "slice_spacing_mm": None, "slices_used": {"count": 1, "offsets": [0]},
                  "segmentation": "supplied mask"},
        "recommendation": {"recommendation": "surgical_consultation", "rule_id": "X-1",
                           "rule_source": "project", "reason": "r", "follow_up": "f",
                           "worst_class": "4M", "tier": "surgical",
                           "driving_discs": [["L5-S1", "4M"]], "odi": 46.0, "nrs": 7,
                           "text": "Recommendation: surgical_consultation\n..."},
        "models": {
            "segmentation": {"present": True, "label": "spoils_seg v1",
                             "metrics": {"dice/fg_macro": 0.5589, "dice/L4-L5": 0.53,
                                         "train_seconds": 99.0}},
            "crop_classifier": {"present": True, "label": "spoils_grade_cnn v1",
                                "metrics": {"loss_first_epoch": 2.6187, "loss_last_epoch": 2.57,
                                            "train_seconds": 104.79,
                                            "grade/cnn/accuracy": 0.4123,
                                            "grade/ensemble/f1_macro": 0.3}},
            "geometry_classifier": {"present": True, "label": "spoils_grade_geometry v1",
                                    "metrics": {"loss_last_epoch": 1.0}},
            "ensemble": {"members": ["crop_classifier", "geometry_classifier"]},
            "precision": {"requested": "float32", "crop_classifier": "float32"}},
        "timing_ms": {s: 1.0 for s in pr.STAGES},
    }


def test_measurement_table_has_levels_as_rows_with_units_and_rounding():
    from spoils_tf.serve import report as report_mod
    rep = _hand_report()
    page = report_mod.render_html(rep, b"\x89PNG")
    key_table = _section(page, "<h2>Measurements", "<details>")
    for d in rep["discs"]:
        assert key_table.count(f'<th scope="row">{d["level"]}</th>') == 1, d["level"]
        assert f"<th>{d['level']}</th>" not in key_table      # not a column
    assert "Disc height (mm)" in key_table and "Area (mm²)" in key_table
    # 1 decimal for mm (10.04 -> 10.0, 9.96 -> 10.0), 2 for ratios, integers for areas
    assert key_table.count(">10.0</td>") == 2 and ">0.46</td>" in key_table
    assert ">302</td>" in key_table and "disc_height_mm" not in key_table
    full = _section(page, "<details>", "</details>")
    assert "All measurements" in full and "Slices in the disc volume" in full
    assert ">1</td>" in full and ">1.00</td>" not in full           # a count is an integer
    # reason codes: a plain phrase, the code only in a tooltip
    assert 'title="disc_fragmented">disc label split into pieces' in full
    assert ">disc_fragmented<" not in page
    assert "All levels: <span" in full       # the reason every disc shares, once
    assert full.count("volume_slice_spacing_missing") == 1


def test_reason_phrases_and_value_formatting():
    from spoils_tf.serve import report as report_mod
    assert report_mod.reason_phrase("vert_below_missing") == ("vertebral body below not in the "
                                                              "segmentation")
    assert "not graded" in report_mod.reason_phrase(pr.IMPLAUSIBLE_AREA_REASON)
    assert report_mod.reason_phrase("some_new_code") == "some new code"
    assert report_mod.format_value(12.345, "mm") == "12.3"
    assert report_mod.format_value(0.456, "ratio") == "0.46"
    assert report_mod.format_value(301.6, "mm²") == "302"
    assert report_mod.format_value(2.0, "slices") == "2"
    assert report_mod.format_value(None, "mm") == "n/a"
    assert report_mod.format_value(float("nan"), "mm") == "n/a"


def test_models_table_shows_held_out_metrics_only():
    from spoils_tf.serve import report as report_mod
    page = report_mod.render_html(_hand_report(), b"\x89PNG")
    models = _section(page, "<h2>Models", "<h2>Input")
    for key in ("loss_first_epoch", "loss_last_epoch", "train_seconds", "104.79", "2.6187"):
        assert key not in models, key
    assert "Accuracy: 0.41" in models
    # the ensemble's metrics (copied on every member's card) appear once, after the table
    assert "(ensemble of the classifiers)" not in models
    assert models.count("Macro F1 0.30") == 1
    assert "Dice, mean over anatomical structures: 0.56" in models
    assert "Dice per structure: L4-L5 0.53" in models
    # the geometry card has only a training log
    assert models.count("no held-out evaluation recorded") == 1
    assert report_mod.held_out_metrics({"train_seconds": 3.0, "eval_seconds": 1.0}) == []


def test_uncertain_flag_rule_and_caution():
    from spoils_tf.serve import report as report_mod
    n = labels.NUM_GRADE_CLASSES                    # 11: the limit is 2/11 = 0.1818...
    assert rd.is_uncertain([1.0 / n] * n)
    assert rd.is_uncertain([0.18] + [0.82 / (n - 1)] * (n - 1))
    assert not rd.is_uncertain([0.19] + [0.81 / (n - 1)] * (n - 1))
    assert not rd.is_uncertain([0.7, 0.2, 0.1])     # 3 classes: limit 2/3
    assert rd.is_uncertain([0.6, 0.3, 0.1])
    with pytest.raises(ValueError, match="probabilities"):
        rd.is_uncertain([])
    page = report_mod.render_html(_hand_report(), b"\x89PNG")
    grades = _section(page, "<h2>Disc grades", "<h2>Measurements")
    # the crop classifier is uniform (uncertain) on the 3 graded discs, the geometry one is not
    assert grades.count("this model is uncertain for this disc") == 3
    assert "the ensemble is uncertain" not in grades


def test_grade_explanation_and_plain_recommendation():
    from spoils_tf.serve import report as report_mod
    assert report_mod.grade_explanation("4M") == "4M = Pfirrmann grade 4, moderate severity"
    assert report_mod.grade_explanation("1L") == "1L = Pfirrmann grade 1, low severity"
    with pytest.raises(ValueError):
        report_mod.grade_explanation("6X")
    page = report_mod.render_html(_hand_report(), b"\x89PNG")
    rec = _section(page, '<div class="recommendation">', "</div>")
    assert "L5-S1: 4M = Pfirrmann grade 4, moderate severity" in rec
    assert "not covered by the SPOILS paper; project rule" in rec
    assert "project choice" not in page
    assert page.count("Recommendation") == 1        # the heading only, not repeated in the box
    assert "Surgical consultation" in rec and "<pre" not in page
    assert "Oswestry Disability Index 46 %" in rec and "NRS 7/10" in rec
    inp = _section(page, "<h2>Input", "</table>")
    assert "1 slice (the mid-sagittal one)" in inp
    assert "unknown" in inp and "null" not in inp and "{" not in inp
    grades = _section(page, "<h2>Disc grades", "<h2>Measurements")
    assert "Pfirrmann grade 4, moderate severity" in grades


def test_overlay_labels_sit_in_a_left_margin_and_leave_the_canal_alone(case):
    image, mask = case
    levels = [d for d in labels.DISC_NAMES if np.any(mask == labels.SEG_ID[d])]
    rep = {"discs": [{"level": d, "predicted_class": "3M" if k else None}
                     for k, d in enumerate(levels)]}
    out = overlay.overlay_image(image, mask, rep)
    plain = overlay.overlay(image, mask)
    h, w = mask.shape
    margin = out.shape[1] - w
    assert out.shape[0] == h and margin > 0
    right = out[:, margin:]
    canal = mask == labels.CANAL_ID
    assert canal.any()
    np.testing.assert_array_equal(right[canal], plain[canal])   # the canal is untouched
    for v in labels.VERTEBRA_IDS:                                 # so are the bodies, nearly
        body = mask == v
        if body.any():
            assert np.mean(np.any(right[body] != plain[body], axis=-1)) < 0.02
    # white text in the margin for each graded disc, grey for the ungraded one
    assert np.any(np.all(out[:, :margin] == 255, axis=-1))
    assert out[:, :margin].any(axis=-1).sum() > 50 * len(levels)
