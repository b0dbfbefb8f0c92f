"""DICOM SEG and SR of a prediction (``spoils_tf.serve.dicom_results``), read back and validated.

One real prediction with the shipped bundle (module fixture, ~15 s on 2 cores) on a synthetic
3-slice sagittal series with patient identifiers in its header, files named against their
position order so that the slice order matters. Checked: the SEG's segments (labels, SNOMED
codes, one per class present), the source instances it references (the three slices read), its
pixels against the predicted label maps on the source grid, the SR's per-disc measurement
values and units, grades and segment references against the report, the recommendation code,
``dciodvfy`` without any "Error" line on both files, and no patient identifier on stdout/stderr.
The orientation round trip (display orientation and back) is checked on four header
orientations without a model.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from dicom_writer import write_mr_slice

import spoils_tf
from spoils_tf import labels
from spoils_tf.data import dicom_io
from spoils_tf.errors import SpoilsError
from spoils_tf.serve import dicom_results as dr

PHI = {"PatientName": "Doe^Jane", "PatientID": "PHI-12345", "PatientBirthDate": "19491231"}
PHI_STRINGS = ("Doe^Jane", "PHI-12345", "19491231")
SAGITTAL = [0, 1, 0, 0, 0, -1]     # columns -> posterior, rows -> feet: display orientation
SPACING = (1.2, 1.2)
STUDY_UID = "1.2.826.0.1.3680043.8.498.5101"


def write_series(folder: pathlib.Path, image: np.ndarray, *, iop=SAGITTAL, n: int = 3,
                 series_uid: str = "1.2.826.0.1.3680043.8.498.5102",
                 description: str = "T2 SAG", series_number: int = 3,
                 study_uid: str = STUDY_UID, echo_time_ms: float = 100.0) -> list[pathlib.Path]:
    """``n`` classic MR slices of ``image`` with the study fields a SEG/SR copies and PHI set;
    file names run against the slice positions (im000 is the last slice along the normal)."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"StudyInstanceUID": study_uid,
             "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.5103",
             "StudyDate": "20260101", "StudyTime": "101010", "AccessionNumber": "ACC1",
             "ReferringPhysicianName": "", "StudyID": "S1", "PatientSex": "F",
             "SeriesDescription": description, "EchoTime": echo_time_ms,
             "RepetitionTime": 3000.0}
    return [write_mr_slice(folder / f"im{n - 1 - k:03d}.dcm", image.astype(np.uint16) * 4, k,
                           iop=iop, phi=PHI, spacing_between=4.0, pixel_spacing=SPACING,
                           slice_thickness=4.0, series_uid=series_uid,
                           series_number=series_number, extra=extra)
            for k in range(n)]


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, case):
    """(prediction, source datasets, series folder) of the shipped model on 3 slices."""
    from spoils_tf import weights
    from spoils_tf.serve.inputs import read_input
    from spoils_tf.serve.predictor import Predictor
    folder = tmp_path_factory.mktemp("series")
    write_series(folder, case[0])
    images, spacing, offsets, ss, desc = read_input(folder, slices=3)
    pred = Predictor(weights.DEFAULT_BUNDLE).predict_full(
            images, spacing, odi=30, nrs=4, source=desc, slice_offsets=offsets,
            slice_spacing_mm=ss, orientation_from_header=True)
    return pred, dr.read_series_folder(folder), folder


@pytest.fixture(scope="module")
def results(predicted, tmp_path_factory):
    pred, datasets, _ = predicted
    res = dr.build_dicom_results(pred.report, pred.masks, datasets)
    paths = dr.write_dicom_results(res, tmp_path_factory.mktemp("dicom"))
    return res, paths


def _by_position(datasets):
    return sorted(datasets, key=lambda d: float(np.dot(
            np.asarray(d.ImagePositionPatient, float),
            np.cross(np.asarray(d.ImageOrientationPatient[:3], float),
                     np.asarray(d.ImageOrientationPatient[3:], float)))))


# === Geometry, no model ===
@pytest.mark.parametrize("iop", [SAGITTAL, [0, -1, 0, 0, 0, -1], [0, 1, 0, 0, 0, 1],
                                 [0, 0, -1, 0, 1, 0]])
def test_mask_back_on_the_source_grid_undoes_the_display_orientation(iop):
    rng = np.random.default_rng(0)
    source = rng.integers(0, labels.NUM_SEG_CLASSES, size=(1, 7, 5)).astype(np.uint8)
    display, _, ops = dicom_io.to_display_orientation(source, row_dir=iop[3:], col_dir=iop[:3],
                                                      spacing_mm=(1.0, 1.0))
    assert np.array_equal(dr.mask_on_source(display[0], ops, (7, 5)), source[0])
    if "transpose" in ops:   # a transposed map left as it was does not fit the source grid
        with pytest.raises(SpoilsError, match="mask"):
            dr.mask_on_source(display[0], [], (7, 5))


def test_sort_series_follows_the_position_along_the_normal(tmp_path, case):
    write_series(tmp_path, case[0][:64, :64])
    datasets = dr.read_series_folder(tmp_path)
    assert [int(d.InstanceNumber) for d in dr.sort_series(datasets)] == [1, 2, 3]
    assert [int(d.InstanceNumber) for d in datasets] == [3, 2, 1]      # file-name order
    other = write_series(tmp_path / "other", case[0][:64, :64], n=1,
                         series_uid="1.2.826.0.1.3680043.8.498.5199")
    import pydicom
    with pytest.raises(SpoilsError, match="SeriesInstanceUID"):
        dr.sort_series(datasets + [pydicom.dcmread(other[0])])


# === One real prediction ===
def test_seg_segments_references_and_pixels(predicted, results):
    import highdicom as hd
    pred, datasets, _ = predicted
    res, paths = results
    seg = hd.seg.segread(paths["seg"])
    present = sorted({int(v) for m in pred.masks for v in np.unique(m)} - {0})
    assert len(present) >= 10          # the shipped model finds the lumbar anatomy
    assert seg.number_of_segments == len(present)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [labels.SEG_NAMES[c] for c in present]
    for s in seg.SegmentSequence:
        code = s.SegmentedPropertyTypeCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == dr.ANATOMY_CODES[
            s.SegmentLabel][:2]
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        assert s.SegmentAlgorithmName == "spoils-tf"
    assert seg.SegmentationType == "BINARY"
    # the three slices read, mid-sagittal first; they are the source series' instances
    ordered = _by_position(datasets)
    assert res.source_sop_instance_uids == [str(ordered[k].SOPInstanceUID) for k in (1, 0, 2)]
    assert {u[2] for u in seg.get_source_image_uids()} == set(res.source_sop_instance_uids)
    assert seg.StudyInstanceUID == STUDY_UID
    assert seg.PatientID == PHI["PatientID"]          # the patient module is carried (not shown)
    lut = np.zeros(labels.NUM_SEG_CLASSES, np.uint16)
    for name, n in res.segment_numbers.items():
        lut[labels.SEG_ID[name]] = n
    for j, uid in enumerate(res.source_sop_instance_uids):
        got = seg.get_pixels_by_source_instance([uid], combine_segments=True,
                                                skip_overlap_checks=True)[0]
        ds = next(d for d in datasets if str(d.SOPInstanceUID) == uid)
        want = lut[dr.mask_on_source(pred.masks[j], pred.report["input"]["reorientation"],
                                     (int(ds.Rows), int(ds.Columns)))]
        assert np.array_equal(np.asarray(got), want), j
    model = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert str(model.AlgorithmVersion) == spoils_tf.__version__
    assert pred.report["models"]["segmentation"]["label"] in str(model.AlgorithmParameters)


def test_sr_measurements_grades_and_segment_references(predicted, results):
    import highdicom as hd
    pred, _, _ = predicted
    res, paths = results
    sr = hd.sr.srread(paths["sr"])
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    groups = {g.tracking_identifier: g for g in
              sr.content.get_volumetric_roi_measurement_groups()}
    discs = pred.report["discs"]
    assert sorted(groups) == sorted(f"disc {d['level']}" for d in discs)
    n_checked = 0
    for d in discs:
        g = groups[f"disc {d['level']}"]
        assert g.finding_type.value == dr.ANATOMY_CODES[d["level"]][0]
        ref = g.referenced_segment
        assert ref.referenced_segment_numbers == [res.segment_numbers[d["level"]]]
        assert ref.referenced_sop_instance_uid == str(res.seg.SOPInstanceUID)
        got = {(m.name.meaning): (m.value, m.unit.value) for m in g.get_measurements()}
        for column, unit in (("disc_height_mm", "mm"), ("disc_height_index", "1"),
                             ("canal_ap_diameter_mm", "mm"), ("disc_area_mm2", "mm2"),
                             ("tilt_deg", "deg")):
            v = d["measurements"][column]["value"]
            name = dr._MEASUREMENT_NAMES[column][2]
            if v is None:
                assert name not in got
                continue
            assert got[name][0] == pytest.approx(v, rel=1e-6) and got[name][1] == unit
            n_checked += 1
        qual = {q.name.value: q.value for q in g.get_qualitative_evaluations()}
        if d["predicted_class"]:
            assert qual[dr.GRADE_CLASS_NAME[0]].value == d["predicted_class"]
            assert qual[dr.PFIRRMANN_NAME[0]].value == f"PG{d['pfirrmann']}"
            assert qual[dr.SEVERITY_NAME[0]].value == dr.SEVERITY_CODES[d["severity"]][0]
            assert got[dr.PROBABILITY_NAME[2]][0] == pytest.approx(d["predicted_probability"])
        else:
            assert dr.NOT_GRADED_NAME[0] in qual
    assert n_checked >= 3 * len(discs)
    (group,) = sr.content.get_image_measurement_groups()
    assert group.tracking_identifier == dr.PATIENT_GROUP_ID
    values = {m.name.value: m.value for m in group.get_measurements()}
    assert values == {dr.ODI_NAME[0]: 30.0, dr.NRS_NAME[0]: 4.0}
    (rec,) = group.get_qualitative_evaluations()
    want = pred.report["recommendation"]
    assert rec.value.value == (dr.RECOMMENDATION_CODES[want["recommendation"]][0] if want
                               else dr.NO_RECOMMENDATION[0])
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == dr.PRIVATE_SCHEME


def test_dciodvfy_finds_no_error(results):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed: make system-deps")
    _, paths = results
    for key, path in paths.items():
        out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=120)
        lines = (out.stdout + out.stderr).splitlines()
        assert lines and lines[0] == {"seg": "Segmentation", "sr": "Comprehensive3DSR"}[key]
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert not errors, (key, errors[:5])


def test_no_patient_identifier_is_printed(predicted, capfd, caplog):
    pred, datasets, _ = predicted
    dr.build_dicom_results(pred.report, pred.masks, datasets)
    captured = capfd.readouterr()
    blob = captured.out + captured.err + caplog.text
    for s in PHI_STRINGS:
        assert s not in blob, s


def test_refusals_name_the_field(predicted):
    pred, datasets, _ = predicted
    with pytest.raises(SpoilsError, match="source datasets"):
        dr.build_dicom_results(pred.report, pred.masks, datasets[:2])
    with pytest.raises(SpoilsError, match="mask"):
        dr.build_dicom_results(pred.report, [m[:, :-1] for m in pred.masks], datasets)
    with pytest.raises(SpoilsError, match="input.kind"):
        dr.build_dicom_results({**pred.report, "input": {**pred.report["input"],
                                                          "kind": "picture"}},
                               pred.masks, datasets)
    with pytest.raises(SpoilsError, match="no structure"):
        dr.build_dicom_results(pred.report, [np.zeros_like(m) for m in pred.masks], datasets)
