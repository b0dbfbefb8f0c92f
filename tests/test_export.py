"""SavedModel export: any input size, same outputs as the Keras model, versions, PredictRequest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from spoils_tf import labels
from spoils_tf.data import seg_pipeline
from spoils_tf.export import serving
from spoils_tf.models.unet import UNet


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    return UNet(input_shape=(32, 32, 3), filters=(4, 8))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    path = serving.export_saved_model(model, base, "spine_seg")
    return base, path, tf.saved_model.load(str(path))


def test_layout_versions_and_metadata(exported):
    base, path, _ = exported
    assert path == base / "spine_seg" / "1" and (path / "saved_model.pb").is_file()
    meta = json.loads((path / "assets.extra" / serving.METADATA_FILE).read_text())
    assert meta["class_names"] == list(labels.SEG_NAMES) and meta["model_input_size"] == [32, 32]


def test_never_overwrites_a_version(model, tmp_path):
    first = serving.export_saved_model(model, tmp_path, "m", version=3)
    before = sorted(p.name for p in first.iterdir())
    with pytest.raises(FileExistsError, match="version 3"):
        serving.export_saved_model(model, tmp_path, "m", version=3)
    assert sorted(p.name for p in first.iterdir()) == before
    assert serving.existing_versions(tmp_path / "m") == [3]
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["3"]   # no temp folder left


def test_any_size_input_matches_keras_model(model, exported):
    _, _, loaded = exported
    fn = loaded.signatures[serving.SIGNATURE_NAME]
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (2, 45, 37, 1), dtype=np.uint8)
    images = np.repeat(grey, 3, axis=-1)
    out = fn(images=tf.constant(images))
    assert out["probabilities"].shape == (2, 45, 37, labels.NUM_SEG_CLASSES)
    assert out["label_map"].dtype == tf.int32 and out["label_map"].shape == (2, 45, 37)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-4)
    # The Keras model on the same preprocessing, done step by step here.
    x = seg_pipeline.normalize_images(seg_pipeline.prepare_images(images, (32, 32), "letterbox"))
    expected = seg_pipeline.restore_resolution(model(x, training=False), 45, 37, "letterbox")
    np.testing.assert_allclose(out["probabilities"].numpy(), expected.numpy(), atol=1e-5)


def test_model_size_input_equals_plain_keras_call(model, exported):
    _, _, loaded = exported
    images = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    out = loaded.signatures[serving.SIGNATURE_NAME](images=tf.constant(images))
    direct = model.predict(seg_pipeline.normalize_images(images).numpy(), verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), direct, atol=1e-5)


def test_tf_serving_predict_request(exported):
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    _, _, loaded = exported
    images = np.zeros((1, 40, 24, 3), np.uint8)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "spine_seg"
    request.model_spec.signature_name = serving.SIGNATURE_NAME
    request.inputs[serving.INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
    fn = loaded.signatures[request.model_spec.signature_name]
    assert set(fn.structured_input_signature[1]) == set(request.inputs)
    decoded = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    out = fn(**{k: tf.constant(v) for k, v in decoded.items()})
    assert out["label_map"].shape == (1, 40, 24)
