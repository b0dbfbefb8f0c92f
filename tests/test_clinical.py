"""Decision support: every rule, every band edge, bad inputs, worst-disc selection, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from spoils_tf import labels
from spoils_tf.cli import decide as cli
from spoils_tf.clinical import rules, strata


# === Every rule ===
@pytest.mark.parametrize("cls, odi, nrs, rule_id, recommendation, level", [
    ("4M", 45, 2, "SURG-HIGH", strata.SURGICAL_CONSULTATION, "high"),       # high by ODI
    ("5H", 10, 7, "SURG-HIGH", strata.SURGICAL_CONSULTATION, "high"),       # high by NRS
    ("3H", 30, 5, "SURG-LOW", strata.CONSERVATIVE_SPECIALIST_REVIEW, "moderate"),
    ("4H", 0, 0, "SURG-LOW", strata.CONSERVATIVE_SPECIALIST_REVIEW, "minimal"),
    ("3M", 30, 5, "INJ-SYMPTOMATIC", strata.TFESI, "moderate"),
    ("5L", 70, 9, "INJ-SYMPTOMATIC", strata.TFESI, "high"),
    ("4L", 20, 3, "INJ-MINIMAL", strata.CONSERVATIVE_CARE, "minimal"),
    ("1L", 40, 6, "CONS-MILD", strata.CONSERVATIVE_CARE, "moderate"),
    ("2L", 0, 0, "CONS-MILD", strata.CONSERVATIVE_CARE, "minimal"),
    ("3L", 41, 0, "CONS-DISCORDANT", strata.CLINICAL_REEVALUATION, "high"),
    ("3L", 0, 7, "CONS-DISCORDANT", strata.CLINICAL_REEVALUATION, "high"),
])
def test_every_rule_fires(cls, odi, nrs, rule_id, recommendation, level):
    d = rules.decide({"L4-L5": cls}, odi, nrs)
    assert (d.rule_id, d.recommendation, d.symptom_level) == (rule_id, recommendation, level)
    assert d.driving_discs == (("L4-L5", cls),)
    assert cls in d.reason and d.follow_up
    assert d.rule_source == ("paper" if rule_id in ("SURG-HIGH", "INJ-SYMPTOMATIC", "CONS-MILD")
                             else "project")


def test_paper_strata_classes_map_to_paper_rules():
    # the paper's three lists, each checked against the rule its stratum fires
    for c in ("3H", "4M", "4H", "5M", "5H"):
        assert rules.decide({"L5-S1": c}, 50, 8).recommendation == strata.SURGICAL_CONSULTATION
    for c in ("3M", "4L", "5L"):
        assert rules.decide({"L5-S1": c}, 30, 5).recommendation == strata.TFESI
    for c in ("1L", "2L", "3L"):
        assert rules.decide({"L5-S1": c}, 30, 5).recommendation == strata.CONSERVATIVE_CARE


# === Band edges ===
@pytest.mark.parametrize("odi, band", [
    (0, "minimal"), (20, "minimal"), (20.5, "moderate"), (21, "moderate"), (40, "moderate"),
    (41, "severe"), (60, "severe"), (61, "crippled"), (80, "crippled"), (81, "bed-bound"),
    (100, "bed-bound"), ("44.4", "severe"),
])
def test_odi_band_edges(odi, band):
    assert rules.decide({"L4-L5": "1L"}, odi, 0).odi_band == band


@pytest.mark.parametrize("nrs, band", [
    (0, "none"), (1, "mild"), (3, "mild"), (4, "moderate"), (6, "moderate"), (7, "severe"),
    (10, "severe"), ("5", "moderate"), (5.0, "moderate"),
])
def test_nrs_band_edges(nrs, band):
    assert rules.decide({"L4-L5": "1L"}, 0, nrs).nrs_band == band


@pytest.mark.parametrize("cls, below, above, rule_below, rule_above", [
    # ODI 20 | 21: minimal -> moderate flips the injection stratum's minimal rule
    ("4L", (20, 0), (21, 0), "INJ-MINIMAL", "INJ-SYMPTOMATIC"),
    # ODI 40 | 41: "high" starts at the severe band
    ("3L", (40, 0), (41, 0), "CONS-MILD", "CONS-DISCORDANT"),
    ("4M", (40, 0), (41, 0), "SURG-LOW", "SURG-HIGH"),
    # NRS 3 | 4: mild -> moderate
    ("4L", (0, 3), (0, 4), "INJ-MINIMAL", "INJ-SYMPTOMATIC"),
    # NRS 6 | 7: "high" starts at severe pain
    ("4M", (0, 6), (0, 7), "SURG-LOW", "SURG-HIGH"),
    ("2L", (0, 6), (0, 7), "CONS-MILD", "CONS-DISCORDANT"),
])
def test_band_edges_switch_rules(cls, below, above, rule_below, rule_above):
    assert rules.decide({"L4-L5": cls}, *below).rule_id == rule_below
    assert rules.decide({"L4-L5": cls}, *above).rule_id == rule_above


def test_odi_60_61_and_80_81_edges_keep_the_rule_and_bed_bound_adds_advice():
    d60, d61 = rules.decide({"L4-L5": "4H"}, 60, 0), rules.decide({"L4-L5": "4H"}, 61, 0)
    assert (d60.odi_band, d61.odi_band) == ("severe", "crippled")
    assert d60.rule_id == d61.rule_id == "SURG-HIGH"
    d80, d81 = rules.decide({"L4-L5": "4H"}, 80, 0), rules.decide({"L4-L5": "4H"}, 81, 0)
    assert "bed-bound" not in d80.follow_up
    assert "bed-bound" in d81.follow_up and d81.follow_up.startswith(d80.follow_up)


# === Bad inputs ===
@pytest.mark.parametrize("odi", [-1, 101, "abc", None, float("nan"), float("inf"), True, [40]])
def test_bad_odi_raises_naming_field_and_value(odi):
    with pytest.raises(ValueError, match="ODI") as e:
        rules.decide({"L4-L5": "4M"}, odi, 5)
    if odi is not None and not (isinstance(odi, float) and math.isnan(odi)):
        assert repr(odi) in str(e.value)


@pytest.mark.parametrize("nrs", [-1, 11, 10.5, 5.5, "abc", None, float("nan"), False])
def test_bad_nrs_raises_naming_field_and_value(nrs):
    with pytest.raises(ValueError, match="NRS"):
        rules.decide({"L4-L5": "4M"}, 40, nrs)


@pytest.mark.parametrize("discs, match", [
    ({}, "empty"),
    ([], "empty"),
    ({"L4-L5": "6L"}, "unknown grade class '6L'"),
    ({"L4-L5": "4m"}, "unknown grade class"),
    ({"L4-L5": None}, "unknown grade class None"),
    ({"L6-S1": "4M"}, "unknown disc level 'L6-S1'"),
    ([("L4-L5", "4M"), ("L4-L5", "1L")], "given twice"),
    (["L4-L5"], r"\(level, grade class\)"),
])
def test_bad_discs_raise(discs, match):
    with pytest.raises(ValueError, match=match):
        rules.decide(discs, 40, 5)


# === Worst disc ===
def test_worst_order_is_tier_then_grade_then_severity():
    assert strata.WORST_ORDER == ("1L", "2L", "3L", "3M", "4L", "5L",
                                  "3H", "4M", "4H", "5M", "5H")
    assert sorted(strata.WORST_ORDER) == sorted(labels.GRADE_CLASSES)
    assert rules.DEFAULT_CONFIG.worst_order == strata.WORST_ORDER


def test_worst_disc_drives_and_a_surgical_tier_class_outranks_grade_5L():
    # 3H (surgical stratum) outranks 5L (injection stratum) although its Pfirrmann grade is lower
    d = rules.decide({"L3-L4": "5L", "L4-L5": "3H", "L5-S1": "1L"}, 50, 8)
    assert d.driving_discs == (("L4-L5", "3H"),)
    assert (d.worst_class, d.rule_id) == ("3H", "SURG-HIGH")
    # within a tier the higher Pfirrmann grade wins: 5L over 3M
    assert rules.worst_discs({"L1-L2": "3M", "L2-L3": "5L"}) == (("L2-L3", "5L"),)


def test_ties_report_every_worst_disc_top_to_bottom():
    d = rules.decide([("L5-S1", "4M"), ("L3-L4", "1L"), ("L4-L5", "4M")], 20, 2)
    assert d.driving_discs == (("L4-L5", "4M"), ("L5-S1", "4M"))
    assert d.discs == (("L3-L4", "1L"), ("L4-L5", "4M"), ("L5-S1", "4M"))
    assert d.rule_id == "SURG-LOW"


# === Config is data ===
def test_config_override_changes_the_high_threshold():
    # make severe pain alone not "high": 4M with ODI 0 and NRS 8 drops to SURG-LOW
    cfg = rules.DecisionConfig.from_dict({"high_nrs_bands": []})
    assert rules.decide({"L4-L5": "4M"}, 0, 8).rule_id == "SURG-HIGH"
    assert rules.decide({"L4-L5": "4M"}, 0, 8, cfg).rule_id == "SURG-LOW"


def test_inconsistent_config_is_rejected():
    with pytest.raises(ValueError, match="exactly one rule"):
        rules.DecisionConfig(rules=strata.RULES[1:])
    with pytest.raises(ValueError, match="odi_bands"):
        rules.DecisionConfig(odi_bands=strata.ODI_BANDS[:-1])
    with pytest.raises(ValueError, match="class_tier"):
        rules.DecisionConfig(class_tier={c: "surgical" for c in labels.GRADE_CLASSES[1:]})
    with pytest.raises(ValueError, match="unknown key"):
        rules.DecisionConfig.from_dict({"odi_band": []})


def test_config_from_json_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"odi_bands": [["low", 50, "low"], ["high", 100, "high"]],
                                "high_odi_bands": ["high"], "minimal_odi_bands": ["low"]}))
    cfg = rules.DecisionConfig.from_json(path)
    d = rules.decide({"L4-L5": "4M"}, 45, 5, cfg)
    assert (d.odi_band, d.rule_id) == ("low", "SURG-LOW")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="t.json"):
        rules.DecisionConfig.from_json(path)


def test_decision_to_dict_round_trips_through_json():
    d = rules.decide({"L4-L5": "4M"}, 45, 7)
    back = json.loads(json.dumps(d.to_dict()))
    assert back["driving_discs"] == [["L4-L5", "4M"]]
    assert set(back) == {f.name for f in dataclasses.fields(rules.Decision)}


# === CLI ===
def test_cli_text_and_json(capsys):
    argv = ["--class", "L4-L5=4M", "--class", "L5-S1=3L", "--odi", "45", "--nrs", "7"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "surgical_consultation" in out and "L4-L5=4M" in out and "SURG-HIGH" in out
    assert cli.main(argv + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["recommendation"], d["odi_band"], d["nrs_band"]) == (
        strata.SURGICAL_CONSULTATION, "severe", "severe")


@pytest.mark.parametrize("argv, match", [
    (["--class", "L4-L5=4M", "--odi", "abc", "--nrs", "7"], "ODI must be a number, got 'abc'"),
    (["--class", "L4-L5=4M", "--odi", "40", "--nrs", "10.5"], "NRS"),
    (["--class", "L4-L5:4M", "--odi", "40", "--nrs", "5"], "LEVEL=CLASS"),
    (["--odi", "40", "--nrs", "5"], "at least one"),
])
def test_cli_errors_exit_2_with_message(capsys, argv, match):
    assert cli.main(argv) == 2
    assert match in capsys.readouterr().err


# === Abstention on an unconfident grade ===
def test_an_unconfident_5H_grade_withholds_the_surgical_consultation():
    d = rules.decide({"L4-L5": "2L", "L5-S1": "5H"}, 50, 8,
                     probabilities={"L4-L5": 0.95, "L5-S1": 0.4})
    assert d.recommendation is None
    assert d.withheld_recommendation == strata.SURGICAL_CONSULTATION
    assert d.rule_id == "SURG-HIGH" and d.driving_discs == (("L5-S1", "5H"),)
    assert "L5-S1 graded 5H with probability 0.40" in d.abstention_note
    assert f"threshold {strata.INTERVENTION_MIN_PROBABILITY:.2f}" in d.abstention_note
    assert "Recommendation: none" in d.summary() and "Refer for spine" not in d.summary()


def test_a_confident_5H_grade_keeps_the_surgical_consultation():
    d = rules.decide({"L4-L5": "2L", "L5-S1": "5H"}, 50, 8,
                     probabilities={"L4-L5": 0.3, "L5-S1": 0.9})
    assert (d.recommendation, d.rule_id) == (strata.SURGICAL_CONSULTATION, "SURG-HIGH")
    assert d.withheld_recommendation is None and d.abstention_note is None
    assert d.grade_probabilities == (("L4-L5", 0.3), ("L5-S1", 0.9))


@pytest.mark.parametrize("cls, odi, nrs, p, expected", [
    ("5L", 30, 5, 0.59, None),                                       # injection withheld
    ("5L", 30, 5, 0.60, strata.TFESI),                               # at the threshold: kept
    ("4H", 30, 5, 0.10, strata.CONSERVATIVE_SPECIALIST_REVIEW),      # not an intervention
    ("1L", 50, 8, 0.10, strata.CLINICAL_REEVALUATION),
])
def test_only_interventions_are_withheld(cls, odi, nrs, p, expected):
    assert rules.decide({"L4-L5": cls}, odi, nrs, probabilities={"L4-L5": p}
                        ).recommendation == expected


def test_threshold_one_withholds_every_intervention_even_at_probability_one():
    cfg = rules.DecisionConfig(intervention_min_probability=1.0)
    d = rules.decide({"L5-S1": "5H"}, 50, 8, cfg, probabilities={"L5-S1": 1.0})
    assert d.recommendation is None and d.withheld_recommendation == strata.SURGICAL_CONSULTATION
    assert "not reliable enough in cross-validation" in d.abstention_note
    # conservative advice is still given
    assert rules.decide({"L5-S1": "2L"}, 10, 2, cfg, probabilities={"L5-S1": 0.3}
                        ).recommendation == strata.CONSERVATIVE_CARE


def test_one_confident_disc_of_a_tie_keeps_the_intervention():
    d = rules.decide({"L4-L5": "4M", "L5-S1": "4M"}, 50, 8,
                     probabilities={"L4-L5": 0.2, "L5-S1": 0.7})
    assert d.recommendation == strata.SURGICAL_CONSULTATION


def test_threshold_from_config_and_bad_probabilities():
    cfg = rules.DecisionConfig.from_dict({"intervention_min_probability": 0.3})
    assert rules.decide({"L5-S1": "5H"}, 50, 8, cfg, probabilities={"L5-S1": 0.4}
                        ).recommendation == strata.SURGICAL_CONSULTATION
    with pytest.raises(ValueError, match="intervention_min_probability"):
        rules.DecisionConfig(intervention_min_probability=1.5)
    with pytest.raises(ValueError, match="one per disc level"):
        rules.decide({"L5-S1": "5H"}, 50, 8, probabilities={"L4-L5": 0.9})
    with pytest.raises(ValueError, match="L5-S1 must be a probability"):
        rules.decide({"L5-S1": "5H"}, 50, 8, probabilities={"L5-S1": 1.2})


def test_rule_table_states_the_threshold(capsys):
    text = "\n".join(rules.rule_table_lines())
    assert f"below {strata.INTERVENTION_MIN_PROBABILITY:.2f}" in text
    assert all(r["id"] in text for r in strata.RULES)
    assert cli.main(["--rules"]) == 0
    assert f"below {strata.INTERVENTION_MIN_PROBABILITY:.2f}" in capsys.readouterr().out
    argv = ["--class", "L5-S1=5H", "--probability", "L5-S1=0.4", "--odi", "50", "--nrs", "8"]
    assert cli.main(argv + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["recommendation"], d["withheld_recommendation"]) == (
        None, strata.SURGICAL_CONSULTATION)
