"""keras_backend_lib pieces with hand-checked numbers (the training itself: test_jax_backend)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.data import seg_arrays
from spoils_tf.train import keras_backend_lib as kbl


class BackgroundModel:
    """Predicts background everywhere; records the batch sizes it was given."""

    def __init__(self):
        self.batches = []

    def predict_on_batch(self, x):
        self.batches.append(x.shape[0])
        probs = np.zeros(x.shape[:3] + (labels.NUM_SEG_CLASSES,), np.float32)
        probs[..., 0] = 1.0
        return probs


def test_evaluate_pads_the_last_batch_and_scores_by_hand():
    n, size = 5, (8, 8)
    masks = np.zeros((n,) + size, np.uint8)
    masks[:, :2, :] = 1          # 16 of 64 pixels are class 1 in every slice
    arrays = seg_arrays.SegArrays(
            images=np.zeros((n,) + size, np.uint8), masks=masks,
            patients=np.asarray(["p"] * n), keys=np.asarray([f"p_slice{i}" for i in range(n)]),
            slices=np.arange(n, dtype=np.int32), original_masks=tuple(masks),
            resize_mode="resize")
    model = BackgroundModel()
    out = kbl.evaluate(model, arrays, np.arange(n), batch_size=4)
    assert model.batches == [4, 4]                 # 4 + (1 padded to 4)
    assert out["slices"] == 5.0
    assert out["pixel_accuracy"] == pytest.approx(48 / 64)   # background right, class 1 wrong
    assert out["dice/L1"] == pytest.approx(0.0)


def test_summarize_by_hand():
    folds = {0: {"dice/fg_macro": 0.5, "pixel_accuracy": 0.9, "level_accuracy": math.nan},
             1: {"dice/fg_macro": 0.7, "pixel_accuracy": 0.8, "level_accuracy": 1.0}}
    for f in folds.values():
        f.update({f"dice/{c}": 0.5 for c in labels.SEG_NAMES})
    s = kbl.summarize(folds)
    assert s["dice/fg_macro"]["mean"] == pytest.approx(0.6)
    assert s["dice/fg_macro"]["sd"] == pytest.approx(math.sqrt(0.02))   # ddof 1: 0.1414
    assert s["level_accuracy"]["mean"] == 1.0 and s["level_accuracy"]["sd"] == 0.0
    assert s["dice/fg_macro"]["per_fold"] == {"0": 0.5, "1": 0.7}


def test_fold_spec():
    assert kbl._parse_folds("all", 3) == [0, 1, 2]
    assert kbl._parse_folds("0,2", 3) == [0, 2]
    for bad in ("3", "x", ""):
        with pytest.raises(ValueError, match="fold"):
            kbl._parse_folds(bad, 3)


def test_epoch_timer_stops_before_the_deadline():
    class Model:
        stop_training = False

    timer = kbl.EpochTimer(deadline=0.0)     # any epoch would end after it
    timer.set_model(Model())
    timer.on_epoch_begin(0)
    timer.on_epoch_end(0)
    assert timer.model.stop_training and len(timer.seconds) == 1
    free = kbl.EpochTimer(deadline=None)
    free.set_model(Model())
    free.on_epoch_begin(0)
    free.on_epoch_end(0)
    assert not free.model.stop_training


def test_batch_augment_hook():
    rng_data = np.random.default_rng(0)
    masks = np.zeros((3, 32, 32), np.uint8)
    masks[:, 10:20, 8:24] = labels.DISC_IDS[0]
    images = rng_data.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    augment = kbl.batch_augment({"rotation_deg": 10.0, "shift": 0.1, "contrast": 0.2})
    a_img, a_mask = augment(images, masks, np.random.default_rng([0, 0, 0]))
    assert a_img.shape == (3, 32, 32) and a_img.dtype == np.float32
    assert a_mask.shape == (3, 32, 32) and a_mask.dtype == np.uint8
    assert set(np.unique(a_mask)) <= {0, labels.DISC_IDS[0]}
    assert 0.0 <= a_img.min() and a_img.max() <= 255.0
    assert not np.array_equal(a_mask, masks)               # something moved
    b_img, b_mask = augment(images, masks, np.random.default_rng([0, 0, 0]))
    np.testing.assert_array_equal(a_mask, b_mask)          # same seed, same batch
    np.testing.assert_allclose(a_img, b_img)
    c_img, _ = augment(images, masks, np.random.default_rng([0, 1, 0]))
    assert not np.allclose(a_img, c_img)                  # another epoch, other draws
