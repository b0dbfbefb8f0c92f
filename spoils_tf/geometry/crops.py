"""Oriented, normalised disc crops ("disc volumes" of the SPOILS paper) and ``spoils crops``.

A crop is cut in the disc's own frame (``spoils_tf.geometry.measure``: PCA long axis ``u``
pointing posterior, ``v`` superior), so the disc lies horizontal, anterior on the left and
superior on top, whatever the lordosis. The box is the disc's extent along u and v (its four
sorted corner points: anterior-superior, posterior-superior, posterior-inferior,
anterior-inferior) grown by ``margin_frac`` of each side. It is resampled in one bilinear
warp at one isotropic mm-per-pixel scale chosen so the whole box fits the output size
(aspect kept) and centred, the rest padded with 0.

Intensity normalisation: percentile scaling. The 1st and 99th percentiles of the image over
the box (valid pixels only) map to 0 and 1, values are clipped to [0, 1]; padding is 0. Every
channel (neighbouring sagittal slices with ``context_slices=1``) uses the centre slice's
percentiles so relative brightness across slices is kept.

``spoils crops --data DIR --out DIR [--size 64x128] [--context-slices 0|1] [--format png|npy|both]``
writes ``OUT/<patient>/<patient>_slice<k>_<level>.npy`` (float32 [H, W, C]) and/or ``.png``
(uint8, the centre channel, or RGB = (k-1, k, k+1) with context) and ``OUT/index.csv``
(``INDEX_COLUMNS``), plus ``OUT/crops_issues.csv`` listing every file or disc that was skipped.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import pandas as pd

from spoils_tf import fileio
from spoils_tf.data import layout
from spoils_tf.geometry import features, measure
from spoils_tf.geometry.frame import sample_in_frame

DEFAULT_SIZE: tuple[int, int] = (64, 128)  # (height, width) pixels
DEFAULT_MARGIN_FRAC: float = 0.15
NORM_PERCENTILES: tuple[float, float] = (1.0, 99.0)

INDEX_COLUMNS: tuple[str, ...] = (
    "patient", "slice", "level", "ivd_label", "pfirrmann", "severity", "grade_class",
    "file_npy", "file_png", "channels", "context_missing",
    "centre_row", "centre_col", "tilt_deg", "box_length_mm", "box_height_mm", "mm_per_px",
    "corners_rc", "norm_lo", "norm_hi", "reason")


@dataclasses.dataclass(frozen=True)
class Crop:
    """One disc crop.

    Attributes:
        array: float32 [H, W, C] in [0, 1] (C = 1, or 3 with context slices k-1, k, k+1).
        centre_rc: (row, col) pixel position of the box centre.
        tilt_deg: disc tilt (see ``measure``); the crop is rotated by it.
        box_mm: (length along u, height along v) of the box, margins included, mm.
        mm_per_px: isotropic output scale.
        corners_rc: float [4, 2] (row, col) pixels of the box corners: anterior-superior,
            posterior-superior, posterior-inferior, anterior-inferior.
        norm: (lo, hi) grey values mapped to 0 and 1.
    """

    array: np.ndarray
    centre_rc: tuple[float, float]
    tilt_deg: float
    box_mm: tuple[float, float]
    mm_per_px: float
    corners_rc: np.ndarray
    norm: tuple[float, float]


def parse_size(text: str) -> tuple[int, int]:
    """``"64x128"`` -> (64, 128) = (height, width).

    Raises:
        ValueError: if not two positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--size must be HEIGHTxWIDTH, e.g. 64x128, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"--size must be positive, got {text!r}")
    return h, w


def crop_disc(images: Sequence[np.ndarray], geometry: measure.DiscGeometry,
              size: tuple[int, int] = DEFAULT_SIZE,
              margin_frac: float = DEFAULT_MARGIN_FRAC) -> Crop:
    """Cuts the oriented crop of one disc from one or more registered slices.

    Args:
        images: list of uint8/float [H, W] greyscale slices, the centre slice in the middle
            (length 1 or 3); all must have the same shape.
        geometry: ``DiscResult.geometry`` of the disc (frame + extent, spacing).
        size: (height, width) of the output.
        margin_frac: box growth on each side as a fraction of the disc's extent.

    Returns:
        ``Crop``.

    Raises:
        ValueError: if the images differ in shape or the list is empty.
    """
    if not images:
        raise ValueError("crop_disc needs at least one image")
    shapes = {np.asarray(i).shape[:2] for i in images}
    if len(shapes) != 1:
        raise ValueError(f"context slices have different shapes {sorted(shapes)}")
    fr, ext, spacing = geometry.frame, geometry.extent, geometry.spacing
    length = ext.a_post - ext.a_ant
    height = ext.b_sup - ext.b_inf
    a_lo, a_hi = ext.a_ant - margin_frac * length, ext.a_post + margin_frac * length
    b_lo, b_hi = ext.b_inf - margin_frac * height, ext.b_sup + margin_frac * height
    out_h, out_w = size
    scale = max((a_hi - a_lo) / out_w, (b_hi - b_lo) / out_h)  # mm per output pixel
    a_c, b_c = 0.5 * (a_lo + a_hi), 0.5 * (b_lo + b_hi)
    # Output pixel (i, j) centre -> a = a_c + (i - (W-1)/2) * scale, b = b_c - (j - (H-1)/2) * scale.
    a0 = a_c - 0.5 * (out_w - 1) * scale
    b1 = b_c + 0.5 * (out_h - 1) * scale
    a_range = (a0, a0 + (out_w - 1) * scale)
    b_range = (b1 - (out_h - 1) * scale, b1)

    def warp(img: np.ndarray) -> np.ndarray:
        out, _, _ = sample_in_frame(img, fr, spacing, a_range, b_range, scale)
        return out[:out_h, :out_w]

    centre_idx = len(images) // 2
    chans = [warp(np.asarray(im, np.float32)[..., 0] if np.asarray(im).ndim == 3
                  else np.asarray(im, np.float32)) for im in images]
    valid = warp(np.ones(shapes.pop(), np.float32)) > 0.999
    box = valid & _box_mask(out_h, out_w, a0, b1, scale, (a_lo, a_hi), (b_lo, b_hi))
    vals = chans[centre_idx][box]
    if vals.size:
        lo, hi = (float(x) for x in np.percentile(vals, NORM_PERCENTILES))
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-6:
        hi = lo + 1.0
    arr = np.stack([np.where(box, np.clip((c - lo) / (hi - lo), 0.0, 1.0), 0.0) for c in chans],
                   axis=-1).astype(np.float32)
    corners_ab = [(a_lo, b_hi), (a_hi, b_hi), (a_hi, b_lo), (a_lo, b_lo)]
    corners = np.array([fr.to_pixel(a, b, spacing) for a, b in corners_ab])
    centre = fr.to_pixel(a_c, b_c, spacing)
    return Crop(arr, centre, fr.tilt_deg, (a_hi - a_lo, b_hi - b_lo), scale, corners, (lo, hi))


def _box_mask(h: int, w: int, a0: float, b1: float, scale: float, a_lim: tuple[float, float],
              b_lim: tuple[float, float]) -> np.ndarray:
    a = a0 + np.arange(w) * scale
    b = b1 - np.arange(h) * scale
    eps = 1e-6 * scale
    return (((b >= b_lim[0] - eps) & (b <= b_lim[1] + eps))[:, None]
            & ((a >= a_lim[0] - eps) & (a <= a_lim[1] + eps))[None, :])


# === Batch (spoils crops) ===
def _save_npy_atomic(path: pathlib.Path, arr: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
            np.save(f, arr)

    fileio.atomic_write(path, write)


def _save_png_atomic(path: pathlib.Path, arr: np.ndarray) -> None:
    u8 = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if u8.shape[-1] == 1:
        u8 = u8[..., 0]
    else:
        u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", u8)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    fileio.atomic_write_bytes(path, buf.tobytes())


def _neighbour_image(data_dir: pathlib.Path, patient: str, slice_index: int,
                     reader: Callable[[pathlib.Path], Any]) -> Optional[np.ndarray]:
    path = layout.labelme_json_path(data_dir, patient, slice_index)
    if not path.is_file():
        return None
    try:
        return reader(path).image
    except Exception:  # noqa: BLE001 - a broken neighbour only means no context channel
        return None


def write_crops(data_dir: str | pathlib.Path, out_dir: str | pathlib.Path, *,
                size: tuple[int, int] = DEFAULT_SIZE, context_slices: int = 0,
                fmt: str = "both", margin_frac: float = DEFAULT_MARGIN_FRAC,
                reader: Optional[Callable[[pathlib.Path], Any]] = None,
                progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crops every disc of every slice of a dataset directory.

    Args:
        data_dir: a dataset directory (``spoils_tf.data.layout``); pixel spacing from
            ``patients.csv`` (or the LabelMe file), labels from ``discs.csv`` when present.
        out_dir: output directory (created).
        size: (height, width); context_slices: 0 or 1 (neighbouring slices k-1, k+1 as extra
            channels; a missing neighbour repeats the centre slice and is flagged).
        fmt: "png", "npy" or "both".
        reader: ``path -> record`` with ``.image``, ``.mask``, ``.patient``, ``.slice``,
            ``.pixel_spacing_mm`` (default ``spoils_tf.data.labelme_io.read_labelme``).

    Returns:
        (index, issues) DataFrames, also written to ``out_dir/index.csv`` and
        ``out_dir/crops_issues.csv``.

    Raises:
        ValueError: bad ``fmt`` or ``context_slices``. FileNotFoundError: not a dataset dir.
    """
    if fmt not in ("png", "npy", "both"):
        raise ValueError(f"fmt must be png, npy or both, got {fmt!r}")
    if context_slices not in (0, 1):
        raise ValueError(f"context_slices must be 0 or 1, got {context_slices!r}")
    data_dir, out_dir = pathlib.Path(data_dir), pathlib.Path(out_dir)
    if reader is None:
        from spoils_tf.data.labelme_io import read_labelme
        reader = read_labelme
    paths = layout.list_labelme_jsons(data_dir)
    spacings = features.read_patient_table(data_dir)
    disc_labels = features.read_disc_labels(data_dir)
    rows: list[dict[str, Any]] = []
    issues: list[dict[str, Any]] = []
    for path in features.progress_iter(paths, progress, "crops"):
        try:
            rec = reader(path)
        except Exception as e:  # noqa: BLE001 - report and continue
            issues.append({"file": str(path), "level": "", "reason": f"unreadable: {e}"})
            continue
        spacing = features.spacing_for(rec, spacings)
        if spacing is None:
            issues.append({"file": str(path), "level": "",
                           "reason": "no pixel spacing in patients.csv or the LabelMe file"})
            continue
        results = measure.measure_slice_detailed(rec.mask, spacing, rec.image)
        if not results:
            issues.append({"file": str(path), "level": "", "reason": "no disc label in mask"})
            continue
        images = [rec.image]
        context_missing = ""
        if context_slices:
            nb = []
            for k in (rec.slice - 1, rec.slice + 1):
                im = _neighbour_image(data_dir, rec.patient, k, reader)
                if im is None or im.shape != rec.image.shape:
                    nb.append(rec.image)
                    context_missing += f"{k};"
                else:
                    nb.append(im)
            images = [nb[0], rec.image, nb[1]]
        for res in results:
            level = res.values["level"]
            if res.geometry is None:
                issues.append({"file": str(path), "level": level,
                               "reason": f"no crop: {res.values['reason']}"})
                continue
            crop = crop_disc(images, res.geometry, size, margin_frac)
            stem = f"{layout.slice_stem(rec.patient, rec.slice)}_{level}"
            rel_npy = f"{rec.patient}/{stem}.npy" if fmt in ("npy", "both") else ""
            rel_png = f"{rec.patient}/{stem}.png" if fmt in ("png", "both") else ""
            if rel_npy:
                _save_npy_atomic(out_dir / rel_npy, crop.array)
            if rel_png:
                _save_png_atomic(out_dir / rel_png, crop.array)
            lab = disc_labels.get((rec.patient, rec.slice, level), {})
            rows.append({
                "patient": rec.patient, "slice": rec.slice, "level": level,
                "ivd_label": lab.get("ivd_label"), "pfirrmann": lab.get("pfirrmann"),
                "severity": lab.get("severity"), "grade_class": lab.get("grade_class"),
                "file_npy": rel_npy, "file_png": rel_png, "channels": crop.array.shape[-1],
                "context_missing": context_missing.rstrip(";"),
                "centre_row": crop.centre_rc[0], "centre_col": crop.centre_rc[1],
                "tilt_deg": crop.tilt_deg, "box_length_mm": crop.box_mm[0],
                "box_height_mm": crop.box_mm[1], "mm_per_px": crop.mm_per_px,
                "corners_rc": ";".join(f"{r:.2f},{c:.2f}" for r, c in crop.corners_rc),
                "norm_lo": crop.norm[0], "norm_hi": crop.norm[1], "reason": res.values["reason"]})
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    issue_df = pd.DataFrame(issues, columns=["file", "level", "reason"])
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_csv(out_dir / "index.csv", index)
    fileio.write_csv(out_dir / "crops_issues.csv", issue_df)
    return index, issue_df
