"""The synthetic cohort (``spoils synth``): deterministic phantoms of a sagittal T2 lumbar spine.

``spoils synth --patients N --slices-per-patient K --seed S --out DIR [--size 512]
[--pixel-spacing 0.6] [--slice-spacing 1.0]`` writes, in the layout of
``spoils_tf.data.layout``::

    DIR/labelme/S0000/S0000_slice<k>.json + .png   14-class LabelMe + uint8 image
    DIR/patients.csv        layout.PATIENT_COLUMNS + n_slices, midline_slice
    DIR/discs.csv           layout.DISC_COLUMNS, one row per (patient, slice, level) in the mask
    DIR/geometry_truth.csv  analytic ground truth per (patient, slice, level), GEOMETRY_TRUTH_COLUMNS
    DIR/clinical.csv        patient, age, sex, odi, nrs
    DIR/issues.csv          patients that could not be generated (normally header only)
    DIR/synth_config.json   the arguments, so the cohort can be regenerated

It is the always-available default dataset and the fixture on which geometry is checked
exactly, so every labelled shape is a polygon in millimetres and every ground-truth number
is computed from the polygons (never from pixels).

Coordinates and frames follow ``spoils_tf.geometry.frame``: x = image column direction (mm,
posterior positive), y = row direction (mm, inferior positive); pixel (r, c) has its centre at
x = c * col_spacing, y = r * row_spacing; a part's frame has u posterior, v superior.
A pixel belongs to a labelled shape iff its centre lies inside the polygon (``rasterize``, an
exact scanline test on pixel centres), so pixel counts are unbiased estimates of polygon areas.

Anatomy (per patient, from ``np.random.default_rng([seed, patient_index, 0])`` so patient i
is the same whatever N):

* A column T11 (image only), T11-T12 disc (image only), T12 (image only, background in the
  mask), T12-L1, L1, ..., L5, L5-S1, S1 (a sacral wedge, labelled S1), S2..S5 (image only),
  stacked top to bottom with a gap of one pixel between neighbours.
* Discs: trapezoids symmetric about their mid-line (the u axis through their centre):
  anterior and posterior sides parallel to v, anterior height ``h_a`` and posterior height
  ``h_p`` with ``h_a > h_p`` for the lordotic wedge (wedge ratio grows caudally). Because the
  shape is mirror-symmetric about its mid-line, its principal (PCA) long axis IS u, so a mask
  measurement that finds u by PCA in mm recovers ``tilt_deg`` exactly. The chain of tilts
  follows from the wedges (tilt_k = tilt_{k-1} + wedge half-angles of both discs), giving a
  lumbar lordosis of about 25-50 degrees; degenerate (lower) discs flatten it.
* Posterior bulge (severity M and H): a half ellipse of depth ``bulge_mm`` along u and height
  ``h_p`` on the posterior side, mirror-symmetric about the mid-line, part of the disc label.
  The ground-truth fields are computed on the union polygon by the shared definitions (so the
  bulge extends t = 1 and the width); the trapezoid alone is given in ``trapezoid_*`` fields
  and the bulge depth in ``bulge_mm``.
* Vertebral bodies L1..L5: rotated rectangles with angle = mean tilt of the two adjacent discs.
* Spinal canal: a band behind the posterior walls (one ``CANAL_GAP_MM`` for the posterior
  longitudinal ligament), of AP diameter ``canal_diameter_mm`` narrowed around each disc by
  a cosine bump of depth ``canal_narrowing`` (severity dependent); a bulging disc is painted
  over the canal, which narrows it further. T2 signal: CSF bright, a cord down to L1, roots.
* Parasagittal slices: K slices at lateral offsets z = (k - (K-1)/2) * slice_spacing. Discs are
  ellipsoid-like: width, heights and bulge scale by sqrt(1 - (z/R)^2) about their centre
  (R = lateral semi-axis); vertebral bodies and the canal scale their AP extent likewise.
* Grades: a latent degeneration score from age and level (lower levels degenerate more)
  gives the Pfirrmann grade and the severity (L/M/H); the disc height falls with grade
  (``GRADE_HEIGHT_FACTOR``) and severity, the nucleus T2 signal falls with grade
  (``NUCLEUS_INTENSITY``) and its edge blurs (grade 1: bright, clear ellipse; grade 5:
  collapsed and dark).
* Image: soft-tissue layers with texture, posterior elements, a smooth bias field darker
  anteriorly (coil sensitivity), a Gaussian point-spread of 0.7 px and Rician noise.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import pathlib
import sys
from typing import Optional, Sequence

import cv2
import numpy as np

from spoils_tf import fileio
from spoils_tf import labels
from spoils_tf.data import images, layout
from spoils_tf.geometry.frame import frame_axes, to_world, v_axis

# === Constants ===
# Default field of view (mm) across the image; the default pixel spacing is FOV / size.
DEFAULT_FOV_MM: float = 307.2
DEFAULT_SIZE: int = 512
# Smallest field of view accepted (mm): the labelled spine T12-L1..S1 spans up to ~245 mm.
MIN_FOV_MM: float = 260.0
DEFAULT_SLICE_SPACING_MM: float = 1.0
PATIENT_PREFIX: str = "S"

# Mid-sagittal vertebral body AP depth and height (mm) of T11, T12, L1..L5 (adult means,
# scaled per patient).
BODY_NAMES: tuple[str, ...] = ("T11", "T12") + labels.VERTEBRA_NAMES[:-1]
BODY_WIDTH_MM: tuple[float, ...] = (29.0, 30.0, 32.0, 33.0, 34.0, 35.0, 35.0)
BODY_HEIGHT_MM: tuple[float, ...] = (22.0, 23.5, 25.0, 26.5, 27.0, 27.0, 26.0)
# Healthy (Pfirrmann 1) mean disc height (mm) per labelled level, top -> bottom.
NOMINAL_DISC_HEIGHT_MM: dict[str, float] = dict(zip(labels.DISC_NAMES, (6.0, 7.5, 9.0, 10.0, 11.0, 10.5)))
# Lordotic wedge ratio (h_a - h_p) / (h_a + h_p) of a healthy disc per labelled level, before
# the patient's lordosis factor (0.7..1.3).
DISC_WEDGE_RATIO: dict[str, float] = dict(zip(labels.DISC_NAMES, (0.0, 0.06, 0.12, 0.2, 0.3, 0.45)))
# How much more a level degenerates than T12-L1 (latent score units).
LEVEL_DEGENERATION: dict[str, float] = dict(zip(labels.DISC_NAMES, (0.0, 0.2, 0.45, 0.8, 1.35, 1.45)))
# Latent degeneration score thresholds between Pfirrmann grades 1|2|3|4|5.
GRADE_CUTS: tuple[float, ...] = (1.9, 2.9, 3.8, 4.55)
# Disc height relative to a healthy disc by Pfirrmann grade, and by severity.
GRADE_HEIGHT_FACTOR: dict[int, float] = {1: 1.0, 2: 0.93, 3: 0.8, 4: 0.6, 5: 0.4}
SEVERITY_HEIGHT_FACTOR: dict[str, float] = {"L": 1.0, "M": 0.95, "H": 0.88}
# Nominal T2 intensities (before bias field and noise; CSF is about 1).
CSF_INTENSITY: float = 0.95
ANNULUS_INTENSITY: float = 0.16
NUCLEUS_INTENSITY: dict[int, float] = {1: 0.88, 2: 0.72, 3: 0.48, 4: 0.28, 5: 0.19}
# Edge width of the nucleus profile (fraction of its semi-axes) by grade: sharp -> diffuse.
NUCLEUS_SOFTNESS: dict[int, float] = {1: 0.04, 2: 0.06, 3: 0.12, 4: 0.2, 5: 0.25}
NUCLEUS_SEMI_AXIS_U: dict[int, float] = {1: 0.32, 2: 0.3, 3: 0.27, 4: 0.22, 5: 0.16}  # x width
NUCLEUS_CUTOFF: float = 1.4  # nucleus profile is zero beyond this normalised radius
# Posterior bulge depth (mm) and canal narrowing fraction ranges by severity.
BULGE_MM: dict[str, tuple[float, float]] = {"L": (0.0, 0.0), "M": (1.5, 2.5), "H": (2.5, 4.0)}
CANAL_NARROWING: dict[str, tuple[float, float]] = {"L": (0.0, 0.06), "M": (0.1, 0.2), "H": (0.25, 0.4)}
CANAL_GAP_MM: float = 1.2  # posterior longitudinal ligament between bodies and canal

GEOMETRY_TRUTH_COLUMNS: tuple[str, ...] = (
        "patient", "slice", "level", "slice_offset_mm", "x_px", "y_px", "tilt_deg",
        "disc_width_mm", "disc_midpoint_width_mm", "disc_height_mm", "disc_central_height_mm",
        "disc_anterior_height_mm", "disc_posterior_height_mm", "disc_area_mm2",
        "vert_above_height_mm", "vert_above_width_mm", "vert_below_height_mm", "vert_below_width_mm",
        "canal_ap_diameter_mm", "disc_height_index",
        "trapezoid_width_mm", "trapezoid_anterior_height_mm", "trapezoid_posterior_height_mm",
        "bulge_mm", "canal_narrowing",
        "nucleus_intensity", "annulus_intensity", "csf_intensity", "nucleus_ratio", "signal_ratio")
CLINICAL_COLUMNS: tuple[str, ...] = ("patient", "age", "sex", "odi", "nrs")
PATIENT_EXTRA_COLUMNS: tuple[str, ...] = ("n_slices", "midline_slice")
SYNTH_CONFIG_JSON = "synth_config.json"


# === Exact polygon geometry ===
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


def _subtract_intervals(base: np.ndarray, cuts: Sequence[np.ndarray]) -> list[tuple[float, float]]:
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


def _fill_image_only(poly_px: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """bool [H, W] of an image-only shape (no label): fast ``cv2.fillPoly`` is good enough."""
    out = np.zeros(shape_hw, np.uint8)
    pts = np.rint(np.asarray(poly_px) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(out, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return out.astype(bool)


# === Shapes ===
def disc_local_polygon(width_mm: float, anterior_height_mm: float, posterior_height_mm: float,
                       bulge_mm: float = 0.0, n_arc: int = 24) -> np.ndarray:
    """A disc in its own frame: float [N, 2] of (a along u, b along v), centred at a = b = 0.

    The trapezoid spans a in [-W/2, W/2]; its anterior side (a = -W/2) has height h_a and its
    posterior side h_p, both bisected by b = 0. A bulge of depth ``bulge_mm`` > 0 replaces the
    posterior side by the half ellipse (W/2 + bulge cos phi, h_p/2 sin phi), phi in [-90, 90] deg.
    """
    w2, ha, hp = width_mm / 2, anterior_height_mm / 2, posterior_height_mm / 2
    pts = [(-w2, -ha), (w2, -hp)]
    if bulge_mm > 0:
        phi = np.linspace(-math.pi / 2, math.pi / 2, n_arc + 2)[1:-1]
        pts += list(zip(w2 + bulge_mm * np.cos(phi), hp * np.sin(phi)))
    pts += [(w2, hp), (-w2, ha)]
    return np.asarray(pts, np.float64)


def rect_local_polygon(width_mm: float, height_mm: float) -> np.ndarray:
    """Rectangle [4, 2] in its own frame, centred at the origin (a along u, b along v)."""
    w2, h2 = width_mm / 2, height_mm / 2
    return np.array([(-w2, -h2), (w2, -h2), (w2, h2), (-w2, h2)], np.float64)


def sacral_local_polygon(width_mm: float, height_mm: float, top_tilt_deg: float) -> np.ndarray:
    """The S1 wedge in a frame whose u axis is tilted by ``top_tilt_deg`` from its top edge.

    The segment is a quadrilateral: top edge (the S1 endplate) of ``width_mm``, a straight
    posterior wall of ``height_mm`` perpendicular to it, and an anterior wall converging so that
    the bottom edge is 75 % of the top. Built in the endplate frame, then rotated into the frame
    of the L5-S1 disc (rotation by ``top_tilt_deg``, the wedge half-angle of L5-S1).
    """
    w2, h = width_mm / 2, height_mm
    pts = np.array([(-w2, h / 2), (w2, h / 2), (w2, -h / 2), (-0.5 * w2, -h / 2)])
    r = math.radians(top_tilt_deg)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return pts @ rot.T


# === Anatomy ===
@dataclasses.dataclass(frozen=True)
class Part:
    """One structure of the column at the midline (all lengths mm, image mm coordinates).

    Attributes:
        name: "L3", "T12-L1", "T12", "S2", ...
        class_id: id painted into the mask (``labels.BACKGROUND_ID`` for image-only parts).
        kind: "vertebra" | "disc" | "sacrum".
        centre: float [2] construction centre (image mm).
        tilt_deg: angle of the part's frame (``geometry.frame.frame_axes``).
        local: float [N, 2] polygon in the frame at the midline (a along u, b along v).
        lateral_radius_mm: lateral semi-axis R; the part is absent where |z| >= 0.95 R.
        scale_height: True for discs (both axes shrink laterally), False for bodies (AP only).
    """

    name: str
    class_id: int
    kind: str
    centre: np.ndarray
    tilt_deg: float
    local: np.ndarray
    lateral_radius_mm: float
    scale_height: bool


@dataclasses.dataclass(frozen=True)
class DiscSpec:
    """Per-disc parameters of a patient (midline values, mm; intensities nominal 0..1)."""

    level: str
    pfirrmann: int
    severity: str
    width_mm: float
    anterior_height_mm: float
    posterior_height_mm: float
    bulge_mm: float
    tilt_deg: float
    canal_narrowing: float
    nucleus_intensity: float
    nucleus_softness: float
    nucleus_a_mm: float
    nucleus_b_mm: float

    @property
    def grade_class(self) -> str:
        return labels.grade_class(self.pfirrmann, self.severity)


@dataclasses.dataclass(frozen=True)
class PatientAnatomy:
    """Everything drawn for one patient, sampled once and shared by all its slices.

    Attributes:
        patient: id ``S0000``-style. index: patient index in the cohort.
        age: years (int). sex: "M" | "F". odi: 0..100. nrs: 0..10.
        discs: labelled discs top -> bottom (``labels.DISC_NAMES`` order).
        parts: every part of the column top -> bottom (T11 .. S5), midline geometry.
        canal_diameter_mm: nominal canal AP diameter at the midline.
        canal_radius_mm: lateral semi-axis of the thecal sac.
        marrow_intensity: nominal vertebral marrow T2 intensity.
        tissue: soft-tissue layer parameters (mm offsets from the column centre line).
        shift_frac: (x, y) in [0, 1] placing the column in the field of view.
    """

    patient: str
    index: int
    age: int
    sex: str
    odi: int
    nrs: int
    discs: tuple[DiscSpec, ...]
    parts: tuple[Part, ...]
    canal_diameter_mm: float
    canal_radius_mm: float
    marrow_intensity: float
    tissue: dict
    shift_frac: tuple[float, float]


def patient_id(index: int) -> str:
    """``S0000``, ``S0001``, ... for patient index 0, 1, ..."""
    return f"{PATIENT_PREFIX}{int(index):04d}"


def _sample_grade(rng: np.random.Generator, age: int, level: str) -> tuple[int, str, float]:
    """Pfirrmann grade, severity and the latent degeneration score of one disc."""
    d = 0.7 + 3.2 * (age - 20) / 60 + LEVEL_DEGENERATION[level] + rng.normal(0.0, 0.8)
    cuts = GRADE_CUTS
    grade = 1 + int(np.searchsorted(cuts, d, side="right"))
    lower = cuts[grade - 2] if grade >= 2 else cuts[0] - 1.0
    e = 0.45 * min(d - lower, 1.0) + 0.2 * (grade - 3) + rng.normal(0.0, 0.6)
    severity = "L" if e < 0.2 else ("M" if e < 0.75 else "H")
    if grade <= 2:
        severity = "L"
    return grade, severity, d


# Per-patient random ranges (uniform unless noted): a size factor for all lengths, the lordosis
# factor on the wedge ratios, the tilt (deg) of the T11-T12 disc, per-body depth and height
# jitter, the lateral semi-axes (mm) of vertebral bodies and discs.
AGE_RANGE: tuple[int, int] = (20, 81)                 # years, integers, upper bound exclusive
SIZE_FACTOR_RANGE: tuple[float, float] = (0.9, 1.1)
LORDOSIS_FACTOR_RANGE: tuple[float, float] = (0.7, 1.3)
TOP_TILT_DEG_RANGE: tuple[float, float] = (-8.0, 2.0)
S1_TOP_WIDTH_MM: float = 36.0                         # mean depth of the S1 endplate
S1_HEIGHT_MM: float = 28.0
BODY_WIDTH_JITTER: tuple[float, float] = (0.97, 1.03)
BODY_HEIGHT_JITTER: tuple[float, float] = (0.95, 1.05)
S1_HEIGHT_JITTER: tuple[float, float] = (0.92, 1.08)
BODY_LATERAL_RADIUS_MM: tuple[float, float] = (20.0, 25.0)
DISC_LATERAL_RADIUS_MM: tuple[float, float] = (20.0, 24.0)
# A disc is this fraction (range) of the mean depth of its two bodies; its height varies by a
# normal factor of this standard deviation; the image-only T11-T12 disc is healthy, this high.
DISC_WIDTH_FRACTION: tuple[float, float] = (0.96, 1.0)
DISC_HEIGHT_SD: float = 0.04
IMAGE_ONLY_DISC_HEIGHT_MM: float = 5.5
# When a disc collapses its posterior height keeps at least this fraction of its mean height.
MIN_POSTERIOR_HEIGHT_FRACTION: float = 0.35
NUCLEUS_INTENSITY_JITTER: tuple[float, float] = (0.95, 1.05)
# The nucleus' semi-axis along v: at most this fraction of the disc height.
NUCLEUS_MAX_HEIGHT_FRACTION: float = 0.3
# Sacrum below S1 (S2..S5): each this much less tilted (deg, range), and smaller by these
# factors (depth, height); S2 starts from S1 scaled by SACRUM_FIRST_SCALE.
SACRAL_KYPHOSIS_DEG: tuple[float, float] = (3.0, 7.0)
SACRUM_FIRST_SCALE: tuple[float, float] = (0.75, 0.8)
SACRUM_STEP_SCALE: tuple[float, float] = (0.78, 0.85)
SACRUM_RADIUS_FACTOR: float = 0.8
# Soft tissue: key of PatientAnatomy.tissue -> uniform range (mm, or nominal intensity).
TISSUE_RANGES: dict[str, tuple[float, float]] = {
        "prevertebral_mm": (20.0, 30.0),
        "posterior_elements_mm": (22.0, 30.0),
        "muscle_mm": (35.0, 50.0),
        "fat_mm": (8.0, 25.0),
        "bias_floor": (0.12, 0.25),
        "bias_width_mm": (12.0, 22.0),
        "noise_sigma": (0.025, 0.045),
        "fat_intensity": (0.55, 0.7),
        "muscle_intensity": (0.18, 0.26),
}
CANAL_DIAMETER_MM: tuple[float, float] = (13.0, 17.0)  # x the size factor
CANAL_LATERAL_RADIUS_MM: tuple[float, float] = (9.0, 12.0)
MARROW_INTENSITY: tuple[float, float] = (0.32, 0.5)
# Clinical scores from the worst labelled grade class id w: round(a + b * w + normal(0, sd)),
# clipped to the score's range.
ODI_MODEL: tuple[float, float, float] = (6.0, 5.2, 7.0)   # (a, b, sd), 0..100
NRS_MODEL: tuple[float, float, float] = (1.0, 0.6, 1.1)   # (a, b, sd), 0..10


@dataclasses.dataclass(frozen=True)
class _Build:
    """A patient's overall draws: size and lordosis factors, the top disc's tilt (deg), the
    body depths (T11..L5 then S1's top edge) and heights (T11..L5), S1's height, the lateral
    semi-axes of bodies and discs (mm)."""

    age: int
    sex: str
    size: float
    lordosis: float
    tilt0: float
    body_w: list[float]
    body_h: list[float]
    s1_height: float
    body_r: float
    disc_r: float


def sample_patient(seed: int, index: int) -> PatientAnatomy:
    """Samples one patient's anatomy, grades and clinical scores (midline geometry only).

    Deterministic in (seed, index) alone: ``np.random.default_rng([seed, index, 0])`` draws the
    anatomy and ``[seed, index, 1]`` the clinical noise, in a fixed order (the steps below
    draw in the order they are called).

    Raises:
        ValueError: seed or index negative.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and patient index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([int(seed), int(index), 0])
    build = _sample_build(rng)
    specs = [_sample_disc(rng, build, k, name)
             for k, name in enumerate(("T11-T12",) + labels.DISC_NAMES)]
    specs, betas = _chain_tilts(specs, build.tilt0)
    parts = _column_parts(rng, build, specs, betas)
    tissue = {key: rng.uniform(lo, hi) for key, (lo, hi) in TISSUE_RANGES.items()}
    canal_diameter = rng.uniform(*CANAL_DIAMETER_MM) * build.size
    canal_r = rng.uniform(*CANAL_LATERAL_RADIUS_MM)
    marrow = rng.uniform(*MARROW_INTENSITY)
    shift = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0)))
    odi, nrs = _clinical_scores(seed, index, specs[1:])
    return PatientAnatomy(patient=patient_id(index), index=int(index), age=build.age,
                          sex=build.sex, odi=odi, nrs=nrs, discs=tuple(specs[1:]),
                          parts=tuple(_place_chain(parts)), canal_diameter_mm=canal_diameter,
                          canal_radius_mm=canal_r, marrow_intensity=marrow, tissue=tissue,
                          shift_frac=shift)


def _sample_build(rng: np.random.Generator) -> _Build:
    """Age, sex and the column's overall proportions (``_Build``)."""
    age = int(rng.integers(*AGE_RANGE))
    sex = "F" if rng.random() < 0.5 else "M"
    size = rng.uniform(*SIZE_FACTOR_RANGE)
    lordosis = rng.uniform(*LORDOSIS_FACTOR_RANGE)
    tilt0 = rng.uniform(*TOP_TILT_DEG_RANGE)
    body_w = [w * size * rng.uniform(*BODY_WIDTH_JITTER) for w in BODY_WIDTH_MM + (S1_TOP_WIDTH_MM,)]
    body_h = [h * size * rng.uniform(*BODY_HEIGHT_JITTER) for h in BODY_HEIGHT_MM]
    s1_height = S1_HEIGHT_MM * size * rng.uniform(*S1_HEIGHT_JITTER)
    body_r = rng.uniform(*BODY_LATERAL_RADIUS_MM)
    disc_r = rng.uniform(*DISC_LATERAL_RADIUS_MM)
    return _Build(age, sex, size, lordosis, tilt0, body_w, body_h, s1_height, body_r, disc_r)


def _sample_disc(rng: np.random.Generator, build: _Build, k: int, name: str) -> DiscSpec:
    """Disc ``k`` of the column (0 = T11-T12, image only), between bodies k and k + 1: grade,
    severity, trapezoid, bulge, canal narrowing and nucleus (tilt set by ``_chain_tilts``)."""
    size = build.size
    w = 0.5 * (build.body_w[k] + build.body_w[k + 1]) * rng.uniform(*DISC_WIDTH_FRACTION)
    if name in NOMINAL_DISC_HEIGHT_MM:
        grade, sev, _ = _sample_grade(rng, build.age, name)
        nominal, ratio = NOMINAL_DISC_HEIGHT_MM[name], DISC_WEDGE_RATIO[name]
    else:
        grade, sev, nominal, ratio = 1, "L", IMAGE_ONLY_DISC_HEIGHT_MM, 0.0
    factor = GRADE_HEIGHT_FACTOR[grade] * SEVERITY_HEIGHT_FACTOR[sev] * rng.normal(1.0, DISC_HEIGHT_SD)
    height = nominal * size * factor
    # The lordotic wedge (h_a - h_p) shrinks less than the height when a disc collapses
    # (the posterior part collapses first); h_p stays >= 35 % of the mean height.
    wedge = 2 * ratio * build.lordosis * nominal * size * (0.5 + 0.5 * factor)
    h_p = max(height - wedge / 2, MIN_POSTERIOR_HEIGHT_FRACTION * height)
    h_a = 2 * height - h_p
    lo, hi = BULGE_MM[sev]
    bulge = rng.uniform(lo, hi) if hi > 0 else 0.0
    lo, hi = CANAL_NARROWING[sev]
    narrowing = rng.uniform(lo, hi)
    i_n = NUCLEUS_INTENSITY[grade] * rng.uniform(*NUCLEUS_INTENSITY_JITTER)
    a_n = NUCLEUS_SEMI_AXIS_U[grade] * w
    # the normalised-radius-1.4 ellipse stays inside the trapezoid (see NUCLEUS_CUTOFF)
    h_short = height - (h_a - h_p) * (NUCLEUS_CUTOFF * a_n / w)
    b_n = min(NUCLEUS_MAX_HEIGHT_FRACTION * height, 0.95 * h_short / 2 / NUCLEUS_CUTOFF)
    return DiscSpec(level=name, pfirrmann=grade, severity=sev, width_mm=w,
                    anterior_height_mm=h_a, posterior_height_mm=h_p, bulge_mm=bulge,
                    tilt_deg=0.0, canal_narrowing=narrowing, nucleus_intensity=i_n,
                    nucleus_softness=NUCLEUS_SOFTNESS[grade], nucleus_a_mm=a_n,
                    nucleus_b_mm=b_n)


def _chain_tilts(specs: list[DiscSpec], tilt0: float) -> tuple[list[DiscSpec], list[float]]:
    """The discs with their tilts set, and each disc's wedge half-angle beta (deg):
    consecutive discs differ by beta_prev + beta, starting from ``tilt0``."""
    betas = [math.degrees(math.atan((s.anterior_height_mm - s.posterior_height_mm) / (2 * s.width_mm)))
             for s in specs]
    tilts = [tilt0]
    for k in range(1, len(specs)):
        tilts.append(tilts[-1] + betas[k - 1] + betas[k])
    return [dataclasses.replace(s, tilt_deg=t) for s, t in zip(specs, tilts)], betas


def _column_parts(rng: np.random.Generator, build: _Build, specs: list[DiscSpec],
                  betas: list[float]) -> list[Part]:
    """Every part top -> bottom (T11 .. S5) at the origin, to be placed by ``_place_chain``:
    bodies tilted as the mean of their discs, S1 in the frame of the L5-S1 disc, S2..S5
    (image only) each smaller and less tilted (the sacral kyphosis; draws from ``rng``)."""
    tilts = [s.tilt_deg for s in specs]
    parts: list[Part] = []
    body_tilts = [tilts[0] - betas[0]] + [0.5 * (tilts[k] + tilts[k + 1]) for k in range(len(tilts) - 1)]
    for k, bname in enumerate(BODY_NAMES):
        cid = labels.SEG_ID.get(bname, labels.BACKGROUND_ID)
        parts.append(Part(bname, cid, "vertebra", np.zeros(2), body_tilts[k],
                          rect_local_polygon(build.body_w[k], build.body_h[k]), build.body_r,
                          False))
        s = specs[k]
        cid = labels.SEG_ID.get(s.level, labels.BACKGROUND_ID)
        parts.append(Part(s.level, cid, "disc", np.zeros(2), s.tilt_deg,
                          disc_local_polygon(s.width_mm, s.anterior_height_mm, s.posterior_height_mm,
                                             s.bulge_mm), build.disc_r, True))
    # S1 in the frame of the L5-S1 disc, its top edge parallel to that disc's lower endplate.
    s1_w = build.body_w[-1]
    parts.append(Part("S1", labels.SEG_ID["S1"], "vertebra", np.zeros(2), tilts[-1],
                      sacral_local_polygon(s1_w, build.s1_height, betas[-1]), build.body_r, False))
    sac_tilt = tilts[-1] + betas[-1]
    sw, sh = s1_w * SACRUM_FIRST_SCALE[0], build.s1_height * SACRUM_FIRST_SCALE[1]
    for name in ("S2", "S3", "S4", "S5"):
        sac_tilt -= rng.uniform(*SACRAL_KYPHOSIS_DEG)
        parts.append(Part(name, labels.BACKGROUND_ID, "sacrum", np.zeros(2), sac_tilt,
                          sacral_local_polygon(sw, sh, 0.0), build.body_r * SACRUM_RADIUS_FACTOR,
                          False))
        sw, sh = sw * SACRUM_STEP_SCALE[0], sh * SACRUM_STEP_SCALE[1]
    return parts


def _clinical_scores(seed: int, index: int, discs: Sequence[DiscSpec]) -> tuple[int, int]:
    """(ODI 0..100, NRS 0..10) from the worst labelled disc (higher class id = worse), with
    noise from the patient's own clinical stream ``[seed, index, 1]``."""
    crng = np.random.default_rng([int(seed), int(index), 1])
    worst = max(labels.GRADE_CLASS_ID[s.grade_class] for s in discs)
    a, b, sd = ODI_MODEL
    odi = int(np.clip(round(a + b * worst + crng.normal(0.0, sd)), 0, 100))
    a, b, sd = NRS_MODEL
    nrs = int(np.clip(round(a + b * worst + crng.normal(0.0, sd)), 0, 10))
    return odi, nrs


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull [K, 2] (float64) of a point set [N, 2]."""
    return cv2.convexHull(np.asarray(points, np.float32)).reshape(-1, 2).astype(np.float64)


# Gap between consecutive parts (mm) at the midline placement (about one pixel at 0.6-0.9 mm).
PLACEMENT_GAP_MM: float = 0.9


def _place_chain(parts: list[Part]) -> list[Part]:
    """Sets the centres so that consecutive parts are at least ``PLACEMENT_GAP_MM`` apart.

    The first part sits at the origin; each next one moves from the previous centre along the
    mean inferior direction (-v) of the two frames by the smallest distance lam at which it no
    longer meets the previous part grown by the gap: lam is where the ray lam * d leaves the
    Minkowski difference (previous part + disc of radius gap) - (next part), a convex polygon
    (hulls of the parts are used; they contain the parts, so the true gap is >= the target).
    """
    circle = PLACEMENT_GAP_MM / math.cos(math.pi / 32) * np.stack(
            [np.cos(np.arange(32) * math.pi / 16), np.sin(np.arange(32) * math.pi / 16)], axis=1)
    placed = [dataclasses.replace(parts[0], centre=np.zeros(2))]
    for part in parts[1:]:
        prev = placed[-1]
        d = -(frame_axes(prev.tilt_deg)[1] + frame_axes(part.tilt_deg)[1])
        d /= np.linalg.norm(d)
        grown = _hull((_hull(to_world(prev.local, prev.centre, prev.tilt_deg))[:, None, :]
                       + circle[None, :, :]).reshape(-1, 2))
        nxt = _hull(to_world(part.local, prev.centre, part.tilt_deg))
        diff = _hull((grown[:, None, :] - nxt[None, :, :]).reshape(-1, 2))
        lam = float(line_intervals(diff, np.zeros(2), d)[:, 1].max())
        placed.append(dataclasses.replace(part, centre=prev.centre + lam * d))
    return placed


# === One slice ===
@dataclasses.dataclass(frozen=True)
class SliceShapes:
    """The polygons (image mm) of one slice at lateral offset ``offset_mm``.

    Attributes:
        offset_mm: lateral offset z from the midline.
        parts: name -> (Part, polygon [N, 2] mm) for parts present (|z| < 0.95 R).
        canal: canal polygon [N, 2] mm or None where the slice misses the thecal sac.
        canal_lines: (anterior [M, 2], posterior [M, 2]) canal boundary polylines (image only use).
        posterior_elements: polygons [N, 2] of laminae/spinous processes (image only).
        scale: name -> lateral scale factor sqrt(1 - (z/R)^2) applied to that part.
        origin_mm: [2] translation applied to the anatomy (placement in the field of view).
    """

    offset_mm: float
    parts: dict
    canal: Optional[np.ndarray]
    canal_lines: Optional[tuple[np.ndarray, np.ndarray]]
    posterior_elements: list
    scale: dict
    origin_mm: np.ndarray


def _lateral_scale(z: float, radius: float) -> Optional[float]:
    if abs(z) >= 0.95 * radius:
        return None
    return math.sqrt(1.0 - (z / radius) ** 2)


def _resample(poly: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step`` mm along a polyline [N, 2] and their arc lengths."""
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    ss = np.linspace(0.0, s[-1], max(2, int(math.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(ss, s, poly[:, 0]), np.interp(ss, s, poly[:, 1])], axis=1), ss


def _placement_origin(anat: PatientAnatomy, fov_mm: tuple[float, float]) -> np.ndarray:
    """Translation putting the labelled column inside the field of view (fov = (x_mm, y_mm)).

    Raises:
        ValueError: the field of view cannot hold the labelled structures with a 4 mm margin.
    """
    pts = np.concatenate([to_world(p.local, p.centre, p.tilt_deg) for p in anat.parts
                          if p.class_id != labels.BACKGROUND_ID])
    lo, hi = pts.min(0), pts.max(0)
    # the canal and posterior elements need room behind the bodies
    hi = hi + np.array([anat.canal_diameter_mm + 10.0, 0.0])
    margin = 4.0
    room = np.asarray(fov_mm) - (hi - lo) - 2 * margin
    if np.any(room < 0):
        raise ValueError(f"field of view {fov_mm[0]:.0f} x {fov_mm[1]:.0f} mm (W x H) cannot hold the "
                         f"labelled spine of patient {anat.patient} ({hi[0] - lo[0]:.0f} x "
                         f"{hi[1] - lo[1]:.0f} mm + margins); expected --size x --pixel-spacing larger")
    # horizontally: the column a little left of centre (posterior soft tissue needs room)
    fx = 0.45 + 0.25 * anat.shift_frac[0]
    fy = 0.3 + 0.4 * anat.shift_frac[1]
    return np.array([margin + fx * room[0], margin + fy * room[1]]) - lo


def build_slice(anat: PatientAnatomy, offset_mm: float, fov_mm: tuple[float, float]) -> SliceShapes:
    """Polygons of one parasagittal slice (see ``SliceShapes``), in image mm coordinates.

    Raises:
        ValueError: the field of view is too small (``_placement_origin``).
    """
    origin = _placement_origin(anat, fov_mm)
    z = float(offset_mm)
    parts, scale = {}, {}
    for p in anat.parts:
        g = _lateral_scale(z, p.lateral_radius_mm)
        if g is None:
            continue
        local = p.local * np.array([g, g if p.scale_height else 1.0])
        parts[p.name] = (p, to_world(local, p.centre + origin, p.tilt_deg))
        scale[p.name] = g

    canal, lines, post = None, None, []
    g_c = _lateral_scale(z, anat.canal_radius_mm)
    bodies = [p for p in anat.parts if p.kind == "vertebra" and p.name in parts]
    if g_c is not None and len(bodies) >= 2:
        canal, lines = _canal_polygon(anat, parts, bodies, g_c, origin)
    for p in anat.parts:
        if p.kind != "vertebra" or p.name not in parts or p.name == "S1":
            continue
        w2, h2 = p.local[:, 0].max(), p.local[:, 1].max()
        a0 = w2 + CANAL_GAP_MM + anat.canal_diameter_mm + 1.5
        length = anat.tissue["posterior_elements_mm"]
        local = np.array([(a0, 0.55 * h2), (a0 + 6, 0.75 * h2), (a0 + length, 0.1 * h2 - 8),
                          (a0 + length, -0.5 * h2 - 8), (a0 + 4, -0.45 * h2), (a0, -0.3 * h2)])
        post.append(to_world(local, p.centre + origin, p.tilt_deg))
    return SliceShapes(offset_mm=z, parts=parts, canal=canal, canal_lines=lines,
                       posterior_elements=post, scale=scale, origin_mm=origin)


def _canal_polygon(anat: PatientAnatomy, parts: dict, bodies: list, g_c: float,
                   origin: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The thecal sac: anterior line through the bodies' offset posterior corners, posterior
    line at the (narrowed) diameter along the smoothed normal; closed at the bottom of S1."""
    anterior = []
    for i, p in enumerate(bodies):
        poly = parts[p.name][1]
        u, v = frame_axes(p.tilt_deg)
        local = (poly - (p.centre + origin)) @ np.stack([u, v], axis=1)
        a_post = local[:, 0].max()
        b_top, b_bot = local[:, 1].max(), local[:, 1].min()
        top = p.centre + origin + (a_post + CANAL_GAP_MM) * u + b_top * v
        bot = p.centre + origin + (a_post + CANAL_GAP_MM) * u + b_bot * v
        if i == 0:
            anterior.append(top + 80.0 * v)  # beyond the top of the image
        anterior += [top, bot]
        if p.name == "S1":
            break
    line, s = _resample(np.asarray(anterior), 0.5)
    n_pts = len(line)
    w = 8
    idx_hi = np.minimum(np.arange(n_pts) + w, n_pts - 1)
    idx_lo = np.maximum(np.arange(n_pts) - w, 0)
    tang = line[idx_hi] - line[idx_lo]
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    normal = np.stack([tang[:, 1], -tang[:, 0]], axis=1)  # posterior
    diam = np.full(n_pts, anat.canal_diameter_mm * g_c)
    narrowing = np.zeros(n_pts)
    for spec in anat.discs:
        if spec.level not in parts:
            continue
        part, poly = parts[spec.level]
        _, c = polygon_area_centroid(poly)
        u, v = frame_axes(part.tilt_deg)
        rel = line - c[None, :]
        cand = np.where(rel @ u > 0, np.abs(rel @ v), np.inf)
        s_k = s[int(np.argmin(cand))]
        half = 0.5 * spec.anterior_height_mm + 0.5 * spec.posterior_height_mm + 6.0
        x = np.clip((s - s_k) / half, -1, 1)
        narrowing = np.maximum(narrowing, spec.canal_narrowing * 0.5 * (1 + np.cos(math.pi * x)))
    diam *= 1 - narrowing
    taper = np.clip((s[-1] - s) / 20.0, 0.0, 1.0)
    diam *= 0.35 + 0.65 * taper
    posterior = line + diam[:, None] * normal
    return np.concatenate([line, posterior[::-1]]), (line, posterior)


# === Ground truth ===
def _vertebra_frame(level_discs: list[tuple[str, float]]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Frame (u, v) of a vertebra from the tilts of its adjacent present discs (mean of u)."""
    if not level_discs:
        return None
    u = np.sum([frame_axes(t)[0] for _, t in level_discs], axis=0)
    u /= np.linalg.norm(u)
    return u, v_axis(u)


@functools.lru_cache(maxsize=64)
def _nucleus_profile_integral(softness: float) -> float:
    """J = integral over rho in [0, NUCLEUS_CUTOFF] of sigmoid((1 - rho)/k) * 2 rho d rho.

    The nucleus contributes (I_n - I_a) * pi * A * B * J to the disc's intensity integral.
    """
    rho = np.linspace(0.0, NUCLEUS_CUTOFF, 4001)
    f = 2 * rho / (1 + np.exp(-(1 - rho) / softness))
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(rho)))


def slice_truth(anat: PatientAnatomy, shapes: SliceShapes, slice_index: int,
                spacing_mm: tuple[float, float]) -> list[dict]:
    """Ground-truth rows (``GEOMETRY_TRUTH_COLUMNS``) for the labelled discs of one slice.

    Every length follows the shared definitions (module ``spoils_tf.geometry``) computed
    exactly on the polygons; vertebra/canal fields are None where the structure is absent.
    """
    sr, sc = spacing_mm
    present = {s.level: s for s in anat.discs if s.level in shapes.parts}
    over = [poly for name, (p, poly) in shapes.parts.items()]  # painted after the canal
    rows = []
    for spec in anat.discs:
        if spec.level not in present:
            continue
        part, poly = shapes.parts[spec.level]
        g = shapes.scale[spec.level]
        u, v = frame_axes(part.tilt_deg)
        m = measure_in_frame(poly, u, v)
        row = {"patient": anat.patient, "slice": slice_index, "level": spec.level,
               "slice_offset_mm": shapes.offset_mm,
               "x_px": m.centroid_mm[0] / sc, "y_px": m.centroid_mm[1] / sr,
               "tilt_deg": part.tilt_deg,
               "disc_width_mm": m.area_width_mm, "disc_midpoint_width_mm": m.midpoint_width_mm,
               "disc_height_mm": m.height_mm, "disc_central_height_mm": m.central_height_mm,
               "disc_anterior_height_mm": m.anterior_height_mm,
               "disc_posterior_height_mm": m.posterior_height_mm, "disc_area_mm2": m.area_mm2}
        vert_heights = []
        above, below = labels.disc_neighbours(spec.level)
        for key, vname in (("above", above), ("below", below)):
            row[f"vert_{key}_height_mm"] = row[f"vert_{key}_width_mm"] = None
            if vname is None or vname not in shapes.parts:
                continue
            adj = [(d, shapes.parts[d][0].tilt_deg) for d in labels.DISC_NAMES
                   if d in present and vname in labels.disc_neighbours(d)]
            frame = _vertebra_frame(adj)
            vm = measure_in_frame(shapes.parts[vname][1], *frame)
            row[f"vert_{key}_height_mm"] = vm.height_mm
            row[f"vert_{key}_width_mm"] = vm.width_mm
            vert_heights.append(vm.height_mm)
        row["canal_ap_diameter_mm"] = None
        if shapes.canal is not None:
            base = line_intervals(shapes.canal, m.centroid_mm, u)
            cuts = [line_intervals(q, m.centroid_mm, u) for q in over]
            tip = line_intervals(poly, m.centroid_mm, u)[:, 1].max()
            after = [iv for iv in _subtract_intervals(base, cuts) if iv[0] >= tip - 1e-9]
            if after:
                row["canal_ap_diameter_mm"] = after[0][1] - after[0][0]
        row["disc_height_index"] = m.height_mm / float(np.mean(vert_heights)) if vert_heights else None
        row.update({"trapezoid_width_mm": spec.width_mm * g,
                    "trapezoid_anterior_height_mm": spec.anterior_height_mm * g,
                    "trapezoid_posterior_height_mm": spec.posterior_height_mm * g,
                    "bulge_mm": spec.bulge_mm * g, "canal_narrowing": spec.canal_narrowing})
        a_n, b_n = spec.nucleus_a_mm * g, spec.nucleus_b_mm * g
        j = _nucleus_profile_integral(spec.nucleus_softness)
        nucleus_area_fraction = math.pi * a_n * b_n * j / m.area_mm2
        mean = ANNULUS_INTENSITY + (spec.nucleus_intensity - ANNULUS_INTENSITY) * nucleus_area_fraction
        row.update({"nucleus_intensity": spec.nucleus_intensity, "annulus_intensity": ANNULUS_INTENSITY,
                    "csf_intensity": CSF_INTENSITY, "nucleus_ratio": spec.nucleus_intensity / CSF_INTENSITY,
                    "signal_ratio": mean / CSF_INTENSITY})
        rows.append(row)
    return rows


# === Rendering ===
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """float32 [H, W] smooth Gaussian random field, unit std, correlation length ~ sigma_px.

    Drawn on a grid coarsened by up to sigma_px / 2 and resized (bicubic), which keeps large
    correlation lengths cheap.
    """
    h, w = shape
    step = max(1.0, sigma_px / 2.0)
    gh, gw = max(4, int(math.ceil(h / step)) + 4), max(4, int(math.ceil(w / step)) + 4)
    white = rng.standard_normal((gh, gw)).astype(np.float32)
    sig = sigma_px / step
    f = cv2.GaussianBlur(white, (0, 0), sigmaX=sig, sigmaY=sig, borderType=cv2.BORDER_REFLECT)
    if step > 1.0:
        f = cv2.resize(f, (int(round(gw * step)), int(round(gh * step))), interpolation=cv2.INTER_CUBIC)
    f = f[:h, :w]
    return (f - f.mean()) / (f.std() + 1e-12)


def _px(poly_mm: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """mm polygon [N, 2] (x, y) -> pixel units (x / col_mm, y / row_mm)."""
    return np.asarray(poly_mm) / np.array([spacing_mm[1], spacing_mm[0]])[None, :]


# Soft-tissue layers, placed by the signed distance r (mm) of a pixel from the column's centre
# line (posterior positive), which a smooth texture moves by up to COLUMN_WOBBLE_MM.
COLUMN_HALF_DEPTH_MM: float = 17.0        # where the layers place the column's anterior edge
COLUMN_WOBBLE_MM: float = 3.0
ABDOMEN_INTENSITY: float = 0.22           # anterior of the prevertebral layer
BOWEL_CONTRAST: float = 0.1               # x tanh(BOWEL_GAIN x the bowel texture)
BOWEL_GAIN: float = 1.2
FINE_TEXTURE_CONTRAST: float = 0.03       # x the fine texture, everywhere
PREVERTEBRAL_INTENSITY: float = 0.24
LIGAMENT_INTENSITY: float = 0.07          # the dark band from 1 mm anterior of the column
LIGAMENT_OFFSET_MM: float = 1.0
POSTERIOR_LAYER_INTENSITY: float = 0.45   # behind the canal, around the posterior elements
LAYER_TEXTURE_CONTRAST: float = 0.04      # prevertebral and posterior layers, x fine texture
MUSCLE_TEXTURE_CONTRAST: float = 0.12     # relative, x fine texture
FAT_TEXTURE_CONTRAST: float = 0.05        # relative, x fine texture
SKIN_INTENSITY: float = 0.3
SKIN_THICKNESS_MM: float = 2.0            # air (0) beyond it
# Bone: marrow intensity varies by MARROW_TEXTURE_CONTRAST (relative); a dark cortex lines
# vertebral bodies (BODY_CORTEX_MM) and posterior elements (LAMINA_CORTEX_MM).
MARROW_TEXTURE_CONTRAST: float = 0.07
LAMINA_MARROW_FACTOR: float = 0.9
LAMINA_CORTEX_MM: float = 1.2
LAMINA_CORTEX_INTENSITY: float = 0.08
BODY_CORTEX_MM: float = 1.0
BODY_CORTEX_INTENSITY: float = 0.1
# Darker bands inside the canal: (centre, width) as fractions of the canal's AP diameter from
# its anterior wall, intensity, and whether it is the cord (down to the conus, the lower end
# of L1) or a root (from ROOTS_ABOVE_CONUS_MM above the conus down).
CANAL_BANDS: tuple[tuple[float, float, float, bool], ...] = (
        (0.45, 0.4, 0.38, True), (0.35, 0.04, 0.7, False), (0.6, 0.04, 0.72, False))
ROOTS_ABOVE_CONUS_MM: float = 10.0
# The image-only T11-T12 disc: a grade-2 nucleus with semi-axes these fractions of the disc's
# width and height.
IMAGE_ONLY_DISC_GRADE: int = 2
IMAGE_ONLY_NUCLEUS_SEMI_AXES: tuple[float, float] = (0.3, 0.25)
# Acquisition: Gaussian point spread (pixels), a coil bias rising (sigmoid in r, width
# ``tissue["bias_width_mm"]``) from ``tissue["bias_floor"]`` anteriorly to BIAS_MAX, centred
# BIAS_CENTRE_MM anterior of the column edge, with BIAS_TEXTURE_CONTRAST smooth variation;
# Rician noise; grey value = magnitude x GREY_SCALE, clipped to uint8.
POINT_SPREAD_SIGMA_PX: float = 0.7
BIAS_MAX: float = 1.05
BIAS_CENTRE_MM: float = 20.0
BIAS_TEXTURE_CONTRAST: float = 0.12
GREY_SCALE: float = 215.0


def render_slice(anat: PatientAnatomy, shapes: SliceShapes, size: int,
                 spacing_mm: tuple[float, float], rng: np.random.Generator,
                 textures: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and mask of one slice.

    Painting order (image and mask alike; later overwrites earlier): soft-tissue layers,
    posterior elements, canal (CSF, cord, roots), vertebrae, discs. Labelled shapes use
    ``rasterize`` (pixel centres); image-only details use ``cv2.fillPoly``.

    Args:
        size: image height = width (pixels). spacing_mm: (row_mm, col_mm).
        rng: the slice's noise generator. textures: per-patient fields from ``patient_textures``.

    Returns:
        (image uint8 [H, W], mask int32 [H, W], clean float32 [H, W] nominal intensities
        before point spread, bias field and noise).
    """
    hw = (size, size)
    mask = np.zeros(hw, np.int32)
    r, below_s1 = _column_distance(anat, shapes, size, spacing_mm, textures)
    img = _soft_tissue(anat, r, below_s1, textures, hw)
    marrow = anat.marrow_intensity * (1 + MARROW_TEXTURE_CONTRAST * textures["marrow"])
    _paint_posterior_elements(img, shapes, marrow, spacing_mm)
    _paint_canal(img, mask, shapes, spacing_mm)
    _paint_parts(img, mask, anat, shapes, marrow, spacing_mm)
    clean = img.copy()
    return _acquire(img, r, anat.tissue, textures, rng), mask, clean


def _column_distance(anat: PatientAnatomy, shapes: SliceShapes, size: int,
                     spacing_mm: tuple[float, float], textures: dict
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(r float32 [H, W]: signed distance (mm) along x from the column centre line x_c(y),
    through the part centres and extended linearly at both ends, plus the wobble texture;
    below_s1 bool [H, 1]: the rows below the centre of S1)."""
    sr, sc = spacing_mm
    x_mm = (np.arange(size, dtype=np.float32) * sc)[None, :]
    y_mm = (np.arange(size, dtype=np.float32) * sr)[:, None]
    centres = np.array([p.centre + shapes.origin_mm for p in anat.parts])
    cy, cxs = centres[:, 1], centres[:, 0]
    yc = y_mm[:, 0]
    cx = np.interp(yc, cy, cxs)
    top_slope = (cxs[1] - cxs[0]) / (cy[1] - cy[0])
    bot_slope = (cxs[-1] - cxs[-2]) / (cy[-1] - cy[-2])
    cx = np.where(yc < cy[0], cxs[0] + (yc - cy[0]) * top_slope, cx)
    cx = np.where(yc > cy[-1], cxs[-1] + (yc - cy[-1]) * bot_slope, cx)
    r = (x_mm - cx[:, None].astype(np.float32)) + COLUMN_WOBBLE_MM * textures["wobble"]
    below_s1 = (y_mm > float(cy[[p.name for p in anat.parts].index("S1")]))
    return r, below_s1


def _soft_tissue(anat: PatientAnatomy, r: np.ndarray, below_s1: np.ndarray, textures: dict,
                 hw: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] nominal intensities of the soft-tissue layers across the column (abdomen,
    prevertebral, ligaments, posterior layer, muscle, fat, skin, air)."""
    t = anat.tissue
    half_w = COLUMN_HALF_DEPTH_MM
    back = half_w + CANAL_GAP_MM + anat.canal_diameter_mm
    fine = textures["fine"]
    img = (ABDOMEN_INTENSITY + BOWEL_CONTRAST * np.tanh(BOWEL_GAIN * textures["bowel"])
           + FINE_TEXTURE_CONTRAST * fine).astype(np.float32)
    layers = [  # (r >= start) -> intensity field, later layers overwrite
            (-half_w - t["prevertebral_mm"], PREVERTEBRAL_INTENSITY + LAYER_TEXTURE_CONTRAST * fine),
            (-half_w - LIGAMENT_OFFSET_MM, np.full(hw, LIGAMENT_INTENSITY, np.float32)),
            (back, POSTERIOR_LAYER_INTENSITY + LAYER_TEXTURE_CONTRAST * fine),
            (back + t["posterior_elements_mm"],
             t["muscle_intensity"] * (1 + MUSCLE_TEXTURE_CONTRAST * fine)),
            (back + t["posterior_elements_mm"] + t["muscle_mm"],
             t["fat_intensity"] * (1 + FAT_TEXTURE_CONTRAST * fine)),
    ]
    for i, (start, field) in enumerate(layers):
        sel = r >= start
        if i == 1:  # the dark column layer (ligaments, endplates) stops at the sacrum
            sel &= ~below_s1
        img[sel] = np.broadcast_to(field, hw)[sel]
    r_skin = back + t["posterior_elements_mm"] + t["muscle_mm"] + t["fat_mm"]
    img[r >= r_skin] = SKIN_INTENSITY
    img[r >= r_skin + SKIN_THICKNESS_MM] = 0.0
    return img


def _paint_posterior_elements(img: np.ndarray, shapes: SliceShapes, marrow: np.ndarray,
                              spacing_mm: tuple[float, float]) -> None:
    """Laminae and spinous processes (image only): marrow with a dark cortex, in place."""
    hw = img.shape
    for poly in shapes.posterior_elements:
        inside = _fill_image_only(_px(poly, spacing_mm), hw)
        img[inside] = LAMINA_MARROW_FACTOR * marrow[inside]
        dist = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3) * min(spacing_mm)
        img[inside & (dist < LAMINA_CORTEX_MM)] = LAMINA_CORTEX_INTENSITY


def _paint_canal(img: np.ndarray, mask: np.ndarray, shapes: SliceShapes,
                 spacing_mm: tuple[float, float]) -> None:
    """The canal (label and CSF), with the cord down to the conus and roots below as darker
    bands inside it, in place."""
    if shapes.canal is None:
        return
    hw = img.shape
    inside = rasterize(_px(shapes.canal, spacing_mm), hw)  # full frame: bands are clipped to it
    mask[inside] = labels.CANAL_ID
    img[inside] = CSF_INTENSITY
    front, back_line = shapes.canal_lines
    conus_y = shapes.parts["L1"][1][:, 1].max() if "L1" in shapes.parts else None
    for frac, width, inten, is_cord in CANAL_BANDS:
        a = front + (frac - width / 2) * (back_line - front)
        b = front + (frac + width / 2) * (back_line - front)
        if conus_y is None:
            sel = np.full(len(a), not is_cord)
        else:
            sel = a[:, 1] <= conus_y if is_cord else a[:, 1] >= conus_y - ROOTS_ABOVE_CONUS_MM
        if sel.sum() < 2:
            continue
        band = np.concatenate([a[sel], b[sel][::-1]])
        img[_fill_image_only(_px(band, spacing_mm), hw) & inside] = inten


def _paint_parts(img: np.ndarray, mask: np.ndarray, anat: PatientAnatomy, shapes: SliceShapes,
                 marrow: np.ndarray, spacing_mm: tuple[float, float]) -> None:
    """Vertebrae (marrow, dark cortex) and discs (annulus with the nucleus profile), labels and
    intensities, in place."""
    hw = img.shape
    for name, (part, poly) in shapes.parts.items():
        crop, r0, c0 = rasterize_crop(_px(poly, spacing_mm), hw)
        if crop.size == 0:
            continue
        win = (slice(r0, r0 + crop.shape[0]), slice(c0, c0 + crop.shape[1]))
        mask[win][crop] = part.class_id
        sub = img[win]
        if part.kind == "disc":
            _paint_disc(sub, crop, (r0, c0), anat, shapes, name, part, spacing_mm)
        else:
            padded = np.pad(crop, 1).astype(np.uint8)
            dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1] * min(spacing_mm)
            sub[crop] = marrow[win][crop]
            sub[crop & (dist < BODY_CORTEX_MM)] = BODY_CORTEX_INTENSITY


def _paint_disc(sub: np.ndarray, crop: np.ndarray, origin_rc: tuple[int, int],
                anat: PatientAnatomy, shapes: SliceShapes, name: str, part: Part,
                spacing_mm: tuple[float, float]) -> None:
    """A disc's intensities in ``sub`` (the image window of its bounding ``crop``, whose pixel
    (0, 0) is image pixel ``origin_rc``): annulus plus the grade's nucleus profile, a sigmoid
    in the normalised elliptic radius centred on the trapezoid centre, in place."""
    sr, sc = spacing_mm
    r0, c0 = origin_rc
    spec = next((s for s in anat.discs if s.level == name), None)
    g = shapes.scale[name]
    u, v = frame_axes(part.tilt_deg)
    cen = part.centre + shapes.origin_mm  # the nucleus is centred on the trapezoid centre
    rr, cc = np.nonzero(crop)
    dx, dy = (cc + c0) * sc - cen[0], (rr + r0) * sr - cen[1]
    a = dx * u[0] + dy * u[1]
    b = dx * v[0] + dy * v[1]
    if spec is None:  # T11-T12, image only: a healthy-looking disc
        grade = IMAGE_ONLY_DISC_GRADE
        i_n, k = NUCLEUS_INTENSITY[grade], NUCLEUS_SOFTNESS[grade]
        fa, fb = IMAGE_ONLY_NUCLEUS_SEMI_AXES
        an, bn = fa * np.ptp(part.local[:, 0]) * g, fb * np.ptp(part.local[:, 1]) * g
    else:
        i_n, k = spec.nucleus_intensity, spec.nucleus_softness
        an, bn = spec.nucleus_a_mm * g, spec.nucleus_b_mm * g
    rho = np.sqrt((a / an) ** 2 + (b / bn) ** 2)
    prof = np.where(rho <= NUCLEUS_CUTOFF, 1 / (1 + np.exp(-(1 - rho) / k)), 0.0)
    sub[rr, cc] = ANNULUS_INTENSITY + (i_n - ANNULUS_INTENSITY) * prof


def _acquire(img: np.ndarray, r: np.ndarray, tissue: dict, textures: dict,
             rng: np.random.Generator) -> np.ndarray:
    """The scanner's view of the nominal intensities ``img``: point spread, coil bias (falling
    off anteriorly), Rician noise (two normal draws from ``rng``, in that order), uint8."""
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=POINT_SPREAD_SIGMA_PX, sigmaY=POINT_SPREAD_SIGMA_PX,
                           borderType=cv2.BORDER_REFLECT)
    b_min = tissue["bias_floor"]
    sigm = 1 / (1 + np.exp(-(r + COLUMN_HALF_DEPTH_MM + BIAS_CENTRE_MM) / tissue["bias_width_mm"]))
    bias = (b_min + (BIAS_MAX - b_min) * sigm) * (1 + BIAS_TEXTURE_CONTRAST * textures["bias"])
    sig = tissue["noise_sigma"]
    hw = img.shape
    n1 = rng.standard_normal(hw).astype(np.float32) * sig
    n2 = rng.standard_normal(hw).astype(np.float32) * sig
    mag = np.sqrt((img * bias + n1) ** 2 + n2 ** 2)
    return np.clip(np.rint(mag * GREY_SCALE), 0, 255).astype(np.uint8)


def patient_textures(seed: int, index: int, size: int, spacing_mm: tuple[float, float]) -> dict:
    """Per-patient smooth random fields float32 [H, W] (shared by the patient's slices)."""
    rng = np.random.default_rng([int(seed), int(index), 3])
    px = 1.0 / min(spacing_mm)
    hw = (size, size)
    return {"wobble": _smooth_noise(rng, hw, 25.0 * px), "bowel": _smooth_noise(rng, hw, 3.0 * px),
            "fine": _smooth_noise(rng, hw, 0.8 * px), "marrow": _smooth_noise(rng, hw, 1.2 * px),
            "bias": _smooth_noise(rng, hw, 60.0 * px)}


# === Cohort ===
def slice_offsets_mm(n_slices: int, slice_spacing_mm: float) -> np.ndarray:
    """Lateral offsets (mm) of the K slices, centred on the midline: (k - (K-1)/2) * spacing."""
    return (np.arange(n_slices) - (n_slices - 1) / 2.0) * slice_spacing_mm


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6f}"
    return str(v)


def _write_csv_atomic(path: pathlib.Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_fmt(row.get(c)) for c in columns])
    fileio.atomic_write_bytes(path, buf.getvalue().encode("utf-8"))




@dataclasses.dataclass
class CohortSummary:
    """What ``generate_cohort`` wrote: counts, the grade-class histogram and the issues."""

    out_dir: pathlib.Path
    n_patients: int
    n_slices: int
    grade_histogram: dict
    issues: list


def generate_slice(anat: PatientAnatomy, seed: int, slice_index: int, n_slices: int, *,
                   size: int = DEFAULT_SIZE, spacing_mm: Optional[tuple[float, float]] = None,
                   slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                   textures: Optional[dict] = None) -> tuple[np.ndarray, np.ndarray, list[dict], SliceShapes]:
    """Renders one slice of a patient in memory.

    Returns:
        (image uint8 [H, W], mask int32 [H, W], ground-truth rows, the slice's shapes).

    Raises:
        ValueError: the field of view cannot hold the spine, or slice_index outside 0..K-1.
    """
    if spacing_mm is None:
        spacing_mm = (DEFAULT_FOV_MM / size,) * 2
    if not 0 <= slice_index < n_slices:
        raise ValueError(f"slice_index {slice_index} outside 0..{n_slices - 1}")
    sr, sc = spacing_mm
    if textures is None:
        textures = patient_textures(seed, anat.index, size, spacing_mm)
    z = float(slice_offsets_mm(n_slices, slice_spacing_mm)[slice_index])
    shapes = build_slice(anat, z, (size * sc, size * sr))
    rng = np.random.default_rng([int(seed), anat.index, 2, int(slice_index)])
    image, mask, _ = render_slice(anat, shapes, size, spacing_mm, rng, textures)
    truth = slice_truth(anat, shapes, slice_index, spacing_mm)
    return image, mask, truth, shapes


def generate_cohort(out_dir: str | pathlib.Path, n_patients: int, n_slices: int, seed: int, *,
                    size: int = DEFAULT_SIZE, spacing_mm: Optional[tuple[float, float]] = None,
                    slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                    progress: bool = True) -> CohortSummary:
    """Writes the cohort (module docstring) to ``out_dir``; files of the same names are replaced.

    A patient that fails is recorded in issues.csv and the run goes on.

    Raises:
        ValueError: n_patients or n_slices < 1, size < 64, non-positive slice spacing, seed < 0;
            a pixel spacing ``images.check_pixel_spacing`` refuses (``SpoilsError``).
    """
    from tqdm import tqdm
    from spoils_tf.data import labelme_io

    if n_patients < 1 or n_slices < 1:
        raise ValueError(f"--patients and --slices-per-patient must be >= 1, got {n_patients}, {n_slices}")
    if size < 64:
        raise ValueError(f"--size must be >= 64 pixels, got {size}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if spacing_mm is None:
        spacing_mm = (DEFAULT_FOV_MM / size,) * 2
    spacing_mm = images.check_pixel_spacing(spacing_mm, None, "--pixel-spacing")
    if not (math.isfinite(slice_spacing_mm) and slice_spacing_mm > 0):
        raise ValueError(f"slice spacing {slice_spacing_mm} must be > 0 mm")
    fov = (size * spacing_mm[1], size * spacing_mm[0])
    if min(fov) < MIN_FOV_MM:
        raise ValueError(f"field of view {fov[0]:.0f} x {fov[1]:.0f} mm (--size {size} x --pixel-spacing "
                         f"{spacing_mm[0]:g} {spacing_mm[1]:g}) is too small; expected >= "
                         f"{MIN_FOV_MM:.0f} mm in both directions to hold T12..S1")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    midline = (n_slices - 1) // 2
    patients, discs, truth, clinical, issues = [], [], [], [], []
    hist = {c: 0 for c in labels.GRADE_CLASSES}
    for i in tqdm(range(n_patients), desc="spoils synth", unit="patient", disable=not progress,
                  file=sys.stderr):
        pid = patient_id(i)
        try:
            anat = sample_patient(seed, i)
            textures = patient_textures(seed, i, size, spacing_mm)
            p_discs, p_truth = [], []
            for k in range(n_slices):
                image, mask, rows, _ = generate_slice(anat, seed, k, n_slices, size=size,
                                                      spacing_mm=spacing_mm,
                                                      slice_spacing_mm=slice_spacing_mm,
                                                      textures=textures)
                labelme_io.write_labelme(layout.labelme_json_path(out, pid, k), image, mask,
                                         patient=pid, slice_index=k, pixel_spacing_mm=spacing_mm)
                present = set(np.unique(mask).tolist())
                for spec in anat.discs:
                    if labels.SEG_ID[spec.level] in present:
                        from_bottom = len(labels.DISC_NAMES) - labels.DISC_NAMES.index(spec.level)
                        p_discs.append({"patient": pid, "slice": k, "level": spec.level,
                                        "ivd_label": from_bottom,
                                        "pfirrmann": spec.pfirrmann, "severity": spec.severity,
                                        "grade_class": spec.grade_class})
                p_truth += rows
        except Exception as e:  # one bad patient must not stop the cohort
            issues.append({"patient": pid, "slice": "", "file": "", "reason": f"{type(e).__name__}: {e}"})
            continue
        discs += p_discs
        truth += p_truth
        for spec in anat.discs:
            hist[spec.grade_class] += 1
        patients.append({"patient": pid, "sex": anat.sex, "pixel_spacing_row_mm": spacing_mm[0],
                         "pixel_spacing_col_mm": spacing_mm[1], "slice_thickness_mm": slice_spacing_mm,
                         "slice_spacing_mm": slice_spacing_mm, "n_slices": n_slices,
                         "midline_slice": midline})
        clinical.append({"patient": pid, "age": anat.age, "sex": anat.sex, "odi": anat.odi, "nrs": anat.nrs})

    _write_csv_atomic(out / layout.PATIENTS_CSV, layout.PATIENT_COLUMNS + PATIENT_EXTRA_COLUMNS, patients)
    _write_csv_atomic(out / layout.DISCS_CSV, layout.DISC_COLUMNS, discs)
    _write_csv_atomic(out / layout.GEOMETRY_TRUTH_CSV, GEOMETRY_TRUTH_COLUMNS, truth)
    _write_csv_atomic(out / layout.CLINICAL_CSV, CLINICAL_COLUMNS, clinical)
    _write_csv_atomic(out / layout.ISSUES_CSV, layout.ISSUE_COLUMNS, issues)
    config = {"generator": "spoils_tf.data.synthetic", "patients": n_patients,
              "slices_per_patient": n_slices, "seed": seed, "size": size,
              "pixel_spacing_mm": list(spacing_mm), "slice_spacing_mm": slice_spacing_mm}
    fileio.atomic_write_bytes(out / SYNTH_CONFIG_JSON, (json.dumps(config, indent=1) + "\n").encode("utf-8"))
    return CohortSummary(out_dir=out, n_patients=len(patients), n_slices=n_slices,
                         grade_histogram=hist, issues=issues)
