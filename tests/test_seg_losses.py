"""Segmentation losses (spoils_tf/models/losses.py) on hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest

from spoils_tf.models import losses


def test_soft_dice_hand_numbers():
    # 1 image, 2x2 pixels, 3 classes. Truth: [0, 1; 1, 2].
    y_true = np.array([[[0, 1], [1, 2]]], np.int32)
    p = np.zeros((1, 2, 2, 3), np.float32)
    p[0, 0, 0] = [1, 0, 0]
    p[0, 0, 1] = [0, 1, 0]
    p[0, 1, 0] = [0, 0.5, 0.5]
    p[0, 1, 1] = [0, 0, 1]
    # class 1: inter = 1 + 0.5 = 1.5, sum p = 1.5, sum g = 2 -> dice = 3 / 3.5
    # class 2: inter = 1, sum p = 1.5, sum g = 1 -> dice = 2 / 2.5
    expected = 1 - (3 / 3.5 + 2 / 2.5) / 2
    loss = float(losses.SoftDiceLoss(smooth=0.0)(y_true, p))
    assert loss == pytest.approx(expected, abs=1e-6)
    # The same with a trailing channel axis on the truth.
    assert float(losses.SoftDiceLoss(smooth=0.0)(y_true[..., None], p)) == \
        pytest.approx(expected, abs=1e-6)


def test_perfect_prediction_has_zero_dice_loss_and_absent_class_costs_nothing():
    y_true = np.array([[[0, 1], [1, 1]]], np.int32)
    p = np.eye(3, dtype=np.float32)[y_true]          # one-hot, class 2 absent everywhere
    assert float(losses.SoftDiceLoss()(y_true, p)) == pytest.approx(0.0, abs=1e-5)


def test_ce_plus_dice_is_the_sum():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=(2, 5, 5)).astype(np.int32)
    logits = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ce = -np.mean(np.log(np.take_along_axis(p, y_true[..., None], -1)))
    dice = float(losses.SoftDiceLoss()(y_true, p))
    assert float(losses.CrossEntropyDiceLoss()(y_true, p)) == pytest.approx(ce + dice, rel=1e-5)


def test_unknown_loss_name_is_refused():
    with pytest.raises(ValueError, match="config.train.loss"):
        losses.segmentation_loss("focal")


def test_model_compiled_with_ce_dice_trains_and_reloads(tmp_path):
    import keras

    from spoils_tf.models import build_segmentation_model

    keras.utils.set_random_seed(0)
    model = build_segmentation_model({"name": "unet", "kwargs": {
            "input_shape": (32, 32, 3), "num_classes": 3, "filters": (4, 8)}})
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.segmentation_loss("ce+dice"))
    x = np.zeros((4, 32, 32, 3), np.float32)
    y = np.zeros((4, 32, 32), np.int32)
    x[:, 8:16, :, :] = 1.0
    y[:, 8:16, :] = 1
    x[:, 20:24, :, :] = -1.0
    y[:, 20:24, :] = 2
    hist = model.fit(x, y, epochs=15, batch_size=4, verbose=0).history["loss"]
    assert hist[-1] < hist[0]
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert isinstance(again.loss, losses.CrossEntropyDiceLoss)
