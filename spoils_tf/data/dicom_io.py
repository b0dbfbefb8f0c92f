"""Sagittal MRI input for inference: a DICOM file, a DICOM series folder or an MHA/NIfTI volume.

``load_series(path)`` returns a :class:`SagittalSeries`: the mid-sagittal slice(s) as
``uint8 [S, H, W]`` in the project's display orientation, their pixel spacing and slice
geometry, and only technical header fields. It never holds a pydicom dataset, the input
path, or any patient field (name, ID, birth date, ...): nothing read here can leak PHI into a
report or a log. ``SagittalSeries.deidentified_summary()`` is the dict meant for reports.

Geometry (DICOM PS3.3 C.7.6.2, patient coordinates LPS: +x left, +y posterior, +z head):

* ``ImageOrientationPatient`` holds two direction cosines: the *row direction* (the direction
  of increasing column index, i.e. along a row) and the *column direction* (increasing row
  index). The slice normal is their cross product.
* **Sagittal check**: the slice normal must lie within ``SAGITTAL_TOLERANCE_DEG`` (30 degrees)
  of the patient's left-right (x) axis. Otherwise ``ValueError`` names the plane that was
  found (the patient axis the normal is closest to: x sagittal, y coronal, z axial; "oblique"
  when that axis is more than 30 degrees away too). 30 degrees admits the usual oblique
  sagittal planning (a few to ~20 degrees) and rejects every axial/coronal acquisition.
* **Series order**: files are sorted by ``ImagePositionPatient`` projected on the slice
  normal (``InstanceNumber`` when a file lacks the position; noted).
* **Volumes** (``.mha``, ``.mhd``, ``.nii``, ``.nii.gz``, ``.nrrd``; SimpleITK, LPS): the slice
  axis is the index axis with the largest spacing (the through-plane axis of a multi-slice
  acquisition) when it exceeds the others by more than 10 %; for a near-isotropic volume it is
  the index axis closest to left-right. The same 30-degree check applies to that axis.
* **Display orientation** (that of SPIDER and the training data): rows run superior ->
  inferior and columns anterior -> posterior. In-plane axes are transposed / flipped to get
  there (recorded in ``reorientation``); ``pixel_spacing_mm`` follows the transpose.
* **Mid-sagittal slice(s)**: the middle index ``(N - 1) // 2`` of the sorted stack, plus
  ``neighbours`` slices on each side (clipped to the stack). The middle of the stack is the
  mid-sagittal plane when the acquisition is centred on the spine, as sagittal lumbar
  protocols are; ``slice_indices`` says which slices were taken.
* ``pixel_spacing_mm = (row_mm, col_mm)`` from ``PixelSpacing`` (DICOM order: the distance
  between rows first). ``slice_spacing_mm`` is the median distance between neighbouring
  slice positions along the normal (else ``SpacingBetweenSlices``, else ``SliceThickness``,
  else NaN); ``slice_thickness_mm`` is ``SliceThickness`` (NaN for volume formats, which do
  not store it).

Grey levels: stored values -> ``x * RescaleSlope + RescaleIntercept`` (modality LUT; 1 and 0
when absent) -> a window to ``uint8`` -> ``MONOCHROME1`` inverted (255 - y):

* ``"percentile"`` (default): linear from the 0.5th to the 99.5th percentile of the selected
  slices together (clipped). Robust to a few hot voxels and independent of header quirks, so a
  DICOM series and the same data as MHA give the same grey levels; close to the per-image
  min-max rescaling of the training PNGs (``spoils_tf.data.images``).
* ``"header"``: the first ``WindowCenter``/``WindowWidth`` pair with the DICOM linear VOI
  function (PS3.3 C.11.2.1.2.1); ``ValueError`` when the header has none.
* ``"minmax"``: linear from the minimum to the maximum.

Mixed folders: the files are grouped into stacks: by ``SeriesInstanceUID`` and, within a
series, by ``ImageOrientationPatient`` (a localizer series holds three planes). Of the sagittal
stacks the T2-weighted one is used (weighting by ``spoils_tf.data.mr_weighting``), then the
one with the most files, then the latest series (:func:`choose_stack_rank`); every stack is
listed in ``notes`` by series number, size, plane and weighting (never by UID or description).
A folder with no sagittal stack raises ``SpoilsError`` listing what it holds. Files that are
not DICOM are skipped and counted in ``notes``; a file repeating another's
``SOPInstanceUID`` (a copy) is skipped and counted; gaps between slice positions wider than
``MISSING_GAP_FACTOR`` times the median are noted as missing slices. Multi-frame (enhanced)
DICOM and colour DICOM (``SamplesPerPixel`` > 1) are refused.

Weighting: ``SagittalSeries.weighting`` is ``mr_weighting.from_dataset`` on the first file of
the stack (EchoTime, RepetitionTime, InversionTime, SeriesDescription); for a volume, the
same rule on a BIDS sidecar ``<stem>.json`` next to it (as ``dcm2niix`` writes: times in
seconds), else ``"unknown"``.

Every refusal of input is a :class:`spoils_tf.errors.SpoilsError` (a ``ValueError``) naming
the file and the field. Before any pixel is decoded: the pixel spacing (``PixelSpacing``, or
the volume header's in-plane spacing) must pass ``spoils_tf.data.images.check_pixel_spacing``
(0.1-5 mm), and a slice (``Rows`` x ``Columns``, or the volume's in-plane size) must not
exceed ``spoils_tf.data.images.MAX_IMAGE_PIXELS``. A volume header's spacing must be positive
on every axis (for NIfTI the stored ``pixdim``, which SimpleITK would read as 1 mm when 0).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import pathlib
import struct
from typing import Any, Optional, Sequence

import numpy as np

from spoils_tf import errors
from spoils_tf.data import images as images_lib
from spoils_tf.data import mr_weighting
from spoils_tf.errors import SpoilsError

SAGITTAL_TOLERANCE_DEG: float = 30.0
WINDOW_METHODS: tuple[str, ...] = ("percentile", "header", "minmax")
PERCENTILE_WINDOW: tuple[float, float] = (0.5, 99.5)
VOLUME_SUFFIXES: tuple[str, ...] = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")
# Largest / next-largest spacing ratio above which the coarse axis is the slice axis.
ANISOTROPY_RATIO: float = 1.1
# A gap between neighbouring slice positions above this multiple of the median gap means
# slices are missing (noted; the files present are used).
MISSING_GAP_FACTOR: float = 1.5

# LPS patient axes: index -> (letter of +direction, letter of -direction).
_AXIS_LETTERS: tuple[tuple[str, str], ...] = (("L", "R"), ("P", "A"), ("H", "F"))
_PLANE_OF_AXIS: tuple[str, ...] = ("sagittal", "coronal", "axial")
# Technical header fields copied into SagittalSeries.technical (keyword -> output key).
_TECHNICAL_FIELDS: dict[str, str] = {
        "Modality": "modality",
        "Manufacturer": "manufacturer",
        "ManufacturerModelName": "manufacturer_model",
        "MagneticFieldStrength": "field_strength_T",
        "EchoTime": "echo_time_ms",
        "RepetitionTime": "repetition_time_ms",
        "InversionTime": "inversion_time_ms",
        "SeriesNumber": "series_number",
}


@dataclasses.dataclass(frozen=True, repr=False)
class SagittalSeries:
    """Mid-sagittal slice(s) of one series, with geometry and no patient information.

    Attributes:
        images: uint8 [S, H, W] in display orientation (rows superior -> inferior, columns
            anterior -> posterior).
        slice_indices: index of each image in the series sorted along the slice normal.
        n_slices_total: number of slices in the series.
        pixel_spacing_mm: (row_mm, col_mm) of ``images``.
        slice_thickness_mm: nominal slice thickness in mm (NaN when unknown).
        slice_spacing_mm: centre-to-centre slice distance in mm (NaN when unknown).
        orientation: ``"sagittal"`` (the only plane accepted).
        normal_angle_deg: angle between the slice normal and the left-right axis, degrees.
        input_axes: patient directions of the input's (column index, row index, slice normal)
            axes in DICOM letters L/R, A/P, H/F, e.g. ``"PFL"`` (before reorientation).
        reorientation: operations applied to reach display orientation, in order
            (``"transpose"``, ``"flip_rows"``, ``"flip_cols"``).
        window: how grey levels were mapped: ``{"method", "low", "high"}`` in rescaled units.
        source_kind: ``"dicom_file" | "dicom_series" | "volume"``.
        technical: technical header fields only (modality, manufacturer, field strength, ...).
        notes: what was decided on the way (ignored series, skipped files, fallbacks).
        weighting: the MR contrast, one of ``mr_weighting.WEIGHTINGS`` (``"unknown"`` when
            the header does not say: volumes, DICOM without timings or description).
        weighting_evidence: why (header values and tokens, never the description's text).
    """

    images: np.ndarray
    slice_indices: tuple[int, ...]
    n_slices_total: int
    pixel_spacing_mm: tuple[float, float]
    slice_thickness_mm: float
    slice_spacing_mm: float
    orientation: str
    normal_angle_deg: float
    input_axes: str
    reorientation: tuple[str, ...]
    window: dict[str, Any]
    source_kind: str
    technical: dict[str, Any]
    notes: tuple[str, ...] = ()
    weighting: str = "unknown"
    weighting_evidence: tuple[str, ...] = ()

    def deidentified_summary(self) -> dict[str, Any]:
        """Technical fields only, JSON-serialisable, for reports and logs."""
        return {
                "source_kind": self.source_kind,
                "orientation": self.orientation,
                "normal_angle_deg": round(float(self.normal_angle_deg), 3),
                "input_axes": self.input_axes,
                "reorientation": list(self.reorientation),
                "image_shape": list(self.images.shape),
                "n_slices_total": int(self.n_slices_total),
                "slice_indices": [int(i) for i in self.slice_indices],
                "pixel_spacing_mm": [float(v) for v in self.pixel_spacing_mm],
                "slice_thickness_mm": _json_float(self.slice_thickness_mm),
                "slice_spacing_mm": _json_float(self.slice_spacing_mm),
                "window": dict(self.window),
                "technical": dict(self.technical),
                "notes": list(self.notes),
                "weighting": self.weighting,
                "weighting_evidence": list(self.weighting_evidence),
        }

    def __repr__(self) -> str:
        s = self.deidentified_summary()
        return (f"SagittalSeries(images=uint8{tuple(self.images.shape)}, "
                f"slice_indices={s['slice_indices']}, n_slices_total={self.n_slices_total}, "
                f"pixel_spacing_mm={s['pixel_spacing_mm']}, slice_thickness_mm="
                f"{s['slice_thickness_mm']}, slice_spacing_mm={s['slice_spacing_mm']}, "
                f"orientation={self.orientation!r}, normal_angle_deg={s['normal_angle_deg']}, "
                f"input_axes={self.input_axes!r}, source_kind={self.source_kind!r})")


def _json_float(v: float) -> Optional[float]:
    return None if v is None or not math.isfinite(float(v)) else float(v)


# === Geometry ===
def axis_letter(direction: Sequence[float]) -> str:
    """DICOM letter (L/R, A/P, H/F) of the patient axis closest to an LPS ``direction``."""
    d = np.asarray(direction, np.float64)
    i = int(np.argmax(np.abs(d)))
    return _AXIS_LETTERS[i][0 if d[i] >= 0 else 1]


def classify_plane(normal: Sequence[float]) -> tuple[str, float]:
    """``(plane, angle to left-right in degrees)`` of a slice normal (LPS, any length).

    ``plane`` is ``"sagittal" | "coronal" | "axial"`` by the patient axis closest to the
    normal, prefixed ``"oblique "`` when that axis is more than ``SAGITTAL_TOLERANCE_DEG`` away.

    Raises:
        ValueError: a zero normal (parallel or zero direction cosines).
    """
    n = np.asarray(normal, np.float64)
    norm = float(np.linalg.norm(n))
    if not norm > 1e-6:
        raise ValueError(f"slice normal {n.tolist()} has zero length; expected two independent "
                         "direction cosines")
    n = n / norm
    angles = np.degrees(np.arccos(np.clip(np.abs(n), 0.0, 1.0)))
    i = int(np.argmin(angles))
    plane = _PLANE_OF_AXIS[i]
    if angles[i] > SAGITTAL_TOLERANCE_DEG:
        plane = f"oblique {plane}"
    return plane, float(angles[0])


def check_sagittal(normal: Sequence[float], source: str, field: str) -> float:
    """Angle (degrees) of ``normal`` to the left-right axis.

    Raises:
        SpoilsError: the angle exceeds ``SAGITTAL_TOLERANCE_DEG``; the message names the
            plane found, ``source`` and ``field``.
    """
    plane, angle = classify_plane(normal)
    if angle > SAGITTAL_TOLERANCE_DEG:
        raise SpoilsError(
                source, None, f"not a sagittal series: {field} gives a slice normal "
                f"{np.round(np.asarray(normal, float), 3).tolist()} {angle:.1f} degrees from the "
                f"patient's left-right axis, i.e. a {plane} acquisition; expected sagittal "
                f"(normal within {SAGITTAL_TOLERANCE_DEG:g} degrees of left-right)")
    return angle


def to_display_orientation(volume: np.ndarray, row_dir: Sequence[float], col_dir: Sequence[float],
                           spacing_mm: tuple[float, float]
                           ) -> tuple[np.ndarray, tuple[float, float], tuple[str, ...]]:
    """Transposes / flips ``[S, H, W]`` slices so rows run superior -> inferior and columns
    anterior -> posterior.

    Args:
        volume: [S, H, W] any dtype.
        row_dir: LPS direction of increasing row index (DICOM "column direction cosine").
        col_dir: LPS direction of increasing column index (DICOM "row direction cosine").
        spacing_mm: (row_mm, col_mm).

    Returns:
        (volume [S, H', W'], (row_mm, col_mm) after the transpose, operations applied).
    """
    r, c = np.asarray(row_dir, np.float64), np.asarray(col_dir, np.float64)
    ops: list[str] = []
    if abs(c[2]) > abs(r[2]):     # the head-foot axis runs along the columns: swap
        volume = np.swapaxes(volume, 1, 2)
        r, c = c, r
        spacing_mm = (spacing_mm[1], spacing_mm[0])
        ops.append("transpose")
    if r[2] > 0:                  # rows run towards the head (+z): flip to head at the top
        volume = volume[:, ::-1, :]
        ops.append("flip_rows")
    if c[1] < 0:                  # columns run anterior (-y): flip to anterior on the left
        volume = volume[:, :, ::-1]
        ops.append("flip_cols")
    return np.ascontiguousarray(volume), spacing_mm, tuple(ops)


def middle_indices(n_slices: int, neighbours: int = 0) -> list[int]:
    """``(n - 1) // 2`` and up to ``neighbours`` indices either side, clipped to 0..n-1.

    Raises:
        ValueError: ``n_slices < 1`` or ``neighbours < 0``.
    """
    if n_slices < 1:
        raise ValueError(f"a series needs at least one slice, got {n_slices}")
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours}")
    mid = (n_slices - 1) // 2
    return list(range(max(0, mid - neighbours), min(n_slices, mid + neighbours + 1)))


# === Grey levels ===
def dicom_linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI LUT (PS3.3 C.11.2.1.2.1) to uint8 0..255.

    Raises:
        ValueError: ``width < 1``.
    """
    if width < 1:
        raise ValueError(f"WindowWidth (0028,1051) {width}; expected >= 1")
    x = np.asarray(x, np.float64)
    y = ((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0 if width > 1 else \
        np.where(x > center - 0.5, 255.0, 0.0)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def window_to_uint8(values: np.ndarray, method: str = "percentile",
                    header_window: Optional[tuple[float, float]] = None,
                    source: str = "image") -> tuple[np.ndarray, dict[str, Any]]:
    """Maps rescaled values ``float [S, H, W]`` to ``uint8`` (methods in the module docstring).

    Returns:
        (uint8 [S, H, W], ``{"method", "low", "high"}``; for ``"header"`` also
        ``"center"``, ``"width"``).

    Raises:
        ValueError: unknown method; ``"header"`` without a header window; non-finite values.
    """
    x = np.asarray(values, np.float64)
    if not np.all(np.isfinite(x)):
        raise SpoilsError(source, None, "pixel values contain NaN or infinity; expected finite "
                                        "numbers")
    if method == "header":
        if header_window is None:
            raise SpoilsError(source, "WindowCenter (0028,1050)",
                              "window 'header' requested but WindowCenter (0028,1050) / "
                              "WindowWidth (0028,1051) are missing; use 'percentile' or 'minmax'")
        center, width = header_window
        return dicom_linear_window(x, center, width), {
                "method": "header", "center": float(center), "width": float(width),
                "low": float(center - 0.5 - (width - 1) / 2), "high": float(center - 0.5 + (width - 1) / 2)}
    if method == "percentile":
        lo, hi = (float(v) for v in np.percentile(x, PERCENTILE_WINDOW))
    elif method == "minmax":
        lo, hi = float(x.min()), float(x.max())
    else:
        raise ValueError(f"window method {method!r}; expected one of {WINDOW_METHODS}")
    if hi <= lo:
        out = np.zeros(x.shape, np.uint8)
    else:
        out = np.clip(np.rint((x - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    return out, {"method": method, "low": lo, "high": hi}


# === DICOM ===
def _read_header(path: pathlib.Path):
    """pydicom header without pixels, or None when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
        return None


def _floats(ds, keyword: str, n: int, path: pathlib.Path, tag: str) -> Optional[np.ndarray]:
    """``n`` floats of a multi-valued field, None when absent.

    Raises:
        SpoilsError: present but not ``n`` finite numbers.
    """
    from pydicom.multival import MultiValue
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        arr = np.asarray([float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        arr = np.asarray([])
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise SpoilsError(path, f"{keyword} {tag}", f"{value!r:.80}; expected {n} numbers")
    return arr


def _float_or_nan(ds, keyword: str) -> float:
    """The (first) value of a numeric field, NaN when absent or not a number."""
    from pydicom.multival import MultiValue
    value = ds.get(keyword)
    try:
        v = float(value[0] if isinstance(value, (list, tuple, MultiValue)) else value)
    except (TypeError, ValueError, IndexError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def _technical(ds) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keyword, key in _TECHNICAL_FIELDS.items():
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if isinstance(value, (int, float)):    # pydicom IS / DSfloat subclass these
            out[key] = int(value) if key == "series_number" else float(value)
        else:
            out[key] = str(value)
    return out


@dataclasses.dataclass
class _Slice:
    path: pathlib.Path
    ds: Any
    iop: np.ndarray
    normal: np.ndarray
    position: Optional[float]
    instance: Optional[int]


def _slice_of(path: pathlib.Path, ds) -> _Slice:
    """Orientation of one DICOM header.

    Raises:
        SpoilsError: multi-frame, colour (``SamplesPerPixel`` > 1), no/invalid
            ImageOrientationPatient.
    """
    samples = ds.get("SamplesPerPixel")
    if samples not in (None, "") and int(samples) != 1:
        raise SpoilsError(path, "SamplesPerPixel (0028,0002)",
                          f"{int(samples)} samples per pixel (PhotometricInterpretation "
                          f"{str(ds.get('PhotometricInterpretation', '?'))}): a colour image "
                          "(a screenshot or secondary capture?); expected a greyscale MR slice "
                          "(SamplesPerPixel 1, MONOCHROME1/2)")
    frames = ds.get("NumberOfFrames")
    if frames is not None and int(frames) > 1:
        raise SpoilsError(path, "NumberOfFrames (0028,0008)",
                          f"multi-frame (enhanced) DICOM with NumberOfFrames={int(frames)} is not "
                          "supported; expected one slice per file (classic DICOM)")
    iop = _floats(ds, "ImageOrientationPatient", 6, path, "(0020,0037)")
    if iop is None:
        raise SpoilsError(path, "ImageOrientationPatient (0020,0037)",
                          "missing; it is needed to check that the series is sagittal")
    normal = np.cross(iop[:3], iop[3:])
    ipp = _floats(ds, "ImagePositionPatient", 3, path, "(0020,0032)")
    position = float(np.dot(ipp, normal)) if ipp is not None else None
    instance = ds.get("InstanceNumber")
    return _Slice(path, ds, iop, normal, position,
                  int(instance) if instance not in (None, "") else None)


def _series_plane(slices: Sequence[_Slice]) -> tuple[str, float]:
    try:
        return classify_plane(slices[0].normal)
    except ValueError:
        return "unknown", float("nan")


@dataclasses.dataclass
class _Stack:
    """The slices of one series that share one orientation (a localizer series holds three)."""
    slices: list[_Slice]
    series_number: Optional[int]
    plane: str
    weighting: str
    stack: int = 0            # index among the stacks of its series (0 when it is the only one)

    def describe(self) -> str:
        number = "?" if self.series_number is None else self.series_number
        part = f", stack {self.stack + 1}" if self.stack else ""
        return (f"series #{number}{part} ({len(self.slices)} files, {self.plane}, "
                f"{self.weighting})")


def _stacks_of(headers: list[tuple[pathlib.Path, Any]], notes: list[str]
               ) -> tuple[list[_Stack], list[tuple[pathlib.Path, str]]]:
    """The folder's slices grouped by ``SeriesInstanceUID`` and, within a series, by
    ``ImageOrientationPatient`` (to within 1e-3); a file repeating a ``SOPInstanceUID`` already
    seen is dropped (noted). Returns the stacks and, for each file without a usable
    orientation, (file, its field and reason)."""
    by_series: dict[str, list[list[_Slice]]] = {}
    seen_sop: set[str] = set()
    bad: list[tuple[pathlib.Path, str]] = []
    duplicates = 0
    for p, ds in headers:
        sop = str(ds.get("SOPInstanceUID", "")) or None
        if sop is not None and sop in seen_sop:
            duplicates += 1
            continue
        try:
            sl = _slice_of(p, ds)
        except SpoilsError as e:
            bad.append((p, errors.format_message(None, e.field, e.reason)))
            continue
        if sop is not None:
            seen_sop.add(sop)
        stacks = by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), [])
        for stack in stacks:
            if np.max(np.abs(stack[0].iop - sl.iop)) <= 1e-3:
                stack.append(sl)
                break
        else:
            stacks.append([sl])
    if duplicates:
        notes.append(f"{duplicates} file(s) repeating the SOPInstanceUID (0008,0018) of another "
                     "file (the same image copied twice) were skipped")
    out = []
    for stacks in by_series.values():
        for i, slices in enumerate(stacks):
            number = slices[0].ds.get("SeriesNumber")
            weighting, _ = mr_weighting.from_dataset(slices[0].ds)
            out.append(_Stack(slices, int(number) if number not in (None, "") else None,
                              _series_plane(slices)[0], weighting, i if len(stacks) > 1 else 0))
    return out, bad


def choose_stack_rank(weighting: str, n_files: int, series_number: Optional[int]
                      ) -> tuple[int, int, int]:
    """Sort key of a sagittal stack, smallest first: T2 before unknown weighting before the
    rest (T1, PD, STIR, FLAIR), then more files, then the higher ``SeriesNumber`` (a series
    repeated in one study is repeated because the first was not good enough)."""
    rank = {"T2": 0, "unknown": 1}.get(weighting, 2)
    return rank, -int(n_files), -(series_number if series_number is not None else -1)


def _group_series(folder: pathlib.Path) -> tuple[list[_Slice], list[str]]:
    """The slices of the stack to use from a folder, and notes.

    A folder may hold several series, and a series several stacks (orientations). Of the
    sagittal stacks, the first by :func:`choose_stack_rank` is used: the T2-weighted one
    (``mr_weighting.from_dataset``), the largest, the latest series; the others are listed in
    the notes by series number, size, plane and weighting (never by UID or description).

    Raises:
        SpoilsError: no DICOM file; no sagittal stack (the message lists the stacks found).
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    headers, skipped = [], 0
    for p in files:
        ds = _read_header(p)
        if ds is None or ds.get("Rows") is None:    # not DICOM, or no image (DICOMDIR, SR)
            skipped += 1
            continue
        headers.append((p, ds))
    if not headers:
        raise SpoilsError(folder, None, f"no DICOM files found ({len(files)} files checked); expected "
                         "a folder holding one sagittal DICOM series")
    notes: list[str] = []
    if skipped:
        notes.append(f"{skipped} non-DICOM or non-image file(s) in the folder were skipped")
    stacks, bad = _stacks_of(headers, notes)
    if not stacks:
        raise SpoilsError(folder, None, "no usable DICOM slice: " + "; ".join(
                f"{f.name}: {why}" for f, why in bad[:3]))
    if bad:
        notes.append(f"{len(bad)} DICOM file(s) without usable orientation were skipped "
                     f"(first: {bad[0][1]})")   # field and reason only: no file names
    summary = ", ".join(st.describe() for st in stacks)
    sagittal = [st for st in stacks if st.plane == "sagittal"]
    if not sagittal:
        raise SpoilsError(folder, None, f"not a sagittal series: the folder holds {summary}; expected "
                         f"a sagittal series (slice normal within {SAGITTAL_TOLERANCE_DEG:g} "
                         "degrees of left-right)")
    sagittal.sort(key=lambda st: choose_stack_rank(st.weighting, len(st.slices),
                                                   st.series_number))
    chosen = sagittal[0]
    if len(stacks) > 1:
        notes.append(f"the folder holds {len(stacks)} stacks: {summary}; used "
                     f"{chosen.describe()} (sagittal; T2 first, then the most files, then the "
                     "latest series)")
    return chosen.slices, notes


def _sort_slices(slices: list[_Slice], source: str) -> tuple[list[_Slice], float, list[str]]:
    """Sorted along the normal; (slices, median spacing mm or NaN, notes).

    Raises:
        ValueError: differing orientations, duplicate positions or no order key.
    """
    notes: list[str] = []
    iop0 = slices[0].iop
    for s in slices[1:]:
        if np.max(np.abs(s.iop - iop0)) > 1e-3:
            raise SpoilsError(source, None, f"files of one series have different ImageOrientationPatient "
                             f"(0020,0037) ({s.path.name}); expected one orientation per series")
    if len(slices) == 1:
        return slices, float("nan"), notes
    if all(s.position is not None for s in slices):
        slices = sorted(slices, key=lambda s: s.position)
        positions = np.asarray([s.position for s in slices])
        gaps = np.diff(positions) / np.linalg.norm(slices[0].normal)
        if np.any(gaps < 1e-3):
            raise SpoilsError(source, None, f"{int(np.sum(gaps < 1e-3))} pair(s) of files share one "
                             "ImagePositionPatient (0020,0032) (several echoes or repeats?); "
                             "expected one slice per position")
        median = float(np.median(gaps))
        wide = gaps > MISSING_GAP_FACTOR * median
        if np.any(wide):
            missing = int(np.sum(np.rint(gaps[wide] / median) - 1))
            notes.append(f"about {missing} slice(s) missing: {int(np.sum(wide))} gap(s) of "
                         f"{', '.join(f'{g:.2f}' for g in gaps[wide][:3])} mm between "
                         f"neighbouring ImagePositionPatient (0020,0032) where the median is "
                         f"{median:.2f} mm; the middle slice is the middle of the files present")
        return slices, median, notes
    if all(s.instance is not None for s in slices):
        notes.append("ImagePositionPatient missing: slices ordered by InstanceNumber")
        return sorted(slices, key=lambda s: s.instance), float("nan"), notes
    raise SpoilsError(source, None, "cannot order the slices: ImagePositionPatient (0020,0032) and "
                     "InstanceNumber (0020,0013) are missing")


def check_decodable(ds, path: pathlib.Path) -> None:
    """Refuses a compressed transfer syntax for which no pixel decoder is installed, from the
    header alone (before any pixel is decoded).

    Raises:
        SpoilsError: naming the file, ``TransferSyntaxUID (0002,0010)``, the syntax and the
            packages pydicom lists for it.
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID
    meta = getattr(ds, "file_meta", None)
    uid = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else None
    if uid is None or not uid:
        return
    if not uid.is_transfer_syntax:
        raise SpoilsError(path, "TransferSyntaxUID (0002,0010)",
                          f"{uid!s} is not a transfer syntax UID; expected e.g. 1.2.840.10008.1.2.1 "
                          "(Explicit VR Little Endian)")
    if not uid.is_compressed:
        return
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        decoder = None
    if decoder is not None and decoder.is_available:
        return
    needs = ""
    if decoder is not None:
        missing = getattr(decoder, "missing_dependencies", [])
        needs = f" (pydicom needs one of: {'; '.join(missing)})" if missing else ""
    raise SpoilsError(path, "TransferSyntaxUID (0002,0010)",
                      f"{uid} ({uid.name}): compressed pixel data with no decoder installed"
                      f"{needs}; install a decoder or export the series uncompressed "
                      "(Explicit VR Little Endian)")


def _pixels(s: _Slice) -> tuple[np.ndarray, Optional[tuple[float, float]]]:
    """Rescaled float64 [H, W] of one slice and its header window (center, width) or None.

    Raises:
        SpoilsError: no ``PixelData``, pixel data pydicom cannot decode (too short for
            Rows x Columns, an unsupported compression), or not one greyscale slice.
    """
    import pydicom
    field = "PixelData (7FE0,0010)"
    try:
        ds = pydicom.dcmread(str(s.path))
    except Exception as e:   # pydicom raises many types for a damaged file; all mean "unreadable"
        raise errors.wrap(s.path, "a DICOM file", e) from e
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise SpoilsError(s.path, field, "missing: the file holds a header but no image; "
                                         "expected one greyscale slice [Rows, Columns]")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:   # ValueError (short data), NotImplementedError/RuntimeError (codec)
        raise errors.wrap(s.path, f"pixel data of {ds.get('Rows')}x{ds.get('Columns')} px",
                          e, field) from e
    if arr.ndim != 2:
        raise SpoilsError(s.path, field, f"pixel data of shape {arr.shape}; expected one "
                                         "greyscale slice [Rows, Columns]")
    slope = _float_or_nan(ds, "RescaleSlope")
    intercept = _float_or_nan(ds, "RescaleIntercept")
    x = arr.astype(np.float64) * (slope if math.isfinite(slope) else 1.0) + \
        (intercept if math.isfinite(intercept) else 0.0)
    center, width = _float_or_nan(ds, "WindowCenter"), _float_or_nan(ds, "WindowWidth")
    window = (center, width) if math.isfinite(center) and math.isfinite(width) else None
    return x, window


def _load_dicom(path: pathlib.Path, neighbours: int, window: str) -> SagittalSeries:
    if path.is_dir():
        slices, notes = _group_series(path)
        kind = "dicom_series"
    else:
        ds = _read_header(path)
        if ds is None:
            raise SpoilsError(path, None, f"not a DICOM file (no DICM preamble) and not a volume "
                             f"({', '.join(VOLUME_SUFFIXES)})")
        slices, notes, kind = [_slice_of(path, ds)], [], "dicom_file"
    source = str(path)
    angle = check_sagittal(slices[0].normal, source, "ImageOrientationPatient (0020,0037)")
    slices, measured_gap, sort_notes = _sort_slices(slices, source)
    notes += sort_notes
    first = slices[0].ds
    weighting, evidence = mr_weighting.from_dataset(first)
    spacing = _floats(first, "PixelSpacing", 2, slices[0].path, "(0028,0030)")
    if spacing is None:
        raise SpoilsError(slices[0].path, "PixelSpacing",
                          "PixelSpacing (0028,0030) is missing; expected two positive numbers "
                          "(row, column spacing in mm): measurements in mm need it")
    spacing = images_lib.check_pixel_spacing(spacing, slices[0].path, "PixelSpacing (0028,0030)")
    shapes = {(int(s.ds.get("Rows", 0)), int(s.ds.get("Columns", 0))) for s in slices}
    if len(shapes) > 1:
        raise SpoilsError(source, "Rows, Columns",
                          f"slices of one series have different sizes {sorted(shapes)}; "
                          "expected one size")
    images_lib.check_image_size(next(iter(shapes)), slices[0].path, "Rows, Columns")
    thickness = _float_or_nan(first, "SliceThickness")
    slice_spacing = measured_gap
    if not math.isfinite(slice_spacing):
        slice_spacing = _float_or_nan(first, "SpacingBetweenSlices")
        if not math.isfinite(slice_spacing):
            slice_spacing = thickness
    chosen = middle_indices(len(slices), neighbours)
    check_decodable(first, slices[0].path)
    pixels, windows = zip(*(_pixels(slices[i]) for i in chosen))
    if len({p.shape for p in pixels}) > 1:
        raise SpoilsError(source, None, "selected slices differ in size; expected one size")
    values = np.stack(pixels)
    images, window_info = window_to_uint8(values, window, windows[0], source)
    if str(first.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        images = 255 - images    # MONOCHROME1: low values are displayed white
        notes.append("MONOCHROME1: grey levels inverted after windowing")
    iop = slices[0].iop
    images, spacing_mm, ops = to_display_orientation(
            images, row_dir=iop[3:], col_dir=iop[:3], spacing_mm=(float(spacing[0]), float(spacing[1])))
    return SagittalSeries(
            images=images, slice_indices=tuple(chosen), n_slices_total=len(slices),
            pixel_spacing_mm=spacing_mm, slice_thickness_mm=thickness,
            slice_spacing_mm=slice_spacing, orientation="sagittal", normal_angle_deg=angle,
            input_axes=axis_letter(iop[:3]) + axis_letter(iop[3:]) + axis_letter(slices[0].normal),
            reorientation=ops, window=window_info, source_kind=kind, technical=_technical(first),
            notes=tuple(notes), weighting=weighting, weighting_evidence=tuple(evidence))


# === Volumes (SimpleITK) ===
def is_volume_file(path: str | pathlib.Path) -> bool:
    """True for a path ending in one of ``VOLUME_SUFFIXES`` (case-insensitive)."""
    name = pathlib.Path(path).name.lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def slice_axis_of(spacing: Sequence[float], direction: np.ndarray) -> int:
    """Index axis (0 = x, 1 = y, 2 = z, SimpleITK order) that volumes are sliced along.

    The axis with the largest spacing when it exceeds every other by ``ANISOTROPY_RATIO``,
    else the axis whose direction (a column of the 3x3 ``direction``) is closest to left-right.
    """
    sp = np.asarray(spacing, np.float64)
    order = np.argsort(-sp)
    if sp[order[0]] > ANISOTROPY_RATIO * sp[order[1]]:
        return int(order[0])
    return int(np.argmax(np.abs(np.asarray(direction)[0, :])))


@dataclasses.dataclass(frozen=True)
class ItkHeader:
    """What an MHA/MHD/NIfTI/NRRD header says, read without the pixels.

    Attributes:
        dimension: 2 or 3.
        size: pixels per index axis, SimpleITK order (x, y[, z]).
        spacing: mm per index axis, SimpleITK order; every value checked finite and > 0.
        direction: float64 [d, d]; column j is the LPS direction of index axis j.
        components: values per pixel (1 for greyscale).
        spacing_field: the header field holding the spacing (``ElementSpacing``, ``pixdim``,
            ``spacings``), for messages.
    """

    dimension: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    direction: np.ndarray
    components: int
    spacing_field: str


def _spacing_field(path: pathlib.Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "pixdim"
    return "spacings" if name.endswith(".nrrd") else "ElementSpacing"


def _nifti_header(path: pathlib.Path) -> Optional[tuple[str, int, bytes]]:
    """``(byte order "<" | ">", NIfTI version 1 | 2, the header's bytes)``, or None when the
    file is not NIfTI (or cannot be read)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
    except OSError:
        return None
    for endian in "<>":
        for version, size in ((1, 348), (2, 540)):
            if len(head) >= size and struct.unpack(endian + "i", head[:4])[0] == size:
                return endian, version, head
    return None


def _nifti_pixdim(path: pathlib.Path) -> Optional[list[float]]:
    """The spatial ``pixdim`` of a NIfTI-1/-2 header as stored, or None if not NIfTI.

    Read by hand because SimpleITK's NIfTI reader replaces a ``pixdim`` of 0 by 1 mm silently.
    """
    found = _nifti_header(path)
    if found is None:
        return None
    endian, version, head = found
    if version == 1:
        dim = struct.unpack(endian + "8h", head[40:56])
        pixdim = struct.unpack(endian + "8f", head[76:108])
    else:
        dim = struct.unpack(endian + "8q", head[16:80])
        pixdim = struct.unpack(endian + "8d", head[104:168])
    n = min(max(int(dim[0]), 0), 3)
    return [float(v) for v in pixdim[1:1 + n]]


def nifti_orientation_codes(path: pathlib.Path) -> Optional[tuple[int, int]]:
    """``(qform_code, sform_code)`` of a NIfTI-1/-2 header, or None if the file is not NIfTI.
    Both 0 means the file does not say how its axes lie in the patient (NIfTI-1 standard,
    "method 1": only for Analyze 7.5 compatibility)."""
    found = _nifti_header(path)
    if found is None:
        return None
    endian, version, head = found
    if version == 1:
        return struct.unpack(endian + "2h", head[252:256])
    return struct.unpack(endian + "2i", head[344:352])
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            return struct.unpack(endian + "2h", head[252:256])
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            return struct.unpack(endian + "2i", head[344:352])
    return None


def read_itk_header(path: str | pathlib.Path) -> ItkHeader:
    """The header of an MHA/MHD/NIfTI/NRRD file (SimpleITK), pixels not read.

    Raises:
        SpoilsError: SimpleITK cannot read the header; a spacing that is zero, negative or
            not finite (``field`` names the header field; for NIfTI the stored ``pixdim`` is
            checked, which SimpleITK would read as 1 mm when it is 0).
    """
    import SimpleITK as sitk
    path = pathlib.Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise errors.wrap(path, "an MHA/NIfTI/NRRD image (SimpleITK)", e) from e
    d = int(reader.GetDimension())
    spacing = tuple(float(v) for v in reader.GetSpacing())
    field = _spacing_field(path)
    stored = _nifti_pixdim(path) if field == "pixdim" else None
    for values in (spacing, stored or ()):
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise SpoilsError(path, field, f"spacing {list(values)} mm; expected positive "
                                           "finite numbers (mm per pixel along each axis)")
    return ItkHeader(dimension=d, size=tuple(int(v) for v in reader.GetSize()), spacing=spacing,
                     direction=np.asarray(reader.GetDirection(), np.float64).reshape(d, d),
                     components=int(reader.GetNumberOfComponents()), spacing_field=field)


def read_itk_image(path: str | pathlib.Path) -> np.ndarray:
    """The pixels of an MHA/NIfTI/NRRD file as stored (``[z,] y, x``), after
    :func:`read_itk_header` accepted it.

    Raises:
        SpoilsError: SimpleITK cannot read the pixels (a truncated file, ...).
    """
    import SimpleITK as sitk
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as e:
        raise errors.wrap(path, "an MHA/NIfTI/NRRD image (SimpleITK)", e) from e


def sidecar_path(path: pathlib.Path) -> pathlib.Path:
    """``<stem>.json`` next to a volume (``.nii.gz`` counts as one suffix)."""
    name = path.name
    stem = name[:-7] if name.lower().endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".json")


def volume_weighting(path: pathlib.Path) -> tuple[str, list[str]]:
    """``(weighting, evidence)`` of a volume from its BIDS sidecar ``<stem>.json`` (``EchoTime``,
    ``RepetitionTime``, ``InversionTime`` in seconds; ``SeriesDescription`` or
    ``ProtocolName``), ``("unknown", [why])`` without one. The evidence never names the file
    (its stem is the input's name).

    Raises:
        SpoilsError: the sidecar exists but is not a JSON object, or a time is not a number.
    """
    side = sidecar_path(path)
    if not side.is_file():
        return "unknown", ["a volume file stores no echo or repetition time, and there is no "
                           "sidecar .json of the same name beside it (as dcm2niix writes)"]
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise errors.wrap(side, "a JSON sidecar (BIDS)", e) from e
    if not isinstance(meta, dict):
        raise SpoilsError(side, None, f"a JSON {type(meta).__name__}; expected an object with "
                                      "EchoTime, RepetitionTime (seconds, BIDS)")
    times = {}
    for key in ("EchoTime", "RepetitionTime", "InversionTime"):
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value < 0:
            raise SpoilsError(side, key, f"{value!r:.40}; expected a time in seconds (BIDS)")
        times[key] = 1000.0 * float(value)
    field = "SeriesDescription" if meta.get("SeriesDescription") else "ProtocolName"
    weighting, evidence = mr_weighting.from_header(
            description=meta.get(field), description_field=f"sidecar {field}",
            echo_time_ms=times.get("EchoTime"), repetition_time_ms=times.get("RepetitionTime"),
            inversion_time_ms=times.get("InversionTime"))
    # the sidecar is named after the input, whose name may be a patient's: never in evidence
    return weighting, [e if e.startswith("sidecar") else f"sidecar .json: {e}"
                       for e in evidence]


def _load_volume(path: pathlib.Path, neighbours: int, window: str) -> SagittalSeries:
    header = read_itk_header(path)
    if header.dimension != 3 or header.components != 1:
        raise SpoilsError(path, None, f"{header.dimension}-D image with {header.components} "
                                      "component(s); expected a 3-D greyscale volume")
    if nifti_orientation_codes(path) == (0, 0):
        raise SpoilsError(path, "qform_code, sform_code", "both 0: the NIfTI header does not say "
                          "how the image axes lie in the patient, so the plane cannot be checked "
                          "or the slice put upright; expected a NIfTI with a qform or sform (as "
                          "dcm2niix writes), or the DICOM series")
    direction = header.direction                          # column j = axis j
    spacing = np.asarray(header.spacing, np.float64)
    a = slice_axis_of(spacing, direction)
    angle = check_sagittal(direction[:, a], str(path), f"the direction of image axis {'xyz'[a]}")
    rows_ax, cols_ax = max(set(range(3)) - {a}), min(set(range(3)) - {a})
    images_lib.check_pixel_spacing((spacing[rows_ax], spacing[cols_ax]), path,
                                   f"{header.spacing_field} (in-plane axes "
                                   f"{'xyz'[rows_ax]}, {'xyz'[cols_ax]})")
    images_lib.check_image_size((header.size[rows_ax], header.size[cols_ax]), path)
    weighting, evidence = volume_weighting(path)
    arr = read_itk_image(path)                            # [z, y, x]
    volume = np.moveaxis(arr, 2 - a, 0)                  # [S, rows (axis rows_ax), cols]
    notes = ["volume formats store no slice thickness: slice_thickness_mm is NaN"]
    chosen = middle_indices(volume.shape[0], neighbours)
    images, window_info = window_to_uint8(volume[chosen].astype(np.float64), window, None, str(path))
    images, spacing_mm, ops = to_display_orientation(
            images, row_dir=direction[:, rows_ax], col_dir=direction[:, cols_ax],
            spacing_mm=(float(spacing[rows_ax]), float(spacing[cols_ax])))
    return SagittalSeries(
            images=images, slice_indices=tuple(chosen), n_slices_total=int(volume.shape[0]),
            pixel_spacing_mm=spacing_mm, slice_thickness_mm=float("nan"),
            slice_spacing_mm=float(spacing[a]), orientation="sagittal", normal_angle_deg=angle,
            input_axes=axis_letter(direction[:, cols_ax]) + axis_letter(direction[:, rows_ax]) +
            axis_letter(direction[:, a]),
            reorientation=ops, window=window_info, source_kind="volume", technical={},
            notes=tuple(notes), weighting=weighting, weighting_evidence=tuple(evidence))


# === Entry ===
def load_series(path: str | pathlib.Path, *, neighbours: int = 0,
                window: str = "percentile") -> SagittalSeries:
    """Loads the mid-sagittal slice(s) of a DICOM file, DICOM folder or MHA/NIfTI volume.

    Args:
        path: a DICOM file, a folder of DICOM files (searched recursively), or a volume
            ending in one of ``VOLUME_SUFFIXES``.
        neighbours: slices taken on each side of the middle one (0 = the middle slice only).
        window: ``"percentile" | "header" | "minmax"`` (module docstring).

    Returns:
        a :class:`SagittalSeries` (images uint8 [S, H, W], S = 1 + 2 * neighbours at most).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SpoilsError: naming the file and the field: not sagittal (the message names the
            plane found), PixelSpacing or ImageOrientationPatient missing, a pixel spacing
            ``images.check_pixel_spacing`` refuses (DICOM tag or volume header), a slice
            larger than ``images.MAX_IMAGE_PIXELS`` (from the header, before decoding), no or
            undecodable ``PixelData``, a compressed transfer syntax without a decoder, colour
            (``SamplesPerPixel`` > 1), an empty folder or one without DICOM files or without a
            sagittal stack, duplicate positions within a stack, multi-frame DICOM, an
            unreadable volume, a NIfTI without qform/sform, a sidecar ``.json`` that is not a
            JSON object of numbers.
        ValueError: an unknown ``window``.
    """
    path = pathlib.Path(path)
    if window not in WINDOW_METHODS:
        raise ValueError(f"window {window!r}; expected one of {WINDOW_METHODS}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file() and is_volume_file(path):
        return _load_volume(path, neighbours, window)
    return _load_dicom(path, neighbours, window)
