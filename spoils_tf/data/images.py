"""Image normalisation: every image entering spoils-tf becomes ``uint8 [H, W]`` greyscale.

MRI slices arrive as 8-bit PNG (SPIDER: some stored RGBA with R=G=B), 16-bit PNG/TIFF (DICOM
exports) or float arrays (SimpleITK). The one conversion rule, used by the LabelMe reader,
the SPIDER converter and inference:

* ``uint8`` values are kept as they are.
* Any other dtype (``uint16``, signed ints, ``float``, ``bool``) is **min-max rescaled** to
  0..255: ``round(255 * (x - min) / (max - min))`` over the whole image; a constant image
  becomes all zeros. This is a per-image window, not a fixed one: absolute intensities of
  16-bit MRI are arbitrary (scanner- and protocol-dependent), so nothing is lost that a
  later per-image normalisation would keep.
* Colour layouts: ``[H, W, 1]`` is squeezed; ``[H, W, 3]`` (RGB) and ``[H, W, 4]`` (RGBA,
  alpha ignored) are accepted only when R, G and B agree to within ``RGB_TOLERANCE`` of the
  image's value range (greyscale saved as colour, or JPEG noise) and become their mean;
  a truly coloured image (e.g. an overlay saved by mistake) raises ``SpoilsError``.

Input limits, checked by every reader before the pixels are decoded or used
(:class:`spoils_tf.errors.SpoilsError`, naming the file and the field):

* **Size**: at most ``MAX_IMAGE_PIXELS`` pixels per slice (:func:`check_image_size`). PNG,
  JPEG and TIFF headers are read first (PIL opens lazily), so an oversized picture is refused
  without decoding it.
* **Pixel spacing**: two finite numbers in ``PIXEL_SPACING_RANGE_MM`` (:func:`check_pixel_spacing`),
  wherever a spacing enters: ``--pixel-spacing``, the DICOM ``PixelSpacing`` tag, an
  MHA/NIfTI header, a LabelMe file's ``spoils.pixel_spacing_mm``, ``patients.csv``.
"""

from __future__ import annotations

import io
import math
import pathlib
import warnings
from typing import Any, Optional, Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps

from spoils_tf.errors import SpoilsError

# Largest accepted |R-G| or |R-B| (or |G-B|), as a fraction of the image's value range
# (2/255: two grey levels of an 8-bit image, enough for JPEG chroma noise).
RGB_TOLERANCE: float = 2.0 / 255.0
# Largest slice accepted, in pixels (rows x columns): 4096 x 4096, sixteen times a 1024 x 1024
# MRI matrix (the largest in clinical use). Segmentation time grows with the pixel count, so a
# huge picture given by mistake would run for minutes before failing or finishing.
MAX_IMAGE_PIXELS: int = 4096 * 4096
# Plausible in-plane pixel spacing of an MRI slice, mm (inclusive). Clinical sagittal spine MRI
# lies in about 0.3-1.5 mm; a value outside is a unit mistake (469 for 0.469 mm, metres, um).
PIXEL_SPACING_RANGE_MM: tuple[float, float] = (0.1, 5.0)


# === Input limits ===
def check_pixel_spacing(spacing_mm: Any, path: Any, field: str) -> tuple[float, float]:
    """Checks a pixel spacing wherever it enters the package; returns ``(row_mm, col_mm)``.

    Args:
        spacing_mm: ``(row_mm, col_mm)``: any pair of numbers (or numeric strings).
        path: the file it came from (``None`` for a command-line argument), for the message.
        field: where in that file, e.g. ``"PixelSpacing (0028,0030)"``, ``"--pixel-spacing"``.

    Raises:
        SpoilsError: not two numbers, not finite, not positive, or outside
            ``PIXEL_SPACING_RANGE_MM``; the reason names the value and the unit.
    """
    try:
        values = [float(v) for v in spacing_mm]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2:
        raise SpoilsError(path, field, f"expected two numbers (row_mm, col_mm), got "
                                       f"{spacing_mm!r:.80}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise SpoilsError(path, field, f"pixel spacing {values} mm; expected two positive "
                                       "finite numbers (row_mm, col_mm)")
    lo, hi = PIXEL_SPACING_RANGE_MM
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise SpoilsError(path, field, f"pixel spacing {bad[0]:g} mm is outside the plausible "
                                       f"{lo:g}-{hi:g} mm of an MRI slice; is it in another "
                                       "unit (e.g. 469 for 0.469 mm)?")
    return values[0], values[1]


def check_image_size(shape_hw: Sequence[int], path: Any, field: Optional[str] = None) -> None:
    """Refuses a slice of more than ``MAX_IMAGE_PIXELS`` pixels.

    Args:
        shape_hw: ``(rows, columns)`` of one slice, from the file's header where possible.
        path, field: where the slice comes from, for the message.

    Raises:
        SpoilsError: naming the size and the limit.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    if h * w > MAX_IMAGE_PIXELS:
        raise SpoilsError(path, field, f"image is {h}x{w} px ({h * w} pixels), larger than the "
                                       f"limit of {MAX_IMAGE_PIXELS} pixels "
                                       "(spoils_tf.data.images.MAX_IMAGE_PIXELS); expected one "
                                       "MRI slice")


def _rescale_to_uint8(arr: np.ndarray, source: str) -> np.ndarray:
    """Min-max rescales any numeric ``[H, W]`` array to ``uint8`` 0..255 (constant -> 0)."""
    a = arr.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise SpoilsError(source, None, "image has NaN or infinite values; expected finite "
                                        "numbers")
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def to_uint8_gray(arr: np.ndarray, source: str) -> np.ndarray:
    """Converts an image array to ``uint8 [H, W]`` greyscale (rules in the module docstring).

    Args:
        arr: ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` (R=G=B) or ``[H, W, 4]`` (R=G=B, alpha
            ignored); dtype uint8 (kept), any other int, bool or float (min-max rescaled).
        source: where the image came from (a file name), used in error messages.

    Returns:
        ``uint8 [H, W]``.

    Raises:
        SpoilsError: wrong number of dimensions/channels, empty image, non-finite values,
            or colour channels that differ by more than ``RGB_TOLERANCE`` of the value range.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[:, :, :3]
        if rgb.size == 0:
            raise SpoilsError(source, None, f"empty image of shape {a.shape}")
        rgb_f = rgb.astype(np.float64)
        if not np.all(np.isfinite(rgb_f)):
            raise SpoilsError(source, None, "image has NaN or infinite values; expected finite "
                                            "numbers")
        value_range = max(float(rgb_f.max() - rgb_f.min()), 1.0 if a.dtype.kind in "uib" else 1e-12)
        diff = max(float(np.abs(rgb_f[..., 0] - rgb_f[..., 1]).max()),
                   float(np.abs(rgb_f[..., 0] - rgb_f[..., 2]).max()),
                   float(np.abs(rgb_f[..., 1] - rgb_f[..., 2]).max()))
        if diff > RGB_TOLERANCE * value_range:
            raise SpoilsError(
                source, None, f"colour image (channels differ by up to {diff:g}, more than "
                f"{RGB_TOLERANCE:.4f} of the value range {value_range:g}); expected a greyscale "
                f"image (R=G=B)")
        mean = rgb_f.mean(axis=2)
        if a.dtype == np.uint8:
            return np.clip(np.rint(mean), 0, 255).astype(np.uint8)
        return _rescale_to_uint8(mean, source)
    if a.ndim != 2:
        raise SpoilsError(source, None, f"image of shape {a.shape}; expected [H, W], "
                                        "[H, W, 1], [H, W, 3] or [H, W, 4]")
    if a.size == 0:
        raise SpoilsError(source, None, f"empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        return a.copy()
    if a.dtype.kind not in "uifb":
        raise SpoilsError(source, None, f"image dtype {a.dtype}; expected an integer, bool or "
                                        "float type")
    return _rescale_to_uint8(a, source)


def pil_to_array(img: PIL.Image.Image, source: str) -> np.ndarray:
    """A PIL image as a numpy array, keeping 16-bit and float data (``I;16``, ``I``, ``F``).

    EXIF orientation is applied (as the LabelMe GUI does, so annotations drawn on the
    displayed image line up). Palette images are expanded to RGBA; ``LA`` keeps ``L``.

    Raises:
        SpoilsError: a multi-frame image (a volume, not a slice).
    """
    if getattr(img, "n_frames", 1) > 1:
        raise SpoilsError(source, None, f"image has {img.n_frames} frames; expected a single "
                                        "2-D slice")
    img = PIL.ImageOps.exif_transpose(img)
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode == "CMYK":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if img.mode == "LA":
        arr = arr[:, :, 0]
    return arr


def read_image_gray(path: str | pathlib.Path) -> np.ndarray:
    """Reads a PNG/JPEG/TIFF (8- or 16-bit, grey, RGB or RGBA) as ``uint8 [H, W]``.

    16-bit data are read at full depth and then min-max rescaled by ``to_uint8_gray``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SpoilsError: the file is not a readable image, is a colour / multi-frame image, or is
            larger than ``MAX_IMAGE_PIXELS`` (checked from the header, before decoding).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    return to_uint8_gray(_decode(path, str(path)), str(path))


def decode_image_gray(data: bytes, source: str) -> np.ndarray:
    """Decodes encoded image bytes (PNG/JPEG/TIFF) to ``uint8 [H, W]``.

    Raises:
        SpoilsError: the bytes are not a readable image, a colour / multi-frame image, or
            larger than ``MAX_IMAGE_PIXELS`` (checked before decoding).
    """
    return to_uint8_gray(_decode(io.BytesIO(data), source), source)


def _decode(fp: Any, source: str) -> np.ndarray:
    """The pixels of an image file or file object, its size checked from the header first."""
    try:
        with warnings.catch_warnings():
            # PIL's own decompression-bomb limit lies above MAX_IMAGE_PIXELS: refused below
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(fp) as img:
                check_image_size((img.size[1], img.size[0]), source)
                img.load()
                return pil_to_array(img, source)
    except PIL.Image.DecompressionBombError as e:
        raise SpoilsError(source, None, f"image larger than the limit of {MAX_IMAGE_PIXELS} "
                                        f"pixels (spoils_tf.data.images.MAX_IMAGE_PIXELS; {e})"
                          ) from e
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SpoilsError(source, None, f"not a readable image ({e})") from e


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8 [H, W]`` greyscale image (mode ``L``)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
