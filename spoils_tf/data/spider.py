"""SPIDER -> spoils-tf: ``spoils convert-spider --src SPIDER_DIR --out DIR``.

SPIDER (van der Graaf et al., Sci Data 11:264, 2024; CC BY 4.0) ships, per sagittal T2
slice, a 4-value mask: 0 background, 29 intervertebral disc, 76 vertebra (body *and*
posterior elements), 150 spinal canal. There are no level numbers. This module turns each
mask into the 14-class scheme of ``spoils_tf.labels`` and writes the dataset layout of
``spoils_tf.data.layout`` (LabelMe json + PNG per slice, ``patients.csv``, ``discs.csv``,
``issues.csv``) plus ``conversion_summary.json``.

How a mask is converted (all thresholds are module constants, in mm, so that they do not
depend on the pixel size):

1. **Discs.** Connected components (8-connectivity) of value 29. Components smaller than
   ``SPECK_AREA_MM2`` are specks and become background. Degenerated, thin discs often fall
   apart into several pieces along their length (SPIDER patient 11, L5-S1: two pieces of
   ~30 and ~15 mm^2), so pieces are **grouped into discs**: largest first, a piece joins a
   disc when its centroid lies within ``SAME_DISC_PERP_MM`` of that disc's long axis
   (principal axis of its pixels) and within ``SAME_DISC_ALONG_MM`` of its end along that
   axis. A slice where this happened is listed in ``issues.csv`` (action ``written``).
2. **Order.** Discs are ordered by centroid row (superior at the top): in a sagittal
   lumbar image the spine never runs horizontally, so even the strongly tilted L5-S1 disc
   of a lordotic spine has its centroid below L4-L5's. The ordering is then *checked*:
   two discs whose centroids are closer than ``MIN_DISC_SPACING_MM`` or than
   ``MIN_SPACING_RATIO`` times the median spacing (a piece that could not be grouped, a
   stray piece between two discs), a disc thicker than ``MAX_DISC_THICKNESS_MM`` (two
   discs fused into one component) or a gap larger than ``MAX_SPACING_RATIO`` times the
   median spacing (a disc missing in between) make the slice ambiguous: it is listed and
   **not written**.
3. **Levels.** The n-th disc from the bottom has SPIDER ``IVD label`` n (1 = L5-S1, see
   ``labels.disc_from_bottom``), checked against the patient's **reference slice** (a clean
   slice with the patient's most common disc count, nearest the middle of the series):
   the slice's discs are aligned with the reference's as one block (neighbouring sagittal
   slices are 1 mm apart, so the discs barely move) and every disc must lie within
   ``REFERENCE_MATCH_FRACTION`` of a disc spacing of its reference disc; the alignment gives
   the labels. Where the lowest disc(s) are missing in a lateral slice the alignment (not
   the count) gives the levels, and the slice is listed (action ``written``); a slice that
   does not line up is listed and skipped. Two patients (107, 152) have an ``IVD label 0``
   in SPIDER's gradings: a disc *below* L5-S1 (S1-S2 of a lumbarised S1), segmented in the
   mask. For them the lowest reference disc is label 0. Discs with label 0 or above 6
   (T11-T12 and up) become background.
4. **Vertebral bodies.** The body above disc ``d`` (``labels.disc_neighbours(d)[0]``:
   L5 above L5-S1 ... L1 above L1-L2) is the value-76 region between the mid-lines of
   ``d`` and of the next disc up (both must be present), cut posteriorly at the line joining
   the two discs' posterior ends (+ ``POSTERIOR_MARGIN_MM``) and, on rows where the canal
   is present, at the canal's anterior wall (anterior is left, posterior right). A disc
   that is only a fragment in this slice (shorter than ``RELIABLE_MIN_LENGTH_MM`` or not
   elongated) borrows the orientation of the nearest whole disc, and its posterior end is
   not used for the cut (listed, action ``written``). Of what
   remains, connected pieces smaller than ``BODY_MIN_PIECE_FRACTION`` of the largest piece
   are dropped (pedicle stubs). Posterior elements, T12 and everything above, and the
   sacrum (not labelled in SPIDER; for patients 107/152 the lumbarised S1 segment) are
   background. **Class S1 therefore has 0 pixels** in converted SPIDER data.
5. **Canal.** Value 150 -> canal, unchanged.

Slices that are not written are listed in ``issues.csv`` with action ``skipped``; slices that
are written but needed a decision are listed with action ``written``. Every input slice is
either written or listed; the summary counts both.

Re-running into an existing ``DIR`` is allowed: every output is rewritten atomically
(temporary file + ``os.replace``); files of slices that are now skipped are removed so that
``DIR/labelme`` always matches ``issues.csv``. Nothing else in ``DIR`` is touched.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import pathlib
import re
import sys
from typing import Any, Iterable, Mapping, Optional, Sequence

import cv2
import numpy as np
import PIL.Image

from spoils_tf import errors, fileio, labels
from spoils_tf.data import images, labelme_io, layout
from spoils_tf.errors import SpoilsError

# === SPIDER mask values ===
SPIDER_BACKGROUND = 0
SPIDER_DISC = 29
SPIDER_VERTEBRA = 76
SPIDER_CANAL = 150
SPIDER_VALUES: tuple[int, ...] = (SPIDER_BACKGROUND, SPIDER_DISC, SPIDER_VERTEBRA, SPIDER_CANAL)

# === Thresholds (mm; see the module docstring) ===
# Disc components below this area are specks -> background (2 mm^2 = ~9 px at 0.47 mm).
SPECK_AREA_MM2: float = 2.0
# A piece joins a disc if its centroid is this close to the disc's long axis ...
SAME_DISC_PERP_MM: float = 6.0
# ... and this close to the disc's end along that axis.
SAME_DISC_ALONG_MM: float = 20.0
# Neighbouring discs: centroid distance at least this (adult lumbar discs are ~30-40 mm
# apart centre to centre; thoracic ~25 mm).
MIN_DISC_SPACING_MM: float = 12.0
# A disc component thicker than this (across its long axis) is taken for two fused discs.
MAX_DISC_THICKNESS_MM: float = 22.0
# A spacing above this multiple of the slice's median spacing means a disc is missing ...
MAX_SPACING_RATIO: float = 1.6
# ... and one below this multiple a stray piece counted as a disc (the smallest real ratio
# in the 32 SPIDER patients is 0.54, patient 241: a very thin vertebra between two discs).
MIN_SPACING_RATIO: float = 0.45
# Fewer discs than this cannot be numbered from the bottom without the reference slice.
MIN_DISCS: int = 5
# A disc matches a reference disc if their centroids are within this fraction of the
# reference's median disc spacing.
REFERENCE_MATCH_FRACTION: float = 0.5
# Body pixels may lie this far posterior of the line joining the discs' posterior ends.
POSTERIOR_MARGIN_MM: float = 1.5
# A disc's own long axis is trusted when it is at least this long and this elongated.
RELIABLE_MIN_LENGTH_MM: float = 15.0
RELIABLE_MIN_ELONGATION: float = 2.5
# Pieces of a body region smaller than this fraction of its largest piece are dropped.
BODY_MIN_PIECE_FRACTION: float = 0.15

# SPIDER's grading columns -> names in discs.csv.
GRADING_COLUMNS: dict[str, str] = {
    "Modic": "modic",
    "UP endplate": "up_endplate",
    "LOW endplate": "low_endplate",
    "Spondylolisthesis": "spondylolisthesis",
    "Disc herniation": "herniation",
    "Disc narrowing": "narrowing",
    "Disc bulging": "bulging",
}
PFIRRMANN_COLUMN = "Pfirrman grade"  # SPIDER's spelling
DISC_EXTRA_COLUMNS: tuple[str, ...] = tuple(GRADING_COLUMNS.values()) + ("n_findings",)
PATIENT_EXTRA_COLUMNS: tuple[str, ...] = ("manufacturer", "scanner_model", "field_strength_t",
                                          "subset", "n_slices")
ISSUE_EXTRA_COLUMNS: tuple[str, ...] = ("action",)
SUMMARY_JSON = "conversion_summary.json"

_IMAGE_NAME_RE = re.compile(r"^(?P<patient>.+?)_t2_SPACE_slice(?P<slice>\d+)\.png$")


# === Severity proxy ===
def severity_proxy(findings: Mapping[str, Any]) -> tuple[str, int]:
    """SPIDER gradings of one disc -> (severity "L"|"M"|"H", number of positive findings).

    SPIDER has **no spondylosis-severity grade**; the SPOILS 11-class target needs one. This
    proxy counts the positive radiological findings SPIDER does grade, one point each:
    disc narrowing, disc bulging, disc herniation, spondylolisthesis, an endplate defect
    (upper OR lower endplate; one point for either or both), and Modic change (type > 0).
    The count (0..6) maps to 0-1 -> ``L``, 2-3 -> ``M``, >= 4 -> ``H``. It is a proxy
    (the findings are the ingredients of spondylosis, but neither weighted nor validated
    as a severity scale) and must be reported as such wherever grade classes derived from
    SPIDER are used.

    Args:
        findings: mapping with the keys of ``GRADING_COLUMNS.values()`` (``modic`` 0-3, the
            others 0/1); values may be int, float or numeric strings.

    Returns:
        (severity letter from ``labels.SEVERITIES``, n_findings 0..6).

    Raises:
        ValueError: a key is missing or a value is not a non-negative number.
    """
    vals: dict[str, float] = {}
    for key in GRADING_COLUMNS.values():
        if key not in findings:
            raise ValueError(f"severity_proxy: finding {key!r} missing; expected keys "
                             f"{tuple(GRADING_COLUMNS.values())}")
        try:
            v = float(findings[key])
        except (TypeError, ValueError):
            raise ValueError(f"severity_proxy: finding {key!r} = {findings[key]!r}; "
                             f"expected a number") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"severity_proxy: finding {key!r} = {findings[key]!r}; "
                             f"expected a non-negative number")
        vals[key] = v
    n = sum(int(vals[k] > 0) for k in ("narrowing", "bulging", "herniation", "spondylolisthesis"))
    n += int(vals["up_endplate"] > 0 or vals["low_endplate"] > 0)
    n += int(vals["modic"] > 0)
    severity = "L" if n <= 1 else ("M" if n <= 3 else "H")
    return severity, n


# === Disc finding ===
@dataclasses.dataclass
class Disc:
    """One disc of a slice (possibly several mask components grouped).

    Attributes:
        pixels: bool [H, W], the disc's pixels.
        centroid_mm: (x_mm, y_mm) of the pixels, x = column (anterior -> posterior),
            y = row (superior -> inferior), in mm from the top-left corner.
        axis: unit (x, y) vector of the long (antero-posterior) axis, pointing posterior.
        normal: unit (x, y) vector across the disc, pointing superior (y < 0).
        posterior_end_mm: (x_mm, y_mm), the disc's posterior end on its long axis.
        thickness_mm: extent across the long axis (98th - 2nd percentile).
        n_components: number of mask components grouped into this disc.
        length_mm: extent along the long axis (98th - 2nd percentile).
        reliable: False for a fragment too short or too round for its own axis to be
            trusted (length < ``RELIABLE_MIN_LENGTH_MM`` or < ``RELIABLE_MIN_ELONGATION``
            x thickness); ``find_discs`` then gives it the axis of the nearest reliable disc.
    """

    pixels: np.ndarray
    centroid_mm: np.ndarray
    axis: np.ndarray
    normal: np.ndarray
    posterior_end_mm: np.ndarray
    thickness_mm: float
    n_components: int
    length_mm: float = 0.0
    reliable: bool = True


def _coords_mm(binary: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """(x_mm, y_mm) float [N, 2] of the true pixels of ``binary`` (pixel centres)."""
    ys, xs = np.nonzero(binary)
    return np.stack([xs * float(spacing_mm[1]), ys * float(spacing_mm[0])], axis=1).astype(np.float64)


def _principal_axes(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, long axis (pointing +x, posterior), normal (pointing -y, superior)."""
    c = pts.mean(axis=0)
    if len(pts) < 2:
        return c, np.array([1.0, 0.0]), np.array([0.0, -1.0])
    cov = np.cov((pts - c).T)
    w, v = np.linalg.eigh(cov)
    axis = v[:, int(np.argmax(w))]
    if axis[0] < 0 or (axis[0] == 0 and axis[1] > 0):
        axis = -axis
    normal = np.array([axis[1], -axis[0]])
    if normal[1] > 0:
        normal = -normal
    return c, axis, normal


def _make_disc(binary: np.ndarray, spacing_mm: Sequence[float], n_components: int) -> Disc:
    pts = _coords_mm(binary, spacing_mm)
    c, axis, normal = _principal_axes(pts)
    along = (pts - c) @ axis
    across = (pts - c) @ normal
    posterior_end = c + axis * float(np.percentile(along, 98))
    thickness = float(np.percentile(across, 98) - np.percentile(across, 2))
    length = float(np.percentile(along, 98) - np.percentile(along, 2))
    reliable = length >= RELIABLE_MIN_LENGTH_MM and length >= RELIABLE_MIN_ELONGATION * thickness
    return Disc(binary, c, axis, normal, posterior_end, thickness, n_components, length, reliable)


@dataclasses.dataclass
class DiscFinding:
    """Result of ``find_discs``.

    Attributes:
        discs: ``Disc`` list ordered bottom -> top (index 0 = lowest).
        specks_px: number of disc pixels dropped as specks.
        problems: reasons that make the numbering ambiguous (slice must not be written).
        notes: decisions taken that do not block writing (e.g. pieces grouped).
        spacing_mm: median centroid distance between neighbouring discs (nan if < 2 discs).
    """

    discs: list[Disc]
    specks_px: int
    problems: list[str]
    notes: list[str]
    spacing_mm: float


def find_discs(spider_mask: np.ndarray, spacing_mm: Sequence[float]) -> DiscFinding:
    """Finds, groups, orders and checks the discs (value 29) of one SPIDER mask.

    Args:
        spider_mask: uint8 [H, W] with values in ``SPIDER_VALUES``.
        spacing_mm: (row_mm, col_mm) pixel spacing.

    Returns:
        ``DiscFinding``; see the module docstring for the rules.
    """
    binary = (np.asarray(spider_mask) == SPIDER_DISC).astype(np.uint8)
    px_area = float(spacing_mm[0]) * float(spacing_mm[1])
    n, lab, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    comps = []
    specks_px = 0
    for i in range(1, n):
        area = int(stats[i, cv2.CC_STAT_AREA])
        if area * px_area < SPECK_AREA_MM2:
            specks_px += area
            continue
        comps.append((area, lab == i))
    comps.sort(key=lambda t: -t[0])
    # Group pieces, largest first: a piece joins the disc whose long axis it lies on.
    groups: list[dict] = []
    for area, comp in comps:
        pts = _coords_mm(comp, spacing_mm)
        c = pts.mean(axis=0)
        best, best_perp = None, None
        for g in groups:
            rel = c - g["c"]
            perp = abs(float(rel @ g["normal"]))
            u = float(rel @ g["axis"])
            gap = max(0.0, g["u_lo"] - u, u - g["u_hi"])
            if perp <= SAME_DISC_PERP_MM and gap <= SAME_DISC_ALONG_MM:
                if best is None or perp < best_perp:
                    best, best_perp = g, perp
        if best is None:
            gc, axis, normal = _principal_axes(pts)
            along = (pts - gc) @ axis
            groups.append({"c": gc, "axis": axis, "normal": normal, "u_lo": float(along.min()),
                           "u_hi": float(along.max()), "pixels": comp.copy(), "n": 1})
        else:
            best["pixels"] |= comp
            best["n"] += 1
            along = (pts - best["c"]) @ best["axis"]
            best["u_lo"] = min(best["u_lo"], float(along.min()))
            best["u_hi"] = max(best["u_hi"], float(along.max()))
    discs = [_make_disc(g["pixels"], spacing_mm, g["n"]) for g in groups]
    discs.sort(key=lambda d: -d.centroid_mm[1])  # bottom (largest row) first
    problems: list[str] = []
    notes: list[str] = []
    reliable = [d for d in discs if d.reliable]
    for k, d in enumerate(discs):
        if not d.reliable and reliable:
            near = min(reliable, key=lambda r: float(np.linalg.norm(r.centroid_mm - d.centroid_mm)))
            d.axis, d.normal = near.axis.copy(), near.normal.copy()
            notes.append(f"disc {k + 1} from the bottom is a {d.length_mm:.0f} mm fragment: "
                         f"orientation taken from its nearest whole disc")
    split = [k for k, d in enumerate(discs) if d.n_components > 1]
    if split:
        notes.append("disc split into pieces, grouped along its long axis: "
                     + ", ".join(f"disc {k + 1} from the bottom ({discs[k].n_components} pieces)"
                                 for k in split))
    for k, d in enumerate(discs):
        if d.thickness_mm > MAX_DISC_THICKNESS_MM:
            problems.append(f"disc component {k + 1} from the bottom is {d.thickness_mm:.1f} mm "
                            f"thick (> {MAX_DISC_THICKNESS_MM} mm): touching/fused discs?")
    gaps = [float(np.linalg.norm(discs[k + 1].centroid_mm - discs[k].centroid_mm))
            for k in range(len(discs) - 1)]
    spacing = float(np.median(gaps)) if gaps else float("nan")
    for k, g in enumerate(gaps):
        if g < MIN_DISC_SPACING_MM:
            problems.append(f"disc components {k + 1} and {k + 2} from the bottom are only "
                            f"{g:.1f} mm apart (< {MIN_DISC_SPACING_MM} mm): a split disc or "
                            f"touching components, order ambiguous")
        elif len(gaps) >= 2 and g < MIN_SPACING_RATIO * spacing:
            problems.append(f"discs {k + 1} and {k + 2} from the bottom are {g:.1f} mm apart "
                            f"(< {MIN_SPACING_RATIO} x median {spacing:.1f} mm): a stray piece "
                            f"counted as a disc? order ambiguous")
        elif len(gaps) >= 2 and g > MAX_SPACING_RATIO * spacing:
            problems.append(f"gap of {g:.1f} mm between discs {k + 1} and {k + 2} from the "
                            f"bottom (> {MAX_SPACING_RATIO} x median {spacing:.1f} mm): "
                            f"a disc seems missing")
    return DiscFinding(discs, specks_px, problems, notes, spacing)


# === Levels: reference slice and matching ===
@dataclasses.dataclass
class Reference:
    """A patient's reference disc positions.

    Attributes:
        slice_index: the reference slice.
        centroids_mm: float [K, 2] disc centroids (x_mm, y_mm), bottom -> top.
        spacing_mm: median distance between neighbouring reference discs.
        first_label: SPIDER ``IVD label`` of the lowest reference disc (1, or 0 for a
            patient graded with a disc below L5-S1).
    """

    slice_index: int
    centroids_mm: np.ndarray
    spacing_mm: float
    first_label: int = 1


def choose_reference(findings: Mapping[int, DiscFinding], first_label: int = 1) -> Optional[Reference]:
    """The patient's reference slice: a clean slice with the most common disc count.

    Among slices without problems and with >= 2 discs, take those whose disc count is the
    most common one (ties: the larger count), and of these the one nearest the middle of
    the series (lowest index on ties). The most common count, not the largest, so that one
    slice with an extra, ungrouped piece cannot become the reference.

    Args:
        findings: slice index -> ``find_discs`` result, for one patient.
        first_label: IVD label of the lowest disc of the reference slice.

    Returns:
        ``Reference``, or None when no slice qualifies.
    """
    clean = {k: f for k, f in findings.items() if not f.problems and len(f.discs) >= 2}
    if not clean:
        return None
    counts = [len(f.discs) for f in clean.values()]
    modal = max(set(counts), key=lambda c: (counts.count(c), c))
    middle = (min(findings) + max(findings)) / 2.0
    k = min((k for k, f in clean.items() if len(f.discs) == modal), key=lambda k: (abs(k - middle), k))
    f = clean[k]
    return Reference(k, np.array([d.centroid_mm for d in f.discs]), f.spacing_mm, first_label)


def match_to_reference(finding: DiscFinding, ref: Reference) -> tuple[Optional[list[int]], str]:
    """IVD labels of the discs of ``finding`` by aligning them with the reference discs.

    The slice's discs (bottom -> top, no gaps: ``find_discs`` flags gaps) are aligned with
    the reference's as a block: slice disc ``i`` <-> reference disc ``i + offset``. The
    offset (>= 0: the slice may lack the lowest reference discs, never have extra ones
    below) with the smallest median centroid distance over the overlapping discs wins; it
    is accepted when every overlapping pair is within ``REFERENCE_MATCH_FRACTION`` of the
    reference spacing. Discs of the slice above the reference's top disc continue the
    numbering.

    Returns:
        (IVD labels bottom -> top, "") or (None, reason) when no offset fits.
    """
    n, k_ref = len(finding.discs), len(ref.centroids_mm)
    tol = REFERENCE_MATCH_FRACTION * ref.spacing_mm
    best = None
    for off in range(k_ref):
        pairs = [(i, i + off) for i in range(n) if i + off < k_ref]
        if len(pairs) < min(2, n):
            continue
        dist = np.array([np.linalg.norm(finding.discs[i].centroid_mm - ref.centroids_mm[j])
                         for i, j in pairs])
        if best is None or float(np.median(dist)) < best[1]:
            best = (off, float(np.median(dist)), float(dist.max()))
    if best is None:
        return None, f"no alignment with the {k_ref} discs of reference slice {ref.slice_index}"
    off, med, worst = best
    if worst > tol:
        return None, (f"discs do not line up with reference slice {ref.slice_index}: best "
                      f"alignment (lowest disc = reference disc {off + 1}) is off by up to "
                      f"{worst:.1f} mm (tolerance {tol:.1f} mm)")
    return [ref.first_label + off + i for i in range(n)], ""


# === Vertebral bodies ===
def _side(points_xy: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed distance (mm) of points from the line a->b; > 0 to the right of a->b."""
    d = b - a
    n = np.array([-d[1], d[0]]) / max(float(np.linalg.norm(d)), 1e-9)
    return (points_xy - a) @ n


def body_between(spider_mask: np.ndarray, lower: Disc, upper: Disc,
                 spacing_mm: Sequence[float]) -> np.ndarray:
    """Vertebral-body pixels between two neighbouring discs.

    Args:
        spider_mask: uint8 [H, W] SPIDER mask.
        lower, upper: the disc below and the disc above the body.
        spacing_mm: (row_mm, col_mm).

    Returns:
        bool [H, W]: value-76 pixels above ``lower``'s mid-line, below ``upper``'s, anterior
        of the line joining the discs' posterior ends (+ ``POSTERIOR_MARGIN_MM``) and, on
        rows with canal, anterior of the canal; pieces < ``BODY_MIN_PIECE_FRACTION`` of the
        largest piece dropped.
    """
    m = np.asarray(spider_mask)
    vert = m == SPIDER_VERTEBRA
    ys, xs = np.nonzero(vert)
    out = np.zeros(m.shape, bool)
    if len(ys) == 0:
        return out
    pts = np.stack([xs * float(spacing_mm[1]), ys * float(spacing_mm[0])], axis=1)
    keep = ((pts - lower.centroid_mm) @ lower.normal > 0) & ((pts - upper.centroid_mm) @ upper.normal < 0)
    # Posterior cut: line from the upper disc's posterior end down to the lower one's; with
    # y pointing down, points to the right (posterior) of a downward line have side < 0.
    # A fragment's posterior end says nothing about the body's posterior wall: with one
    # fragment the line runs through the whole disc's posterior end along that disc's
    # normal; with two fragments only the canal cuts.
    if upper.reliable and lower.reliable:
        side = _side(pts, upper.posterior_end_mm, lower.posterior_end_mm)
        keep &= side >= -POSTERIOR_MARGIN_MM
    elif upper.reliable or lower.reliable:
        whole = upper if upper.reliable else lower
        side = _side(pts, whole.posterior_end_mm + whole.normal, whole.posterior_end_mm - whole.normal)
        keep &= side >= -POSTERIOR_MARGIN_MM
    canal = m == SPIDER_CANAL
    rows_with_canal = canal.any(axis=1)
    first_canal_col = np.where(rows_with_canal, np.argmax(canal, axis=1), m.shape[1])
    keep &= xs < first_canal_col[ys]
    out[ys[keep], xs[keep]] = True
    n, lab, stats, _ = cv2.connectedComponentsWithStats(out.astype(np.uint8), connectivity=8)
    if n > 2:
        areas = stats[1:, cv2.CC_STAT_AREA]
        small = np.nonzero(areas < BODY_MIN_PIECE_FRACTION * areas.max())[0] + 1
        out[np.isin(lab, small)] = False
    return out


# === One slice ===
@dataclasses.dataclass
class SliceConversion:
    """Result of converting one SPIDER mask.

    Attributes:
        mask: int32 [H, W] 14-class mask (``labels.SEG_CLASSES``), or None when skipped.
        levels: {disc name: IVD label} of the discs labelled in ``mask``.
        write: False when the slice is ambiguous and must not be written.
        reasons: why it is listed in issues.csv ([] for a clean slice).
    """

    mask: Optional[np.ndarray]
    levels: dict[str, int]
    write: bool
    reasons: list[str]


def convert_mask(spider_mask: np.ndarray, spacing_mm: Sequence[float],
                 reference: Optional[Reference] = None,
                 finding: Optional[DiscFinding] = None) -> SliceConversion:
    """Converts one SPIDER 4-value mask to the 14-class scheme.

    Args:
        spider_mask: uint8 [H, W] with values in ``SPIDER_VALUES``.
        spacing_mm: (row_mm, col_mm) pixel spacing.
        reference: the patient's reference discs; None -> numbering from the bottom only
            (then fewer than ``MIN_DISCS`` discs make the slice ambiguous).
        finding: ``find_discs(spider_mask, spacing_mm)`` if already computed.

    Returns:
        ``SliceConversion``.

    Raises:
        ValueError: ``spider_mask`` is not 2-D or has values outside ``SPIDER_VALUES``.
    """
    m = np.asarray(spider_mask)
    if m.ndim != 2:
        raise ValueError(f"SPIDER mask must be 2-D [H, W], got shape {m.shape}")
    bad = np.setdiff1d(np.unique(m), SPIDER_VALUES)
    if bad.size:
        raise ValueError(f"SPIDER mask has values {bad.tolist()}; expected only {SPIDER_VALUES}")
    f = find_discs(m, spacing_mm) if finding is None else finding
    reasons = list(f.problems) + list(f.notes)
    if f.problems:
        return SliceConversion(None, {}, False, reasons)
    if not f.discs:
        return SliceConversion(None, {}, False, reasons + ["no disc in the mask"])
    first = 1 if reference is None else reference.first_label
    counted = [first + k for k in range(len(f.discs))]
    if reference is None:
        ivd = counted
        if len(f.discs) < MIN_DISCS:
            return SliceConversion(None, {}, False, reasons + [
                f"only {len(f.discs)} discs (< {MIN_DISCS}) and no reference slice to confirm "
                f"that the lowest is L5-S1"])
    else:
        ivd, why = match_to_reference(f, reference)
        if ivd is None:
            return SliceConversion(None, {}, False, reasons + [why])
        if ivd != counted:
            reasons.append(f"lowest {ivd[0] - first} disc(s) of reference slice "
                           f"{reference.slice_index} not in this slice: levels from the "
                           f"reference, not counted from the bottom")
        if len(f.discs) < MIN_DISCS:
            reasons.append(f"only {len(f.discs)} discs (< {MIN_DISCS}); levels confirmed by "
                           f"reference slice {reference.slice_index}")
    out = np.zeros(m.shape, np.int32)
    out[m == SPIDER_CANAL] = labels.CANAL_ID
    levels: dict[str, int] = {}
    by_label = dict(zip(ivd, f.discs))
    for label, disc in by_label.items():
        if 1 <= label <= len(labels.DISC_NAMES):
            name = labels.disc_from_bottom(label)
            out[disc.pixels] = labels.SEG_ID[name]
            levels[name] = label
    for label, disc in by_label.items():
        if not 1 <= label <= len(labels.DISC_NAMES) or label + 1 not in by_label:
            continue
        above, _ = labels.disc_neighbours(labels.disc_from_bottom(label))
        if above is None:
            continue
        body = body_between(m, disc, by_label[label + 1], spacing_mm)
        out[body & (out == labels.BACKGROUND_ID)] = labels.SEG_ID[above]
    return SliceConversion(out, levels, True, reasons)


# === Reading SPIDER files ===
def read_spider_mask(path: str | pathlib.Path) -> np.ndarray:
    """Reads a SPIDER mask PNG as uint8 [H, W] (one channel of R=G=B files).

    Raises:
        FileNotFoundError: no such file.
        SpoilsError: not an image, channels that differ, or values outside ``SPIDER_VALUES``.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask file not found")
    try:
        with PIL.Image.open(path) as img:
            arr = np.asarray(img)
    except (PIL.UnidentifiedImageError, OSError) as e:
        raise SpoilsError(path, None, f"not a readable image ({e})") from e
    if arr.ndim == 3:
        if arr.shape[2] >= 3 and not (np.array_equal(arr[..., 0], arr[..., 1])
                                      and np.array_equal(arr[..., 0], arr[..., 2])):
            raise SpoilsError(path, None, "mask channels differ; expected a single-valued mask "
                                          "(R=G=B)")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise SpoilsError(path, None, f"mask of shape {arr.shape}; expected [H, W]")
    bad = np.setdiff1d(np.unique(arr), SPIDER_VALUES)
    if bad.size:
        raise SpoilsError(path, None, f"mask values {bad.tolist()}; expected only {SPIDER_VALUES}")
    return arr.astype(np.uint8)


def parse_pixel_spacing(text: Any, source: str = "overview.csv") -> tuple[float, float]:
    """``"[.46875, .46875]"`` (DICOM PixelSpacing = [row, col] mm) -> (row_mm, col_mm).

    Raises:
        SpoilsError: not two positive finite numbers, or outside
            ``images.PIXEL_SPACING_RANGE_MM`` (``images.check_pixel_spacing``).
    """
    nums = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", str(text))
    vals = [float(v) for v in nums]
    if len(vals) != 2:
        raise SpoilsError(source, "PixelSpacing", f"{text!r}; expected '[row_mm, col_mm]' with "
                                                  "two positive numbers")
    return images.check_pixel_spacing(vals, source, "PixelSpacing")


def _float_or_none(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def read_overview(path: str | pathlib.Path) -> dict[str, dict]:
    """SPIDER ``overview.csv`` -> {patient: row of ``PATIENT_COLUMNS`` + extras}.

    Only acquisition fields are copied (sex is a PATIENT_COLUMNS field); birth date and any
    other identifying field are not. A row with an unreadable ``PixelSpacing`` gets
    ``pixel_spacing_*`` None and an ``error`` entry.

    Raises:
        FileNotFoundError: no such file. ValueError: ``new_file_name`` column missing.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SPIDER overview file not found")
    out: dict[str, dict] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        errors.require_columns(path, reader.fieldnames, ["new_file_name"])
        for row in reader:
            name = row["new_file_name"]
            if not name.endswith("_t2_SPACE"):
                continue
            patient = name[: -len("_t2_SPACE")]
            rec: dict[str, Any] = {"patient": patient, "sex": row.get("sex", ""), "error": ""}
            try:
                r_mm, c_mm = parse_pixel_spacing(row.get("PixelSpacing"), f"{path} ({name})")
            except ValueError as e:
                r_mm, c_mm = None, None
                rec["error"] = str(e)
            rec.update(pixel_spacing_row_mm=r_mm, pixel_spacing_col_mm=c_mm,
                       slice_thickness_mm=_float_or_none(row.get("SliceThickness")),
                       slice_spacing_mm=_float_or_none(row.get("SpacingBetweenSlices")),
                       manufacturer=row.get("Manufacturer", ""),
                       scanner_model=row.get("ManufacturerModelName", ""),
                       field_strength_t=_float_or_none(row.get("MagneticFieldStrength")),
                       subset=row.get("subset", ""))
            out[patient] = rec
    return out


def read_gradings(path: str | pathlib.Path) -> dict[tuple[str, int], dict]:
    """SPIDER ``radiological_gradings.csv`` -> {(patient, IVD label): gradings}.

    Each value has ``pfirrmann`` (int), the ``GRADING_COLUMNS`` names (int), ``severity``
    and ``n_findings`` from ``severity_proxy`` and ``grade_class``.

    Raises:
        FileNotFoundError: no such file.
        SpoilsError: naming the file, the line and the column: a missing column, a value
            that is not a whole number, a Pfirrmann grade outside
            ``labels.PFIRRMANN_GRADES``, or a negative finding.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SPIDER gradings file not found")
    out: dict[tuple[str, int], dict] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = ["Patient", "IVD label", PFIRRMANN_COLUMN] + list(GRADING_COLUMNS)
        errors.require_columns(path, reader.fieldnames, need)
        for row in reader:
            line = reader.line_num

            def whole(column: str) -> int:
                try:
                    v = float(row[column])
                except (TypeError, ValueError):
                    v = float("nan")
                if not (math.isfinite(v) and v == int(v)):
                    raise SpoilsError(path, f"line {line}: {column}",
                                      f"{row[column]!r}; expected a whole number")
                return int(v)
            rec = {v: whole(k) for k, v in GRADING_COLUMNS.items()}
            key = (str(row["Patient"]).strip(), whole("IVD label"))
            rec["pfirrmann"] = whole(PFIRRMANN_COLUMN)
            if rec["pfirrmann"] not in labels.PFIRRMANN_GRADES:
                raise SpoilsError(path, f"line {line}: {PFIRRMANN_COLUMN}",
                                  f"{rec['pfirrmann']}; expected a Pfirrmann grade in "
                                  f"{labels.PFIRRMANN_GRADES}")
            bad = [k for k, v in GRADING_COLUMNS.items() if rec[v] < 0]
            if bad:
                raise SpoilsError(path, f"line {line}: {bad[0]}",
                                  f"{rec[GRADING_COLUMNS[bad[0]]]}; expected a non-negative "
                                  "finding (0/1, Modic 0-3)")
            rec["severity"], rec["n_findings"] = severity_proxy(rec)
            rec["grade_class"] = labels.grade_class(rec["pfirrmann"], rec["severity"])
            out[key] = rec
    return out


def list_spider_slices(src: str | pathlib.Path) -> dict[str, dict[int, pathlib.Path]]:
    """{patient: {slice index: image path}} of ``src/images/<patient>_t2_SPACE_slice<k>.png``.

    Raises:
        FileNotFoundError: ``src/images`` missing.
    """
    base = pathlib.Path(src) / "images"
    if not base.is_dir():
        raise FileNotFoundError(f"{src}: no images/ directory (expected the SPIDER t2_SPACE sample)")
    out: dict[str, dict[int, pathlib.Path]] = {}
    for p in sorted(base.glob("*.png")):
        m = _IMAGE_NAME_RE.match(p.name)
        if m:
            out.setdefault(m.group("patient"), {})[int(m.group("slice"))] = p
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))


# === Writing ===


def _csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


# === Batch ===
@dataclasses.dataclass
class ConversionSummary:
    """What ``convert_spider`` did (also written as ``conversion_summary.json``).

    Attributes:
        n_slices: input slices found. n_written: LabelMe files written.
        n_skipped: slices listed in issues.csv and not written.
        n_written_with_issue: written slices that are also listed in issues.csv.
        class_pixels: {class name: pixel count over all written masks}.
        n_gradings: rows of radiological_gradings.csv (for the converted patients' source).
        n_gradings_matched: rows whose (patient, IVD label) is a labelled disc in >= 1
            written slice.
        unmatched_gradings: [{"patient", "ivd_label", "reason"}] for the others.
        skipped: [{"patient", "slice", "reason"}] of every slice not written.
    """

    n_slices: int
    n_written: int
    n_skipped: int
    n_written_with_issue: int
    class_pixels: dict[str, int]
    n_gradings: int
    n_gradings_matched: int
    unmatched_gradings: list[dict]
    skipped: list[dict]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _unmatched_reason(label: int, patient: str, patients: Mapping[str, Any]) -> str:
    if patient not in patients:
        return "patient has no slices in images/"
    if label < 1:
        return ("IVD label 0: a disc below L5-S1 (S1-S2 of a lumbarised S1); outside the "
                "14-class scheme")
    if label > len(labels.DISC_NAMES):
        return (f"IVD label {label}: above T12-L1 (thoracic disc); outside the 14-class scheme")
    return "level not labelled in any written slice of this patient"


@dataclasses.dataclass
class _Conversion:
    """What a conversion has written and found so far (one per ``convert_spider`` call)."""

    out: pathlib.Path
    gradings: dict
    bar: Any = None
    issues: list = dataclasses.field(default_factory=list)
    disc_rows: list = dataclasses.field(default_factory=list)
    patient_rows: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    matched: set = dataclasses.field(default_factory=set)
    class_pixels: np.ndarray = dataclasses.field(
            default_factory=lambda: np.zeros(labels.NUM_SEG_CLASSES, np.int64))
    n_written: int = 0
    written_listed: int = 0

    def tick(self) -> None:
        if self.bar:
            self.bar.update(1)

    def skip(self, patient: str, k: int, path: pathlib.Path, reason: str) -> None:
        """Lists slice ``k`` as skipped and removes what an earlier run wrote for it."""
        self.issues.append({"patient": patient, "slice": k, "file": path.name, "reason": reason,
                            "action": "skipped"})
        self.skipped.append({"patient": patient, "slice": k, "reason": reason})
        stale = layout.labelme_json_path(self.out, patient, k)
        for f in (stale, stale.with_suffix(".png")):
            if f.exists():
                f.unlink()

    def write(self, patient: str, k: int, path: pathlib.Path, image: np.ndarray,
              conv: SliceConversion, spacing: tuple[float, float]) -> None:
        """Writes slice ``k``'s LabelMe file and records its discs and class pixels."""
        labelme_io.write_labelme(layout.labelme_json_path(self.out, patient, k), image,
                                 conv.mask, patient=patient, slice_index=k,
                                 pixel_spacing_mm=spacing)
        self.n_written += 1
        self.class_pixels += np.bincount(conv.mask.ravel(), minlength=labels.NUM_SEG_CLASSES)
        if conv.reasons:
            self.written_listed += 1
            self.issues.append({"patient": patient, "slice": k, "file": path.name,
                                "reason": "; ".join(conv.reasons), "action": "written"})
        for level, ivd in sorted(conv.levels.items(), key=lambda kv: kv[1]):
            g = self.gradings.get((patient, ivd))
            row = {"patient": patient, "slice": k, "level": level, "ivd_label": ivd}
            if g is not None:
                self.matched.add((patient, ivd))
                row.update(g)
            self.disc_rows.append(row)


def convert_spider(src: str | pathlib.Path, out: str | pathlib.Path,
                   patients: Optional[Sequence[str]] = None, progress: bool = True) -> ConversionSummary:
    """Converts the SPIDER sample in ``src`` into the spoils dataset layout in ``out``.

    Args:
        src: SPIDER directory (``images/``, ``masks/``, ``overview.csv``,
            ``radiological_gradings.csv``).
        out: destination ``DIR`` (created; existing outputs of a previous run are replaced).
        patients: convert only these patient ids (default: all in ``src/images``).
        progress: show a tqdm progress bar over slices.

    Returns:
        ``ConversionSummary``. Per-slice failures (unreadable file, shape mismatch,
        ambiguous discs) do not stop the batch: they are listed in ``issues.csv``.

    Raises:
        FileNotFoundError: ``src`` lacks images/, overview.csv or radiological_gradings.csv.
        SpoilsError: ``out`` is a file, under a file or not writable
            (``fileio.check_writable_dir``); ``src`` has no ``masks/`` folder, or overview.csv /
            radiological_gradings.csv cannot be parsed (names the file, line and column);
            raised before anything is written.
    """
    src, out = pathlib.Path(src), pathlib.Path(out)
    slices, overview, gradings = _check_source(src, out, patients)
    n_total = sum(len(s) for s in slices.values())
    run = _Conversion(out, gradings)
    if progress:
        from tqdm import tqdm
        run.bar = tqdm(total=n_total, unit="slice", desc="convert-spider", file=sys.stderr)
    for patient, files in slices.items():
        _convert_patient(src, patient, files, overview.get(patient), run)
    if run.bar:
        run.bar.close()
    return _write_tables(run, slices, patients, n_total)


def _check_source(src: pathlib.Path, out: pathlib.Path, patients: Optional[Sequence[str]]
                  ) -> tuple[dict, dict, dict]:
    """(slices per patient, overview rows, gradings) of ``src``, checked before any write."""
    fileio.check_writable_dir(out, field="--out")
    slices = list_spider_slices(src)
    if not slices:
        raise SpoilsError(src / "images", None, "no <patient>_t2_SPACE_slice<k>.png file; "
                                                "expected the SPIDER t2_SPACE sample")
    if not (src / "masks").is_dir():
        raise SpoilsError(src, "masks/", "no masks/ folder; expected SPIDER's masks next to "
                                         "images/ (the conversion needs a mask for every slice)")
    overview = read_overview(src / "overview.csv")
    gradings = read_gradings(src / "radiological_gradings.csv")
    if patients is not None:
        wanted = {str(p) for p in patients}
        unknown = sorted(wanted - set(slices))
        if unknown:
            raise ValueError(f"{src}/images: no slices for patients {unknown}")
        slices = {p: s for p, s in slices.items() if p in wanted}
    return slices, overview, gradings


def _convert_patient(src: pathlib.Path, patient: str, files: dict, info: Optional[dict],
                     run: _Conversion) -> None:
    """One patient: read every mask and find its discs (pass 1), pick the reference slice
    that names the levels, then convert and write each slice (pass 2)."""
    graded = sorted(lbl for (p, lbl) in run.gradings if p == patient)
    first_label = 0 if graded and graded[0] == 0 else 1
    if info is None or info["pixel_spacing_row_mm"] is None:
        why = (f"patient not in overview.csv" if info is None else info["error"])
        for k, path in sorted(files.items()):
            run.skip(patient, k, path, f"no pixel spacing: {why}")
            run.tick()
        return
    spacing = (info["pixel_spacing_row_mm"], info["pixel_spacing_col_mm"])
    run.patient_rows.append({**info, "n_slices": len(files)})
    masks: dict[int, np.ndarray] = {}
    findings: dict[int, DiscFinding] = {}
    for k, path in sorted(files.items()):
        try:
            masks[k] = read_spider_mask(src / "masks" / path.name)
            findings[k] = find_discs(masks[k], spacing)
        except (OSError, ValueError) as e:
            run.skip(patient, k, path, f"unreadable mask: {e}")
            run.tick()
    ref = choose_reference(findings, first_label)
    if ref is not None and graded and len(ref.centroids_mm) != len(graded):
        run.issues.append({"patient": patient, "slice": ref.slice_index, "file": "",
                           "action": "note",
                           "reason": f"reference slice has {len(ref.centroids_mm)} discs, "
                                     f"radiological_gradings.csv grades {len(graded)}"})
    for k in sorted(findings):
        path = files[k]
        try:
            image = images.read_image_gray(path)
            if image.shape != masks[k].shape:
                raise ValueError(f"image shape {image.shape} != mask shape {masks[k].shape}")
            conv = convert_mask(masks[k], spacing, ref, findings[k])
            if not conv.write:
                run.skip(patient, k, path, "; ".join(conv.reasons))
            else:
                run.write(patient, k, path, image, conv, spacing)
        except (OSError, ValueError) as e:
            run.skip(patient, k, path, f"conversion failed: {e}")
        run.tick()


def _write_tables(run: _Conversion, slices: dict, patients: Optional[Sequence[str]],
                  n_total: int) -> ConversionSummary:
    """Writes issues.csv, discs.csv, patients.csv and the summary JSON; returns the summary."""
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    issue_cols = layout.ISSUE_COLUMNS + ISSUE_EXTRA_COLUMNS
    fileio.atomic_write_text(out / layout.ISSUES_CSV, _csv_text(issue_cols, run.issues))
    fileio.atomic_write_text(out / layout.DISCS_CSV,
                             _csv_text(layout.DISC_COLUMNS + DISC_EXTRA_COLUMNS, run.disc_rows))
    fileio.atomic_write_text(out / layout.PATIENTS_CSV,
                             _csv_text(layout.PATIENT_COLUMNS + PATIENT_EXTRA_COLUMNS,
                                       run.patient_rows))
    relevant = {key: g for key, g in run.gradings.items()
                if patients is None or key[0] in slices}
    unmatched = [{"patient": p, "ivd_label": lbl, "reason": _unmatched_reason(lbl, p, slices)}
                 for (p, lbl) in sorted(relevant, key=lambda t: (len(t[0]), t[0], t[1]))
                 if (p, lbl) not in run.matched]
    summary = ConversionSummary(
        n_slices=n_total, n_written=run.n_written, n_skipped=len(run.skipped),
        n_written_with_issue=run.written_listed,
        class_pixels={name: int(run.class_pixels[i]) for i, name in enumerate(labels.SEG_NAMES)},
        n_gradings=len(relevant), n_gradings_matched=len(relevant) - len(unmatched),
        unmatched_gradings=unmatched, skipped=run.skipped)
    fileio.write_json(out / SUMMARY_JSON, summary.to_json(), indent=1)
    return summary


def format_summary(s: ConversionSummary) -> str:
    """Human-readable conversion summary (what ``main`` prints)."""
    lines = [f"slices: {s.n_slices} found, {s.n_written} converted "
             f"({s.n_written_with_issue} of them listed in issues.csv), {s.n_skipped} skipped",
             "pixels per class (written masks):"]
    width = max(len(n) for n in s.class_pixels)
    lines += [f"  {name:<{width}}  {n:>10d}" for name, n in s.class_pixels.items()]
    lines.append(f"graded discs matched to a level in >= 1 slice: {s.n_gradings_matched} "
                 f"of {s.n_gradings}")
    by_reason: dict[str, list[str]] = {}
    for u in s.unmatched_gradings:
        by_reason.setdefault(u["reason"], []).append(f"{u['patient']}/{u['ivd_label']}")
    for reason, items in by_reason.items():
        lines.append(f"  not matched ({len(items)}): {reason}: {', '.join(items)}")
    if s.skipped:
        lines.append("skipped slices:")
        lines += [f"  {x['patient']} slice {x['slice']}: {x['reason']}" for x in s.skipped]
    return "\n".join(lines)
