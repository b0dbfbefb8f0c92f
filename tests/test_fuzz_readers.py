"""Fuzzed files through every reader: a clear project error or a valid result, nothing else.

A seeded corpus: each valid fixture (PNG, DICOM, NIfTI, MHA, LabelMe JSON, model card) is
mutated by truncation, random byte flips and header edits (``MUTATIONS``); every mutant goes
through the readers a user's file meets (``READERS``). The property, for every case:

* the reader returns a valid result (a ``uint8`` image of positive size within the size
  limit, a LabelMe record whose mask has the image's shape, a card dict), or
* it raises :class:`spoils_tf.errors.SpoilsError` whose message names the file;

never another exception. A last test sends fuzzed PNGs through ``spoils segment`` and checks
that a refused item leaves no output file. The seeds are fixed, so a failure replays exactly.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import PIL.Image
import pytest

from spoils_tf import errors

CASES_PER_MUTATION = 10   # x 3 mutations x 6 formats x their readers


# === Valid fixtures ===

def _spine_like(h: int = 96, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((h, w)) * 200 + 20).astype(np.uint8)


def _png(folder: pathlib.Path) -> pathlib.Path:
    path = folder / "slice.png"
    PIL.Image.fromarray(_spine_like()).save(path)
    return path


def _dicom(folder: pathlib.Path) -> pathlib.Path:
    from dicom_writer import write_mr_slice
    path = folder / "slice.dcm"
    write_mr_slice(path, _spine_like().astype(np.uint16) * 8, 0,
                   iop=(0, 1, 0, 0, 0, -1), phi={"PatientName": "Fuzz^Case"})
    return path


def _itk(folder: pathlib.Path, suffix: str) -> pathlib.Path:
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(_spine_like())
    img.SetSpacing((0.5, 0.5))
    path = folder / f"slice{suffix}"
    sitk.WriteImage(img, str(path))
    return path


def _labelme(folder: pathlib.Path) -> pathlib.Path:
    png = _png(folder)
    doc = {"version": "5.2.1", "flags": {}, "imagePath": png.name, "imageData": None,
           "imageHeight": 96, "imageWidth": 80,
           "shapes": [{"label": "L4", "points": [[10, 10], [30, 10], [30, 20], [10, 20]],
                       "group_id": None, "shape_type": "polygon", "flags": {}},
                      {"label": "L4-L5", "points": [[10, 22], [30, 22], [30, 26], [10, 26]],
                       "group_id": None, "shape_type": "polygon", "flags": {}}]}
    path = folder / "slice.json"
    path.write_text(json.dumps(doc))
    return path


def _card(folder: pathlib.Path) -> pathlib.Path:
    from spoils_tf import weights
    src = pathlib.Path(weights.DEFAULT_BUNDLE) / "spoils_grade_geometry"
    version = sorted(p for p in src.iterdir() if p.name.isdigit())[-1]
    dst = folder / "spoils_grade_geometry" / "1"
    shutil.copytree(version, dst)
    return next((dst / "assets.extra").glob("*.json"))


FIXTURES = {"png": _png, "dicom": _dicom, "nifti": lambda f: _itk(f, ".nii"),
            "mha": lambda f: _itk(f, ".mha"), "labelme": _labelme, "card": _card}


# === Mutations (seeded) ===

def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, max(1, len(data))))]


def _flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for i in rng.integers(0, len(buf), size=int(rng.integers(1, 9))):
        buf[i] = int(rng.integers(0, 256))
    return bytes(buf)


def _edit_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Text files: one JSON value replaced by an odd one; binary: bytes in the first 352
    (NIfTI header, DICOM preamble/meta, PNG IHDR, MHA text header) overwritten."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        buf = bytearray(data)
        n = min(len(buf), 352)
        for i in rng.integers(0, n, size=int(rng.integers(1, 5))):
            buf[i] = int(rng.choice([0, 1, 0x7F, 0xFF, int(rng.integers(0, 256))]))
        return bytes(buf)
    odd = [None, -1, 0, 1e12, "x", [], {}, [[1e12, -1e12]], True, float("nan")]
    keys = _paths(doc)
    target = keys[int(rng.integers(0, len(keys)))]
    _set(doc, target, odd[int(rng.integers(0, len(odd)))])
    return json.dumps(doc).encode()


def _paths(doc, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out or [()]


def _set(doc, path, value):
    if not path:
        return
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


MUTATIONS = {"truncate": _truncate, "flip": _flip_bytes, "header": _edit_header}


# === Readers and what a valid result is ===

def _check_image(img) -> None:
    from spoils_tf.data import images
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 2
    assert min(img.shape) > 0 and img.size <= images.MAX_IMAGE_PIXELS


def _read_png(path):
    from spoils_tf.data import images
    _check_image(images.read_image_gray(path))


def _read_input_slice(path):
    from spoils_tf.serve import inputs
    img, spacing = inputs.read_input_slice(path)[:2]
    _check_image(img)
    if spacing is not None:
        assert all(0.1 <= float(s) <= 5.0 for s in spacing), spacing


def _read_predict_input(path):
    from spoils_tf.serve import inputs
    slices, spacing, *_ = inputs.read_input(path, pixel_spacing=(0.5, 0.5)
                                             if path.suffix == ".png" else None)
    assert slices
    for s in slices:
        _check_image(s)
    assert all(0.1 <= float(s) <= 5.0 for s in spacing), spacing


def _read_labelme(path):
    from spoils_tf.data import labelme_io
    rec = labelme_io.read_labelme(path)
    assert rec.mask.shape == rec.image.shape and rec.image.dtype == np.uint8


def _read_card(path):
    from spoils_tf.serve import bundle
    card = bundle.read_card(path.parent.parent)
    assert isinstance(card, dict) and card


READERS = {"png": [_read_png, _read_input_slice, _read_predict_input],
           "dicom": [_read_input_slice, _read_predict_input],
           "nifti": [_read_input_slice, _read_predict_input],
           "mha": [_read_input_slice, _read_predict_input],
           "labelme": [_read_labelme],
           "card": [_read_card]}

CASES = [(fmt, mutation, seed) for fmt in FIXTURES for mutation in MUTATIONS
         for seed in range(CASES_PER_MUTATION)]


@pytest.mark.parametrize("fmt,mutation,seed", CASES, ids=[f"{f}-{m}-{s}" for f, m, s in CASES])
def test_mutant_is_read_or_refused_clearly(fmt, mutation, seed, tmp_path):
    path = FIXTURES[fmt](tmp_path)
    for reader in READERS[fmt]:   # the unmutated fixture is valid for every reader
        reader(path)
    rng = np.random.default_rng([seed, list(MUTATIONS).index(mutation), list(FIXTURES).index(fmt)])
    path.write_bytes(MUTATIONS[mutation](path.read_bytes(), rng))
    for reader in READERS[fmt]:
        try:
            reader(path)
        except errors.SpoilsError as e:
            assert path.name in str(e) or str(path.parent) in str(e), (reader.__name__, str(e))


def test_fuzzed_pngs_through_spoils_segment_leave_no_partial_output(tmp_path):
    """Refused items of a batch leave no file behind; the valid ones are written whole."""
    import keras

    from spoils_tf.models.unet import UNet
    from spoils_tf.cli import segment as segment_cmd
    keras.utils.set_random_seed(0)
    model_path = tmp_path / "seg.keras"
    UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu").save(model_path)
    src = _png(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        mutation = list(MUTATIONS.values())[seed % len(MUTATIONS)]
        (inputs / f"m{seed}.png").write_bytes(mutation(src.read_bytes(), rng))
    out = tmp_path / "out"
    rc = segment_cmd.main([str(inputs), "--model", str(model_path), "--orientation",
                                 "as_is", "--target-spacing-mm", "1.0", "--pixel-spacing",
                                 "1.0", "1.0", "--out", str(out)])
    assert rc in (errors.EXIT_OK, errors.EXIT_PARTIAL)
    written = {p.name.split("_mask")[0] for p in out.glob("*_mask.png")} if out.exists() else set()
    for seed in range(8):
        stem = f"m{seed}"
        files = sorted(p.name for p in out.glob(f"{stem}_*")) if out.exists() else []
        if stem in written:   # a written item has its mask readable at the input's size
            mask = np.asarray(PIL.Image.open(out / f"{stem}_mask.png"))
            assert mask.ndim == 2
        else:
            assert files == [], files
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
