"""spoils_tf.data.mr_weighting: T1 / T2 / PD / STIR / FLAIR from header values and the image,
and how a series that is not T2 reaches the report (no grades, no recommendation).

Timings are typical protocol values (1.5 T / 3 T lumbar spine); SPIDER's own header values
(overview.csv, real T2 SPACE series) are checked when ../shared is present.
"""

from __future__ import annotations

import csv
import pathlib
import types

import numpy as np
import pytest

from spoils_tf.data import mr_weighting as mw
from spoils_tf.serve import predictor as pr
from spoils_tf.serve import report_data as rd

SPIDER = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "spider_t2space"


@pytest.mark.parametrize("te, tr, ti, expected", [
    (100, 3500, None, "T2"),      # 2-D TSE T2
    (124, 1000, None, "T2"),      # 3-D SPACE T2 (SPIDER): long TE, short TR
    (12, 550, None, "T1"),        # TSE T1
    (4.6, 10, None, "T1"),        # 3-D gradient-echo T1
    (30, 1000, None, "T1"),       # both bounds inclusive
    (20, 3000, None, "PD"),
    (60, None, None, "T2"),       # TE alone decides T2
    (45, 2500, None, "unknown"),  # intermediate echo time
    (15, 1200, None, "unknown"),  # TR between the T1 and PD bounds
    (12, None, None, "unknown"),  # short TE without TR
    (None, None, None, "unknown"),
    (70, 4000, 150, "STIR"),
    (120, 9000, 2500, "FLAIR"),
    (10, 2000, 860, "T1"),        # T1 FLAIR / inversion recovery
])
def test_timings(te, tr, ti, expected):
    weighting, evidence = mw.from_timings(te, tr, ti)
    assert weighting == expected
    if te is not None:
        assert f"EchoTime {te:g} ms" in evidence[0]


@pytest.mark.parametrize("text, expected", [
    ("T2_space_sag_c4", "T2"), ("sag T1 TSE", "T1"), ("t1w_sag", "T1"), ("SAG STIR", "STIR"),
    ("t2_tirm_sag", "STIR"), ("T1 FLAIR SAG", "T1"), ("T2 FLAIR", "FLAIR"), ("PD_sag", "PD"),
    ("sag T1 T2 combo", "unknown"), ("localizer", "unknown"), ("T12 vertebra", "unknown"),
    ("sT2W_TSE", "T2"), ("sT1W_TSE", "T1"), ("PATIENT1 sag T2", "T2"), ("AXT2", "unknown"),
    ("", "unknown"), (None, "unknown"),
])
def test_description_tokens(text, expected):
    assert mw.from_description(text)[0] == expected


def test_description_is_never_copied_into_the_evidence():
    weighting, evidence = mw.from_description("SAG T1 Doe^Jane 1949")
    assert weighting == "T1" and evidence == ["SeriesDescription names T1"]


def test_timings_win_over_a_disagreeing_description():
    weighting, evidence = mw.from_header(description="sag T2", echo_time_ms=11,
                                         repetition_time_ms=600)
    assert weighting == "T1"
    assert "SeriesDescription names T2, which disagrees; the timings decide" in evidence
    assert mw.from_header(description="sag T1")[0] == "T1"     # no timings: the description
    assert mw.from_header(echo_time_ms=45)[0] == "unknown"
    assert mw.from_header(description="sag T1", echo_time_ms=45)[0] == "T1"


def test_dataset_reads_protocol_name_when_there_is_no_description():
    from pydicom.dataset import Dataset
    ds = Dataset()
    ds.ProtocolName = "sag_t1_tse"
    assert mw.from_dataset(ds) == ("T1", ["ProtocolName names T1"])
    ds.EchoTime, ds.RepetitionTime = "96", "4000"
    assert mw.from_dataset(ds)[0] == "T2"


def test_gradable_and_image_rule():
    assert [w for w in mw.WEIGHTINGS if mw.is_gradable(w)] == ["T2", "unknown"]
    assert mw.from_disc_csf_ratio(1.4)[0] == "T1"
    assert mw.from_disc_csf_ratio(1.0)[0] == "unknown"      # the bound itself reads as T2
    assert mw.from_disc_csf_ratio(0.2)[0] == "unknown"
    assert mw.from_disc_csf_ratio(None)[0] == "unknown"
    assert mw.from_disc_csf_ratio(float("nan"))[0] == "unknown"


@pytest.mark.skipif(not (SPIDER / "overview.csv").is_file(), reason="../shared absent")
def test_spider_headers_read_as_t2():
    """Every SPIDER series here is a sagittal T2 SPACE: the header rule must say T2 for all."""
    with open(SPIDER / "overview.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32
    got = [mw.from_header(description=r["SeriesDescription"], echo_time_ms=r["EchoTime"],
                          repetition_time_ms=r["RepetitionTime"])[0] for r in rows]
    assert got == ["T2"] * 32


# === How the predictor acts on it (hand-made cases, no model) ===
def _measured_case(source_weighting, ratios: dict) -> pr.PatientCase:
    """A case past the geometry stage: level -> disc_si_csf_ratio on the mid-sagittal slice."""
    source = None if source_weighting is None else {"weighting": source_weighting}
    case = pr.PatientCase(slices=[np.zeros((8, 8), np.uint8)], spacing_mm=(1.0, 1.0),
                          offsets=[0], slice_spacing_mm=None, odi=50.0, nrs=8, source=source,
                          orientation_from_header=True)
    case.status, case.levels = rd.STATUS_OK, list(ratios)
    case.found = {d: [0] for d in ratios}
    case.per_level = {d: {0: types.SimpleNamespace(values={"disc_si_csf_ratio": r})}
                      for d, r in ratios.items()}
    return case


def test_a_t1_header_means_no_grades_and_no_recommendation():
    from spoils_tf.clinical import rules
    from spoils_tf.serve.inputs import weighting_entry
    case = _measured_case(weighting_entry("T1", ["EchoTime 12 ms, RepetitionTime 550 ms"]),
                          {"L4-L5": 0.2, "L5-S1": 0.3})
    pr.check_weighting(case)
    assert case.weighting["weighting"] == "T1" and case.weighting["graded"] is False
    assert case.not_graded.startswith("T1-weighted: grades not computed (EchoTime 12 ms")
    pr.recommend(case, rules.DEFAULT_CONFIG)
    assert case.recommendation is None and case.recommendation_note == case.not_graded
    assert case.not_graded in case.notes


def test_a_t2_header_is_not_second_guessed_by_the_image():
    from spoils_tf.serve.inputs import weighting_entry
    case = _measured_case(weighting_entry("T2", ["EchoTime 100 ms"]), {"L4-L5": 1.5})
    pr.check_weighting(case)
    assert case.weighting["weighting"] == "T2" and case.not_graded is None


@pytest.mark.parametrize("ratios, expected, graded", [
    ({"L3-L4": 1.3, "L4-L5": 1.6, "L5-S1": 0.9}, "T1", False),   # median 1.3 > 1
    ({"L3-L4": 0.2, "L4-L5": 0.15, "L5-S1": 1.2}, "unknown", True),  # median 0.2
])
def test_unknown_header_is_refined_from_the_mid_slice_discs(ratios, expected, graded):
    case = _measured_case(None, ratios)
    pr.check_weighting(case)
    assert case.weighting["weighting"] == expected and case.weighting["graded"] is graded
    assert any(e.startswith("image: ") for e in case.weighting["evidence"])
    assert (case.not_graded is None) is graded


def test_a_t1_series_without_any_disc_found_still_says_t1():
    """A T2-trained segmenter may find nothing on a T1 slice: the note must then point to the
    weighting (give the T2 series), not only say that no disc was found."""
    from spoils_tf.clinical import rules
    from spoils_tf.serve.inputs import weighting_entry
    case = _measured_case(weighting_entry("T1", ["EchoTime 12 ms"]), {})
    case.status = rd.STATUS_NO_DISC
    pr.check_weighting(case)
    pr.recommend(case, rules.DEFAULT_CONFIG)
    assert case.recommendation_note.startswith("T1-weighted: grades not computed")
    assert "Give the T2 series of the study." in case.recommendation_note
