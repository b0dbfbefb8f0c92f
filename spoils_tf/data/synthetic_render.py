"""The image and mask of one synthetic slice: a T2-like uint8 picture of its polygons.

:func:`render_slice` paints the polygons of a ``SliceShapes``
(``spoils_tf.data.synthetic_slice``) into the 14-class mask (labelled shapes by pixel centres,
``spoils_tf.data.polygons.rasterize``) and into nominal intensities, then applies the scanner's
point spread, coil bias and Rician noise. :func:`patient_textures` draws the smooth random
fields a patient's slices share from ``np.random.default_rng([seed, index, 3])``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from spoils_tf import labels
from spoils_tf.data.polygons import fill_polygon_cv2, rasterize, rasterize_crop
from spoils_tf.data.synthetic_anatomy import (ANNULUS_INTENSITY, CANAL_GAP_MM, CSF_INTENSITY,
                                              NUCLEUS_CUTOFF, NUCLEUS_INTENSITY,
                                              NUCLEUS_SOFTNESS, Part, PatientAnatomy)
from spoils_tf.data.synthetic_slice import SliceShapes
from spoils_tf.geometry.frame import frame_axes

# === Rendering ===
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """float32 [H, W] smooth Gaussian random field, unit std, correlation length ~ sigma_px.

    Drawn on a grid coarsened by up to sigma_px / 2 and resized (bicubic), which keeps large
    correlation lengths cheap.
    """
    h, w = shape
    step = max(1.0, sigma_px / 2.0)
    gh, gw = max(4, int(math.ceil(h / step)) + 4), max(4, int(math.ceil(w / step)) + 4)
    white = rng.standard_normal((gh, gw)).astype(np.float32)
    sig = sigma_px / step
    f = cv2.GaussianBlur(white, (0, 0), sigmaX=sig, sigmaY=sig, borderType=cv2.BORDER_REFLECT)
    if step > 1.0:
        f = cv2.resize(f, (int(round(gw * step)), int(round(gh * step))), interpolation=cv2.INTER_CUBIC)
    f = f[:h, :w]
    return (f - f.mean()) / (f.std() + 1e-12)


def _px(poly_mm: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """mm polygon [N, 2] (x, y) -> pixel units (x / col_mm, y / row_mm)."""
    return np.asarray(poly_mm) / np.array([spacing_mm[1], spacing_mm[0]])[None, :]


# Soft-tissue layers, placed by the signed distance r (mm) of a pixel from the column's centre
# line (posterior positive), which a smooth texture moves by up to COLUMN_WOBBLE_MM.
COLUMN_HALF_DEPTH_MM: float = 17.0        # where the layers place the column's anterior edge
COLUMN_WOBBLE_MM: float = 3.0
ABDOMEN_INTENSITY: float = 0.22           # anterior of the prevertebral layer
BOWEL_CONTRAST: float = 0.1               # x tanh(BOWEL_GAIN x the bowel texture)
BOWEL_GAIN: float = 1.2
FINE_TEXTURE_CONTRAST: float = 0.03       # x the fine texture, everywhere
PREVERTEBRAL_INTENSITY: float = 0.24
LIGAMENT_INTENSITY: float = 0.07          # the dark band from 1 mm anterior of the column
LIGAMENT_OFFSET_MM: float = 1.0
POSTERIOR_LAYER_INTENSITY: float = 0.45   # behind the canal, around the posterior elements
LAYER_TEXTURE_CONTRAST: float = 0.04      # prevertebral and posterior layers, x fine texture
MUSCLE_TEXTURE_CONTRAST: float = 0.12     # relative, x fine texture
FAT_TEXTURE_CONTRAST: float = 0.05        # relative, x fine texture
SKIN_INTENSITY: float = 0.3
SKIN_THICKNESS_MM: float = 2.0            # air (0) beyond it
# Bone: marrow intensity varies by MARROW_TEXTURE_CONTRAST (relative); a dark cortex lines
# vertebral bodies (BODY_CORTEX_MM) and posterior elements (LAMINA_CORTEX_MM).
MARROW_TEXTURE_CONTRAST: float = 0.07
LAMINA_MARROW_FACTOR: float = 0.9
LAMINA_CORTEX_MM: float = 1.2
LAMINA_CORTEX_INTENSITY: float = 0.08
BODY_CORTEX_MM: float = 1.0
BODY_CORTEX_INTENSITY: float = 0.1
# Darker bands inside the canal: (centre, width) as fractions of the canal's AP diameter from
# its anterior wall, intensity, and whether it is the cord (down to the conus, the lower end
# of L1) or a root (from ROOTS_ABOVE_CONUS_MM above the conus down).
CANAL_BANDS: tuple[tuple[float, float, float, bool], ...] = (
        (0.45, 0.4, 0.38, True), (0.35, 0.04, 0.7, False), (0.6, 0.04, 0.72, False))
ROOTS_ABOVE_CONUS_MM: float = 10.0
# The image-only T11-T12 disc: a grade-2 nucleus with semi-axes these fractions of the disc's
# width and height.
IMAGE_ONLY_DISC_GRADE: int = 2
IMAGE_ONLY_NUCLEUS_SEMI_AXES: tuple[float, float] = (0.3, 0.25)
# Acquisition: Gaussian point spread (pixels), a coil bias rising (sigmoid in r, width
# ``tissue["bias_width_mm"]``) from ``tissue["bias_floor"]`` anteriorly to BIAS_MAX, centred
# BIAS_CENTRE_MM anterior of the column edge, with BIAS_TEXTURE_CONTRAST smooth variation;
# Rician noise; grey value = magnitude x GREY_SCALE, clipped to uint8.
POINT_SPREAD_SIGMA_PX: float = 0.7
BIAS_MAX: float = 1.05
BIAS_CENTRE_MM: float = 20.0
BIAS_TEXTURE_CONTRAST: float = 0.12
GREY_SCALE: float = 215.0


def render_slice(anat: PatientAnatomy, shapes: SliceShapes, size: int,
                 spacing_mm: tuple[float, float], rng: np.random.Generator,
                 textures: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and mask of one slice.

    Painting order (image and mask alike; later overwrites earlier): soft-tissue layers,
    posterior elements, canal (CSF, cord, roots), vertebrae, discs. Labelled shapes use
    ``rasterize`` (pixel centres); image-only details use ``cv2.fillPoly``.

    Args:
        size: image height = width (pixels). spacing_mm: (row_mm, col_mm).
        rng: the slice's noise generator. textures: per-patient fields from ``patient_textures``.

    Returns:
        (image uint8 [H, W], mask int32 [H, W], clean float32 [H, W] nominal intensities
        before point spread, bias field and noise).
    """
    hw = (size, size)
    mask = np.zeros(hw, np.int32)
    r, below_s1 = _column_distance(anat, shapes, size, spacing_mm, textures)
    img = _soft_tissue(anat, r, below_s1, textures, hw)
    marrow = anat.marrow_intensity * (1 + MARROW_TEXTURE_CONTRAST * textures["marrow"])
    _paint_posterior_elements(img, shapes, marrow, spacing_mm)
    _paint_canal(img, mask, shapes, spacing_mm)
    _paint_parts(img, mask, anat, shapes, marrow, spacing_mm)
    clean = img.copy()
    return _acquire(img, r, anat.tissue, textures, rng), mask, clean


def _column_distance(anat: PatientAnatomy, shapes: SliceShapes, size: int,
                     spacing_mm: tuple[float, float], textures: dict
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(r float32 [H, W]: signed distance (mm) along x from the column centre line x_c(y),
    through the part centres and extended linearly at both ends, plus the wobble texture;
    below_s1 bool [H, 1]: the rows below the centre of S1)."""
    sr, sc = spacing_mm
    x_mm = (np.arange(size, dtype=np.float32) * sc)[None, :]
    y_mm = (np.arange(size, dtype=np.float32) * sr)[:, None]
    centres = np.array([p.centre + shapes.origin_mm for p in anat.parts])
    cy, cxs = centres[:, 1], centres[:, 0]
    yc = y_mm[:, 0]
    cx = np.interp(yc, cy, cxs)
    top_slope = (cxs[1] - cxs[0]) / (cy[1] - cy[0])
    bot_slope = (cxs[-1] - cxs[-2]) / (cy[-1] - cy[-2])
    cx = np.where(yc < cy[0], cxs[0] + (yc - cy[0]) * top_slope, cx)
    cx = np.where(yc > cy[-1], cxs[-1] + (yc - cy[-1]) * bot_slope, cx)
    r = (x_mm - cx[:, None].astype(np.float32)) + COLUMN_WOBBLE_MM * textures["wobble"]
    below_s1 = (y_mm > float(cy[[p.name for p in anat.parts].index("S1")]))
    return r, below_s1


def _soft_tissue(anat: PatientAnatomy, r: np.ndarray, below_s1: np.ndarray, textures: dict,
                 hw: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] nominal intensities of the soft-tissue layers across the column (abdomen,
    prevertebral, ligaments, posterior layer, muscle, fat, skin, air)."""
    t = anat.tissue
    half_w = COLUMN_HALF_DEPTH_MM
    back = half_w + CANAL_GAP_MM + anat.canal_diameter_mm
    fine = textures["fine"]
    img = (ABDOMEN_INTENSITY + BOWEL_CONTRAST * np.tanh(BOWEL_GAIN * textures["bowel"])
           + FINE_TEXTURE_CONTRAST * fine).astype(np.float32)
    layers = [  # (r >= start) -> intensity field, later layers overwrite
            (-half_w - t["prevertebral_mm"], PREVERTEBRAL_INTENSITY + LAYER_TEXTURE_CONTRAST * fine),
            (-half_w - LIGAMENT_OFFSET_MM, np.full(hw, LIGAMENT_INTENSITY, np.float32)),
            (back, POSTERIOR_LAYER_INTENSITY + LAYER_TEXTURE_CONTRAST * fine),
            (back + t["posterior_elements_mm"],
             t["muscle_intensity"] * (1 + MUSCLE_TEXTURE_CONTRAST * fine)),
            (back + t["posterior_elements_mm"] + t["muscle_mm"],
             t["fat_intensity"] * (1 + FAT_TEXTURE_CONTRAST * fine)),
    ]
    for i, (start, field) in enumerate(layers):
        sel = r >= start
        if i == 1:  # the dark column layer (ligaments, endplates) stops at the sacrum
            sel &= ~below_s1
        img[sel] = np.broadcast_to(field, hw)[sel]
    r_skin = back + t["posterior_elements_mm"] + t["muscle_mm"] + t["fat_mm"]
    img[r >= r_skin] = SKIN_INTENSITY
    img[r >= r_skin + SKIN_THICKNESS_MM] = 0.0
    return img


def _paint_posterior_elements(img: np.ndarray, shapes: SliceShapes, marrow: np.ndarray,
                              spacing_mm: tuple[float, float]) -> None:
    """Laminae and spinous processes (image only): marrow with a dark cortex, in place."""
    hw = img.shape
    for poly in shapes.posterior_elements:
        inside = fill_polygon_cv2(_px(poly, spacing_mm), hw)
        img[inside] = LAMINA_MARROW_FACTOR * marrow[inside]
        dist = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3) * min(spacing_mm)
        img[inside & (dist < LAMINA_CORTEX_MM)] = LAMINA_CORTEX_INTENSITY


def _paint_canal(img: np.ndarray, mask: np.ndarray, shapes: SliceShapes,
                 spacing_mm: tuple[float, float]) -> None:
    """The canal (label and CSF), with the cord down to the conus and roots below as darker
    bands inside it, in place."""
    if shapes.canal is None:
        return
    hw = img.shape
    inside = rasterize(_px(shapes.canal, spacing_mm), hw)  # full frame: bands are clipped to it
    mask[inside] = labels.CANAL_ID
    img[inside] = CSF_INTENSITY
    front, back_line = shapes.canal_lines
    conus_y = shapes.parts["L1"][1][:, 1].max() if "L1" in shapes.parts else None
    for frac, width, inten, is_cord in CANAL_BANDS:
        a = front + (frac - width / 2) * (back_line - front)
        b = front + (frac + width / 2) * (back_line - front)
        if conus_y is None:
            sel = np.full(len(a), not is_cord)
        else:
            sel = a[:, 1] <= conus_y if is_cord else a[:, 1] >= conus_y - ROOTS_ABOVE_CONUS_MM
        if sel.sum() < 2:
            continue
        band = np.concatenate([a[sel], b[sel][::-1]])
        img[fill_polygon_cv2(_px(band, spacing_mm), hw) & inside] = inten


def _paint_parts(img: np.ndarray, mask: np.ndarray, anat: PatientAnatomy, shapes: SliceShapes,
                 marrow: np.ndarray, spacing_mm: tuple[float, float]) -> None:
    """Vertebrae (marrow, dark cortex) and discs (annulus with the nucleus profile), labels and
    intensities, in place."""
    hw = img.shape
    for name, (part, poly) in shapes.parts.items():
        crop, r0, c0 = rasterize_crop(_px(poly, spacing_mm), hw)
        if crop.size == 0:
            continue
        win = (slice(r0, r0 + crop.shape[0]), slice(c0, c0 + crop.shape[1]))
        mask[win][crop] = part.class_id
        sub = img[win]
        if part.kind == "disc":
            _paint_disc(sub, crop, (r0, c0), anat, shapes, name, part, spacing_mm)
        else:
            padded = np.pad(crop, 1).astype(np.uint8)
            dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1] * min(spacing_mm)
            sub[crop] = marrow[win][crop]
            sub[crop & (dist < BODY_CORTEX_MM)] = BODY_CORTEX_INTENSITY


def _paint_disc(sub: np.ndarray, crop: np.ndarray, origin_rc: tuple[int, int],
                anat: PatientAnatomy, shapes: SliceShapes, name: str, part: Part,
                spacing_mm: tuple[float, float]) -> None:
    """A disc's intensities in ``sub`` (the image window of its bounding ``crop``, whose pixel
    (0, 0) is image pixel ``origin_rc``): annulus plus the grade's nucleus profile, a sigmoid
    in the normalised elliptic radius centred on the trapezoid centre, in place."""
    sr, sc = spacing_mm
    r0, c0 = origin_rc
    spec = next((s for s in anat.discs if s.level == name), None)
    g = shapes.scale[name]
    u, v = frame_axes(part.tilt_deg)
    cen = part.centre + shapes.origin_mm  # the nucleus is centred on the trapezoid centre
    rr, cc = np.nonzero(crop)
    dx, dy = (cc + c0) * sc - cen[0], (rr + r0) * sr - cen[1]
    a = dx * u[0] + dy * u[1]
    b = dx * v[0] + dy * v[1]
    if spec is None:  # T11-T12, image only: a healthy-looking disc
        grade = IMAGE_ONLY_DISC_GRADE
        i_n, k = NUCLEUS_INTENSITY[grade], NUCLEUS_SOFTNESS[grade]
        fa, fb = IMAGE_ONLY_NUCLEUS_SEMI_AXES
        an, bn = fa * np.ptp(part.local[:, 0]) * g, fb * np.ptp(part.local[:, 1]) * g
    else:
        i_n, k = spec.nucleus_intensity, spec.nucleus_softness
        an, bn = spec.nucleus_a_mm * g, spec.nucleus_b_mm * g
    rho = np.sqrt((a / an) ** 2 + (b / bn) ** 2)
    prof = np.where(rho <= NUCLEUS_CUTOFF, 1 / (1 + np.exp(-(1 - rho) / k)), 0.0)
    sub[rr, cc] = ANNULUS_INTENSITY + (i_n - ANNULUS_INTENSITY) * prof


def _acquire(img: np.ndarray, r: np.ndarray, tissue: dict, textures: dict,
             rng: np.random.Generator) -> np.ndarray:
    """The scanner's view of the nominal intensities ``img``: point spread, coil bias (falling
    off anteriorly), Rician noise (two normal draws from ``rng``, in that order), uint8."""
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=POINT_SPREAD_SIGMA_PX, sigmaY=POINT_SPREAD_SIGMA_PX,
                           borderType=cv2.BORDER_REFLECT)
    b_min = tissue["bias_floor"]
    sigm = 1 / (1 + np.exp(-(r + COLUMN_HALF_DEPTH_MM + BIAS_CENTRE_MM) / tissue["bias_width_mm"]))
    bias = (b_min + (BIAS_MAX - b_min) * sigm) * (1 + BIAS_TEXTURE_CONTRAST * textures["bias"])
    sig = tissue["noise_sigma"]
    hw = img.shape
    n1 = rng.standard_normal(hw).astype(np.float32) * sig
    n2 = rng.standard_normal(hw).astype(np.float32) * sig
    mag = np.sqrt((img * bias + n1) ** 2 + n2 ** 2)
    return np.clip(np.rint(mag * GREY_SCALE), 0, 255).astype(np.uint8)


def patient_textures(seed: int, index: int, size: int, spacing_mm: tuple[float, float]) -> dict:
    """Per-patient smooth random fields float32 [H, W] (shared by the patient's slices)."""
    rng = np.random.default_rng([int(seed), int(index), 3])
    px = 1.0 / min(spacing_mm)
    hw = (size, size)
    return {"wobble": _smooth_noise(rng, hw, 25.0 * px), "bowel": _smooth_noise(rng, hw, 3.0 * px),
            "fine": _smooth_noise(rng, hw, 0.8 * px), "marrow": _smooth_noise(rng, hw, 1.2 * px),
            "bias": _smooth_noise(rng, hw, 60.0 * px)}
