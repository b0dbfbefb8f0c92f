"""The model bundle layout (spoils_tf/serve/bundle.py): cards, latest version, clear errors."""

from __future__ import annotations

import json

import pytest

from spoils_tf.serve import bundle


def _seg_card():
    return {"kind": "segmentation", "model_file": ".", "resize_mode": "letterbox"}


def _geom_card():
    return {"kind": "geometry_classifier", "model_file": "model.skops", "target": "pfirrmann",
            "classes": ["1", "2", "3"], "model_name": "gradient_boosting", "features": ["a"]}


def _make(base, name, version, card, model_file=None):
    d = base / name / str(version)
    d.mkdir(parents=True)
    if model_file:
        (d / model_file).write_text("x")
    bundle.write_card(d, card)
    return d


def test_latest_version_is_used_and_hidden_dirs_ignored(tmp_path):
    _make(tmp_path, bundle.SEG, 1, _seg_card())
    _make(tmp_path, bundle.SEG, 10, _seg_card())
    _make(tmp_path, bundle.SEG, 2, _seg_card())
    (tmp_path / bundle.SEG / ".tmp-push-11-abc").mkdir()
    found = bundle.load_bundle(tmp_path)
    assert list(found) == [bundle.SEG]
    assert found[bundle.SEG].version == 10
    assert found[bundle.SEG].label == "spoils_seg v10"
    assert found[bundle.SEG].model_path == (tmp_path / bundle.SEG / "10").resolve()


def test_optional_classifier_is_loaded_with_its_card(tmp_path):
    _make(tmp_path, bundle.SEG, 1, _seg_card())
    _make(tmp_path, bundle.GEOMETRY, 3, _geom_card(), model_file="model.skops")
    found = bundle.load_bundle(tmp_path)
    assert found[bundle.GEOMETRY].card["features"] == ["a"]
    assert found[bundle.GEOMETRY].card["format"] == bundle.CARD_FORMAT
    assert found[bundle.GEOMETRY].model_path.name == "model.skops"


def test_missing_segmentation_model_is_an_error(tmp_path):
    _make(tmp_path, bundle.GEOMETRY, 1, _geom_card(), model_file="model.skops")
    with pytest.raises(bundle.BundleError, match="no segmentation model"):
        bundle.load_bundle(tmp_path)
    with pytest.raises(FileNotFoundError, match="models directory not found"):
        bundle.load_bundle(tmp_path / "nope")


def test_card_errors_name_file_and_field(tmp_path):
    d = _make(tmp_path, bundle.SEG, 1, _seg_card())
    path = bundle.card_path(d)
    card = json.loads(path.read_text())
    del card["resize_mode"]
    path.write_text(json.dumps(card))
    with pytest.raises(bundle.BundleError, match=r"spoils_card\.json: field 'resize_mode'"):
        bundle.load_bundle(tmp_path)
    path.write_text("{not json")
    with pytest.raises(bundle.BundleError, match="not valid JSON"):
        bundle.load_bundle(tmp_path)
    path.unlink()
    with pytest.raises(bundle.BundleError, match="model card not found"):
        bundle.load_bundle(tmp_path)


def test_wrong_kind_and_missing_model_file(tmp_path):
    _make(tmp_path, bundle.SEG, 1, _geom_card(), model_file="model.skops")
    with pytest.raises(bundle.BundleError, match="must be 'segmentation'"):
        bundle.load_bundle(tmp_path)
    other = tmp_path / "b"
    _make(other, bundle.SEG, 1, _seg_card())
    _make(other, bundle.GEOMETRY, 1, _geom_card())       # card but no model.skops
    with pytest.raises(bundle.BundleError, match="'model_file' names"):
        bundle.load_bundle(other)


def test_write_card_refuses_incomplete_cards(tmp_path):
    with pytest.raises(bundle.BundleError, match="'classes'"):
        bundle.write_card(tmp_path, {"kind": "crop_classifier", "model_file": "m.keras",
                                     "target": "grade_class", "classes": ["1L"],
                                     "crop_height": 64, "crop_width": 128,
                                     "context_slices": 0, "margin_frac": 0.15})
    assert not bundle.card_path(tmp_path).exists()
