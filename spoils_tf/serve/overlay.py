"""Colour masks and overlays with the palette from ``labels.py`` (numpy + OpenCV only).

* :func:`colorize`, :func:`overlay`: a label map as colours, blended over the slice.
* :func:`overlay_image`: the report's overlay, each disc's level and predicted class in a
  margin on the anterior side.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import cv2
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


def _spread(ys: Sequence[float], gap: float, lo: float, hi: float) -> list[float]:
    """``ys`` (ascending) moved as little as this greedy pass can so that neighbours are at
    least ``gap`` apart and all lie in ``[lo, hi]`` (when ``hi - lo`` leaves room)."""
    out = [max(lo, float(y)) for y in ys]
    for k in range(1, len(out)):
        out[k] = max(out[k], out[k - 1] + gap)
    if out and out[-1] > hi:
        out[-1] = hi
        for k in range(len(out) - 2, -1, -1):
            out[k] = min(out[k], out[k + 1] - gap)
    return out


def overlay_image(image: np.ndarray, mask: np.ndarray, report: Mapping[str, Any]) -> np.ndarray:
    """:func:`overlay` of the mid-sagittal slice with a black margin added on the left (the
    anterior side) holding each disc's level and predicted class ("L4-L5 3M", or "L2-L3 not
    graded"), joined by a thin leader line in the disc's colour to the disc's anterior end, so
    no label covers the vertebral bodies or the spinal canal.

    Args:
        image: uint8 [H, W]; mask: int [H, W] class ids of that slice; report: the report
            dict (its ``discs``: ``level``, ``predicted_class``).

    Returns:
        uint8 [H, W + margin, 3] RGB; ``margin`` fits the longest label (0 without discs in
        ``mask``).
    """
    rgb = np.ascontiguousarray(overlay(image, mask))
    h, w = rgb.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, min(h, w) / 1000.0)
    thick = max(1, int(round(scale * 1.6)))
    pad = max(4, int(round(8 * scale)))
    items = []   # (row of the anterior end, col of the anterior end, text, colour)
    for d in report.get("discs", []):
        rows, cols = np.nonzero(mask == labels.SEG_ID[d["level"]])
        if rows.size == 0:
            continue
        r = float(rows.mean())
        band = np.abs(rows - r) <= max(2.0, 0.15 * (rows.max() - rows.min()))
        c_tip = int(cols[band].min()) if band.any() else int(cols.min())
        r_tip = int(round(float(rows[band][cols[band] == c_tip].mean()))) if band.any() else int(r)
        cls = d.get("predicted_class")
        items.append((r_tip, c_tip, f"{d['level']} {cls}" if cls else f"{d['level']} not graded",
                      labels.SEG_PALETTE[labels.SEG_ID[d["level"]]], bool(cls)))
    if not items:
        return rgb
    items.sort()
    sizes = [cv2.getTextSize(t, font, scale, thick) for _, _, t, _, _ in items]
    text_h = max(sz[0][1] + sz[1] for sz in sizes)
    margin = max(sz[0][0] for sz in sizes) + 3 * pad
    canvas = np.zeros((h, w + margin, 3), np.uint8)
    canvas[:, margin:] = rgb
    ys = _spread([r for r, *_ in items], text_h + pad, text_h, h - pad)
    for (r_tip, c_tip, text, colour, graded), y, ((tw, th), _) in zip(items, ys, sizes):
        x_text = margin - 2 * pad - tw
        rgb_colour = tuple(int(v) for v in colour)
        tip = (margin + c_tip - 1, r_tip)
        cv2.line(canvas, (margin - 2 * pad + pad // 2, int(y - th / 2)), tip, rgb_colour,
                 max(1, thick // 2), cv2.LINE_AA)
        cv2.circle(canvas, tip, max(2, thick), rgb_colour, -1, cv2.LINE_AA)
        cv2.putText(canvas, text, (x_text, int(y)), font, scale,
                    (255, 255, 255) if graded else (170, 170, 170), thick, cv2.LINE_AA)
    return canvas
