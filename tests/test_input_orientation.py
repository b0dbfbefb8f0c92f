"""One patient lattice, stored many ways, read to one display array.

``LATTICE`` is a small volume in patient (LPS) index space: axis 0 = x (towards the patient's
left), axis 1 = y (towards posterior), axis 2 = z (towards the head), with spacings
``SPACING_MM``. Each case stores it with its index axes permuted and flipped, and a header
(DICOM ImageOrientationPatient / ImagePositionPatient, or a NIfTI affine written by nibabel, in
RAS) that says so. The reader must undo exactly that: every case gives the display array
``expected_display()`` (the middle left-right slice, rows superior -> inferior, columns
anterior -> posterior) and the pixel spacing (z mm, y mm) (``spoils_tf.data.dicom_io``).

Also: a non-square pixel spacing resampled to the model's square grid keeps lengths in mm.
"""

from __future__ import annotations

import itertools
import pathlib

import nibabel as nib
import numpy as np
import pytest
from dicom_writer import write_mr_slice

from spoils_tf.data import dicom_io
from spoils_tf.serve import inputs

SPACING_MM = (3.0, 0.5, 0.6)      # x (slices), y, z: every axis distinct
SHAPE = (5, 20, 24)               # x, y, z


def lattice() -> np.ndarray:
    """uint16 [x, y, z]: every voxel a different value, so any flip or swap shows."""
    return (100 + np.arange(np.prod(SHAPE)).reshape(SHAPE) * 3).astype(np.uint16)


def expected_display() -> np.ndarray:
    """float [z desc, y asc] of the middle x slice (superior at the top, anterior left)."""
    return lattice()[SHAPE[0] // 2, :, ::-1].T.astype(np.float64)


def _window(values: np.ndarray) -> np.ndarray:
    return dicom_io.window_to_uint8(values[None], "percentile")[0][0]


# === DICOM: the slice normal is +-x; rows and columns run along y or z, either way ===
def _axis_vector(axis: int, sign: int) -> np.ndarray:
    v = np.zeros(3)
    v[axis] = sign
    return v


def _lattice_index(axis: int, sign: int, i: int) -> int:
    return i if sign > 0 else SHAPE[axis] - 1 - i


def _write_dicom(folder: pathlib.Path, col_axis: int, col_sign: int, row_axis: int,
                 row_sign: int, x_sign: int) -> pathlib.Path:
    """Columns (the IOP row cosine) along ``col_axis`` * sign, rows along ``row_axis`` *
    sign; files numbered along ``x_sign``. Pixel (i, j) of file k is the lattice voxel at its
    patient position."""
    vol = lattice()
    folder.mkdir(parents=True)
    row_cos, col_cos = _axis_vector(col_axis, col_sign), _axis_vector(row_axis, row_sign)
    spacing = np.asarray(SPACING_MM)
    for k in range(SHAPE[0]):
        xi = _lattice_index(0, x_sign, k)
        idx = np.zeros((SHAPE[row_axis], SHAPE[col_axis], 3), int)
        idx[..., 0] = xi
        idx[..., row_axis] = [[_lattice_index(row_axis, row_sign, i)] * SHAPE[col_axis]
                              for i in range(SHAPE[row_axis])]
        idx[..., col_axis] = [[_lattice_index(col_axis, col_sign, j) for j in range(
            SHAPE[col_axis])]] * SHAPE[row_axis]
        pixels = vol[idx[..., 0], idx[..., 1], idx[..., 2]]
        ipp = idx[0, 0] * spacing                          # patient position of pixel (0, 0)
        write_mr_slice(folder / f"f{k}.dcm", pixels, k, iop=[*row_cos, *col_cos], phi={},
                       pixel_spacing=(SPACING_MM[row_axis], SPACING_MM[col_axis]),
                       extra={"ImagePositionPatient": [float(v) for v in ipp]})
    return folder


DICOM_LAYOUTS = [(ca, cs, 3 - ca, rs, xs)
                 for ca, cs, rs, xs in itertools.product((1, 2), (1, -1), (1, -1), (1, -1))]


@pytest.mark.parametrize("col_axis, col_sign, row_axis, row_sign, x_sign", DICOM_LAYOUTS)
def test_dicom_layouts_give_the_display_array(tmp_path, col_axis, col_sign, row_axis, row_sign,
                                              x_sign):
    folder = _write_dicom(tmp_path / "s", col_axis, col_sign, row_axis, row_sign, x_sign)
    s = dicom_io.load_series(folder)
    np.testing.assert_array_equal(s.images[0], _window(expected_display()))
    assert s.pixel_spacing_mm == pytest.approx((SPACING_MM[2], SPACING_MM[1]))
    assert s.slice_spacing_mm == pytest.approx(SPACING_MM[0])
    assert ("transpose" in s.reorientation) == (col_axis == 2)


# === NIfTI (nibabel, RAS affine), .nii and .nii.gz ===
NIFTI_LAYOUTS = [((0, 1, 2), (1, 1, 1)), ((0, 1, 2), (-1, -1, 1)), ((2, 1, 0), (1, 1, -1)),
                 ((1, 2, 0), (-1, 1, 1)), ((2, 0, 1), (-1, -1, -1)), ((1, 0, 2), (1, -1, 1))]


def _write_nifti(path: pathlib.Path, order: tuple[int, ...], signs: tuple[int, ...]
                 ) -> pathlib.Path:
    """File axis a holds lattice axis ``order[a]``, run in direction ``signs[a]``."""
    data = np.transpose(lattice(), order)
    for a, sign in enumerate(signs):
        if sign < 0:
            data = np.flip(data, a)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    origin_lps = np.zeros(3)
    for a, (axis, sign) in enumerate(zip(order, signs)):
        affine[:3, a] = lps_to_ras @ _axis_vector(axis, sign) * SPACING_MM[axis]
        if sign < 0:   # file index 0 is the last lattice voxel along this axis
            origin_lps[axis] = (SHAPE[axis] - 1) * SPACING_MM[axis]
    affine[:3, 3] = lps_to_ras @ origin_lps
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("order, signs", NIFTI_LAYOUTS)
def test_nifti_layouts_give_the_display_array(tmp_path, suffix, order, signs):
    path = _write_nifti(tmp_path / f"vol{suffix}", order, signs)
    assert nib.aff2axcodes(nib.load(str(path)).affine)[order.index(0)] in ("L", "R")
    s = dicom_io.load_series(path)
    np.testing.assert_array_equal(s.images[0], _window(expected_display()))
    assert s.pixel_spacing_mm == pytest.approx((SPACING_MM[2], SPACING_MM[1]))
    assert s.slice_spacing_mm == pytest.approx(SPACING_MM[0])


def test_axial_nifti_is_refused_naming_the_plane(tmp_path):
    """The same lattice stored with its thick axis along head-foot: an axial stack."""
    data = lattice().astype(np.float32)
    affine = np.diag([0.5, 0.6, 3.0, 1.0])
    path = tmp_path / "axial.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    with pytest.raises(ValueError, match="axial acquisition") as e:
        dicom_io.load_series(path)
    assert "axial.nii.gz" in str(e.value) and "sagittal" in str(e.value)


def test_4d_nifti_is_refused(tmp_path):
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 70, 70, 3), np.int16), np.eye(4)), str(path))
    with pytest.raises(ValueError, match=r"fmri.nii.gz.*4-D image.*expected a 3-D"):
        inputs.read_input(path)


# === Non-square pixels ===
def test_non_square_pixels_keep_lengths_in_mm(tmp_path):
    """A 40 mm x 12 mm bright rectangle in a DICOM slice with 0.5 mm rows and 1.0 mm columns,
    stored transposed (rows along y): read, then resampled to the model's 1 mm grid, it is 40
    rows x 12 columns; at 0.8 mm, 50 x 15."""
    from spoils_tf.data import spacing_pipeline
    rows_mm, cols_mm = 1.0, 0.5          # file rows along +y (1 mm), file columns along -z
    pixels = np.full((80, 160), 50, np.uint16)          # 80 mm (y) x 80 mm (z)
    # display rows = z: 40 mm tall = 80 file columns; display columns = y: 12 mm = 12 file rows
    pixels[20:32, 30:110] = 1000
    write_mr_slice(tmp_path / "a.dcm", pixels, 0, iop=[0, 0, -1, 0, 1, 0], phi={},
                   pixel_spacing=(rows_mm, cols_mm))
    images, spacing, _, _, desc = inputs.read_input(tmp_path / "a.dcm")
    assert spacing == pytest.approx((0.5, 1.0)) and desc["reorientation"] == ["transpose"]
    grey = images[0]
    assert grey.shape == (160, 80)
    for target, (h, w) in ((1.0, (40, 12)), (0.8, (50, 15))):
        out = spacing_pipeline.resample_to_spacing(grey[..., None], spacing, target,
                                                   is_mask=True).numpy()[..., 0]
        bright = np.argwhere(out == 255)
        extent = bright.max(axis=0) - bright.min(axis=0) + 1
        assert tuple(extent) == (h, w), (target, extent)


def test_nifti_without_any_orientation_is_refused(tmp_path):
    """qform_code = sform_code = 0 (Analyze-style): the plane cannot be known."""
    path = _write_nifti(tmp_path / "bare.nii", (0, 1, 2), (1, 1, 1))
    assert dicom_io.load_series(path).images.shape[1:] == (24, 20)     # with its codes: read
    data = bytearray(path.read_bytes())
    data[252:256] = np.asarray([0, 0], "<i2").tobytes()
    path.write_bytes(bytes(data))
    assert nib.load(str(path)).header["qform_code"] == 0 == nib.load(str(path)).header["sform_code"]
    with pytest.raises(ValueError, match=r"bare.nii: field 'qform_code, sform_code': both 0"):
        dicom_io.load_series(path)
