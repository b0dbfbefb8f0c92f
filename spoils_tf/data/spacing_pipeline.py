"""Fixed-spacing segmentation pipeline: every slice resampled to one physical pixel size.

Scans from different sites come at 0.3-0.8 mm per pixel and in different fields of view; a
network trained on SPIDER (0.47 mm, 512 x 640) sees another site's slice as SPIDER only if
the slice is first brought to the same millimetres per pixel (nnU-Net's target spacing).
This module is the one place that does so, for training and for inference:

* :func:`resample_to_spacing`: ``[H, W, C]`` at ``spacing_mm`` -> ``[h, w, C]`` at
  ``target_mm`` (images bilinear with antialiasing, masks nearest neighbour).
* :func:`image_stats` / :func:`standardize`: z-score with the mean and SD of the whole
  resampled slice (computed before cropping and padding, so a patch and the full slice are
  scaled alike).
* :func:`make_patch_dataset`: random patches of the resampled training slices with spatial
  and intensity augmentation for other scanners and sequences -> ``(float32 [B, Ph, Pw, 1],
  int32 [B, Ph, Pw])``.
* :func:`make_spacing_predictor`: ``(uint8 [H, W], spacing_mm [2]) -> float32 [H, W, C]``
  probabilities at the input resolution; the export and ``spoils segment`` use it.

Orientation: slices are in the display orientation (superior at the top, anterior on the
left). Augmentation never flips: a flip swaps anterior/posterior or cranial/caudal and with
them every level name (``spoils_tf.levels`` reads the orientation instead).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from spoils_tf.models import with_input_size

# Augmentation magnitudes (TF-free module, shared with configs/base.py).
from spoils_tf.data.seg_constants import DEFAULT_PATCH_AUGMENT  # noqa: F401


# === Resampling ===
def resampled_size(shape_hw: Sequence[int], spacing_mm: Sequence[float],
                   target_mm: float) -> tuple[int, int]:
    """``(h, w)`` of an ``H x W`` slice at ``spacing_mm`` resampled to ``target_mm`` pixels."""
    return (max(1, int(round(shape_hw[0] * float(spacing_mm[0]) / target_mm))),
            max(1, int(round(shape_hw[1] * float(spacing_mm[1]) / target_mm))))


def resample_to_spacing(image: tf.Tensor, spacing_mm: tf.Tensor, target_mm: float, *,
                        is_mask: bool = False) -> tf.Tensor:
    """Resamples ``[H, W, C]`` (or a batch ``[N, H, W, C]`` of slices with one spacing) with
    pixel size ``spacing_mm = (row_mm, col_mm)`` to square ``target_mm`` pixels.

    Images are interpolated bilinearly with antialiasing (float32 out, same value range);
    masks (``is_mask``) by nearest neighbour, keeping their dtype.
    """
    shape = tf.shape(image)
    spacing = tf.cast(spacing_mm, tf.float32)
    h = tf.maximum(1, tf.cast(tf.round(tf.cast(shape[-3], tf.float32) * spacing[0] / target_mm), tf.int32))
    w = tf.maximum(1, tf.cast(tf.round(tf.cast(shape[-2], tf.float32) * spacing[1] / target_mm), tf.int32))
    if is_mask:
        out = tf.image.resize(image, tf.stack([h, w]), method="nearest")
        return tf.cast(out, image.dtype)
    return tf.image.resize(tf.cast(image, tf.float32), tf.stack([h, w]), method="bilinear",
                           antialias=True)


def image_stats(image: tf.Tensor) -> tf.Tensor:
    """``float32 [2]`` = (mean, SD) of a slice's grey values; SD floored at 1 grey level."""
    x = tf.cast(image, tf.float32)
    return tf.stack([tf.reduce_mean(x), tf.maximum(tf.math.reduce_std(x), 1.0)])


def standardize(image: tf.Tensor, stats: tf.Tensor) -> tf.Tensor:
    """``(image - mean) / SD`` with ``stats`` from :func:`image_stats` (float32)."""
    stats = tf.cast(stats, tf.float32)
    return (tf.cast(image, tf.float32) - stats[..., 0]) / stats[..., 1]


# === Training data in memory ===
class ResampledSlices:
    """Training slices resampled to ``target_mm``, padded to one canvas, in memory.

    Attributes:
      images, masks: ``uint8 [N, Hc, Wc]`` (zero padding at the bottom and right).
      sizes: ``int32 [N, 2]`` resampled (h, w) of each slice inside its canvas.
      stats: ``float32 [N, 2]`` (mean, SD) of each resampled slice (:func:`image_stats`).
      boxes: ``float32 [N, 4]`` (row0, row1, col0, col1) of the labelled pixels (the whole
        slice when the mask is empty).
      keys: example keys, in order.
    """

    def __init__(self, images, masks, sizes, stats, boxes, keys):
        self.images, self.masks, self.sizes = images, masks, sizes
        self.stats, self.boxes, self.keys = stats, boxes, list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_examples(cls, examples, target_mm: float, *, patients: Optional[Sequence[str]] = None,
                      keys: Optional[Sequence[str]] = None, progress: bool = False
                      ) -> "ResampledSlices":
        """Reads the example dicts of ``tfds_builder.load_dataset`` (image/mask ``uint8 [H, W, 1]``,
        ``pixel_spacing_mm``) of the given patients / keys and resamples them.

        Raises:
          ValueError: no example selected, or an example without a finite pixel spacing (its key).
        """
        patients = None if patients is None else {str(p) for p in patients}
        keys = None if keys is None else {str(k) for k in keys}
        items = []
        it = examples.as_numpy_iterator()
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, desc="resample slices", unit="slice")
        for ex in it:
            key, patient = ex["key"].decode(), ex["patient"].decode()
            if (patients is not None and patient not in patients) or (keys is not None and key not in keys):
                continue
            spacing = np.asarray(ex["pixel_spacing_mm"], np.float32)
            if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
                raise ValueError(f"example {key}: pixel_spacing_mm {spacing.tolist()} is not a "
                                 "positive number; give the spacing in patients.csv")
            img = resample_to_spacing(ex["image"][..., :1], spacing, target_mm).numpy()
            img = np.clip(np.round(img[..., 0]), 0, 255).astype(np.uint8)
            msk = resample_to_spacing(ex["mask"][..., :1], spacing, target_mm, is_mask=True).numpy()[..., 0]
            items.append((key, img, msk))
        if not items:
            raise ValueError("no training slice selected (empty fold or key list)")
        items.sort(key=lambda t: t[0])
        hc = max(i[1].shape[0] for i in items)
        wc = max(i[1].shape[1] for i in items)
        n = len(items)
        images = np.zeros((n, hc, wc), np.uint8)
        masks = np.zeros((n, hc, wc), np.uint8)
        sizes = np.zeros((n, 2), np.int32)
        stats = np.zeros((n, 2), np.float32)
        boxes = np.zeros((n, 4), np.float32)
        for i, (_, img, msk) in enumerate(items):
            h, w = img.shape
            images[i, :h, :w], masks[i, :h, :w] = img, msk
            sizes[i] = (h, w)
            stats[i] = image_stats(img).numpy()
            rows, cols = np.nonzero(msk)
            boxes[i] = ((rows.min(), rows.max(), cols.min(), cols.max()) if rows.size
                        else (0, h - 1, 0, w - 1))
        return cls(images, masks, sizes, stats, boxes, [i[0] for i in items])


# === Augmentation ===
def _u(seed, lo, hi):
    return tf.random.stateless_uniform([], seed, lo, hi)


def _maybe(seed, p, fn, x):
    return tf.cond(_u(seed, 0.0, 1.0) < p, lambda: fn(x), lambda: x)


def _gaussian_blur(x: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian blur of ``float32 [H, W, 1]`` (7-tap kernel)."""
    t = tf.range(-3.0, 4.0)
    k = tf.exp(-0.5 * tf.square(t / sigma))
    k = k / tf.reduce_sum(k)
    y = tf.nn.conv2d(x[None], tf.reshape(k, [7, 1, 1, 1]), 1, "SAME")
    return tf.nn.conv2d(y, tf.reshape(k, [1, 7, 1, 1]), 1, "SAME")[0]


def _patch_transform(seed, center_rc, patch_hw, cfg):
    """Output->input projective transform (8 numbers): patch pixel -> canvas pixel, with a
    random rotation and (anisotropic) zoom about the patch centre placed at ``center_rc``."""
    s = tf.random.experimental.stateless_split(seed, 4)
    angle = _u(s[0], -1.0, 1.0) * math.radians(float(cfg["rotation_deg"]))
    zoom = tf.exp(_u(s[1], math.log(cfg["scale_min"]), math.log(cfg["scale_max"])))
    a = float(cfg["anisotropy"])
    ratio = _u(s[2], 1.0 - a, 1.0 + a)
    zy, zx = zoom * tf.sqrt(ratio), zoom / tf.sqrt(ratio)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # input = centre + R(angle) @ diag(1/zx, 1/zy) @ (output - patch centre)
    a0, a1 = cos / zx, -sin / zy
    b0, b1 = sin / zx, cos / zy
    pcy, pcx = (patch_hw[0] - 1) / 2.0, (patch_hw[1] - 1) / 2.0
    a2 = center_rc[1] - a0 * pcx - a1 * pcy
    b2 = center_rc[0] - b0 * pcx - b1 * pcy
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[None, :]


def _intensity(x: tf.Tensor, seed, cfg) -> tf.Tensor:
    """Intensity augmentation of ``float32 [H, W, 1]`` grey values (0..255 scale)."""
    s = tf.random.experimental.stateless_split(seed, 16)
    hw = tf.shape(x)[:2]

    def low_res(v):
        f = _u(s[1], 1.0, float(cfg["low_res_max"]))
        small = tf.maximum(1, tf.cast(tf.cast(hw, tf.float32) / f, tf.int32))
        return tf.image.resize(tf.image.resize(v, small, "bilinear"), hw, "bilinear")

    def blur(v):
        return _gaussian_blur(v, _u(s[3], 0.5, float(cfg["blur_sigma_max"])))

    def bias(v):
        field = tf.random.stateless_normal([1, 4, 4, 1], s[5], 0.0, float(cfg["bias_field"]))
        return v * tf.exp(tf.image.resize(field, hw, "bicubic")[0])

    def gamma(v):
        g = tf.exp(_u(s[7], math.log(cfg["gamma_min"]), math.log(cfg["gamma_max"])))
        top = tf.maximum(tf.reduce_max(v), 1.0)
        return top * tf.pow(tf.clip_by_value(v / top, 0.0, 1.0), g)

    def contrast(v):
        m = tf.reduce_mean(v)
        return (v - m) * _u(s[9], 1.0 - cfg["contrast"], 1.0 + cfg["contrast"]) + m

    def gain(v):
        return v * _u(s[11], 1.0 - cfg["gain"], 1.0 + cfg["gain"])

    def noise(v):
        sd = _u(s[13], 0.0, float(cfg["noise"])) * 255.0
        return v + tf.random.stateless_normal(tf.shape(v), s[14], 0.0, 1.0) * sd

    x = _maybe(s[0], cfg["p_low_res"], low_res, x)
    x = _maybe(s[2], cfg["p_blur"], blur, x)
    x = _maybe(s[4], cfg["p_bias_field"], bias, x)
    x = _maybe(s[6], cfg["p_gamma"], gamma, x)
    x = _maybe(s[8], cfg["p_contrast"], contrast, x)
    x = _maybe(s[10], cfg["p_gain"], gain, x)
    x = _maybe(s[12], cfg["p_noise"], noise, x)
    return tf.maximum(x, 0.0)


def sample_patch(image, mask, size, stats, box, seed, patch_hw: Sequence[int],
                 cfg: Mapping[str, float], augment: bool = True):
    """One training patch from one canvas.

    Args:
      image, mask: ``uint8 [Hc, Wc]`` canvas (``ResampledSlices``).
      size: ``int32 [2]`` valid (h, w); stats: ``float32 [2]``; box: ``float32 [4]``.
      seed: ``int64 [2]`` stateless seed.
      patch_hw: output ``(Ph, Pw)``.
      cfg: ``DEFAULT_PATCH_AUGMENT``-like magnitudes.
      augment: False = no rotation/zoom/intensity change (the centre is still random).

    Returns:
      ``(float32 [Ph, Pw, 1] standardised, int32 [Ph, Pw] class ids)``; outside the slice is
      grey 0 (before standardisation) and background.
    """
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    size_f = tf.cast(size, tf.float32)
    in_box = _u(s[0], 0.0, 1.0) < float(cfg["foreground_fraction"])
    r = tf.where(in_box, box[0] + _u(s[1], 0.0, 1.0) * (box[1] - box[0]), _u(s[2], 0.0, 1.0) * size_f[0])
    c = tf.where(in_box, box[2] + _u(s[3], 0.0, 1.0) * (box[3] - box[2]), _u(s[4], 0.0, 1.0) * size_f[1])
    spatial = dict(cfg) if augment else {**cfg, "rotation_deg": 0.0, "scale_min": 1.0,
                                         "scale_max": 1.0, "anisotropy": 0.0}
    transform = _patch_transform(s[5], tf.stack([r, c]), patch_hw, spatial)
    out_shape = tf.constant([int(patch_hw[0]), int(patch_hw[1])], tf.int32)

    def warp(x, interpolation):
        return tf.raw_ops.ImageProjectiveTransformV3(
                images=tf.cast(x, tf.float32)[None, :, :, None], transforms=transform,
                output_shape=out_shape, fill_value=0.0, interpolation=interpolation,
                fill_mode="CONSTANT")[0]

    x = warp(image, "BILINEAR")
    y = tf.cast(warp(mask, "NEAREST")[..., 0], tf.int32)
    if augment:
        x = _intensity(x, tf.random.experimental.stateless_split(s[5], 2)[1], cfg)
    x = standardize(x, stats)
    return tf.ensure_shape(x, (patch_hw[0], patch_hw[1], 1)), tf.ensure_shape(y, tuple(patch_hw))


def make_patch_dataset(slices: ResampledSlices, *, patch_hw: Sequence[int], batch_size: int,
                       augment_cfg: Optional[Mapping[str, float]] = None, seed: int = 0,
                       augment: bool = True) -> tf.data.Dataset:
    """Endless dataset of random patches: ``(float32 [B, Ph, Pw, 1], int32 [B, Ph, Pw])``.

    Slices are drawn uniformly (every slice of every training patient), each patch with a
    fresh stateless seed, so the stream is the same for the same ``seed``.
    """
    cfg = {**DEFAULT_PATCH_AUGMENT, **dict(augment_cfg or {})}
    patch_hw = (int(patch_hw[0]), int(patch_hw[1]))
    data = tf.data.Dataset.from_tensor_slices(
            (slices.images, slices.masks, slices.sizes, slices.stats, slices.boxes))
    data = data.shuffle(len(slices), seed=seed, reshuffle_each_iteration=True).repeat()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((data, seeds)).map(
            lambda d, s: sample_patch(*d, s, patch_hw, cfg, augment),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# === Inference ===
def pad_to_multiple(x: tf.Tensor, divisor: int) -> tf.Tensor:
    """Zero-pads ``[H, W, C]`` at the bottom and right to multiples of ``divisor``."""
    shape = tf.shape(x)
    ph = (-shape[0]) % divisor
    pw = (-shape[1]) % divisor
    return tf.pad(x, [[0, ph], [0, pw], [0, 0]])


def model_divisor(model) -> int:
    """Side multiple the model needs: 2 ** (levels - 1) for a U-Net, 32 otherwise."""
    filters = getattr(model, "filters", None)
    if getattr(model, "encoder", None) is None and filters:
        return 2 ** (len(filters) - 1)
    return 32


def predict_probabilities(forward, image: tf.Tensor, spacing_mm: tf.Tensor, target_mm: float,
                          divisor: int) -> tf.Tensor:
    """The inference path around a segmentation network, for one slice:
    :func:`predict_probabilities_batch` of a batch of one.

    Args:
      forward: ``float32 [1, h, w, 1] -> float32 [1, h, w, C]`` (the network).
      image: ``uint8 or float [H, W]`` or ``[H, W, 1]`` grey values 0..255.
      spacing_mm: ``float32 [2]`` (row_mm, col_mm).
      target_mm: the model's training pixel size.
      divisor: pad the resampled slice to multiples of this.

    Returns:
      ``float32 [H, W, C]`` probabilities at the input resolution.
    """
    return predict_probabilities_batch(forward, image[None], spacing_mm, target_mm, divisor)[0]


def predict_probabilities_batch(forward, images: tf.Tensor, spacing_mm: tf.Tensor,
                                target_mm: float, divisor: int) -> tf.Tensor:
    """The inference path around a segmentation network for N slices of one size and pixel
    spacing (a series), through the network in one call.

    Each slice is resampled, standardised with its own (mean, SD) (:func:`image_stats`,
    computed before the zero padding) and padded as a single slice would be, so slice i's
    probabilities are those of a batch of one up to float rounding.

    Args:
      forward: ``float32 [N, h, w, 1] -> float32 [N, h, w, C]`` (the network).
      images: ``uint8 or float [N, H, W]`` or ``[N, H, W, 1]`` grey values 0..255.
      spacing_mm: ``float32 [2]`` (row_mm, col_mm), shared by the N slices.
      target_mm: the model's training pixel size.
      divisor: pad the resampled slices to multiples of this.

    Returns:
      ``float32 [N, H, W, C]`` probabilities at the input resolution.
    """
    if images.shape.rank == 3:
        images = images[..., None]
    in_hw = tf.shape(images)[1:3]
    x = resample_to_spacing(images[..., :1], spacing_mm, target_mm)
    x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    # image_stats per slice: (mean, SD floored at 1 grey level) -> [N, 1, 1, 1, 2]
    stats = tf.stack([tf.reduce_mean(x, axis=[1, 2, 3]),
                      tf.maximum(tf.math.reduce_std(x, axis=[1, 2, 3]), 1.0)], axis=-1)
    hw = tf.shape(x)[1:3]
    # padding is grey 0 before standardisation, as the training canvases are
    pad_h, pad_w = (-hw[0]) % divisor, (-hw[1]) % divisor
    x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    x = standardize(x, stats[:, None, None, None, :])
    probs = tf.cast(forward(x), tf.float32)[:, : hw[0], : hw[1]]
    return tf.image.resize(probs, in_hw, method="bilinear")


def make_spacing_predictor(model, target_mm: float, *, batched: bool = False):
    """``predict(image uint8 [H, W], spacing_mm float32 [2]) -> float32 [H, W, C]`` as a
    ``tf.function`` (any H, W) for a network built with unknown spatial input size.

    With ``batched``: ``predict(images uint8 [N, H, W], spacing_mm) -> float32 [N, H, W, C]``,
    the slices of one series in one network call (:func:`predict_probabilities_batch`).

    Raises:
      ValueError: ``target_mm`` is not positive.

    Networks with a fixed input size (DeepLabV3+) are rebuilt per padded size by
    :func:`spoils_tf.models.with_input_size` and called eagerly.
    """
    if not float(target_mm) > 0:
        raise ValueError(f"target_mm is {target_mm!r}; expected the model's training pixel "
                         "size in mm (> 0)")
    divisor = model_divisor(model)
    fixed = None not in tuple(model.input_shape[1:3])
    if fixed:
        cache: dict[tuple[int, int], Any] = {}

        def forward(x):
            key = (int(x.shape[1]), int(x.shape[2]))
            if key not in cache:
                cache[key] = with_input_size(model, key)
            else:   # the model may have trained since (held-out curve): copy its weights now
                cache[key].set_weights(model.get_weights())
            return cache[key](x, training=False)

        def predict(image, spacing_mm):
            fn = predict_probabilities_batch if batched else predict_probabilities
            return fn(forward, tf.convert_to_tensor(image),
                      tf.convert_to_tensor(spacing_mm, tf.float32), target_mm, divisor)
        return predict

    image_spec = (tf.TensorSpec([None, None, None], tf.uint8, name="images") if batched
                  else tf.TensorSpec([None, None], tf.uint8, name="image"))

    @tf.function(input_signature=[image_spec,
                                  tf.TensorSpec([2], tf.float32, name="pixel_spacing_mm")],
                 jit_compile=False)
    def predict(image, spacing_mm):
        fn = predict_probabilities_batch if batched else predict_probabilities
        return fn(lambda x: model(x, training=False), image, spacing_mm, target_mm, divisor)
    return predict
