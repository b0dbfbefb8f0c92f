"""Tests for spoils_tf.geometry.features (the feature table and ``spoils features``)."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest

from spoils_tf.data import layout
from spoils_tf.cli import features as features_cmd
from spoils_tf.geometry import features, measure


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> pathlib.Path:
    synthetic = pytest.importorskip("spoils_tf.data.synthetic")
    out = tmp_path_factory.mktemp("synth")
    synthetic.generate_cohort(out, n_patients=2, n_slices=3, seed=5, size=256, progress=False)
    return out


def test_table_rows_labels_and_volumes(cohort):
    table, volumes, issues = features.build_feature_table(cohort, progress=False)
    discs = pd.read_csv(cohort / layout.DISCS_CSV, dtype={"patient": str})
    assert len(issues) == 0
    # one row per (patient, slice, level) of discs.csv, labels joined unchanged
    assert len(table) == len(discs)
    merged = table.merge(discs, on=["patient", "slice", "level"], suffixes=("", "_csv"))
    assert len(merged) == len(discs)
    assert (merged["pfirrmann"].astype(int) == merged["pfirrmann_csv"]).all()
    assert (merged["grade_class"].astype(str) == merged["grade_class_csv"]).all()
    assert table["fold"].isna().all()  # no folds.json yet
    for c in measure.MEASUREMENT_COLUMNS:
        assert c in table.columns
    # volume = sum of areas x slice spacing (1 mm by default), per (patient, level)
    for (p, lev), g in table.groupby(["patient", "level"]):
        v = volumes[(volumes.patient == p) & (volumes.level == lev)].iloc[0]
        assert v["disc_volume_mm3"] == pytest.approx(g["disc_area_mm2"].sum() * 1.0)
        assert (g["disc_volume_mm3"] == v["disc_volume_mm3"]).all()
        assert v["disc_volume_n_slices"] == len(g)
    # every disc is on the first/last of the 3 slices: flagged as a lower bound
    assert table["reason"].str.contains("volume_touches_edge_slice").all()


def test_fold_column_from_folds_json(cohort, tmp_path):
    folds = pytest.importorskip("spoils_tf.data.folds")
    path = cohort / layout.FOLDS_JSON
    try:
        folds.write_folds(path, {"S0000": 0, "S0001": 1}, k=2, seed=0, stratified_by="none",
                          source="test", overwrite=True)
        table, _, _ = features.build_feature_table(cohort, progress=False)
    finally:
        path.unlink(missing_ok=True)
    assert set(table.loc[table.patient == "S0000", "fold"]) == {0}
    assert set(table.loc[table.patient == "S0001", "fold"]) == {1}


def test_cli_writes_parquet_csv_volumes_and_issues(cohort, tmp_path):
    out = tmp_path / "f" / "features.parquet"
    assert features_cmd.main(["--data", str(cohort), "--out", str(out), "--no-progress"]) == 0
    for p in (out, out.with_suffix(".csv"), tmp_path / "f" / "features_disc_volumes.parquet",
              tmp_path / "f" / "features_disc_volumes.csv", tmp_path / "f" / "features_issues.csv"):
        assert p.is_file(), p
    pq = pd.read_parquet(out)
    csv = pd.read_csv(out.with_suffix(".csv"), dtype={"patient": str})
    assert len(pq) == len(csv) > 0
    assert np.allclose(pq["disc_height_mm"], csv["disc_height_mm"], equal_nan=True)
    assert not list((tmp_path / "f").glob("*.tmp"))
    assert features_cmd.main(["--data", str(cohort), "--out", str(tmp_path / "x.csv")]) == 2


# === Bad inputs, with a fake reader ===
class _Rec:
    def __init__(self, patient, slice_, mask, spacing=None):
        self.patient, self.slice, self.mask = patient, slice_, mask
        self.image = np.full(mask.shape, 100, np.uint8)
        self.pixel_spacing_mm = spacing


def _dataset(tmp_path, names):
    for n in names:
        p = tmp_path / layout.LABELME_DIR / n.split("_slice")[0] / f"{n}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
    (tmp_path / layout.PATIENTS_CSV).write_text(
        "patient,sex,pixel_spacing_row_mm,pixel_spacing_col_mm,slice_thickness_mm,slice_spacing_mm\n"
        "P1,F,0.5,0.5,2.0,2.0\n")
    return tmp_path


def test_bad_files_are_reported_and_batch_continues(tmp_path):
    disc = np.zeros((40, 60), np.int32)
    disc[10:18, 20:40] = 11  # L4-L5 id from labels
    data = _dataset(tmp_path, ["P1_slice1", "P1_slice2", "P1_slice3", "P2_slice1"])

    def reader(path):
        stem = path.stem
        if stem == "P1_slice2":
            raise ValueError("broken json")
        if stem == "P1_slice3":
            return _Rec("P1", 3, np.zeros((40, 60), np.int32))
        if stem == "P2_slice1":
            return _Rec("P2", 1, disc)  # P2 not in patients.csv, no spacing in the file
        return _Rec("P1", 1, disc)

    table, volumes, issues = features.build_feature_table(data, reader=reader, progress=False)
    assert list(table["patient"]) == ["P1"] and list(table["level"]) == ["L4-L5"]
    reasons = dict(zip(issues["file"].map(lambda f: pathlib.Path(f).stem), issues["reason"]))
    assert reasons["P1_slice2"].startswith("unreadable: broken json")
    assert reasons["P1_slice3"] == "no disc label in mask"
    assert "no pixel spacing" in reasons["P2_slice1"]
    # 160 px x 0.25 mm^2 = 40 mm^2, x 2 mm slice spacing = 80 mm^3
    assert table["disc_area_mm2"].iloc[0] == pytest.approx(40.0)
    assert volumes["disc_volume_mm3"].iloc[0] == pytest.approx(80.0)


def test_disc_volumes_hand_numbers_and_reasons():
    t = pd.DataFrame({"patient": ["A", "A", "A", "B"], "slice": [3, 4, 6, 1],
                      "level": ["L4-L5"] * 4, "disc_area_mm2": [100.0, 120.0, 80.0, float("nan")]})
    patients = {"A": {"spacing": (0.5, 0.5), "slice_spacing_mm": 1.5},
                "B": {"spacing": (0.5, 0.5), "slice_spacing_mm": 1.0}}
    v = features.disc_volumes(t, patients, {"A": list(range(0, 10)), "B": [0, 1, 2]})
    a = v[v.patient == "A"].iloc[0]
    assert a["disc_volume_mm3"] == pytest.approx(300.0 * 1.5)
    assert a["reason"] == "volume_slice_gap"  # slice 5 was read but has no L4-L5
    b = v[v.patient == "B"].iloc[0]
    assert math.isnan(b["disc_volume_mm3"]) and "volume_area_missing" in b["reason"]
    v2 = features.disc_volumes(t[t.patient == "A"], {"A": {"spacing": None,
                                                          "slice_spacing_mm": float("nan")}},
                               {"A": [3, 4, 5, 6]})
    assert math.isnan(v2["disc_volume_mm3"].iloc[0])
    assert "volume_slice_spacing_missing" in v2["reason"].iloc[0]
    assert "volume_touches_edge_slice" in v2["reason"].iloc[0]


def test_not_a_dataset_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="labelme"):
        features.build_feature_table(tmp_path, progress=False)
    assert features_cmd.main(["--data", str(tmp_path), "--out", str(tmp_path / "f.parquet")]) == 2
