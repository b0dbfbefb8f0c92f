"""LabelMe 5.x json <-> (uint8 image, int32 14-class mask).

File format (what ``write_labelme`` writes, and the LabelMe GUI opens)::

    {"version": "5.5.0", "flags": {}, "shapes": [...],
     "imagePath": "<stem>.png", "imageData": null, "imageHeight": H, "imageWidth": W,
     "spoils": {"patient": "107", "slice": 53, "pixel_spacing_mm": [row_mm, col_mm]}}

Reading (``read_labelme``):

* The image comes from ``imageData`` (base64) if present, else from ``imagePath`` resolved
  relative to the json. An ``imagePath`` that resolves outside ``root`` is refused; ``root``
  defaults to the json's directory's parent's parent, i.e. ``DIR`` for the layout
  ``DIR/labelme/<patient>/<stem>.json`` of ``spoils_tf.data.layout``. Images go through
  ``images.to_uint8_gray`` (RGBA, 16-bit and RGB-greyscale images are accepted).
* Shapes are rasterised with ``labelme.utils.shape_to_mask`` and painted **in file order**:
  a later shape overwrites an earlier one where they overlap. A shape labelled
  ``_background_`` therefore cuts a hole. Labels are looked up case-insensitively in
  ``labels.LABELME_TO_ID``.
* Accepted shape types: ``polygon`` (>= 3 points), ``rectangle`` (2), ``circle`` (2:
  centre, point on the rim), ``oriented_rectangle`` (4) and ``mask`` (2-point box + base64
  PNG bit mask). ``point``, ``line`` and ``linestrip`` are **errors**: every spoils class
  is an area, and LabelMe would rasterise a line as a 10-px stroke and a point as a 5-px
  disc, areas nobody drew. Refusing the file is better than ignoring the shape silently.
* A vertex a little outside the image (up to ``POINT_MARGIN_FRACTION`` of its width /
  height, at least ``POINT_MARGIN_PX``) is clipped by the rasterisation; one farther out is
  refused (``shapes[i].points[j]``), since a corrupt coordinate would paint the whole image.
* ``spoils.pixel_spacing_mm`` must pass ``images.check_pixel_spacing`` (plausible mm values).
* Patient / slice: from the top-level ``"spoils"`` key when present, else
  ``layout.parse_stem(json stem)``, else patient = parent directory name and slice = 0.

Writing (``write_labelme`` / ``mask_to_shapes``): one polygon per connected component per
class (``cv2.findContours``, outer boundaries only, vertices at the centres of the
component's boundary pixels). Holes are handled by **painting order**, not by hole
polygons: shapes are sorted by the area enclosed by their outer boundary, largest first,
and background components enclosed inside the image get ``_background_`` polygons. A
component lying in a hole of another one encloses less area, so it is painted later; every
pixel ends up with the class of the last (smallest) shape containing it, which is its own.
Reading the file back reproduces the mask up to rasterisation differences of one pixel at
class boundaries (tests/test_labelme_io.py checks this).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import math
import pathlib
from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np
import PIL.Image
from labelme.utils import shape_to_mask as _labelme_shape_to_mask

from spoils_tf import fileio
from spoils_tf import labels
from spoils_tf.data import images, layout
from spoils_tf.errors import SpoilsError

# The LabelMe file-format version written (5.x keys; LabelMe 5 and 6 both open it).
LABELME_FORMAT_VERSION = "5.5.0"
SPOILS_KEY = "spoils"
# shape_type -> number of points required (None: at least 3).
_SHAPE_POINTS: dict[str, Optional[int]] = {
    "polygon": None,
    "rectangle": 2,
    "circle": 2,
    "oriented_rectangle": 4,
    "mask": 2,
}
_REFUSED_SHAPES = ("point", "line", "linestrip", "points")
# A vertex may lie outside the image by up to this fraction of the image's width (x) or
# height (y), or POINT_MARGIN_PX, whichever is larger: the LabelMe GUI lets a click land a
# little outside, and rasterising clips it. Farther out is a corrupt coordinate (a vertex at
# 1e12 px would paint the whole image) and the file is refused.
POINT_MARGIN_FRACTION: float = 0.25
POINT_MARGIN_PX: float = 5.0


class LabelMeError(SpoilsError):
    """A LabelMe file that cannot be read.

    Attributes:
        path: the json file (``pathlib.Path`` or the source string given).
        field: the json field at fault, e.g. ``"shapes[3].label"``, ``"imagePath"``,
            ``"json"`` (the file does not parse).
        reason: what was wrong and what was expected.
    """

    def __init__(self, path: Any, field: str, reason: str):
        super().__init__(path, field, reason)


@dataclasses.dataclass
class LabelMeRecord:
    """One annotated slice.

    Attributes:
        image: uint8 [H, W] greyscale.
        mask: int32 [H, W] class ids (``labels.SEG_CLASSES``).
        path: the json file.
        patient: patient id (str).
        slice: slice index within the patient's volume.
        pixel_spacing_mm: (row_mm, col_mm) or None when the file does not say.
        meta: ``version``, ``flags``, ``image_source`` ("imageData" | path of the image),
            ``patient_source`` ("spoils" | "stem" | "directory"), ``shape_labels`` (labels
            in file order) and any extra top-level keys of the file.
    """

    image: np.ndarray
    mask: np.ndarray
    path: pathlib.Path
    patient: str
    slice: int
    pixel_spacing_mm: Optional[tuple[float, float]]
    meta: dict


# === Shapes -> mask ===
def _check_points(points: Any, source: Any, field: str) -> list[list[float]]:
    if not isinstance(points, list) or not points:
        raise LabelMeError(source, field, f"expected a non-empty list of [x, y], got {points!r:.80}")
    out = []
    for j, p in enumerate(points):
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
                or not all(math.isfinite(v) for v in p)):
            raise LabelMeError(source, f"{field}[{j}]", f"expected [x, y] finite numbers, got {p!r:.80}")
        out.append([float(p[0]), float(p[1])])
    return out


def _check_inside(points: list[list[float]], shape_hw: tuple[int, int], source: Any,
                  field: str) -> None:
    """Refuses a vertex farther outside the image than the margin (``POINT_MARGIN_*``)."""
    h, w = shape_hw
    mx = max(POINT_MARGIN_PX, POINT_MARGIN_FRACTION * w)
    my = max(POINT_MARGIN_PX, POINT_MARGIN_FRACTION * h)
    for j, (x, y) in enumerate(points):
        if not (-mx <= x <= w - 1 + mx and -my <= y <= h - 1 + my):
            raise LabelMeError(source, f"{field}[{j}]",
                               f"vertex ({x:g}, {y:g}) lies far outside the {h}x{w} (HxW) "
                               f"image; expected x in {-mx:g}..{w - 1 + mx:g} and y in "
                               f"{-my:g}..{h - 1 + my:g} px (a little outside is clipped)")


def _label_id(label: Any, source: Any, field: str) -> int:
    if not isinstance(label, str):
        raise LabelMeError(source, field, f"expected a string label, got {label!r:.80}")
    key = label.strip().lower()
    if key not in labels.LABELME_TO_ID:
        expected = [c.labelme for c in labels.SEG_CLASSES]
        aliases = sorted(set(labels.LABELME_TO_ID) - {e.lower() for e in expected})
        raise LabelMeError(source, field, f"unknown label {label!r}; expected one of {expected} "
                           f"(case-insensitive; aliases {aliases})")
    return labels.LABELME_TO_ID[key]


def _shape_pixels(shape: Mapping, shape_hw: tuple[int, int], source: Any, field: str) -> np.ndarray:
    """bool [H, W] pixels covered by one validated shape."""
    shape_type = shape.get("shape_type") or "polygon"
    if not isinstance(shape_type, str):
        raise LabelMeError(source, f"{field}.shape_type", f"expected a string, got {shape_type!r:.80}")
    if shape_type in _REFUSED_SHAPES:
        raise LabelMeError(source, f"{field}.shape_type",
                           f"shape type {shape_type!r} has no area; expected one of {sorted(_SHAPE_POINTS)}")
    if shape_type not in _SHAPE_POINTS:
        raise LabelMeError(source, f"{field}.shape_type",
                           f"unknown shape type {shape_type!r}; expected one of {sorted(_SHAPE_POINTS)}")
    points = _check_points(shape.get("points"), source, f"{field}.points")
    need = _SHAPE_POINTS[shape_type]
    if need is None and len(points) < 3:
        raise LabelMeError(source, f"{field}.points",
                           f"polygon has {len(points)} point(s); expected at least 3")
    if need is not None and len(points) != need:
        raise LabelMeError(source, f"{field}.points",
                           f"{shape_type} has {len(points)} point(s); expected {need}")
    h, w = shape_hw
    _check_inside(points, (h, w), source, f"{field}.points")
    if shape_type == "mask":
        data = shape.get("mask")
        if not isinstance(data, str):
            raise LabelMeError(source, f"{field}.mask", "expected a base64 PNG bit mask")
        try:
            with PIL.Image.open(io.BytesIO(base64.b64decode(data))) as im:
                bits = np.asarray(im).astype(bool)
        except (binascii.Error, OSError, ValueError) as e:
            raise LabelMeError(source, f"{field}.mask", f"not a base64 PNG ({e})") from e
        if bits.ndim == 3:
            bits = bits[:, :, 0]
        (x1, y1), (x2, y2) = np.asarray(points).astype(int)
        if (y2 - y1 + 1, x2 - x1 + 1) != bits.shape:
            raise LabelMeError(source, f"{field}.mask",
                               f"bit mask of shape {bits.shape} does not fit box {points}")
        full = np.zeros((h + max(0, y2 + 1 - h), w + max(0, x2 + 1 - w)), bool)
        if x1 < 0 or y1 < 0:
            raise LabelMeError(source, f"{field}.points", f"mask box {points} starts outside the image")
        full[y1:y2 + 1, x1:x2 + 1] = bits
        return full[:h, :w]
    return _labelme_shape_to_mask((h, w), points, shape_type)


def shapes_to_mask(shapes: Sequence[Mapping], shape_hw: tuple[int, int], source: Any) -> np.ndarray:
    """Rasterises LabelMe shapes to an ``int32 [H, W]`` class-id mask, painted in list order.

    Args:
        shapes: LabelMe shape dicts (``label``, ``points``, ``shape_type``, ...).
        shape_hw: (H, W) of the image, pixels.
        source: the file the shapes come from, for error messages.

    Raises:
        LabelMeError: unknown label, malformed points, too few points, a vertex far
            outside the image, or a shape type without area (see the module docstring);
            ``field`` names the shape.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    mask = np.zeros((h, w), np.int32)
    if not isinstance(shapes, (list, tuple)):
        raise LabelMeError(source, "shapes", f"expected a list of shapes, got {type(shapes).__name__}")
    for i, shape in enumerate(shapes):
        field = f"shapes[{i}]"
        if not isinstance(shape, Mapping):
            raise LabelMeError(source, field, f"expected an object, got {shape!r:.80}")
        class_id = _label_id(shape.get("label"), source, f"{field}.label")
        mask[_shape_pixels(shape, (h, w), source, field)] = class_id
    return mask


# === Mask -> shapes ===
def _contour_points(contour: np.ndarray) -> list[list[float]]:
    pts = [[float(x), float(y)] for x, y in contour.reshape(-1, 2)]
    if len(pts) == 1:  # a single pixel
        pts = pts * 3
    elif len(pts) == 2:  # a 1-px-wide straight run: there and back again
        pts = [pts[0], pts[1], pts[0]]
    return pts


def _enclosed_background_contours(binary: np.ndarray) -> list[np.ndarray]:
    """Outer contours of the 4-connected background components not touching the border.

    Background is 4-connected because the foreground is traced 8-connected (a background
    pocket behind a diagonal gap is a hole of the foreground component around it).
    """
    h, w = binary.shape
    n, comp, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
    out = []
    for k in range(1, n):
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        if x == 0 or y == 0 or x + bw == w or y + bh == h:
            continue  # the canvas starts as background
        crop = (comp[y:y + bh, x:x + bw] == k).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x, y))
        out.extend(contours)
    return out


def mask_to_shapes(mask: np.ndarray) -> list[dict]:
    """LabelMe polygon shapes that ``shapes_to_mask`` paints back into ``mask``.

    One polygon per 8-connected component per class (foreground classes, plus background
    components that do not touch the image border), ordered by enclosed area, largest
    first (see the module docstring for why this reproduces holes). Components of one or
    two pixels become degenerate polygons (points repeated) so that they are not lost.

    Args:
        mask: int [H, W] class ids in ``0..labels.NUM_SEG_CLASSES - 1``.

    Raises:
        ValueError: wrong shape or a value that is not a class id.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {m.shape}")
    ids = np.unique(m)
    bad = [int(v) for v in ids if v not in range(labels.NUM_SEG_CLASSES)]
    if bad:
        raise ValueError(f"mask has values {bad}; expected class ids 0..{labels.NUM_SEG_CLASSES - 1}")
    h, w = m.shape
    found = []  # (enclosed_area, n_pixels, class_id, y, x, points)
    for class_id in (int(v) for v in ids):
        binary = (m == class_id).astype(np.uint8)
        if class_id == labels.BACKGROUND_ID:
            contours = _enclosed_background_contours(binary)
        else:
            contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            # hierarchy[0][i][3] != -1: a hole boundary; holes are painted by what fills them.
            contours = [] if hierarchy is None else [
                    c for c, hier in zip(contours, hierarchy[0]) if hier[3] == -1]
        for contour in contours:
            xs, ys = contour[:, 0, 0], contour[:, 0, 1]
            area = float(cv2.contourArea(contour))
            found.append((area, len(contour), class_id, int(ys.min()), int(xs.min()),
                          _contour_points(contour)))
    found.sort(key=lambda t: (-t[0], -t[1], t[2], t[3], t[4]))
    return [{"label": labels.SEG_CLASSES[c].labelme, "points": pts, "group_id": None,
             "description": "", "shape_type": "polygon", "flags": {}, "mask": None}
            for _, _, c, _, _, pts in found]


# === Files ===


def _spoils_meta(raw: Mapping, source: pathlib.Path
                 ) -> tuple[Optional[str], Optional[int], Optional[tuple[float, float]]]:
    """(patient, slice, pixel_spacing_mm) from the ``"spoils"`` key; None where absent."""
    meta = raw.get(SPOILS_KEY)
    if meta is None:
        return None, None, None
    if not isinstance(meta, Mapping):
        raise LabelMeError(source, SPOILS_KEY, f"expected an object, got {meta!r:.80}")
    patient = meta.get("patient")
    if patient is not None and (not isinstance(patient, (str, int)) or isinstance(patient, bool)
                                or str(patient) == ""):
        raise LabelMeError(source, f"{SPOILS_KEY}.patient",
                           f"expected a non-empty string, got {patient!r:.80}")
    slice_index = meta.get("slice")
    if slice_index is not None and (not isinstance(slice_index, int) or isinstance(slice_index, bool)
                                    or slice_index < 0):
        raise LabelMeError(source, f"{SPOILS_KEY}.slice",
                           f"expected an integer >= 0, got {slice_index!r:.80}")
    spacing = meta.get("pixel_spacing_mm")
    if spacing is not None:
        field = f"{SPOILS_KEY}.pixel_spacing_mm"
        if not (isinstance(spacing, (list, tuple))
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spacing)):
            raise LabelMeError(source, field, f"expected [row_mm, col_mm], two numbers, got "
                                              f"{spacing!r:.80}")
        try:
            spacing = images.check_pixel_spacing(spacing, source, field)
        except SpoilsError as e:
            raise LabelMeError(source, field, e.reason) from None
    return (None if patient is None else str(patient)), slice_index, spacing


def _load_image(raw: Mapping, path: pathlib.Path, root: pathlib.Path) -> tuple[np.ndarray, str]:
    data = raw.get("imageData")
    if data:
        if not isinstance(data, str):
            raise LabelMeError(path, "imageData", "expected a base64 string or null")
        try:
            decoded = base64.b64decode(data, validate=True)
            return images.decode_image_gray(decoded, f"{path} imageData"), "imageData"
        except (binascii.Error, ValueError) as e:
            raise LabelMeError(path, "imageData", f"not a readable base64 greyscale image ({e})") from e
    image_path = raw.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise LabelMeError(path, "imagePath", f"no imageData and imagePath is {image_path!r:.80}; "
                           "expected a file name relative to the json")
    rel = pathlib.PureWindowsPath(image_path).as_posix() if "\\" in image_path else image_path
    resolved = (path.parent / rel).resolve()
    if not resolved.is_relative_to(root):
        raise LabelMeError(path, "imagePath", f"{image_path!r} resolves to {resolved}, outside the "
                           f"dataset root {root}; expected an image inside it")
    if not resolved.is_file():
        raise LabelMeError(path, "imagePath", f"image file {resolved} not found")
    try:
        return images.read_image_gray(resolved), str(resolved)
    except ValueError as e:
        raise LabelMeError(path, "imagePath", str(e)) from e


def read_labelme(path: str | pathlib.Path, root: str | pathlib.Path | None = None) -> LabelMeRecord:
    """Reads one LabelMe json into a ``LabelMeRecord`` (rules in the module docstring).

    Args:
        path: the ``.json`` file.
        root: directory the image must lie in; default the json's directory's parent's
            parent (``DIR`` for ``DIR/labelme/<patient>/<stem>.json``).

    Raises:
        LabelMeError: naming the file and field: unreadable/invalid JSON (field ``json``),
            missing image (``imagePath``), image outside ``root`` (``imagePath``),
            bad ``imageData``, ``imageHeight``/``imageWidth`` not matching the image,
            bad ``shapes[i].*`` (unknown label, too few points, a vertex far outside the
            image, shape type without area), bad ``spoils.*`` metadata (an implausible
            pixel spacing included); an image larger than ``images.MAX_IMAGE_PIXELS``
            (``imagePath`` / ``imageData``).
    """
    path = pathlib.Path(path)
    root = (path.resolve().parent.parent.parent if root is None else pathlib.Path(root)).resolve()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise LabelMeError(path, "json", "file not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelMeError(path, "json", f"invalid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise LabelMeError(path, "json", f"expected a JSON object at the top level, got {type(raw).__name__}")
    if "shapes" not in raw:
        raise LabelMeError(path, "shapes", "missing; expected a list of shapes")

    image, image_source = _load_image(raw, path, root)
    h, w = image.shape
    for field, actual in (("imageHeight", h), ("imageWidth", w)):
        declared = raw.get(field)
        if declared is not None and declared != actual:
            raise LabelMeError(path, field, f"declares {declared!r} but the image is {h}x{w} (HxW)")

    mask = shapes_to_mask(raw["shapes"], (h, w), path)
    patient, slice_index, spacing = _spoils_meta(raw, path)
    patient_source = "spoils"
    if patient is None or slice_index is None:
        try:
            stem_patient, stem_slice = layout.parse_stem(path.stem)
            patient_source = "stem"
        except ValueError:
            stem_patient, stem_slice = path.parent.name, 0
            patient_source = "directory"
        patient = stem_patient if patient is None else patient
        slice_index = stem_slice if slice_index is None else slice_index
    reserved = {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth",
                SPOILS_KEY}
    meta = {"version": raw.get("version"), "flags": raw.get("flags") or {},
            "image_source": image_source, "patient_source": patient_source,
            "shape_labels": [s.get("label") for s in raw["shapes"]]}
    meta.update({k: v for k, v in raw.items() if k not in reserved})
    return LabelMeRecord(image=image, mask=mask, path=path, patient=patient, slice=int(slice_index),
                         pixel_spacing_mm=spacing, meta=meta)


def write_labelme(json_path: str | pathlib.Path, image: np.ndarray, mask: np.ndarray, *,
                  patient: Optional[str] = None, slice_index: Optional[int] = None,
                  pixel_spacing_mm: Optional[Sequence[float]] = None,
                  embed_image: bool = False) -> pathlib.Path:
    """Writes ``image`` + ``mask`` as a LabelMe 5.x json (and a sibling ``<stem>.png``).

    Args:
        json_path: destination ``.json``; parent directories are created.
        image: any array ``images.to_uint8_gray`` accepts; stored as uint8 greyscale PNG.
        mask: int [H, W] class ids, same H, W as the image.
        patient, slice_index: recorded under the ``"spoils"`` key; when None they are
            taken from ``layout.parse_stem(json stem)`` if the stem has that form.
        pixel_spacing_mm: (row_mm, col_mm) or None (recorded as null).
        embed_image: True -> base64 PNG in ``imageData`` and no PNG file; False ->
            ``imageData`` null and ``imagePath`` = ``<stem>.png`` written next to the json.

    Returns:
        ``json_path`` as a ``pathlib.Path``.

    Both files are written atomically (temporary file + ``os.replace``), PNG first, so a
    json never points at a missing or partial image.

    Raises:
        ValueError: image/mask shapes differ, mask values that are not class ids, an image
            ``to_uint8_gray`` refuses, or a ``pixel_spacing_mm`` that
            ``images.check_pixel_spacing`` refuses (``SpoilsError``).
    """
    json_path = pathlib.Path(json_path)
    gray = images.to_uint8_gray(image, str(json_path))
    m = np.asarray(mask)
    if m.shape != gray.shape:
        raise ValueError(f"{json_path}: mask shape {m.shape} differs from image shape {gray.shape}")
    shapes = mask_to_shapes(m)
    if patient is None or slice_index is None:
        try:
            stem_patient, stem_slice = layout.parse_stem(json_path.stem)
        except ValueError:
            stem_patient, stem_slice = None, None
        patient = stem_patient if patient is None else patient
        slice_index = stem_slice if slice_index is None else slice_index
    spacing = None
    if pixel_spacing_mm is not None:
        spacing = list(images.check_pixel_spacing(pixel_spacing_mm, json_path, "pixel_spacing_mm"))
    png = images.encode_png(gray)
    image_name = f"{json_path.stem}.png"
    payload = {
        "version": LABELME_FORMAT_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": base64.b64encode(png).decode("ascii") if embed_image else None,
        "imageHeight": int(gray.shape[0]),
        "imageWidth": int(gray.shape[1]),
        SPOILS_KEY: {"patient": None if patient is None else str(patient),
                     "slice": None if slice_index is None else int(slice_index),
                     "pixel_spacing_mm": spacing},
    }
    if not embed_image:
        fileio.atomic_write_bytes(json_path.parent / image_name, png)
    fileio.write_json(json_path, payload, indent=1)
    return json_path
