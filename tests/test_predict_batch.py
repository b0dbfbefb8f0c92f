"""``spoils predict --manifest``: the manifest checks (before any work) and a batch on the tiny
bundle of ``test_predict`` (untrained models: the synthetic slices give no disc, so each
reported input has one summary row with status ``no_disc``)."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
from test_predict import SPACING, _png, models_dir  # noqa: F401  (the module bundle fixture)

from spoils_tf.cli import predict as predict_cmd
from spoils_tf.serve import batch
from spoils_tf.serve import run


def _manifest(path: pathlib.Path, header: list[str], rows: list[list]) -> pathlib.Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _read_csv(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow   # the module bundle fixture: ~15 s to build
def test_two_good_rows_and_a_missing_file_give_two_reports_and_exit_1(models_dir, case,  # noqa: F811
                                                                      tmp_path, capsys):
    (tmp_path / "b").mkdir()
    _png(tmp_path / "a.png", case[0])
    _png(tmp_path / "b" / "a.png", np.ascontiguousarray(case[0][:, ::-1]))
    header = ["path", "pixel_spacing_row_mm", "pixel_spacing_col_mm", "odi", "nrs"]
    manifest = _manifest(tmp_path / "m.csv", header, [
        ["a.png", *SPACING, 45, 7],                   # relative to the manifest's folder
        [str(tmp_path / "b" / "a.png"), *SPACING, "", ""],
        ["missing.png", *SPACING, "", ""]])
    out = tmp_path / "out"
    code = predict_cmd.main(["--manifest", str(manifest), "--models", str(models_dir),
                             "--out", str(out)])
    captured = capsys.readouterr()
    assert code == predict_cmd.EXIT_PARTIAL, captured.err
    # ids: the file stem, made unique
    assert sorted(p.name for p in out.iterdir()) == ["a", "a_2", "failed.csv", "summary.csv"]
    for rid in ("a", "a_2"):
        assert sorted(p.name for p in (out / rid).iterdir()) == sorted(run.REPORT_FILES.values())
    rep_a = json.loads((out / "a" / "report.json").read_text())
    assert rep_a["scores"] == {"odi": 45.0, "nrs": 7}
    summary = _read_csv(out / "summary.csv")
    assert list(summary[0]) == list(batch.SUMMARY_COLUMNS)
    for rid in ("a", "a_2"):
        rep = json.loads((out / rid / "report.json").read_text())
        mine = [s for s in summary if s["id"] == rid]
        assert len(mine) == max(1, len(rep["discs"]))
        assert all(s["status"] == rep["status"] for s in mine)
    failed = _read_csv(out / "failed.csv")
    assert [(f["row"], pathlib.Path(f["path"]).name) for f in failed] == [("3", "missing.png")]
    assert "not found" in failed[0]["reason"]
    assert "row 3 failed" in captured.err and "2 of 3 input(s)" in captured.out


def test_manifest_without_path_column_exits_2_before_any_work(tmp_path, capsys):
    manifest = _manifest(tmp_path / "m.csv", ["file", "odi", "nrs"], [["a.png", 40, 5]])
    # the bundle does not exist: exit 2 comes from the manifest, before any model load
    code = predict_cmd.main(["--manifest", str(manifest), "--models", str(tmp_path / "none"),
                             "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == predict_cmd.EXIT_BAD_INPUT
    assert "m.csv" in err and "'path'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("header, row, field, reason", [
    (["path", "odi", "nrs"], ["a.png", "abc", "5"], "row 1: odi", "must be a number"),
    (["path", "odi", "nrs"], ["a.png", "40", ""], "row 1: nrs", "missing"),
    (["path", "pixel_spacing_row_mm", "pixel_spacing_col_mm"], ["a.png", "469", "0.469"],
     "row 1: pixel_spacing_row_mm, pixel_spacing_col_mm", "469"),
    (["path", "pixel_spacing_row_mm", "pixel_spacing_col_mm"], ["a.png", "0.5", ""],
     "row 1: pixel_spacing_col_mm", "both"),
    (["path", "id"], ["a.png", "../x"], "row 1: id", "folder name"),
    (["path", "pixel_spacing"], ["a.png", "0.5"], "pixel_spacing", "unknown column"),
    (["path"], [""], "row 1: path", "empty"),
])
def test_bad_manifest_cells_name_the_file_row_and_column(tmp_path, header, row, field, reason):
    manifest = _manifest(tmp_path / "m.csv", header, [row])
    with pytest.raises(ValueError) as e:
        batch.read_manifest(manifest)
    assert e.value.path == manifest and e.value.field == field
    assert reason in e.value.reason


def test_ids_default_to_unique_stems_and_given_ids_must_differ(tmp_path):
    manifest = _manifest(tmp_path / "m.csv", ["path", "id"],
                         [["x/scan.png", ""], ["y/scan.png", ""], ["z.nii.gz", "scan_2"]])
    rows = batch.read_manifest(manifest)
    assert [r.id for r in rows] == ["scan", "scan_3", "scan_2"]
    assert rows[0].path == tmp_path / "x" / "scan.png"
    manifest = _manifest(tmp_path / "m.csv", ["path", "id"], [["a.png", "p1"], ["b.png", "p1"]])
    with pytest.raises(ValueError, match="also the id of row 1"):
        batch.read_manifest(manifest)


def test_manifest_and_input_are_exclusive_and_scores_come_from_the_manifest(tmp_path, capsys):
    manifest = _manifest(tmp_path / "m.csv", ["path"], [["a.png"]])
    with pytest.raises(SystemExit):
        predict_cmd.main(["--manifest", str(manifest), "--input", "a.png", "--out", "o"])
    code = predict_cmd.main(["--manifest", str(manifest), "--odi", "40", "--out",
                             str(tmp_path / "out")])
    assert code == predict_cmd.EXIT_BAD_INPUT
    assert "--odi: not with --manifest" in capsys.readouterr().err


def test_summary_rows_one_per_disc_or_one_without_a_level():
    rep = {"status": "ok", "recommendation": None, "recommendation_note": "withheld: why",
           "discs": [{"level": "L4-L5", "predicted_class": "5H", "predicted_probability": 0.4},
                     {"level": "L5-S1", "predicted_class": None,
                      "predicted_probability": None}]}
    rows = batch.summary_rows("p1", rep)
    assert [(r["level"], r["predicted_class"], r["probability"]) for r in rows] == [
        ("L4-L5", "5H", 0.4), ("L5-S1", "", "")]
    assert all(r["recommendation"] == "" and r["recommendation_note"] == "withheld: why"
               for r in rows)
    none = batch.summary_rows("p2", {"status": "no_disc", "discs": [],
                                     "recommendation_note": "no disc"})
    assert len(none) == 1 and none[0]["level"] == "" and none[0]["status"] == "no_disc"
