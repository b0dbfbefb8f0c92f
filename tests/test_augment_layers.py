"""Device-side augmentation (spoils_tf.data.augment_layers) and the uint8 pipeline path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from spoils_tf import labels
from spoils_tf.data import augment_layers as al
from spoils_tf.data import seg_pipeline as sp

GEOMETRY_ONLY = {"rotation_deg": 20.0, "scale": 0.15, "shift": 0.1}
STRONG = {**GEOMETRY_ONLY, "contrast": 0.5, "brightness": 0.2, "gamma": 0.5}


def _block_masks(batch=4, size=48, block=8, seed=0):
    """``int32 [B, S, S]``: blocks of 8 x 8 pixels with random ids 1..13."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, labels.NUM_SEG_CLASSES, (batch, size // block, size // block))
    return np.kron(ids, np.ones((block, block), np.int64)).astype(np.int32)


def _warp(images, transforms, interpolation="nearest"):
    return keras.ops.image.affine_transform(tf.constant(images, tf.float32), transforms,
                                            interpolation=interpolation).numpy()


# === Geometry, checked by hand ===
def test_shift_maps_a_known_pixel():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 3, 2, 0] = 200.0
    t = al.affine_transforms([0.0], [1.0], [2.0], [3.0], 9, 9)   # down 2, right 3
    out = _warp(image, t)
    assert out[0, 5, 5, 0] == 200.0 and out.sum() == 200.0


def test_rotation_by_90_degrees_turns_the_top_to_the_right():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 1, 4, 0] = 100.0           # 3 pixels above the centre (4, 4)
    t = al.affine_transforms([math.pi / 2], [1.0], [0.0], [0.0], 9, 9)
    out = _warp(image, t)
    assert out[0, 4, 7, 0] == 100.0 and out.sum() == 100.0   # 3 pixels right of the centre


def test_zoom_2_doubles_distances_from_the_centre():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 4, 5, 0] = 50.0            # 1 pixel right of the centre
    out = _warp(image, al.affine_transforms([0.0], [2.0], [0.0], [0.0], 9, 9))
    assert out[0, 4, 6, 0] == 50.0 and out[0, 4, 4, 0] == 0.0


# === The layer ===
def test_training_false_is_the_identity():
    masks = _block_masks()
    images = (masks[..., None] * 18).astype(np.uint8)
    out_images, out_masks = al.SegAugment(STRONG, seed=1)((images, masks), training=False)
    assert out_images.dtype == "float32"
    np.testing.assert_array_equal(np.asarray(out_images), images.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(out_masks), masks)


def test_all_magnitudes_zero_is_the_identity_in_training():
    masks = _block_masks()
    images = np.random.default_rng(3).integers(0, 256, masks.shape + (1,)).astype(np.uint8)
    layer = al.SegAugment({}, seed=1)
    out_images, out_masks = layer((images, masks), training=True)
    np.testing.assert_allclose(np.asarray(out_images), images.astype(np.float32), atol=1e-3)
    np.testing.assert_array_equal(np.asarray(out_masks), masks)


def test_image_and_mask_get_the_same_geometric_transform():
    """The image is the mask's ids x 18: wherever the warped mask is constant in a 5 x 5
    neighbourhood, the bilinear image must read 18 x that id."""
    masks = _block_masks(batch=6)
    images = (masks[..., None] * 18).astype(np.uint8)
    out_images, out_masks = al.SegAugment(GEOMETRY_ONLY, seed=7)((images, masks),
                                                                   training=True)
    out_images, out_masks = np.asarray(out_images)[..., 0], np.asarray(out_masks)
    assert not np.array_equal(out_masks, masks)            # something moved
    checked = 0
    for b in range(masks.shape[0]):
        m = out_masks[b]
        for r in range(2, m.shape[0] - 2):
            for c in range(2, m.shape[1] - 2):
                window = m[r - 2:r + 3, c - 2:c + 3]
                if m[r, c] and (window == m[r, c]).all():
                    assert abs(out_images[b, r, c] - 18.0 * m[r, c]) < 0.01, (b, r, c)
                    checked += 1
    assert checked > 1000


def test_masks_keep_dtype_shape_and_only_their_ids():
    masks = _block_masks(batch=8)
    images = np.random.default_rng(1).integers(0, 256, masks.shape + (1,)).astype(np.uint8)
    layer = al.SegAugment(STRONG, seed=2)
    for m in (masks, masks[..., None].astype(np.uint8)):
        out_images, out_masks = layer((images, m), training=True)
        out_masks = np.asarray(out_masks)
        assert out_masks.dtype == m.dtype and out_masks.shape == m.shape
        assert set(np.unique(out_masks)) <= set(np.unique(m)) | {0}
        assert len(set(np.unique(out_masks))) >= len(set(np.unique(m))) - 2
        x = np.asarray(out_images)
        assert x.shape == images.shape and 0.0 <= x.min() and x.max() <= 255.0


def test_fresh_draws_per_call_and_per_example():
    masks = _block_masks(batch=2)
    masks[1] = masks[0]
    images = (masks[..., None] * 18).astype(np.uint8)
    layer = al.SegAugment(GEOMETRY_ONLY, seed=4)
    first = np.asarray(layer((images, masks), training=True)[1])
    second = np.asarray(layer((images, masks), training=True)[1])
    assert not np.array_equal(first[0], first[1])       # same input, other transform
    assert not np.array_equal(first, second)


def test_unknown_key_and_bad_shape_are_refused():
    with pytest.raises(ValueError, match="flip"):
        al.SegAugment({"flip": 1.0})
    with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
        al.SegAugment()((np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.int32)),
                        training=True)


def test_layer_config_round_trip():
    layer = al.SegAugment({"rotation_deg": 5.0}, seed=3)
    again = al.SegAugment.from_config(layer.get_config())
    assert again.augment_cfg == {"rotation_deg": 5.0} and again.seed == 3


def test_normalize_images_equals_the_tf_pipeline():
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 1)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(al.normalize_images(x)),
                                  sp.normalize_images(tf.constant(x)).numpy())


# === The uint8 pipeline path ===
def _examples(n=6, h=80, w=64):
    rng = np.random.default_rng(0)
    mask = (np.arange(h)[:, None] * labels.NUM_SEG_CLASSES // h).repeat(w, 1)
    return tf.data.Dataset.from_tensor_slices({
            "image": rng.integers(0, 256, (n, h, w, 1), dtype=np.uint8),
            "mask": np.repeat(mask[None, ..., None], n, 0).astype(np.uint8),
            "patient": [f"p{i % 3}" for i in range(n)], "slice": np.arange(n, dtype=np.int32),
            "pixel_spacing_mm": np.full((n, 2), 0.5, np.float32),
            "key": [f"k{i}" for i in range(n)]})


@pytest.mark.parametrize("training", [False, True])
def test_device_path_yields_the_host_path_examples_as_uint8(training):
    kw = dict(image_size=(32, 32), batch_size=4, training=training, augment_cfg={}, seed=5)
    host = list(sp.make_seg_dataset(_examples(), **kw))
    device = list(sp.make_seg_dataset(_examples(), augment_on="device",
                                      num_parallel_calls=1, **kw))
    assert len(host) == len(device) == 2
    for (h_img, h_mask), (d_img, d_mask) in zip(host, device):
        assert d_img.dtype == tf.uint8 and d_img.shape[1:] == (32, 32, 1)
        assert d_mask.dtype == tf.int32
        np.testing.assert_array_equal(sp.normalize_images(d_img).numpy(), h_img.numpy())
        np.testing.assert_array_equal(d_mask.numpy(), h_mask.numpy())


def test_device_path_does_not_augment_on_the_host():
    kw = dict(image_size=(32, 32), batch_size=6, training=True, seed=5)
    plain = next(iter(sp.make_seg_dataset(_examples(), augment_cfg={}, **kw)))
    device = next(iter(sp.make_seg_dataset(_examples(), augment_on="device", **kw)))
    np.testing.assert_array_equal(sp.normalize_images(device[0]).numpy(), plain[0].numpy())


def test_unknown_augment_on_is_refused():
    with pytest.raises(ValueError, match="augment_on"):
        sp.make_seg_dataset(_examples(), image_size=(32, 32), batch_size=2, training=True,
                            augment_on="gpu")


# === Training with the wrapper ===
def test_device_augmented_model_trains_the_wrapped_network():
    from spoils_tf.models.unet import UNet
    keras.utils.set_random_seed(0)
    network = UNet(input_shape=(32, 32, 3), filters=(4, 8))
    model = al.DeviceAugmentedModel(network, STRONG, seed=0)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy())
    ds = sp.make_seg_dataset(_examples(), image_size=(32, 32), batch_size=3, training=True,
                             augment_on="device")
    before = [w.copy() for w in network.get_weights()]
    history = model.fit(ds, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, network.get_weights()))
    x = next(iter(ds))[0]
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               network.predict(sp.normalize_images(x), verbose=0), atol=1e-5)


def test_jit_compile_falls_back_instead_of_failing():
    """TensorFlow's affine warp has no XLA kernel: jit_compile=True must not break fit."""
    from spoils_tf.models.unet import UNet
    model = al.DeviceAugmentedModel(UNet(input_shape=(32, 32, 3), filters=(4, 8)), seed=0)
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(),
                      jit_compile=True)
    assert model.jit_compile is False
    ds = sp.make_seg_dataset(_examples(), image_size=(32, 32), batch_size=3, training=True,
                             augment_on="device")
    assert np.isfinite(model.fit(ds, epochs=1, verbose=0).history["loss"]).all()


# === Under JAX ===
_JAX_SCRIPT = textwrap.dedent("""
    import json, numpy as np, keras
    from spoils_tf.data import augment_layers as al
    layer = al.SegAugment({"rotation_deg": 20.0, "shift": 0.1, "contrast": 0.3}, seed=0)
    masks = np.kron(np.arange(16).reshape(1, 4, 4) % 14, np.ones((8, 8), int)).astype("int32")
    masks = np.repeat(masks, 2, 0)
    images = (masks[..., None] * 18).astype("uint8")
    layer.build(None)
    (x, m), state = layer.stateless_call([], [v.value for v in layer.non_trainable_variables],
                                         (images, masks), training=True)
    print(json.dumps({"backend": keras.backend.backend(), "image_shape": list(x.shape),
                      "mask_dtype": str(m.dtype), "ids": sorted(set(np.unique(m).tolist())),
                      "moved": bool((np.asarray(m) != masks).any())}))
""")


def test_the_layer_runs_under_the_jax_backend():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=180, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax" and out["image_shape"] == [2, 32, 32, 1]
    assert out["mask_dtype"] == "int32" and set(out["ids"]) <= set(range(14)) and out["moved"]


def test_seg_lib_trains_a_fold_with_device_augmentation(tmp_path):
    """``config.data.augment_on="device"``: the fold trains through the wrapper and the saved
    model is the plain network (float32 [B, S, S, 3] in, as every predictor expects)."""
    from configs import seg_unet
    from spoils_tf.train import seg_lib
    import spoils_tf.models
    c = seg_unet.get_config("smoke")
    c.data.augment_on = "device"
    c.data.image_size = (32, 32)
    c.train.epochs = 1
    c.train.verbose = 0
    metrics = seg_lib.train_fold(c, tmp_path, _examples(), ["p0", "p1"], ["p2"])
    assert metrics["slices"] == 2.0 and np.isfinite(metrics["train_loss_first"])
    saved = spoils_tf.models.load_model(tmp_path / "model.keras")
    assert not isinstance(saved, al.DeviceAugmentedModel)
    assert tuple(saved.input_shape) == (None, 32, 32, 3)


# === The host path's faster steps give the same numbers ===
def test_normalize_images_equals_concatenate_reverse_subtract():
    rng = np.random.default_rng(1)
    mean = tf.constant(sp.IMAGENET_CAFFE_MEAN_BGR, tf.float32)
    for shape in [(2, 9, 7, 1), (9, 7, 1), (2, 9, 7, 3)]:
        x = rng.integers(0, 256, shape).astype(np.uint8)
        xf = tf.cast(x, tf.float32)
        rgb = tf.concat([xf, xf, xf], -1) if shape[-1] == 1 else xf
        np.testing.assert_array_equal(sp.normalize_images(tf.constant(x)).numpy(),
                                      (rgb[..., ::-1] - mean).numpy())


def test_host_augment_mask_equals_the_float_round_trip():
    """``seg_pipeline.augment`` warps the uint8 mask directly; nearest sampling through float32
    and back gives the same ids."""
    rng = np.random.default_rng(2)
    image = tf.constant(rng.integers(0, 256, (48, 40, 1)).astype(np.float32))
    mask = tf.constant(rng.integers(0, labels.NUM_SEG_CLASSES, (48, 40, 1)).astype(np.uint8))
    seed = tf.constant([7, 8], tf.int64)
    _, out = sp.augment(image, mask, seed, STRONG)
    transform = sp._affine_matrix(tf.random.experimental.stateless_split(seed, 4)[0], 48, 40,
                                  STRONG)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(mask, tf.float32)[None], transforms=transform,
            output_shape=tf.constant([48, 40]), fill_value=0.0, interpolation="NEAREST",
            fill_mode="CONSTANT")[0]
    assert out.dtype == tf.uint8
    np.testing.assert_array_equal(out.numpy(), tf.cast(expected, tf.uint8).numpy())
    assert not np.array_equal(out.numpy(), mask.numpy())


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from spoils_tf.data import augment_layers as al
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = al.SegAugment(seed=0)
    step = tf.function(lambda: strategy.run(lambda: layer._transforms(3, 32, 32)))
    runs = [[v.numpy().tolist() for v in strategy.experimental_local_results(step())]
            for _ in range(2)]
    print(json.dumps(runs))
""")


def test_replicas_of_a_mirrored_strategy_draw_their_own_transforms():
    """The replicas share the layer's seed state; each must still augment its own examples
    differently (not repeat replica 0's transforms)."""
    proc = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    for replica0, replica1 in runs:
        assert np.asarray(replica0).shape == (3, 8)
        assert not np.allclose(replica0, replica1)
    assert not np.allclose(runs[0][0], runs[1][0])      # fresh draws per step
