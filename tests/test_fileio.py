import hashlib
import json
import pathlib

import ml_collections
import numpy as np
import pandas as pd
import pytest

from spoils_tf import fileio


def test_writes_create_parents_and_replace_content(tmp_path):
    p = tmp_path / "a" / "b.txt"
    assert fileio.atomic_write_text(p, "x\ny\n") == p
    assert p.read_bytes() == b"x\ny\n"  # no newline translation
    fileio.atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert [q.name for q in p.parent.iterdir()] == ["b.txt"]  # no temporary file left


def test_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("old")

    def boom(tmp: str) -> None:
        pathlib.Path(tmp).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fileio.atomic_write(p, boom)
    assert p.read_text() == "old"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("use_renameat2", [True, False])
def test_rename_no_replace_refuses_even_an_empty_target(tmp_path, monkeypatch, use_renameat2):
    if not use_renameat2:                # the portable fallback (check, then os.rename)
        monkeypatch.setattr(fileio, "_renameat2", lambda: None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_text("x")
    dst.mkdir()                         # plain os.rename would silently replace this one
    with pytest.raises(FileExistsError):
        fileio.rename_no_replace(src, dst)
    assert (src / "f").is_file() and list(dst.iterdir()) == []
    fileio.rename_no_replace(src, tmp_path / "new")
    assert (tmp_path / "new" / "f").read_text() == "x" and not src.exists()


def test_publish_all_or_none_takes_back_what_it_published(tmp_path, monkeypatch):
    staged = []
    for name in ("a", "b", "c"):
        src = tmp_path / f".tmp-{name}"
        src.mkdir()
        (src / "f").write_text(name)
        staged.append((src, tmp_path / name))
    (tmp_path / "c").mkdir()                      # the last target is taken
    with pytest.raises(FileExistsError):
        fileio.publish_all_or_none(staged)
    # a and b were published, then withdrawn; every staged folder is gone; c untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert list((tmp_path / "c").iterdir()) == []
    staged = []
    for name in ("a", "b"):
        src = tmp_path / f".tmp-{name}"
        src.mkdir()
        (src / "f").write_text(name)
        staged.append((src, tmp_path / name))
    fileio.publish_all_or_none(staged)
    assert (tmp_path / "a" / "f").read_text() == "a" and (tmp_path / "b" / "f").read_text() == "b"
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_sha256_file_matches_the_published_digest_and_reads_in_blocks(tmp_path):
    # FIPS 180-2 test vector: sha256("abc").
    (tmp_path / "abc").write_bytes(b"abc")
    assert fileio.sha256_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    # Larger than one read block: the same digest as hashing the bytes at once.
    data = bytes(range(256)) * 5000  # 1.28 MB > the 1 MiB block
    (tmp_path / "big").write_bytes(data)
    assert fileio.sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_sha256_of_files_is_the_digest_of_the_concatenation_in_order(tmp_path):
    (tmp_path / "a").write_bytes(b"ab")
    (tmp_path / "b").write_bytes(b"c")
    # "ab" + "c" = "abc": the FIPS 180-2 vector above.
    assert fileio.sha256_of_files([tmp_path / "a", tmp_path / "b"]) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert fileio.sha256_of_files([tmp_path / "b", tmp_path / "a"]) == hashlib.sha256(
        b"cab").hexdigest()


def test_atomic_save_keras_leaves_nothing_behind_when_the_save_fails(tmp_path):
    """A save that dies half-way keeps the previous model file and removes its temporary file."""
    target = tmp_path / "model.keras"
    target.write_bytes(b"previous model")

    class HalfSaved:
        def save(self, path):
            assert str(path).endswith(".keras")   # Keras chooses the format by this suffix
            pathlib.Path(path).write_bytes(b"half")
            raise OSError("disk full")

    class Saved:
        def save(self, path):
            pathlib.Path(path).write_bytes(b"new model")

    with pytest.raises(OSError, match="disk full"):
        fileio.atomic_save_keras(HalfSaved(), target)
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    fileio.atomic_save_keras(Saved(), target)
    assert target.read_bytes() == b"new model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_write_json_formats_numpy_values_and_sorts_keys_on_request(tmp_path):
    obj = {"b": np.int64(3), "a": [np.float32(0.5), float("nan")], "c": (1, np.bool_(True))}
    p = fileio.write_json(tmp_path / "x" / "a.json", obj)
    assert p.read_text() == ('{\n  "b": 3,\n  "a": [\n    0.5,\n    NaN\n  ],\n'
                             '  "c": [\n    1,\n    true\n  ]\n}\n')
    fileio.write_json(p, {"b": 1, "a": {"d": 2, "c": 3}}, indent=1, sort_keys=True)
    assert p.read_text() == '{\n "a": {\n  "c": 3,\n  "d": 2\n },\n "b": 1\n}\n'
    with pytest.raises(TypeError, match="not JSON serialisable"):
        fileio.write_json(p, {"x": object()})
    assert json.loads(p.read_text()) == {"a": {"c": 3, "d": 2}, "b": 1}   # old file kept
    assert sorted(q.name for q in p.parent.iterdir()) == ["a.json"]


def test_json_safe_makes_strict_json():
    obj = {1: [np.float64(np.inf), np.nan, np.int32(2)], "p": pathlib.Path("a/b"),
           "t": (np.bool_(False), np.array([1.5, -np.inf])), "s": "x", "n": None}
    safe = fileio.json_safe(obj)
    assert safe == {"1": [None, None, 2], "p": "a/b", "t": [False, [1.5, None]], "s": "x",
                    "n": None}
    assert type(safe["1"][2]) is int and type(safe["t"][0]) is bool
    json.dumps(safe, allow_nan=False)   # would raise on NaN or infinity


def test_save_config_sorts_a_config_dict_and_a_mapping_alike(tmp_path):
    c = ml_collections.ConfigDict({"seed": 1, "data": {"k": 8, "dir": "x"}})
    text_cfg = fileio.save_config(c, tmp_path / "c").read_text()
    text_map = fileio.save_config({"seed": 1, "data": {"k": 8, "dir": "x"}},
                                  tmp_path / "m").read_text()
    assert (tmp_path / "c" / "config.json").is_file()
    assert text_cfg == text_map == ('{\n  "data": {\n    "dir": "x",\n    "k": 8\n  },\n'
                                    '  "seed": 1\n}\n')


def test_write_table_writes_csv_and_parquet(tmp_path):
    df = pd.DataFrame({"patient": ["P1", "P2"], "prob": [0.25, 0.75]})
    fileio.write_table(tmp_path / "t" / "oof", df)
    assert (tmp_path / "t" / "oof.csv").read_text() == "patient,prob\nP1,0.25\nP2,0.75\n"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t" / "oof.parquet"), df)
    fileio.write_table(tmp_path / "t" / "only_csv", df, parquet=False)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["only_csv.csv", "oof.csv",
                                                                "oof.parquet"]
