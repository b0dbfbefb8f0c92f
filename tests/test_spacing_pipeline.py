"""Fixed-spacing pipeline: resampling, z-scoring, random patches and the whole-slice predictor."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from spoils_tf import labels
from spoils_tf.data import spacing_pipeline as sp
from spoils_tf.models import with_input_size
from spoils_tf.models.deeplabv3plus import DeepLabV3Plus
from spoils_tf.models.unet import UNet

C = labels.NUM_SEG_CLASSES
MINI_1CH = dict(input_shape=(64, 64, 1), encoder="mini", encoder_filters=(4, 8, 8, 16),
                atrous_rates=(1, 2), aspp_filters=8, low_level_filters=4, decoder_filters=8)


@pytest.fixture(scope="module")
def unet():
    keras.utils.set_random_seed(0)
    return UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu")


@pytest.fixture(scope="module")
def deeplab():
    keras.utils.set_random_seed(1)
    return DeepLabV3Plus(**MINI_1CH)


# === Resampling ===
def test_resampled_size_of_a_spider_slice():
    # 640 x 512 px of 0.46875 mm = 300 x 240 mm = 400 x 320 px of 0.75 mm
    assert sp.resampled_size((640, 512), (0.46875, 0.46875), 0.75) == (400, 320)
    # anisotropic pixels: rows 1.0 mm, cols 0.5 mm -> 100 x 50 mm at 0.5 mm = 200 x 100 px
    assert sp.resampled_size((100, 100), (1.0, 0.5), 0.5) == (200, 100)
    assert sp.resampled_size((3, 3), (0.1, 0.1), 10.0) == (1, 1)   # never below 1 px


def test_resample_image_shape_dtype_and_constant_value():
    image = tf.fill([640, 512, 1], tf.constant(77, tf.uint8))
    out = sp.resample_to_spacing(image, tf.constant([0.46875, 0.46875]), 0.75)
    assert tuple(out.shape) == (400, 320, 1) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), 77.0, atol=1e-3)   # antialiasing keeps the level


def test_resampled_mask_keeps_only_its_ids():
    rng = np.random.default_rng(0)
    ids = np.array([0, 3, 9, 13], np.uint8)
    mask = ids[rng.integers(0, 4, size=(90, 70))][..., None]
    out = sp.resample_to_spacing(tf.constant(mask), tf.constant([0.6, 0.9]), 0.75, is_mask=True)
    assert tuple(out.shape) == (72, 84, 1) and out.dtype == tf.uint8   # 90*0.6/0.75, 70*0.9/0.75
    assert set(np.unique(out.numpy())) <= set(ids.tolist())
    # a block mask: nearest neighbour keeps the block's extent in mm (20 px of 0.5 mm = 10 mm)
    block = np.zeros((40, 40, 1), np.int32)
    block[10:30, 10:30] = 11
    half = sp.resample_to_spacing(tf.constant(block), tf.constant([0.5, 0.5]), 1.0, is_mask=True)
    assert half.dtype == tf.int32 and int(np.sum(half.numpy() == 11)) == 10 * 10


def test_standardize_gives_mean_0_sd_1_and_sd_floor():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(50, 40)).astype(np.uint8)
    stats = sp.image_stats(image).numpy()
    assert stats[0] == pytest.approx(image.mean(), rel=1e-5)
    assert stats[1] == pytest.approx(image.std(), rel=1e-4)
    z = sp.standardize(image, stats).numpy()
    assert z.dtype == np.float32
    assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1.0, abs=1e-4)
    flat = sp.image_stats(np.full((8, 8), 9, np.uint8)).numpy()
    np.testing.assert_allclose(flat, [9.0, 1.0])   # SD floored at one grey level


def test_pad_to_multiple():
    x = tf.reshape(tf.range(1, 36, dtype=tf.float32), [5, 7, 1])
    y = sp.pad_to_multiple(x, 4).numpy()
    assert y.shape == (8, 8, 1)
    np.testing.assert_array_equal(y[:5, :7], x.numpy())
    assert np.all(y[5:] == 0) and np.all(y[:, 7:] == 0)
    assert sp.pad_to_multiple(tf.ones([8, 16, 2]), 8).shape == (8, 16, 2)   # already a multiple


def test_model_divisor(unet, deeplab):
    assert sp.model_divisor(unet) == 2                       # 2 levels: one pooling
    assert sp.model_divisor(UNet(input_shape=(None, None, 1), filters=(4, 4, 4, 4))) == 8
    assert sp.model_divisor(deeplab) == 32


# === Training slices and patches ===
def _examples():
    """Two slices: 40 x 30 px at 1.0 mm (patient a) and 60 x 60 px at 0.5 mm (patient b)."""
    img_a = np.full((40, 30, 1), 50, np.uint8)
    msk_a = np.zeros((40, 30, 1), np.uint8)
    msk_a[10:20, 5:15] = 4
    img_b = np.full((60, 60, 1), 200, np.uint8)
    msk_b = np.zeros((60, 60, 1), np.uint8)
    return [
            {"image": img_b, "mask": msk_b, "patient": "b", "key": "b_0",
             "pixel_spacing_mm": np.array([0.5, 0.5], np.float32)},
            {"image": img_a, "mask": msk_a, "patient": "a", "key": "a_0",
             "pixel_spacing_mm": np.array([1.0, 1.0], np.float32)},
    ]


def _dataset(items):
    return tf.data.Dataset.from_generator(
            lambda: iter(items), output_signature={
                    "image": tf.TensorSpec([None, None, 1], tf.uint8),
                    "mask": tf.TensorSpec([None, None, 1], tf.uint8),
                    "patient": tf.TensorSpec([], tf.string), "key": tf.TensorSpec([], tf.string),
                    "pixel_spacing_mm": tf.TensorSpec([2], tf.float32)})


def test_resampled_slices_from_examples():
    s = sp.ResampledSlices.from_examples(_dataset(_examples()), 1.0)
    assert len(s) == 2 and s.keys == ["a_0", "b_0"]                  # sorted by key
    # a: 40 x 30 at 1 mm stays; b: 60 x 60 at 0.5 mm -> 30 x 30; canvas = the largest of each
    assert s.images.shape == (2, 40, 30) and s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.sizes, [[40, 30], [30, 30]])
    assert np.all(s.images[1, :30, :30] == 200) and np.all(s.images[1, 30:] == 0)
    np.testing.assert_allclose(s.stats, [[50, 1], [200, 1]])
    np.testing.assert_array_equal(s.boxes[0], [10, 19, 5, 14])       # the labelled block
    np.testing.assert_array_equal(s.boxes[1], [0, 29, 0, 29])        # empty mask: whole slice
    only_b = sp.ResampledSlices.from_examples(_dataset(_examples()), 1.0, patients=["b"])
    assert only_b.keys == ["b_0"] and only_b.images.shape == (1, 30, 30)
    with pytest.raises(ValueError, match="no training slice"):
        sp.ResampledSlices.from_examples(_dataset(_examples()), 1.0, patients=["zzz"])
    bad = _examples()
    bad[1]["pixel_spacing_mm"] = np.array([np.nan, 1.0], np.float32)
    with pytest.raises(ValueError, match="a_0"):
        sp.ResampledSlices.from_examples(_dataset(bad), 1.0)


def _canvases(n=3, h=48, w=40, ids=(0, 2, 9, 13)):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(n, h, w)).astype(np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        for j, cls in enumerate(ids[1:]):
            masks[i, 8 + 10 * j:14 + 10 * j, 6:30] = cls
    sizes = np.tile(np.array([[h, w]], np.int32), (n, 1))
    stats = np.stack([[images[i].mean(), images[i].std()] for i in range(n)]).astype(np.float32)
    boxes = np.tile(np.array([[8, 33, 6, 29]], np.float32), (n, 1))
    return sp.ResampledSlices(images, masks, sizes, stats, boxes, [f"k{i}" for i in range(n)])


def _first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def test_patch_dataset_shapes_dtypes_and_ids():
    slices = _canvases()
    ds = sp.make_patch_dataset(slices, patch_hw=(32, 24), batch_size=4, seed=0)
    x, y = next(iter(ds))
    assert x.dtype == tf.float32 and tuple(x.shape) == (4, 32, 24, 1)
    assert y.dtype == tf.int32 and tuple(y.shape) == (4, 32, 24)
    assert set(np.unique(y.numpy())) <= {0, 2, 9, 13}
    assert np.all(np.isfinite(x.numpy()))


def test_patch_dataset_same_seed_same_batch_other_seed_differs():
    slices = _canvases()
    a = _first_batch(sp.make_patch_dataset(slices, patch_hw=(32, 24), batch_size=2, seed=5))
    b = _first_batch(sp.make_patch_dataset(slices, patch_hw=(32, 24), batch_size=2, seed=5))
    c = _first_batch(sp.make_patch_dataset(slices, patch_hw=(32, 24), batch_size=2, seed=6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def _constant_block_canvas():
    """64 x 64 canvas: grey 120 and class L4 in rows/cols 8..55, 0 elsewhere; the patch
    centre box is rows/cols 24..39, so a 16 x 16 patch lies inside the block."""
    image = np.zeros((1, 64, 64), np.uint8)
    mask = np.zeros((1, 64, 64), np.uint8)
    image[0, 8:56, 8:56] = 120
    mask[0, 8:56, 8:56] = labels.SEG_ID["L4"]
    return sp.ResampledSlices(image, mask, np.array([[64, 64]], np.int32),
                              np.array([[20.0, 50.0]], np.float32),
                              np.array([[24, 39, 24, 39]], np.float32), ["block"])


def test_patch_without_augmentation_copies_the_canvas():
    ds = sp.make_patch_dataset(_constant_block_canvas(), patch_hw=(16, 16), batch_size=8, seed=3,
                               augment=False, augment_cfg={"foreground_fraction": 1.0})
    x, y = _first_batch(ds)
    np.testing.assert_allclose(x, (120.0 - 20.0) / 50.0, atol=1e-4)   # = 2.0 everywhere
    assert np.all(y == labels.SEG_ID["L4"])


def test_patch_without_augmentation_is_a_pure_shift():
    # rows of grey 2 * r: a shift keeps the 2-per-row slope and constant rows exactly;
    # rotation or zoom would not
    image = np.repeat((2 * np.arange(64, dtype=np.uint8))[:, None], 64, axis=1)[None]
    slices = sp.ResampledSlices(image, np.zeros_like(image), np.array([[64, 64]], np.int32),
                                np.array([[0.0, 1.0]], np.float32),
                                np.array([[24, 39, 24, 39]], np.float32), ["ramp"])
    cfg = {"foreground_fraction": 1.0}
    x, _ = _first_batch(sp.make_patch_dataset(slices, patch_hw=(16, 16), batch_size=4, seed=0,
                                              augment=False, augment_cfg=cfg))
    np.testing.assert_allclose(np.diff(x[..., 0], axis=1), 2.0, atol=1e-3)
    np.testing.assert_allclose(np.diff(x[..., 0], axis=2), 0.0, atol=1e-3)
    x_aug, _ = _first_batch(sp.make_patch_dataset(slices, patch_hw=(16, 16), batch_size=4,
                                                  seed=0, augment=True, augment_cfg=cfg))
    assert not np.allclose(np.diff(x_aug[..., 0], axis=1), 2.0, atol=1e-3)


def test_patch_outside_the_canvas_is_grey_0_and_background():
    # a 48 x 48 patch of a 16 x 16 canvas: its corners are always outside
    image = np.full((1, 16, 16), 200, np.uint8)
    mask = np.full((1, 16, 16), labels.SEG_ID["L2"], np.uint8)
    slices = sp.ResampledSlices(image, mask, np.array([[16, 16]], np.int32),
                                np.array([[100.0, 50.0]], np.float32),
                                np.array([[0, 15, 0, 15]], np.float32), ["small"])
    x, y = _first_batch(sp.make_patch_dataset(slices, patch_hw=(48, 48), batch_size=2, seed=0,
                                              augment=False))
    for corner in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert x[(slice(None), *corner, 0)] == pytest.approx([-2.0, -2.0])   # (0 - 100) / 50
        assert np.all(y[(slice(None), *corner)] == 0)
    assert np.all((y == 0) | (y == labels.SEG_ID["L2"]))
    assert 0 < np.sum(y[0] > 0) <= 16 * 16


# === Whole-slice predictor ===
@pytest.mark.parametrize("shape_hw,spacing", [((70, 50), (0.5, 0.8)), ((96, 80), (1.2, 1.2))])
def test_unet_predictor_returns_probabilities_at_input_size(unet, shape_hw, spacing):
    predict = sp.make_spacing_predictor(unet, 1.0)
    image = np.random.default_rng(3).integers(0, 256, size=shape_hw).astype(np.uint8)
    probs = np.asarray(predict(image, np.asarray(spacing, np.float32)))
    assert probs.shape == (*shape_hw, C) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    assert probs.min() >= 0.0


def test_unet_predictor_at_target_spacing_equals_the_network_on_the_zscored_slice(unet):
    image = np.random.default_rng(4).integers(0, 256, size=(32, 24)).astype(np.uint8)
    probs = np.asarray(sp.make_spacing_predictor(unet, 0.5)(image, np.float32([0.5, 0.5])))
    z = (image.astype(np.float32) - image.mean()) / image.std()
    expected = unet(z[None, :, :, None], training=False).numpy()[0]
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_fixed_size_deeplab_predictor_returns_input_size(deeplab):
    assert deeplab.input_shape == (None, 64, 64, 1)
    predict = sp.make_spacing_predictor(deeplab, 1.0)
    image = np.random.default_rng(5).integers(0, 256, size=(70, 50)).astype(np.uint8)
    probs = np.asarray(predict(image, np.float32([1.0, 1.0])))   # padded to 96 x 64 inside
    assert probs.shape == (70, 50, C)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    probs2 = np.asarray(predict(image, np.float32([0.5, 0.5])))  # 35 x 25 -> padded 64 x 32
    assert probs2.shape == (70, 50, C)


def test_with_input_size_keeps_the_weights(deeplab, unet):
    same = with_input_size(deeplab, (64, 64))
    assert same is not deeplab and same.input_shape == (None, 64, 64, 1)
    x = np.random.default_rng(6).normal(size=(1, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(same(x, training=False).numpy(),
                               deeplab(x, training=False).numpy(), atol=1e-5)
    bigger = with_input_size(deeplab, (96, 64))
    assert bigger.output_shape == (None, 96, 64, C)
    for w_new, w_old in zip(bigger.get_weights(), deeplab.get_weights()):
        np.testing.assert_array_equal(w_new, w_old)
    fixed_unet = with_input_size(unet, (32, 32))
    assert fixed_unet.input_shape == (None, 32, 32, 1)
    y = np.random.default_rng(7).normal(size=(1, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(fixed_unet(y, training=False).numpy(),
                               unet(y, training=False).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        with_input_size(deeplab, (40, 40))


def test_fixed_size_predictor_follows_weight_updates():
    """The predictor of a fixed-size network rebuilds it per slice size; after the model's
    weights change (training between held-out evaluations) it must use the new weights."""
    model = DeepLabV3Plus(input_shape=(64, 64, 1), encoder="mini",
                                        encoder_filters=(4, 8, 8, 8), aspp_filters=4,
                                        low_level_filters=4, decoder_filters=4, atrous_rates=(1, 2, 3))
    predict = sp.make_spacing_predictor(model, 1.0)
    image = (np.arange(96 * 80) % 251).astype(np.uint8).reshape(96, 80)
    before = np.asarray(predict(image, np.float32([1.0, 1.0])))
    weights = model.get_weights()
    weights[-1] = weights[-1] + np.arange(weights[-1].size, dtype=np.float32).reshape(weights[-1].shape)
    model.set_weights(weights)
    after = np.asarray(predict(image, np.float32([1.0, 1.0])))
    assert not np.allclose(before, after)
    fresh = np.asarray(sp.make_spacing_predictor(model, 1.0)(image, np.float32([1.0, 1.0])))
    np.testing.assert_allclose(after, fresh, atol=1e-5)
