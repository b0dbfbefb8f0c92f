"""Tests for spoils_tf.levels on hand-drawn lumbar spines.

The phantom: a lordotic centre line ``x = 95 + (y - 160)^2 / 400`` mm (radius of curvature
200 mm, tangent up to 25 degrees from vertical), along which, bottom to top, the discs
(ellipses 36 x 10 mm) and vertebral bodies (rectangles 38 x 26 mm) L5-S1, L5, ..., L1, T12-L1
are drawn perpendicular to the line at 0.6 mm pixels, with a 14 mm wide canal strip posterior
(to the right) of the bodies. Probabilities are the label map's one-hot vectors smoothed by
5 %, with the level part within each tissue replaced by a chosen distribution (uniform, weak,
half shifted) and optionally multiplied by per-pixel noise; the tissue of every pixel is
never changed, so every expected label map is exact.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from spoils_tf import labels
from spoils_tf import levels

SPACING = (0.6, 0.6)
H, W = 480, 400
BODY_H_MM, BODY_W_MM = 26.0, 38.0
DISC_H_MM, DISC_W_MM = 10.0, 36.0
Y_BOTTOM_MM = 255.0  # inferior end of the L5-S1 disc
RADIUS_MM = 200.0

# Bottom -> top: L5-S1, L5, L4-L5, ..., L1, T12-L1.
CHAIN = tuple(n for d in reversed(labels.DISC_NAMES)
              for n in (d, labels.disc_neighbours(d)[0]) if n is not None)
ID = labels.SEG_ID


def _centre_x(y: np.ndarray) -> np.ndarray:
    return 95.0 + (y - 160.0) ** 2 / (2 * RADIUS_MM)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    r, c = np.mgrid[0:H, 0:W]
    return r * SPACING[0], c * SPACING[1]


def _local(y_centre: float) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) mm of every pixel in the frame of a structure centred on the line at y_centre:
    u along the anteroposterior axis (posterior +), v along the line (inferior +)."""
    y, x = _grid()
    slope = (y_centre - 160.0) / RADIUS_MM
    norm = np.hypot(1.0, slope)
    dy, dx = y - y_centre, x - _centre_x(np.float64(y_centre))
    return (-slope * dy + dx) / norm, (dy + slope * dx) / norm


def _centres_mm() -> dict[str, float]:
    """y (mm) of each structure's centre, stacked upwards from Y_BOTTOM_MM."""
    out, y = {}, Y_BOTTOM_MM
    for name in CHAIN:
        h = DISC_H_MM if name in labels.DISC_NAMES else BODY_H_MM
        out[name] = y - h / 2
        y -= h
    return out


def _draw(label: np.ndarray, name_or_id, y_centre: float, kind: str) -> None:
    u, v = _local(y_centre)
    cid = ID[name_or_id] if isinstance(name_or_id, str) else name_or_id
    if kind == "disc":
        inside = (u / (DISC_W_MM / 2)) ** 2 + (v / (DISC_H_MM / 2)) ** 2 <= 1.0
    else:
        inside = (np.abs(u) <= BODY_W_MM / 2) & (np.abs(v) <= BODY_H_MM / 2)
    label[inside] = cid


@functools.lru_cache(maxsize=None)
def _spine_cached(omit: tuple[str, ...], extra_below: bool, canal: bool,
                  merged: bool) -> np.ndarray:
    label = np.zeros((H, W), np.int32)
    centres = _centres_mm()
    if canal:
        y, x = _grid()
        offset = x - _centre_x(y)
        along = (y > centres[CHAIN[-1]] - 15) & (y < Y_BOTTOM_MM + 10)
        label[along & (offset > BODY_W_MM / 2 + 2) & (offset < BODY_W_MM / 2 + 16)] = \
            labels.CANAL_ID
    for name in CHAIN:
        if name not in omit:
            kind = "disc" if name in labels.DISC_NAMES else "body"
            _draw(label, name, centres[name], kind)
    if extra_below:
        # The S1-S2 disc of a lumbarised S1: one body height below L5-S1, and the network
        # believes it is L5-S1.
        _draw(label, "L5-S1", Y_BOTTOM_MM + BODY_H_MM + DISC_H_MM / 2, "disc")
    if merged:
        # A 4 mm strip of disc tissue along the anterior edge of L4, reaching 7 mm into the
        # discs above and below, joins L4-L5 and L3-L4; its upper half carries L3-L4's level,
        # its lower half L4-L5's.
        u, v = _local(centres["L4"])
        strip = (u >= -BODY_W_MM / 2) & (u <= -BODY_W_MM / 2 + 4) & (np.abs(v) <= 20)
        label[strip & (v < 0)] = ID["L3-L4"]
        label[strip & (v >= 0)] = ID["L4-L5"]
    return label


def _spine(omit: tuple[str, ...] = (), extra_below: bool = False, canal: bool = True,
           merged: bool = False) -> np.ndarray:
    """int32 [H, W] label map of the phantom (a fresh copy)."""
    return _spine_cached(tuple(omit), extra_below, canal, merged).copy()


def _level_dist(cid: int, ids: tuple[int, ...], mode: str) -> np.ndarray:
    k = ids.index(cid)
    onehot = np.eye(len(ids))[k]
    uniform = np.full(len(ids), 1.0 / len(ids))
    if mode == "onehot":
        return onehot
    if mode == "uniform":
        return uniform
    if mode == "weak":
        return 0.3 * onehot + 0.7 * uniform
    if mode == "half_up":  # half the evidence on the level above (ids run top -> bottom)
        return 0.5 * onehot + 0.5 * np.eye(len(ids))[max(k - 1, 0)]
    raise ValueError(mode)


def _probs(label: np.ndarray, mode: str = "onehot", noise: float = 0.0,
           seed: int = 0) -> np.ndarray:
    """float32 [H, W, 14]: smoothed one-hot of ``label`` with the level part set by ``mode``."""
    n = labels.NUM_SEG_CLASSES
    table = np.full((n, n), 0.05 / n) + 0.95 * np.eye(n)
    for ids in (labels.VERTEBRA_IDS, labels.DISC_IDS):
        for cid in ids:
            mass = table[cid, list(ids)].sum()
            table[cid, list(ids)] = mass * _level_dist(cid, ids, mode)
    probs = table[label]
    if noise:
        rng = np.random.default_rng(seed)
        for ids in (labels.VERTEBRA_IDS, labels.DISC_IDS):
            part = probs[..., list(ids)]
            noisy = part * np.exp(noise * rng.standard_normal(part.shape))
            probs[..., list(ids)] = noisy * (part.sum(-1, keepdims=True)
                                             / noisy.sum(-1, keepdims=True))
    return probs.astype(np.float32)


def _names(result: levels.LevelResult) -> list[str]:
    return [row["name"] for row in result.chain]


def _assert_label_map(result: levels.LevelResult, expected: np.ndarray) -> None:
    wrong = result.label_map != expected
    assert not wrong.any(), (
        f"{wrong.sum()} pixels differ; classes found {np.unique(result.label_map[wrong])}, "
        f"expected {np.unique(expected[wrong])}; flags {result.flags}")


# === Level assignment ===
def test_normal_spine_every_component_gets_its_level():
    label = _spine()
    result = levels.assign_levels(_probs(label), SPACING)
    _assert_label_map(result, label)
    assert _names(result) == list(CHAIN)
    assert result.flags == []
    assert result.score > 0.95
    assert result.canal_side == "posterior"
    # Disc and body centres are 18 mm apart along the line ((10 + 26) / 2).
    assert result.step_mm == pytest.approx(18.0, abs=1.0)


def test_uniform_level_probabilities_count_from_the_bottom():
    label = _spine()
    result = levels.assign_levels(_probs(label, "uniform"), SPACING)
    _assert_label_map(result, label)
    assert _names(result)[0] == "L5-S1"
    assert result.score == pytest.approx(1 / 6, abs=0.01)
    assert any(f.startswith("weak level evidence") for f in result.flags)


def test_uniform_levels_on_a_partial_chain_still_start_at_l5s1():
    # Only L5-S1 .. L3: nothing at the top to count from.
    label = _spine(omit=CHAIN[6:])
    result = levels.assign_levels(_probs(label, "uniform"), SPACING)
    _assert_label_map(result, label)
    assert _names(result) == list(CHAIN[:6])


def test_weak_noisy_level_probabilities_still_label_every_level():
    label = _spine()
    result = levels.assign_levels(_probs(label, "weak", noise=0.5, seed=3), SPACING)
    _assert_label_map(result, label)
    assert not any("off-by-one" in f or "merged" in f for f in result.flags)
    assert 0.3 < result.score < 0.6


@pytest.mark.parametrize("mode", ["onehot", "uniform"])
def test_missing_disc_does_not_shift_the_levels_above(mode):
    label = _spine(omit=("L3-L4",))
    result = levels.assign_levels(_probs(label, mode), SPACING)
    _assert_label_map(result, label)
    assert _names(result) == [n for n in CHAIN if n != "L3-L4"]
    assert "L3-L4 missing between L4 and L3" in result.flags


def test_missing_disc_and_body_gap_is_measured_in_mm():
    # L3-L4 and L3 both missing: L4 and L2-L3 lie 4 steps (72 mm) apart, so with
    # level-uninformative probabilities only the distance term keeps L2-L3 from being read as
    # the next disc up (L3-L4), which would shift every level above.
    label = _spine(omit=("L3-L4", "L3"))
    result = levels.assign_levels(_probs(label, "uniform"), SPACING)
    _assert_label_map(result, label)
    assert "L3 missing between L4 and L2-L3" in result.flags
    shifted = levels.assign_levels(_probs(label, "uniform"), SPACING,
                                   levels.LevelConfig(gap_weight=0.0))
    assert _names(shifted)[4] == "L3-L4"


def test_thoracic_body_above_t12l1_becomes_background():
    # A T12 body that the network takes for L1.
    label = _spine()
    body = np.zeros_like(label)
    _draw(body, "L1", _centres_mm()["T12-L1"] - DISC_H_MM / 2 - BODY_H_MM / 2, "body")
    label[body > 0] = ID["L1"]
    expected = label.copy()
    expected[body > 0] = 0
    for mode in ("onehot", "uniform"):
        result = levels.assign_levels(_probs(label, mode), SPACING)
        _assert_label_map(result, expected)
        assert [d["reason"] for d in result.dropped] == [
            "T12 (outside the labelled levels): background"]


def test_extra_disc_below_l5s1_becomes_background_and_is_flagged():
    label = _spine(extra_below=True)
    result = levels.assign_levels(_probs(label), SPACING)
    _assert_label_map(result, _spine())
    assert _names(result) == list(CHAIN)
    assert any(f.startswith("extra disc below L5-S1") for f in result.flags)
    below = [d for d in result.dropped if "S1-S2" in d["reason"]]
    assert len(below) == 1 and below[0]["tissue"] == "disc"


def test_half_shifted_evidence_is_flagged_not_silently_shifted():
    # Every structure gets half its probability on the level above: the network's evidence
    # fits both the true labelling and the one shifted up one level. Counting from the
    # bottom wins (2 x 1.0 bottom-missing vs 2 x 0.3 top-missing penalty: margin 1.4 < 2.0),
    # and the ambiguity is flagged.
    label = _spine(omit=CHAIN[-3:])
    result = levels.assign_levels(_probs(label, "half_up"), SPACING)
    _assert_label_map(result, label)
    assert any("off-by-one" in f and "up" in f for f in result.flags)


def test_merged_discs_are_split_by_the_level_probabilities():
    label = _spine(merged=True)
    result = levels.assign_levels(_probs(label), SPACING)
    _assert_label_map(result, label)
    assert any(f.startswith("merged discs L3-L4 + L4-L5") for f in result.flags)
    notes = {row["name"]: row["note"] for row in result.chain}
    assert notes["L3-L4"] == notes["L4-L5"] == "split"


def test_merged_discs_without_level_information_are_flagged():
    label = _spine(merged=True)
    result = levels.assign_levels(_probs(label, "uniform"), SPACING)
    assert any(f.startswith("possibly merged discs") for f in result.flags)


def test_speck_is_dropped_and_does_not_shift_levels():
    label = _spine()
    centre_r = int(round(_centres_mm()["L4"] / SPACING[0]))
    centre_c = int(round(_centre_x(np.float64(_centres_mm()["L4"])) / SPACING[1]))
    label[centre_r:centre_r + 5, centre_c:centre_c + 5] = ID["L2-L3"]  # 9 mm^2 of "disc"
    result = levels.assign_levels(_probs(label), SPACING)
    expected = label.copy()
    expected[centre_r:centre_r + 5, centre_c:centre_c + 5] = 0
    _assert_label_map(result, expected)
    assert _names(result) == list(CHAIN)
    specks = [d for d in result.dropped if d["reason"].startswith("speck")]
    assert len(specks) == 1 and specks[0]["area_mm2"] == pytest.approx(25 * 0.36)


def test_blobs_off_the_spine_are_dropped():
    label = _spine()
    y_l3 = _centres_mm()["L3"]
    r0 = int(y_l3 / SPACING[0])
    label[r0:r0 + 25, 20:45] = ID["L3-L4"]      # 15 x 15 mm "disc" in the abdomen
    label[r0:r0 + 30, 370:395] = ID["L2"]        # a "body" in the posterior padding
    label[20:60, 10:30] = labels.CANAL_ID        # a "canal" far anterior, above the spine
    result = levels.assign_levels(_probs(label), SPACING)
    _assert_label_map(result, _spine())
    reasons = sorted(d["reason"].split(" (")[0] for d in result.dropped)
    assert reasons == ["canal away from the spine", "off the spine", "off the spine"]


def test_empty_input_gives_zero_map_and_flag():
    probs = _probs(np.zeros((64, 80), np.int32))
    result = levels.assign_levels(probs, SPACING)
    assert result.label_map.shape == (64, 80) and not result.label_map.any()
    assert result.label_map.dtype == np.int32
    assert result.flags and result.flags[-1].startswith("empty")
    assert result.chain == [] and result.score == 0.0 and result.canal_side == "unknown"


def test_canal_only_input_drops_the_canal():
    label = _spine(omit=CHAIN)
    result = levels.assign_levels(_probs(label), SPACING)
    assert not result.label_map.any()
    assert [d["tissue"] for d in result.dropped] == ["canal"]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="probs must be"):
        levels.assign_levels(np.zeros((8, 8, 3), np.float32), SPACING)
    with pytest.raises(ValueError, match="spacing_mm"):
        levels.assign_levels(np.zeros((8, 8, labels.NUM_SEG_CLASSES), np.float32), (0.6, 0.0))


# === Orientation ===
def test_canal_side_upright_mirrored_and_without_canal():
    label = _spine()
    assert levels.canal_side(label, SPACING) == "posterior"
    assert levels.canal_side(levels.orient(label, "flip_lr"), SPACING) == "anterior"
    assert levels.canal_side(_spine(canal=False), SPACING) == "unknown"
    assert levels.canal_side(np.zeros((10, 10), np.int32), SPACING) == "unknown"


def test_orient_is_its_own_inverse_on_the_first_two_axes():
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    for name in levels.ORIENTATIONS:
        np.testing.assert_array_equal(levels.orient(levels.orient(a, name), name), a)
    np.testing.assert_array_equal(levels.orient(a, "flip_lr")[:, 0], a[:, 2])
    np.testing.assert_array_equal(levels.orient(a, "rot180")[0, 0], a[1, 2])
    with pytest.raises(ValueError):
        levels.orient(a, "rot90")


def _candidates(stored: np.ndarray, upright_name: str):
    """Level results on ``orient(stored, name)`` for every name. The simulated network finds
    every tissue in any orientation but is level-informative only where the spine is upright
    (superior at the top); the others get uniform level probabilities."""
    upright = {upright_name, {"as_is": "flip_lr", "flip_lr": "as_is", "flip_ud": "rot180",
                              "rot180": "flip_ud"}[upright_name]}
    return {name: levels.assign_levels(
                _probs(levels.orient(stored, name), "onehot" if name in upright else "uniform"),
                SPACING)
            for name in levels.ORIENTATIONS}


def test_choose_orientation_corrects_a_mirrored_slice():
    label = _spine()
    mirrored = levels.orient(label, "flip_lr")
    results = _candidates(mirrored, "flip_lr")
    assert results["as_is"].canal_side == "anterior"
    assert results["flip_lr"].canal_side == "posterior"
    two = {k: results[k] for k in ("as_is", "flip_lr")}
    for given in (two, results):
        decision = levels.choose_orientation(given)
        assert decision.name == "flip_lr" and decision.confident, decision.reason
    _assert_label_map(results["flip_lr"], label)


def test_choose_orientation_corrects_an_upside_down_slice():
    label = _spine()
    stored = levels.orient(label, "flip_ud")
    results = _candidates(stored, "flip_ud")
    # The canal alone cannot tell: it is posterior in the upside-down slice too.
    assert results["as_is"].canal_side == "posterior"
    assert results["as_is"].score < 0.2 < 0.9 < results["flip_ud"].score
    decision = levels.choose_orientation(results)
    assert decision.name == "flip_ud" and decision.confident, decision.reason
    assert decision.scores["flip_ud"] == pytest.approx(results["flip_ud"].score)


def test_choose_orientation_is_not_confident_when_evidence_is_ambiguous():
    label = _spine()
    good = levels.assign_levels(_probs(label), SPACING)
    also_good = levels.assign_levels(_probs(label, noise=0.1), SPACING)
    decision = levels.choose_orientation({"as_is": good, "flip_ud": also_good})
    assert not decision.confident
    assert "as_is" in decision.reason and "flip_ud" in decision.reason
    # No candidate with a posterior canal: refuse.
    mirrored = levels.assign_levels(_probs(levels.orient(label, "flip_lr")), SPACING)
    decision = levels.choose_orientation({"as_is": mirrored})
    assert not decision.confident and "no candidate has the canal posterior" in decision.reason
    # A posterior canal but no level evidence: refuse.
    flat = levels.assign_levels(_probs(label, "uniform"), SPACING)
    decision = levels.choose_orientation({"as_is": flat, "flip_lr": mirrored})
    assert not decision.confident and "level score 0.17" in decision.reason
    assert not levels.choose_orientation({}).confident


def _result(score: float, log_score: float, side: str = "posterior") -> levels.LevelResult:
    return levels.LevelResult(label_map=np.zeros((4, 4), np.int32), chain=[], dropped=[],
                              flags=[], score=score, log_score=log_score, step_mm=20.0,
                              canal_side=side)


def test_orientation_refused_when_score_and_chain_objective_disagree():
    # the best level score (rot180) has a far worse chain objective than as_is: seen on a
    # held-out SPIDER slice, where trusting the score alone turned an upright slice upside down
    decision = levels.choose_orientation({"as_is": _result(0.77, -7.4),
                                          "flip_ud": _result(0.44, -16.9),
                                          "rot180": _result(0.92, -35.1)})
    assert not decision.confident and "disagree" in decision.reason
    agree = levels.choose_orientation({"as_is": _result(0.95, -0.6),
                                       "flip_lr": _result(0.71, -7.6),
                                       "flip_ud": _result(0.46, -37.3)})
    assert agree.confident and agree.name == "as_is"
    close = levels.choose_orientation({"as_is": _result(0.95, -10.0),
                                       "flip_ud": _result(0.70, -11.0)})
    assert not close.confident   # objectives 1 nat apart < orientation_log_margin


def test_level_doubts_picks_the_flags_that_make_levels_uncertain():
    r = _result(0.9, -1.0)
    r.flags = ["possible transitional vertebra / off-by-one: the labelling shifted one level "
               "down scores only 0.4 below the chosen one", "merged discs L3-L4 + L4-L5 split",
               "L3 missing between L3-L4 and L2-L3"]
    assert levels.level_doubts(r) == [r.flags[0], r.flags[2]]
    r.flags = ["merged discs L3-L4 + L4-L5 split"]
    assert levels.level_doubts(r) == []
