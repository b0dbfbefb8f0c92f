"""``spoils segment`` with a fixed-spacing model: batch mode, bundles with checksums, export."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from spoils_tf import fileio, labels
from spoils_tf.cli import segment as segment_cmd
from spoils_tf.serve import bundle, inputs, segmenter
from spoils_tf.data import spacing_pipeline
from spoils_tf.export import serving
from spoils_tf.models.unet import UNet

H, W = 96, 80


@pytest.fixture(scope="module")
def model():
    import keras
    keras.utils.set_random_seed(0)
    return UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu")


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "seg.keras"
    model.save(path)
    return path


def _slice(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(H, W)).astype(np.uint8)


def _folder(tmp_path, n_good=3, junk=True):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n_good):
        PIL.Image.fromarray(_slice(i)).save(folder / f"s{i}.png")
    if junk:
        (folder / "bad.png").write_bytes(b"this is not a PNG file\n")
    return folder


def _args(inputs, model, out, *extra):
    return [*map(str, inputs), "--model", str(model), "--orientation", "as_is",
            "--out", str(out), *extra]


def _mask(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path))


def test_folder_batch_writes_good_items_and_reports_the_bad_one(model_path, tmp_path, capsys):
    folder, out = _folder(tmp_path), tmp_path / "out"
    rc = segment_cmd.main(_args([folder], model_path, out, "--target-spacing-mm", "1.0",
                                      "--pixel-spacing", "1.0", "1.0"))
    captured = capsys.readouterr()
    assert rc == 1
    for i in range(3):
        mask = _mask(out / f"s{i}_mask.png")
        assert mask.shape == (H, W) and mask.dtype == np.uint8
        assert mask.max() < labels.NUM_SEG_CLASSES
        areas = json.loads((out / f"s{i}_areas.json").read_text())
        assert areas["pixel_spacing_mm"] == [1.0, 1.0]
        assert areas["orientation"]["undone"] == "as_is"
        assert sum(a["pixels"] for a in areas["classes"].values()) == H * W
    assert not list(out.glob("bad_*"))
    assert "bad.png" in captured.err
    assert "3 of 4 segmented" in captured.out and "1 failed" in captured.out


def test_all_good_items_exit_0(model_path, tmp_path):
    folder, out = _folder(tmp_path, n_good=2, junk=False), tmp_path / "out"
    rc = segment_cmd.main(_args([folder / "s0.png"], model_path, out, "--image",
                                      str(folder / "s1.png"), "--target-spacing-mm", "1.0",
                                      "--pixel-spacing", "0.8", "0.8"))
    assert rc == 0
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["s0_mask.png", "s1_mask.png"]
    areas = json.loads((out / "s0_areas.json").read_text())
    px = areas["classes"]["background"]["pixels"]
    assert areas["classes"]["background"]["area_mm2"] == pytest.approx(px * 0.64)


def test_png_without_pixel_spacing_is_refused_by_a_fixed_spacing_model(model_path, tmp_path,
                                                                        capsys):
    folder, out = _folder(tmp_path, n_good=1, junk=False), tmp_path / "out"
    rc = segment_cmd.main(_args([folder / "s0.png"], model_path, out,
                                      "--target-spacing-mm", "1.0"))
    assert rc == 1
    err = capsys.readouterr().err
    assert "pixel spacing" in err and "s0.png" in err
    assert not out.exists() or not list(out.iterdir())


def test_expand_inputs_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        inputs.expand_inputs([empty])
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for d in (a, b):
        PIL.Image.fromarray(_slice(0)).save(d / "same.png")
    with pytest.raises(ValueError, match="same_mask.png"):
        inputs.expand_inputs([a, b / "same.png"])
    PIL.Image.fromarray(_slice(1)).save(a / "other.png")
    assert [p.name for p in inputs.expand_inputs([a])] == ["other.png", "same.png"]
    with pytest.raises(FileNotFoundError, match="missing"):
        inputs.expand_inputs([tmp_path / "missing.png"])


def _bundle(tmp_path, model_path, sha256=None):
    import shutil
    version_dir = tmp_path / "bundle" / bundle.SEG / "1"
    version_dir.mkdir(parents=True)
    shutil.copy(model_path, version_dir / "model.keras")
    bundle.write_card(version_dir, {
            "kind": "segmentation", "model_file": "model.keras", "resize_mode": "spacing",
            "target_spacing_mm": 1.0,
            "sha256": sha256 or fileio.sha256_file(version_dir / "model.keras")})
    return tmp_path / "bundle", version_dir / "model.keras"


def test_bundle_as_model_and_checksum(model_path, tmp_path, capsys):
    base, keras_file = _bundle(tmp_path, model_path)
    seg = segmenter.Segmenter(base, orientation="as_is")
    assert seg.spacing_mode and seg.target_spacing_mm == 1.0 and seg.label == "spoils_seg v1"
    folder, out = _folder(tmp_path, n_good=1, junk=False), tmp_path / "out"
    assert segment_cmd.main(_args([folder], base, out, "--pixel-spacing", "1", "1")) == 0
    assert _mask(out / "s0_mask.png").shape == (H, W)
    assert json.loads((out / "s0_areas.json").read_text())["model"] == "spoils_seg v1"
    data = bytearray(keras_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    keras_file.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="sha256"):
        segmenter.Segmenter(base)
    capsys.readouterr()
    assert segment_cmd.main(_args([folder], base, tmp_path / "out2",
                                         "--pixel-spacing", "1", "1")) == 2
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_spacing_export_matches_the_predictor_and_carries_its_spacing(model, tmp_path):
    version_dir = serving.export_saved_model(model, tmp_path / "serving", "seg",
                                             resize_mode="spacing", target_spacing_mm=1.0)
    meta = json.loads((version_dir / "assets.extra" / serving.METADATA_FILE).read_text())
    assert meta["resize_mode"] == "spacing" and meta["target_spacing_mm"] == 1.0
    fn = tf.saved_model.load(str(version_dir)).signatures[serving.SIGNATURE_NAME]
    predict = spacing_pipeline.make_spacing_predictor(model, 1.0)
    for image, spacing in ((_slice(5), [0.7, 0.9]), (_slice(6)[:70, :66], [1.3, 1.3])):
        out = fn(image=tf.constant(image), pixel_spacing_mm=tf.constant(spacing, tf.float32))
        expected = np.asarray(predict(image, np.float32(spacing)))
        assert out["probabilities"].shape == (*image.shape, labels.NUM_SEG_CLASSES)
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-4)
        np.testing.assert_array_equal(out["label_map"].numpy(), expected.argmax(-1))
    seg = segmenter.Segmenter(version_dir, orientation="as_is")
    assert seg.spacing_mode and seg.target_spacing_mm == 1.0
    result = seg(_slice(7), (1.0, 1.0), "x.png")
    assert result.label_map.shape == (H, W) and result.label_map.max() < labels.NUM_SEG_CLASSES
    with pytest.raises(ValueError, match="target_spacing_mm"):
        serving.export_saved_model(model, tmp_path / "serving", "seg", resize_mode="spacing")


# === Refusals ===
def test_spacing_card_without_target_spacing_is_refused(model_path, tmp_path):
    import json
    import shutil
    version_dir = tmp_path / "bundle" / bundle.SEG / "1"
    version_dir.mkdir(parents=True)
    shutil.copy(model_path, version_dir / "model.keras")
    card = {"format": bundle.CARD_FORMAT, "kind": "segmentation", "model_file": "model.keras",
            "resize_mode": "spacing"}
    with pytest.raises(bundle.BundleError, match="target_spacing_mm"):
        bundle.write_card(version_dir, card)
    bundle.card_path(version_dir).parent.mkdir(parents=True)
    bundle.card_path(version_dir).write_text(json.dumps(card))   # written by hand
    with pytest.raises(bundle.BundleError, match="target_spacing_mm"):
        segmenter.Segmenter(tmp_path / "bundle", orientation="as_is")


def test_spacing_keras_without_target_spacing_flag_is_a_clear_error(model_path, tmp_path,
                                                                    capsys):
    folder = _folder(tmp_path, n_good=1, junk=False)
    rc = segment_cmd.main([str(folder / "s0.png"), "--model", str(model_path),
                                 "--pixel-spacing", "1", "1", "--out", str(tmp_path / "out")])
    assert rc == 2 and "--target-spacing-mm" in capsys.readouterr().err
