"""All-or-nothing outputs: ``fileio.atomic_output_dir``, ``spoils predict --out`` and
``spoils segment --out``.

What is checked, each by listing the folders afterwards: a failure half-way (a writer made to
raise after its first file) leaves neither ``--out`` nor a hidden temporary folder; a previous
report is replaced whole (the folder is a new one, no file of the old one survives); a folder
of other files, a file, or a path under a file is refused before any model loads and left
untouched; ``spoils segment`` leaves none of a failed slice's files and goes on with the batch.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import PIL.Image
import pytest

from spoils_tf import fileio
from spoils_tf.serve import segmenter
from spoils_tf.cli import predict as predict_cmd
from spoils_tf.cli import segment as segment_cmd
from spoils_tf.serve import predictor as pr
from spoils_tf.serve import run
from spoils_tf.errors import SpoilsError

SPACING = (1.2, 1.2)     # mm, of the 256x256 synthetic slice


def _entries(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _tree(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _fail_after(monkeypatch, n_ok: int, exc=None):
    """Makes ``fileio.atomic_write_bytes`` write ``n_ok`` files, then raise ``exc``."""
    real = fileio.atomic_write_bytes
    calls = []

    def flaky(path, data):
        calls.append(pathlib.Path(path).name)
        if len(calls) > n_ok:
            raise exc if exc is not None else RuntimeError("killed in the middle")
        return real(path, data)

    monkeypatch.setattr(fileio, "atomic_write_bytes", flaky)
    return calls


# === fileio.atomic_output_dir ===
def test_the_folder_appears_only_when_complete_and_parents_are_created(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with fileio.atomic_output_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.tmp-")
        (tmp / "a.txt").write_text("a")
        assert not target.exists()            # nothing visible until the body ends
    assert _entries(target) == ["a.txt"]
    assert _entries(target.parent) == ["out"]  # no hidden folder left


def test_a_failure_in_the_middle_leaves_nothing_not_even_the_created_parents(tmp_path):
    target = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with fileio.atomic_output_dir(target) as tmp:
            (tmp / "first.txt").write_text("1")
            raise RuntimeError("disk on fire")
    assert _entries(tmp_path) == []


def test_an_os_error_while_writing_becomes_a_spoils_error_naming_the_folder(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(SpoilsError, match="nothing was written") as info:
        with fileio.atomic_output_dir(target):
            raise OSError(28, "No space left on device")
    assert info.value.path == target and info.value.field == "--out"
    assert isinstance(info.value.__cause__, OSError)
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("use_renameat2", [True, False])
def test_a_previous_output_is_replaced_whole(tmp_path, monkeypatch, use_renameat2):
    if not use_renameat2:                 # the portable fallback: rename away, in, remove
        monkeypatch.setattr(fileio, "_renameat2", lambda: None)
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("from the old run")
    (target / "shared.txt").write_text("old")
    old_inode = os.stat(target).st_ino
    with fileio.atomic_output_dir(target, replace_if=lambda p: True) as tmp:
        (tmp / "shared.txt").write_text("new")
    assert _tree(target) == {"shared.txt": b"new"}   # stale.txt did not survive
    assert os.stat(target).st_ino != old_inode        # a new folder, not the old one refilled
    assert _entries(tmp_path) == ["out"]              # the old one is gone, nothing hidden


def test_an_empty_folder_is_filled(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with fileio.atomic_output_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert _entries(target) == ["a.txt"] and _entries(tmp_path) == ["out"]


def test_a_link_to_a_previous_output_replaces_the_folder_it_points_to(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "old.txt").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real)
    with fileio.atomic_output_dir(link, replace_if=lambda p: True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert link.is_symlink() and _tree(link) == {"new.txt": b"new"}
    assert _entries(tmp_path) == ["link", "real"]

def test_a_folder_of_other_files_is_refused_and_left_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(SpoilsError, match=r"thesis\.tex.*refusing to replace it"):
        with fileio.atomic_output_dir(target, replace_if=lambda p: False):
            pytest.fail("the body must not run")
    assert _tree(target) == {"thesis.tex": b"years of work"}
    assert _entries(tmp_path) == ["out"]


def test_a_folder_changed_during_the_run_is_refused_at_the_rename(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(SpoilsError, match="refusing to replace it"):
        with fileio.atomic_output_dir(target, replace_if=lambda p: False) as tmp:
            (tmp / "a.txt").write_text("a")
            target.mkdir()                           # someone else writes there meanwhile
            (target / "theirs.txt").write_text("x")
    assert _tree(target) == {"theirs.txt": b"x"}
    assert _entries(tmp_path) == ["out"]


def test_a_file_or_a_path_under_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(SpoilsError, match="is a file") as info:
        fileio.check_output_dir(afile)
    assert info.value.field == "--out"
    with pytest.raises(SpoilsError, match=r"afile is a file, not a folder"):
        fileio.check_output_dir(afile / "sub" / "out")
    with pytest.raises(SpoilsError, match=r"afile is a file, not a folder"):
        fileio.check_writable_dir(afile / "out")
    assert afile.read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(SpoilsError, match="no write permission"):
            fileio.check_output_dir(ro / "out")
        with pytest.raises(SpoilsError, match="no write permission"):
            fileio.check_writable_dir(ro)
    finally:
        ro.chmod(0o700)


# === spoils predict ===
@pytest.fixture(scope="module")
def inputs(case, tmp_path_factory):
    """(slice PNG, mask PNG) of ``case``."""
    folder = tmp_path_factory.mktemp("inputs")
    PIL.Image.fromarray(case[0]).save(folder / "slice.png")
    PIL.Image.fromarray(case[1].astype(np.uint8)).save(folder / "mask.png")
    return folder / "slice.png", folder / "mask.png"


@pytest.fixture(scope="module")
def predictor():
    """The shipped bundle (segmentation unused: the tests supply the mask)."""
    from spoils_tf import weights
    return pr.Predictor(weights.DEFAULT_BUNDLE)


def _run(inputs, out, predictor):
    png, mask_png = inputs
    return run.run_predict(png, None, out, odi=45, nrs=7, mask_path=mask_png,
                           pixel_spacing=SPACING, predictor=predictor)


def _no_model(monkeypatch):
    """Makes loading any model fail the test."""
    from spoils_tf.serve import bundle

    def boom(*args, **kwargs):
        pytest.fail("a model was loaded before --out was checked")

    monkeypatch.setattr(pr, "Predictor", boom)
    monkeypatch.setattr(bundle, "load_bundle", boom)
    monkeypatch.setattr(segmenter, "Segmenter", boom)


def test_predict_killed_after_its_first_file_leaves_no_out_and_no_temporary_folder(
        inputs, predictor, tmp_path, monkeypatch):
    out = tmp_path / "reports" / "patient"
    calls = _fail_after(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="killed in the middle"):
        _run(inputs, out, predictor)
    assert len(calls) == 2                    # one file written, the second one raised
    assert _entries(tmp_path) == []           # no out, no hidden folder, no created parent


def test_a_failed_run_keeps_the_previous_report_byte_for_byte(inputs, predictor, tmp_path,
                                                              monkeypatch):
    out = tmp_path / "out"
    _run(inputs, out, predictor)
    before = _tree(out)
    _fail_after(monkeypatch, 2, OSError(28, "No space left on device"))
    with pytest.raises(SpoilsError, match="No space left on device"):
        _run(inputs, out, predictor)
    assert _tree(out) == before
    assert _entries(tmp_path) == ["out"]


def test_a_previous_report_is_replaced_whole(inputs, predictor, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in run.REPORT_FILES.values():            # a previous report, hand-made
        (out / name).write_bytes(b"old " + name.encode())
    assert run.is_report_dir(out)
    old_inode = os.stat(out).st_ino
    rep = _run(inputs, out, predictor)
    assert _entries(out) == sorted(run.REPORT_FILES.values())
    assert json.loads((out / "report.json").read_text())["generated_utc"] == rep["generated_utc"]
    assert not any(data.startswith(b"old ") for data in _tree(out).values())
    assert os.stat(out).st_ino != old_inode
    assert _entries(tmp_path) == ["out"]


def test_a_report_folder_with_other_files_is_refused_before_any_model_loads(
        inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "my_notes.txt").write_text("mine")
    assert not run.is_report_dir(out)
    _no_model(monkeypatch)
    png, mask_png = inputs
    code = predict_cmd.main(["--input", str(png), "--out", str(out), "--mask", str(mask_png),
                    "--pixel-spacing", "1.2", "1.2"])
    assert code == predict_cmd.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(out) in err and "--out" in err and "my_notes.txt" in err
    assert _tree(out) == {"report.json": b"{}", "my_notes.txt": b"mine"}


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_predict_out_that_is_a_file_is_refused_before_any_model_loads(
        inputs, tmp_path, monkeypatch, capsys, where):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    out = afile if where == "file" else afile / "out"
    _no_model(monkeypatch)
    png, mask_png = inputs
    code = predict_cmd.main(["--input", str(png), "--out", str(out), "--mask", str(mask_png),
                    "--pixel-spacing", "1.2", "1.2", "--odi", "45", "--nrs", "7"])
    assert code == predict_cmd.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"spoils predict: {out}: field '--out': ")
    assert "is a file" in err
    assert afile.read_text() == "keep" and _entries(tmp_path) == ["afile"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_predict_into_a_read_only_folder_is_refused_before_any_model_loads(
        inputs, tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    _no_model(monkeypatch)
    png, mask_png = inputs
    try:
        code = predict_cmd.main(["--input", str(png), "--out", str(ro / "out"), "--mask", str(mask_png),
                        "--pixel-spacing", "1.2", "1.2"])
    finally:
        ro.chmod(0o700)
    assert code == predict_cmd.EXIT_BAD_INPUT
    assert "no write permission" in capsys.readouterr().err
    assert _entries(ro) == []


# === spoils segment ===
H, W = 96, 80


@pytest.fixture(scope="module")
def seg_model_path(tmp_path_factory):
    """An untrained 2-level U-Net for any input size, saved as ``.keras``."""
    import keras
    from spoils_tf.models.unet import UNet
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("segmodel") / "seg.keras"
    UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu").save(path)
    return path


def _slices(folder: pathlib.Path, n: int) -> pathlib.Path:
    folder.mkdir()
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 256, size=(H, W)).astype(np.uint8)
        PIL.Image.fromarray(img).save(folder / f"s{i}.png")
    return folder


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_segment_out_that_is_a_file_is_refused_before_the_model_loads(tmp_path, monkeypatch,
                                                                      capsys, where):
    folder = _slices(tmp_path / "in", 1)
    afile = tmp_path / "afile"
    afile.write_text("keep")
    out = afile if where == "file" else afile / "out"
    _no_model(monkeypatch)
    assert segment_cmd.main([str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: field '--out'" in err and "is a file" in err
    assert afile.read_text() == "keep"


def test_segment_write_failure_leaves_none_of_that_slices_files_and_the_batch_goes_on(
        seg_model_path, tmp_path, monkeypatch, capsys):
    folder, out = _slices(tmp_path / "in", 2), tmp_path / "out"
    real = fileio.atomic_write_bytes

    def full_disk_for_s0(path, data):        # s0's first file is written, its second fails
        path = pathlib.Path(path)
        if path.name.startswith("s0_") and any(out.glob("s0_*")):
            raise OSError(28, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(fileio, "atomic_write_bytes", full_disk_for_s0)
    rc = segment_cmd.main([str(folder), "--model", str(seg_model_path), "--orientation",
                                 "as_is", "--target-spacing-mm", "1.0", "--pixel-spacing", "1",
                                 "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    assert _entries(out) == ["s1_areas.json", "s1_input.png", "s1_mask.png", "s1_overlay.png"]
    assert "No space left on device" in captured.err and "s0: the output files" in captured.err
    assert "1 of 2 segmented" in captured.out and "1 failed" in captured.out

