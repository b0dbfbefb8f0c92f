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
  a truly coloured image (e.g. an overlay saved by mistake) raises ``ValueError``.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
import PIL.Image
import PIL.ImageOps

# Largest accepted |R-G| or |R-B| (or |G-B|), as a fraction of the image's value range
# (2/255: two grey levels of an 8-bit image, enough for JPEG chroma noise).
RGB_TOLERANCE: float = 2.0 / 255.0


def _rescale_to_uint8(arr: np.ndarray, source: str) -> np.ndarray:
    """Min-max rescales any numeric ``[H, W]`` array to ``uint8`` 0..255 (constant -> 0)."""
    a = arr.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{source}: image has NaN or infinite values; expected finite numbers")
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
        ValueError: wrong number of dimensions/channels, empty image, non-finite values,
            or colour channels that differ by more than ``RGB_TOLERANCE`` of the value range.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[:, :, :3]
        if rgb.size == 0:
            raise ValueError(f"{source}: empty image of shape {a.shape}")
        rgb_f = rgb.astype(np.float64)
        if not np.all(np.isfinite(rgb_f)):
            raise ValueError(f"{source}: image has NaN or infinite values; expected finite numbers")
        value_range = max(float(rgb_f.max() - rgb_f.min()), 1.0 if a.dtype.kind in "uib" else 1e-12)
        diff = max(float(np.abs(rgb_f[..., 0] - rgb_f[..., 1]).max()),
                   float(np.abs(rgb_f[..., 0] - rgb_f[..., 2]).max()),
                   float(np.abs(rgb_f[..., 1] - rgb_f[..., 2]).max()))
        if diff > RGB_TOLERANCE * value_range:
            raise ValueError(
                f"{source}: colour image (channels differ by up to {diff:g}, more than "
                f"{RGB_TOLERANCE:.4f} of the value range {value_range:g}); expected a greyscale "
                f"image (R=G=B)")
        mean = rgb_f.mean(axis=2)
        if a.dtype == np.uint8:
            return np.clip(np.rint(mean), 0, 255).astype(np.uint8)
        return _rescale_to_uint8(mean, source)
    if a.ndim != 2:
        raise ValueError(f"{source}: image of shape {a.shape}; expected [H, W], [H, W, 1], "
                         f"[H, W, 3] or [H, W, 4]")
    if a.size == 0:
        raise ValueError(f"{source}: empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        return a.copy()
    if a.dtype.kind not in "uifb":
        raise ValueError(f"{source}: image dtype {a.dtype}; expected an integer, bool or float type")
    return _rescale_to_uint8(a, source)


def pil_to_array(img: PIL.Image.Image, source: str) -> np.ndarray:
    """A PIL image as a numpy array, keeping 16-bit and float data (``I;16``, ``I``, ``F``).

    EXIF orientation is applied (as the LabelMe GUI does, so annotations drawn on the
    displayed image line up). Palette images are expanded to RGBA; ``LA`` keeps ``L``.

    Raises:
        ValueError: a multi-frame image (a volume, not a slice).
    """
    if getattr(img, "n_frames", 1) > 1:
        raise ValueError(f"{source}: image has {img.n_frames} frames; expected a single 2-D slice")
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
        ValueError: the file is not a readable image, or is a colour / multi-frame image.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with PIL.Image.open(path) as img:
            img.load()
            arr = pil_to_array(img, str(path))
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    return to_uint8_gray(arr, str(path))


def decode_image_gray(data: bytes, source: str) -> np.ndarray:
    """Decodes encoded image bytes (PNG/JPEG/TIFF) to ``uint8 [H, W]``.

    Raises:
        ValueError: the bytes are not a readable image, or a colour / multi-frame image.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = pil_to_array(img, source)
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{source}: not a readable image ({e})") from e
    return to_uint8_gray(arr, source)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8 [H, W]`` greyscale image (mode ``L``)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
