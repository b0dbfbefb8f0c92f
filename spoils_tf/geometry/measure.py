"""Mask -> per-disc measurements in millimetres, each in the disc's own frame (numpy + OpenCV).

Coordinates: image rows are ``y`` (down = inferior), columns are ``x`` (left = anterior,
right = posterior). Pixel ``(r, c)`` has its centre at ``(x, y) = (c * col_mm, r * row_mm)``:
everything is converted to mm with the per-axis pixel spacing BEFORE any angle or PCA work,
so anisotropic pixels are handled.

Each disc has its own frame, found by PCA of its pixel centres (in mm): ``u`` = unit long
(anteroposterior) axis pointing posterior, ``v`` = unit perpendicular pointing superior. A
vertebral body is measured in the frame whose ``u`` is the mean of the ``u`` axes of the discs
adjacent to it. Lengths are read from the mask resampled in that frame (bilinear, threshold
0.5; step = a third of the smaller pixel spacing for discs, one pixel for the 3-4 times larger
vertebral bodies), which puts the boundary half-way between the last inside and the first
outside pixel centre: an unbiased edge for masks rasterised by pixel centre, so measurements
agree with analytic shapes within a pixel.

Definitions (shared with ``spoils_tf.data.synthetic``; ``t`` in [0, 1] is the position along
``u`` from the anterior (0) to the posterior (1) end, ``h(t)`` the extent along ``v`` at t):

- ``disc_height_mm`` = mean h(t) over t in [0.1, 0.9]; ``disc_central_height_mm`` = h(0.5);
  ``disc_anterior_height_mm`` = h(0.1); ``disc_posterior_height_mm`` = h(0.9).
- ``disc_width_mm`` = average anteroposterior width = disc area / ``disc_height_mm``: the
  length along ``u`` of the rectangle with the disc's area and its mean height (for the
  trapezoid of a wedged disc, exactly its width along the mid-line, whatever the wedge).
  A chord along u at a fixed height would be ill-conditioned on thin, strongly wedged discs:
  there the superior/inferior edges run almost parallel to u, so the chord moves by
  (1 / edge slope) mm per mm of edge error. Area (a pixel count) and mean height (an average
  over 80 % of the columns) are both averages over many pixels, so
  ``d width / width = d area / area - d height / height`` stays small. The relative error of
  the area itself is passed on unchanged: for a very thin disc (height < ~8 px) that is the
  mask's rasterisation noise, a few %. Our own definition.
  ``disc_midpoint_width_mm`` = the chord along ``u`` through the disc centroid.
- ``disc_area_mm2`` = pixel count x row spacing x col spacing (the disc volume across slices
  is computed in ``spoils_tf.geometry.features``).
- ``tilt_deg`` = angle from the image +x axis to ``u``, positive when the posterior end is
  higher (measured with y pointing up).
- ``vert_above_*`` / ``vert_below_*``: height = mean extent along ``v`` over t in [0.1, 0.9];
  width = mean chord along ``u`` over the central 80 % of the extent along ``v``.
- ``disc_height_index`` = disc_height_mm / mean(vert_above_height_mm, vert_below_height_mm)
  (the mean of those present). This is the height-ratio form of the disc height index (disc
  height normalised by the adjacent vertebral body heights, as used by Jarman et al., Eur
  Spine J 2015;24(9):1944-50 and by Salamat et al., SpringerPlus 2016;5:829), not Farfan's
  index (anterior + posterior disc height over disc depth; Farfan et al., J Bone Joint Surg
  Am 1970;52(3):468-97). The exact averaging (h(t) over t in [0.1, 0.9], vertebral heights
  likewise) is our own.
- ``canal_ap_diameter_mm`` = length of the first run of spinal canal along the disc's mid-line
  (the line through the disc centroid in direction ``u``) posterior to the centroid.
- ``disc_bulge_mm`` = how far the disc's posterior end lies beyond the posterior margins of the
  adjacent vertebral bodies, along ``u``: ``a_post(disc) - mean(a_post(vertebra))`` where a
  vertebra's posterior margin is read in the disc frame within 5 mm (``BULGE_BAND_MM``) of the
  disc's height band. Negative = the disc lies anterior to the vertebral margins.
- Signal intensity (needs the image; grey values of the image as given): ``disc_si_mean`` = mean
  grey value of the disc; ``csf_si_median`` = median grey value of the canal posterior to the
  disc within its height band (cerebrospinal fluid at that level); ``vert_si_median`` = mean of
  the medians of the adjacent vertebral bodies. ``disc_si_csf_ratio`` = disc_si_mean /
  csf_si_median (as in Salamat et al. 2016, King et al., JOR Spine 2023;6:e1278);
  ``disc_si_vert_ratio`` = disc_si_mean / vert_si_median.
  Two signal-intensity differences, both divided by csf_si_median:
  ``disc_si_inner_outer_diff`` = mean(nucleus region, t in [0.3, 0.7]) - mean(annulus regions,
  t < 0.15 or t > 0.85); ``disc_si_gmm_gap`` = distance between the means of a two-component
  Gaussian mixture fitted to the disc's grey-value histogram (the histogram peak separation of
  Waldenberg et al., Eur Spine J 2018;27(5):1042-8).

Robustness: a structure that is missing, too small, cut by the image border or split into
several blobs yields NaN for the measurements that depend on it and a short code in the row's
``reason`` (codes joined by ``;``); nothing raises except a missing pixel spacing or a
malformed mask.

Implementation (timings: ``benchmarks/bench_geometry.py`` and BUILD.md, "Geometry"): a slice's
numpy work is batched across its structures rather than run once per structure. The grids of
all discs (then of all vertebral bodies) are resampled into one stacked array
(``_resample_stack``), and their edge crossings, median-filtered ends, edge fits and canal runs
each come from a few whole-slice numpy calls (``_extents``, ``_canal_runs``); the column
crossings transpose only the 0/1 inside masks and read the values from the stack
(``_crossings_strided``); grid extents come from the rows' end pixels (``Structure.row_ends``).
Every class's bounding box comes from one bit-set pass (``_class_boxes``), and each class is
labelled once on its own crop (``_main_component``). The vertebral margins for the bulge
(``_band_max_a``) and the signal-intensity columns (``_signals``) are computed for all discs at
once. Results are bit-identical to resampling each structure alone (grid values are multiples
of 1/1024 from OpenCV's fixed-point bilinear weights, so their sums do not depend on summation
order, nor on whether a zero neighbour lies inside or outside the ROI); the edge fits'
least-squares sums are accumulated in another order, which moves the fitted ends by < 1e-12 mm.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from spoils_tf import labels

# === Constants ===
# A component smaller than max(MIN_FRAGMENT_PIXELS, FRAGMENT_FRACTION * largest) next to the
# largest one of its class is a speck: dropped (reason "<part>_specks_dropped"). A larger second
# component makes the structure "fragmented" and its measurements NaN.
MIN_FRAGMENT_PIXELS = 8
FRAGMENT_FRACTION = 0.05
# Fewer pixels than this: no frame can be fitted (reason "<part>_too_small").
MIN_STRUCTURE_PIXELS = 12
# Resampling step, as a fraction of the smaller pixel spacing: discs (and the canal) 1/3;
# vertebral bodies, 3-4 times larger, one pixel (within a pixel of the truth, as at 1/2 pixel,
# for a quarter of the warp; BUILD.md, "Geometry").
SAMPLE_STEP_FRACTION = 1.0 / 3.0
VERTEBRA_STEP_FRACTION = 1.0
BULGE_BAND_MM = 5.0
# An edge fit is trusted only if its RMS residual is at most this many pixels.
EDGE_FIT_MAX_RMS_PX = 0.75
# Range of t over which the superior/inferior edges are fitted (the rest of the posterior end,
# where a bulge changes the shape, is read from the resampled grid).
EDGE_FIT_T = (0.02, 0.98)
# Minimum number of pixels for an intensity reference or a mixture fit.
MIN_SI_PIXELS = 5
MIN_GMM_PIXELS = 20

MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "level", "centroid_row", "centroid_col", "tilt_deg",
    "disc_area_mm2", "disc_height_mm", "disc_central_height_mm", "disc_anterior_height_mm",
    "disc_posterior_height_mm", "disc_width_mm", "disc_midpoint_width_mm",
    "vert_above_height_mm", "vert_above_width_mm", "vert_below_height_mm", "vert_below_width_mm",
    "disc_height_index", "canal_ap_diameter_mm", "disc_bulge_mm",
    "disc_si_mean", "csf_si_median", "vert_si_median", "disc_si_csf_ratio", "disc_si_vert_ratio",
    "disc_si_inner_outer_diff", "disc_si_gmm_gap", "reason",
)


# === Frames and sampling ===
@dataclasses.dataclass(frozen=True)
class Frame:
    """An orthonormal frame in image mm coordinates (x = col * col_mm, y = row * row_mm).

    Attributes:
        origin: float64 [2], (x, y) mm.
        u: float64 [2], unit vector pointing posterior (x component > 0).
        v: float64 [2], unit vector perpendicular to ``u`` pointing superior (y component < 0).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @staticmethod
    def from_u(origin: np.ndarray, u: np.ndarray) -> "Frame":
        u = np.asarray(u, np.float64)
        u = u / np.linalg.norm(u)
        if u[0] < 0 or (u[0] == 0 and u[1] > 0):
            u = -u
        return Frame(np.asarray(origin, np.float64), u, np.array([u[1], -u[0]]))

    @property
    def tilt_deg(self) -> float:
        """Angle from +x to ``u`` with y pointing up (posterior end higher -> positive)."""
        return math.degrees(math.atan2(-self.u[1], self.u[0]))

    def project(self, xy_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points ``float [N, 2]`` (x, y) mm -> (a along u, b along v), each float [N] mm."""
        xy = np.asarray(xy_mm, np.float64)
        return self.project_xy(xy[:, 0], xy[:, 1])

    def project_xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points given as x, y float64 [N] mm -> (a along u, b along v), each float64 [N] mm.

        Elementwise (``dx * u_x + dy * u_y``): several times faster than a matrix product
        with an inner dimension of 2.
        """
        dx = x - self.origin[0]
        dy = y - self.origin[1]
        u0, u1 = float(self.u[0]), float(self.u[1])
        a = dx * u0
        a += dy * u1
        b = dx * u1
        b -= dy * u0
        return a, b

    def to_pixel(self, a: float, b: float, spacing: tuple[float, float]) -> tuple[float, float]:
        """Frame coordinates (mm) -> (row, col) in pixels."""
        o, u, v = self.origin.tolist(), self.u.tolist(), self.v.tolist()
        x = o[0] + a * u[0] + b * v[0]
        y = o[1] + a * u[1] + b * v[1]
        return y / spacing[0], x / spacing[1]


@dataclasses.dataclass(frozen=True)
class Grid:
    """A mask resampled on a regular grid in a frame.

    ``values[j, i]`` (float32, bilinear, in [0, 1]) is the mask at ``a = a0 + i * step``,
    ``b = b1 - j * step`` (row 0 is the most superior); ``inside = values >= 0.5``. Lengths are
    integrals of ``values`` along grid lines (sum x step), which for a mask rasterised by pixel
    centre equals the number of pixels crossed x their size, without sampling quantisation.
    """

    values: np.ndarray
    a0: float
    b1: float
    step: float

    @property
    def inside(self) -> np.ndarray:
        return self.values >= 0.5


def _grid_size(lo: float, hi: float, step: float) -> int:
    """Number of grid samples covering [lo, hi] mm with ``step`` mm (at least 1)."""
    return max(1, int(math.ceil((hi - lo) / step)) + 1)


def _grid_to_pixel(frame: Frame, spacing: tuple[float, float], a0: float, b1: float,
                   step: float, offset_rc: tuple[int, int]) -> np.ndarray:
    """float64 [2, 3] affine map from grid (i, j) to (col, row) pixel coordinates of a region
    whose pixel (0, 0) is image pixel ``offset_rc``: grid sample ``[j, i]`` lies at
    ``a = a0 + i * step``, ``b = b1 - j * step`` mm in ``frame`` (``cv2.WARP_INVERSE_MAP``)."""
    sr, sc = spacing
    # Python floats: the same IEEE operations as numpy's on the 2-vectors, a tenth the cost.
    (u0, u1), (v0, v1), (o0, o1) = frame.u.tolist(), frame.v.tolist(), frame.origin.tolist()
    p0x = o0 + a0 * u0 + b1 * v0
    p0y = o1 + a0 * u1 + b1 * v1
    return np.array([
        [step * u0 / sc, -step * v0 / sc, p0x / sc - offset_rc[1]],
        [step * u1 / sr, -step * v1 / sr, p0y / sr - offset_rc[0]],
    ], np.float64)


def _warp(image: np.ndarray, m: np.ndarray, size_wh: tuple[int, int], interpolation: int,
          dst: Optional[np.ndarray] = None) -> np.ndarray:
    """``cv2.warpAffine`` with an inverse map ``m`` (``_grid_to_pixel``); outside reads 0.
    ``dst``: optional C-contiguous [h, w] array of ``image``'s dtype to write into."""
    return cv2.warpAffine(image, m, size_wh, dst=dst, flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def sample_in_frame(image: np.ndarray, frame: Frame, spacing: tuple[float, float],
                    a_range: tuple[float, float], b_range: tuple[float, float], step: float,
                    offset_rc: tuple[int, int] = (0, 0),
                    interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, float, float]:
    """Resamples ``image`` on the grid a in a_range, b in b_range (mm) of ``frame``.

    Args:
        image: float32 [h, w] (a region of interest whose pixel (0, 0) is image pixel
            ``offset_rc``), or uint8.
        frame, spacing: the frame and the (row, col) pixel spacing in mm.
        a_range, b_range: (min, max) mm along ``u`` and ``v``.
        step: grid step in mm.

    Returns:
        (samples [nb, na] same dtype as ``image``, a0, b1): sample ``[j, i]`` is at
        ``a = a0 + i * step``, ``b = b1 - j * step``; outside the image reads 0.
    """
    na = _grid_size(a_range[0], a_range[1], step)
    nb = _grid_size(b_range[0], b_range[1], step)
    a0, b1 = float(a_range[0]), float(b_range[1])
    m = _grid_to_pixel(frame, spacing, a0, b1, step, offset_rc)
    return _warp(image, m, (na, nb), interpolation), a0, b1


# === Structures ===
@dataclasses.dataclass
class Structure:
    """One class's main connected component.

    Attributes:
        name: class name from ``labels``.
        n_pixels: pixel count of the kept component.
        rows, cols: int [N] pixel indices of the kept component.
        roi: float32 [h, w] 0/1 image of the kept component; ``offset`` its (row, col) origin.
        problem: "" if usable, else a reason code ("missing", "too_small", "fragmented",
            "touches_border").
        specks: number of dropped speck components.
    """

    name: str
    n_pixels: int
    rows: np.ndarray
    cols: np.ndarray
    roi: Optional[np.ndarray]
    offset: tuple[int, int]
    problem: str
    specks: int = 0

    def median_of(self, img: np.ndarray) -> float:
        """Median of ``img`` (as float32) over the component's pixels (cached: one image per
        slice)."""
        cached = getattr(self, "_median", None)
        if cached is None or cached[0] is not img:
            # A flat take: the same values as img[rows, cols], about half the cost.
            flat = img.ravel()[self.rows * img.shape[1] + self.cols]
            cached = (img, _median_grey(flat))
            self._median = cached
        return cached[1]

    def project(self, frame: "Frame",
                spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """``frame.project_xy(*self.x_y_mm(spacing))``, cached for the last frame."""
        cached = getattr(self, "_proj", None)
        if cached is None or cached[0] is not frame or cached[1] != spacing:
            cached = (frame, spacing, frame.project_xy(*self.x_y_mm(spacing)))
            self._proj = cached
        return cached[2]

    def x_y_mm(self, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) float64 [N] pixel centres in mm (cached per spacing)."""
        cached = getattr(self, "_xy", None)
        if cached is None or cached[0] != spacing:
            cached = (spacing, self.cols * spacing[1], self.rows * spacing[0])
            self._xy = cached
        return cached[1], cached[2]

    def row_ends(self) -> np.ndarray:
        """int [2 * R] indices of the first and the last pixel of each of the R pixel rows
        (the pixels are in row-major order), cached. A function linear in (x, y), such as a
        frame coordinate, takes its minimum and maximum over a row at the row's first or
        last pixel, so these are all the candidates for its extremes over the structure."""
        cached = getattr(self, "_row_ends", None)
        if cached is None:
            brk = np.flatnonzero(self.rows[1:] != self.rows[:-1])
            cached = np.concatenate([[0], brk, brk + 1, [self.rows.size - 1]])
            self._row_ends = cached
        return cached

    def xy_mm(self, spacing: tuple[float, float]) -> np.ndarray:
        """float64 [N, 2] pixel centres (x, y) in mm."""
        return np.stack(self.x_y_mm(spacing), axis=1)

    def rows_between(self, r_lo: float, r_hi: float) -> slice:
        """The index range of the pixels with r_lo <= row <= r_hi (``rows`` is sorted)."""
        return slice(int(self.rows.searchsorted(r_lo, side="left")),
                     int(self.rows.searchsorted(r_hi, side="right")))


def _extract(class_mask: np.ndarray, name: str, keep_largest_only: bool,
             offset: tuple[int, int] = (0, 0),
             full_shape: Optional[tuple[int, int]] = None) -> Structure:
    """Main component of a boolean [H, W] class mask, with fragment/border checks.

    ``keep_largest_only``: for vertebrae, whose class may also hold the posterior elements
    (separate blobs in SPIDER masks), every component but the largest is ignored without
    making the structure fragmented.

    ``class_mask`` may be a crop of the image whose pixel (0, 0) is image pixel ``offset`` and
    that holds every pixel of the class plus a 1-pixel margin (clipped at the image border);
    ``full_shape`` is then the image's (H, W), for the border check.
    """
    x, y, w, h = cv2.boundingRect(class_mask.view(np.uint8))
    if w == 0 or h == 0:
        return _missing(name)
    Hc, Wc = class_mask.shape
    r0, c0 = max(0, y - 1), max(0, x - 1)
    r1, c1 = min(Hc, y + h + 1), min(Wc, x + w + 1)
    return _main_component(class_mask[r0:r1, c0:c1], (r0 + offset[0], c0 + offset[1]), name,
                           keep_largest_only, class_mask.shape if full_shape is None
                           else full_shape)


def _missing(name: str) -> Structure:
    """The Structure of a class with no pixel (problem "missing")."""
    return Structure(name, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), None, (0, 0),
                     "missing")


def _main_component(roi: np.ndarray, origin: tuple[int, int], name: str,
                    keep_largest_only: bool, full_shape: tuple[int, int]) -> Structure:
    """``_extract`` of a class from its bounding crop.

    Args:
        roi: bool [h, w] class mask holding every pixel of the class (at least one) and a
            1-pixel margin around them (clipped at the image border); its pixel (0, 0) is
            image pixel ``origin`` (row, col).
        name, keep_largest_only: as ``_extract``; full_shape: the image's (H, W).

    One ``cv2.connectedComponents`` pass labels the crop and one ``cv2.findNonZero`` lists
    the class pixels (row-major, as ``np.flatnonzero``). A class that is one 8-connected
    component (nearly always) is then done. With several components, their areas are counted
    from the labels of the listed pixels (``connectedComponentsWithStats`` costs 2-4 times a
    plain labelling on fragmented crops) and the kept one is cut out of the label image on
    its own bounding box plus a 1-pixel margin, so its float ROI (``Structure.roi``, read
    with zeros outside) covers only that component; the resampled grids do not change, since
    every sample reads 0 outside the component either way and bilinear sums of 0/1 values
    with 1/1024-multiple weights are exact.
    """
    roi8 = roi.view(np.uint8)
    H, W = full_shape
    n, lab = cv2.connectedComponents(roi8, connectivity=8)
    xy = cv2.findNonZero(roi8)[:, 0, :]                 # int32 [N, 2] (col, row)
    specks = 0
    problem = ""
    r0, c0 = origin
    if n <= 2:
        comp = roi8
    else:
        labs = lab[xy[:, 1], xy[:, 0]]
        areas = np.bincount(labs, minlength=n)[1:].tolist()
        k = areas.index(max(areas)) + 1  # the first largest, as np.argmax
        largest = int(areas[k - 1])
        others = areas[:k - 1] + areas[k:]
        speck_limit = max(MIN_FRAGMENT_PIXELS, FRAGMENT_FRACTION * largest)
        specks = sum(1 for a in others if a < speck_limit)
        if not keep_largest_only and any(a >= speck_limit for a in others):
            problem = "fragmented"
        xy = xy[labs == k]
        y0, x0 = max(0, int(xy[0, 1]) - 1), max(0, int(xy[:, 0].min()) - 1)
        comp = (lab[y0:int(xy[-1, 1]) + 2, x0:int(xy[:, 0].max()) + 2] == k).view(np.uint8)
        r0, c0 = r0 + y0, c0 + x0
    rr = xy[:, 1].astype(np.int64)
    cc = xy[:, 0].astype(np.int64)
    rr += origin[0]
    cc += origin[1]
    largest = rr.size
    if not problem and largest < MIN_STRUCTURE_PIXELS:
        problem = "too_small"
    # Bounding box of the kept component against the image border.
    if not problem and (int(rr[0]) == 0 or int(cc.min()) == 0 or int(rr[-1]) == H - 1
                        or int(cc.max()) == W - 1):
        problem = "touches_border"
    return Structure(name, largest, rr, cc, comp.astype(np.float32), (r0, c0), problem, specks)


def _class_boxes(m8: np.ndarray, n_ids: int) -> np.ndarray:
    """Bounding box of every id of a small-integer label image, in one pass.

    Each pixel becomes the bit ``1 << id``; OR-reducing those along rows and along columns
    gives, per row and per column, the set of ids in it, hence each id's first/last row and
    column (two reductions instead of a compare and a ``cv2.boundingRect`` per class).

    Args:
        m8: uint8 [h, w] ids in ``0..n_ids - 1``; n_ids: at most 64.

    Returns:
        int64 [n_ids, 4] (r0, r1, c0, c1), rows r0 <= r < r1 and columns c0 <= c < c1 hold
        every pixel of the id; (0, 0, 0, 0) for an absent id.
    """
    if n_ids > 64:
        raise ValueError(f"_class_boxes: at most 64 ids fit in a bit set, got {n_ids}")
    dtype = np.uint16 if n_ids <= 16 else np.uint32 if n_ids <= 32 else np.uint64
    boxes = np.zeros((n_ids, 4), np.int64)
    if m8.size == 0:
        return boxes
    bits = np.left_shift(dtype(1), m8, dtype=dtype)
    shifts = np.arange(n_ids, dtype=dtype)
    for axis, (lo, hi) in ((1, (0, 1)), (0, (2, 3))):
        has = ((np.bitwise_or.reduce(bits, axis=axis)[:, None] >> shifts) & 1).astype(bool)
        present = has.any(axis=0)                               # [n_ids]
        n = has.shape[0]
        boxes[:, lo] = np.where(present, has.argmax(axis=0), 0)
        boxes[:, hi] = np.where(present, n - has[::-1].argmax(axis=0), 0)
    return boxes


def _pca_frame(s: Structure, spacing: tuple[float, float]) -> Frame:
    """Disc frame: origin = centroid (mm), u = principal axis of the pixel centres (mm).

    The 2x2 covariance's principal eigenvector in closed form: angle
    ``0.5 * atan2(2 s_xy, s_xx - s_yy)`` (the same axis as ``np.linalg.eigh`` up to rounding;
    ``Frame.from_u`` fixes the sign).
    """
    x, y = s.x_y_mm(spacing)
    cx, cy = float(_array_mean(x)), float(_array_mean(y))
    dx, dy = x - cx, y - cy
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    theta = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
    return Frame.from_u(np.array([cx, cy]), np.array([math.cos(theta), math.sin(theta)]))


def _band_slice(s: Structure, fr: Frame, spacing: tuple[float, float], b_lo: float,
                b_hi: float) -> slice:
    """Index range of ``s``'s pixels (sorted by row) that holds every pixel whose ``b`` (the
    coordinate along ``fr.v``) lies in [b_lo, b_hi]: a cheap superset, so the caller need
    only project those pixels (the test on ``b`` is then made exactly on them).

    With v = (u_y, -u_x): b = dx u_y - dy u_x, so dy = (dx u_y - b) / u_x, bounded using the
    structure's column range (its ROI). All rows when u_x is small (a near-vertical u).
    """
    if s.roi is None or fr.u[0] < 0.2:
        return slice(None)
    sr, sc = spacing
    u0, u1 = float(fr.u[0]), float(fr.u[1])
    dx_lo = s.offset[1] * sc - fr.origin[0]
    dx_hi = (s.offset[1] + s.roi.shape[1]) * sc - fr.origin[0]
    p_lo, p_hi = min(dx_lo * u1, dx_hi * u1), max(dx_lo * u1, dx_hi * u1)
    y_lo = fr.origin[1] + (p_lo - b_hi) / u0
    y_hi = fr.origin[1] + (p_hi - b_lo) / u0
    return s.rows_between(math.floor(y_lo / sr) - 1, math.ceil(y_hi / sr) + 1)


@dataclasses.dataclass(frozen=True)
class Extent:
    """Lengths of one structure read in a frame (all mm).

    Attributes:
        grid: the resampled structure.
        a_ant, a_post: anterior / posterior end along ``u``.
        b_inf, b_sup: inferior / superior end along ``v``.
        edge_fit: quadratic fits of the superior and inferior edges (see ``_fit_v_edges``),
            or None when they do not describe the shape.
    """

    grid: Grid
    a_ant: float
    a_post: float
    b_inf: float
    b_sup: float
    edge_fit: Optional[tuple[np.ndarray, np.ndarray]] = None

    def h_at(self, t: float) -> float:
        """Extent along v at normalised position t (0 = anterior end, 1 = posterior end)."""
        g = self.grid
        a = self.a_ant + t * (self.a_post - self.a_ant)
        i = int(round((a - g.a0) / g.step))
        i = min(max(i, 0), g.values.shape[1] - 1)
        return float(np.add.reduce(g.values[:, i]) * g.step)

    def mean_h(self, t0: float = 0.1, t1: float = 0.9) -> float:
        g = self.grid
        a_lo = self.a_ant + t0 * (self.a_post - self.a_ant)
        a_hi = self.a_ant + t1 * (self.a_post - self.a_ant)
        i0 = int(math.ceil((a_lo - g.a0) / g.step))
        i1 = int(math.floor((a_hi - g.a0) / g.step))
        if i1 < i0:
            return self.h_at(0.5 * (t0 + t1))
        return float(_array_mean(np.add.reduce(g.values[:, i0:i1 + 1], axis=0)) * g.step)

    def chord_at_b(self, b: float) -> float:
        """Chord along u at height b (mm in the frame)."""
        g = self.grid
        j = int(round((g.b1 - b) / g.step))
        j = min(max(j, 0), g.values.shape[0] - 1)
        return float(np.add.reduce(g.values[j]) * g.step)

    def mean_width(self, central: float = 0.8) -> float:
        """Mean chord along u over the central fraction of the extent along v, read from the
        resampled grid (the vertebral body width; a disc's width is area / mean height)."""
        g = self.grid
        margin = 0.5 * (1.0 - central) * (self.b_sup - self.b_inf)
        b_lo, b_hi = self.b_inf + margin, self.b_sup - margin
        j0 = int(math.ceil((g.b1 - b_hi) / g.step))
        j1 = int(math.floor((g.b1 - b_lo) / g.step))
        if j1 < j0:
            return self.chord_at_b(0.5 * (b_lo + b_hi))
        return float(_array_mean(np.add.reduce(g.values[j0:j1 + 1], axis=1)) * g.step)


_GridSpec = tuple[float, float, int, int]  # a grid's (a0 mm, b1 mm, na, nb)
_Run = tuple[float, float]  # (a_start, a_end) mm along a line


def _resample_stack(structs: Sequence[Structure], frames: Sequence[Frame],
                    spacing: tuple[float, float],
                    step: float) -> tuple[np.ndarray, np.ndarray, list[_GridSpec]]:
    """Every structure resampled in its frame, the grids stacked one below the other.

    Structure k's grid spans its pixel centres' range along ``u`` and ``v`` plus 1.5 pixels on
    each side: ``nb`` rows by ``na`` columns, ``vals[offsets[k]:offsets[k + 1], :na]``, exactly
    ``sample_in_frame``'s grid (the warp is computed per output sample, whatever the output
    size). Its columns ``na:`` (larger ``a``: padding to the widest grid) lie more than 1.5
    pixels beyond every pixel of the structure and read 0.

    Returns:
        (vals float32 [sum of nb, max of na], offsets int [n + 1],
        [(a0, b1, na, nb)] per structure; a0, b1 in mm).
    """
    pad = 1.5 * max(spacing)
    specs = []
    for s, fr in zip(structs, frames):
        # The extremes along u and v are taken at the rows' end pixels (Structure.row_ends):
        # the same projected values, a few hundred instead of thousands.
        x, y = s.x_y_mm(spacing)
        ends = s.row_ends()
        a, b = fr.project_xy(x[ends], y[ends])
        a_lo, a_hi, b_lo, b_hi = a.min() - pad, a.max() + pad, b.min() - pad, b.max() + pad
        specs.append((float(a_lo), float(b_hi), _grid_size(a_lo, a_hi, step),
                      _grid_size(b_lo, b_hi, step)))
    na_max = max(sp[2] for sp in specs)
    offsets = np.cumsum([0] + [sp[3] for sp in specs])
    vals = np.empty((int(offsets[-1]), na_max), np.float32)
    for k, (s, fr, (a0, b1, _, nb)) in enumerate(zip(structs, frames, specs)):
        m = _grid_to_pixel(fr, spacing, a0, b1, step, s.offset)
        _warp(s.roi, m, (na_max, nb), cv2.INTER_LINEAR, dst=vals[offsets[k]:offsets[k + 1]])
    return vals, offsets, specs


def _extents(structs: Sequence[Structure], frames: Sequence[Frame],
             spacing: tuple[float, float], step: float, fit_edges: bool) -> list[Extent]:
    """Each structure resampled in its frame and its ends (mm), for all structures at once.

    The grids are stacked (``_resample_stack``) so that the edge crossings of every grid row
    (along u) and column (along v) of every structure come from two ``_crossings`` calls, the
    median-filtered ends from two ``_segment_median_ends`` calls and the edge fits from one
    ``_fit_v_edges`` call: a few dozen numpy calls per slice instead of per structure.
    ``fit_edges``: also fit the superior/inferior edges (discs; vertebral bodies are large
    enough without).

    Args:
        structs: usable structures (``problem == ""``, at least ``MIN_STRUCTURE_PIXELS``);
            frames: their frames; spacing: (row, col) mm; step: grid step in mm.

    Returns:
        One ``Extent`` per structure, in order; its grid is a view into the stack.

    Raises:
        RuntimeError: if a resampled structure is empty (cannot happen for a usable one).
    """
    n = len(structs)
    if n == 0:
        return []
    vals, offsets, specs = _resample_stack(structs, frames, spacing, step)
    win = max(1, int(round(max(spacing) / step)))
    # Crossings along u of all grid rows, and along v of all grid columns: the rows of the
    # transposed grids, stacked likewise (structure k's at t_offsets[k]:t_offsets[k + 1]).
    inside = vals >= 0.5
    first, last, rows = _crossings(vals, inside)
    # Only the 0/1 inside masks are transposed (a quarter of the float grids' bytes); the
    # values at the crossings are read from the untransposed stack.
    nas = [sp[2] for sp in specs]
    nbs = [sp[3] for sp in specs]
    t_offsets = np.cumsum([0] + nas)
    inside_t = np.zeros((int(t_offsets[-1]), max(nbs)), np.uint8)
    inside8 = inside.view(np.uint8)
    for k, (na, nb) in enumerate(zip(nas, nbs)):
        inside_t[t_offsets[k]:t_offsets[k + 1], :nb] = cv2.transpose(
            inside8[offsets[k]:offsets[k + 1], :na])
    na_max = vals.shape[1]
    # Row r of the transposed stack (structure k, grid column i): sample j at
    # vals[offsets[k] + j, i], of nb samples.
    seg_t = np.repeat(np.arange(n), nas)
    col_t = np.arange(int(t_offsets[-1])) - t_offsets[:-1][seg_t]
    top_all, bottom_all, cols = _crossings_strided(
        vals.ravel(), inside_t.view(np.bool_), offsets[:-1][seg_t] * na_max + col_t, na_max,
        np.array(nbs)[seg_t])
    row_starts = rows.searchsorted(offsets)
    col_starts = cols.searchsorted(t_offsets)
    if (np.diff(row_starts) == 0).any():  # cannot happen for >= MIN_STRUCTURE_PIXELS
        empty = [structs[k].name for k in np.flatnonzero(np.diff(row_starts) == 0)]
        raise RuntimeError(f"{', '.join(empty)}: resampled structure is empty")
    cols = cols - np.repeat(t_offsets[:-1], np.diff(col_starts))  # per-structure index
    first_col, last_col = _segment_median_ends(first, last, row_starts, win)
    first_row, last_row = _segment_median_ends(top_all, bottom_all, col_starts, win)
    a0s = np.array([sp[0] for sp in specs])
    b1s = np.array([sp[1] for sp in specs])
    a_ants = a0s + first_col * step
    a_posts = a0s + last_col * step
    b_infs = (b1s - last_row * step).tolist()
    b_sups = (b1s - first_row * step).tolist()
    fits: list[Optional[tuple[np.ndarray, np.ndarray]]] = [None] * n
    if fit_edges:
        fits = _fit_v_edges(a0s, b1s, step, a_ants, a_posts, max(spacing), cols, col_starts,
                            top_all, bottom_all)
        fitted = [k for k in range(n) if fits[k] is not None]
        if fitted:
            _apply_edge_fits(fitted, fits, specs, step, a_ants.tolist(), a_posts.tolist(),
                             b_infs, b_sups, win, cols, col_starts, top_all, bottom_all)
    out = []
    for k, (a0, b1, na, _) in enumerate(specs):
        grid = Grid(vals[offsets[k]:offsets[k + 1], :na], a0, b1, step)
        out.append(Extent(grid, float(a_ants[k]), float(a_posts[k]), b_infs[k], b_sups[k],
                          fits[k]))
    return out


def _apply_edge_fits(fitted: list[int], fits: list, specs: list, step: float,
                     a_ants: list[float], a_posts: list[float], b_infs: list[float],
                     b_sups: list[float], win: int, cols: np.ndarray, col_starts: np.ndarray,
                     top_all: np.ndarray, bottom_all: np.ndarray) -> None:
    """Superior/inferior ends (``b_sups``, ``b_infs``, updated in place) of the structures
    ``fitted`` from their edge fits over t <= ``EDGE_FIT_T[1]``, and beyond it (the posterior
    end, where a bulge changes the shape) from the raw, median-filtered edge profiles of the
    grid columns there (``cols``, ``top_all``, ``bottom_all``: as in ``_extents``)."""
    i_splits = {}
    for k in fitted:
        a_ant, a_post = a_ants[k], a_posts[k]
        a_split = a_ant + EDGE_FIT_T[1] * (a_post - a_ant)
        aa = np.linspace(a_ant, a_split, 64)
        sup, inf = fits[k]
        b_sups[k] = float(((sup[0] * aa + sup[1]) * aa + sup[2]).max())  # np.polyval
        b_infs[k] = float(((inf[0] * aa + inf[1]) * aa + inf[2]).min())
        i_splits[k] = int(math.ceil((a_split - specs[k][0]) / step))
    # The posterior columns of each fitted structure: a tail of its (ascending) columns.
    starts = [int(col_starts[k]) + int(np.searchsorted(cols[col_starts[k]:col_starts[k + 1]],
                                                        i_splits[k])) for k in fitted]
    ends = [int(col_starts[k + 1]) for k in fitted]
    idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
    tail_starts = np.concatenate([[0], np.cumsum([e - s for s, e in zip(starts, ends)])])
    top_row, bottom_row = _segment_median_ends(top_all[idx], bottom_all[idx], tail_starts, win)
    for j, k in enumerate(fitted):
        if ends[j] > starts[j]:
            b1 = specs[k][1]
            b_sups[k] = max(b_sups[k], b1 - float(top_row[j]) * step)
            b_infs[k] = min(b_infs[k], b1 - float(bottom_row[j]) * step)


def _fit_v_edges(a0s: np.ndarray, b1s: np.ndarray, step: float, a_ants: np.ndarray,
                 a_posts: np.ndarray, pixel_mm: float, cols: np.ndarray, col_starts: np.ndarray,
                 top: np.ndarray,
                 bottom: np.ndarray) -> list[Optional[tuple[np.ndarray, np.ndarray]]]:
    """Quadratic fits b = p(a) of the superior and inferior edges of n structures, or None.

    The edge of a rasterised, nearly horizontal boundary is a staircase, so its single highest
    point is off by up to half a pixel and chords near a sloping edge jump by many pixels. A
    quadratic fitted to each edge over t in ``EDGE_FIT_T`` = [0.02, 0.98] (exact for straight
    wedge edges, close for the curved endplates of real discs) averages the staircase out;
    the last 2 %, where a bulge changes the shape, is read from the grid. It is used only
    when it describes the edge: None if fewer than 8 columns or if either fit's RMS residual
    exceeds ``EDGE_FIT_MAX_RMS_PX`` pixels (irregular shapes then use the raw grid).

    Least squares on (a^2, a, 1), a centred per structure for conditioning, by the 3 x 3
    normal equations; the sums of all structures come from one ``np.bincount`` each.

    Args:
        a0s, b1s: float64 [n] the grids' origins (``Grid``), step: their step (mm);
        a_ants, a_posts: float64 [n] the structures' ends along u (mm);
        pixel_mm: the larger pixel spacing.
        cols: int [N] non-empty grid columns of all structures (structure k's are
            ``cols[col_starts[k]:col_starts[k + 1]]``, per-structure indices); top, bottom:
            float64 [N] their first / last crossing (sub-sample grid rows, from ``_crossings``
            of the transposed grids).

    Returns:
        Per structure, (superior coefficients, inferior coefficients) for ``np.polyval``
        (a in mm -> b in mm), or None.
    """
    n = len(a0s)
    seg = np.repeat(np.arange(n), np.diff(col_starts))
    a = a0s[seg] + cols * step
    span = (a_posts - a_ants)[seg]
    keep = (a >= a_ants[seg] + EDGE_FIT_T[0] * span) & (a <= a_ants[seg] + EDGE_FIT_T[1] * span)
    seg, a = seg[keep], a[keep]
    count = np.bincount(seg, minlength=n).astype(np.float64)
    ok = count >= 8
    out: list[Optional[tuple[np.ndarray, np.ndarray]]] = [None] * n
    if not ok.any():
        return out
    cnt = np.where(ok, count, 1.0)
    m = np.bincount(seg, a, minlength=n) / cnt
    ac = a - m[seg]
    a2 = ac * ac
    s1, s2, s3, s4 = (np.bincount(seg, w, minlength=n) for w in (ac, a2, a2 * ac, a2 * a2))
    ys = (top[keep] * -step + b1s[seg], bottom[keep] * -step + b1s[seg])  # superior, inferior
    normal = np.stack([np.stack([s4, s3, s2], 1), np.stack([s3, s2, s1], 1),
                       np.stack([s2, s1, cnt], 1)], 1)[ok]  # [n_ok, 3, 3]
    rhs = np.stack([np.stack([np.bincount(seg, y * w, minlength=n) for y in ys], 1)
                    for w in (a2, ac, np.ones_like(a))], 1)[ok]  # [n_ok, 3 terms, 2 edges]
    coef = np.zeros((n, 3, 2))
    coef[ok] = np.linalg.solve(normal, rhs)
    c2, c1, c0 = coef[seg, 0], coef[seg, 1], coef[seg, 2]  # [N_kept, 2]
    resid = c2 * a2[:, None] + c1 * ac[:, None] + c0 - np.stack(ys, 1)
    ss = np.stack([np.bincount(seg, resid[:, e] ** 2, minlength=n) for e in (0, 1)], 1)
    rms = np.sqrt(ss / cnt[:, None]).max(axis=1)
    # Back to polynomials in a: p(a) = c2 (a - m)^2 + c1 (a - m) + c0.
    for k in np.flatnonzero(ok & (rms <= EDGE_FIT_MAX_RMS_PX * pixel_mm)).tolist():
        mk = float(m[k])
        fits = [np.array([c2k, c1k - 2 * c2k * mk, c2k * mk * mk - c1k * mk + c0k])
                for c2k, c1k, c0k in coef[k].T.tolist()]
        out[k] = (fits[0], fits[1])
    return out


def _crossings(f: np.ndarray,
               inside: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-sample positions where each row of ``f`` (float [rows, n]) first rises to and last
    falls from 0.5, by linear interpolation, for the rows that hold an inside sample.

    Args:
        f: float32 [rows, n] resampled values (C-contiguous).
        inside: optional precomputed ``f >= 0.5`` (bool, C-contiguous).

    Returns:
        (first float64 [k], last float64 [k], rows int64 [k]): the crossings of the k rows
        with an inside sample, and those rows' indices (ascending).
    """
    if inside is None:
        inside = f >= 0.5
    n_rows, n = f.shape
    i = inside.argmax(axis=1)  # first inside sample (0 for an empty row)
    rows = np.flatnonzero(inside[np.arange(n_rows), i])  # rows with an inside sample
    # Last inside sample per row: argmax of the row-reversed mask, reversed by cv2.flip
    # (numpy's argmax on a negatively strided view is several times slower).
    k = (n - 1) - cv2.flip(inside.view(np.uint8), 1).view(np.bool_).argmax(axis=1)[rows]
    i = i[rows]
    # Samples before the first, at the first, at the last and after the last inside sample,
    # read from the flat array (outside the row: 0).
    flat = f.ravel()
    base = rows * n
    prev = flat[base + np.maximum(i - 1, 0)]
    prev[i == 0] = 0.0
    cur = flat[base + i]
    first = i - 1 + (0.5 - prev) / np.maximum(cur - prev, 1e-6)
    nxt = flat[base + np.minimum(k + 1, n - 1)]
    nxt[k == n - 1] = 0.0
    cur = flat[base + k]
    last = k + (cur - 0.5) / np.maximum(cur - nxt, 1e-6)
    return first, last, rows


def _crossings_strided(flat: np.ndarray, inside: np.ndarray, base: np.ndarray, stride: int,
                       length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_crossings`` of rows stored with a stride: row r's sample j is
    ``flat[base[r] + j * stride]`` for j < ``length[r]`` and reads 0 beyond (the columns of
    the stacked grids, without transposing the float values).

    Args:
        flat: float32 [M] the values; inside: bool [rows, n] (C-contiguous) row r's samples
            >= 0.5, False beyond ``length[r]`` (n >= every length); base: int [rows];
        stride: int; length: int [rows].

    Returns:
        As ``_crossings``: (first float64 [k], last float64 [k], rows int64 [k]), the same
        float operations on the same float32 values, so the same bits.
    """
    n_rows, n = inside.shape
    i = inside.argmax(axis=1)
    rows = np.flatnonzero(inside[np.arange(n_rows), i])
    k = (n - 1) - cv2.flip(inside.view(np.uint8), 1).view(np.bool_).argmax(axis=1)[rows]
    i = i[rows]
    base = base[rows]
    length = length[rows]
    prev = flat[base + np.maximum(i - 1, 0) * stride]
    prev[i == 0] = 0.0
    cur = flat[base + i * stride]
    first = i - 1 + (0.5 - prev) / np.maximum(cur - prev, 1e-6)
    nxt = flat[base + np.minimum(k + 1, length - 1) * stride]
    nxt[k + 1 >= length] = 0.0
    cur = flat[base + k * stride]
    last = k + (cur - 0.5) / np.maximum(cur - nxt, 1e-6)
    return first, last, rows


def _segment_median_ends(first: np.ndarray, last: np.ndarray, starts: np.ndarray,
                         win: int) -> tuple[np.ndarray, np.ndarray]:
    """(min of ``first``, max of ``last``) of each segment ``[starts[k], starts[k + 1])`` of
    concatenated edge profiles (one segment per structure: the first and last crossing of
    every grid row, or column), robust to staircase corners, for all segments at once.

    Each profile is median-filtered over ``win`` entries (about one pixel; edge-padded) before
    taking its extreme, so a single corner pixel protruding from a rasterised edge does not
    set the extent. No filter when ``win`` <= 1 or the segment has at most ``win`` entries.

    Args:
        first, last: float64 [N] concatenated profiles; starts: int [n + 1] segment bounds
            (ascending, ``starts[0] == 0``, ``starts[-1] == N``); win: filter length.

    Returns:
        (lo float64 [n], hi float64 [n]); NaN for an empty segment.
    """
    starts = np.asarray(starts)
    lengths = np.diff(starts)
    n_seg = lengths.size
    lo = np.full(n_seg, np.nan)
    hi = np.full(n_seg, np.nan)
    nonempty = lengths > 0
    if not nonempty.any():
        return lo, hi
    pad = win // 2
    filtered = (lengths > win) if win > 1 else np.zeros(n_seg, bool)
    if pad > 1:
        # Longer windows (anisotropic pixels): one segment at a time.
        for k in np.flatnonzero(filtered):
            s, e = starts[k], starts[k + 1]
            both = np.pad(np.stack([first[s:e], last[s:e]]), ((0, 0), (pad, pad)), mode="edge")
            windows = np.lib.stride_tricks.sliding_window_view(both, 2 * pad + 1, axis=1)
            med = np.partition(windows, pad, axis=2)[:, :, pad]
            lo[k], hi[k] = float(med[0].min()), float(med[1].max())
        for k in np.flatnonzero(nonempty & ~filtered):
            s, e = starts[k], starts[k + 1]
            lo[k], hi[k] = float(first[s:e].min()), float(last[s:e].max())
        return lo, hi
    f, l = first, last
    if filtered.any():
        # Median of 3 with edge padding: a segment's end values stay as they are
        # (median(x0, x0, x1) = x0), interior ones become the median of their neighbours.
        interior = np.repeat(filtered, lengths)
        interior[starts[:-1][nonempty]] = False
        interior[starts[1:][nonempty] - 1] = False
        f, l = first.copy(), last.copy()
        for prof, out in ((first, f), (last, l)):
            a, b, c = prof[:-2], prof[1:-1], prof[2:]
            med = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
            np.copyto(out[1:-1], med, where=interior[1:-1])
    idx = starts[:-1][nonempty]
    lo[nonempty] = np.minimum.reduceat(f, idx)
    hi[nonempty] = np.maximum.reduceat(l, idx)
    return lo, hi


# === Signal intensity ===
def _median(x: np.ndarray) -> float:
    """``float(np.median(x))`` of a non-empty 1-D array (the same partition and the same
    float arithmetic, NaN when x holds a NaN), without np.median's overhead."""
    n = x.size
    h = n // 2
    kth = [h - 1, h] if n % 2 == 0 else [h]
    inexact = np.issubdtype(x.dtype, np.inexact)
    part = np.partition(x, kth + [-1] if inexact else kth)
    if inexact and math.isnan(part[-1]):
        return float("nan")
    if n % 2:
        return float(part[h])
    if not inexact:  # np.mean of integers accumulates in float64
        return (float(part[h - 1]) + float(part[h])) / 2.0
    return float((part[h - 1] + part[h]) / 2)


def _median_grey(values: np.ndarray) -> float:
    """``float(np.median(values.astype(np.float32)))`` of non-empty 1-D grey values: for uint8
    by counting (the k-th smallest value is the first whose cumulative count exceeds k; the mean
    of two integers <= 255 is exact in float32), a few times faster than a partition; other
    dtypes through ``_median``."""
    if values.dtype != np.uint8:
        return _median(values.astype(np.float32))
    cum = np.cumsum(np.bincount(values))
    n = values.size
    h = n // 2
    if n % 2:
        return float(cum.searchsorted(h, side="right"))
    lo, hi = cum.searchsorted([h - 1, h], side="right").tolist()
    return (lo + hi) / 2.0


def _uniform_histogram(x: np.ndarray, lo: float, hi: float, n_bins: int,
                       weights: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(x, bins=n_bins, range=(lo, hi), weights=weights)`` for float64 ``x``
    within [lo, hi] (lo < hi): numpy's own uniform-bin assignment, without its overhead."""
    edges = np.linspace(lo, hi, n_bins + 1)
    idx = ((x - lo) / (hi - lo) * n_bins).astype(np.intp)
    idx[idx == n_bins] -= 1
    idx[x < edges[idx]] -= 1
    idx[(x >= edges[idx + 1]) & (idx != n_bins - 1)] += 1
    return np.bincount(idx, weights=weights, minlength=n_bins), edges


def gmm_peak_gap(values: np.ndarray, n_bins: int = 32, n_iter: int = 6) -> float:
    """Distance between the two means of a 2-component 1-D Gaussian mixture (EM on a histogram).

    EM runs on a ``n_bins`` histogram, initialised from the Otsu split, until the means move
    by less than 1e-3 of the value range or ``n_iter`` iterations.

    Args:
        values: float [N] grey values (integer arrays, e.g. uint8 grey values, are binned
            through a per-value count first, which gives the same histogram faster).

    Returns:
        |mu_2 - mu_1| in the units of ``values``; 0.0 for constant values, NaN for N < 2.
    """
    return gmm_peak_gaps([values], n_bins, n_iter)[0]


def _value_histogram(values: np.ndarray,
                     n_bins: int) -> Optional[tuple[np.ndarray, np.ndarray, float]]:
    """(counts float64 [n_bins], edges [n_bins + 1], value range) of ``values`` over their own
    range, or None when fewer than 2 values or constant (range < 1e-9)."""
    arr = np.asarray(values)
    if arr.size < 2:
        return None
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize <= 2:
        # Same bin for equal values: histogram the distinct values weighted by their counts.
        xi = arr.ravel()
        imin, imax = int(xi.min()), int(xi.max())
        lo, hi = float(imin), float(imax)
        if hi - lo < 1e-9:
            return None
        per_value = np.bincount(xi.astype(np.int64) - imin)
        nz = np.flatnonzero(per_value)
        counts, edges = _uniform_histogram((nz + imin).astype(np.float64), lo, hi, n_bins,
                                           per_value[nz].astype(np.float64))
    else:
        x = arr.astype(np.float64, copy=False).ravel()
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-9:
            return None
        counts, edges = _uniform_histogram(x, lo, hi, n_bins)
    return counts.astype(np.float64), edges, hi - lo


def gmm_peak_gaps(values_list: Sequence[np.ndarray], n_bins: int = 32,
                  n_iter: int = 6) -> list[float]:
    """``gmm_peak_gap`` of each array in ``values_list``, with the EM run for all at once."""
    arrays = [np.asarray(v) for v in values_list]
    out: list[float] = [float("nan") if a.size < 2 else 0.0 for a in arrays]
    if all(a.dtype == np.uint8 for a in arrays):
        # uint8 grey values (the usual case): all histograms from one table of per-value counts.
        sized = [i for i, a in enumerate(arrays) if a.size >= 2]
        if not sized:
            return out
        table = np.stack([np.bincount(arrays[i].ravel(), minlength=256) for i in sized])
        # Each array's min and max grey value: its first and last non-empty table entry.
        nonempty = table > 0                                          # [B, 256]
        lo_i = nonempty.argmax(axis=1)
        hi_i = 255 - nonempty[:, ::-1].argmax(axis=1)
        varied = lo_i != hi_i                                         # constant arrays: gap 0
        ok = [i for i, v in zip(sized, varied.tolist()) if v]
        if not ok:
            return out
        if len(ok) < len(sized):
            table, lo_i, hi_i = table[varied], lo_i[varied], hi_i[varied]
        nzb, nzv = np.nonzero(table)
        lo_v = lo_i.astype(np.float64)
        hi_v = hi_i.astype(np.float64)
        # np.linspace(lo_v, hi_v, n_bins + 1, axis=1) [B, n_bins + 1], written out as numpy
        # computes it (arange x step + start, last = stop): the same floats, a third the cost.
        edges = np.arange(n_bins + 1.0)[:, None] * ((hi_v - lo_v) / n_bins)
        edges += lo_v
        edges[-1] = hi_v
        edges = edges.T
        x = nzv.astype(np.float64)
        lo, hi = lo_v[nzb], hi_v[nzb]
        # numpy's uniform-bin assignment (as in _uniform_histogram), row by row.
        idx = ((x - lo) / (hi - lo) * n_bins).astype(np.intp)
        idx[idx == n_bins] -= 1
        idx[x < edges[nzb, idx]] -= 1
        idx[(x >= edges[nzb, idx + 1]) & (idx != n_bins - 1)] += 1
        w = np.bincount(nzb * n_bins + idx, weights=table[nzb, nzv].astype(np.float64),
                        minlength=len(ok) * n_bins).reshape(len(ok), n_bins)
        tol = 1e-3 * (hi_v - lo_v)
        hists = [(i, None) for i in ok]
    else:
        hists = []
        for i, a in enumerate(arrays):
            h = _value_histogram(a, n_bins)
            if h is not None:
                hists.append((i, h))
        if not hists:
            return out
        w = np.stack([h[0] for _, h in hists])            # [B, n_bins]
        edges = np.stack([h[1] for _, h in hists])        # [B, n_bins + 1]
        tol = 1e-3 * np.array([h[2] for _, h in hists])   # [B]
    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])
    # Initialise from the Otsu split of each histogram (the two classes' means and variances).
    c0 = np.cumsum(w, axis=1)
    m0 = np.cumsum(w * centres, axis=1)
    total, mtot = c0[:, -1:], m0[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mtot * c0 / total - m0) ** 2 / (c0 * (total - c0))
    b = between[:, :-1]
    # np.nanargmax per row (NaN -> -inf), n_bins // 2 where no finite value.
    k = np.argmax(np.where(np.isnan(b), -np.inf, b), axis=1)
    k[~np.isfinite(b).any(axis=1)] = n_bins // 2
    low = np.arange(n_bins)[None, :] <= k[:, None]    # [B, n_bins] lower class
    wl = np.where(low, w + 1e-12, 0.0)
    wh = np.where(low, 0.0, w + 1e-12)
    s_lo, s_hi = wl.sum(axis=1), wh.sum(axis=1)
    mu = np.stack([(centres * wl).sum(axis=1) / s_lo, (centres * wh).sum(axis=1) / s_hi], axis=1)
    floor = ((edges[:, 1] - edges[:, 0]) ** 2 / 12.0)[:, None]
    var = np.stack([((centres - mu[:, :1]) ** 2 * wl).sum(axis=1) / s_lo,
                    ((centres - mu[:, 1:]) ** 2 * wh).sum(axis=1) / s_hi], axis=1)
    var = np.maximum(var, floor)
    pi = np.stack([np.where(low, w, 0.0).sum(axis=1), np.where(low, 0.0, w).sum(axis=1)], axis=1)
    pi = np.minimum(np.maximum(pi / total, 1e-3), 1.0)  # np.clip without its overhead
    cc = centres[:, :, None]                          # [B, n_bins, 1]
    active = np.ones(len(hists), bool)
    # The sums over the two components (max, sum of a length-2 axis) are written out as
    # a + b: the same float operations as the reductions, with fewer numpy calls.
    for _ in range(n_iter):
        d = cc - mu[:, None, :]
        d *= d
        logp = (-0.5 / var)[:, None, :] * d
        logp += (np.log(pi) - 0.5 * np.log(var))[:, None, :]
        logp -= np.maximum(logp[:, :, :1], logp[:, :, 1:])
        r = np.exp(logp)
        r *= (w / (r[:, :, 0] + r[:, :, 1]))[:, :, None]   # responsibilities x bin counts
        nk = r.sum(axis=1) + 1e-12                    # [B, 2]
        new_pi = nk / (nk[:, :1] + nk[:, 1:])
        new_mu = (r * cc).sum(axis=1) / nk
        d = cc - new_mu[:, None, :]
        r *= d
        r *= d
        new_var = np.maximum(r.sum(axis=1) / nk, floor)
        done = (np.abs(new_mu - mu) < tol[:, None]).all(axis=1)
        if active.all():
            mu, var, pi = new_mu, new_var, new_pi
        else:
            upd = active[:, None]
            mu = np.where(upd, new_mu, mu)
            var = np.where(upd, new_var, var)
            pi = np.where(upd, new_pi, pi)
        active &= ~done
        if not active.any():
            break
    gaps = np.abs(mu[:, 1] - mu[:, 0])
    for (i, _), g in zip(hists, gaps.tolist()):
        out[i] = g
    return out


# === Results ===
@dataclasses.dataclass
class DiscGeometry:
    """Where a disc and its neighbours were measured (for drawing and crops).

    Attributes:
        frame: the disc frame; ``extent`` the disc's extent in it (mm).
        vert_frames / vert_extents: per side ("above", "below"), the vertebral body frame and
            extent, where measured.
        canal_run: (a_start, a_end) mm along the disc mid-line, or None.
        spacing: (row, col) mm.
    """

    frame: Frame
    extent: Extent
    vert_frames: dict[str, Frame]
    vert_extents: dict[str, Extent]
    canal_run: Optional[tuple[float, float]]
    spacing: tuple[float, float]


@dataclasses.dataclass
class DiscResult:
    """``values``: one row with keys ``MEASUREMENT_COLUMNS``; ``geometry``: None if no frame."""

    values: dict[str, Any]
    geometry: Optional[DiscGeometry]


def _check_spacing(pixel_spacing_mm: Any) -> tuple[float, float]:
    if pixel_spacing_mm is None:
        raise ValueError("pixel_spacing_mm is required to measure in mm, got None; pass "
                         "(row_mm, col_mm), e.g. from patients.csv pixel_spacing_row_mm/col_mm")
    try:
        sr, sc = (float(x) for x in pixel_spacing_mm)
    except (TypeError, ValueError) as e:
        raise ValueError(f"pixel_spacing_mm must be two numbers (row_mm, col_mm), "
                         f"got {pixel_spacing_mm!r}") from e
    if not (math.isfinite(sr) and math.isfinite(sc) and sr > 0 and sc > 0):
        raise ValueError(f"pixel_spacing_mm must be two positive finite numbers (row_mm, col_mm), "
                         f"got {pixel_spacing_mm!r}")
    return sr, sc


def _vertebra_discs() -> dict[str, list[str]]:
    """Vertebra name -> names of the discs adjacent to it (from labels.disc_neighbours)."""
    out: dict[str, list[str]] = {v: [] for v in labels.VERTEBRA_NAMES}
    for d in labels.DISC_NAMES:
        above, below = labels.disc_neighbours(d)
        for v in (above, below):
            if v is not None:
                out[v].append(d)
    return out


_VERTEBRA_DISCS = _vertebra_discs()


def _array_mean(x: np.ndarray) -> Any:
    """``x.mean()`` of a non-empty 1-D array, without its Python-level overhead: the same
    pairwise sum divided by the count, in the same dtype (float32 stays float32; an integer
    sum is exact, as np.mean's float64 sum of integers below 2**53 is)."""
    return np.add.reduce(x) / x.size


def _mean_of(xs: Sequence[float]) -> float:
    """``float(np.mean(xs))`` for a short list of floats (same arithmetic for 1 or 2 values)."""
    if len(xs) == 1:
        return float(xs[0]) / 1.0
    if len(xs) == 2:
        return (float(xs[0]) + float(xs[1])) / 2.0
    return float(np.mean(xs))


def _empty_row(level: str) -> dict[str, Any]:
    row: dict[str, Any] = {k: float("nan") for k in MEASUREMENT_COLUMNS}
    row["level"] = level
    row["reason"] = ""
    return row


def measure_slice_detailed(mask: np.ndarray, pixel_spacing_mm: Sequence[float],
                           image: Optional[np.ndarray] = None) -> list[DiscResult]:
    """Measures every disc level present in one mask (see the module docstring).

    Args:
        mask: int [H, W] class ids from ``labels`` (ground truth or predicted). Ids outside
            ``0..NUM_SEG_CLASSES-1`` are ignored and reported in ``reason``.
        pixel_spacing_mm: (row_mm, col_mm), required.
        image: optional uint8/float [H, W] (or [H, W, C], first channel used) greyscale image
            for the signal-intensity measurements; without it those are NaN ("no_image").

    Returns:
        One ``DiscResult`` per disc class present in the mask, top to bottom. An empty mask
        gives an empty list.

    Raises:
        ValueError: if ``pixel_spacing_mm`` is missing or not two positive numbers, or the
            mask is not 2-D, or the image shape differs from the mask's.
    """
    spacing = _check_spacing(pixel_spacing_mm)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W] class ids, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    img: Optional[np.ndarray] = None
    img_int: Optional[np.ndarray] = None  # the image as given when it holds small integers
    if image is not None:
        img = np.asarray(image)
        if img.ndim == 3:
            img = img[..., 0]
        # C order, so that grey values are read by flat index (img.ravel() is then a view).
        img = np.ascontiguousarray(img)
        if img.shape != mask.shape:
            raise ValueError(f"image shape {img.shape} != mask shape {mask.shape}")
        if np.issubdtype(img.dtype, np.integer) and img.dtype.itemsize <= 2:
            img_int = img
        # Grey values are read at the structures' pixels and converted to float32 there.
    step = SAMPLE_STEP_FRACTION * min(spacing)
    vert_step = VERTEBRA_STEP_FRACTION * min(spacing)

    global_reasons: list[str] = []
    m32 = mask.astype(np.int32, copy=False)
    # uint8 copy with unknown ids mapped to NUM_SEG_CLASSES (never a class), for fast compares.
    # One pass for the range check: negative ids read as huge unsigned values.
    if mask.size and int(m32.view(np.uint32).max()) < labels.NUM_SEG_CLASSES:
        m8 = m32.astype(np.uint8)
    else:
        m8 = np.clip(m32, 0, labels.NUM_SEG_CLASSES).astype(np.uint8)
        m8[m32 < 0] = labels.NUM_SEG_CLASSES
        if mask.size:
            bad = np.unique(m32[(m32 < 0) | (m32 >= labels.NUM_SEG_CLASSES)])
            global_reasons.append("unknown_class_ids:" + "/".join(str(int(b)) for b in bad[:5]))
    # Per-structure work runs on the crop of the labelled pixels (plus a 1-pixel margin).
    crop_off = (0, 0)
    if m8.size:
        fx, fy, fw, fh = cv2.boundingRect(m8)
        H0, W0 = m8.shape
        cr0, cc0 = max(0, fy - 1), max(0, fx - 1)
        cr1, cc1 = min(H0, fy + fh + 1), min(W0, fx + fw + 1)
        if fw == 0 or fh == 0:
            cr0 = cc0 = cr1 = cc1 = 0
        m8c = np.ascontiguousarray(m8[cr0:cr1, cc0:cc1])
        crop_off = (cr0, cc0)
    else:
        m8c = m8
    # Bounding box of every class in the crop (row r0:r1, col c0:c1); r1 == 0: absent.
    boxes = _class_boxes(m8c, labels.NUM_SEG_CLASSES + 1).tolist()

    def present(name: str) -> bool:
        return boxes[labels.SEG_ID[name]][1] > 0

    cache: dict[str, Structure] = {}
    Hc, Wc = m8c.shape

    def structure(name: str) -> Structure:
        if name not in cache:
            i = labels.SEG_ID[name]
            r0, r1, c0, c1 = boxes[i]
            if r1 == 0:
                cache[name] = _missing(name)
            else:
                # The class's bounding crop plus a 1-pixel margin (clipped), as _extract.
                r0, c0, r1, c1 = max(0, r0 - 1), max(0, c0 - 1), min(Hc, r1 + 1), min(Wc, c1 + 1)
                cache[name] = _main_component(m8c[r0:r1, c0:c1] == i,
                                              (r0 + crop_off[0], c0 + crop_off[1]), name,
                                              name in labels.VERTEBRA_NAMES, m8.shape)
        return cache[name]

    disc_frames: dict[str, Frame] = {}
    discs = [d for d in labels.DISC_NAMES if present(d)]
    for d in discs:
        s = structure(d)
        if not s.problem:
            disc_frames[d] = _pca_frame(s, spacing)

    canal = structure(labels.SEG_NAMES[labels.CANAL_ID]) if present(
        labels.SEG_NAMES[labels.CANAL_ID]) else None
    measured = list(disc_frames)
    disc_extents = dict(zip(measured, _extents([structure(d) for d in measured],
                                               [disc_frames[d] for d in measured], spacing, step,
                                               fit_edges=True)))
    # Vertebral bodies next to a measured disc: (frame, extent, problem), extents all at once.
    vert_res: dict[str, tuple[Optional[Frame], Optional[Extent], str]] = {}
    for v in labels.VERTEBRA_NAMES:
        us = [disc_frames[d].u for d in _VERTEBRA_DISCS[v] if d in disc_frames]
        if not us:
            continue
        if not present(v):
            vert_res[v] = (None, None, "missing")
        elif structure(v).problem:
            vert_res[v] = (None, None, structure(v).problem)
        else:
            x, y = structure(v).x_y_mm(spacing)
            centre = np.array([_array_mean(x), _array_mean(y)])
            vert_res[v] = (Frame.from_u(centre, np.mean(us, axis=0)), None, "")
    good = [v for v, (fr, _, _) in vert_res.items() if fr is not None]
    for v, e in zip(good, _extents([structure(v) for v in good], [vert_res[v][0] for v in good],
                                   spacing, vert_step, fit_edges=False)):
        vert_res[v] = (vert_res[v][0], e, "")

    canal_runs = (dict(zip(measured, _canal_runs(canal, [disc_frames[d] for d in measured],
                                                 spacing, step, mask.shape)))
                  if canal is not None and canal.n_pixels else {})
    # Per measured disc, its usable neighbouring vertebral bodies [(side, name)], their
    # posterior margins (bulge) and the signal columns, each for all discs at once.
    usable: dict[str, list[tuple[str, str]]] = {}
    bulge_keys: list[tuple[str, str]] = []
    bulge_items: list[tuple[Structure, Frame, float, float]] = []
    for d in measured:
        usable[d] = [(side, v) for side, v in zip(("above", "below"), labels.disc_neighbours(d))
                     if v is not None and not vert_res[v][2]]
        ext = disc_extents[d]
        half = 0.5 * (ext.b_sup - ext.b_inf) + BULGE_BAND_MM
        for side, v in usable[d]:
            bulge_keys.append((d, side))
            bulge_items.append((structure(v), disc_frames[d], 0.0, half) if side == "above"
                               else (structure(v), disc_frames[d], -half, 0.0))
    margin_a = dict(zip(bulge_keys, _band_max_a(bulge_items, spacing)))
    signals = dict(zip(measured, _signals(
        img, img_int, [(structure(d), disc_frames[d], disc_extents[d],
                        [structure(v) for _, v in usable[d]]) for d in measured],
        canal, spacing))) if img is not None else {}
    results: list[DiscResult] = []
    vert_lengths: dict[str, tuple[float, float]] = {}  # vertebra -> (mean_h, mean_width)
    # (row, grey values, csf) for the mixture fits, run for all discs at once after the loop.
    gmm_pending: list[tuple[dict[str, Any], np.ndarray, float]] = []
    for d in discs:
        row = _empty_row(d)
        reasons = list(global_reasons)
        s = structure(d)
        if s.specks:
            reasons.append("disc_specks_dropped")
        row["centroid_row"] = float(_array_mean(s.rows))
        row["centroid_col"] = float(_array_mean(s.cols))
        if s.problem:
            reasons.append(f"disc_{s.problem}")
            row["reason"] = ";".join(reasons)
            results.append(DiscResult(row, None))
            continue
        fr = disc_frames[d]
        ext = disc_extents[d]
        row["tilt_deg"] = fr.tilt_deg
        row["disc_area_mm2"] = s.n_pixels * spacing[0] * spacing[1]
        row["disc_height_mm"] = ext.mean_h()
        row["disc_central_height_mm"] = ext.h_at(0.5)
        row["disc_anterior_height_mm"] = ext.h_at(0.1)
        row["disc_posterior_height_mm"] = ext.h_at(0.9)
        row["disc_width_mm"] = row["disc_area_mm2"] / row["disc_height_mm"]
        row["disc_midpoint_width_mm"] = ext.chord_at_b(0.0)

        # --- vertebral bodies ---
        above, below = labels.disc_neighbours(d)
        vfr: dict[str, Frame] = {}
        vext: dict[str, Extent] = {}
        vheights = []
        for side, vname in (("above", above), ("below", below)):
            if vname is None:
                reasons.append(f"vert_{side}_not_in_scheme")
                continue
            vf, ve, problem = vert_res[vname]
            if problem:
                reasons.append(f"vert_{side}_{problem}")
                continue
            if structure(vname).specks:
                reasons.append(f"vert_{side}_extra_blobs_ignored")
            vfr[side], vext[side] = vf, ve
            if vname not in vert_lengths:
                vert_lengths[vname] = (ve.mean_h(), ve.mean_width())
            row[f"vert_{side}_height_mm"], row[f"vert_{side}_width_mm"] = vert_lengths[vname]
            vheights.append(row[f"vert_{side}_height_mm"])
        if vheights:
            row["disc_height_index"] = row["disc_height_mm"] / _mean_of(vheights)
        else:
            reasons.append("dhi_no_vertebra")

        # --- bulge: posterior disc end beyond the vertebral posterior margins ---
        # Half a pixel along u: pixel centres lie on average half a pixel inside the edge.
        half_px_u = 0.5 * (abs(fr.u[0]) * spacing[1] + abs(fr.u[1]) * spacing[0])
        margins = [margin_a[(d, side)] + half_px_u for side in ("above", "below")
                   if side in vfr and margin_a[(d, side)] is not None]
        if margins:
            row["disc_bulge_mm"] = ext.a_post - _mean_of(margins)
        else:
            reasons.append("bulge_no_vertebra")

        # --- canal chord along the disc mid-line ---
        canal_run = None
        if canal is None or canal.n_pixels == 0:
            reasons.append("canal_missing")
        else:
            canal_run, why = canal_runs[d]
            if canal_run is None:
                reasons.append(why)
            else:
                row["canal_ap_diameter_mm"] = canal_run[1] - canal_run[0]

        # --- signal intensity ---
        if img is None:
            reasons.append("no_image")
        else:
            values, why, gmm_vals = signals[d]
            row.update(values)
            reasons.extend(why)
            if gmm_vals is not None:
                gmm_pending.append((row, gmm_vals, values["csf_si_median"]))
        row["reason"] = ";".join(reasons)
        results.append(DiscResult(row, DiscGeometry(fr, ext, vfr, vext, canal_run, spacing)))
    if gmm_pending:
        gaps = gmm_peak_gaps([vals for _, vals, _ in gmm_pending])
        for (row, _, csf), gap in zip(gmm_pending, gaps):
            row["disc_si_gmm_gap"] = gap / csf
    return results


def _canal_runs(canal: Structure, frames: Sequence[Frame], spacing: tuple[float, float],
                step: float, shape: tuple[int, int]) -> list[tuple[Optional[_Run], str]]:
    """First canal run (a_start, a_end) mm along each disc's mid-line posterior to its centroid.

    The canal is resampled along every mid-line (``a`` in [0, a_max], a_max where the line
    leaves the image's pixel-centre box) into one array, and the first run of inside samples
    and its two crossings of 0.5 (as ``_crossings``) are found for all discs at once.

    Args:
        canal: the canal structure (``n_pixels > 0``); frames: the discs' frames;
        spacing: (row, col) mm; step: sampling step (mm); shape: the image's (H, W).

    Returns:
        Per frame, ((a_start, a_end), "") or (None, reason): reason
        "canal_not_on_disc_midline" or "canal_cut_by_border".
    """
    H, W = shape
    out: list[tuple[Optional[_Run], str]] = [(None, "canal_not_on_disc_midline")] * len(frames)
    todo, a_maxs = [], []
    for k, fr in enumerate(frames):
        # Longest a for which the mid-line stays inside the image (pixel-centre box).
        limits = []
        for c, hi in ((0, (W - 1) * spacing[1]), (1, (H - 1) * spacing[0])):
            u_c, o_c = float(fr.u[c]), float(fr.origin[c])
            if abs(u_c) > 1e-12:
                for bound in (0.0, hi):
                    t = (bound - o_c) / u_c
                    if t > 0:
                        limits.append(t)
        a_max = min(limits) if limits else 0.0
        if a_max > step:
            todo.append(k)
            a_maxs.append(a_max)
    if not todo:
        return out
    lengths = np.array([_grid_size(0.0, a_max, step) for a_max in a_maxs])
    n, L = len(todo), int(lengths.max())
    f = np.empty((n, L), np.float32)  # f[j, i]: the canal at a = i * step on mid-line j
    for j, k in enumerate(todo):
        m = _grid_to_pixel(frames[k], spacing, 0.0, 0.0, step, canal.offset)
        _warp(canal.roi, m, (L, 1), cv2.INTER_LINEAR, dst=f[j:j + 1])
    valid = np.arange(L) < lengths[:, None]
    inside = (f >= 0.5) & valid
    r = np.arange(n)
    start = inside.argmax(axis=1)                       # first inside sample
    found = inside[r, start]
    outside_after = ~inside & valid & (np.arange(L) >= start[:, None])
    end = outside_after.argmax(axis=1)                  # first outside sample after the run
    closed = outside_after[r, end]
    # Crossings of the run, read as _crossings reads f[off:end + 1] (off = start - 1 or 0).
    off = np.maximum(start - 1, 0)
    prev = f[r, off]
    prev[start == 0] = 0.0
    cur = f[r, start]
    first = (start - off) - 1 + (0.5 - prev) / np.maximum(cur - prev, 1e-6)
    cur = f[r, np.maximum(end - 1, 0)]
    nxt = f[r, end]
    last = (end - 1 - off) + (cur - 0.5) / np.maximum(cur - nxt, 1e-6)
    a_starts = ((off + first) * step).tolist()
    a_ends = ((off + last) * step).tolist()
    for j, k in enumerate(todo):
        if not found[j]:
            continue
        if not closed[j]:
            out[k] = (None, "canal_cut_by_border")
            continue
        # The canal ROI reads 0 outside the image: a run ending at the image border is cut there.
        r_end, c_end = frames[k].to_pixel(a_ends[j], 0.0, spacing)
        if r_end <= 0.5 or c_end <= 0.5 or r_end >= H - 1.5 or c_end >= W - 1.5:
            out[k] = (None, "canal_cut_by_border")
        else:
            out[k] = ((a_starts[j], a_ends[j]), "")
    return out


def _band_points(items: Sequence[tuple[Structure, Frame, float, float]],
                 spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, list[slice],
                                                         np.ndarray]:
    """The pixels of several structures that may lie in a band of another frame, projected
    into that frame, for all items at once.

    Args:
        items: (structure, frame, b_lo, b_hi): the structure's pixels in
            ``_band_slice(structure, frame, spacing, b_lo, b_hi)`` (a superset of those with
            b in [b_lo, b_hi] mm; the caller makes the exact test).
        spacing: (row, col) mm.

    Returns:
        (a float64 [N], b float64 [N] mm in each item's frame, the items' index slices into
        their structure's pixels, starts int [n + 1] of each item's points in a and b). Each
        point's (a, b) is ``Frame.project_xy``'s, elementwise the same float operations.
    """
    sls, xs, ys, per_point = [], [], [], []
    for st, fr, lo, hi in items:
        sl = _band_slice(st, fr, spacing, lo, hi)
        x, y = st.x_y_mm(spacing)
        sls.append(sl)
        xs.append(x[sl])
        ys.append(y[sl])
        per_point.append((float(fr.origin[0]), float(fr.origin[1]), float(fr.u[0]),
                          float(fr.u[1])))
    lengths = [x.size for x in xs]
    starts = np.zeros(len(items) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    ox, oy, u0, u1 = np.repeat(np.array(per_point), lengths, axis=0).T
    dx = np.concatenate(xs) - ox
    dy = np.concatenate(ys) - oy
    a = dx * u0
    a += dy * u1
    b = dx * u1
    b -= dy * u0
    return a, b, sls, starts


def _band_max_a(items: Sequence[tuple[Structure, Frame, float, float]],
                spacing: tuple[float, float]) -> list[Optional[float]]:
    """For each (structure, frame, b_lo, b_hi): the largest ``a`` (mm along the frame's u) of
    the structure's pixel centres with b_lo <= b <= b_hi, or None if there is none (a
    vertebral body's posterior margin read in a disc frame, for the bulge)."""
    if not items:
        return []
    a, b, _, starts = _band_points(items, spacing)
    lo = np.repeat([it[2] for it in items], np.diff(starts))
    hi = np.repeat([it[3] for it in items], np.diff(starts))
    a_in = np.where((b >= lo) & (b <= hi), a, -np.inf)
    out: list[Optional[float]] = [None] * len(items)
    nonempty = np.flatnonzero(np.diff(starts) > 0)
    if nonempty.size:
        for k, m in zip(nonempty.tolist(),
                        np.maximum.reduceat(a_in, starts[nonempty]).tolist()):
            if m > -math.inf:
                out[k] = m
    return out


def _segment_counts(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """int64 [n] number of True entries of bool ``mask`` [N] in each segment
    ``starts[k]:starts[k + 1]`` (int [n + 1], ascending; empty segments count 0)."""
    cum = np.zeros(mask.size + 1, np.int64)
    np.cumsum(mask, out=cum[1:])
    return cum[starts[1:]] - cum[starts[:-1]]


_SignalResult = tuple[dict[str, float], list[str], Optional[np.ndarray]]


def _signals(img: np.ndarray, img_int: Optional[np.ndarray],
             discs: Sequence[tuple[Structure, Frame, Extent, list[Structure]]],
             canal: Optional[Structure], spacing: tuple[float, float]) -> list[_SignalResult]:
    """The disc_si_* / csf / vert signal columns of every measured disc of a slice.

    The grey values of all discs are read at once, the canal pixels in every disc's height
    band projected at once (``_band_points``) and the nucleus/annulus masks made at once;
    what remains per disc are its means and medians, each a numpy reduction over that
    disc's own values (the same arithmetic as one disc at a time).

    Args:
        img: [H, W] grey image as given, read at the structures' pixels as float32.
        img_int: the same image when it holds small integers (else None), whose grey values
            give a faster but identical mixture histogram.
        discs: per disc (structure, frame, extent, usable adjacent vertebral bodies).
        canal: the canal structure, or None when absent; spacing: (row, col) mm.

    Returns:
        Per disc: (columns disc_si_mean, csf_si_median, vert_si_median, disc_si_csf_ratio,
        disc_si_vert_ratio and, when its regions are large enough,
        disc_si_inner_outer_diff; reason codes; the grey values for the mixture fit
        (``gmm_peak_gaps``), or None when too few).
    """
    n = len(discs)
    if n == 0:
        return []
    W = img.shape[1]
    flat_img = img.ravel()
    # Grey values of every disc pixel (disc k's at d_starts[k]:d_starts[k + 1]).
    d_lengths = [st.rows.size for st, _, _, _ in discs]
    d_starts = np.zeros(n + 1, np.int64)
    np.cumsum(d_lengths, out=d_starts[1:])
    rows = np.concatenate([st.rows for st, _, _, _ in discs])
    cols = np.concatenate([st.cols for st, _, _, _ in discs])
    raw_all = flat_img[rows * W + cols]
    vals_all = raw_all.astype(np.float32)
    # Cerebrospinal fluid: canal pixels posterior to each disc within its height band.
    csf = [float("nan")] * n
    if canal is not None and canal.n_pixels:
        halves = [0.5 * (ext.b_sup - ext.b_inf) for _, _, ext, _ in discs]
        a, b, sls, c_starts = _band_points(
            [(canal, fr, -h, h) for (_, fr, _, _), h in zip(discs, halves)], spacing)
        sel = (a > 0) & (np.abs(b) <= np.repeat(halves, np.diff(c_starts)))
        c_rows = np.concatenate([canal.rows[sl] for sl in sls])
        c_cols = np.concatenate([canal.cols[sl] for sl in sls])
        counts = _segment_counts(sel, c_starts)
        for k in range(n):
            s0, s1 = int(c_starts[k]), int(c_starts[k + 1])
            if s1 > s0 and counts[k] >= MIN_SI_PIXELS:
                keep = sel[s0:s1]
                csf[k] = _median_grey(flat_img[c_rows[s0:s1][keep] * W + c_cols[s0:s1][keep]])
    # Nucleus (t in [0.3, 0.7]) and annulus (t < 0.15 or t > 0.85) masks of all discs.
    a_all = np.concatenate([st.project(fr, spacing)[0] for st, fr, _, _ in discs])
    a_ant = np.repeat([ext.a_ant for _, _, ext, _ in discs], d_lengths)
    span = np.repeat([ext.a_post - ext.a_ant for _, _, ext, _ in discs], d_lengths)
    t = (a_all - a_ant) / span
    inner = (t >= 0.3) & (t <= 0.7)
    outer = (t < 0.15) | (t > 0.85)
    n_inner = _segment_counts(inner, d_starts).tolist()
    n_outer = _segment_counts(outer, d_starts).tolist()
    out: list[_SignalResult] = []
    for k, (st, fr, ext, verts) in enumerate(discs):
        s0, s1 = int(d_starts[k]), int(d_starts[k + 1])
        disc_vals = vals_all[s0:s1]
        values: dict[str, float] = {"disc_si_mean": float(_array_mean(disc_vals))}
        why: list[str] = []
        c = csf[k]
        if not (c > 0):
            why.append("csf_reference_missing")
            c = float("nan")
        values["csf_si_median"] = c
        vmeds = [v.median_of(img) for v in verts if v.n_pixels >= MIN_SI_PIXELS]
        vref = _mean_of(vmeds) if vmeds else float("nan")
        if not (vref > 0):
            why.append("vertebra_reference_missing")
            vref = float("nan")
        values["vert_si_median"] = vref
        values["disc_si_csf_ratio"] = values["disc_si_mean"] / c
        values["disc_si_vert_ratio"] = values["disc_si_mean"] / vref
        if n_inner[k] >= MIN_SI_PIXELS and n_outer[k] >= MIN_SI_PIXELS:
            diff = (_array_mean(disc_vals[inner[s0:s1]])
                    - _array_mean(disc_vals[outer[s0:s1]]))
            values["disc_si_inner_outer_diff"] = float(diff) / c
        else:
            why.append("si_regions_too_small")
        gmm_vals = None
        if disc_vals.size >= MIN_GMM_PIXELS:
            gmm_vals = disc_vals if img_int is None else raw_all[s0:s1]
        else:
            why.append("si_gmm_too_few_pixels")
        out.append((values, why, gmm_vals))
    return out


def measure_slice(mask: np.ndarray, pixel_spacing_mm: Sequence[float],
                  image: Optional[np.ndarray] = None) -> list[dict[str, Any]]:
    """Like ``measure_slice_detailed`` but returns only the rows (dicts keyed by
    ``MEASUREMENT_COLUMNS``): NaN where a measurement could not be made, with the codes in
    ``reason``."""
    return [r.values for r in measure_slice_detailed(mask, pixel_spacing_mm, image)]
