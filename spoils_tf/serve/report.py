"""The HTML page of a ``spoils predict`` report: one self-contained file, no external resources.

``render_html(report, overlay_png) -> str`` lays the page out for a clinician reading it on a
1200 px screen or printed on A4:

* the disclaimer and status;
* the recommendation: the action, the discs driving it with their grade code explained
  (:func:`grade_explanation`: ``4M = Pfirrmann grade 4, moderate severity``), the reason,
  follow-up, ODI/NRS bands, any caveat; the rule id in small print with its source in plain
  words ("from the SPOILS paper" or "not covered by the SPOILS paper; project rule"); the
  abstention rule with its threshold and, collapsed, the whole rule table
  (:func:`_decision_rules`, from ``report["decision_rules"]``);
* the overlay (level and predicted class to the left of each disc, drawn by
  ``spoils_tf.serve.overlay.overlay_image``) and a colour legend (``spoils_tf.labels``);
* the grade table, one row per disc level: the ensemble class explained with its probability,
  preceded by whether the probabilities are calibrated (``"uncalibrated"`` unless the report
  says ``models.ensemble.calibrated``), the top-3 of the
  ensemble and of each classifier, with a visible caution where a classifier is uncertain
  (the report's ``"uncertain": true``: its largest probability is below twice the uniform
  1/number of classes); a disc left ungraded because a measurement is implausible (the
  report's ``"implausible_measurements"``) names the measurement, its value and the range;
* the key measurements (:data:`KEY_MEASUREMENTS`), levels in rows, human names with units,
  rounded by unit (:func:`format_value`), an implausible value marked with its range;
  every measurement and the measurement notes
  (internal reason codes as short phrases, :func:`reason_phrase`, the code in a tooltip) in a
  collapsed "All measurements" section;
* the models with their held-out evaluation metrics only (:func:`held_out_metrics`; training
  logs such as ``loss_first_epoch`` or ``train_seconds`` are left out), the ensemble and the
  precision as sentences; the input's technical facts as readable values; notes; timings.

Every text that comes from the report is ``html.escape``d; the page has inline CSS only (no
links, scripts, fonts or remote images), so it opens offline and can be attached to a record
as it is. Nothing here changes ``report.json``.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Iterable, Mapping, Optional, Sequence

from spoils_tf import labels
from spoils_tf.geometry import plausibility

_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; padding: 0 1.5em; color: #222;
       max-width: 1100px; line-height: 1.35; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; max-width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #eee; } th[scope=row], .nowrap { white-space: nowrap; }
.wrap { overflow-wrap: anywhere; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
th.num { text-align: right; }
.disclaimer { border: 2px solid #b00; background: #fff4f4; padding: 0.6em; font-weight: bold; }
.status-ok { color: #060; } .status-bad { color: #b00; font-weight: bold; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #555;
          vertical-align: middle; margin-right: 0.3em; }
.legend span.item { display: inline-block; margin: 0.15em 0.8em 0.15em 0; }
.recommendation { border: 1px solid #888; background: #f6f9ff; padding: 0.2em 0.8em; }
.recommendation .action { font-size: 1.15em; font-weight: bold; }
.muted { color: #666; } .small { font-size: 0.8em; }
.caution { color: #a05a00; font-weight: bold; }
img.overlay { width: min(100%, 720px); height: auto; border: 1px solid #888;
              image-rendering: auto; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: bold; }
ul.reasons { margin: 0.2em 0; padding-left: 1.2em; }
@media print {
  @page { size: A4; margin: 12mm; }
  body { max-width: none; margin: 0; padding: 0; font-size: 9.5pt; }
  img.overlay { max-height: 125mm; width: auto; }
  h2 { break-after: avoid; } tr, .recommendation, .disclaimer { break-inside: avoid; }
  table { font-size: 8.5pt; }
}
"""

# Bundle model keys of report["models"] -> display name.
MODEL_NAMES: dict[str, str] = {"segmentation": "Segmentation",
                               "crop_classifier": "Crop CNN (disc image)",
                               "geometry_classifier": "Geometry classifier (measurements)"}

# Measurement column -> human name (the unit is added from the report).
MEASUREMENT_NAMES: dict[str, str] = {
    "centroid_row": "Disc centre, image row",
    "centroid_col": "Disc centre, image column",
    "tilt_deg": "Disc tilt",
    "disc_area_mm2": "Disc area",
    "disc_height_mm": "Disc height, average",
    "disc_central_height_mm": "Disc height, centre",
    "disc_anterior_height_mm": "Disc height, anterior",
    "disc_posterior_height_mm": "Disc height, posterior",
    "disc_width_mm": "Disc AP width, average",
    "disc_midpoint_width_mm": "Disc AP width at midpoint",
    "vert_above_height_mm": "Vertebral body above, height",
    "vert_above_width_mm": "Vertebral body above, AP width",
    "vert_below_height_mm": "Vertebral body below, height",
    "vert_below_width_mm": "Vertebral body below, AP width",
    "disc_height_index": "Disc height index (DHI)",
    "canal_ap_diameter_mm": "Spinal canal AP diameter",
    "disc_bulge_mm": "Posterior disc bulge",
    "disc_si_mean": "Disc signal, mean",
    "csf_si_median": "CSF signal, median",
    "vert_si_median": "Vertebral body signal, median",
    "disc_si_csf_ratio": "Disc signal ÷ CSF signal",
    "disc_si_vert_ratio": "Disc signal ÷ vertebral body signal",
    "disc_si_inner_outer_diff": "Nucleus − annulus signal, ÷ CSF signal",
    "disc_si_gmm_gap": "Signal histogram peak separation, ÷ CSF signal",
    "disc_volume_mm3": "Disc volume (slices read)",
    "disc_volume_n_slices": "Slices in the disc volume",
}
# The clinically meaningful subset shown first: column -> (short header, tooltip).
KEY_MEASUREMENTS: dict[str, tuple[str, str]] = {
    "disc_height_mm": ("Disc height", "mean disc height between 10 % and 90 % of its AP width"),
    "disc_anterior_height_mm": ("Anterior height", "disc height at 10 % of its AP width"),
    "disc_posterior_height_mm": ("Posterior height", "disc height at 90 % of its AP width"),
    "disc_height_index": ("DHI", "disc height ÷ mean height of the adjacent vertebral bodies"),
    "disc_midpoint_width_mm": ("Midpoint width", "AP width of the disc through its centre"),
    "canal_ap_diameter_mm": ("Canal AP diameter", "spinal canal depth behind the disc"),
    "disc_bulge_mm": ("Bulge", "posterior disc end beyond the vertebral margins "
                               "(negative = in front of them)"),
    "disc_si_csf_ratio": ("Signal ÷ CSF", "mean disc signal ÷ median CSF signal at that level"),
    "disc_area_mm2": ("Area", "disc area on the mid-sagittal slice"),
}
# Unit (spoils_tf.serve.report_data.unit_of) -> (short unit for headers, decimals; 0 = integer).
_UNIT_FORMAT: dict[str, tuple[str, int]] = {
    "mm": ("mm", 1), "mm²": ("mm²", 0), "mm³": ("mm³", 0), "degrees": ("°", 1),
    "px": ("px", 0), "ratio": ("", 2), "grey level (0-255)": ("grey level 0–255", 0),
    "fraction of CSF signal": ("", 2), "slices": ("", 0),
}

# Held-out evaluation metric (last part of a card metric key) -> (label, decimals).
# The short list shown to a reader (the card keeps every metric; report.json has the card).
HELD_OUT_METRICS: dict[str, tuple[str, int]] = {
    "accuracy": ("Accuracy", 2), "iou_macro": ("Macro IoU", 2), "f1_macro": ("Macro F1", 2),
    "kappa_quadratic": ("Quadratic-weighted kappa", 2), "auroc_macro": ("Macro AUROC", 2),
    "n": ("Discs evaluated", 0), "level_accuracy": ("Disc level accuracy", 2),
    "pixel_accuracy": ("Pixel accuracy", 2),
}
# Per-class segmentation metrics (first part of the key) and their summaries.
_SEG_METRICS: dict[str, str] = {"dice": "Dice"}
_SEG_SUMMARIES: dict[str, str] = {"fg_macro": "mean over anatomical structures"}
_METRIC_GROUPS: dict[str, str] = {"cnn": "this model", "geometry": "this model",
                                  "ensemble": "ensemble of the classifiers"}

# Internal reason codes (spoils_tf.geometry.measure / features, spoils_tf.serve.predictor)
# -> phrase.
_PART_NAMES: dict[str, str] = {"disc": "disc", "vert_above": "vertebral body above",
                               "vert_below": "vertebral body below"}
_PROBLEM_PHRASES: dict[str, str] = {
    "missing": "{part} not in the segmentation",
    "too_small": "{part} label too small to measure",
    "fragmented": "{part} label split into pieces: not measured",
    "touches_border": "{part} cut by the image border: not measured",
    "specks_dropped": "small stray pieces of the {part} label ignored",
    "extra_blobs_ignored": "small stray pieces of the {part} label ignored",
    "not_in_scheme": "{part} is outside the segmented levels",
}
REASON_PHRASES: dict[str, str] = {
    "dhi_no_vertebra": "no adjacent vertebral body: disc height index not computed",
    "bulge_no_vertebra": "no adjacent vertebral body: bulge not computed",
    "canal_missing": "spinal canal not in the segmentation",
    "canal_not_on_disc_midline": "spinal canal not found behind the disc",
    "canal_cut_by_border": "spinal canal cut by the image border",
    "no_image": "no image: signal not measured",
    "csf_reference_missing": "no CSF next to the disc: signal ratios to CSF not computed",
    "vertebra_reference_missing": "no vertebral body signal to compare with",
    "si_regions_too_small": "disc too small to compare nucleus and annulus signal",
    "si_gmm_too_few_pixels": "disc too small for the signal histogram analysis",
    "volume_slice_spacing_missing": "slice spacing unknown: disc volume not computed",
    "volume_area_missing": "disc area missing on a slice: volume not computed",
    "volume_touches_edge_slice": "disc reaches the first or last slice read: volume may be "
                                 "incomplete",
    "volume_slice_gap": "a slice is missing between the slices showing the disc",
    "disc_area_below_quarter_of_median_not_graded": "disc label under a quarter of the median "
                                                    "disc area: taken as a segmentation error, "
                                                    "not graded",
    plausibility.IMPLAUSIBLE_MEASUREMENT_REASON: "a measurement outside the plausible adult "
                                                 "lumbar range: taken as a segmentation or "
                                                 "pixel-spacing error, not graded",
    "patient_not_in_folds": "patient not in the cross-validation folds",
}


# === Formatting ===
def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def format_value(value: Any, unit: str = "") -> str:
    """A measurement as text, rounded by its unit: 1 decimal for mm and degrees, 2 for ratios
    and fractions, integers for areas, volumes, pixels, grey levels and counts; ``"n/a"`` for
    None/NaN. ``value``: float | int | None; ``unit``: ``spoils_tf.serve.report_data.unit_of``
    text."""
    if not _is_number(value):
        return "n/a"
    digits = _UNIT_FORMAT.get(unit, ("", 2))[1]
    v = float(value)
    if digits == 0:
        return f"{int(round(v)):d}"
    return f"{v:.{digits}f}"


def _header(name: str, unit: str) -> str:
    short = _UNIT_FORMAT.get(unit, (unit, 2))[0]
    return f"{name} ({short})" if short else name


def grade_explanation(grade_cls: str) -> str:
    """``"4M"`` -> ``"4M = Pfirrmann grade 4, moderate severity"`` (``spoils_tf.labels``).

    Raises:
        ValueError: ``grade_cls`` is not one of ``labels.GRADE_CLASSES``.
    """
    sev = labels.SEVERITY_NAMES[labels.severity_of(grade_cls)]
    return f"{grade_cls} = Pfirrmann grade {labels.pfirrmann_of(grade_cls)}, {sev} severity"


def reason_phrase(code: str) -> str:
    """A short plain phrase for an internal reason code (``disc_fragmented`` -> ``disc label
    split into pieces: not measured``); an unknown code comes back with ``_`` as spaces."""
    code = str(code)
    if code in REASON_PHRASES:
        return REASON_PHRASES[code]
    for prefix, part in _PART_NAMES.items():
        problem = code[len(prefix) + 1:] if code.startswith(prefix + "_") else None
        if problem in _PROBLEM_PHRASES:
            return _PROBLEM_PHRASES[problem].format(part=part)
    if code.startswith("unknown_class_ids:"):
        return "the mask holds unknown class ids " + code.split(":", 1)[1].replace("/", ", ")
    return code.replace("_", " ")


def _reason_html(code: str) -> str:
    return f'<span title="{_e(code)}">{_e(reason_phrase(code))}</span>'


def held_out_metrics(metrics: Optional[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The held-out evaluation metrics of a model card as ``(label, value text)`` pairs.

    Kept: keys whose last part is in :data:`HELD_OUT_METRICS` (``grade/cnn/accuracy``,
    ``accuracy``; the ensemble's own keys are left to the ensemble line) and the Dice per
    structure and its mean (``dice/L4-L5``, ``dice/fg_macro``). Everything else (training logs: ``loss_first_epoch``,
    ``train_seconds``, ``eval_seconds``, ...) and non-numbers are left out; None/NaN values of
    kept keys read ``n/a``.
    """
    out: list[tuple[str, str]] = []
    per_class: dict[str, list[str]] = {}
    for key, value in (metrics or {}).items():
        parts = str(key).split("/")
        if isinstance(value, (dict, list, str, bool)):
            continue
        if len(parts) >= 2 and parts[-2] == "ensemble":
            continue              # the ensemble's metrics are the same on every member's card
        if parts[-1] in HELD_OUT_METRICS:
            label, digits = HELD_OUT_METRICS[parts[-1]]
            group = _METRIC_GROUPS.get(parts[-2]) if len(parts) >= 2 else None
            if group == "this model":
                group = None
            text = "n/a" if not _is_number(value) else (
                f"{int(round(float(value)))}" if digits == 0 else f"{float(value):.{digits}f}")
            out.append((f"{label} ({group})" if group else label, text))
        elif len(parts) == 2 and parts[0] in _SEG_METRICS:
            name, what = _SEG_METRICS[parts[0]], parts[1]
            text = f"{float(value):.2f}" if _is_number(value) else "n/a"
            if what in _SEG_SUMMARIES:
                out.append((f"{name}, {_SEG_SUMMARIES[what]}", text))
            elif what in labels.SEG_NAMES and what != labels.SEG_NAMES[labels.BACKGROUND_ID]:
                per_class.setdefault(name, []).append(f"{what} {text}")
    for name, items in per_class.items():
        out.append((f"{name} per structure", ", ".join(items)))
    return out


def _sentence(value: Any) -> str:
    """A JSON value as readable text: lists joined by commas, dicts as "key: value; ...",
    None as "unknown", floats rounded to 3 decimals."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if math.isfinite(value) else "unknown"
    if isinstance(value, Mapping):
        return "; ".join(f"{str(k).replace('_', ' ')}: {_sentence(v)}" for k, v in value.items()) \
            or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_sentence(v) for v in value) or "none"
    return str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], *,
           num_cols: Sequence[int] = (), row_headers: bool = False) -> str:
    """Cells are already-escaped HTML; ``num_cols`` are right-aligned; with ``row_headers``
    the first cell of each row is a ``<th scope="row">``."""
    num = ' class="num"'
    head = "".join(f"<th{num if i in num_cols else ''}>{h}</th>" for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            if i == 0 and row_headers:
                cells.append(f'<th scope="row">{c}</th>')
            else:
                cells.append(f"<td{num if i in num_cols else ''}>{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# === Sections ===
def _legend() -> str:
    items = []
    for c in labels.SEG_CLASSES:
        if c.id == labels.BACKGROUND_ID:
            continue
        r, g, b = c.color
        items.append(f'<span class="item"><span class="swatch" style="background:rgb({r},{g},{b})">'
                     f'</span>{_e(c.name)}</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def _explained(cls: Any) -> str:
    try:
        return grade_explanation(str(cls))
    except ValueError:
        return str(cls)


def _recommendation(report: Mapping[str, Any]) -> str:
    rec = report.get("recommendation")
    if not rec:
        return (f'<div class="recommendation"><p><strong>No recommendation.</strong> '
                f'{_e(report.get("recommendation_note"))}</p></div>')
    source = ("from the SPOILS paper" if rec.get("rule_source") == "paper"
              else "not covered by the SPOILS paper; project rule")
    driving = rec.get("driving_discs", [])
    driving_text = "; ".join(f"{lvl}: {_explained(cls)}" for lvl, cls in driving) or "none"
    worst = rec.get("worst_class")
    tier = f'{rec.get("tier")} tier' if rec.get("tier") else ""
    action = str(rec.get("recommendation", "")).replace("_", " ")
    action = action[:1].upper() + action[1:]
    nrs = rec.get("nrs")
    return (
        '<div class="recommendation">'
        f'<p class="action">{_e(action)}</p>'
        f'<p>Driven by {_e(driving_text)}'
        + (f' (worst grade {_e(_explained(worst))}; {_e(tier)})'
           if worst and worst not in [c for _, c in driving] else
           (f' (the worst grade; {_e(tier)})' if worst else ""))
        + '</p>'
        f'<p>Reason: {_e(rec.get("reason"))}</p>'
        f'<p>Follow-up: {_e(rec.get("follow_up"))}</p>'
        f'<p>Oswestry Disability Index {_e(format_value(rec.get("odi"), "slices"))} % '
        f'({_e(rec.get("odi_band"))}: {_e(rec.get("odi_band_meaning"))}); pain NRS '
        f'{_e(format_value(nrs, "slices"))}/10 ({_e(rec.get("nrs_band"))}); symptom level '
        f'{_e(rec.get("symptom_level"))}.</p>'
        + (f'<p class="status-bad">Caveat: {_e(rec["caveat"])}</p>' if rec.get("caveat") else "")
        + f'<p class="muted small">Rule {_e(rec.get("rule_id"))} ({_e(source)}).</p>'
        + "</div>")


def _decision_rules(report: Mapping[str, Any]) -> str:
    """The abstention rule with its threshold and source, and the rule table collapsed."""
    dr = report.get("decision_rules")
    if not dr:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in dr.get("rule_table", []))
    return (f'<p class="muted small">{_e(dr.get("abstention_rule"))} Threshold from '
            f'{_e(dr.get("threshold_source"))}.</p>'
            f'<details><summary>Decision rules</summary><ul class="reasons">{items}</ul>'
            "</details>")


def _calibration(report: Mapping[str, Any]) -> str:
    ens = report.get("models", {}).get("ensemble", {})
    word = "calibrated" if ens.get("calibrated") else "uncalibrated"
    note = ens.get("calibration_note") or word
    return (f'<p>Grade probabilities are <strong>{_e(word)}</strong>'
            f'{": " + _e(note.split(": ", 1)[-1]) if ": " in note else ""}.</p>')


def _prob_list(top: Optional[Iterable]) -> str:
    if not top:
        return "n/a"
    return "<br>".join(f"{_e(c)}: {100.0 * float(p):.0f} %" for c, p in top)


_CAUTION = "this model is uncertain for this disc"


def _classifier_cell(c: Mapping[str, Any]) -> str:
    if not c.get("present"):
        return '<span class="muted">not in the bundle</span>'
    if not c.get("probabilities"):
        return _e(c.get("note", "n/a"))
    out = _prob_list(c.get("top3"))
    if c.get("uncertain"):
        n = len(c.get("classes") or c.get("probabilities") or ())
        out += (f'<br><span class="caution" title="largest probability below twice the '
                f'uniform 1/{n}">⚠ {_CAUTION}</span>')
    if c.get("in_ensemble") is False:
        out += ' <span class="muted">(not in the ensemble)</span>'
    return out


def _disc_problem(d: Mapping[str, Any]) -> str:
    """Why a disc was not graded: its own (``disc_*``, implausible area) reasons as phrases."""
    own = [r for r in d.get("reasons", []) if r.startswith("disc_") and r != "disc_specks_dropped"]
    return "; ".join(_reason_html(r) for r in own) or "not found or not usable"


def _offsets_text(offsets: Sequence[int]) -> str:
    if not offsets:
        return "none"
    return ", ".join("mid-sagittal" if o == 0 else f"{o:+d}" for o in offsets)


def _grades(report: Mapping[str, Any]) -> str:
    rows = []
    for d in report.get("discs", []):
        ens = d.get("ensemble") or {}
        clfs = d.get("classifiers", {})
        cls = d.get("predicted_class")
        if cls:
            grade = f"<strong>{_e(cls)}</strong><br>{_e(_explained(cls).split(' = ', 1)[-1])}"
            if _is_number(d.get("predicted_probability")):
                grade += f"<br>probability {float(d['predicted_probability']):.2f}"
            if ens.get("uncertain"):
                grade += '<br><span class="caution">⚠ the ensemble is uncertain</span>'
        elif d.get("implausible_measurements"):
            grade = ('<span class="status-bad">not graded</span>: '
                     + "; ".join(_e(plausibility.describe(x))
                                 for x in d["implausible_measurements"]))
        elif d.get("found"):
            grade = '<span class="muted">not graded</span>'
        else:
            grade = f'<span class="status-bad">not graded</span>: {_disc_problem(d)}'
        rows.append([_e(d["level"]), grade, _prob_list(ens.get("top3")),
                     _classifier_cell(clfs.get("crop_classifier", {})),
                     _classifier_cell(clfs.get("geometry_classifier", {})),
                     _e(_offsets_text(d.get("found_on_slice_offsets", [])))])
    return _table(["Level", "Predicted grade", "Ensemble (top 3)",
                   _e(MODEL_NAMES["crop_classifier"]) + " (top 3)",
                   _e(MODEL_NAMES["geometry_classifier"]) + " (top 3)", "Found on slice"],
                  rows, row_headers=True)


def _measurement(d: Mapping[str, Any], col: str) -> tuple[Any, str]:
    m = d.get("measurements", {}).get(col) or {}
    return m.get("value"), m.get("unit", "")


def _key_cell(d: Mapping[str, Any], col: str) -> str:
    """A key-table value; one that is implausible on the slice shown is marked, with its range
    in a tooltip."""
    text = _e(format_value(*_measurement(d, col)))
    for x in d.get("implausible_measurements") or []:
        if x.get("measurement") == col and x.get("slice_offset") == d.get(
                "measured_on_slice_offset"):
            return (f'<span class="status-bad" title="{_e(plausibility.describe(x))}">'
                    f'{text} ⚠</span>')
    return text


def _measurements(report: Mapping[str, Any]) -> str:
    """Key measurements with levels in rows; every measurement (levels in columns) and the
    measurement notes in a collapsed section."""
    discs = report.get("discs", [])
    if not discs:
        return '<p class="muted">No disc level in the segmentation.</p>'
    cols = [c for c in KEY_MEASUREMENTS if c in discs[0].get("measurements", {})]
    header = ["Level"] + [
        f'<span title="{_e(KEY_MEASUREMENTS[c][1])}">'
        f'{_e(_header(KEY_MEASUREMENTS[c][0], _measurement(discs[0], c)[1]))}</span>'
        for c in cols]
    rows = [[_e(d["level"])] + [_key_cell(d, c) for c in cols] for d in discs]
    key = _table(header, rows, num_cols=range(1, len(header)), row_headers=True)

    every = list(discs[0].get("measurements", {}))
    full_rows = []
    for c in every:
        unit = _measurement(discs[0], c)[1]
        full_rows.append([f'<span title="{_e(c)}">{_e(_header(MEASUREMENT_NAMES.get(c, c), unit))}'
                          "</span>"]
                         + [_e(format_value(*_measurement(d, c))) for d in discs])
    full = _table(["Measurement"] + [_e(d["level"]) for d in discs], full_rows,
                  num_cols=range(1, len(discs) + 1), row_headers=True)
    # reasons common to every disc once, then each level's own
    lists = [list(d.get("reasons", [])) for d in discs]
    common = [r for r in lists[0] if all(r in rs for rs in lists[1:])] if lists else []
    items = []
    if common and len(discs) > 1:
        items.append("<li>All levels: " + "; ".join(_reason_html(r) for r in common) + "</li>")
    for d, rs in zip(discs, lists):
        own = [r for r in rs if r not in common] if len(discs) > 1 else rs
        if own:
            items.append(f"<li>{_e(d['level'])}: " + "; ".join(_reason_html(r) for r in own)
                         + "</li>")
    notes = (f'<p>Measurement notes (hover for the internal code):</p>'
             f'<ul class="reasons">{"".join(items)}</ul>') if items else \
        '<p class="muted">No measurement notes.</p>'
    return (key + '<p class="muted small">n/a = could not be measured (see All measurements). '
                  'Hover a column name for its definition.</p>'
            + "<details><summary>All measurements</summary>" + full + notes + "</details>")


def _metrics_html(metrics: Optional[Mapping[str, Any]]) -> str:
    items = held_out_metrics(metrics)
    if not items:
        return '<span class="muted">no held-out evaluation recorded</span>'
    return "<br>".join(f"{_e(label)}: {_e(text)}" for label, text in items)


def _models(report: Mapping[str, Any]) -> str:
    rows = []
    models = report.get("models", {})
    for key in ("segmentation", "crop_classifier", "geometry_classifier"):
        m = models.get(key, {})
        name = _e(MODEL_NAMES.get(key, key))
        if not m.get("present"):
            rows.append([name, '<span class="muted">not in the bundle</span>', "", "",
                         _e(m.get("note"))])
            continue
        detail = [str(m["model_name"]).replace("_", " ")] if m.get("model_name") else []
        if m.get("resize_mode"):
            detail.append(f"input resize: {m['resize_mode']}")
        if m.get("classes"):
            detail.append(f"{len(m['classes'])} classes")
        if m.get("in_ensemble") is False:
            detail.append("not in the ensemble")
        created = str(m.get("created") or "")
        if len(created) >= 16 and created[10] == "T":     # ISO 8601: date and hh:mm
            created = f"{created[:10]} {created[11:16]}"
        rows.append([name, f'<span class="nowrap">{_e(m.get("label"))}</span>', _e(created),
                     _metrics_html(m.get("metrics")), _e(", ".join(detail))])
    ens = models.get("ensemble", {})
    members = [MODEL_NAMES.get(k, k) for k in ens.get("members", [])]
    ens_text = (f"Ensemble: equal-weight mean of the probabilities of {' and '.join(members)}, "
                "each averaged over the slices the disc was found on." if members
                else "Ensemble: none (no 11-class grade classifier).")
    ens_metrics = next((m.get("metrics") for k in ("crop_classifier", "geometry_classifier")
                        if isinstance((m := models.get(k, {})).get("metrics"), Mapping)
                        and any(str(key).startswith("grade/ensemble/") for key in m["metrics"])),
                       None)
    if members and ens_metrics:
        shown = held_out_metrics({key.replace("grade/ensemble/", "grade/model/"): v
                                  for key, v in ens_metrics.items()
                                  if str(key).startswith("grade/ensemble/")})
        if shown:
            ens_text += " Held-out evaluation: " + "; ".join(f"{a} {b}" for a, b in shown) + "."
    prec = dict(models.get("precision", {}))
    requested = prec.pop("requested", None)
    prec_text = (f"Computation precision requested: {requested}"
                 + ("; " + "; ".join(f"{MODEL_NAMES.get(k, k).split(' (')[0]}: {v}"
                                     for k, v in prec.items()) if prec else "") + ".") \
        if requested else ""
    return (_table(["Model", "Version", "Created (UTC)", "Held-out evaluation", "Detail"], rows,
                   row_headers=True)
            + f"<p>{_e(ens_text)}</p>"
            + (f'<p class="muted small">{_e(prec_text)}</p>' if prec_text else ""))


# report["input"] key -> human name; keys not listed read with "_" as spaces.
INPUT_NAMES: dict[str, str] = {
    "kind": "Input type", "image_shape_hw": "Image size", "pixel_spacing_mm": "Pixel spacing",
    "pixel_spacing_source": "Pixel spacing from", "pixel_spacing_note": "Pixel spacing note",
    "slice_spacing_mm": "Slice spacing", "slice_thickness_mm": "Slice thickness",
    "slices_used": "Slices used", "segmentation": "Segmentation", "plane_check": "Plane check",
    "orientation": "Orientation", "n_slices_total": "Slices in the series",
    "series_slice_indices": "Slice numbers used (series order, from 0)",
    "sha256": "Input fingerprint (SHA-256)", "mask_sha256": "Mask fingerprint (SHA-256)",
    "reader_notes": "Reader notes", "weighting": "MR weighting",
}


def _input_value(key: str, v: Any) -> str:
    if key == "image_shape_hw" and isinstance(v, (list, tuple)) and len(v) == 2:
        return f"{v[0]} × {v[1]} px (rows × columns)"
    if key == "pixel_spacing_mm" and isinstance(v, (list, tuple)) and len(v) == 2:
        return f"{_sentence(float(v[0]))} × {_sentence(float(v[1]))} mm (row × column)"
    if key in ("slice_spacing_mm", "slice_thickness_mm"):
        return "unknown" if not _is_number(v) else f"{_sentence(float(v))} mm"
    if key == "slices_used" and isinstance(v, Mapping):
        n, offs = int(v.get("count", 0)), list(v.get("offsets", []))
        if n == 1:
            return "1 slice (the mid-sagittal one)"
        return (f"{n} slices: the mid-sagittal one and its neighbours at "
                f"{', '.join(f'{o:+d}' for o in offs if o != 0)}")
    if key == "kind":
        return str(v).replace("_", " ")
    return _sentence(v)


def _input(report: Mapping[str, Any]) -> str:
    rows = []
    for k, v in report.get("input", {}).items():
        text = _e(_input_value(k, v))
        if k.endswith("sha256"):
            text = f'<span class="small wrap">{text}</span>'
        rows.append([_e(INPUT_NAMES.get(k, k.replace("_", " ").capitalize())), text])
    return _table(["Field", "Value"], rows, row_headers=True)


def render_html(report: dict, overlay_png: bytes) -> str:
    """A self-contained HTML page for one report.

    Args:
        report: the dict of ``spoils_tf.serve.predictor.Predictor.predict``.
        overlay_png: PNG bytes of the overlay (embedded as a base64 data URI).

    Returns:
        the page as a string (UTF-8 when written).
    """
    status = report.get("status")
    status_cls = "status-ok" if status == "ok" else "status-bad"
    img = base64.b64encode(overlay_png).decode("ascii")
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.get("notes", []))
    timing = ", ".join(f"{_e(k)} {float(v):.0f} ms" for k, v in report.get("timing_ms", {}).items())
    timing_note = report.get("timing_ms_note")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>SPOILS lumbar spine report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>SPOILS lumbar spine MRI report</h1>",
        f'<p class="disclaimer">{_e(report.get("disclaimer"))}</p>',
        f'<p>Status: <span class="{status_cls}">{_e(status)}</span> — '
        f'{_e(report.get("status_message"))}</p>',
        f'<p class="muted small">Generated {_e(report.get("generated_utc"))} '
        f'(schema {_e(report.get("schema_version"))}); segmentation: '
        f'{_e(report.get("input", {}).get("segmentation"))}</p>',
        "<h2>Recommendation</h2>", _recommendation(report), _decision_rules(report),
        "<h2>Segmentation overlay (mid-sagittal slice)</h2>",
        '<p class="muted small">Anterior is left. Each disc is labelled with its level and '
        'predicted grade, on the left of the spine.</p>',
        f'<img class="overlay" alt="segmentation overlay" src="data:image/png;base64,{img}">',
        _legend(),
        "<h2>Disc grades (Pfirrmann grade × severity, 11 classes)</h2>", _calibration(report),
        _grades(report),
        "<h2>Measurements (mid-sagittal slice)</h2>", _measurements(report),
        "<h2>Models</h2>", _models(report),
        "<h2>Input (technical facts only)</h2>", _input(report),
    ]
    if notes:
        parts += ["<h2>Notes</h2>", f"<ul>{notes}</ul>"]
    parts += [f'<p class="muted small">Stage timings: {timing}'
              + (f" ({_e(timing_note)})" if timing_note else "") + "</p>",
              f'<p class="disclaimer">{_e(report.get("disclaimer"))}</p>', "</body></html>"]
    return "\n".join(parts) + "\n"
