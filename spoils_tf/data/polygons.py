"""Exact polygon geometry and rasterisation by pixel centres (numpy/OpenCV only).

Polygons are float ``[N, 2]`` arrays of (x, y) vertices, implicitly closed, in millimetres or
pixels. The synthetic cohort (``spoils_tf.data.synthetic``) computes every ground-truth number
from its polygons with these functions, never from pixels. A pixel belongs to a polygon iff its
centre lies inside it (:func:`rasterize`, an exact scanline even-odd test), so a pixel count is
an unbiased estimate of the polygon's area. :func:`measure_in_frame` follows the measurement
definitions of ``spoils_tf.geometry.measure``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np


# === Measures ===
def polygon_area_centroid(poly: np.ndarray) -> tuple[float, np.ndarray]:
    """Area (units^2, >= 0) and area centroid ``[2]`` of a simple polygon ``[N, 2]`` (shoelace)."""
    p = np.asarray(poly, np.float64)
    x, y = p[:, 0], p[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a2 = cross.sum()
    if a2 == 0:
        raise ValueError("degenerate polygon with zero area")
    cx = ((x + xn) * cross).sum() / (3 * a2)
    cy = ((y + yn) * cross).sum() / (3 * a2)
    return abs(a2) / 2.0, np.array([cx, cy])


def chord_lengths(poly: np.ndarray, along: np.ndarray, normal: np.ndarray,
                  offsets: np.ndarray) -> np.ndarray:
    """Total length inside a simple polygon of the lines ``{p : p . normal = c}``.

    Args:
        poly: float [N, 2] polygon vertices (implicitly closed), mm.
        along: unit direction of the lines [2]; normal: unit normal [2] (perpendicular).
        offsets: float [M] values of c (mm).

    Returns:
        float64 [M]: summed length of the inside intervals (even-odd rule), 0 where the line
        misses the polygon.
    """
    p = np.asarray(poly, np.float64)
    s = p @ np.asarray(normal, np.float64)
    q = p @ np.asarray(along, np.float64)
    s1, s2 = s, np.roll(s, -1)
    q1, q2 = q, np.roll(q, -1)
    c = np.asarray(offsets, np.float64).reshape(-1, 1)
    crosses = (s1[None, :] > c) != (s2[None, :] > c)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = q1[None, :] + (q2 - q1)[None, :] * (c - s1[None, :]) / (s2 - s1)[None, :]
    lam = np.where(crosses, lam, np.nan)
    lam = np.sort(lam, axis=1)  # NaNs last; crossings come in pairs
    n = crosses.sum(axis=1)
    out = np.zeros(len(c))
    for i in range(len(c)):
        k = int(n[i]) // 2 * 2
        v = lam[i, :k]
        out[i] = float(np.sum(v[1::2] - v[0::2]))
    return out


def line_intervals(poly: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Intervals ``[K, 2]`` of the parameter lam where ``origin + lam * direction`` is inside ``poly``.

    ``direction`` must be a unit vector, so lam is in the polygon's units (mm). Sorted by start.
    """
    d = np.asarray(direction, np.float64)
    n = np.array([d[1], -d[0]])
    p = np.asarray(poly, np.float64) - np.asarray(origin, np.float64)[None, :]
    s = p @ n
    q = p @ d
    s1, s2, q1, q2 = s, np.roll(s, -1), q, np.roll(q, -1)
    crosses = (s1 > 0) != (s2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = q1 + (q2 - q1) * (0 - s1) / (s2 - s1)
    lam = np.sort(lam[crosses])
    k = len(lam) // 2 * 2
    return np.stack([lam[0:k:2], lam[1:k:2]], axis=1) if k else np.zeros((0, 2))


def subtract_intervals(base: np.ndarray, cuts: Sequence[np.ndarray]) -> list[tuple[float, float]]:
    """Parts of the intervals ``base`` not covered by any interval in ``cuts``."""
    pieces = [(float(a), float(b)) for a, b in base]
    for cut in cuts:
        for ca, cb in cut:
            nxt = []
            for a, b in pieces:
                if cb <= a or ca >= b:
                    nxt.append((a, b))
                    continue
                if ca > a:
                    nxt.append((a, float(ca)))
                if cb < b:
                    nxt.append((float(cb), b))
            pieces = nxt
    return sorted(p for p in pieces if p[1] > p[0])


def _mean_piecewise_linear(func, lo: float, hi: float, breaks: np.ndarray) -> float:
    """Exact mean over [lo, hi] of a function that is linear between the ``breaks``.

    Two-point Gauss-Legendre per piece (exact for linear pieces, evaluates only interior points).
    """
    b = np.asarray(breaks, np.float64)
    knots = np.unique(np.concatenate([[lo, hi], b[(b > lo) & (b < hi)]]))
    mid, half = (knots[1:] + knots[:-1]) / 2, (knots[1:] - knots[:-1]) / 2
    g = half / math.sqrt(3.0)
    vals = func(np.concatenate([mid - g, mid + g]))
    m = len(mid)
    return float(np.sum(half * (vals[:m] + vals[m:])) / (hi - lo))


@dataclasses.dataclass(frozen=True)
class FrameMeasures:
    """Measurements of a polygon in a frame (u, v) by the shared geometry definitions (mm).

    Attributes:
        height_mm: mean of h(t) over t in [0.1, 0.9] (h = extent along v at position t along u).
        central_height_mm, anterior_height_mm, posterior_height_mm: h(0.5), h(0.1), h(0.9).
        width_mm: mean chord along u over the central 80 % of the extent along v (the
            vertebral body width).
        area_width_mm: area_mm2 / height_mm, the disc width (``disc_width_mm``: the length of
            the rectangle with the polygon's area and mean height; see
            ``spoils_tf.geometry.measure`` for why the disc does not use ``width_mm``).
        midpoint_width_mm: chord along u through the area centroid.
        area_mm2: polygon area. centroid_mm: float [2] area centroid (image mm coordinates).
    """

    height_mm: float
    central_height_mm: float
    anterior_height_mm: float
    posterior_height_mm: float
    width_mm: float
    area_width_mm: float
    midpoint_width_mm: float
    area_mm2: float
    centroid_mm: np.ndarray


def measure_in_frame(poly: np.ndarray, u: np.ndarray, v: np.ndarray) -> FrameMeasures:
    """Exact measurements of a polygon ``[N, 2]`` (mm) in the frame (u, v) (unit vectors).

    t runs from the anterior end (min of p.u, t = 0) to the posterior end (max, t = 1).
    The chord functions of a polygon are piecewise linear between vertex projections, so the
    means are exact (``_mean_piecewise_linear``).
    """
    p = np.asarray(poly, np.float64)
    pu, pv = p @ u, p @ v
    u0, u1, v0, v1 = pu.min(), pu.max(), pv.min(), pv.max()

    def h_at(c):
        return chord_lengths(p, v, u, c)

    def w_at(c):
        return chord_lengths(p, u, v, c)

    lu, lv = u1 - u0, v1 - v0
    h_pts = h_at(u0 + lu * np.array([0.1, 0.5, 0.9]))
    area, centroid = polygon_area_centroid(p)
    height = _mean_piecewise_linear(h_at, u0 + 0.1 * lu, u0 + 0.9 * lu, pu)
    return FrameMeasures(
            height_mm=height,
            central_height_mm=float(h_pts[1]),
            anterior_height_mm=float(h_pts[0]),
            posterior_height_mm=float(h_pts[2]),
            width_mm=_mean_piecewise_linear(w_at, v0 + 0.1 * lv, v1 - 0.1 * lv, pv),
            area_width_mm=area / height,
            midpoint_width_mm=float(w_at(np.array([centroid @ v]))[0]),
            area_mm2=area,
            centroid_mm=centroid)


# === Rasterisation ===
def rasterize_crop(poly_px: np.ndarray, shape_hw: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """``rasterize`` restricted to the polygon's bounding box: (bool [h, w], row0, col0)."""
    h, w = shape_hw
    p = np.asarray(poly_px, np.float64)
    r0, r1 = max(0, int(math.ceil(p[:, 1].min()))), min(h - 1, int(math.floor(p[:, 1].max())))
    c0, c1 = max(0, int(math.ceil(p[:, 0].min()))), min(w - 1, int(math.floor(p[:, 0].max())))
    if r1 < r0 or c1 < c0:
        return np.zeros((0, 0), bool), 0, 0
    x1, y1 = p[:, 0], p[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    rows = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
    cross = (y1[None, :] > rows) != (y2[None, :] > rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x1[None, :] + (rows - y1[None, :]) * ((x2 - x1) / (y2 - y1))[None, :]
    xs = np.sort(np.where(cross, xs, np.inf), axis=1)
    k = int(cross.sum(axis=1).max()) // 2 * 2
    nr, nc = r1 - r0 + 1, c1 - c0 + 1
    if k == 0:
        return np.zeros((nr, nc), bool), r0, c0
    xa, xb = xs[:, 0:k:2] - c0, xs[:, 1:k:2] - c0
    ok = np.isfinite(xb)
    start = np.clip(np.ceil(np.where(ok, xa, 0.0)), 0, nc).astype(np.int64)
    end = np.clip(np.floor(np.where(ok, xb, -1.0)) + 1, 0, nc).astype(np.int64)
    ok &= start < end
    diff = np.zeros((nr, nc + 1), np.int32)
    ri = np.broadcast_to(np.arange(nr)[:, None], ok.shape)
    np.add.at(diff, (ri[ok], start[ok]), 1)
    np.add.at(diff, (ri[ok], end[ok]), -1)
    return np.cumsum(diff, axis=1)[:, :nc] > 0, r0, c0


def rasterize(poly_px: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: pixels whose CENTRE (x = column, y = row) lies inside the polygon.

    An exact scanline even-odd test: for every pixel row y, the crossings of the polygon's
    edges with the line through the row's pixel centres are computed, and the pixels whose
    centre x lies between a pair of crossings are set. Unlike ``cv2.fillPoly`` no boundary
    pixel is added, so the pixel count is an unbiased estimate of the area.

    Args:
        poly_px: float [N, 2] vertices (x, y) in pixel units (pixel centres at integers).
        shape_hw: (H, W).
    """
    out = np.zeros(shape_hw, bool)
    crop, r0, c0 = rasterize_crop(poly_px, shape_hw)
    out[r0:r0 + crop.shape[0], c0:c0 + crop.shape[1]] = crop
    return out


def fill_polygon_cv2(poly_px: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: ``cv2.fillPoly`` of ``poly_px`` (pixel units, vertices to 1/16 px).

    Faster than :func:`rasterize` but it adds boundary pixels, so it is for shapes whose area
    is never measured (the image-only details of the synthetic slices).
    """
    out = np.zeros(shape_hw, np.uint8)
    pts = np.rint(np.asarray(poly_px) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(out, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return out.astype(bool)


# === Polylines and hulls ===
def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull [K, 2] (float64) of a point set [N, 2]."""
    return cv2.convexHull(np.asarray(points, np.float32)).reshape(-1, 2).astype(np.float64)


def resample_polyline(poly: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step`` mm along a polyline [N, 2] and their arc lengths."""
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    ss = np.linspace(0.0, s[-1], max(2, int(math.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(ss, s, poly[:, 0]), np.interp(ss, s, poly[:, 1])], axis=1), ss
