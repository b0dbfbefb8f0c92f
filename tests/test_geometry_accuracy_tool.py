"""tools/geometry_accuracy.py: tolerances by hand, a real run, and a wrong measurement caught."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

_TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "geometry_accuracy.py"
_spec = importlib.util.spec_from_file_location("geometry_accuracy", _TOOL)
geometry_accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(geometry_accuracy)


def test_length_tolerance_hand_numbers():
    # 1 pixel (0.6 mm) below 30 mm, 2 % above it.
    assert geometry_accuracy.length_tolerance(10.0, 0.6) == pytest.approx(0.6)
    assert geometry_accuracy.length_tolerance(50.0, 0.6) == pytest.approx(1.0)


def test_dhi_tolerance_hand_numbers():
    truth = {"disc_height_mm": 10.0, "vert_above_height_mm": 20.0, "vert_below_height_mm": 30.0,
             "disc_height_index": 0.4}
    # (0.6 + 0.4 * 0.6) / 25
    assert geometry_accuracy.dhi_tolerance(truth, 0.6) == pytest.approx(0.84 / 25.0)


def test_one_slice_within_tolerance_and_json(tmp_path):
    out = tmp_path / "acc.json"
    assert geometry_accuracy.main(["--seed", "11", "--patients", "1", "--slices", "1",
                                   "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rows"] == 6  # T12-L1 .. L5-S1
    assert result["beyond"] == []
    assert result["per_key"]["disc_height_mm"]["n"] == 6
    assert result["per_key"]["disc_height_mm"]["max_abs_error_px"] <= 1.0


def test_a_wrong_measurement_is_reported(monkeypatch):
    real = geometry_accuracy.measure.measure_slice

    def off_by_two_mm(mask, spacing, image=None):
        rows = real(mask, spacing, image)
        for r in rows:
            r["disc_height_mm"] += 2.0
        return rows

    monkeypatch.setattr(geometry_accuracy.measure, "measure_slice", off_by_two_mm)
    result = geometry_accuracy.evaluate(11, 1, 1)
    assert result["per_key"]["disc_height_mm"]["beyond_tolerance"] == 6
    assert {b["key"] for b in result["beyond"]} >= {"disc_height_mm"}
    assert result["per_key"]["disc_height_mm"]["max_abs_error"] > 1.9


def test_bad_arguments_exit_2(tmp_path):
    assert geometry_accuracy.main(["--patients", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()
