"""A prediction as DICOM objects for a PACS: a Segmentation (SEG) of the predicted label map and
a Structured Report (TID 1500 Measurement Report in a Comprehensive 3D SR) of the per-disc
measurements, grades and the recommendation (highdicom).

:func:`build_dicom_results` takes what :meth:`Predictor.predict_full
<spoils_tf.serve.predictor.Predictor.predict_full>` returns (the report dict and the label maps,
or ``report.json`` and ``mask.png`` of a report folder) and the pydicom datasets of the source
series, and returns both objects; :func:`write_dicom_results` writes them as files.

Geometry: ``spoils_tf.data.dicom_io`` sorts the series along the slice normal and turns each
slice to display orientation (``report["input"]["reorientation"]``: transpose, flips). Here the
source datasets are sorted by the same rule (:func:`sort_series`), the label map of each slice
read (``report["input"]["series_slice_indices"]``, same order as the masks) is turned back to the
source's rows and columns (:func:`mask_on_source`), and the SEG frames reference those source
instances. A label map that cannot be put back exactly on its source slice (another series,
another size) is refused, never resampled silently.

Segmentation: BINARY, one segment per foreground class of ``spoils_tf.labels`` present in the
label maps, numbered 1..k in class-id order and labelled with the class name; category
"Anatomical Structure" (SCT 91723000), type from :data:`ANATOMY_CODES` (DICOM CID 7603 vertebrae,
CID 7604 discs, the vertebral canal; see there where no exact code exists); algorithm
identification ``spoils-tf`` with the package version and the segmentation model's label,
version and creation date from its model card. A label map given by the user (``--mask``) is
recorded as ``MANUAL`` without algorithm identification.

Structured report: one TID 1411 ROI group per disc level (tracking identifier ``disc <level>``,
a reference to its SEG segment, all frames, finding type and site the disc's CID 7604 code; TID
1410's "Referenced Segmentation Frame" would carry both a frame and a segment number, which
dciodvfy rejects for a single-frame source) with every finite measurement of ``report["discs"][i]
["measurements"]`` except the pixel centroid, in UCUM units (:data:`UCUM_UNITS`), and, for a
graded disc, the Pfirrmann grade, the spondylosis severity and the 11-class grade as qualitative
evaluations and the ensemble's probability for that class; one TID 1501 group for the patient:
ODI and NRS (when given) and the recommendation, or why there is none, as a coded concept.
Concepts with no standard code use the private scheme :data:`PRIVATE_SCHEME`, declared in the
SR's Coding Scheme Identification Sequence. The SR is COMPLETE and UNVERIFIED (software output
that no clinician has signed).

Privacy: both objects carry the source study's patient and study modules, as DICOM requires
(highdicom copies them); nothing here prints or logs them. Every error names the field, never
a patient value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Optional, Sequence

import numpy as np

import spoils_tf
from spoils_tf import fileio, labels
from spoils_tf.clinical import strata
from spoils_tf.errors import SpoilsError

SOFTWARE_NAME = "spoils-tf"
MANUFACTURER = "spoils-tf project"
PRIVATE_SCHEME = "99SPOILS"
PRIVATE_SCHEME_NAME = "spoils-tf private concepts (no standard code exists)"
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"
DICOM_FILES: dict[str, str] = {"seg": SEG_FILE, "sr": SR_FILE}
_DICOM_KINDS = ("dicom_series", "dicom_file")
_REORIENTATIONS = ("transpose", "flip_rows", "flip_cols")
_REQUIRED_SOURCE_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                           "FrameOfReferenceUID")


def _code(value: str, scheme: str, meaning: str):
    import highdicom as hd
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _private(value: str, meaning: str):
    return _code(value, PRIVATE_SCHEME, meaning)


# === Coded concepts ===
# Segmented property type per class name. Vertebrae L1-L5: DICOM CID 7603; discs: DICOM CID 7604
# (note L5/S1 is 715056000 there, not SNOMED's older "disc of fifth lumbar vertebra" 75782005);
# canal: SCT "Vertebral canal" (CID 6115/8134). S1: CID 7603 ends at L5 and CID 7151 has only
# "Sacrum"; the class is the S1 body (SPIDER's sacrum label cut at the S1 segment), so SNOMED
# CT "Structure of first sacral vertebra" (65985001) is used, outside any DICOM context group.
ANATOMY_CODES: dict[str, tuple[str, str, str]] = {
    "L1": ("66794005", "SCT", "L1 vertebra"),
    "L2": ("14293000", "SCT", "L2 vertebra"),
    "L3": ("36470004", "SCT", "L3 vertebra"),
    "L4": ("11994002", "SCT", "L4 vertebra"),
    "L5": ("49668003", "SCT", "L5 vertebra"),
    "S1": ("65985001", "SCT", "Structure of first sacral vertebra"),
    "T12-L1": ("76206002", "SCT", "T12/L1 disc"),
    "L1-L2": ("80064006", "SCT", "L1/L2 disc"),
    "L2-L3": ("67459009", "SCT", "L2/L3 disc"),
    "L3-L4": ("62551000", "SCT", "L3/L4 disc"),
    "L4-L5": ("84020006", "SCT", "L4/L5 disc"),
    "L5-S1": ("715056000", "SCT", "L5/S1 disc"),
    "canal": ("61853006", "SCT", "Vertebral canal"),
}
ANATOMICAL_STRUCTURE = ("91723000", "SCT", "Anatomical Structure")

# report unit (spoils_tf.serve.report_data.unit_of) -> UCUM (code, meaning). Grey levels of the
# windowed 8-bit image and slice counts are dimensionless: UCUM "1" with an annotation.
UCUM_UNITS: dict[str, tuple[str, str]] = {
    "mm": ("mm", "millimeter"), "mm²": ("mm2", "square millimeter"),
    "mm³": ("mm3", "cubic millimeter"), "degrees": ("deg", "degree"),
    "ratio": ("1", "no units"), "fraction of CSF signal": ("1", "no units"),
    "grey level (0-255)": ("{grey level}", "grey level of the windowed 8-bit image"),
    "slices": ("{slices}", "slices"),
}
# measurement columns not put in the SR: image positions in pixels, not measurements (the SEG
# carries where each structure is)
SKIPPED_COLUMNS: tuple[str, ...] = ("centroid_row", "centroid_col")

# Measurement concept names. Area and volume have SNOMED CT codes (CID 7469/7472); every other
# measurement is a spoils-tf definition (spoils_tf.geometry.measure) with no standard code.
_MEASUREMENT_NAMES: dict[str, tuple[str, str, str]] = {
    "disc_area_mm2": ("42798000", "SCT", "Area"),
    "disc_volume_mm3": ("118565006", "SCT", "Volume"),
    "tilt_deg": ("DISC_TILT", PRIVATE_SCHEME, "Disc tilt to the image horizontal"),
    "disc_height_mm": ("DISC_H_MEAN", PRIVATE_SCHEME, "Disc height, mean over 10-90% of depth"),
    "disc_central_height_mm": ("DISC_H_CENTRAL", PRIVATE_SCHEME, "Disc height, central"),
    "disc_anterior_height_mm": ("DISC_H_ANT", PRIVATE_SCHEME, "Disc height, anterior (10%)"),
    "disc_posterior_height_mm": ("DISC_H_POST", PRIVATE_SCHEME, "Disc height, posterior (90%)"),
    "disc_width_mm": ("DISC_W_MEAN", PRIVATE_SCHEME, "Disc anteroposterior width, mean"),
    "disc_midpoint_width_mm": ("DISC_W_MID", PRIVATE_SCHEME,
                               "Disc anteroposterior width through its centroid"),
    "vert_above_height_mm": ("VB_ABOVE_H", PRIVATE_SCHEME, "Height of the vertebral body above"),
    "vert_above_width_mm": ("VB_ABOVE_W", PRIVATE_SCHEME, "Depth of the vertebral body above"),
    "vert_below_height_mm": ("VB_BELOW_H", PRIVATE_SCHEME, "Height of the vertebral body below"),
    "vert_below_width_mm": ("VB_BELOW_W", PRIVATE_SCHEME, "Depth of the vertebral body below"),
    "disc_height_index": ("DHI", PRIVATE_SCHEME,
                          "Disc height index (disc / adjacent vertebral body height)"),
    "canal_ap_diameter_mm": ("CANAL_AP", PRIVATE_SCHEME,
                             "Spinal canal anteroposterior diameter at the disc"),
    "disc_bulge_mm": ("DISC_BULGE", PRIVATE_SCHEME,
                      "Disc posterior margin beyond the vertebral margins"),
    "disc_si_mean": ("DISC_SI", PRIVATE_SCHEME, "Disc mean signal intensity"),
    "csf_si_median": ("CSF_SI", PRIVATE_SCHEME, "CSF median signal intensity at the disc"),
    "vert_si_median": ("VB_SI", PRIVATE_SCHEME, "Adjacent vertebral bodies' median signal"),
    "disc_si_csf_ratio": ("DISC_CSF_SI", PRIVATE_SCHEME, "Disc to CSF signal intensity ratio"),
    "disc_si_vert_ratio": ("DISC_VB_SI", PRIVATE_SCHEME,
                           "Disc to vertebral body signal intensity ratio"),
    "disc_si_inner_outer_diff": ("DISC_SI_NUC_ANN", PRIVATE_SCHEME,
                                 "Disc nucleus minus annulus signal, over CSF signal"),
    "disc_si_gmm_gap": ("DISC_SI_GMM_GAP", PRIVATE_SCHEME,
                        "Disc signal histogram peak separation, over CSF signal"),
    "disc_volume_n_slices": ("DISC_VOL_SLICES", PRIVATE_SCHEME,
                             "Slices summed for the disc volume"),
}
# Qualitative evaluations and patient-level items (no standard codes: Pfirrmann grading, the
# SPOILS 11-class grade and its decision table are not in SNOMED CT or DICOM). Severity values
# use SNOMED CT's Mild / Moderate / Severe (CID 3716) for the paper's low / moderate / high.
PFIRRMANN_NAME = ("PFIRRMANN", PRIVATE_SCHEME, "Pfirrmann grade of disc degeneration")
SEVERITY_NAME = ("SPONDYLOSIS_SEV", PRIVATE_SCHEME, "Spondylosis severity")
GRADE_CLASS_NAME = ("SPOILS_GRADE", PRIVATE_SCHEME, "SPOILS grade class")
PROBABILITY_NAME = ("GRADE_PROB", PRIVATE_SCHEME, "Predicted probability of the grade class")
NOT_GRADED_NAME = ("NOT_GRADED", PRIVATE_SCHEME, "Disc not graded")
NOT_GRADED_REASONS: dict[str, tuple[str, str, str]] = {
    "implausible": ("IMPLAUSIBLE_MEAS", PRIVATE_SCHEME, "A measurement outside its plausible "
                                                        "range"),
    "not_found": ("NOT_MEASURABLE", PRIVATE_SCHEME, "Disc not measurable on the slices read"),
    "no_grader": ("NO_GRADER", PRIVATE_SCHEME, "No grade classifier in the model bundle"),
}
SEVERITY_CODES: dict[str, tuple[str, str, str]] = {
    "low": ("255604002", "SCT", "Mild"), "moderate": ("6736007", "SCT", "Moderate"),
    "high": ("24484000", "SCT", "Severe")}
ODI_NAME = ("ODI", PRIVATE_SCHEME, "Oswestry Disability Index")
NRS_NAME = ("PAIN_NRS", PRIVATE_SCHEME, "Pain numerical rating scale")
RECOMMENDATION_NAME = ("RECOMMENDATION", PRIVATE_SCHEME, "Decision support recommendation")
RECOMMENDATION_CODES: dict[str, tuple[str, str, str]] = {
    strata.SURGICAL_CONSULTATION: ("SURG_CONSULT", PRIVATE_SCHEME, "Surgical consultation"),
    strata.TFESI: ("TFESI", PRIVATE_SCHEME, "Transforaminal epidural steroid injection"),
    strata.CONSERVATIVE_CARE: ("CONSERVATIVE", PRIVATE_SCHEME, "Conservative care"),
    strata.CONSERVATIVE_SPECIALIST_REVIEW: ("CONSERV_SPEC", PRIVATE_SCHEME,
                                            "Conservative care with specialist review"),
    strata.CLINICAL_REEVALUATION: ("REEVALUATION", PRIVATE_SCHEME, "Clinical re-evaluation"),
}
NO_RECOMMENDATION = ("NO_RECOMMEND", PRIVATE_SCHEME,
                     "No recommendation (abstained; see the report)")
PROCEDURE_REPORTED = ("25056-3", "LN", "MRI unspecified body region")   # CID 100
PATIENT_GROUP_ID = "decision support"


# === Source series ===
def _floats(ds, keyword: str, n: int) -> Optional[np.ndarray]:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        return None
    return np.asarray([float(v) for v in value], np.float64)


def sort_series(datasets: Sequence[Any]) -> list[Any]:
    """The datasets of one series sorted as ``spoils_tf.data.dicom_io`` sorts them: by
    ``ImagePositionPatient`` projected on the slice normal, else by ``InstanceNumber``.

    Raises:
        SpoilsError: no dataset, several ``SeriesInstanceUID``, a multi-frame dataset, no
            ``ImageOrientationPatient``, or neither position nor instance number on every one.
    """
    datasets = list(datasets)
    if not datasets:
        raise SpoilsError(None, "source datasets", "empty; expected the source series")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) != 1:
        raise SpoilsError(None, "SeriesInstanceUID (0020,000E)",
                          f"the source datasets hold {len(series)} series; expected the one "
                          "series that was segmented")
    keys = []
    for i, ds in enumerate(datasets):
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise SpoilsError(None, f"source datasets[{i}] NumberOfFrames (0028,0008)",
                              "multi-frame; expected classic single-frame images")
        iop = _floats(ds, "ImageOrientationPatient", 6)
        if iop is None:
            raise SpoilsError(None, f"source datasets[{i}] ImageOrientationPatient (0020,0037)",
                              "missing; expected six direction cosines")
        ipp = _floats(ds, "ImagePositionPatient", 3)
        number = ds.get("InstanceNumber")
        keys.append((None if ipp is None else float(np.dot(ipp, np.cross(iop[:3], iop[3:]))),
                     None if number in (None, "") else int(number)))
    if all(k[0] is not None for k in keys):
        order = sorted(range(len(datasets)), key=lambda i: keys[i][0])
    elif all(k[1] is not None for k in keys):
        order = sorted(range(len(datasets)), key=lambda i: keys[i][1])
    else:
        raise SpoilsError(None, "ImagePositionPatient (0020,0032)",
                          "missing on some source datasets, and so is InstanceNumber "
                          "(0020,0013): the slices cannot be ordered")
    return [datasets[i] for i in order]


def mask_on_source(mask: np.ndarray, reorientation: Sequence[str],
                   shape_hw: tuple[int, int]) -> np.ndarray:
    """A label map in display orientation put back on its source slice's rows and columns:
    the operations of ``reorientation`` (``dicom_io.to_display_orientation``) undone in reverse
    order.

    Args:
        mask: int [H, W] class ids, display orientation.
        reorientation: the operations that were applied (``"transpose"``, ``"flip_rows"``,
            ``"flip_cols"``), in order.
        shape_hw: (Rows, Columns) of the source slice.

    Returns:
        uint8 [Rows, Columns].

    Raises:
        SpoilsError: an unknown operation, or a result whose shape is not ``shape_hw`` (the
            label map was made on another grid: it is not resampled).
    """
    out = np.asarray(mask)
    for op in reversed(list(reorientation)):
        if op not in _REORIENTATIONS:
            raise SpoilsError(None, "report input.reorientation",
                              f"unknown operation {op!r}; expected one of {_REORIENTATIONS}")
        out = {"transpose": lambda a: a.T, "flip_rows": lambda a: a[::-1, :],
               "flip_cols": lambda a: a[:, ::-1]}[op](out)
    if tuple(out.shape) != tuple(shape_hw):
        raise SpoilsError(None, "mask", f"{out.shape[0]}x{out.shape[1]} px on the source grid, "
                                        f"but the source slice is {shape_hw[0]}x{shape_hw[1]} "
                                        "(Rows x Columns): the label map was not made on this "
                                        "series' pixel grid")
    return np.ascontiguousarray(out, np.uint8)


def segmented_sources(report: dict, masks: Sequence[np.ndarray], datasets: Sequence[Any]
                      ) -> list[tuple[Any, np.ndarray]]:
    """(source dataset, label map on its grid) for each mask, mid-sagittal first.

    ``masks[j]`` belongs to ``report["input"]["series_slice_indices"][j]`` (the order of
    ``Prediction.masks``); fewer masks than slices read is allowed (a report folder keeps only
    the mid-sagittal ``mask.png``).

    Raises:
        SpoilsError: the report is not of a DICOM input, the source series has another number of
            slices than the report read, or a mask does not fit its slice (:func:`mask_on_source`).
    """
    inp = report.get("input") or {}
    if inp.get("kind") not in _DICOM_KINDS:
        raise SpoilsError(None, "report input.kind", f"{inp.get('kind')!r}; a DICOM SEG/SR "
                                                     f"needs a DICOM input ({_DICOM_KINDS})")
    indices = list(inp.get("series_slice_indices") or [0])
    if not 1 <= len(masks) <= len(indices):
        raise SpoilsError(None, "masks", f"{len(masks)} label maps for {len(indices)} slices "
                                         "read; expected 1 to that many")
    ordered = sort_series(datasets)
    for keyword in _REQUIRED_SOURCE_FIELDS:
        if not ordered[0].get(keyword):
            raise SpoilsError(None, f"source {keyword}", "missing; a SEG and SR reference the "
                                                         "source study, series and frame of "
                                                         "reference by it")
    total = int(inp.get("n_slices_total", len(ordered)))
    if total != len(ordered):
        raise SpoilsError(None, "source datasets", f"{len(ordered)} slices, but the report read "
                                                   f"a series of {total}: not the same series")
    out = []
    for mask, k in zip(masks, indices):
        ds = ordered[int(k)]
        out.append((ds, mask_on_source(mask, inp.get("reorientation") or [],
                                       (int(ds.Rows), int(ds.Columns)))))
    return out


# === Segmentation ===
def _algorithm(report: dict):
    """``hd.AlgorithmIdentificationSequence`` of the segmentation model, or None for a
    supplied mask."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    model = (report.get("models") or {}).get("segmentation") or {}
    if report["input"].get("segmentation") == "supplied mask" or not model.get("present"):
        return None
    params = {"segmentation_model": str(model.get("label", "")),
              "model_version": str(model.get("version", "")),
              "model_created": str(model.get("created") or "unknown")}
    return hd.AlgorithmIdentificationSequence(
            name=SOFTWARE_NAME, family=codes.cid7162.ArtificialIntelligence,
            version=spoils_tf.__version__, source=MANUFACTURER, parameters=params)


def _segment_description(number: int, class_name: str, algorithm):
    import highdicom as hd
    seg_class = labels.SEG_CLASSES[labels.SEG_ID[class_name]]
    return hd.seg.SegmentDescription(
            segment_number=number, segment_label=class_name,
            segmented_property_category=_code(*ANATOMICAL_STRUCTURE),
            segmented_property_type=_code(*ANATOMY_CODES[class_name]),
            algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*seg_class.color))


def build_segmentation(report: dict, sources: Sequence[tuple[Any, np.ndarray]]):
    """The SEG of the label maps on their source slices (:func:`segmented_sources`).

    Returns:
        (``hd.seg.Segmentation``, class name -> segment number).

    Raises:
        SpoilsError: no foreground class in any label map (nothing to store).
    """
    import highdicom as hd
    from pydicom.uid import generate_uid
    present = sorted({int(v) for _, m in sources for v in np.unique(m)} - {labels.BACKGROUND_ID})
    if not present:
        raise SpoilsError(None, "mask", "no structure was segmented: there is no segment to "
                                        "store")
    numbers = {labels.SEG_NAMES[c]: i + 1 for i, c in enumerate(present)}
    lut = np.zeros(labels.NUM_SEG_CLASSES, np.uint8)
    for name, n in numbers.items():
        lut[labels.SEG_ID[name]] = n
    algorithm = _algorithm(report)
    model = (report.get("models") or {}).get("segmentation") or {}
    seg = hd.seg.Segmentation(
            source_images=[ds for ds, _ in sources],
            pixel_array=np.stack([lut[m] for _, m in sources]),
            segmentation_type="BINARY",
            segment_descriptions=[_segment_description(n, name, algorithm)
                                  for name, n in numbers.items()],
            series_instance_uid=generate_uid(), series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer=MANUFACTURER, manufacturer_model_name=SOFTWARE_NAME,
            software_versions=f"{SOFTWARE_NAME} {spoils_tf.__version__}",
            device_serial_number=str(model.get("label") or "supplied mask"),
            content_label="SPOILS", content_description="lumbar spine segmentation (spoils-tf)",
            series_description="spoils-tf segmentation")
    return seg, numbers


# === Structured report ===
def _ucum(unit: str):
    if unit not in UCUM_UNITS:
        raise SpoilsError(None, "report measurement unit", f"{unit!r} has no UCUM code here; "
                                                           f"expected one of {list(UCUM_UNITS)}")
    code, meaning = UCUM_UNITS[unit]
    return _code(code, "UCUM", meaning)


def _measurement_name(column: str):
    if column in _MEASUREMENT_NAMES:
        return _code(*_MEASUREMENT_NAMES[column])
    # a measurement column added after this table: its own name as a private code
    return _private(column, column.replace("_", " "))


def _disc_group(entry: dict, seg, numbers: dict[str, int], has_grader: bool):
    """The TID 1411 group of one disc level."""
    import highdicom as hd
    from pydicom.uid import generate_uid
    level = entry["level"]
    site = _code(*ANATOMY_CODES[level])
    measurements = []
    for column, m in entry["measurements"].items():
        value = m.get("value")
        if column in SKIPPED_COLUMNS or value is None or not math.isfinite(float(value)):
            continue
        measurements.append(hd.sr.Measurement(name=_measurement_name(column), value=float(value),
                                              unit=_ucum(m["unit"])))
    evaluations = []
    cls = entry.get("predicted_class")
    if cls:
        evaluations += [
            hd.sr.QualitativeEvaluation(_code(*PFIRRMANN_NAME),
                                        _private(f"PG{entry['pfirrmann']}",
                                                 f"Pfirrmann grade {entry['pfirrmann']}")),
            hd.sr.QualitativeEvaluation(_code(*SEVERITY_NAME),
                                        _code(*SEVERITY_CODES[entry["severity"]])),
            hd.sr.QualitativeEvaluation(_code(*GRADE_CLASS_NAME),
                                        _private(cls, f"SPOILS grade class {cls}"))]
        measurements.append(hd.sr.Measurement(name=_code(*PROBABILITY_NAME),
                                              value=float(entry["predicted_probability"]),
                                              unit=_ucum("ratio")))
    else:
        why = ("implausible" if entry.get("implausible_measurements") else
               "not_found" if not entry.get("found") else
               "no_grader" if not has_grader else "not_found")
        evaluations.append(hd.sr.QualitativeEvaluation(_code(*NOT_GRADED_NAME),
                                                       _code(*NOT_GRADED_REASONS[why])))
    referenced = None
    if level in numbers:
        referenced = hd.sr.ReferencedSegment.from_segmentation(seg,
                                                               segment_number=numbers[level])
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(),
                                                         identifier=f"disc {level}"),
            referenced_segment=referenced, finding_type=site,
            finding_sites=[hd.sr.FindingSite(anatomic_location=site)],
            measurements=measurements or None, qualitative_evaluations=evaluations or None)


def _patient_group(report: dict):
    """The TID 1501 group of the scores and the recommendation."""
    import highdicom as hd
    from pydicom.uid import generate_uid
    scores = report.get("scores") or {}
    measurements = []
    if scores.get("odi") is not None:
        measurements.append(hd.sr.Measurement(name=_code(*ODI_NAME), value=float(scores["odi"]),
                                              unit=_code("%", "UCUM", "percent")))
    if scores.get("nrs") is not None:
        measurements.append(hd.sr.Measurement(name=_code(*NRS_NAME), value=float(scores["nrs"]),
                                              unit=_code("{score}", "UCUM", "score")))
    rec = report.get("recommendation")
    value = (RECOMMENDATION_CODES[rec["recommendation"]] if rec and rec.get("recommendation")
             else NO_RECOMMENDATION)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(),
                                                         identifier=PATIENT_GROUP_ID),
            finding_sites=[hd.sr.FindingSite(anatomic_location=_code("122496007", "SCT",
                                                                     "Lumbar spine"))],
            measurements=measurements or None,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(_code(*RECOMMENDATION_NAME),
                                                                 _code(*value))])


def build_sr(report: dict, seg, numbers: dict[str, int],
             sources: Sequence[tuple[Any, np.ndarray]]):
    """The Comprehensive 3D SR (TID 1500) of the report; evidence: the source slices and the SEG.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid
    models = report.get("models") or {}
    has_grader = any((models.get(k) or {}).get("in_ensemble")
                     for k in ("crop_classifier", "geometry_classifier"))
    device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[SOFTWARE_NAME, spoils_tf.__version__]),
            name=SOFTWARE_NAME, manufacturer_name=MANUFACTURER,
            model_name=str((models.get("segmentation") or {}).get("label") or SOFTWARE_NAME))
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    groups = [_disc_group(e, seg, numbers, has_grader) for e in report["discs"]]
    content = hd.sr.MeasurementReport(
            observation_context=context, procedure_reported=_code(*PROCEDURE_REPORTED),
            imaging_measurements=groups + [_patient_group(report)],
            title=codes.cid7021.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
            evidence=[ds for ds, _ in sources] + [seg], content=content,
            series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
            is_complete=True, is_final=False, is_verified=False,
            series_description="spoils-tf measurements and grades")
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


# === Entry points ===
@dataclasses.dataclass
class DicomResults:
    """The DICOM objects of one prediction.

    Attributes:
        seg: ``hd.seg.Segmentation`` (BINARY, one segment per class present).
        sr: ``hd.sr.Comprehensive3DSR`` (TID 1500).
        segment_numbers: class name -> SEG segment number.
        source_sop_instance_uids: the source instances segmented, mid-sagittal first.
    """
    seg: Any
    sr: Any
    segment_numbers: dict[str, int]
    source_sop_instance_uids: list[str]


def build_dicom_results(report: dict, masks: Sequence[np.ndarray],
                        datasets: Sequence[Any]) -> DicomResults:
    """SEG and SR of a prediction (module docstring).

    Args:
        report: the report dict (``Prediction.report`` or ``report.json``) of a DICOM input.
        masks: int [H, W] label maps in display orientation, ``Prediction.masks`` order
            (mid-sagittal first; a prefix is allowed).
        datasets: the pydicom datasets (with pixel data) of every slice of the source series.

    Raises:
        SpoilsError: naming the field: not a DICOM input, another series, a mask off the
            source grid, nothing segmented, a unit without a UCUM code.
    """
    sources = segmented_sources(report, masks, datasets)
    seg, numbers = build_segmentation(report, sources)
    sr = build_sr(report, seg, numbers, sources)
    return DicomResults(seg, sr, numbers, [str(ds.SOPInstanceUID) for ds, _ in sources])


def read_report_dir(report_dir) -> tuple[dict, list[np.ndarray]]:
    """``report.json`` and ``mask.png`` (the mid-sagittal label map) of a report folder.

    Raises:
        SpoilsError: a file missing or unreadable (named).
    """
    import PIL.Image
    from spoils_tf.serve.run import REPORT_FILES
    folder = pathlib.Path(report_dir)
    json_path, mask_path = folder / REPORT_FILES["json"], folder / REPORT_FILES["mask"]
    for p in (json_path, mask_path):
        if not p.is_file():
            raise SpoilsError(p, None, "missing; expected a report folder of spoils predict")
    try:
        report = json.loads(json_path.read_text(encoding="utf-8"))
        with PIL.Image.open(mask_path) as img:
            mask = np.asarray(img)
    except (OSError, ValueError) as e:
        raise SpoilsError(folder, None, f"unreadable report file ({type(e).__name__}: {e})") \
            from e
    return report, [mask.astype(np.int32)]


def read_series_folder(folder) -> list[Any]:
    """The pydicom datasets of the image files in ``folder`` (recursive), pixels included;
    files that are not DICOM images are skipped.

    Raises:
        SpoilsError: no DICOM image in the folder.
    """
    import pydicom
    out = []
    for p in sorted(q for q in pathlib.Path(folder).rglob("*") if q.is_file()):
        try:
            ds = pydicom.dcmread(str(p))
        except Exception:   # noqa: BLE001 - not DICOM: skipped, as dicom_io does
            continue
        if "PixelData" in ds and ds.get("Rows") is not None:
            out.append(ds)
    if not out:
        raise SpoilsError(folder, None, "no DICOM image found; expected the source series")
    return out


def write_dicom_results(results: DicomResults, out_dir) -> dict[str, pathlib.Path]:
    """Writes ``seg.dcm`` and ``sr.dcm`` (:data:`DICOM_FILES`) into ``out_dir``, each atomically.

    Returns:
        key (``"seg"``, ``"sr"``) -> path written.
    """
    import io
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, ds in (("seg", results.seg), ("sr", results.sr)):
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        paths[key] = out / DICOM_FILES[key]
        fileio.atomic_write_bytes(paths[key], buf.getvalue())
    return paths
