import pathlib

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
