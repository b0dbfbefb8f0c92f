"""A class mask -> one ``Structure`` per class: its main connected component and its problems.

A structure that is missing, too small, cut by the image border or split into several blobs
carries a short ``problem`` code; the measurements that depend on it are then NaN
(``spoils_tf.geometry.measure``). Each class is labelled once, on its own bounding crop
(``main_component``); every class's bounding box comes from one bit-set pass
(``class_boxes``). A structure's pixels can be projected into another structure's frame
(``band_points``, ``band_max_a``: a vertebral body's posterior margin in a disc frame).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import cv2
import numpy as np

from spoils_tf import labels
from spoils_tf.geometry.frame import Frame
from spoils_tf.geometry.reductions import array_mean, median_grey

# === Constants ===
# A component smaller than max(MIN_FRAGMENT_PIXELS, FRAGMENT_FRACTION * largest) next to the
# largest one of its class is a speck: dropped (reason "<part>_specks_dropped"). A larger second
# component makes the structure "fragmented" and its measurements NaN.
MIN_FRAGMENT_PIXELS = 8
FRAGMENT_FRACTION = 0.05
# Fewer pixels than this: no frame can be fitted (reason "<part>_too_small").
MIN_STRUCTURE_PIXELS = 12


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
            cached = (img, median_grey(flat))
            self._median = cached
        return cached[1]

    def project(self, frame: Frame,
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


def extract(class_mask: np.ndarray, name: str, keep_largest_only: bool,
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
        return missing(name)
    r0, r1, c0, c1 = _with_margin((y, y + h, x, x + w), class_mask.shape)
    return main_component(class_mask[r0:r1, c0:c1], (r0 + offset[0], c0 + offset[1]), name,
                          keep_largest_only, class_mask.shape if full_shape is None
                          else full_shape)


def _with_margin(box: tuple[int, int, int, int],
                 shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box (r0, r1, c0, c1) (rows r0 <= r < r1, columns c0 <= c < c1) grown by one pixel on
    every side and clipped to an array of ``shape`` (h, w)."""
    r0, r1, c0, c1 = box
    return max(0, r0 - 1), min(shape[0], r1 + 1), max(0, c0 - 1), min(shape[1], c1 + 1)


def missing(name: str) -> Structure:
    """The Structure of a class with no pixel (problem "missing")."""
    return Structure(name, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), None, (0, 0),
                     "missing")


def main_component(roi: np.ndarray, origin: tuple[int, int], name: str,
                   keep_largest_only: bool, full_shape: tuple[int, int]) -> Structure:
    """``extract`` of a class from its bounding crop.

    Args:
        roi: bool [h, w] class mask holding every pixel of the class (at least one) and a
            1-pixel margin around them (clipped at the image border); its pixel (0, 0) is
            image pixel ``origin`` (row, col).
        name, keep_largest_only: as ``extract``; full_shape: the image's (H, W).

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


def class_boxes(ids: np.ndarray, n_ids: int) -> np.ndarray:
    """Bounding box of every id of a small-integer label image, in one pass.

    Each pixel becomes the bit ``1 << id``; OR-reducing those along rows and along columns
    gives, per row and per column, the set of ids in it, hence each id's first/last row and
    column (two reductions instead of a compare and a ``cv2.boundingRect`` per class).

    Args:
        ids: uint8 [h, w] ids in ``0..n_ids - 1``; n_ids: at most 64.

    Returns:
        int64 [n_ids, 4] (r0, r1, c0, c1), rows r0 <= r < r1 and columns c0 <= c < c1 hold
        every pixel of the id; (0, 0, 0, 0) for an absent id.
    """
    if n_ids > 64:
        raise ValueError(f"class_boxes: at most 64 ids fit in a bit set, got {n_ids}")
    dtype = np.uint16 if n_ids <= 16 else np.uint32 if n_ids <= 32 else np.uint64
    boxes = np.zeros((n_ids, 4), np.int64)
    if ids.size == 0:
        return boxes
    bits = np.left_shift(dtype(1), ids, dtype=dtype)
    shifts = np.arange(n_ids, dtype=dtype)
    for axis, (lo, hi) in ((1, (0, 1)), (0, (2, 3))):
        has = ((np.bitwise_or.reduce(bits, axis=axis)[:, None] >> shifts) & 1).astype(bool)
        present = has.any(axis=0)                               # [n_ids]
        n = has.shape[0]
        boxes[:, lo] = np.where(present, has.argmax(axis=0), 0)
        boxes[:, hi] = np.where(present, n - has[::-1].argmax(axis=0), 0)
    return boxes


def pca_frame(s: Structure, spacing: tuple[float, float]) -> Frame:
    """Disc frame: origin = centroid (mm), u = principal axis of the pixel centres (mm).

    The 2x2 covariance's principal eigenvector in closed form: angle
    ``0.5 * atan2(2 s_xy, s_xx - s_yy)`` (the same axis as ``np.linalg.eigh`` up to rounding;
    ``Frame.from_u`` fixes the sign).
    """
    x, y = s.x_y_mm(spacing)
    cx, cy = float(array_mean(x)), float(array_mean(y))
    dx, dy = x - cx, y - cy
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    theta = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
    return Frame.from_u(np.array([cx, cy]), np.array([math.cos(theta), math.sin(theta)]))


def band_slice(s: Structure, fr: Frame, spacing: tuple[float, float], b_lo: float,
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




def band_points(items: Sequence[tuple[Structure, Frame, float, float]],
                 spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, list[slice],
                                                         np.ndarray]:
    """The pixels of several structures that may lie in a band of another frame, projected
    into that frame, for all items at once.

    Args:
        items: (structure, frame, b_lo, b_hi): the structure's pixels in
            ``band_slice(structure, frame, spacing, b_lo, b_hi)`` (a superset of those with
            b in [b_lo, b_hi] mm; the caller makes the exact test).
        spacing: (row, col) mm.

    Returns:
        (a float64 [N], b float64 [N] mm in each item's frame, the items' index slices into
        their structure's pixels, starts int [n + 1] of each item's points in a and b). Each
        point's (a, b) is ``Frame.project_xy``'s, elementwise the same float operations.
    """
    sls, xs, ys, per_point = [], [], [], []
    for st, fr, lo, hi in items:
        sl = band_slice(st, fr, spacing, lo, hi)
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


def band_max_a(items: Sequence[tuple[Structure, Frame, float, float]],
                spacing: tuple[float, float]) -> list[Optional[float]]:
    """For each (structure, frame, b_lo, b_hi): the largest ``a`` (mm along the frame's u) of
    the structure's pixel centres with b_lo <= b <= b_hi, or None if there is none (a
    vertebral body's posterior margin read in a disc frame, for the bulge)."""
    if not items:
        return []
    a, b, _, starts = band_points(items, spacing)
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



# === A labelled slice ===
def _class_ids_uint8(mask: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """uint8 [H, W] copy of an integer class mask with unknown ids (negative or
    >= ``labels.NUM_SEG_CLASSES``) mapped to ``NUM_SEG_CLASSES`` (never a class), for fast
    compares, and the reason codes of the slice (``unknown_class_ids:<up to 5 ids>``)."""
    reasons: list[str] = []
    ids32 = mask.astype(np.int32, copy=False)
    # One pass for the range check: negative ids read as huge unsigned values.
    if mask.size and int(ids32.view(np.uint32).max()) < labels.NUM_SEG_CLASSES:
        return ids32.astype(np.uint8), reasons
    ids = np.clip(ids32, 0, labels.NUM_SEG_CLASSES).astype(np.uint8)
    ids[ids32 < 0] = labels.NUM_SEG_CLASSES
    if mask.size:
        bad = np.unique(ids32[(ids32 < 0) | (ids32 >= labels.NUM_SEG_CLASSES)])
        reasons.append("unknown_class_ids:" + "/".join(str(int(b)) for b in bad[:5]))
    return ids, reasons


def _crop_to_labels(ids: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The C-contiguous crop of ``ids`` (uint8 [H, W]) holding every non-zero pixel plus a
    1-pixel margin (clipped), and the (row, col) image pixel of its (0, 0); empty when no
    pixel is labelled."""
    if not ids.size:
        return ids, (0, 0)
    x, y, w, h = cv2.boundingRect(ids)
    r0, r1, c0, c1 = _with_margin((y, y + h, x, x + w), ids.shape)
    if w == 0 or h == 0:
        r0 = c0 = r1 = c1 = 0
    return np.ascontiguousarray(ids[r0:r1, c0:c1]), (r0, c0)


class LabelledSlice:
    """One slice's class mask, cropped to its labelled pixels; each class's ``Structure`` is
    extracted on first use and kept.

    Attributes:
        ids: uint8 [h, w] class ids of the crop (unknown ids read ``labels.NUM_SEG_CLASSES``).
        origin: (row, col) image pixel of ``ids[0, 0]``.
        image_shape: (H, W) of the whole mask.
        boxes: per class id, [r0, r1, c0, c1] bounding box in the crop (r1 == 0: absent).
        reasons: reason codes of the whole slice (unknown class ids).
    """

    def __init__(self, mask: np.ndarray):
        """``mask``: int [H, W] class ids (validated by the caller)."""
        ids, self.reasons = _class_ids_uint8(mask)
        self.image_shape: tuple[int, int] = ids.shape
        self.ids, self.origin = _crop_to_labels(ids)
        self.boxes: list[list[int]] = class_boxes(self.ids, labels.NUM_SEG_CLASSES + 1).tolist()
        self._structures: dict[str, Structure] = {}

    def present(self, name: str) -> bool:
        """Whether class ``name`` has a pixel."""
        return self.boxes[labels.SEG_ID[name]][1] > 0

    def structure(self, name: str) -> Structure:
        """Class ``name``'s main component (``main_component``; vertebrae keep their largest
        blob only), or a missing structure."""
        if name not in self._structures:
            class_id = labels.SEG_ID[name]
            r0, r1, c0, c1 = self.boxes[class_id]
            if r1 == 0:
                self._structures[name] = missing(name)
            else:
                r0, r1, c0, c1 = _with_margin((r0, r1, c0, c1), self.ids.shape)
                self._structures[name] = main_component(
                    self.ids[r0:r1, c0:c1] == class_id,
                    (r0 + self.origin[0], c0 + self.origin[1]), name,
                    name in labels.VERTEBRA_NAMES, self.image_shape)
        return self._structures[name]
