"""tf.data segmentation pipeline: masks stay class ids, geometry, filtering, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from spoils_tf import labels
from spoils_tf.data import seg_pipeline as sp

H, W = 80, 64   # taller than wide, like SPIDER's 640 x 512


def _examples(patients=("p1", "p2", "p3"), slices=2) -> tf.data.Dataset:
    """Every patient gets `slices` slices; the mask has horizontal bands of ids 0..13."""
    images, masks, pats, sl, keys = [], [], [], [], []
    rng = np.random.default_rng(0)
    for p in patients:
        for s in range(slices):
            img = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
            mask = (np.arange(H)[:, None] * labels.NUM_SEG_CLASSES // H).repeat(W, 1)
            images.append(img)
            masks.append(mask[..., None].astype(np.uint8))
            pats.append(p)
            sl.append(s)
            keys.append(f"{p}_slice{s}")
    return tf.data.Dataset.from_tensor_slices({
            "image": np.stack(images), "mask": np.stack(masks), "patient": pats,
            "slice": np.array(sl, np.int32),
            "pixel_spacing_mm": np.full((len(pats), 2), 0.5, np.float32), "key": keys})


def test_masks_stay_integer_ids_after_resize_and_augment():
    strong = {"rotation_deg": 30.0, "scale": 0.3, "shift": 0.2, "contrast": 0.5,
              "brightness": 0.2, "gamma": 0.5}
    ds = sp.make_seg_dataset(_examples(), image_size=(32, 32), batch_size=4, training=True,
                             augment_cfg=strong, seed=1)
    seen = set()
    for image, mask in ds:
        assert image.dtype == tf.float32 and image.shape[1:] == (32, 32, 3)
        assert mask.dtype == tf.int32 and mask.shape[1:] == (32, 32)
        values = set(np.unique(mask.numpy()).tolist())
        assert values <= set(range(labels.NUM_SEG_CLASSES))
        seen |= values
    assert len(seen) > 10   # the bands survive


def test_mask_resize_is_nearest_not_bilinear():
    mask = np.zeros((H, W, 1), np.uint8)
    mask[::2] = 13          # alternate rows 13 / 0: bilinear would give in-between ids
    out = sp.fit_to_model(tf.constant(mask), (37, 29), "resize", is_mask=True).numpy()
    assert set(np.unique(out).tolist()) == {0, 13}
    assert out.dtype == np.uint8


def test_letterbox_geometry_and_padding():
    # 80 x 64 into 32 x 32: scale 0.4 -> 32 x 25.6 -> 26 wide, left = (32 - 26) // 2 = 3
    new_h, new_w, top, left = [int(v) for v in sp.letterbox_geometry(80, 64, 32, 32)]
    assert (new_h, new_w, top, left) == (32, 26, 0, 3)
    ones = tf.fill((H, W, 1), tf.constant(7, tf.uint8))
    out = sp.fit_to_model(ones, (32, 32), "letterbox", is_mask=True).numpy()[..., 0]
    assert (out[:, :3] == 0).all() and (out[:, 3:29] == 7).all() and (out[:, 29:] == 0).all()


def test_restore_resolution_inverts_letterbox():
    mask = np.zeros((H, W), np.int32)
    mask[20:60, 10:40] = 5
    onehot = tf.one_hot(mask, labels.NUM_SEG_CLASSES)[None]
    small = sp.fit_to_model(onehot, (40, 40), "letterbox")
    back = sp.restore_resolution(small, H, W, "letterbox")
    assert back.shape == (1, H, W, labels.NUM_SEG_CLASSES)
    agree = np.mean(np.argmax(back.numpy()[0], -1) == mask)
    assert agree > 0.97


def test_patient_filter_and_no_augmentation_when_not_training():
    ds = sp.make_seg_dataset(_examples(), image_size=(32, 32), batch_size=10, training=False,
                             patients=["p1", "p3"])
    first = [b for b in ds]
    assert sum(int(m.shape[0]) for _, m in first) == 4
    again = [b for b in ds]
    np.testing.assert_array_equal(first[0][0].numpy(), again[0][0].numpy())
    with pytest.raises(ValueError, match="patients"):
        sp.make_seg_dataset(_examples(), image_size=(32, 32), batch_size=2, training=False,
                            patients=[])


def test_augment_is_seeded_and_changes_the_image():
    image = tf.cast(tf.reshape(tf.range(32 * 32) % 251, (32, 32, 1)), tf.float32)
    mask = tf.zeros((32, 32, 1), tf.uint8)
    a1, _ = sp.augment(image, mask, tf.constant([1, 2], tf.int64))
    a2, _ = sp.augment(image, mask, tf.constant([1, 2], tf.int64))
    a3, _ = sp.augment(image, mask, tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(a1.numpy(), a2.numpy())
    assert not np.allclose(a1.numpy(), a3.numpy())
    assert not np.allclose(a1.numpy(), image.numpy())


def test_normalize_images_is_caffe_mean_subtraction():
    grey = tf.fill((1, 2, 2, 1), tf.constant(100, tf.uint8))
    out = sp.normalize_images(grey).numpy()
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(out[0, 0, 0], [100 - 103.939, 100 - 116.779, 100 - 123.68],
                               rtol=1e-6)


def test_bad_mask_id_names_the_example():
    ex = tf.data.Dataset.from_tensor_slices({
            "image": np.zeros((1, 8, 8, 1), np.uint8), "mask": np.full((1, 8, 8, 1), 20, np.uint8),
            "patient": ["p"], "slice": np.array([0], np.int32),
            "pixel_spacing_mm": np.ones((1, 2), np.float32), "key": ["p_slice0"]})
    ds = sp.make_seg_dataset(ex, image_size=(8, 8), batch_size=1, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="p_slice0"):
        list(ds)
