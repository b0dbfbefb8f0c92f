"""Segmentation model builders: shapes, parameter counts by hand, config and .keras round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.models import build_segmentation_model
from spoils_tf.models.deeplabv3plus import DeepLabV3Plus
from spoils_tf.models.unet import UNet

C = labels.NUM_SEG_CLASSES
MINI = dict(input_shape=(32, 32, 3), encoder="mini", encoder_filters=(4, 8, 8, 16),
            atrous_rates=(1, 2), aspp_filters=8, low_level_filters=4, decoder_filters=8)


def _conv_bn(k, cin, cout):
    """3x3 / 1x1 conv without bias + batch norm (gamma, beta, moving mean, moving var)."""
    return k * k * cin * cout + 4 * cout


@pytest.fixture(scope="module")
def r50():
    return DeepLabV3Plus(input_shape=(64, 64, 3))


def test_deeplab_resnet50_shapes_and_param_count(r50):
    assert r50.output_shape == (None, 64, 64, C)
    encoder = r50.get_layer("resnet50_encoder")
    low, high = encoder.output
    assert low.shape == (None, 16, 16, 256)      # conv2 block, stride 4
    assert high.shape == (None, 4, 4, 2048)      # atrous conv5, output stride 16
    assert encoder.count_params() == 23_587_712  # keras.applications ResNet50, no top
    head = (_conv_bn(1, 2048, 256)                  # ASPP 1x1
            + 3 * _conv_bn(3, 2048, 256)            # ASPP rates 6, 12, 18
            + _conv_bn(1, 2048, 256)                # image pooling
            + _conv_bn(1, 5 * 256, 256)             # projection
            + _conv_bn(1, 256, 48)                  # low-level projection
            + _conv_bn(3, 256 + 48, 256) + _conv_bn(3, 256, 256)   # decoder
            + 256 * C + C)                          # logits (with bias)
    assert r50.count_params() == 23_587_712 + head == 40_434_254


def test_output_stride_32_keeps_weights_shapes(r50):
    m = DeepLabV3Plus(input_shape=(64, 64, 3), output_stride=32)
    assert m.get_layer("resnet50_encoder").output[1].shape == (None, 2, 2, 2048)
    assert m.count_params() == r50.count_params()


def test_unet_param_count_by_hand():
    m = UNet(input_shape=(32, 32, 3), filters=(4, 8))
    expected = (_conv_bn(3, 3, 4) + _conv_bn(3, 4, 4)          # down0
                + _conv_bn(3, 4, 8) + _conv_bn(3, 8, 8)        # bottleneck
                + 2 * 2 * 8 * 4 + 4                            # transposed conv (bias)
                + _conv_bn(3, 8, 4) + _conv_bn(3, 4, 4)        # up0 after concat (4 + 4)
                + 4 * C + C)                                   # logits
    assert m.count_params() == expected == 1878
    assert m.output_shape == (None, 32, 32, C)


@pytest.mark.parametrize("cls,kwargs", [(DeepLabV3Plus, MINI),
                                        (UNet, dict(input_shape=(32, 32, 3), filters=(4, 8, 8),
                                                    upsampling="bilinear"))])
def test_config_and_keras_round_trip(cls, kwargs, tmp_path):
    m = cls(**kwargs)
    config = m.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config and clone.count_params() == m.count_params()
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)


def test_builder_from_config_section_and_errors():
    m = build_segmentation_model({"name": "unet", "kwargs": {"input_shape": [32, 32, 3],
                                                             "filters": [4, 8]}})
    assert isinstance(m, UNet) and m.filters == (4, 8)
    with pytest.raises(ValueError, match="unknown segmentation model"):
        build_segmentation_model({"name": "segformer", "kwargs": {}})
    with pytest.raises(ValueError, match="divisible by 32"):
        DeepLabV3Plus(input_shape=(48, 48, 3))
    with pytest.raises(ValueError, match="encoder_weights"):
        DeepLabV3Plus(input_shape=(64, 64, 3), encoder_weights="/nonexistent/w.h5")


def test_mixed_precision_keeps_float32_probabilities():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        m = DeepLabV3Plus(**MINI)
        assert m.get_layer("logits").compute_dtype == "bfloat16"
        out = m(np.zeros((1, 32, 32, 3), "float32"))
        assert out.dtype == "float32"
        np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
