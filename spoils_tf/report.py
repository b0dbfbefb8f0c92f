"""The HTML page of a ``spoils predict`` report: one self-contained file, no external resources.

``render_html(report, overlay_png) -> str``: the overlay image (base64 data URI), a legend of
the segmentation classes with their colours (``spoils_tf.labels``), the status, the
recommendation with its rule and reasons (or why there is none), a grade table (ensemble
class, top-3 probabilities, each classifier's top class), a measurement table with units,
the model versions with their held-out metrics, the input's technical facts, stage timings
and the disclaimer. Every text that comes from the report is ``html.escape``d; the page has
inline CSS only (no links, scripts, fonts or remote images), so it opens offline and can be
attached to a record as it is.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Iterable, Mapping, Optional

from spoils_tf import labels

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
.disclaimer { border: 2px solid #b00; background: #fff4f4; padding: 0.6em; font-weight: bold; }
.status-ok { color: #060; } .status-bad { color: #b00; font-weight: bold; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #555;
          vertical-align: middle; margin-right: 0.3em; }
.legend span.item { display: inline-block; margin: 0.15em 0.8em 0.15em 0; }
.recommendation { border: 1px solid #888; background: #f6f9ff; padding: 0.6em; }
.muted { color: #666; }
img.overlay { max-width: 100%; height: auto; border: 1px solid #888; }
pre { white-space: pre-wrap; }
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """Cells are already-escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _legend() -> str:
    items = []
    for c in labels.SEG_CLASSES:
        if c.id == labels.BACKGROUND_ID:
            continue
        r, g, b = c.color
        items.append(f'<span class="item"><span class="swatch" style="background:rgb({r},{g},{b})">'
                     f'</span>{_e(c.name)}</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def _recommendation(report: Mapping[str, Any]) -> str:
    rec = report.get("recommendation")
    if not rec:
        return (f'<div class="recommendation"><b>No recommendation.</b> '
                f'{_e(report.get("recommendation_note"))}</div>')
    source = ("from the paper" if rec.get("rule_source") == "paper"
              else "project choice where the paper is silent")
    driving = ", ".join(f"{lvl} = {cls}" for lvl, cls in rec.get("driving_discs", []))
    return (
        '<div class="recommendation">'
        f'<p><b>Recommendation: {_e(str(rec.get("recommendation", "")).replace("_", " "))}</b></p>'
        f'<p>Driven by: {_e(driving)} (worst class {_e(rec.get("worst_class"))}, '
        f'tier {_e(rec.get("tier"))})</p>'
        f'<p>Reason: {_e(rec.get("reason"))}</p>'
        f'<p>Follow-up: {_e(rec.get("follow_up"))}</p>'
        f'<p>ODI {_e(_num(rec.get("odi"), 0))} % ({_e(rec.get("odi_band"))}: '
        f'{_e(rec.get("odi_band_meaning"))}); NRS {_e(rec.get("nrs"))} '
        f'({_e(rec.get("nrs_band"))}); symptom level {_e(rec.get("symptom_level"))}</p>'
        f'<p class="muted">Rule {_e(rec.get("rule_id"))} ({_e(source)}).</p>'
        + (f'<p class="status-bad">Caveat: {_e(rec["caveat"])}</p>' if rec.get("caveat") else "")
        + "</div>")


def _prob_list(top: Optional[Iterable]) -> str:
    if not top:
        return "n/a"
    return "<br>".join(f"{_e(c)}: {100.0 * float(p):.1f} %" for c, p in top)


def _grades(report: Mapping[str, Any]) -> str:
    rows = []
    for d in report.get("discs", []):
        ens = d.get("ensemble") or {}
        cnn = d["classifiers"].get("crop_classifier", {})
        geo = d["classifiers"].get("geometry_classifier", {})

        def one(c: Mapping[str, Any]) -> str:
            if not c.get("present"):
                return '<span class="muted">absent</span>'
            if not c.get("probabilities"):
                return _e(c.get("note", "n/a"))
            flag = "" if c.get("in_ensemble") else ' <span class="muted">(not in ensemble)</span>'
            return _prob_list(c.get("top3")) + flag

        cls = d.get("predicted_class")
        grade = (f"<b>{_e(cls)}</b><br>Pfirrmann {_e(d.get('pfirrmann'))}, "
                 f"{_e(d.get('severity'))} severity") if cls else \
            ('<span class="muted">not graded</span>' if d.get("found")
             else '<span class="status-bad">not found or not usable</span> (see reasons)')
        rows.append([_e(d["level"]), grade, _prob_list(ens.get("top3")), one(cnn), one(geo),
                     _e(", ".join(f"{o:+d}" for o in d.get("found_on_slice_offsets", [])) or "none")])
    return _table(["Level", "Predicted class", "Ensemble (top 3)", "Crop CNN (top 3)",
                   "Geometry classifier (top 3)", "Slices (offset)"], rows)


def _measurements(report: Mapping[str, Any]) -> str:
    """One row per measurement (with its unit), one column per disc level."""
    discs = report.get("discs", [])
    if not discs:
        return '<p class="muted">No disc level in the segmentation.</p>'
    cols = list(discs[0]["measurements"])
    header = ["Measurement"] + [_e(d["level"]) for d in discs]
    rows = []
    for c in cols:
        unit = discs[0]["measurements"][c]["unit"]
        name = f"{_e(c)}" + (f" <span class='muted'>[{_e(unit)}]</span>" if unit else "")
        rows.append([name] + [_e(_num(d["measurements"][c]["value"])) for d in discs])
    rows.append(["reasons (NaN / caveats)"]
                + [_e("; ".join(d.get("reasons", [])) or "-") for d in discs])
    return '<div style="overflow-x:auto">' + _table(header, rows) + "</div>"


def _models(report: Mapping[str, Any]) -> str:
    rows = []
    models = report.get("models", {})
    for key in ("segmentation", "crop_classifier", "geometry_classifier"):
        m = models.get(key, {})
        if not m.get("present"):
            rows.append([_e(key), '<span class="muted">absent</span>', "", "", _e(m.get("note"))])
            continue
        metrics = ", ".join(f"{k} = {_num(v, 3)}" for k, v in (m.get("metrics") or {}).items()
                            if not isinstance(v, (dict, list)))
        extra = m.get("model_name") or m.get("target") or m.get("resize_mode") or ""
        rows.append([_e(key), _e(m.get("label")), _e(m.get("created")), _e(metrics or "none"),
                     _e(extra)])
    ens = models.get("ensemble", {})
    prec = models.get("precision", {})
    return (_table(["Model", "Version", "Created (UTC)", "Held-out metrics", "Detail"], rows)
            + f"<p>Ensemble: {_e(', '.join(ens.get('members', [])) or 'none')} — "
              f"{_e(ens.get('method'))}</p>"
            + f"<p>Precision: {_e(json.dumps(prec, ensure_ascii=False))}</p>")


def _input(report: Mapping[str, Any]) -> str:
    rows = []
    for k, v in report.get("input", {}).items():
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        rows.append([_e(k), _e(text)])
    return _table(["Field", "Value"], rows)


def render_html(report: dict, overlay_png: bytes) -> str:
    """A self-contained HTML page for one report.

    Args:
        report: the dict of ``spoils_tf.predict.Predictor.predict``.
        overlay_png: PNG bytes of the overlay (embedded as a base64 data URI).

    Returns:
        the page as a string (UTF-8 when written).
    """
    status = report.get("status")
    status_cls = "status-ok" if status == "ok" else "status-bad"
    img = base64.b64encode(overlay_png).decode("ascii")
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.get("notes", []))
    timing = ", ".join(f"{_e(k)} {float(v):.1f} ms" for k, v in report.get("timing_ms", {}).items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>SPOILS lumbar spine report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>SPOILS lumbar spine MRI report</h1>",
        f'<p class="disclaimer">{_e(report.get("disclaimer"))}</p>',
        f'<p>Status: <span class="{status_cls}">{_e(status)}</span> — '
        f'{_e(report.get("status_message"))}</p>',
        f'<p class="muted">Generated {_e(report.get("generated_utc"))} '
        f'(schema {_e(report.get("schema_version"))}); segmentation: '
        f'{_e(report.get("input", {}).get("segmentation"))}</p>',
        "<h2>Recommendation</h2>", _recommendation(report),
        "<h2>Segmentation overlay (mid-sagittal slice)</h2>",
        f'<img class="overlay" alt="segmentation overlay" src="data:image/png;base64,{img}">',
        _legend(),
        "<h2>Disc grades (Pfirrmann grade x severity, 11 classes)</h2>", _grades(report),
        "<h2>Measurements</h2>", _measurements(report),
        "<h2>Models</h2>", _models(report),
        "<h2>Input (technical facts only)</h2>", _input(report),
    ]
    if notes:
        parts += ["<h2>Notes</h2>", f"<ul>{notes}</ul>"]
    parts += [f'<p class="muted">Stage timings: {timing}</p>',
              f'<p class="disclaimer">{_e(report.get("disclaimer"))}</p>', "</body></html>"]
    return "\n".join(parts) + "\n"
