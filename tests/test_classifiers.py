"""Tests for spoils_tf.models.classifiers: builds, probabilities, sizes, .keras round trip,
class weights and target labels."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.models import classifiers

H, W = 32, 64  # the smallest crop the keras.applications backbones accept is 32 px


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).random((2, H, W, 1), dtype=np.float32)


def test_target_classes_come_from_labels():
    assert classifiers.TARGET_CLASSES["grade11"] == labels.GRADE_CLASSES
    assert classifiers.TARGET_CLASSES["pfirrmann5"] == labels.PFIRRMANN_CLASSES
    assert classifiers.TARGET_CLASSES["binary"] == labels.BINARY_CLASSES
    assert [len(classifiers.target_classes(t)) for t in ("grade11", "pfirrmann5", "binary")] \
        == [11, 5, 2]
    with pytest.raises(ValueError, match="unknown target"):
        classifiers.target_classes("grade12")


@pytest.mark.parametrize("backbone", classifiers.BACKBONES)
@pytest.mark.parametrize("target", sorted(classifiers.TARGET_CLASSES))
def test_every_model_outputs_probabilities(backbone, target, crops):
    model = classifiers.DiscClassifier(backbone, target, H, W)
    probs = model.predict(crops, verbose=0)
    n = len(classifiers.TARGET_CLASSES[target])
    assert probs.shape == (2, n)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_parameter_counts_by_hand():
    # Plain CNN with blocks (8, 16): conv 3*3*3*8 = 216 (no bias) + BN 4*8 = 32;
    # conv 3*3*8*16 = 1152 + BN 4*16 = 64; head: 16*11 + 11 = 187.  Total 1651.
    cnn = classifiers.DiscClassifier("cnn", "grade11", H, W, cnn_filters=(8, 16))
    assert cnn.count_params() == 216 + 32 + 1152 + 64 + 16 * 11 + 11
    # keras.applications without top: MobileNetV2 (alpha 1) 2,257,984 parameters with 1280
    # output features; VGG16 14,714,688 with 512 features (Keras documentation tables).
    mnv2 = classifiers.DiscClassifier("mobilenetv2", "pfirrmann5", H, W)
    assert mnv2.count_params() == 2_257_984 + 1280 * 5 + 5
    vgg = classifiers.DiscClassifier("vgg16", "binary", H, W)
    assert vgg.count_params() == 14_714_688 + 512 * 2 + 2


def test_three_channel_input_and_scaling_layers():
    model = classifiers.DiscClassifier("mobilenetv2", "binary", H, W, input_channels=3)
    assert model.input_shape == (None, H, W, 3)
    layer_names = [lyr.name for lyr in model.layers]
    assert "grey_to_rgb" not in layer_names and "to_minus1_1" in layer_names
    grey = classifiers.DiscClassifier("vgg16", "binary", H, W)
    assert "grey_to_rgb" in [lyr.name for lyr in grey.layers]
    # VGG "caffe" scaling: a pixel of 0.5 becomes 127.5 - channel mean (BGR order).
    out = grey.get_layer("to_caffe")(np.full((1, 1, 1, 3), 0.5, np.float32)).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [127.5 - 103.939, 127.5 - 116.779, 127.5 - 123.68],
                               rtol=1e-5)


@pytest.mark.parametrize("backbone,bad_size", [("mobilenetv2", 31), ("vgg16", 16), ("cnn", 15)])
def test_too_small_input_is_refused(backbone, bad_size):
    assert classifiers.min_input_size(backbone) == (16 if backbone == "cnn" else 32)
    with pytest.raises(ValueError, match=f">= {classifiers.min_input_size(backbone)} px"):
        classifiers.DiscClassifier(backbone, "binary", bad_size, 64)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown backbone"):
        classifiers.DiscClassifier("resnet50", "binary", H, W)
    with pytest.raises(ValueError, match="input_channels"):
        classifiers.DiscClassifier("cnn", "binary", H, W, input_channels=2)
    with pytest.raises(ValueError, match="no pretrained weights"):
        classifiers.DiscClassifier("cnn", "binary", H, W, backbone_weights="imagenet")


def test_config_and_keras_round_trip(tmp_path, crops):
    model = classifiers.DiscClassifier("cnn", "pfirrmann5", H, W, dropout=0.25,
                                       cnn_filters=(8, 16), name="disc_cnn")
    config = model.get_config()
    assert config["backbone"] == "cnn" and config["target"] == "pfirrmann5"
    assert config["cnn_filters"] == [8, 16] and config["dropout"] == 0.25
    clone = classifiers.DiscClassifier.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    # Train one step so the saved weights differ from a fresh initialisation.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(crops, np.array([0, 3]), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, classifiers.DiscClassifier)
    assert loaded.get_config() == config
    np.testing.assert_allclose(loaded.predict(crops, verbose=0), model.predict(crops, verbose=0),
                               atol=1e-6)


def test_mobilenet_keras_round_trip(tmp_path, crops):
    model = classifiers.DiscClassifier("mobilenetv2", "binary", H, W)
    path = tmp_path / "mnv2.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(crops, verbose=0), model.predict(crops, verbose=0),
                               atol=1e-6)


def test_balanced_class_weights_by_hand():
    # y = [0, 0, 0, 1], 3 classes: n = 4, k = 2 classes present.
    # w0 = 4 / (2 * 3) = 0.6667, w1 = 4 / (2 * 1) = 2.0, class 2 absent -> 1.0.
    w = classifiers.balanced_class_weights([0, 0, 0, 1], 3)
    assert w == pytest.approx({0: 4 / 6, 1: 2.0, 2: 1.0})
    # Each present class carries the same total weight n / k = 2.
    assert 3 * w[0] == pytest.approx(1 * w[1]) == pytest.approx(2.0)
    # Balanced data -> all ones.
    assert classifiers.balanced_class_weights([0, 1, 2, 0, 1, 2], 3) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_balanced_class_weights_errors():
    with pytest.raises(ValueError, match="empty"):
        classifiers.balanced_class_weights([], 3)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        classifiers.balanced_class_weights([0, 3], 3)


def test_target_label():
    assert classifiers.target_label("grade11", 4, "4M") == labels.GRADE_CLASSES.index("4M")
    assert classifiers.target_label("pfirrmann5", 4, "4M") == 3
    assert classifiers.target_label("pfirrmann5", None, "5H") == 4   # from grade_class
    assert classifiers.target_label("binary", 3.0, "") == 0
    assert classifiers.target_label("binary", 4, None) == 1
    with pytest.raises(ValueError, match="grade_class"):
        classifiers.target_label("grade11", 4, float("nan"))
    with pytest.raises(ValueError, match="pfirrmann"):
        classifiers.target_label("binary", "", "")
    with pytest.raises(ValueError, match="pfirrmann 6"):
        classifiers.target_label("pfirrmann5", 6, None)


def test_backbone_weights_from_local_file(tmp_path, crops):
    # What an offline user does with downloaded ImageNet weights: a .weights.h5 of the
    # include_top=False backbone at the same input size.
    source = classifiers.build_backbone("mobilenetv2", (H, W, 3), mobilenet_alpha=0.35)
    path = tmp_path / "mnv2_notop.weights.h5"
    source.save_weights(path)
    model = classifiers.DiscClassifier("mobilenetv2", "binary", H, W, mobilenet_alpha=0.35,
                                       backbone_weights=str(path))
    got = model.get_layer("mobilenetv2_backbone").get_weights()
    for a, b in zip(got, source.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.get_config()["backbone_weights"] == str(path)
    # reloading from config never reads the file again
    assert classifiers.DiscClassifier.from_config(model.get_config()).backbone_weights is None
    with pytest.raises(ValueError, match="weights"):
        classifiers.DiscClassifier("mobilenetv2", "binary", H, W,
                                   backbone_weights=str(tmp_path / "missing.h5"))
