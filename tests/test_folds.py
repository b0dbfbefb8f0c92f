"""Tests for spoils_tf.data.folds: grouping, stratification, determinism, the file contract."""

from __future__ import annotations

import collections
import json

import pytest

from spoils_tf.cli import folds as folds_cmd
from spoils_tf.data import folds as folds_lib


def _sizes(assignment: dict[str, int], k: int) -> list[int]:
    c = collections.Counter(assignment.values())
    return [c[f] for f in range(k)]


def test_every_patient_once_and_balanced_sizes():
    patients = [f"p{i}" for i in range(10)]
    a = folds_lib.make_folds(patients + patients[:4], None, k=3, seed=0)  # duplicates merged
    assert sorted(a) == sorted(patients)
    assert sorted(_sizes(a, 3)) == [3, 3, 4]


def test_deterministic_and_independent_of_input_order():
    patients = [f"p{i:02d}" for i in range(20)]
    grades = {p: 1 + i % 5 for i, p in enumerate(patients)}
    a = folds_lib.make_folds(patients, grades, k=4, seed=3)
    assert folds_lib.make_folds(list(reversed(patients)), grades, k=4, seed=3) == a
    assert folds_lib.make_folds(patients, grades, k=4, seed=4) != a


def test_stratification_spreads_every_grade():
    # 4 patients of grade 2, 4 of grade 5, 2 ungraded, k = 4:
    # each fold gets exactly one grade-2 and one grade-5 patient; the 2 ungraded go to 2 folds.
    grades = {"a1": 2, "a2": 2, "a3": 2, "a4": 2, "b1": 5, "b2": 5, "b3": 5, "b4": 5}
    patients = list(grades) + ["u1", "u2"]
    for seed in range(5):
        a = folds_lib.make_folds(patients, grades, k=4, seed=seed)
        for fold in range(4):
            members = [p for p, f in a.items() if f == fold]
            assert sum(grades.get(p) == 2 for p in members) == 1
            assert sum(grades.get(p) == 5 for p in members) == 1
        assert a["u1"] != a["u2"]
        assert sorted(_sizes(a, 4)) == [2, 2, 3, 3]


def test_strata_of_uneven_sizes_still_give_balanced_folds():
    # 3 x grade 3, 4 x grade 4 over k = 3: per-grade counts differ by <= 1, fold sizes 3,2,2
    grades = {"c1": 3, "c2": 3, "c3": 3, "d1": 4, "d2": 4, "d3": 4, "d4": 4}
    a = folds_lib.make_folds(list(grades), grades, k=3, seed=0)
    assert sorted(_sizes(a, 3)) == [2, 2, 3]
    assert sorted(collections.Counter(a[p] for p in ("c1", "c2", "c3")).values()) == [1, 1, 1]
    assert sorted(collections.Counter(a[p] for p in ("d1", "d2", "d3", "d4")).values()) == [1, 1, 2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="k=5 folds but only 4 patients"):
        folds_lib.make_folds(["a", "b", "c", "d"], None, k=5)
    with pytest.raises(ValueError, match="k must be >= 2"):
        folds_lib.make_folds(["a", "b"], None, k=1)
    with pytest.raises(ValueError, match="patient 'b'.*worst grade 7"):
        folds_lib.make_folds(["a", "b"], {"b": 7}, k=2)


def test_write_load_and_refuse_a_different_file(tmp_path):
    path = tmp_path / "folds.json"
    a = folds_lib.make_folds([f"p{i}" for i in range(6)], None, k=3, seed=0)
    kw = dict(k=3, seed=0, stratified_by="none", source="test")
    folds_lib.write_folds(path, a, **kw)
    raw = json.loads(path.read_text())
    assert (raw["version"], raw["k"], raw["folds"]) == (1, 3, a)
    f = folds_lib.load_folds(path)
    train, test = f.split(1)
    assert len(train) == 4 and len(test) == 2 and not set(train) & set(test)
    assert set(train) | set(test) == set(f.patients) and f.fold_of(test[0]) == 1
    with pytest.raises(KeyError, match="'zz'"):
        f.fold_of("zz")

    text = path.read_text()
    folds_lib.write_folds(path, dict(a), **dict(kw, seed=99))  # same assignment: no-op
    assert path.read_text() == text
    b = dict(a)
    b["p0"] = (a["p0"] + 1) % 3
    with pytest.raises(FileExistsError, match="1 patients differ"):
        folds_lib.write_folds(path, b, **kw)
    assert path.read_text() == text
    folds_lib.write_folds(path, b, **kw, overwrite=True)
    assert folds_lib.load_folds(path).fold_of("p0") == b["p0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folds.json"]  # no temp files left


@pytest.mark.parametrize("payload,field", [
    ({"version": 1, "k": 2, "folds": {"a": 0, "b": 2}}, "folds.b"),
    ({"version": 1, "k": 3, "folds": {"a": 0, "b": 1}}, "folds"),      # fold 2 empty
    ({"version": 2, "k": 2, "folds": {"a": 0, "b": 1}}, "version"),
    ({"version": 1, "k": "2", "folds": {"a": 0, "b": 1}}, "k"),
])
def test_load_validates(tmp_path, payload, field):
    path = tmp_path / "f.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=rf"f.json: field '{field}'"):
        folds_lib.load_folds(path)


def test_main_on_a_dataset_dir(tmp_path, capsys):
    # 5 patients, patient i has i+1 slices; grades from discs.csv (worst per patient)
    for i in range(5):
        for s in range(i + 1):
            p = tmp_path / "labelme" / f"P{i}" / f"P{i}_slice{s}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("{}")  # folds only parse paths
    (tmp_path / "discs.csv").write_text(
        "patient,slice,level,ivd_label,pfirrmann,severity,grade_class\n"
        "P0,0,L4-L5,2,2,L,2L\nP0,0,L5-S1,1,4,M,4M\nP1,0,L4-L5,2,4,,\n"
        "P2,0,L4-L5,2,,,\nP3,0,L4-L5,2,x,,\n")
    assert folds_cmd.main(["--data", str(tmp_path), "--k", "2"]) == 0
    out = capsys.readouterr()
    assert "15 slices" in out.out and "stratified by worst_pfirrmann" in out.out
    assert "discs.csv line 6: pfirrmann 'x'" in out.err  # header = line 1
    f = folds_lib.load_folds(tmp_path / "folds.json")
    assert f.patients == ["P0", "P1", "P2", "P3", "P4"] and f.k == 2
    assert f.fold_of("P0") != f.fold_of("P1")  # the two grade-4 patients are split
    last = out.out.strip().splitlines()[-1].split()
    assert last[:3] == ["all", "5", "15"] and last[3:] == ["0", "0", "0", "2", "0", "3"]
    # rerun: same folds -> 0; different k without --overwrite -> refused, file kept
    assert folds_cmd.main(["--data", str(tmp_path), "--k", "2"]) == 0
    assert folds_cmd.main(["--data", str(tmp_path), "--k", "3"]) == 1
    assert "different assignment" in capsys.readouterr().err
    assert folds_lib.load_folds(tmp_path / "folds.json").k == 2
    assert folds_cmd.main(["--data", str(tmp_path), "--k", "3", "--overwrite"]) == 0
    assert folds_lib.load_folds(tmp_path / "folds.json").k == 3
