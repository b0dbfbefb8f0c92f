"""Which way is up: a small CNN that reads a sagittal slice's orientation from the whole image.

The four classes are ``spoils_tf.levels.ORIENTATIONS`` in that order: the flip that was applied
to a slice in display orientation (superior at the top, anterior on the left). Each flip is its
own inverse, so the predicted class is also the flip that undoes it.

The network sees the slice at a fixed physical pixel size (``PIXEL_MM``) on a square canvas of
``CANVAS`` pixels (``CANVAS * PIXEL_MM`` mm, centred), intensities scaled by the image's own
percentiles: the gross anatomy (sacrum and pelvis at the bottom, abdomen in front, the
paraspinal muscles behind) decides, not the grey levels of one scanner.

    net = OrientationNet.load("orientation.keras")
    probs = net.probabilities(grey_uint8, (row_mm, col_mm))   # float [4]
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from spoils_tf.errors import SpoilsError
from spoils_tf.levels import ORIENTATIONS

PIXEL_MM = 5.0          # network pixel size, mm
CANVAS = 64             # network input side, pixels (320 mm at PIXEL_MM)
_LOW_PCT, _HIGH_PCT = 1.0, 99.5   # intensity percentiles mapped to 0 and 1


def prepare(grey: np.ndarray, spacing_mm: Sequence[float], *, pixel_mm: float = PIXEL_MM,
            canvas: int = CANVAS) -> np.ndarray:
    """The network input for one slice.

    Args:
        grey: ``[H, W]`` any real dtype.
        spacing_mm: (row_mm, col_mm) of ``grey``.
        pixel_mm: output pixel size, mm.
        canvas: output side, pixels.

    Returns:
        ``float32 [canvas, canvas]``: ``grey`` resampled (bilinear) to ``pixel_mm`` pixels,
        centred on the canvas (cropped where larger, zero-padded where smaller), intensities
        mapped from the image's 1st..99.5th percentile to 0..1 and clipped.
    """
    from PIL import Image
    arr = np.asarray(grey, np.float32)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"expected a 2-D slice, got shape {arr.shape}")
    h = max(1, int(round(arr.shape[0] * float(spacing_mm[0]) / pixel_mm)))
    w = max(1, int(round(arr.shape[1] * float(spacing_mm[1]) / pixel_mm)))
    small = np.asarray(Image.fromarray(arr, mode="F").resize((w, h), Image.BILINEAR), np.float32)
    lo, hi = np.percentile(small, [_LOW_PCT, _HIGH_PCT])
    small = np.clip((small - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    out = np.zeros((canvas, canvas), np.float32)
    src_r, dst_r, n_r = _centre(h, canvas)
    src_c, dst_c, n_c = _centre(w, canvas)
    out[dst_r:dst_r + n_r, dst_c:dst_c + n_c] = small[src_r:src_r + n_r, src_c:src_c + n_c]
    return out


def _centre(n: int, canvas: int) -> tuple[int, int, int]:
    """(source start, destination start, length) that centres ``n`` pixels on ``canvas``."""
    if n >= canvas:
        return (n - canvas) // 2, 0, canvas
    return 0, (canvas - n) // 2, n


def build_orientation_net(canvas: int = CANVAS, filters: Sequence[int] = (16, 32, 64, 128),
                          dropout: float = 0.3):
    """A plain CNN: per stage two 3x3 conv - BN - ReLU and a 2x2 max-pool; global average
    pooling, dropout, a dense softmax over ``ORIENTATIONS``.

    Input ``float32 [B, canvas, canvas, 1]`` (``prepare``); output ``float32 [B, 4]``.
    """
    import keras
    from keras import layers
    x = inp = keras.Input((canvas, canvas, 1), name="image")
    for i, f in enumerate(filters):
        for j in range(2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"s{i}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"s{i}_bn{j}")(x)
            x = layers.ReLU(name=f"s{i}_relu{j}")(x)
        x = layers.MaxPooling2D(2, name=f"s{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(len(ORIENTATIONS), activation="softmax", name="orientation")(x)
    return keras.Model(inp, out, name="orientation_net")


@dataclasses.dataclass
class OrientationNet:
    """A trained orientation network and the pixel size and canvas it was trained at.

    Call ``probabilities(grey [H, W], (row_mm, col_mm)) -> float [4]`` (``ORIENTATIONS`` order).
    """

    model: object
    pixel_mm: float = PIXEL_MM
    canvas: int = CANVAS

    @classmethod
    def load(cls, path: str | pathlib.Path, pixel_mm: float = PIXEL_MM) -> "OrientationNet":
        """Loads a ``.keras`` file saved from ``build_orientation_net``, trained at ``pixel_mm``.

        Raises:
            SpoilsError: missing file or one that does not load (names the path).
        """
        import spoils_tf.models
        path = pathlib.Path(path)
        if not path.is_file():
            raise SpoilsError(path, None, "orientation model not found")
        model = spoils_tf.models.load_model(path, compile=False)
        canvas = int(model.input_shape[1])
        return cls(model, float(pixel_mm), canvas)

    def probabilities(self, grey: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
        """``float64 [4]`` softmax over ``ORIENTATIONS`` for one slice."""
        return self.probabilities_many([grey], spacing_mm)[0]

    def probabilities_many(self, greys: Sequence[np.ndarray], spacing_mm: Sequence[float]
                           ) -> np.ndarray:
        """``float64 [N, 4]`` for N slices with one pixel spacing, in one network call."""
        x = np.stack([prepare(g, spacing_mm, pixel_mm=self.pixel_mm, canvas=self.canvas)
                      for g in greys])
        return np.asarray(self.model(x[..., None], training=False), np.float64)
