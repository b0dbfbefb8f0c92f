"""Radiomics per disc on hand-made phantoms (spoils_tf.radiomics)."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("radiomics")

from spoils_tf import labels  # noqa: E402
from spoils_tf.radiomics import extract, table  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
L4_L5 = labels.SEG_ID["L4-L5"]
ORIGINAL_ONLY = extract.RadiomicsSettings(log_sigmas_mm=(), wavelet=False)


def _rectangle(value: float = 80.0, h: int = 20, w: int = 40):
    """A 60 x 80 slice: a uniform ``h x w``-pixel disc at rows 20.., cols 20.., a canal."""
    image = np.full((60, 80), 10.0)
    mask = np.zeros((60, 80), np.int32)
    mask[20:20 + h, 20:20 + w] = L4_L5
    image[mask == L4_L5] = value
    mask[:, 70:76] = labels.CANAL_ID
    image[:, 70:76] = 100.0
    return image, mask


def test_uniform_disc_has_zero_glcm_contrast():
    image, mask = _rectangle(80.0)
    f, reason = extract.disc_slice_features(image, mask, L4_L5, (0.5, 0.5), 100.0,
                                            ORIGINAL_ONLY)
    assert reason == ""
    assert f["radiomics/original_glcm_Contrast"] == 0.0
    assert f["radiomics/original_firstorder_Variance"] == 0.0
    # 80 grey levels against a CSF median of 100 -> 80 normalised units
    assert f["radiomics/original_firstorder_Mean"] == pytest.approx(80.0)


def test_rectangle_area_and_perimeter_by_hand():
    # 40 x 20 pixels at 0.5 mm: 800 pixels of 0.25 mm^2 = 200 mm^2. The marching-squares
    # contour runs along the pixel edges and cuts each of the 4 corners by a right triangle
    # of legs 0.5 px: area 800 - 4 / 8 = 799.5 px^2; perimeter 2 (40 + 20) - 4 + 4 sqrt(2)/2 px.
    image, mask = _rectangle()
    f, _ = extract.disc_slice_features(image, mask, L4_L5, (0.5, 0.5), 100.0, ORIGINAL_ONLY)
    assert f["radiomics/original_shape2D_PixelSurface"] == pytest.approx(200.0)
    assert f["radiomics/original_shape2D_MeshSurface"] == pytest.approx(799.5 * 0.25)
    assert f["radiomics/original_shape2D_Perimeter"] == pytest.approx(
            (120 - 4 + 2 * math.sqrt(2)) * 0.5)


def test_tiny_mask_gives_nan_and_reason():
    image, mask = _rectangle(h=3, w=4)                       # 12 pixels < min_pixels 30
    f, reason = extract.disc_slice_features(image, mask, L4_L5, (0.5, 0.5), 100.0,
                                            ORIGINAL_ONLY)
    assert f == {} and reason.startswith(extract.REASON_TINY_MASK)
    rows = table.patient_rows("p1", {7: table._Slice(image, mask, (0.5, 0.5), 100.0)},
                              ORIGINAL_ONLY)
    out = table.assemble(rows, ORIGINAL_ONLY)
    assert len(out) == 1 and out["level"][0] == "L4-L5"
    assert out["radiomics/original_glcm_Contrast"].isna().all()
    assert out["reason"][0].startswith("slice7:" + extract.REASON_TINY_MASK)


def test_missing_reference_gives_reason_not_crash():
    image, mask = _rectangle()
    _, reason = extract.disc_slice_features(image, mask, L4_L5, (0.5, 0.5), float("nan"),
                                            ORIGINAL_ONLY)
    assert reason == extract.REASON_NO_REFERENCE


def test_features_do_not_change_with_scanner_gain():
    # Normalising to the canal's median makes a 2.5x brighter scan give the same features.
    rng = np.random.default_rng(0)
    image, mask = _rectangle()
    image = image + rng.uniform(0, 30, image.shape)
    a, _ = extract.disc_slice_features(image, mask, L4_L5, (0.5, 0.5),
                                       table.reference_median(image, mask, 10), ORIGINAL_ONLY)
    b, _ = extract.disc_slice_features(2.5 * image, mask, L4_L5, (0.5, 0.5),
                                       table.reference_median(2.5 * image, mask, 10),
                                       ORIGINAL_ONLY)
    for k in ("radiomics/original_glcm_Contrast", "radiomics/original_firstorder_Mean",
              "radiomics/original_glszm_ZoneEntropy"):
        assert a[k] == pytest.approx(b[k], rel=1e-5)


def test_log_of_the_z_stack_is_the_2d_log():
    import SimpleITK as sitk
    from radiomics import imageoperations
    from scipy import ndimage
    rng = np.random.default_rng(0)
    a = (ndimage.gaussian_filter(rng.normal(size=(64, 64)), 2) * 100).astype(np.float32)
    stack = extract._as_stack(a, False, (0.5, 0.5))
    roi = extract._as_stack(np.ones_like(a, np.uint8), True, (0.5, 0.5))
    (im, _, _), = list(imageoperations.getLoGImage(stack, roi, sigma=[2.0]))
    got = sitk.GetArrayFromImage(im)[extract.Z_COPIES // 2]
    # sigma 2 mm = 4 px; pyradiomics normalises across scale (x sigma^2 in mm^2 / mm^2 px)
    want = ndimage.gaussian_laplace(a.astype(np.float64), 4.0) * 16
    inner = (slice(12, -12), slice(12, -12))
    assert np.abs(got[inner] - want[inner]).max() < 0.02 * np.abs(want[inner]).max()


def test_feature_families_and_names():
    names = extract.feature_names(extract.RadiomicsSettings())
    for cls in extract.FEATURE_CLASSES:
        assert any(f"original_{cls}_" in n for n in names), cls
    assert any(n.startswith("radiomics/log-sigma-2-0-mm-2D_glcm_") for n in names)
    assert any(n.startswith("radiomics/wavelet-HH_ngtdm_") for n in names)
    assert not any("-3D_" in n for n in names)


@pytest.mark.parametrize("slices, n, want", [
        ([3, 4, 5, 6, 7], 3, [4, 5, 6]),
        ([3, 4, 5, 6], 1, [4]),              # median 4.5: tie -> lower
        ([9, 2], 5, [2, 9]),
        ([5, 6, 7, 8, 9, 10], 0, [5, 6, 7, 8, 9, 10]),
])
def test_middle_slices(slices, n, want):
    assert table.middle_slices(slices, n) == want


def test_settings_validate_and_round_trip():
    s = extract.RadiomicsSettings(bin_width=3.0, log_sigmas_mm=(1.0,))
    assert extract.RadiomicsSettings.from_mapping(s.to_dict()) == s
    with pytest.raises(ValueError, match="feature_classes"):
        extract.RadiomicsSettings(feature_classes=("glcm", "shape3D"))


def test_imports_without_tensorflow():
    code = ("import sys, spoils_tf.radiomics.table; "
            "print(','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
