"""Arithmetic of a Keras model, for rooflines and model-FLOP utilisation (MFU).

Counts only what dominates a convolutional segmentation network: the multiply-accumulates
(MACs) of its ``Conv2D`` layers (``Conv2DTranspose`` is not a ``Conv2D`` and is not counted;
DeepLabV3+ has none; batch norm, activations, pooling and resizing are left out).
Backend-independent (shapes only), so the JAX GPU kit counts what ``benchmarks/bench_seg.py``
counts.
"""

from __future__ import annotations

from typing import Iterator

import keras
import numpy as np


def _leaf_layers(layer) -> Iterator[keras.layers.Layer]:
    for sub in getattr(layer, "layers", None) or []:
        yield from _leaf_layers(sub)
    if not getattr(layer, "layers", None):
        yield layer


def conv_macs(model: keras.Model) -> int:
    """Multiply-accumulates of all Conv2D layers of ``model`` (nested models included) for one
    image (batch 1): ``sum(out_h * out_w * k_h * k_w * c_in * c_out)``."""
    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            out_h, out_w = layer.output.shape[1:3]
            total += int(out_h) * int(out_w) * int(np.prod(layer.kernel.shape))
    return total


def train_flops_per_image(model: keras.Model) -> float:
    """Model FLOPs of one training image: forward ``2 * MACs`` plus backward twice the forward
    (gradients with respect to activations and to weights), i.e. ``6 * conv_macs``."""
    return 6.0 * conv_macs(model)
