"""Colour masks and overlays with the palette from ``labels.py`` (numpy + OpenCV only)."""

from __future__ import annotations

import numpy as np

from spoils_tf import labels


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-id mask ``int [H, W]`` -> RGB ``uint8 [H, W, 3]`` with ``labels.SEG_PALETTE``.

    Raises:
      ValueError: if the mask has ids outside ``0..NUM_SEG_CLASSES-1``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() >= labels.NUM_SEG_CLASSES):
        raise ValueError(f"mask has class ids outside 0..{labels.NUM_SEG_CLASSES - 1}: "
                         f"min {mask.min()}, max {mask.max()}")
    palette = np.asarray(labels.SEG_PALETTE, np.uint8)
    return palette[mask.astype(np.int64)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blends the coloured mask over a greyscale image; background pixels stay untouched.

    Args:
      image: ``uint8 [H, W]`` or ``[H, W, 1|3]`` greyscale image.
      mask: ``int [H, W]`` class ids.
      alpha: opacity of the colours in 0..1.

    Returns:
      ``uint8 [H, W, 3]`` RGB.
    """
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., 0]
    if img.shape != np.asarray(mask).shape:
        raise ValueError(f"image shape {img.shape} != mask shape {np.asarray(mask).shape}")
    rgb = np.repeat(img[..., None], 3, axis=2).astype(np.float32)
    col = colorize(mask).astype(np.float32)
    fg = (np.asarray(mask) != labels.BACKGROUND_ID)[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * col, rgb)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
