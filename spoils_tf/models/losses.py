"""Segmentation losses: cross-entropy and cross-entropy + soft Dice (nnU-Net's default).

Small structures (an intervertebral disc is ≈ 1–3 % of a sagittal slice) contribute little to
a pixel-averaged cross-entropy, so a network trained on it learns the background, bodies and
canal first and the discs last. The soft Dice term (Milletari et al., V-Net, 3DV 2016; the
"DC + CE" loss of nnU-Net, Isensee et al., Nat Methods 2021) weights every class equally
whatever its size.

``SoftDiceLoss`` with ``y_true: int [B, H, W] or [B, H, W, 1]`` (class ids) and
``y_pred: float [B, H, W, C]`` (softmax probabilities):

    dice_c = (2 Σ p_c g_c + ε) / (Σ p_c + Σ g_c + ε)      sums over the batch and all pixels
    loss   = 1 − mean_c dice_c                             over the foreground classes c ≥ 1

("batch Dice": one score per class over the whole batch, as nnU-Net does for 2-D training).
A class absent from both truth and prediction scores (0 + ε)/(0 + ε) = 1, i.e. no loss;
predicting a class that is absent costs ≈ 1/(C−1) for that class.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

LOSSES: tuple[str, ...] = ("ce", "ce+dice")


@keras.saving.register_keras_serializable(package="spoils_tf")
class SoftDiceLoss(keras.losses.Loss):
    """``1 − mean foreground soft Dice`` (module docstring); ``smooth`` is ε."""

    def __init__(self, smooth: float = 1e-5, name: str = "soft_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, axis=-1)
        y_pred = ops.cast(y_pred, "float32")
        g = ops.one_hot(y_true, num_classes, dtype="float32")
        axes = tuple(range(len(y_pred.shape) - 1))
        inter = ops.sum(y_pred * g, axis=axes)
        denom = ops.sum(y_pred, axis=axes) + ops.sum(g, axis=axes)
        dice = (2.0 * inter + self.smooth) / (denom + self.smooth)
        # One value per batch (batch Dice); broadcast so Keras' reduction returns it unchanged.
        loss = 1.0 - ops.mean(dice[1:])
        return ops.ones_like(y_pred[..., 0]) * loss

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="spoils_tf")
class CrossEntropyDiceLoss(keras.losses.Loss):
    """``sparse categorical cross-entropy + soft Dice`` (equal weights, as nnU-Net)."""

    def __init__(self, smooth: float = 1e-5, name: str = "ce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)
        self._dice = SoftDiceLoss(smooth=smooth, reduction=None)

    def call(self, y_true, y_pred):
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        if len(ce.shape) == len(y_pred.shape):
            ce = ops.squeeze(ce, axis=-1)
        return ce + self._dice.call(y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}


def segmentation_loss(name: str) -> keras.losses.Loss:
    """The Keras loss named by ``config.train.loss`` (``"ce" | "ce+dice"``).

    Raises:
        ValueError: any other name.
    """
    if name == "ce":
        return keras.losses.SparseCategoricalCrossentropy()
    if name == "ce+dice":
        return CrossEntropyDiceLoss()
    raise ValueError(f"config.train.loss: unknown loss {name!r}; expected one of {LOSSES}")
