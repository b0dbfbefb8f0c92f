"""The shipped SPIDER models (``spoils_tf/weights``): card, checksum, size, default use.

The real-data check segments one SPIDER patient of ``../shared`` (skipped without it). That
patient was in the shipped model's training data, so it checks that the shipped file is the
trained network and that the orientation check undoes a flip, not how well it generalises (the
model card's cross-validated numbers do that).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from spoils_tf import fileio, labels, weights
from spoils_tf.serve import bundle

MAX_MODEL_BYTES = 25 * 1024 * 1024


def _mid_slice(shared_spider_dir, tmp_path, patient: str):
    """The middle slice (LabelMe record) of one SPIDER patient of ``../shared``."""
    from spoils_tf.data import labelme_io, layout, spider
    out = tmp_path / "conv"
    spider.convert_spider(shared_spider_dir, out, patients=[patient], progress=False)
    paths = sorted(layout.list_labelme_jsons(out), key=lambda p: layout.parse_stem(p.stem)[1])
    return labelme_io.read_labelme(paths[len(paths) // 2])


@pytest.fixture(scope="module")
def seg_entry():
    return bundle.load_bundle(weights.DEFAULT_BUNDLE)[bundle.SEG]


def test_card_says_what_the_model_is(seg_entry):
    card = seg_entry.card
    assert card["resize_mode"] == "spacing" and card["target_spacing_mm"] == pytest.approx(0.75)
    assert card["model_file"] == "model.keras"
    text = json.dumps(card)
    for needed in ("SPIDER", "CC BY 4.0", "van der Graaf", "10.1038/s41597-024-03090-w",
                   "experiments.seg", "T2-SPACE"):
        assert needed in text, needed
    for field in ("training_data", "licence", "recipe", "command", "cross_validation",
                  "intended_use", "limits"):
        assert card.get(field), field
    assert weights.MODEL_CARD.is_file()
    md = weights.MODEL_CARD.read_text()
    assert "CC BY 4.0" in md and "van der Graaf" in md


def test_checksum_and_size(seg_entry):
    assert fileio.sha256_file(seg_entry.model_path) == seg_entry.card["sha256"]
    assert seg_entry.model_path.stat().st_size <= MAX_MODEL_BYTES


def test_orientation_network_is_shipped_with_its_checksum_and_cv(seg_entry):
    card = seg_entry.card
    path = seg_entry.orientation_path
    assert path is not None and path.is_file() and path.parent == seg_entry.version_dir
    assert fileio.sha256_file(path) == card["orientation_sha256"]
    assert path.stat().st_size <= MAX_MODEL_BYTES
    assert 0.5 < card["orientation_threshold"] < 1.0 and card["orientation_pixel_mm"] > 0
    cv = card["orientation_cross_validation"]
    assert cv["folds_done"] == list(range(8))
    assert cv["middle"]["right"] + cv["middle"]["refused"] + cv["middle"]["wrong"] == \
        cv["middle"]["cases"]
    assert "Orientation network" in weights.MODEL_CARD.read_text()


def test_geometry_grader_is_shipped_with_it():
    found = bundle.load_bundle(weights.DEFAULT_BUNDLE)
    geo = found[bundle.GEOMETRY]
    assert geo.card["target"] == "grade_class"
    assert geo.card["classes"] == list(labels.GRADE_CLASSES)


def test_segment_uses_the_shipped_model_by_default():
    from spoils_tf.serve import segmenter as inference
    seg = inference.Segmenter(orientation="as_is")
    assert seg.spacing_mode and seg.target_spacing_mm == pytest.approx(0.75)
    assert "spoils_seg" in seg.label
    out = seg(np.zeros((200, 160), np.uint8), (0.75, 0.75), "blank")
    assert out.label_map.shape == (200, 160)


def test_real_slice_and_its_upside_down_copy(shared_spider_dir, tmp_path):
    from spoils_tf.serve import segmenter as inference
    from spoils_tf.metrics import segmentation as seg_metrics
    rec = _mid_slice(shared_spider_dir, tmp_path, "22")
    seg = inference.Segmenter()
    upright = seg(rec.image, rec.pixel_spacing_mm)
    assert upright.orientation == "as_is"
    m = seg_metrics.TwoLevelMetrics()
    m.update(rec.mask.astype(np.int32), upright.label_map)
    scores = m.result()
    assert scores["tissue/dice/fg_macro"] > 0.85, scores["tissue/dice/fg_macro"]
    assert scores["disc_detection"] == 1.0
    for name, given in (("flip_ud", rec.image[::-1]), ("flip_lr", rec.image[:, ::-1]),
                        ("rot180", rec.image[::-1, ::-1])):
        flipped = seg(np.ascontiguousarray(given), rec.pixel_spacing_mm)
        assert flipped.orientation == name
        np.testing.assert_array_equal(flipped.image, rec.image)
    # a header's display orientation is trusted: same map, no orientation doubt
    from_header = seg(rec.image, rec.pixel_spacing_mm, from_header=True)
    np.testing.assert_array_equal(from_header.label_map, upright.label_map)
    assert not any("orientation disagrees" in f for f in from_header.levels.flags)


def test_predict_uses_the_bundled_orientation_network():
    from spoils_tf.serve import predictor
    pred = predictor.Predictor(weights.DEFAULT_BUNDLE)
    assert pred._segment_one._run.orientation_net is not None


def test_predict_corrects_a_mirrored_real_slice(shared_spider_dir, tmp_path):
    from spoils_tf.serve import predictor
    rec = _mid_slice(shared_spider_dir, tmp_path, "107")
    pred = predictor.Predictor(weights.DEFAULT_BUNDLE)
    upright = pred.predict([rec.image], rec.pixel_spacing_mm, odi=46, nrs=7)
    mirrored = pred.predict([np.ascontiguousarray(rec.image[:, ::-1])], rec.pixel_spacing_mm,
                            odi=46, nrs=7)
    assert any("mirrored left-right; corrected (orientation network" in n
               for n in mirrored["notes"])
    assert [d["level"] for d in mirrored["discs"]] == [d["level"] for d in upright["discs"]]


def test_predict_abstains_when_the_levels_are_uncertain(shared_spider_dir, tmp_path, monkeypatch):
    """A level flag that makes the names uncertain (forced here on a real slice) must withhold
    the recommendation, keep the grades for review and say why."""
    from spoils_tf import levels
    from spoils_tf.serve import predictor as predict
    rec = _mid_slice(shared_spider_dir, tmp_path, "22")
    pred = predict.Predictor(weights.DEFAULT_BUNDLE)
    clean = pred.predict([rec.image], rec.pixel_spacing_mm, odi=46, nrs=7)
    real_assign = levels.assign_levels

    def doubtful(*args, **kwargs):
        result = real_assign(*args, **kwargs)
        result.flags.append("possible transitional vertebra / off-by-one: forced by the test")
        return result

    monkeypatch.setattr(levels, "assign_levels", doubtful)
    report = pred.predict([rec.image], rec.pixel_spacing_mm, odi=46, nrs=7)
    assert report["recommendation"] is None
    assert "uncertain" in report["recommendation_note"] and "forced by the test" in report["recommendation_note"]
    assert [d["level"] for d in report["discs"]] == [d["level"] for d in clean["discs"]]
    assert any(d.get("predicted_class") for d in report["discs"])
    # without the forced flag the levels are not in doubt (the shipped grader may still
    # withhold an intervention, for its own stated reason)
    assert "forced by the test" not in (clean["recommendation_note"] or "")
    assert clean["recommendation"] is not None or "withheld" in clean["recommendation_note"]
