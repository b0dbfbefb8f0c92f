"""Measurements outside adult lumbar ranges: flagged and not graded, and no recommendation.

The ranges (``spoils_tf.geometry.plausibility.PLAUSIBLE_RANGES``) are checked on hand-made
values. End to end, with the shipped bundle's geometry classifier on a supplied mask of one
synthetic patient (1.2 mm pixels): the spinal canal behind L4-L5 painted 25 pixels (30 mm)
deeper than it is makes that canal about 41 mm deep, over the 30 mm limit, so L4-L5 alone is
not graded and the recommendation abstains; the same mask read with 0.25 mm pixels (a wrong
``--pixel-spacing``) makes every disc under 1 mm high, so none is graded, the status stays
``ok`` (discs were found) and the report names each value and its range.
"""

from __future__ import annotations

import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.serve import predictor as pr
from spoils_tf.serve import report_data as rd
from spoils_tf.serve import run
from spoils_tf.serve import report as report_mod
from spoils_tf.geometry import measure
from spoils_tf.geometry import plausibility as pl

SPACING = (1.2, 1.2)     # mm, of the 256x256 synthetic slice
PAINTED_PX = 25          # canal pixels added behind L4-L5 (30 mm at 1.2 mm)


# === The ranges ===
def test_values_outside_their_closed_range_are_listed_in_table_order():
    values = {"disc_height_mm": 0.5, "disc_width_mm": 15.0,        # 15 is the low bound: kept
              "canal_ap_diameter_mm": 31.0, "disc_height_index": float("nan"),
              "vert_above_height_mm": None, "tilt_deg": -80.0}      # tilt is not checked
    out = pl.implausible_measurements(values)
    assert [(x.measurement, x.value) for x in out] == [("disc_height_mm", 0.5),
                                                       ("canal_ap_diameter_mm", 31.0)]
    assert out[0].to_dict() == {"measurement": "disc_height_mm", "value": 0.5, "unit": "mm",
                                "plausible_range": [1.0, 25.0]}
    assert pl.implausible_measurements({"disc_height_mm": 25.0, "disc_height_index": 1.0}) == []
    assert [x.measurement for x in pl.implausible_measurements(
        {"disc_height_mm": 25.01, "disc_height_index": 1.01})] == ["disc_height_mm",
                                                                   "disc_height_index"]


def test_description_names_value_unit_range_and_a_neighbour_slice():
    item = {"measurement": "disc_height_mm", "value": 0.4, "unit": "mm",
            "plausible_range": [1.0, 25.0], "slice_offset": 0}
    assert pl.describe(item) == "disc_height_mm 0.4 mm (plausible 1-25 mm)"
    ratio = {"measurement": "disc_height_index", "value": 1.8182, "unit": "ratio",
             "plausible_range": [0.03, 1.0], "slice_offset": -1}
    assert pl.describe(ratio) == ("disc_height_index 1.82 (plausible 0.03-1) on the slice at "
                                  "offset -1")


def test_every_range_is_a_measured_column_with_its_report_unit():
    for name, rng in pl.PLAUSIBLE_RANGES.items():
        assert name in measure.MEASUREMENT_COLUMNS, name
        assert 0 < rng.low < rng.high, name
        assert rng.unit == rd.unit_of(name), name


# === spoils predict ===
@pytest.fixture(scope="module")
def predictor():
    """The shipped bundle; its geometry classifier grades (the tests supply the mask)."""
    from spoils_tf import weights
    return pr.Predictor(weights.DEFAULT_BUNDLE)


def _deep_canal_behind(mask: np.ndarray, level: str) -> np.ndarray:
    """``mask`` with the canal label extended ``PAINTED_PX`` background pixels posterior to
    its end, on the 21 rows around the centroid row of disc ``level``."""
    out = mask.copy()
    rows, _ = np.nonzero(mask == labels.SEG_ID[level])
    centre = int(round(rows.mean()))
    for r in range(centre - 10, centre + 11):
        end = int(np.nonzero(mask[r] == labels.SEG_ID["canal"])[0].max())
        band = out[r, end + 1:end + 1 + PAINTED_PX]
        assert (band == 0).all()          # only background is painted over
        band[:] = labels.SEG_ID["canal"]
    return out


def test_an_implausible_canal_leaves_that_disc_ungraded_and_the_recommendation_out(
        predictor, case):
    image, mask = case
    clean = predictor.predict([image], SPACING, odi=45, nrs=7, masks=[mask])
    # not refused for implausibility (the shipped grader may withhold an intervention for its
    # own stated reason)
    assert clean["recommendation"] is not None or "withheld" in clean["recommendation_note"]
    assert not (clean["recommendation_note"] or "").startswith(
            pr.IMPLAUSIBLE_NOTE.split("({})")[0])
    assert all(d["implausible_measurements"] == [] for d in clean["discs"])
    before = {d["level"]: d["measurements"]["canal_ap_diameter_mm"]["value"]
              for d in clean["discs"]}
    assert 7.0 < before["L4-L5"] < 12.0                # a normal synthetic canal

    rep = predictor.predict([image], SPACING, odi=45, nrs=7,
                            masks=[_deep_canal_behind(mask, "L4-L5")])
    discs = {d["level"]: d for d in rep["discs"]}
    flagged = discs["L4-L5"]
    canal = flagged["measurements"]["canal_ap_diameter_mm"]["value"]
    # 25 more pixels of 1.2 mm = 30 mm more, plus up to 3 mm for the disc's tilt (8.5 degrees)
    # and the row-to-row unevenness of the canal's posterior end that the painting copies
    assert before["L4-L5"] + 30.0 <= canal <= before["L4-L5"] + 33.0
    assert flagged["implausible_measurements"] == [
        {"measurement": "canal_ap_diameter_mm", "value": canal, "unit": "mm",
         "plausible_range": [2.0, 30.0], "slice_offset": 0}]
    assert flagged["found"] and flagged["predicted_class"] is None and flagged["ensemble"] is None
    assert pl.IMPLAUSIBLE_MEASUREMENT_REASON in flagged["reasons"]
    assert flagged["classifiers"]["geometry_classifier"]["probabilities"] is None
    others = [d for lv, d in discs.items() if lv != "L4-L5"]
    assert all(d["predicted_class"] in labels.GRADE_CLASSES for d in others)
    assert [d["measurements"]["canal_ap_diameter_mm"]["value"] for d in others] == [
        before[d["level"]] for d in others]          # the other levels' canals are untouched
    assert rep["status"] == "ok"
    assert rep["recommendation"] is None
    note = rep["recommendation_note"]
    assert note.startswith(pr.IMPLAUSIBLE_NOTE.split("({})")[0])
    assert f"L4-L5: canal_ap_diameter_mm {canal:.3g} mm (plausible 2-30 mm)" in note
    assert "1 not graded" in rep["status_message"]
    page = report_mod.render_html(rep, b"\x89PNG")
    assert "not graded</span>: canal_ap_diameter_mm" in page and "plausible 2-30 mm" in page
    assert '<span class="status-bad" title="canal_ap_diameter_mm' in page   # key table cell


def test_a_wrong_pixel_spacing_flags_every_disc_and_is_not_a_no_disc_report(predictor, case):
    image, mask = case
    rep = predictor.predict([image], (0.25, 0.25), odi=45, nrs=7, masks=[mask])
    assert rep["status"] == "ok" and rep["recommendation"] is None
    assert "0 graded" in rep["status_message"]
    for d in rep["discs"]:
        assert d["found"] and d["predicted_class"] is None
        heights = [x for x in d["implausible_measurements"]
                   if x["measurement"] == "disc_height_mm"]
        # synthetic discs are 3-5 mm at 1.2 mm/px, so under 1 mm at 0.25 mm/px
        assert len(heights) == 1 and heights[0]["value"] < 1.0, d["level"]
        assert heights[0]["value"] == d["measurements"]["disc_height_mm"]["value"]
    assert all(f"{d['level']}: " in rep["recommendation_note"] for d in rep["discs"])


def test_run_predict_writes_the_flag_into_report_json_and_html(predictor, case, tmp_path):
    import json

    import PIL.Image
    image, mask = case
    PIL.Image.fromarray(image).save(tmp_path / "slice.png")
    PIL.Image.fromarray(_deep_canal_behind(mask, "L4-L5").astype(np.uint8)).save(
        tmp_path / "mask.png")
    run.run_predict(tmp_path / "slice.png", None, tmp_path / "out", odi=45, nrs=7,
                    mask_path=tmp_path / "mask.png", pixel_spacing=SPACING, predictor=predictor)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    flagged = [d["level"] for d in rep["discs"] if d["implausible_measurements"]]
    assert flagged == ["L4-L5"] and rep["recommendation"] is None
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "No recommendation." in page and "not graded</span>: canal_ap_diameter_mm" in page
