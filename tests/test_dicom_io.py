"""DICOM / volume input: synthetic series written with pydicom and SimpleITK into tmp dirs.

Each slice k of a series has a bright 2x2 marker at column 2 + 3k of row 4 (stored values
1000 on a background of 100 + row index), so the test can tell which slice was picked and
how it was flipped.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_writer import write_mr_slice

from spoils_tf.data import dicom_io

SAGITTAL = [0, 1, 0, 0, 0, -1]    # columns -> posterior, rows -> feet: display orientation
AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]
ROWS, COLS = 24, 20
PHI = {"PatientName": "DOE^JANE", "PatientID": "PID-777123", "PatientBirthDate": "19610203"}


def slice_pixels(k: int) -> np.ndarray:
    """uint16 [ROWS, COLS]: background 100 + row, marker 1000 at rows 4-5, cols 2+3k..3+3k."""
    arr = (100 + np.arange(ROWS)[:, None] + np.zeros((1, COLS))).astype(np.uint16)
    arr[4:6, 2 + 3 * k:4 + 3 * k] = 1000
    return arr


def write_slice(path: pathlib.Path, k: int, *, iop=SAGITTAL, spacing_between=3.0, series_uid=None,
                series_number=2, pixel_spacing=(0.5, 0.7), position=True, extra=None) -> pathlib.Path:
    """One classic MR slice (``slice_pixels(k)``) at k * spacing_between along the normal."""
    return write_mr_slice(path, slice_pixels(k), k, iop=iop, phi=PHI,
                          spacing_between=spacing_between, pixel_spacing=pixel_spacing,
                          series_uid=series_uid or "1.2.826.0.1.3680043.8.498.1",
                          series_number=series_number, position=position, extra=extra)


def write_series(folder: pathlib.Path, n: int = 5, order=None, prefix="im", **kwargs) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, k in enumerate(order if order is not None else range(n)):
        write_slice(folder / f"{prefix}{i:03d}.dcm", k, **kwargs)
    return folder


def marker_cols(image: np.ndarray, row: int) -> list[int]:
    """Columns of the brightest pixels in ``row`` (the marker)."""
    return np.flatnonzero(image[row] == image.max()).tolist()


# === DICOM series ===
def test_sagittal_series_picks_the_middle_slice_with_spacing(tmp_path):
    # Files written out of order: slices are sorted by position along the normal.
    folder = write_series(tmp_path / "sag", order=[3, 0, 4, 1, 2])
    s = dicom_io.load_series(folder)
    assert s.images.shape == (1, ROWS, COLS) and s.images.dtype == np.uint8
    assert s.slice_indices == (2,) and s.n_slices_total == 5
    assert marker_cols(s.images[0], 4) == [8, 9]      # slice 2: columns 2 + 3 * 2 .. + 1
    assert s.pixel_spacing_mm == (0.5, 0.7)
    assert s.slice_spacing_mm == pytest.approx(3.0)
    assert s.slice_thickness_mm == 3.0
    assert s.orientation == "sagittal" and s.normal_angle_deg == pytest.approx(0.0)
    assert s.input_axes == "PFR" and s.reorientation == ()
    assert s.source_kind == "dicom_series"
    assert s.technical == {"modality": "MR", "manufacturer": "TestVendor", "field_strength_T": 1.5,
                           "series_number": 2}


def test_neighbours_take_slices_either_side(tmp_path):
    s = dicom_io.load_series(write_series(tmp_path / "sag"), neighbours=1)
    assert s.slice_indices == (1, 2, 3)
    assert [marker_cols(im, 4)[0] for im in s.images] == [5, 8, 11]


def test_middle_indices_clip_and_even_counts():
    assert dicom_io.middle_indices(4) == [1]
    assert dicom_io.middle_indices(3, 5) == [0, 1, 2]
    with pytest.raises(ValueError):
        dicom_io.middle_indices(0)


def test_reversed_axes_are_flipped_to_display_orientation(tmp_path):
    # columns -> anterior, rows -> head: both flipped; the marker (rows 4-5) moves to the
    # bottom rows and mirrored columns.
    s = dicom_io.load_series(write_series(tmp_path / "rev", iop=[0, -1, 0, 0, 0, 1]))
    assert s.reorientation == ("flip_rows", "flip_cols")
    assert s.input_axes == "AHR"
    assert marker_cols(s.images[0], ROWS - 1 - 4) == [COLS - 1 - 9, COLS - 1 - 8]


def test_swapped_axes_are_transposed_with_spacing(tmp_path):
    # columns -> feet, rows -> posterior: transposed, spacing (row, col) swapped.
    s = dicom_io.load_series(write_series(tmp_path / "tr", iop=[0, 0, -1, 0, 1, 0]))
    assert s.reorientation == ("transpose",)
    assert s.images.shape == (1, COLS, ROWS)
    assert s.pixel_spacing_mm == (0.7, 0.5)


@pytest.mark.parametrize("iop, plane", [(AXIAL, "axial"), (CORONAL, "coronal")])
def test_axial_and_coronal_are_rejected_naming_the_plane(tmp_path, iop, plane):
    folder = write_series(tmp_path / plane, n=3, iop=iop)
    with pytest.raises(ValueError, match=f"not a sagittal series.*{plane}"):
        dicom_io.load_series(folder)
    with pytest.raises(ValueError, match=f"{plane} acquisition"):
        dicom_io.load_series(folder / "im000.dcm")


@pytest.mark.parametrize("theta, ok", [(20.0, True), (29.5, True), (30.5, False), (40.0, False)])
def test_oblique_sagittal_tolerance_is_30_degrees(tmp_path, theta, ok):
    t = math.radians(theta)   # plane rotated about the head-foot axis: normal theta from LR
    path = write_slice(tmp_path / "x.dcm", 0, iop=[math.sin(t), math.cos(t), 0, 0, 0, -1])
    if ok:
        assert dicom_io.load_series(path).normal_angle_deg == pytest.approx(theta, abs=1e-6)
    else:
        with pytest.raises(ValueError, match=f"{theta:.1f} degrees"):
            dicom_io.load_series(path)


def test_missing_pixel_spacing_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"PixelSpacing \(0028,0030\) is missing"):
        dicom_io.load_series(write_series(tmp_path / "nps", n=3, pixel_spacing=None))


def test_missing_orientation_is_named(tmp_path):
    path = write_slice(tmp_path / "a.dcm", 0)
    ds = pydicom.dcmread(str(path))
    del ds.ImageOrientationPatient
    ds.save_as(str(path))
    with pytest.raises(ValueError, match="ImageOrientationPatient"):
        dicom_io.load_series(path)


def test_empty_and_non_dicom_folders_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM files found"):
        dicom_io.load_series(tmp_path / "empty")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"no DICOM files found \(1 files checked\)"):
        dicom_io.load_series(tmp_path / "txt")
    with pytest.raises(FileNotFoundError):
        dicom_io.load_series(tmp_path / "missing")


def test_mixed_folder_uses_the_largest_sagittal_series(tmp_path):
    folder = tmp_path / "mixed"
    write_series(folder, n=5, series_uid="1.2.3.1", series_number=2, prefix="a")
    write_series(folder, n=7, iop=AXIAL, series_uid="1.2.3.2", series_number=3, prefix="b")
    write_series(folder, n=3, series_uid="1.2.3.3", series_number=4, prefix="c")
    (folder / "README.txt").write_text("not DICOM")
    s = dicom_io.load_series(folder)
    assert s.n_slices_total == 5 and s.technical["series_number"] == 2
    notes = " ".join(s.notes)
    assert "3 stacks" in notes and "series #3 (7 files, axial, unknown)" in notes
    assert "1 non-DICOM" in notes
    assert "1.2.3.1" not in notes          # series are named by number, never by UID


def test_folder_with_only_axial_series_names_what_it_found(tmp_path):
    folder = write_series(tmp_path / "ax", n=4, iop=AXIAL, series_number=9)
    with pytest.raises(ValueError, match=r"series #9 \(4 files, axial, unknown\)"):
        dicom_io.load_series(folder)


def test_duplicate_positions_are_an_error(tmp_path):
    folder = write_series(tmp_path / "dup", order=[0, 1, 1, 2])
    with pytest.raises(ValueError, match="share one ImagePositionPatient"):
        dicom_io.load_series(folder)


def test_single_file_uses_header_slice_spacing(tmp_path):
    path = write_slice(tmp_path / "one.dcm", 1, extra={"SpacingBetweenSlices": 3.3})
    s = dicom_io.load_series(path)
    assert s.source_kind == "dicom_file" and s.images.shape == (1, ROWS, COLS)
    assert s.slice_spacing_mm == pytest.approx(3.3)
    assert marker_cols(s.images[0], 4) == [5, 6]


def test_rescale_and_header_window_follow_dicom_linear_voi(tmp_path):
    # x = 2 * stored - 100; window center 100, width 101 -> y = ((x - 99.5) / 100 + 0.5) * 255.
    path = write_slice(tmp_path / "w.dcm", 0, extra={"RescaleSlope": 2, "RescaleIntercept": -100,
                                                     "WindowCenter": 100, "WindowWidth": 101})
    s = dicom_io.load_series(path, window="header")
    # Row r (background) stores 100 + r -> x = 100 + 2r: r = 0 gives ((0.5)/100 + 0.5) * 255
    # = 128.775 -> 129; r = 10 gives x = 120 -> 179.775 -> 180; the marker (x = 1900) -> 255.
    assert s.images[0, 0, 0] == 129
    assert s.images[0, 10, 0] == 180
    assert s.images[0, 4, 2] == 255
    assert s.window["method"] == "header" and s.window["center"] == 100.0


def test_header_window_requested_but_absent_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="WindowCenter"):
        dicom_io.load_series(write_slice(tmp_path / "a.dcm", 0), window="header")


def test_percentile_window_maps_to_full_range():
    x = np.arange(1000, dtype=np.float64).reshape(1, 10, 100)
    out, info = dicom_io.window_to_uint8(x, "percentile")
    # 0.5th / 99.5th percentiles of 0..999 (linear interpolation): 4.995 and 994.005.
    assert info["low"] == pytest.approx(4.995) and info["high"] == pytest.approx(994.005)
    assert out.min() == 0 and out.max() == 255 and out[0, 5, 0] == 128   # 500 -> 127.5 -> 128


def test_no_patient_information_in_the_returned_object(tmp_path):
    folder = write_series(tmp_path / "phi", n=3)
    s = dicom_io.load_series(folder, neighbours=1)
    texts = [repr(s), str(s), json.dumps(s.deidentified_summary())]
    texts += [repr(getattr(s, f)) for f in s.__dataclass_fields__ if f != "images"]
    for text in texts:
        for value in PHI.values():
            assert value not in text
        assert "DOE" not in text and "JANE" not in text
    # ... while the files do carry the name (the test would be vacuous otherwise).
    assert str(pydicom.dcmread(str(folder / "im000.dcm")).PatientName) == "DOE^JANE"


# === Volumes ===
def sagittal_volume(spacing=(3.0, 0.5, 0.6), n_x=5) -> sitk.Image:
    """Index x = left-right (slices), y = posterior (columns), z = head (rows, needs a flip)."""
    vol = np.zeros((ROWS, COLS, n_x), np.uint16)    # numpy [z, y, x]
    for k in range(n_x):
        vol[:, :, k] = slice_pixels(k)
    img = sitk.GetImageFromArray(vol)           # numpy [z, y, x] -> sitk size (x, y, z)
    img.SetSpacing(spacing)
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    return img


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz"])
def test_volume_round_trip(tmp_path, suffix):
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(sagittal_volume(), str(path))
    s = dicom_io.load_series(path)
    assert s.source_kind == "volume" and s.n_slices_total == 5 and s.slice_indices == (2,)
    # rows were z (towards the head) -> flipped; marker row 4 -> ROWS - 1 - 4.
    assert s.reorientation == ("flip_rows",)
    assert s.images.shape == (1, ROWS, COLS)
    assert marker_cols(s.images[0], ROWS - 1 - 4) == [8, 9]
    assert s.pixel_spacing_mm == pytest.approx((0.6, 0.5))
    assert s.slice_spacing_mm == pytest.approx(3.0)
    assert math.isnan(s.slice_thickness_mm)


def test_axial_volume_is_rejected(tmp_path):
    path = tmp_path / "axial.mha"
    sitk.WriteImage(sagittal_volume(spacing=(0.5, 0.5, 5.0)), str(path))  # thick along head-foot
    with pytest.raises(ValueError, match="axial"):
        dicom_io.load_series(path)


def test_isotropic_volume_is_sliced_along_left_right(tmp_path):
    path = tmp_path / "iso.mha"
    sitk.WriteImage(sagittal_volume(spacing=(1.0, 1.0, 1.0)), str(path))
    s = dicom_io.load_series(path)
    assert s.n_slices_total == 5 and marker_cols(s.images[0], ROWS - 1 - 4) == [8, 9]


# === Several stacks, copies, gaps, colour; volume sidecars ===
T1_HEADER = {"EchoTime": 12, "RepetitionTime": 550, "SeriesDescription": "sag T1 tse"}
T2_HEADER = {"EchoTime": 100, "RepetitionTime": 3500, "SeriesDescription": "sag T2 tse"}


def test_folder_with_t1_and_t2_sagittal_series_uses_the_t2(tmp_path):
    folder = tmp_path / "study"
    write_series(folder, n=7, series_uid="1.2.3.1", series_number=3, prefix="t1_",
                 extra=T1_HEADER)
    write_series(folder, n=5, series_uid="1.2.3.2", series_number=4, prefix="t2_",
                 extra=T2_HEADER)
    s = dicom_io.load_series(folder)
    assert s.n_slices_total == 5 and s.technical["series_number"] == 4
    assert s.weighting == "T2" and "EchoTime 100 ms" in s.weighting_evidence[0]
    notes = " ".join(s.notes)
    assert "series #3 (7 files, sagittal, T1)" in notes
    assert "used series #4 (5 files, sagittal, T2)" in notes
    assert "sag T1 tse" not in notes and "sag T2 tse" not in notes   # descriptions not copied


def test_folder_with_only_a_t1_series_reads_it_as_t1(tmp_path):
    s = dicom_io.load_series(write_series(tmp_path / "t1", n=3, extra=T1_HEADER))
    assert s.weighting == "T1" and s.deidentified_summary()["weighting"] == "T1"


def test_two_t2_sagittal_series_of_one_size_use_the_later(tmp_path):
    folder = tmp_path / "repeat"
    write_series(folder, n=5, series_uid="1.2.3.1", series_number=5, prefix="a", extra=T2_HEADER)
    write_series(folder, n=5, series_uid="1.2.3.2", series_number=6, prefix="b", extra=T2_HEADER)
    assert dicom_io.load_series(folder).technical["series_number"] == 6
    assert dicom_io.choose_stack_rank("unknown", 9, 1) > dicom_io.choose_stack_rank("T2", 3, 1)
    assert dicom_io.choose_stack_rank("T1", 30, 1) > dicom_io.choose_stack_rank("unknown", 3, 1)


def test_one_series_with_three_planes_uses_its_sagittal_stack(tmp_path):
    """A localizer-like series: one SeriesInstanceUID, an axial and a sagittal stack."""
    folder = tmp_path / "loc"
    write_series(folder, n=4, iop=AXIAL, prefix="ax")
    write_series(folder, n=3, prefix="sag")
    s = dicom_io.load_series(folder)
    assert s.n_slices_total == 3
    notes = " ".join(s.notes)
    assert "2 stacks" in notes and "stack 2 (3 files, sagittal" in notes


def test_a_copied_file_is_skipped_and_counted(tmp_path):
    folder = write_series(tmp_path / "dup", n=5)
    (folder / "copy_of_im002.dcm").write_bytes((folder / "im002.dcm").read_bytes())
    s = dicom_io.load_series(folder)
    assert s.n_slices_total == 5
    assert any("1 file(s) repeating the SOPInstanceUID" in n for n in s.notes)


def test_missing_slices_are_noted(tmp_path):
    folder = write_series(tmp_path / "gap", order=[0, 1, 2, 5, 6, 7])   # 3 and 4 missing
    s = dicom_io.load_series(folder)
    assert s.n_slices_total == 6 and s.slice_spacing_mm == pytest.approx(3.0)
    assert any(n.startswith("about 2 slice(s) missing: 1 gap(s) of 9.00 mm") for n in s.notes)
    assert not any("missing" in n for n in dicom_io.load_series(
            write_series(tmp_path / "full", n=6)).notes)


def test_colour_dicom_is_refused_before_decoding(tmp_path):
    path = write_slice(tmp_path / "rgb.dcm", 0, extra={"SamplesPerPixel": 3,
                                                       "PhotometricInterpretation": "RGB"})
    with pytest.raises(ValueError, match=r"rgb.dcm: field 'SamplesPerPixel \(0028,0002\)': 3 "
                                         r"samples per pixel \(PhotometricInterpretation RGB\)"):
        dicom_io.load_series(path)


@pytest.mark.parametrize("sidecar, weighting", [
    ({"EchoTime": 0.012, "RepetitionTime": 0.55, "SeriesDescription": "sag_T1"}, "T1"),
    ({"EchoTime": 0.124, "RepetitionTime": 1.0}, "T2"),
    ({"ProtocolName": "t2_tirm_sag"}, "STIR"),
    (None, "unknown"),
])
def test_volume_weighting_from_a_bids_sidecar(tmp_path, sidecar, weighting):
    path = tmp_path / "vol.nii.gz"
    sitk.WriteImage(sagittal_volume(), str(path))
    if sidecar is not None:
        (tmp_path / "vol.json").write_text(json.dumps(sidecar))
    s = dicom_io.load_series(path)
    assert s.weighting == weighting
    assert s.weighting_evidence and (sidecar is None) == ("there is no sidecar .json" in
                                                          s.weighting_evidence[0])
    assert all(e.startswith("sidecar") for e in s.weighting_evidence) == (sidecar is not None)


@pytest.mark.parametrize("text, words", [("{not json", "vol.json"),
                                         ('{"EchoTime": "short"}', "field 'EchoTime'"),
                                         ("[1, 2]", "JSON list")])
def test_bad_sidecar_is_named(tmp_path, text, words):
    path = tmp_path / "vol.mha"
    sitk.WriteImage(sagittal_volume(), str(path))
    (tmp_path / "vol.json").write_text(text)
    with pytest.raises(ValueError, match="vol.json") as e:
        dicom_io.load_series(path)
    assert words in str(e.value)


def test_compressed_syntax_without_a_decoder_is_refused_from_the_header(tmp_path):
    """JPEG Lossless (Process 14), common in PACS exports: no decoder here (pydicom's
    plugins gdcm / pylibjpeg are not installed); refused before decoding, naming the syntax."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    uid = "1.2.840.10008.1.2.4.70"
    if get_decoder(uid).is_available:
        pytest.skip("a JPEG Lossless decoder is installed")
    path = write_slice(tmp_path / "jl.dcm", 0)
    ds = pydicom.dcmread(str(path))
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(100)])
    ds["PixelData"].VR = "OB"
    ds.save_as(str(path), enforce_file_format=True)
    with pytest.raises(ValueError, match=r"jl.dcm: field 'TransferSyntaxUID \(0002,0010\)': "
                                         r"1.2.840.10008.1.2.4.70 \(JPEG Lossless.*no decoder"):
        dicom_io.load_series(path)


def test_file_names_stay_out_of_the_summary(tmp_path):
    """Input names are often patient names: neither a skipped file's name nor a volume's
    sidecar (named after the volume) may reach the notes or the weighting evidence."""
    folder = write_series(tmp_path / "study", n=3)
    write_slice(folder / "DOE_JANE_scout.dcm", 9, extra={"ImageOrientationPatient": [1, 0, 0]})
    s = dicom_io.load_series(folder)
    assert any("1 DICOM file(s) without usable orientation" in n for n in s.notes)
    assert "DOE_JANE" not in json.dumps(s.deidentified_summary())
    for sidecar in (None, {"EchoTime": 0.1, "ProtocolName": "t2_sag"}):
        path = tmp_path / f"DOE_JANE{len(str(sidecar))}.nii.gz"
        sitk.WriteImage(sagittal_volume(), str(path))
        if sidecar:
            dicom_io.sidecar_path(path).write_text(json.dumps(sidecar))
        s = dicom_io.load_series(path)
        assert s.weighting == ("T2" if sidecar else "unknown")
        assert "DOE_JANE" not in json.dumps(s.deidentified_summary()), s.weighting_evidence
