"""U-Net baseline (Ronneberger et al., MICCAI 2015) with batch norm and "same" padding.

``len(filters)`` levels: each encoder level is two 3x3 conv-BN-ReLU then 2x2 max pooling; the
last entry is the bottleneck; each decoder level upsamples x2 (transposed conv or bilinear +
1x1 conv), concatenates the skip connection and applies two 3x3 conv-BN-ReLU; a 1x1 conv and a
float32 softmax give per-class probabilities at the input resolution. The original paper's
sizes are ``filters=(64, 128, 256, 512, 1024)`` (31.0 M params here at 14 classes, with
transposed convs); configs choose smaller ones for CPU runs.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import layers

from spoils_tf import labels
from spoils_tf.models import SegmentationModel

UPSAMPLING_MODES: tuple[str, ...] = ("transpose", "bilinear")
ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu")


# === Layers ===
def _activation(kind: str, name: str):
    if kind == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.01, name=name)
    return layers.Activation("relu", name=name)


def _double_conv(x, filters: int, *, dropout: float, activation: str, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = _activation(activation, f"{name}_relu{i}")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


# === Functional Model ===
@keras.saving.register_keras_serializable(package="spoils_tf")
class UNet(SegmentationModel):
    """U-Net semantic segmentation model.

    Args:
      num_classes: output classes (default ``labels.NUM_SEG_CLASSES``).
      input_shape: ``(H, W, C)``; H and W multiples of ``2 ** (len(filters) - 1)``, or None
        (any size that is such a multiple, e.g. whole slices at a fixed pixel spacing).
      filters: channels per level, top to bottom (the last is the bottleneck); depth =
        ``len(filters)`` >= 2.
      upsampling: ``"transpose"`` (2x2 stride-2 transposed conv) or ``"bilinear"``.
      dropout: dropout rate after the bottleneck (0 = none).
      activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.01, nnU-Net's conv-norm-LeakyReLU).

    Call: ``float32 [B, H, W, C] -> float32 [B, H, W, num_classes]`` probabilities.

    Raises:
      ValueError: fewer than 2 levels, unknown upsampling, or input not divisible.
    """

    def __init__(self, *, num_classes: int = labels.NUM_SEG_CLASSES,
                 input_shape: Sequence[int] = (512, 512, 3),
                 filters: Sequence[int] = (32, 64, 128, 256, 512),
                 upsampling: str = "transpose", dropout: float = 0.0,
                 activation: str = "relu", **kwargs: Any):
        input_shape = tuple(None if s is None else int(s) for s in input_shape)
        filters = tuple(int(f) for f in filters)
        if len(filters) < 2:
            raise ValueError(f"filters needs >= 2 levels, got {filters}")
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        factor = 2 ** (len(filters) - 1)
        if any(s is not None and s % factor for s in input_shape[:2]):
            raise ValueError(f"input_shape {input_shape[:2]} must be divisible by {factor} "
                             f"for a {len(filters)}-level U-Net")

        # === Functional Model ===
        inputs = keras.Input(shape=input_shape, name="image")
        x, skips = inputs, []
        for level, f in enumerate(filters[:-1]):
            x = _double_conv(x, f, dropout=0.0, activation=activation, name=f"down{level}")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
        x = _double_conv(x, filters[-1], dropout=dropout, activation=activation,
                         name="bottleneck")
        for level in reversed(range(len(filters) - 1)):
            f = filters[level]
            if upsampling == "transpose":
                x = layers.Conv2DTranspose(f, 2, strides=2, name=f"up{level}_transpose")(x)
            else:
                x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}_resize")(x)
                x = layers.Conv2D(f, 1, name=f"up{level}_proj")(x)
            x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
            x = _double_conv(x, f, dropout=0.0, activation=activation, name=f"up{level}")
        x = layers.Conv2D(num_classes, 1, name="logits")(x)
        outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.input_shape_ = input_shape
        self.filters = filters
        self.upsampling = upsampling
        self.dropout = dropout
        self.activation = activation

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
                "num_classes": self.num_classes,
                "input_shape": self.input_shape_,
                "filters": self.filters,
                "upsampling": self.upsampling,
                "dropout": self.dropout,
                "activation": self.activation,
        })
        return config
