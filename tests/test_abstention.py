"""The intervention threshold chosen on held-out predictions (spoils_tf.classical.abstention)
and its place in the nested CV (grade_nested_lib): counts checked by hand."""

import json

import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf.classical import abstention

C = labels.GRADE_CLASSES


def _probs(pred: list[str], p: list[float]) -> np.ndarray:
    """One row per disc: probability ``p`` on class ``pred``, the rest spread evenly."""
    out = np.zeros((len(pred), len(C)))
    for i, (c, v) in enumerate(zip(pred, p)):
        out[i] = (1.0 - v) / (len(C) - 1)
        out[i, C.index(c)] = v
    return out


def _codes(names: list[str]) -> np.ndarray:
    return np.asarray([C.index(n) for n in names])


def test_curve_counts_by_hand():
    # 4H read on a 4H (right), on a 2L (over-treats), on a 5H (right: same tier);
    # 3M (injection) on a 3H (under, not over); 2L (conservative: not a call); unlabelled row
    probs = _probs(["4H", "4H", "4H", "3M", "2L", "4H"], [0.9, 0.5, 0.7, 0.8, 0.9, 0.99])
    y = np.asarray([C.index("4H"), C.index("2L"), C.index("5H"), C.index("3H"),
                    C.index("2L"), -1])
    at0, at06, at095 = abstention.threshold_curve(probs, y, (0.0, 0.6, 0.95))
    assert (at0["calls"], at0["acted"], at0["over_treating"]) == (4, 4, 1)
    assert at0["precision"] == pytest.approx(0.75)
    # at 0.6 the over-treating 4H (p 0.5) is withheld; the three others act
    assert (at06["acted"], at06["over_treating"], at06["precision"]) == (3, 0, 1.0)
    assert at06["withheld_correct"] == 0
    assert at095["acted"] == 0 and np.isnan(at095["precision"])
    assert at095["withheld_correct"] == 3


def test_choose_smallest_threshold_meeting_the_target():
    # twenty right 4H calls at p 0.8 and two wrong ones at p 0.45: below 0.5, 20 of 22
    # (lower bound 0.75 < 0.8); from 0.5 up, 20 of 20 (lower bound 0.88) -> 0.5
    probs = _probs(["4H"] * 22, [0.8] * 20 + [0.45] * 2)
    y = _codes(["4H"] * 20 + ["1L"] * 2)
    got = abstention.choose_threshold(probs, y)
    assert got["threshold"] == 0.5
    assert "20 of 20 do not over-treat" in got["reason"]
    # ten right calls alone are too few for the bound (10 of 10: 0.79)
    got = abstention.choose_threshold(probs[:10], y[:10])
    assert got["threshold"] == abstention.NEVER


def test_wilson_lower_bound_by_hand():
    # p = 0.5, n = 4, z = 1.645: (0.5 + 0.3383 - 1.645 * sqrt(0.0625 + 0.0423)) / 1.6765 = 0.1824
    assert abstention.wilson_lower_bound(2, 4) == pytest.approx(0.1824, abs=1e-3)
    assert abstention.wilson_lower_bound(20, 20) == pytest.approx(0.8808, abs=1e-3)
    assert np.isnan(abstention.wilson_lower_bound(0, 0))


def test_never_when_no_threshold_is_safe_enough():
    # the wrong calls are the confident ones: no threshold reaches 90 %
    probs = _probs(["5H"] * 10, [0.95] * 5 + [0.4] * 5)
    y = _codes(["1L"] * 5 + ["5H"] * 5)
    got = abstention.choose_threshold(probs, y)
    assert got["threshold"] == abstention.NEVER
    assert "always withheld" in got["reason"]
    # too few calls also gives NEVER, however right they are
    got = abstention.choose_threshold(_probs(["4H"] * 3, [0.9] * 3), _codes(["4H"] * 3))
    assert got["threshold"] == abstention.NEVER


def test_cross_fit_never_calibrates_a_row_with_a_map_that_saw_it():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(C)), size=60)
    y = rng.integers(0, len(C), size=60)
    groups = np.repeat([0, 1, 2], 20)
    a = abstention.cross_fit_calibrated(probs, y, groups, "sigmoid")
    y2 = y.copy()
    y2[groups == 1] = (y2[groups == 1] + 3) % len(C)      # change group 1's labels only
    b = abstention.cross_fit_calibrated(probs, y2, groups, "sigmoid")
    np.testing.assert_allclose(a[groups == 1], b[groups == 1])      # its own map never saw them
    assert not np.allclose(a[groups == 0], b[groups == 0])          # the others' maps did
    np.testing.assert_allclose(a.sum(axis=1), 1.0)


def test_nested_smoke_run_chooses_thresholds_on_inner_folds(tmp_path):
    from configs import grade_nested
    from spoils_tf.train import grade_nested_lib as gn
    config = grade_nested.get_config("smoke")
    config.targets = ("grade_class",)
    config.families = ("geometry",)
    config.data.synthetic.patients = 12
    config.eval.n_boot = 20
    out = gn.run(config, tmp_path)
    result = out["results"][0]
    per_fold = result["abstention"]["per_fold"]
    assert [r["fold"] for r in per_fold] == [0, 1, 2, 3]
    allowed = set(abstention.THRESHOLD_GRID) | {abstention.NEVER}
    assert all(r["threshold"] in allowed for r in per_fold)
    # acting on fewer calls can only remove over-treating ones
    assert all(r["acted"] <= r["calls"] and r["over_treating"] <= r["over_treating_without"]
               for r in per_fold)
    meta = json.loads((tmp_path / "ground_truth" / "grade_class" / "geometry" / "folds" /
                       "fold_0.json").read_text())
    inner = {p for fold in meta["inner_test_patients"] for p in fold}
    assert not inner & set(meta["test_patients"])
    assert meta["abstention"]["threshold"] == per_fold[0]["threshold"]
    md = (tmp_path / "ground_truth" / "abstention.md").read_text()
    assert "| ground_truth | geometry |" in md


def test_deployment_gate_ships_the_inner_choice_only_when_the_outer_folds_bear_it_out():
    choice = {"threshold": 0.45, "reason": "inner reason"}
    ok = abstention.deployment_threshold(choice, {"acted": 20, "over_treating": 0})
    assert ok["threshold"] == 0.45 and ok["reason"].startswith("inner reason; ")
    # 11 of 17 right (lower bound 0.45): the procedure failed -> never act
    bad = abstention.deployment_threshold(choice, {"acted": 17, "over_treating": 6})
    assert bad["threshold"] == abstention.NEVER
    assert "11 of 17" in bad["reason"] and "always withheld" in bad["reason"]
    # nothing ever acted on the outer folds: no evidence either
    none = abstention.deployment_threshold(choice, {"acted": 0, "over_treating": 0})
    assert none["threshold"] == abstention.NEVER
