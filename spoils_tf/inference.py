"""Inference entry points: ``spoils segment`` (one image -> mask, overlay, areas).

``spoils segment --image FILE --model PATH --out DIR``

Inputs (by file name suffix):

* PNG / JPEG / TIFF / BMP: a 2-D greyscale slice (``spoils_tf.data.images.read_image_gray``;
  colour images are refused). No pixel spacing unless ``--pixel-spacing`` is given.
* DICOM file or series folder, MHA / MHD / NRRD / NIfTI 3-D volume: read by
  ``spoils_tf.data.dicom_io.load_series`` (the one reader of volumes): it checks the plane is
  sagittal, takes the **middle sagittal slice** of the stack, turns it to the display
  orientation of the training data (superior at the top, anterior on the left), windows the
  grey levels and gives the pixel spacing; no patient field is read or logged.
* a 2-D MHA / NIfTI image (SimpleITK) is used as stored, with its spacing.

``<stem>_input.png`` saves the slice that was actually segmented.

``--model``: a ``.keras`` file (``spoils_tf.models``) or an exported SavedModel version
folder (``spoils_tf.export.serving``). Both run the same preprocessing
(``seg_pipeline.make_predictor``).

Outputs in ``--out`` (written atomically): ``<stem>_mask.png`` (uint8 class ids of
``spoils_tf.labels``), ``<stem>_overlay.png`` (``spoils_tf.viz.overlay``), ``<stem>_input.png``
and ``<stem>_areas.json`` (per class: pixel count and, when the spacing is known, mm²).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, Callable, Optional

import numpy as np

from spoils_tf import fileio
from spoils_tf import labels

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
    import SimpleITK as sitk
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ValueError(f"{path}: SimpleITK cannot read it ({str(e).strip()[:200]})") from e
    return reader.GetDimension()


def _read_itk_2d(path: pathlib.Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2-D MHA/NIfTI/NRRD image as ``(array [H, W], (row_mm, col_mm))``."""
    import SimpleITK as sitk
    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: {image.GetNumberOfComponentsPerPixel()} components per pixel; "
                         "expected a greyscale image")
    sx, sy = image.GetSpacing()
    return sitk.GetArrayFromImage(image), (float(sy), float(sx))


def input_kind(path: str | pathlib.Path) -> str:
    """How an existing input is read: ``"image_2d"`` (a 2-D MHA/NIfTI/NRRD, SimpleITK),
    ``"series"`` (a DICOM file or folder, or a 3-D volume: ``dicom_io.load_series``) or
    ``"picture"`` (PNG/JPEG/TIFF/BMP: ``spoils_tf.data.images``).

    Raises:
      ValueError: an MHA/NIfTI/NRRD file SimpleITK cannot read.
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
      ValueError: unreadable, colour, not sagittal, or smaller than ``MIN_IMAGE_SIDE``.
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
        raise ValueError(f"{path}: image is {grey.shape[0]}x{grey.shape[1]} px, too small; "
                         f"expected at least {MIN_IMAGE_SIDE} px on each side (an MRI slice)")
    return grey, spacing, note


# === Model ===
def load_segmenter(model_path: str | pathlib.Path, resize_mode: str = "letterbox"
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """``uint8 [H, W] -> int32 [H, W]`` label map, from a ``.keras`` file or a SavedModel dir.

    Raises:
      FileNotFoundError: nothing at ``model_path``.
      ValueError: neither a ``.keras`` file nor a SavedModel directory.
    """
    import tensorflow as tf
    model_path = pathlib.Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: model not found")
    if model_path.is_dir() and (model_path / "saved_model.pb").is_file():
        from spoils_tf.export import serving
        fn = tf.saved_model.load(str(model_path)).signatures[serving.SIGNATURE_NAME]

        def predict(grey):
            rgb = np.repeat(grey[None, :, :, None], 3, axis=-1)
            return fn(**{serving.INPUT_NAME: tf.constant(rgb)})["label_map"].numpy()[0]
        return predict
    if model_path.suffix == ".keras":
        import spoils_tf.models
        from spoils_tf.data import seg_pipeline
        predictor = seg_pipeline.make_predictor(spoils_tf.models.load_model(model_path),
                                                resize_mode)

        def predict(grey):
            rgb = np.repeat(grey[None, :, :, None], 3, axis=-1)
            return predictor(tf.constant(rgb))["label_map"].numpy()[0]
        return predict
    raise ValueError(f"{model_path}: expected a .keras file or a SavedModel version directory "
                     "(with saved_model.pb)")


# === Outputs ===
def class_areas(mask: np.ndarray, spacing_mm: Optional[tuple[float, float]]) -> dict[str, Any]:
    """Per class name: ``{"pixels": int, "area_mm2": float | None}`` (pixel area = row_mm *
    col_mm)."""
    counts = np.bincount(np.asarray(mask).ravel(), minlength=labels.NUM_SEG_CLASSES)
    px_mm2 = spacing_mm[0] * spacing_mm[1] if spacing_mm else None
    return {name: {"pixels": int(counts[i]),
                   "area_mm2": float(counts[i] * px_mm2) if px_mm2 is not None else None}
            for i, name in enumerate(labels.SEG_NAMES)}




def _png_bytes(arr: np.ndarray) -> bytes:
    import io
    import PIL.Image
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def segment_file(image_path: str | pathlib.Path, model_path: str | pathlib.Path,
                 out_dir: str | pathlib.Path, *, resize_mode: str = "letterbox",
                 pixel_spacing_mm: Optional[tuple[float, float]] = None) -> dict[str, Any]:
    """Segments one image and writes the four outputs (module docstring).

    Returns:
      the areas JSON content (also written to ``<stem>_areas.json``).

    Raises:
      FileNotFoundError, ValueError: from :func:`read_input_slice` / :func:`load_segmenter`.
    """
    from spoils_tf import viz
    image_path = pathlib.Path(image_path)
    grey, spacing, note = read_input_slice(image_path)
    if pixel_spacing_mm is not None:
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    mask = load_segmenter(model_path, resize_mode)(grey).astype(np.uint8)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = image_path.name[:-7] if image_path.name.lower().endswith(".nii.gz") else image_path.stem
    result = {
            "image": str(image_path), "model": str(model_path), "source": note,
            "shape_hw": list(grey.shape), "pixel_spacing_mm": list(spacing) if spacing else None,
            "classes": class_areas(mask, spacing),
            "files": {k: f"{stem}_{k}.png" for k in ("mask", "overlay", "input")},
    }
    fileio.atomic_write_bytes(out_dir / f"{stem}_input.png", _png_bytes(grey))
    fileio.atomic_write_bytes(out_dir / f"{stem}_mask.png", _png_bytes(mask))
    fileio.atomic_write_bytes(out_dir / f"{stem}_overlay.png", _png_bytes(viz.overlay(grey, mask)))
    fileio.atomic_write_bytes(out_dir / f"{stem}_areas.json",
                  (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    return result


def segment_main(argv: list[str]) -> int:
    """``spoils segment --image FILE --model PATH --out DIR [--resize-mode letterbox|resize]
    [--pixel-spacing ROW_MM COL_MM]``. Returns 0, or 1 with a message on stderr."""
    parser = argparse.ArgumentParser(prog="spoils segment",
                                     description="segment one image with a trained model")
    parser.add_argument("--image", required=True, type=pathlib.Path,
                        help="PNG/JPEG/DICOM/MHA/NIfTI (a 3-D volume -> its middle sagittal slice)")
    parser.add_argument("--model", required=True, type=pathlib.Path,
                        help=".keras file or exported SavedModel version directory")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument("--resize-mode", default="letterbox", choices=("letterbox", "resize"),
                        help="for .keras models: how the image is fitted (the training config's "
                             "data.resize_mode); a SavedModel carries its own")
    parser.add_argument("--pixel-spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                        help="override / supply the pixel spacing in mm")
    args = parser.parse_args(argv)
    try:
        result = segment_file(args.image, args.model, args.out, resize_mode=args.resize_mode,
                              pixel_spacing_mm=args.pixel_spacing)
    except (FileNotFoundError, ValueError) as e:
        print(f"spoils segment: {e}", file=sys.stderr)
        return 1
    found = [n for n, a in result["classes"].items()
             if a["pixels"] and n != labels.SEG_NAMES[labels.BACKGROUND_ID]]
    print(f"{args.out}: {result['shape_hw'][0]}x{result['shape_hw'][1]} ({result['source']}); "
          f"classes found: {', '.join(found) or 'none'}")
    return 0
