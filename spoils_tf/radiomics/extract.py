"""IBSI radiomics of one disc on one sagittal slice, with pyradiomics.

``disc_slice_features(image, mask, disc_id, spacing_mm, reference, settings)`` returns the
features of one disc's mask on one slice, or NaN with a reason. Every feature is computed by
pyradiomics (``radiomics.featureextractor.RadiomicsFeatureExtractor``, IBSI-compliant apart
from the deviations its documentation lists); this module only prepares its inputs:

1. **Crop**: the disc's bounding box plus ``settings.margin_px`` pixels (so the LoG and
   wavelet filters see the tissue around the disc, not the crop's edge).
2. **Intensity normalisation**: ``image / reference * settings.reference_scale``, where
   ``reference`` is the median intensity of a reference tissue (the spinal canal's CSF on T2,
   ``spoils_tf.radiomics.table``), so a disc as bright as CSF reads ``reference_scale`` on
   every scanner. Texture uses a fixed bin width (``settings.bin_width``) in these units.
3. **2-D filters through a 3-D library**: pyradiomics' LoG filter refuses images thinner than
   4 voxels, so the 2-D crop is repeated ``Z_COPIES`` times along z with the mask on the middle
   copy only (``force2D``, in-plane texture). A constant signal along z has zero z-derivatives,
   so the LoG response of the middle copy is the in-plane 2-D LoG (pinned by a test against
   ``scipy.ndimage.gaussian_laplace``); the LoG columns are therefore named ``-2D``. Wavelets
   with ``force2D`` decompose in-plane only (LH, HL, HH, LL).

Feature names are ``radiomics/<image type>_<class>_<feature>``, e.g.
``radiomics/original_glcm_Contrast``, ``radiomics/log-sigma-2-0-mm-2D_firstorder_Mean``,
``radiomics/wavelet-HH_glszm_ZoneEntropy``. pyradiomics is imported on first use, so the
rest of the package imports without it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

PREFIX = "radiomics/"
FEATURE_CLASSES: tuple[str, ...] = ("shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm",
                                    "ngtdm")
# Copies of the 2-D crop along z (odd, so one copy is in the middle); enough for the largest
# LoG sigma at the z spacing used (pyradiomics needs size >= ceil(sigma / spacing) + 1).
Z_COPIES = 5
Z_SPACING_MM = 10.0

# Reason codes (the ``reason`` column; ``;``-joined).
REASON_TINY_MASK = "mask_too_small"
REASON_EMPTY_MASK = "mask_empty"
REASON_NO_REFERENCE = "no_reference_tissue"
REASON_EXTRACTION = "extraction_failed"

log = logging.getLogger(__name__)


# === Settings ===
@dataclasses.dataclass(frozen=True)
class RadiomicsSettings:
    """Everything that changes a radiomics value; saved next to every feature table.

    Attributes:
        bin_width: fixed bin width for texture and first-order entropy, in normalised units
            (``reference_scale`` = the reference tissue's median).
        reference_scale: the value the reference tissue's median intensity is mapped to.
        feature_classes: pyradiomics feature classes (``FEATURE_CLASSES`` or a subset).
        log_sigmas_mm: LoG sigmas in mm (empty = no LoG images).
        wavelet: add the four in-plane stationary wavelet images.
        wavelet_name: a PyWavelets wavelet name.
        min_pixels: a disc with fewer mask pixels on a slice is not measured there.
        margin_px: pixels around the disc's bounding box kept in the crop.
        n_middle_slices: slices per disc (those nearest the disc's middle slice) whose
            features are averaged (``spoils_tf.radiomics.table``).
        min_reference_pixels: fewer reference-tissue pixels on a slice -> the patient's
            median over all slices is used instead.
    """

    bin_width: float = 5.0
    reference_scale: float = 100.0
    feature_classes: tuple[str, ...] = FEATURE_CLASSES
    log_sigmas_mm: tuple[float, ...] = (1.0, 2.0, 3.0)
    wavelet: bool = True
    wavelet_name: str = "coif1"
    min_pixels: int = 30
    margin_px: int = 12
    n_middle_slices: int = 3
    min_reference_pixels: int = 50

    def __post_init__(self):
        unknown = [c for c in self.feature_classes if c not in FEATURE_CLASSES]
        if unknown:
            raise ValueError(f"settings.feature_classes: unknown {unknown}; expected a subset "
                             f"of {FEATURE_CLASSES}")
        if not self.bin_width > 0 or not self.reference_scale > 0:
            raise ValueError(f"settings.bin_width ({self.bin_width}) and reference_scale "
                             f"({self.reference_scale}) must be > 0")
        if max(self.log_sigmas_mm, default=0.0) >= Z_SPACING_MM * (Z_COPIES - 1):
            raise ValueError(f"settings.log_sigmas_mm: {self.log_sigmas_mm} too large for "
                             f"{Z_COPIES} z copies at {Z_SPACING_MM} mm")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "RadiomicsSettings":
        """Settings from a dict / ConfigDict (unknown keys raise ``TypeError``); sequences
        become tuples."""
        kw = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(m).items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def pyradiomics_params(settings: RadiomicsSettings, spacing_mm: Sequence[float]) -> dict:
    """The parameter dict handed to ``RadiomicsFeatureExtractor`` (saved with the table)."""
    image_types: dict[str, dict] = {"Original": {}}
    if settings.log_sigmas_mm:
        image_types["LoG"] = {"sigma": [float(s) for s in settings.log_sigmas_mm]}
    if settings.wavelet:
        image_types["Wavelet"] = {"wavelet": settings.wavelet_name}
    return {
        "imageType": image_types,
        "featureClass": {c: [] for c in settings.feature_classes},
        "setting": {"binWidth": float(settings.bin_width), "force2D": True,
                    "force2Ddimension": 0, "label": 1, "normalize": False,
                    "correctMask": False, "minimumROIDimensions": 2,
                    "minimumROISize": int(settings.min_pixels),
                    "additionalInfo": False},
    }


_EXTRACTORS: dict[str, Any] = {}


def _extractor(settings: RadiomicsSettings):
    import json
    key = json.dumps(pyradiomics_params(settings, (1.0, 1.0)), sort_keys=True)
    if key not in _EXTRACTORS:
        try:
            import radiomics
            from radiomics import featureextractor
        except ImportError as e:  # pragma: no cover - an install problem, named
            raise ImportError("pyradiomics is not installed: `pip install "
                              "--no-build-isolation pyradiomics==3.0.1` (make install does "
                              "it)") from e
        radiomics.setVerbosity(logging.ERROR)
        logging.getLogger("radiomics").setLevel(logging.ERROR)
        _EXTRACTORS[key] = featureextractor.RadiomicsFeatureExtractor(
                pyradiomics_params(settings, (1.0, 1.0)))
    return _EXTRACTORS[key]


def feature_names(settings: RadiomicsSettings) -> list[str]:
    """The feature columns the settings produce (computed once on a synthetic disc)."""
    yy, xx = np.mgrid[:48, :64]
    mask = (((yy - 24) / 8.0) ** 2 + ((xx - 32) / 20.0) ** 2 <= 1).astype(np.int32)
    image = (40 + 20 * np.sin(xx / 3.0) + 10 * np.cos(yy / 2.0)).astype(np.float32)
    feats, reason = disc_slice_features(image, mask, 1, (0.5, 0.5), 100.0, settings)
    if reason:
        raise RuntimeError(f"radiomics failed on the synthetic disc: {reason}")
    return list(feats)


# === One disc on one slice ===
def _crop(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    r0, r1 = max(rows.min() - margin, 0), min(rows.max() + margin + 1, mask.shape[0])
    c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin + 1, mask.shape[1])
    return slice(r0, r1), slice(c0, c1)


def _as_stack(a: np.ndarray, middle_only: bool, spacing_mm: Sequence[float]):
    import SimpleITK as sitk
    stack = np.zeros((Z_COPIES,) + a.shape, a.dtype)
    if middle_only:
        stack[Z_COPIES // 2] = a
    else:
        stack[:] = a
    img = sitk.GetImageFromArray(stack)
    # SimpleITK spacing is (x = column, y = row, z).
    img.SetSpacing((float(spacing_mm[1]), float(spacing_mm[0]), Z_SPACING_MM))
    return img


def _column(key: str) -> str:
    return PREFIX + key.replace("-3D_", "-2D_")


def disc_slice_features(image: np.ndarray, mask: np.ndarray, disc_id: int,
                        spacing_mm: Sequence[float], reference: Optional[float],
                        settings: RadiomicsSettings) -> tuple[dict[str, float], str]:
    """Radiomics of one disc on one slice.

    Args:
        image: ``[H, W]`` greyscale (any numeric dtype).
        mask: ``int [H, W]`` class ids; the disc is ``mask == disc_id``.
        disc_id: the disc's class id (``labels.DISC_IDS``; 1 for a binary mask).
        spacing_mm: ``(row_mm, col_mm)`` pixel spacing.
        reference: the reference tissue's median intensity (same units as ``image``);
            None, NaN or <= 0 = unknown.
        settings: :class:`RadiomicsSettings`.

    Returns:
        ``(features, reason)``: ``{column: value}`` and ``""`` on success; ``({}, reason)``
        when the disc is absent, smaller than ``settings.min_pixels``, the reference is
        unknown, or pyradiomics raises (the message is kept in the reason). Never raises for
        bad data.

    Raises:
        ValueError: ``image`` and ``mask`` shapes differ (a caller error).
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.shape != mask.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be equal [H, W]")
    disc = mask == disc_id
    n = int(disc.sum())
    if n == 0:
        return {}, REASON_EMPTY_MASK
    if n < settings.min_pixels:
        return {}, f"{REASON_TINY_MASK}({n}<{settings.min_pixels}px)"
    if reference is None or not math.isfinite(float(reference)) or float(reference) <= 0:
        return {}, REASON_NO_REFERENCE
    rs, cs = _crop(disc, settings.margin_px)
    crop = image[rs, cs].astype(np.float32) / np.float32(reference) * \
        np.float32(settings.reference_scale)
    roi = disc[rs, cs].astype(np.uint8)
    try:
        result = _extractor(settings).execute(_as_stack(crop, False, spacing_mm),
                                              _as_stack(roi, True, spacing_mm), label=1)
    except Exception as e:  # noqa: BLE001 - pyradiomics raises many types; keep the batch going
        return {}, f"{REASON_EXTRACTION}({type(e).__name__}: {str(e)[:120]})"
    feats = {_column(k): float(v) for k, v in result.items() if not k.startswith("diagnostics")}
    return feats, ""
