"""Reading one patient's input: a picture, a 2-D MHA/NIfTI, a DICOM file or series folder, or
a 3-D volume, as uint8 greyscale sagittal slices with their pixel spacing.

Inputs (by file name suffix, :func:`input_kind`):

* PNG / JPEG / TIFF / BMP (``"picture"``): a 2-D greyscale slice
  (``spoils_tf.data.images.read_image_gray``; colour images are refused). No pixel spacing
  unless the caller gives one.
* DICOM file or series folder, MHA / MHD / NRRD / NIfTI 3-D volume (``"series"``): read by
  ``spoils_tf.data.dicom_io.load_series`` (the one reader of volumes): it checks the plane is
  sagittal, takes the middle sagittal slice of the stack (and neighbours when asked), turns it
  to the display orientation of the training data (superior at the top, anterior on the
  left), windows the grey levels and gives the pixel spacing; no patient field is read or
  logged.
* a 2-D MHA / NIfTI image (``"image_2d"``, SimpleITK) is used as stored, with its spacing.

MR weighting: ``report["input"]["weighting"]`` (:func:`weighting_entry`) is the series'
weighting from its header (``dicom_io.SagittalSeries.weighting``: EchoTime / RepetitionTime /
InversionTime, else SeriesDescription, by ``spoils_tf.data.mr_weighting``; a volume's BIDS
sidecar), ``"unknown"`` for a picture. A T1, PD, STIR or FLAIR series is read and measured but
not graded (the predictor abstains); an unknown one is assumed T2 unless the image reads as T1
(``predictor.check_weighting``).

* :func:`read_input_slice`: one slice (``spoils segment``).
* :func:`read_input`: the mid-sagittal slice and its neighbours with a PHI-free description
  (``spoils predict``); :func:`read_mask`: a supplied label map.
* :func:`expand_inputs`: the files of a ``spoils segment`` batch.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Optional, Sequence

import numpy as np

from spoils_tf import fileio, labels
from spoils_tf.errors import SpoilsError

MIN_IMAGE_SIDE = 64   # px; smaller inputs are refused (not an MRI slice)
_ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nii", ".nii.gz")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


# === Reading ===
def _suffix(path: pathlib.Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom(path: pathlib.Path) -> bool:
    if path.is_dir() or _suffix(path) in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _itk_dimension(path: pathlib.Path) -> int:
    from spoils_tf.data import dicom_io
    return dicom_io.read_itk_header(path).dimension


def _read_itk_2d(path: pathlib.Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2-D MHA/NIfTI/NRRD image as ``(array [H, W], (row_mm, col_mm))``; the header's
    spacing and size are checked (``images.check_pixel_spacing``, ``check_image_size``) before
    the pixels are read.

    Raises:
      SpoilsError: naming the file and the header field.
    """
    from spoils_tf.data import dicom_io, images
    header = dicom_io.read_itk_header(path)
    if header.components != 1:
        raise SpoilsError(path, None, f"{header.components} components per pixel; expected a "
                                      "greyscale image")
    sx, sy = header.spacing
    spacing = images.check_pixel_spacing((sy, sx), path, header.spacing_field)
    images.check_image_size((header.size[1], header.size[0]), path)
    return dicom_io.read_itk_image(path), spacing


def input_kind(path: str | pathlib.Path) -> str:
    """How an existing input is read: ``"image_2d"`` (a 2-D MHA/NIfTI/NRRD, SimpleITK),
    ``"series"`` (a DICOM file or folder, or a 3-D volume: ``dicom_io.load_series``) or
    ``"picture"`` (PNG/JPEG/TIFF/BMP: ``spoils_tf.data.images``).

    Raises:
      SpoilsError: an MHA/NIfTI/NRRD file whose header SimpleITK cannot read, or with a
        spacing that is not positive (``dicom_io.read_itk_header``).
    """
    path = pathlib.Path(path)
    if _suffix(path) in _ITK_SUFFIXES and _itk_dimension(path) == 2:
        return "image_2d"
    if _suffix(path) in _ITK_SUFFIXES or _is_dicom(path):
        return "series"
    return "picture"


def read_input_slice(path: str | pathlib.Path
                     ) -> tuple[np.ndarray, Optional[tuple[float, float]], str]:
    """Reads any supported input as ``(uint8 [H, W], (row_mm, col_mm) or None, note)``.

    DICOM files / series folders and 3-D volumes go through ``spoils_tf.data.dicom_io.
    load_series`` (sagittal check, middle slice, display orientation, grey-level window);
    2-D pictures through ``spoils_tf.data.images``.

    Raises:
      FileNotFoundError: no such file.
      SpoilsError: naming the file and field: unreadable, colour, not sagittal, smaller than
        ``MIN_IMAGE_SIDE``, larger than ``images.MAX_IMAGE_PIXELS`` or a header pixel spacing
        that ``images.check_pixel_spacing`` refuses (both checked before decoding).
    """
    from spoils_tf.data import dicom_io, images
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: input image not found")
    kind = input_kind(path)
    if kind == "image_2d":
        arr, spacing = _read_itk_2d(path)
        grey, note = images.to_uint8_gray(arr, str(path)), "2-D image"
    elif kind == "series":
        series = dicom_io.load_series(path)
        grey, spacing = series.images[0], tuple(float(v) for v in series.pixel_spacing_mm)
        note = (f"{series.source_kind}: middle sagittal slice {series.slice_indices[0]} of "
                f"{series.n_slices_total}")
    else:
        grey, spacing, note = images.read_image_gray(path), None, "2-D image"
    if min(grey.shape) < MIN_IMAGE_SIDE:
        raise SpoilsError(path, None, f"image is {grey.shape[0]}x{grey.shape[1]} px, too small; "
                                      f"expected at least {MIN_IMAGE_SIDE} px on each side (an "
                                      "MRI slice)")
    return grey, spacing, note



# === One patient ===
def finite_or_none(x: Any) -> Optional[float]:
    """``float(x)`` when it is a finite number, else None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _sha256_of(path: pathlib.Path) -> str:
    """sha256 of a file's bytes, or of a folder's files' bytes in sorted relative-path order."""
    return fileio.sha256_of_files(
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()))


def weighting_entry(weighting: str, evidence: Sequence[str]) -> dict[str, Any]:
    """``report["input"]["weighting"]``: ``{"weighting", "evidence", "graded"}``; ``graded`` is
    ``mr_weighting.is_gradable`` (T2, or unknown and assumed T2). The predictor computes no
    grade when it is False and may refine an ``"unknown"`` from the image."""
    from spoils_tf.data import mr_weighting
    return {"weighting": str(weighting), "evidence": [str(e) for e in evidence],
            "graded": mr_weighting.is_gradable(weighting)}


def read_input(input_path, *, pixel_spacing=None, slices: int = 1
               ) -> tuple[list[np.ndarray], tuple[float, float], list[int], Optional[float],
                          dict[str, Any]]:
    """Reads one input for :meth:`Predictor.predict`.

    Args:
        input_path: PNG/JPEG/TIFF/BMP, a 2-D MHA/NIfTI, a DICOM file or series folder, or a
            3-D MHA/NIfTI/NRRD volume.
        pixel_spacing: (row_mm, col_mm) given by the user; required for pictures, overrides
            the header otherwise (noted).
        slices: how many sagittal slices, centred on the middle one (odd, >= 1; volumes only).

    Returns:
        (slices uint8 [H, W] mid-sagittal first, (row_mm, col_mm), offsets from the middle,
        slice spacing mm or None, a PHI-free description for ``report["input"]``, whose
        ``"weighting"`` (:func:`weighting_entry`) says whether the series is graded: a T1,
        PD, STIR or FLAIR series is read, measured and reported, not graded).

    Raises:
        FileNotFoundError: no such input.
        SpoilsError: naming the file and field, before any pixel is decoded where the format
            allows: not sagittal, no PixelSpacing, a picture without ``--pixel-spacing``, a
            pixel spacing (``--pixel-spacing`` or the header's) outside
            ``images.PIXEL_SPACING_RANGE_MM``, larger than ``images.MAX_IMAGE_PIXELS``, too
            small, unreadable (no or short DICOM pixel data, a damaged MHA/NIfTI),
            ``--slices`` even or > 1 for a 2-D input.
    """
    from spoils_tf.data import dicom_io, images as images_lib
    path = pathlib.Path(input_path)
    if int(slices) < 1 or int(slices) % 2 == 0:
        raise SpoilsError(None, "--slices", f"{slices}; expected an odd number >= 1 (the "
                                            "mid-sagittal slice and as many neighbours on each "
                                            "side)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found")
    user_spacing = None if pixel_spacing is None else images_lib.check_pixel_spacing(
            pixel_spacing, None, "--pixel-spacing")
    kind = input_kind(path)
    desc: dict[str, Any] = {"sha256": _sha256_of(path)}
    if kind == "series":
        series = dicom_io.load_series(path, neighbours=int(slices) // 2)
        if min(series.images.shape[1:]) < MIN_IMAGE_SIDE:
            raise SpoilsError(path, None, f"image is {series.images.shape[1]}x"
                                          f"{series.images.shape[2]} px, too small; expected at "
                                          f"least {MIN_IMAGE_SIDE} px on each side (an "
                                          "MRI slice)")
        summary = series.deidentified_summary()
        mid_pos = (series.n_slices_total - 1) // 2
        offs = [int(k) - mid_pos for k in series.slice_indices]
        order = sorted(range(len(offs)), key=lambda j: (abs(offs[j]), offs[j]))
        images = [np.ascontiguousarray(series.images[j]) for j in order]
        offsets = [offs[j] for j in order]
        spacing = tuple(float(v) for v in series.pixel_spacing_mm)
        ss = finite_or_none(series.slice_spacing_mm)
        desc.update({
            "kind": summary["source_kind"],
            "plane_check": (f"sagittal: slice normal {summary['normal_angle_deg']:.1f} degrees "
                            f"from left-right (limit {dicom_io.SAGITTAL_TOLERANCE_DEG:g})"),
            "orientation": summary["orientation"], "input_axes": summary["input_axes"],
            "reorientation": summary["reorientation"],
            "n_slices_total": summary["n_slices_total"],
            "series_slice_indices": [summary["slice_indices"][j] for j in order],
            "slice_thickness_mm": summary["slice_thickness_mm"],
            "window": summary["window"], "technical": summary["technical"],
            "pixel_spacing_source": ("PixelSpacing (0028,0030)" if summary["source_kind"] !=
                                     "volume" else "volume header spacing"),
            "reader_notes": summary["notes"],
            "weighting": weighting_entry(summary["weighting"], summary["weighting_evidence"]),
        })
        if len(images) < int(slices):
            desc.setdefault("reader_notes", []).append(
                f"{slices} slices asked, {len(images)} in the series around the middle")
    else:
        if int(slices) != 1:
            raise SpoilsError(path, "--slices", f"{slices}, but a 2-D image holds one slice; "
                                                "use --slices 1")
        grey, spacing, _ = read_input_slice(path)
        images, offsets, ss = [grey], [0], None
        desc.update({"kind": "image_2d" if kind == "image_2d" else "picture",
                     "plane_check": "not checked: a 2-D image carries no orientation; assumed "
                                    "sagittal, superior up, anterior left",
                     "pixel_spacing_source": "image header" if spacing else None,
                     "weighting": weighting_entry("unknown", [
                         "a 2-D picture stores no echo or repetition time"])})
    if user_spacing is not None:
        if spacing is not None:
            desc["pixel_spacing_note"] = (f"--pixel-spacing {list(user_spacing)} replaced the "
                                          f"file's {list(spacing)}")
        spacing, desc["pixel_spacing_source"] = user_spacing, "--pixel-spacing"
    if spacing is None:
        raise SpoilsError(path, "pixel spacing", f"missing: a {desc['kind']} carries no pixel "
                                                 "spacing; give --pixel-spacing ROW_MM COL_MM "
                                                 "(measurements are in mm)")
    return images, (float(spacing[0]), float(spacing[1])), offsets, ss, desc


def read_mask(mask_path, shape_hw: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A label map from a PNG of class ids or a LabelMe JSON, checked against ``shape_hw``.

    Returns:
        (int32 [H, W], sha256 of the file).

    Raises:
        FileNotFoundError: no such file. SpoilsError: naming the file and ``--mask`` (or the
        LabelMe field): unreadable, colour PNG, a size other than ``shape_hw`` (checked from
        the PNG header, before decoding), unknown class ids.
    """
    path = pathlib.Path(mask_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: --mask file not found")
    if path.suffix.lower() == ".json":
        from spoils_tf.data import labelme_io
        mask = np.asarray(labelme_io.read_labelme(path).mask)
    else:
        import PIL.Image
        try:
            with PIL.Image.open(path) as img:
                if (img.size[1], img.size[0]) != tuple(shape_hw):
                    raise SpoilsError(path, "--mask", f"{img.size[1]}x{img.size[0]} px; the "
                                                      f"input slice is {shape_hw[0]}x"
                                                      f"{shape_hw[1]}")
                mask = np.asarray(img)
        except SpoilsError:
            raise
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
            raise SpoilsError(path, "--mask", f"not a readable image ({e})") from e
        if mask.ndim != 2:
            raise SpoilsError(path, "--mask", f"shape {mask.shape}; expected a single-channel "
                                              "PNG of class ids (labels.py)")
    if tuple(mask.shape) != tuple(shape_hw):
        raise SpoilsError(path, "--mask", f"{mask.shape[0]}x{mask.shape[1]} px; the input "
                                          f"slice is {shape_hw[0]}x{shape_hw[1]}")
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= labels.NUM_SEG_CLASSES):
        raise SpoilsError(path, "--mask", f"holds class ids up to {int(mask.max())}; expected "
                                          f"0..{labels.NUM_SEG_CLASSES - 1} (labels.py)")
    return mask.astype(np.int32), _sha256_of(path)



# === Batches ===
def file_stem(path: pathlib.Path) -> str:
    """The file name without its suffix (``.nii.gz`` counts as one)."""
    return path.name[:-7] if path.name.lower().endswith(".nii.gz") else path.stem


def expand_inputs(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    """The files to segment: each path as given, a folder replaced by its image files
    (PNG/JPEG/TIFF/BMP/MHA/NIfTI, sorted) unless it is a DICOM series folder.

    Raises:
      FileNotFoundError: a path that does not exist (named).
      ValueError: a folder without any image file, or two inputs with the same output stem.
    """
    pictures = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp") + _ITK_SUFFIXES
    out: list[pathlib.Path] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: input not found")
        if p.is_dir() and not any(c.suffix.lower() in _DICOM_SUFFIXES
                                  or (c.is_file() and _is_dicom(c))
                                  for c in p.iterdir()
                                  if c.is_file() and not c.name.startswith(".")):
            found = sorted(c for c in p.iterdir() if c.is_file() and _suffix(c) in pictures)
            if not found:
                raise ValueError(f"{p}: folder holds no image file ({', '.join(pictures)}) and "
                                 "no DICOM series")
            out += found
        else:
            out.append(p)
    stems: dict[str, pathlib.Path] = {}
    for p in out:
        stem = file_stem(p)
        if stem in stems:
            raise ValueError(f"{p}: same output name '{stem}_mask.png' as {stems[stem]}; "
                             "segment them into different --out folders")
        stems[stem] = p
    return out


