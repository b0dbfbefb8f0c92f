"""Mask -> per-disc measurements in millimetres, each in the disc's own frame (numpy + OpenCV).

Frames follow ``spoils_tf.geometry.frame`` (pixel ``(r, c)`` at ``(x, y) = (c * col_mm,
r * row_mm)``; ``u`` posterior, ``v`` superior). Each disc has its own frame, found by PCA of
its pixel centres in mm (``structures.pca_frame``). A vertebral body is measured in the frame
whose ``u`` is the mean of the ``u`` axes of the discs adjacent to it. Lengths are read from the
mask resampled in that frame (``spoils_tf.geometry.extents``), so measurements agree with
analytic shapes within a pixel.

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

The work is split by responsibility: ``structures`` (a class mask -> its main component and
its problems), ``frame`` (the frame convention and resampling in a frame), ``extents`` (a
structure's ends in a frame, the canal run along a disc's mid-line), ``signal`` (grey-value
references and the mixture fit); this module composes them, one named step per measurement,
and batches each step across the slice's structures (timings: ``benchmarks/bench_geometry.py``
and BUILD.md, "Geometry").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import numpy as np

from spoils_tf import labels
from spoils_tf.geometry.extents import (SAMPLE_STEP_FRACTION, VERTEBRA_STEP_FRACTION, Extent,
                                        canal_runs, measure_extents)
from spoils_tf.geometry.frame import Frame
from spoils_tf.geometry.reductions import array_mean, mean_of
from spoils_tf.geometry.signal import SignalResult, disc_signals, gmm_peak_gaps
from spoils_tf.geometry.structures import LabelledSlice, Structure, band_max_a, pca_frame

# === Constants ===
# A vertebral body's posterior margin is read within this distance (mm) of the disc's height
# band, in the disc frame (``disc_bulge_mm``).
BULGE_BAND_MM = 5.0

MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "level", "centroid_row", "centroid_col", "tilt_deg",
    "disc_area_mm2", "disc_height_mm", "disc_central_height_mm", "disc_anterior_height_mm",
    "disc_posterior_height_mm", "disc_width_mm", "disc_midpoint_width_mm",
    "vert_above_height_mm", "vert_above_width_mm", "vert_below_height_mm", "vert_below_width_mm",
    "disc_height_index", "canal_ap_diameter_mm", "disc_bulge_mm",
    "disc_si_mean", "csf_si_median", "vert_si_median", "disc_si_csf_ratio", "disc_si_vert_ratio",
    "disc_si_inner_outer_diff", "disc_si_gmm_gap", "reason",
)
_SIDES = ("above", "below")


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


# === Inputs ===
def _check_spacing(pixel_spacing_mm: Any) -> tuple[float, float]:
    """(row_mm, col_mm) as floats.

    Raises:
        ValueError: None, not two numbers, or not both positive and finite.
    """
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


def _check_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as an integer [H, W] array.

    Raises:
        ValueError: not 2-D, or not of an integer dtype.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W] class ids, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    return mask


def _grey_image(image: Optional[np.ndarray],
                shape: tuple[int, int]) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(the grey image C-contiguous [H, W] (first channel of [H, W, C]), the same array when it
    holds integers of at most 16 bits else None); (None, None) without an image. Grey values
    are read at the structures' pixels and converted to float32 there.

    Raises:
        ValueError: the image's [H, W] differs from ``shape``.
    """
    if image is None:
        return None, None
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., 0]
    # C order, so that grey values are read by flat index (img.ravel() is then a view).
    img = np.ascontiguousarray(img)
    if img.shape != shape:
        raise ValueError(f"image shape {img.shape} != mask shape {shape}")
    small_int = np.issubdtype(img.dtype, np.integer) and img.dtype.itemsize <= 2
    return img, (img if small_int else None)


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


# === The slice's structures, measured once ===
@dataclasses.dataclass(frozen=True)
class _Vertebra:
    """A vertebral body next to a measured disc: its frame and extent (None and a ``problem``
    code when it cannot be measured), and its mean height and width (mm, NaN when unmeasured)."""

    frame: Optional[Frame]
    extent: Optional[Extent]
    problem: str
    height_mm: float = float("nan")
    width_mm: float = float("nan")


@dataclasses.dataclass
class _SliceFit:
    """Everything measured once per slice, before each disc's row is written.

    Attributes:
        labelled: the slice's structures; spacing: (row, col) mm.
        discs: the disc classes present, top to bottom.
        disc_frames / disc_extents: per usable disc (no ``problem``), its frame and extent.
        vertebrae: per vertebral body next to a usable disc, its ``_Vertebra``.
        canal: the canal structure, or None when absent.
        canal_runs: per usable disc, ((a_start, a_end) mm, "") or (None, reason code).
        neighbours: per usable disc, its measurable vertebral bodies [(side, name)].
        margins: per (disc, side), the vertebral posterior margin's ``a`` (mm in the disc
            frame) or None.
        signals: per usable disc, ``signal.disc_signals``' result (empty without an image).
    """

    labelled: LabelledSlice
    spacing: tuple[float, float]
    discs: list[str]
    disc_frames: dict[str, Frame]
    disc_extents: dict[str, Extent]
    vertebrae: dict[str, _Vertebra]
    canal: Optional[Structure]
    canal_runs: dict[str, tuple[Optional[tuple[float, float]], str]]
    neighbours: dict[str, list[tuple[str, str]]]
    margins: dict[tuple[str, str], Optional[float]]
    signals: dict[str, SignalResult]


def _fit_slice(labelled: LabelledSlice, spacing: tuple[float, float],
               image: Optional[np.ndarray], image_int: Optional[np.ndarray]) -> _SliceFit:
    """Frames and extents of the discs and the vertebral bodies next to them, the canal runs,
    the vertebral margins and the signal columns, each step batched across the slice."""
    discs = [d for d in labels.DISC_NAMES if labelled.present(d)]
    disc_frames = {d: pca_frame(labelled.structure(d), spacing) for d in discs
                   if not labelled.structure(d).problem}
    canal_name = labels.SEG_NAMES[labels.CANAL_ID]
    canal = labelled.structure(canal_name) if labelled.present(canal_name) else None
    measured = list(disc_frames)
    disc_extents = dict(zip(measured, measure_extents(
        [labelled.structure(d) for d in measured], list(disc_frames.values()), spacing,
        SAMPLE_STEP_FRACTION * min(spacing), fit_edges=True)))
    vertebrae = _vertebral_bodies(labelled, disc_frames, spacing)
    runs = (dict(zip(measured, canal_runs(canal, list(disc_frames.values()), spacing,
                                          SAMPLE_STEP_FRACTION * min(spacing),
                                          labelled.image_shape)))
            if canal is not None and canal.n_pixels else {})
    neighbours = {d: [(side, v) for side, v in zip(_SIDES, labels.disc_neighbours(d))
                      if v is not None and not vertebrae[v].problem] for d in measured}
    margins = _vertebral_margins(labelled, disc_frames, disc_extents, neighbours, spacing)
    signals = dict(zip(measured, disc_signals(
        image, image_int, [(labelled.structure(d), disc_frames[d], disc_extents[d],
                            [labelled.structure(v) for _, v in neighbours[d]]) for d in measured],
        canal, spacing))) if image is not None else {}
    return _SliceFit(labelled, spacing, discs, disc_frames, disc_extents, vertebrae, canal, runs,
                     neighbours, margins, signals)


def _vertebral_bodies(labelled: LabelledSlice, disc_frames: dict[str, Frame],
                      spacing: tuple[float, float]) -> dict[str, _Vertebra]:
    """Every vertebral body next to a disc with a frame: its frame (centred on its pixel
    centres, ``u`` the mean of the adjacent discs' ``u``) and extent, all extents at once."""
    vertebrae: dict[str, _Vertebra] = {}
    for v in labels.VERTEBRA_NAMES:
        us = [disc_frames[d].u for d in _VERTEBRA_DISCS[v] if d in disc_frames]
        if not us:
            continue
        if not labelled.present(v):
            vertebrae[v] = _Vertebra(None, None, "missing")
        elif labelled.structure(v).problem:
            vertebrae[v] = _Vertebra(None, None, labelled.structure(v).problem)
        else:
            x, y = labelled.structure(v).x_y_mm(spacing)
            centre = np.array([array_mean(x), array_mean(y)])
            vertebrae[v] = _Vertebra(Frame.from_u(centre, np.mean(us, axis=0)), None, "")
    good = [v for v, vert in vertebrae.items() if vert.frame is not None]
    extents = measure_extents([labelled.structure(v) for v in good],
                              [vertebrae[v].frame for v in good], spacing,
                              VERTEBRA_STEP_FRACTION * min(spacing), fit_edges=False)
    for v, extent in zip(good, extents):
        vertebrae[v] = _Vertebra(vertebrae[v].frame, extent, "", extent.mean_h(),
                                 extent.mean_width())
    return vertebrae


def _vertebral_margins(labelled: LabelledSlice, disc_frames: dict[str, Frame],
                       disc_extents: dict[str, Extent], neighbours: dict[str, list[tuple[str, str]]],
                       spacing: tuple[float, float]) -> dict[tuple[str, str], Optional[float]]:
    """Per (disc, side), the largest ``a`` (mm along the disc's u) of the vertebral body's pixel
    centres within ``BULGE_BAND_MM`` of the disc's height band on that side, or None."""
    keys: list[tuple[str, str]] = []
    items: list[tuple[Structure, Frame, float, float]] = []
    for d, sides in neighbours.items():
        ext = disc_extents[d]
        half = 0.5 * (ext.b_sup - ext.b_inf) + BULGE_BAND_MM
        for side, v in sides:
            keys.append((d, side))
            items.append((labelled.structure(v), disc_frames[d], 0.0, half) if side == "above"
                         else (labelled.structure(v), disc_frames[d], -half, 0.0))
    return dict(zip(keys, band_max_a(items, spacing)))


# === One disc's row ===
def _empty_row(level: str) -> dict[str, Any]:
    row: dict[str, Any] = {k: float("nan") for k in MEASUREMENT_COLUMNS}
    row["level"] = level
    row["reason"] = ""
    return row


_GmmInput = tuple[np.ndarray, float]  # (grey values, csf_si_median) for the mixture fit


def _disc_result(disc: str, fit: _SliceFit) -> tuple[DiscResult, Optional[_GmmInput]]:
    """One disc's row and geometry, and its mixture-fit input (or None); the fit is run for all
    discs at once by the caller."""
    row = _empty_row(disc)
    reasons = list(fit.labelled.reasons)
    s = fit.labelled.structure(disc)
    if s.specks:
        reasons.append("disc_specks_dropped")
    row["centroid_row"] = float(array_mean(s.rows))
    row["centroid_col"] = float(array_mean(s.cols))
    if s.problem:
        reasons.append(f"disc_{s.problem}")
        row["reason"] = ";".join(reasons)
        return DiscResult(row, None), None
    frame, extent = fit.disc_frames[disc], fit.disc_extents[disc]
    _disc_columns(row, s, frame, extent, fit.spacing)
    vert_frames, vert_extents = _vertebra_columns(row, reasons, disc, fit)
    _bulge_column(row, reasons, disc, vert_frames, fit)
    canal_run = _canal_column(row, reasons, disc, fit)
    gmm_input = _signal_columns(row, reasons, disc, fit)
    row["reason"] = ";".join(reasons)
    geometry = DiscGeometry(frame, extent, vert_frames, vert_extents, canal_run, fit.spacing)
    return DiscResult(row, geometry), gmm_input


def _disc_columns(row: dict[str, Any], s: Structure, frame: Frame, extent: Extent,
                  spacing: tuple[float, float]) -> None:
    """tilt_deg, disc_area_mm2 and the disc heights and widths (module docstring)."""
    row["tilt_deg"] = frame.tilt_deg
    row["disc_area_mm2"] = s.n_pixels * spacing[0] * spacing[1]
    row["disc_height_mm"] = extent.mean_h()
    row["disc_central_height_mm"] = extent.h_at(0.5)
    row["disc_anterior_height_mm"] = extent.h_at(0.1)
    row["disc_posterior_height_mm"] = extent.h_at(0.9)
    row["disc_width_mm"] = row["disc_area_mm2"] / row["disc_height_mm"]
    row["disc_midpoint_width_mm"] = extent.chord_at_b(0.0)


def _vertebra_columns(row: dict[str, Any], reasons: list[str], disc: str,
                      fit: _SliceFit) -> tuple[dict[str, Frame], dict[str, Extent]]:
    """vert_{above,below}_{height,width}_mm and disc_height_index; returns the measured
    vertebral bodies' frames and extents by side."""
    vert_frames: dict[str, Frame] = {}
    vert_extents: dict[str, Extent] = {}
    heights = []
    for side, name in zip(_SIDES, labels.disc_neighbours(disc)):
        if name is None:
            reasons.append(f"vert_{side}_not_in_scheme")
            continue
        vert = fit.vertebrae[name]
        if vert.problem:
            reasons.append(f"vert_{side}_{vert.problem}")
            continue
        if fit.labelled.structure(name).specks:
            reasons.append(f"vert_{side}_extra_blobs_ignored")
        vert_frames[side], vert_extents[side] = vert.frame, vert.extent
        row[f"vert_{side}_height_mm"], row[f"vert_{side}_width_mm"] = (vert.height_mm,
                                                                       vert.width_mm)
        heights.append(vert.height_mm)
    if heights:
        row["disc_height_index"] = row["disc_height_mm"] / mean_of(heights)
    else:
        reasons.append("dhi_no_vertebra")
    return vert_frames, vert_extents


def _bulge_column(row: dict[str, Any], reasons: list[str], disc: str,
                  vert_frames: dict[str, Frame], fit: _SliceFit) -> None:
    """disc_bulge_mm: the posterior disc end beyond the mean vertebral posterior margin."""
    frame, spacing = fit.disc_frames[disc], fit.spacing
    # Half a pixel along u: pixel centres lie on average half a pixel inside the edge.
    half_px_u = 0.5 * (abs(frame.u[0]) * spacing[1] + abs(frame.u[1]) * spacing[0])
    margins = [fit.margins[(disc, side)] + half_px_u for side in _SIDES
               if side in vert_frames and fit.margins[(disc, side)] is not None]
    if margins:
        row["disc_bulge_mm"] = fit.disc_extents[disc].a_post - mean_of(margins)
    else:
        reasons.append("bulge_no_vertebra")


def _canal_column(row: dict[str, Any], reasons: list[str], disc: str,
                  fit: _SliceFit) -> Optional[tuple[float, float]]:
    """canal_ap_diameter_mm: the first canal run along the disc's mid-line; returns the run
    (a_start, a_end) mm, or None."""
    if fit.canal is None or fit.canal.n_pixels == 0:
        reasons.append("canal_missing")
        return None
    canal_run, why = fit.canal_runs[disc]
    if canal_run is None:
        reasons.append(why)
    else:
        row["canal_ap_diameter_mm"] = canal_run[1] - canal_run[0]
    return canal_run


def _signal_columns(row: dict[str, Any], reasons: list[str], disc: str,
                    fit: _SliceFit) -> Optional[_GmmInput]:
    """The signal-intensity columns but disc_si_gmm_gap; returns the mixture-fit input, or
    None (no image, or too few pixels)."""
    if disc not in fit.signals:
        reasons.append("no_image")
        return None
    values, why, gmm_values = fit.signals[disc]
    row.update(values)
    reasons.extend(why)
    return None if gmm_values is None else (gmm_values, values["csf_si_median"])


# === The slice ===
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
    mask = _check_mask(mask)
    grey, grey_int = _grey_image(image, mask.shape)
    # 1. Each class's main component; the frames and extents of the discs and their vertebral
    #    bodies, the canal runs, the vertebral margins and the grey values, slice-wide.
    fit = _fit_slice(LabelledSlice(mask), spacing, grey, grey_int)
    # 2. One row per disc present.
    results: list[DiscResult] = []
    gmm_rows: list[tuple[dict[str, Any], _GmmInput]] = []
    for disc in fit.discs:
        result, gmm_input = _disc_result(disc, fit)
        results.append(result)
        if gmm_input is not None:
            gmm_rows.append((result.values, gmm_input))
    # 3. The grey-value mixture of every disc, fitted at once.
    if gmm_rows:
        gaps = gmm_peak_gaps([values for _, (values, _) in gmm_rows])
        for (row, (_, csf)), gap in zip(gmm_rows, gaps):
            row["disc_si_gmm_gap"] = gap / csf
    return results


def measure_slice(mask: np.ndarray, pixel_spacing_mm: Sequence[float],
                  image: Optional[np.ndarray] = None) -> list[dict[str, Any]]:
    """Like ``measure_slice_detailed`` but returns only the rows (dicts keyed by
    ``MEASUREMENT_COLUMNS``): NaN where a measurement could not be made, with the codes in
    ``reason``."""
    return [r.values for r in measure_slice_detailed(mask, pixel_spacing_mm, image)]
