"""tf.data input pipeline for segmentation: examples -> (normalised image, class-id mask).

Input elements are the dicts of ``spoils_tf.data.tfds_builder.load_dataset``::

    {"image": uint8 [H, W, 1], "mask": uint8 [H, W, 1] class ids, "patient": string,
     "slice": int32, "pixel_spacing_mm": float32 [2], "key": string}

Output of :func:`make_seg_dataset`: ``(image float32 [B, S, S, 3], mask int32 [B, S, S])``.

Steps, in order: keep the fold's patients (and optional keys) -> resize or letterbox to the
model size (image bilinear, mask NEAREST neighbour so ids stay ids) -> cache (uint8) ->
shuffle -> augment (training folds only) -> batch -> grey to 3 channels + normalise -> prefetch.
With ``augment_on="device"`` the augment and normalise steps move into the train step
(``spoils_tf.data.augment_layers``) and the batches carry the cached uint8 slices.

Normalisation is defined once, in :func:`normalize_images`; the serving signature
(spoils_tf.export.serving) and ``spoils segment`` call the same function and the same
:func:`fit_to_model` / :func:`restore_resolution` pair.

Augmentation (:func:`augment`): a random affine (rotation, isotropic scale, shift; the mask
resampled NEAREST, outside filled with background) and intensity changes (contrast, brightness,
gamma). There is deliberately **no left-right flip**: in a sagittal slice the horizontal axis
is anterior-posterior, so a flip puts the vertebral bodies behind the spinal canal, an anatomy
that never occurs; the canal position and the level logic downstream rely on the canal being
posterior. (An up-down flip would likewise swap cranial and caudal and so every level name.)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf

from spoils_tf import labels

# Constants shared with TF-free code (configs, the Keras-3 backend-agnostic path).
from spoils_tf.data.seg_constants import (DEFAULT_AUGMENT, IMAGENET_CAFFE_MEAN_BGR,  # noqa: F401
                                          RESIZE_MODES)


# === Normalisation ===
def normalize_images(images: tf.Tensor) -> tf.Tensor:
    """The one image normalisation of spoils-tf.

    Args:
      images: ``uint8`` or float ``[..., H, W, 1|3]`` in 0..255 (greyscale is repeated to 3
        channels).

    Returns:
      ``float32 [..., H, W, 3]``: channels reversed to BGR minus ``IMAGENET_CAFFE_MEAN_BGR``.
    """
    x = tf.cast(images, tf.float32)
    mean_bgr = tf.constant(IMAGENET_CAFFE_MEAN_BGR, tf.float32)
    if x.shape[-1] == 1:
        # grey: B = G = R, so the reversal is a no-op and broadcasting makes the 3 channels
        # (the same numbers as concatenating, reversing and subtracting, without the slow
        # strided [..., ::-1] copy)
        return x - mean_bgr
    return tf.reverse(x, axis=[-1]) - mean_bgr


# === Geometry ===
def letterbox_geometry(in_h: tf.Tensor, in_w: tf.Tensor, out_h: int, out_w: int):
    """Where an ``in_h x in_w`` image lands when letterboxed into ``out_h x out_w``.

    Scale = min(out_h / in_h, out_w / in_w) (aspect ratio kept), centred.

    Returns:
      ``(new_h, new_w, top, left)`` int32 scalar tensors.
    """
    in_h = tf.cast(in_h, tf.float64)
    in_w = tf.cast(in_w, tf.float64)
    scale = tf.minimum(out_h / in_h, out_w / in_w)
    new_h = tf.clip_by_value(tf.cast(tf.round(in_h * scale), tf.int32), 1, out_h)
    new_w = tf.clip_by_value(tf.cast(tf.round(in_w * scale), tf.int32), 1, out_w)
    return new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2


def fit_to_model(image: tf.Tensor, size: Sequence[int], mode: str = "letterbox", *,
                 is_mask: bool = False) -> tf.Tensor:
    """Resizes ``[H, W, C]`` or ``[B, H, W, C]`` to ``size = (S_h, S_w)``.

    ``mode="letterbox"`` keeps the aspect ratio and pads with 0 (black / background);
    ``"resize"`` stretches. Images are interpolated bilinearly (float32 out), masks
    (``is_mask=True``) with NEAREST neighbour, keeping their dtype.

    Raises:
      ValueError: unknown mode.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    out_h, out_w = int(size[0]), int(size[1])
    method = tf.image.ResizeMethod.NEAREST_NEIGHBOR if is_mask else tf.image.ResizeMethod.BILINEAR
    dtype = image.dtype
    shape = tf.shape(image)
    in_h, in_w = shape[-3], shape[-2]
    if mode == "resize":
        out = tf.image.resize(image, (out_h, out_w), method=method)
    else:
        new_h, new_w, top, left = letterbox_geometry(in_h, in_w, out_h, out_w)
        out = tf.image.resize(image, tf.stack([new_h, new_w]), method=method)
        out = tf.image.pad_to_bounding_box(out, top, left, out_h, out_w)
    if is_mask:
        return tf.cast(out, dtype)
    return tf.cast(out, tf.float32)


def prepare_images(images: tf.Tensor, size: Sequence[int], mode: str = "letterbox") -> tf.Tensor:
    """``uint8 [(B,) H, W, C]`` -> ``uint8 [(B,) S_h, S_w, C]``: :func:`fit_to_model`, rounded.

    The one resampling of images before :func:`normalize_images`, shared by training
    (cached as uint8) and inference, so both see identical pixels.
    """
    out = fit_to_model(images, size, mode)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def restore_resolution(probs: tf.Tensor, in_h: tf.Tensor, in_w: tf.Tensor,
                       mode: str = "letterbox") -> tf.Tensor:
    """Inverse of :func:`fit_to_model` for model outputs.

    Args:
      probs: ``float32 [B, S_h, S_w, C]`` at the model resolution.
      in_h, in_w: the original image size.

    Returns:
      ``float32 [B, in_h, in_w, C]``: the letterbox padding cropped away, then bilinear resize.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "letterbox":
        out_h, out_w = int(probs.shape[1]), int(probs.shape[2])
        new_h, new_w, top, left = letterbox_geometry(in_h, in_w, out_h, out_w)
        probs = probs[:, top:top + new_h, left:left + new_w, :]
    return tf.image.resize(probs, tf.stack([in_h, in_w]), method="bilinear")


def make_predictor(model, resize_mode: str = "letterbox"):
    """The inference path around a segmentation model, for images of any size.

    Returns a ``tf.function`` taking ``uint8 [B, H, W, 3]`` (any H, W; one size per batch) and
    returning ``{"probabilities": float32 [B, H, W, C], "label_map": int32 [B, H, W]}`` at the
    input resolution: :func:`prepare_images` -> :func:`normalize_images` -> model ->
    :func:`restore_resolution` -> argmax. Used by evaluation, export and ``spoils segment``.
    """
    size = tuple(int(s) for s in model.input_shape[1:3])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
                 jit_compile=False)
    def predict(images):
        shape = tf.shape(images)
        x = normalize_images(prepare_images(images, size, resize_mode))
        probs = tf.cast(model(x, training=False), tf.float32)
        probs = restore_resolution(probs, shape[1], shape[2], resize_mode)
        return {"probabilities": probs,
                "label_map": tf.argmax(probs, axis=-1, output_type=tf.int32)}

    return predict


# === Augmentation ===
def _affine_matrix(seed: tf.Tensor, height: int, width: int, cfg: Mapping[str, float]):
    """Output->input projective transform (8 numbers) of a random rotation/scale/shift."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    max_rad = math.radians(float(cfg.get("rotation_deg", 0.0)))
    angle = tf.random.stateless_uniform([], seeds[0], -max_rad, max_rad)
    s = float(cfg.get("scale", 0.0))
    scale = tf.random.stateless_uniform([], seeds[1], 1.0 - s, 1.0 + s)
    t = float(cfg.get("shift", 0.0))
    dy = tf.random.stateless_uniform([], seeds[2], -t, t) * height
    dx = tf.random.stateless_uniform([], seeds[3], -t, t) * width
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # input = R(-angle) / scale @ (output - centre - shift) + centre
    a0, a1 = cos, sin
    b0, b1 = -sin, cos
    ox, oy = -(cx + dx), -(cy + dy)
    a2 = a0 * ox + a1 * oy + cx
    b2 = b0 * ox + b1 * oy + cy
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[None, :]


def augment(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
            cfg: Optional[Mapping[str, float]] = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Random affine + intensity augmentation of one example (deterministic given ``seed``).

    Args:
      image: ``float32 [S, S, 1]`` in 0..255 (static size).
      mask: ``uint8 [S, S, 1]`` class ids.
      seed: ``int64 [2]`` stateless seed.
      cfg: magnitudes, keys of ``DEFAULT_AUGMENT`` (missing keys = 0 = off).

    Returns:
      ``(image float32 [S, S, 1] clipped to 0..255, mask uint8 [S, S, 1])``; the mask only
      contains ids that were in the input mask or 0 (NEAREST sampling, background fill).
    """
    cfg = DEFAULT_AUGMENT if cfg is None else cfg
    height, width = int(image.shape[0]), int(image.shape[1])
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    transform = _affine_matrix(seeds[0], height, width, cfg)
    out_shape = tf.constant([height, width], tf.int32)

    def warp(x, interpolation):
        return tf.raw_ops.ImageProjectiveTransformV3(
                images=x[None], transforms=transform, output_shape=out_shape,
                fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")[0]

    image = warp(tf.cast(image, tf.float32), "BILINEAR")
    mask = warp(tf.cast(mask, tf.uint8), "NEAREST")   # nearest copies ids: no float round trip

    c = float(cfg.get("contrast", 0.0))
    b = float(cfg.get("brightness", 0.0))
    g = float(cfg.get("gamma", 0.0))
    contrast = tf.random.stateless_uniform([], seeds[1], 1.0 - c, 1.0 + c)
    brightness = tf.random.stateless_uniform([], seeds[2], -b, b) * 255.0
    gamma = tf.random.stateless_uniform([], seeds[3], 1.0 - g, 1.0 + g)
    mean = tf.reduce_mean(image)
    image = (image - mean) * contrast + mean + brightness
    image = 255.0 * tf.pow(tf.clip_by_value(image, 0.0, 255.0) / 255.0, gamma)
    return tf.clip_by_value(image, 0.0, 255.0), mask


# === Pipeline ===
def _in_set(value: tf.Tensor, allowed: Sequence[str]) -> tf.Tensor:
    return tf.reduce_any(tf.equal(value, tf.constant(list(allowed), tf.string)))


def make_seg_dataset(examples: tf.data.Dataset, *, image_size: Sequence[int],
                     batch_size: int, training: bool,
                     patients: Optional[Sequence[str]] = None,
                     keys: Optional[Sequence[str]] = None,
                     resize_mode: str = "letterbox",
                     augment_cfg: Optional[Mapping[str, float]] = None,
                     cache: Optional[str] = "", shuffle_buffer: int = 512,
                     seed: int = 0, repeat: bool = False, augment_on: str = "host",
                     num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Builds the training or evaluation pipeline.

    Args:
      examples: dataset of the example dicts above (unbatched).
      image_size: model input ``(S_h, S_w)``.
      batch_size: examples per batch (the last batch may be smaller).
      training: shuffle and augment when True; never augment otherwise.
      patients: keep only these patient ids (a fold's split); None = all.
      keys: keep only these example keys; None = all.
      resize_mode: ``"letterbox"`` or ``"resize"`` (see :func:`fit_to_model`).
      augment_cfg: augmentation magnitudes (default ``DEFAULT_AUGMENT``); ``{}`` = none.
      cache: ``""`` in memory, a file path prefix, or None for no cache.
      shuffle_buffer, seed: shuffling (and augmentation seeds, fresh every epoch).
      repeat: repeat forever (for ``steps_per_epoch`` training).
      augment_on: ``"host"`` augments here (:func:`augment`, per example) and normalises;
        ``"device"`` leaves both to the train step (``spoils_tf.data.augment_layers``): the
        batches carry the cached uint8 slices.
      num_parallel_calls: parallelism of the per-example maps (``tf.data.AUTOTUNE`` or n).

    Returns:
      ``augment_on="host"``: ``(image float32 [B, S_h, S_w, 3], mask int32 [B, S_h, S_w])``;
      ``"device"``: ``(image uint8 [B, S_h, S_w, 1], mask int32 [B, S_h, S_w])``, whose
      ``normalize_images`` is the host path's image when nothing is augmented.

    Raises:
      ValueError: an empty ``patients`` / ``keys`` list (a fold with nothing in it), an
        unknown resize mode or ``augment_on``. At iteration time, ``tf.errors.InvalidArgumentError`` names the
        example key whose mask has an id >= ``labels.NUM_SEG_CLASSES``.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if augment_on not in ("host", "device"):
        raise ValueError(f"augment_on must be 'host' or 'device', got {augment_on!r}")
    ds = examples
    if patients is not None:
        if not len(patients):
            raise ValueError("patients: empty list; a fold split must name at least one patient")
        patients = [str(p) for p in patients]
        ds = ds.filter(lambda ex: _in_set(ex["patient"], patients))
    if keys is not None:
        if not len(keys):
            raise ValueError("keys: empty list; expected at least one example key")
        keys = [str(k) for k in keys]
        ds = ds.filter(lambda ex: _in_set(ex["key"], keys))
    size = (int(image_size[0]), int(image_size[1]))

    def prepare(ex: Mapping[str, Any]):
        mask = tf.cast(ex["mask"], tf.uint8)
        check = tf.debugging.assert_less(
                tf.cast(tf.reduce_max(mask), tf.int32), labels.NUM_SEG_CLASSES,
                message=tf.strings.join(["mask of example ", ex["key"], " has class ids >= ",
                                         str(labels.NUM_SEG_CLASSES)]))
        with tf.control_dependencies([check]):
            image = prepare_images(ex["image"][..., :1], size, resize_mode)
            mask = fit_to_model(mask[..., :1], size, resize_mode, is_mask=True)
        return tf.ensure_shape(image, size + (1,)), tf.ensure_shape(mask, size + (1,))

    ds = ds.map(prepare, num_parallel_calls=num_parallel_calls)
    if cache is not None:
        ds = ds.cache(cache)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if augment_on == "host" and (augment_cfg is None or len(augment_cfg)):
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                    lambda pair, s: augment(pair[0], pair[1], s, augment_cfg),
                    num_parallel_calls=num_parallel_calls)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    if augment_on == "device":
        ds = ds.map(lambda img, m: (img, tf.cast(m[..., 0], tf.int32)))
    else:
        ds = ds.map(lambda img, m: (normalize_images(img), tf.cast(m[..., 0], tf.int32)),
                    num_parallel_calls=num_parallel_calls)
    return ds.prefetch(tf.data.AUTOTUNE)
