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
