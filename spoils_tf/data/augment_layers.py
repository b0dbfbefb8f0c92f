"""Segmentation augmentation as Keras layers, run on the accelerator inside the train step.

The host pipeline (``seg_pipeline.make_seg_dataset(..., augment_on="device")``) then only
reads cached ``uint8`` slices, shuffles and batches them; the random affine and the
intensity changes of ``seg_pipeline.augment`` run here, batched, on whatever device runs the
model. Written with ``keras.ops`` and ``keras.random`` only, so the same layers run under the
TensorFlow and the JAX backends.

* :class:`SegAugment`: ``layer((images, masks), training=True) -> (images, masks)``, one
  random rotation / isotropic scale / shift per example applied to the image (bilinear) and
  to its mask (NEAREST, so class ids stay ids; outside filled with background 0), then
  contrast, brightness and gamma on the image. The magnitudes are ``seg_constants``'
  ``DEFAULT_AUGMENT`` keys and mean the same; like the host path it never flips (a sagittal
  flip swaps anterior/posterior or cranial/caudal, see ``seg_pipeline``). ``training=False``
  is the identity (images cast to float32).
* :func:`normalize_images`: the ``keras.ops`` twin of ``seg_pipeline.normalize_images``
  (which is TensorFlow code); a test pins the two equal.
* :class:`DeviceAugmentedModel`: wraps a segmentation network for ``model.fit`` on uint8
  batches under the TensorFlow backend: its ``train_step`` augments the batch, its ``call``
  normalises and runs the network. Save and evaluate the wrapped ``network``, not the
  wrapper.

Under JAX call the layer through ``layer.stateless_call(trainable, non_trainable, (images,
masks), training=True)``: its random state is the ``SeedGenerator`` in its non-trainable
variables, as for ``keras.layers.Dropout``.

The random draws differ from the host path's stateless TensorFlow seeds, so a run with
``augment_on="device"`` sees other (equally distributed) augmentations than one on the host.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import keras
from keras import ops

from spoils_tf.data.seg_constants import DEFAULT_AUGMENT, IMAGENET_CAFFE_MEAN_BGR

AUGMENT_ON: tuple[str, ...] = ("host", "device")


# === Normalisation ===
def normalize_images(images):
    """``seg_pipeline.normalize_images`` in ``keras.ops``.

    Args:
      images: ``uint8`` or float ``[..., H, W, 1|3]`` grey values 0..255.

    Returns:
      ``float32 [..., H, W, 3]``: channels reversed to BGR minus ``IMAGENET_CAFFE_MEAN_BGR``.
    """
    x = ops.cast(images, "float32")
    mean_bgr = ops.convert_to_tensor(IMAGENET_CAFFE_MEAN_BGR, "float32")
    if x.shape[-1] == 1:
        return x - mean_bgr     # grey: B = G = R; broadcasting makes the 3 channels
    return ops.flip(x, axis=-1) - mean_bgr


# === Geometry ===
def affine_transforms(angle_rad, scale, dy_px, dx_px, height: int, width: int):
    """Output->input projective transforms of rotations about the slice centre, isotropic
    zooms and shifts (``seg_pipeline._affine_matrix``'s formula, batched).

    The output pixel ``(row, col)`` samples the input at ``R(-angle) / scale @ ((col, row) -
    centre - (dx, dy)) + centre``, centre ``((width - 1) / 2, (height - 1) / 2)``: a positive
    ``dy_px`` moves the content down, a positive angle turns it clockwise on screen.

    Args:
      angle_rad, scale, dy_px, dx_px: ``float32 [B]`` (radians, zoom factor, pixels).
      height, width: the slice size in pixels.

    Returns:
      ``float32 [B, 8]`` rows ``(a0, a1, a2, b0, b1, b2, 0, 0)`` as ``keras.ops.image.
      affine_transform`` (and ``tf.raw_ops.ImageProjectiveTransformV3``) take them.
    """
    angle_rad, scale = ops.cast(angle_rad, "float32"), ops.cast(scale, "float32")
    dy_px, dx_px = ops.cast(dy_px, "float32"), ops.cast(dx_px, "float32")
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    cos, sin = ops.cos(angle_rad) / scale, ops.sin(angle_rad) / scale
    ox, oy = -(cx + dx_px), -(cy + dy_px)
    zeros = ops.zeros_like(cos)
    return ops.stack([cos, sin, cos * ox + sin * oy + cx,
                      -sin, cos, -sin * ox + cos * oy + cy, zeros, zeros], axis=1)


def _replica_slot():
    """``(this replica's index, replicas in sync)`` inside a ``tf.distribute`` replica
    context with more than one replica; ``(0, 1)`` otherwise and under other backends."""
    if keras.backend.backend() != "tensorflow":
        return 0, 1
    import tensorflow as tf
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


# === Layers ===
@keras.saving.register_keras_serializable(package="spoils_tf")
class SegAugment(keras.layers.Layer):
    """Random affine + intensity augmentation of a batch of slices and their masks.

    Args:
      augment_cfg: magnitudes, keys of ``seg_constants.DEFAULT_AUGMENT`` (None = those
        defaults; a missing key = 0 = off).
      seed: seed of the layer's ``keras.random.SeedGenerator`` (None = random).

    Call: ``((images [B, H, W, 1] uint8 or float 0..255, masks [B, H, W] or [B, H, W, 1] int),
    training) -> (images float32 [B, H, W, 1] in 0..255, masks same dtype and shape)``.
    H and W must be static. The mask contains only ids of its input mask, or 0 where the
    transform samples outside the slice.

    Raises:
      ValueError: an unknown key in ``augment_cfg``; images that are not ``[B, H, W, 1]``.
    """

    def __init__(self, augment_cfg: Optional[Mapping[str, float]] = None,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        cfg = dict(DEFAULT_AUGMENT if augment_cfg is None else augment_cfg)
        unknown = sorted(set(cfg) - set(DEFAULT_AUGMENT))
        if unknown:
            raise ValueError(f"augment_cfg: unknown keys {unknown}; expected some of "
                             f"{sorted(DEFAULT_AUGMENT)}")
        self.augment_cfg = {k: float(v) for k, v in cfg.items()}
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # TensorFlow's affine_transform (ImageProjectiveTransformV3) has no XLA kernel: Keras
        # then compiles a model holding this layer without XLA (jit_compile=True falls back)
        self.supports_jit = keras.backend.backend() != "tensorflow"

    # === Random parameters ===
    def _uniform(self, batch, magnitude: float, centre: float = 0.0):
        """``float32 [B]`` uniform in ``[centre - magnitude, centre + magnitude]``; under a
        ``tf.distribute`` strategy each replica takes its own row of ``[replicas, B]`` draws
        (the replicas share the seed state, so plain draws would repeat across them)."""
        replica, replicas = _replica_slot()
        values = keras.random.uniform((replicas, batch), centre - magnitude,
                                      centre + magnitude, seed=self.seed_generator)
        return values[replica]

    def _transforms(self, batch, height: int, width: int):
        """``float32 [B, 8]``: one random rotation/scale/shift per example."""
        cfg = self.augment_cfg
        angle = self._uniform(batch, math.radians(cfg.get("rotation_deg", 0.0)))
        scale = self._uniform(batch, cfg.get("scale", 0.0), 1.0)
        dy = self._uniform(batch, cfg.get("shift", 0.0)) * height
        dx = self._uniform(batch, cfg.get("shift", 0.0)) * width
        return affine_transforms(angle, scale, dy, dx, height, width)

    # === Call ===
    def call(self, inputs, training=None):
        images, masks = inputs
        images = ops.cast(images, "float32")
        if len(images.shape) != 4 or images.shape[-1] != 1:
            raise ValueError(f"images: shape {tuple(images.shape)}; expected [B, H, W, 1]")
        if not training:
            return images, masks
        height, width = int(images.shape[1]), int(images.shape[2])
        batch = ops.shape(images)[0]
        transforms = self._transforms(batch, height, width)
        images = ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                            fill_mode="constant", fill_value=0.0,
                                            data_format="channels_last")
        mask_dtype, mask_rank = masks.dtype, len(masks.shape)
        m = ops.cast(masks if mask_rank == 4 else masks[..., None], "float32")
        m = ops.image.affine_transform(m, transforms, interpolation="nearest",
                                       fill_mode="constant", fill_value=0.0,
                                       data_format="channels_last")
        m = ops.cast(ops.round(m), mask_dtype)
        masks = m if mask_rank == 4 else m[..., 0]
        return self._intensity(images, batch), masks

    def _intensity(self, images, batch):
        """Contrast, brightness, gamma per example (``seg_pipeline.augment``'s order)."""
        cfg = self.augment_cfg
        contrast = self._uniform(batch, cfg.get("contrast", 0.0), 1.0)[:, None, None, None]
        brightness = self._uniform(batch, cfg.get("brightness", 0.0))[:, None, None, None]
        gamma = self._uniform(batch, cfg.get("gamma", 0.0), 1.0)[:, None, None, None]
        mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
        images = (images - mean) * contrast + mean + brightness * 255.0
        images = 255.0 * ops.power(ops.clip(images, 0.0, 255.0) / 255.0, gamma)
        return ops.clip(images, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        image_shape, mask_shape = input_shape
        return tuple(image_shape), tuple(mask_shape)

    # === Config ===
    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "augment_cfg": dict(self.augment_cfg),
                "seed": self.seed}


class DeviceAugmentedModel(keras.Model):
    """A segmentation network fed uint8 batches, augmented inside the train step.

    Args:
      network: ``float32 [B, S, S, 3]`` (``normalize_images`` output) -> ``[B, S, S, C]``.
      augment_cfg, seed: :class:`SegAugment`'s.

    Call: ``images uint8 or float [B, S, S, 1] 0..255 -> network(normalize_images(images))``
    (no augmentation: evaluation and prediction). ``fit`` data: ``(images uint8 [B, S, S, 1],
    masks int32 [B, S, S])`` from ``make_seg_dataset(..., augment_on="device")``; each train
    step augments the batch with :class:`SegAugment` before the forward pass and the loss.

    Under the TensorFlow backend the train step runs without XLA (``jit_compile=True`` falls
    back with Keras' warning): :class:`SegAugment`'s affine warp has no XLA kernel.

    Raises:
      NotImplementedError: ``fit`` under a backend other than TensorFlow (under JAX, call
        :class:`SegAugment` in your own train step).
    """

    def __init__(self, network: keras.Model, augment_cfg: Optional[Mapping[str, float]] = None,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.augment = SegAugment(augment_cfg, seed=seed, name="seg_augment")
        # built when the network is: its variables and the augmenter's seed state are all
        # there is (BackupAndRestore refuses an unbuilt model)
        self.built = bool(network.built)

    def call(self, images, training=None):
        return self.network(normalize_images(images), training=training)

    def train_step(self, data):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                    f"DeviceAugmentedModel.fit runs under the TensorFlow backend, not "
                    f"{keras.backend.backend()!r}; call SegAugment inside your own train step")
        images, masks = data
        images, masks = self.augment((images, masks), training=True)
        return super().train_step((images, masks))
