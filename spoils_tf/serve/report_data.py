"""The report dict of one patient (``report.json``, what ``spoils_tf.serve.report`` renders):
:func:`build_report` assembles it from a :class:`~spoils_tf.serve.predictor.PatientCase` that
went through every stage of :meth:`~spoils_tf.serve.predictor.Predictor.predict_full`, and the
:class:`~spoils_tf.serve.predictor.Predictor` that ran them (its bundle, decision table,
precision and load time).

Schema :data:`SCHEMA_VERSION`: status, scores, one entry per disc level (where it was found
and measured, its measurements with units (:func:`unit_of`), reasons, each classifier's and the
ensemble's probabilities and top-3), the recommendation or why there is none, the decision
rules, the models, notes and the stage timings in milliseconds.

Uncertainty: each classifier entry of a disc (and its ensemble) carries ``"uncertain"``
(:func:`is_uncertain`: largest probability below ``UNCERTAIN_FACTOR / number of classes``);
the HTML page shows a caution next to that top-3.

Calibration: ``report["models"]["ensemble"]["calibrated"]`` is True only when the ensemble has
one member and its card has ``"calibrated": true`` (an average of calibrated probabilities is
not calibrated in general); otherwise the report calls the probabilities uncalibrated. Each
graded disc carries ``"predicted_probability"``, the ensemble's probability for its class.

Status: :data:`STATUS_OK`, or :data:`STATUS_NO_DISC` when no disc is found on any slice (no
grades, no recommendation, :data:`NO_DISC_NOTE`).

Timing: ``report["timing_ms_note"]`` says whether any stage includes one-off graph tracing
(:data:`TIMING_NOTE_WARM` or :data:`TIMING_NOTE_TRACED`).

Privacy: the report holds technical facts only (the caller's ``source``, e.g.
``SagittalSeries.deidentified_summary``, and the sha256 of the input bytes), never a patient
field and never the input path (folder names are often patient names).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from spoils_tf import labels
from spoils_tf.clinical import rules
from spoils_tf.geometry import measure, plausibility
from spoils_tf.serve import bundle
from spoils_tf.serve.inputs import finite_or_none

if TYPE_CHECKING:   # annotations only: predictor imports this module
    from spoils_tf.serve.predictor import PatientCase, Predictor, _Classifier

SCHEMA_VERSION = "spoils-tf/report/1"
STATUS_OK = "ok"
STATUS_NO_DISC = "no_disc"
DISCLAIMER = ("This report is decision support produced by software. It supports, and does not "
              "replace, the judgement of a qualified clinician, who must review the images and "
              "the patient before any treatment decision. It is not a diagnosis.")
NO_DISC_NOTE = ("no intervertebral disc was found in the segmentation of any slice: no grades "
                "and no recommendation can be given; check the input (a sagittal lumbar T2 "
                "slice, superior up, anterior left) and the segmentation overlay")
SUPPLIED_MASK = "supplied mask"
# A classifier is "uncertain" for a disc when its largest probability is below this many times
# the uniform probability 1/C (project choice: with 11 classes, below 2/11 = 0.18, the model
# hardly prefers any class; such an entry gets "uncertain": true and the page a caution).
UNCERTAIN_FACTOR = 2.0
UNCALIBRATED_NOTE = ("uncalibrated: the grader's card does not state calibrated probabilities, "
                     "so a probability is a score, not the chance that the grade is right")
CALIBRATED_NOTE = "calibrated (the grader's card states it)"
# report["timing_ms_note"]: whether the stage times include one-off graph tracing.
TIMING_NOTE_WARM = ("graph tracing excluded: every model used had already run on this image "
                    "size (Predictor.warmup, or an earlier call)")
TIMING_NOTE_TRACED = "includes one-off graph tracing (first run of the model on this size): {}"

# Units of the measurement columns of spoils_tf.geometry.measure (and the volume columns).
_EXACT_UNITS: dict[str, str] = {
    "centroid_row": "px", "centroid_col": "px", "tilt_deg": "degrees",
    "disc_height_index": "ratio", "disc_si_csf_ratio": "ratio", "disc_si_vert_ratio": "ratio",
    "disc_si_mean": "grey level (0-255)", "csf_si_median": "grey level (0-255)",
    "vert_si_median": "grey level (0-255)",
    "disc_si_inner_outer_diff": "fraction of CSF signal",
    "disc_si_gmm_gap": "fraction of CSF signal", "disc_volume_n_slices": "slices",
}


def unit_of(column: str) -> str:
    """The unit of a measurement column: ``mm``, ``mm²``, ``mm³``, ``degrees``, ``px``,
    ``ratio``, a grey level or a fraction of the CSF signal."""
    if column in _EXACT_UNITS:
        return _EXACT_UNITS[column]
    for suffix, unit in (("_mm3", "mm³"), ("_mm2", "mm²"), ("_mm", "mm"), ("_deg", "degrees")):
        if column.endswith(suffix):
            return unit
    return ""


def measurement_columns() -> tuple[str, ...]:
    """Columns reported per disc: ``measure.MEASUREMENT_COLUMNS`` without ``level`` and
    ``reason``, then the volume across the slices read."""
    return tuple(c for c in measure.MEASUREMENT_COLUMNS if c not in ("level", "reason")) + (
        "disc_volume_mm3", "disc_volume_n_slices")


# === Small helpers ===
def _reasons(text: Any) -> list[str]:
    return [r for r in str(text or "").split(";") if r]


def is_uncertain(probabilities: Sequence[float]) -> bool:
    """True when the largest of ``probabilities`` (float [C], summing to 1) is below
    ``UNCERTAIN_FACTOR / C``: the classifier barely prefers any class (nearly uniform).

    Raises:
        ValueError: ``probabilities`` is empty.
    """
    p = np.asarray(list(probabilities), np.float64)
    if p.size == 0:
        raise ValueError("probabilities: empty; expected one probability per class")
    return bool(p.max() < UNCERTAIN_FACTOR / p.size)


def _top(probs: Mapping[str, float], k: int = 3) -> list[list[Any]]:
    return [[c, p] for c, p in sorted(probs.items(), key=lambda cp: -cp[1])[:k]]


# === Report ===
def models_info(predictor: Predictor) -> dict[str, Any]:
    """Per bundle model: present, label, version, created, held-out metrics, classes."""
    out: dict[str, Any] = {}
    for name, key in ((bundle.SEG, "segmentation"), (bundle.CROP, "crop_classifier"),
                      (bundle.GEOMETRY, "geometry_classifier")):
        entry = predictor.bundle.get(name)
        if entry is None:
            out[key] = {"present": False, "name": name,
                        "note": f"{name} is absent from the bundle: not used"}
            continue
        card = entry.card
        info = {"present": True, "name": name, "label": entry.label,
                "version": entry.version, "created": card.get("created"),
                "metrics": card.get("metrics", {}),
                "data_fingerprint": card.get("data_fingerprint", "")}
        for k in ("target", "classes", "model_name", "resize_mode", "crop_height",
                  "crop_width", "context_slices", "margin_frac", "features", "calibrated",
                  "intervention_min_probability"):
            if k in card:
                info[k] = card[k]
        if key != "segmentation":
            clf = predictor.cnn if key == "crop_classifier" else predictor.geometry
            info["in_ensemble"] = bool(clf and clf.in_ensemble)
        out[key] = info
    return out


def build_report(predictor: Predictor, case: PatientCase) -> dict[str, Any]:
    """The report dict of a case that went through every stage (not yet JSON-safe)."""
    flagged = case.flagged
    n_found = len([d for d in case.levels if case.found[d] or d in flagged])
    message = {STATUS_OK: f"{n_found} disc(s) found and graded"
               if case.ensemble and not flagged else f"{n_found} disc(s) found",
               STATUS_NO_DISC: NO_DISC_NOTE}[case.status]
    if flagged:
        message += (f", {len(case.ensemble)} graded; {len(flagged)} not graded: a "
                    f"measurement outside its plausible range ({', '.join(flagged)})")
    if case.not_graded:
        message += f"; {case.weighting['weighting']}-weighted: grades not computed"
    return {
        "schema_version": SCHEMA_VERSION,
        "status": case.status,
        "status_message": message,
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "disclaimer": DISCLAIMER,
        "input": _input_entry(case),
        "scores": {"odi": case.odi, "nrs": case.nrs},
        "discs": [_disc_entry(predictor, case, d) for d in case.levels],
        "recommendation": case.recommendation,
        "recommendation_note": case.recommendation_note,
        "decision_rules": {
            "intervention_min_probability":
                predictor.decision_config.intervention_min_probability,
            "threshold_source": predictor.threshold_source,
            "abstention_rule": rules.abstention_rule_text(predictor.decision_config),
            "rule_table": rules.rule_table_lines(predictor.decision_config)},
        "models": {**models_info(predictor),
                   "ensemble": {"members": [c.key for c in case.members],
                                "method": "equal-weight mean of the members' probabilities "
                                          "(spoils_tf.ensemble.mean_ensemble), each averaged "
                                          "over the slices the disc was found on",
                                "calibrated": predictor.calibrated,
                                "calibration_note": (CALIBRATED_NOTE if predictor.calibrated
                                                     else UNCALIBRATED_NOTE)},
                   "precision": {"requested": predictor.precision, **predictor.precision_used}},
        "notes": case.notes,
        "model_load_ms": predictor.load_ms,
        "timing_ms": case.timing,
        "timing_ms_note": (TIMING_NOTE_TRACED.format(", ".join(case.traced))
                           if case.traced else TIMING_NOTE_WARM),
    }


def _input_entry(case: PatientCase) -> dict[str, Any]:
    """``report["input"]``: shape, spacings, slices used, segmentation, then ``source``."""
    inp: dict[str, Any] = {
        "image_shape_hw": list(case.slices[0].shape),
        "pixel_spacing_mm": [float(v) for v in case.spacing_mm],
        "slice_spacing_mm": case.slice_spacing_mm,
        "slices_used": {"count": len(case.slices),
                        "offsets": [int(o) for o in case.offsets]},
        "segmentation": case.segmentation,
    }
    inp.update(dict(case.source or {}))
    if case.weighting:    # the source's, refined from the image (predictor.check_weighting)
        inp["weighting"] = dict(case.weighting)
    if case.segmentation == SUPPLIED_MASK:
        inp["segmentation"] = SUPPLIED_MASK
    return inp


def _disc_entry(predictor: Predictor, case: PatientCase, d: str) -> dict[str, Any]:
    """One level's ``report["discs"]`` entry: where it was found and measured, its
    measurements with units, reasons, each classifier's and the ensemble's top-3."""
    flagged, offsets = case.flagged, case.offsets
    seen = case.found[d] or (flagged[d][0] if d in flagged else [])
    # the mid-sagittal slice when the disc was found there, else the nearest one
    idx = seen or sorted(case.per_level[d])
    i = min(idx, key=lambda j: (abs(int(offsets[j])), j))
    table = case.table
    row = table[(table["level"] == d) & (table["slice"] == int(offsets[i]))].iloc[0]
    entry: dict[str, Any] = {
        "level": d, "found": bool(seen),
        "found_on_slice_offsets": [int(offsets[j]) for j in seen],
        "measured_on_slice_offset": int(offsets[i]),
        "measurements": {c: {"value": finite_or_none(row.get(c)), "unit": unit_of(c)}
                         for c in measurement_columns()},
        "reasons": _reasons(row.get("reason")),
        "implausible_measurements": list(flagged[d][1]) if d in flagged else [],
        "classifiers": {},
    }
    if d in flagged:
        entry["reasons"].append(plausibility.IMPLAUSIBLE_MEASUREMENT_REASON)
    for key, clf in (("crop_classifier", predictor.cnn),
                     ("geometry_classifier", predictor.geometry)):
        entry["classifiers"][key] = _classifier_entry(case, d, key, clf)
    if d in case.ensemble:
        pr = {c: float(v) for c, v in zip(labels.GRADE_CLASSES, case.ensemble[d])}
        cls = max(pr, key=pr.get)
        entry["ensemble"] = {"members": [c.key for c in case.members], "probabilities": pr,
                             "predicted": cls, "top3": _top(pr),
                             "uncertain": is_uncertain(list(pr.values()))}
        entry["predicted_class"] = cls
        entry["predicted_probability"] = pr[cls]
        entry["pfirrmann"] = labels.pfirrmann_of(cls)
        entry["severity"] = labels.SEVERITY_NAMES[labels.severity_of(cls)]
    else:
        entry["ensemble"] = None
        entry["predicted_class"] = None
        entry["predicted_probability"] = None
    return entry


def _classifier_entry(case: PatientCase, d: str, key: str,
                      clf: Optional[_Classifier]) -> dict[str, Any]:
    """One classifier's part of a disc entry: absent, not classified (why), or its
    probabilities, prediction, top-3 and uncertainty."""
    if clf is None:
        return {"present": False}
    if d not in case.probs.get(key, {}):
        if case.not_graded and case.found.get(d):
            why = f"a {case.weighting['weighting']}-weighted series: not classified"
        elif d in case.flagged:
            why = "a measurement outside its plausible range: not classified"
        else:
            why = "disc not found: not classified"
        return {"present": True, "probabilities": None, "note": why}
    pr = {c: float(v) for c, v in zip(clf.classes, case.probs[key][d])}
    return {"present": True, "model": clf.entry.label, "in_ensemble": clf.in_ensemble,
            "classes": list(clf.classes), "probabilities": pr,
            "predicted": max(pr, key=pr.get), "top3": _top(pr),
            "uncertain": is_uncertain(list(pr.values())),
            "n_slices": len(case.found[d])}
