"""Every bad input is refused with a SpoilsError naming the file and the field, before work.

One test (or a few) per case of the reliability issue: DICOM without / with short pixel data
or without a usable PixelSpacing; MHA/NIfTI with zero or negative spacing; implausible pixel
spacings wherever they enter; oversized images (refused from the header, before decoding);
truncated or missing models; a decision config with wrong types; patients.csv without its
columns; SPIDER without masks/ or with a Pfirrmann grade of 9; LabelMe vertices far outside
the image; the console's one-line message and exit code; the README's exit-code table.
Every bad file is built here, in ``tmp_path``.
"""

from __future__ import annotations

import json
import pathlib
import re
import struct
import zlib

import numpy as np
import PIL.Image
import pydicom
import pytest

from spoils_tf import cli, errors
from spoils_tf.serve import bundle
from spoils_tf.data import images
from spoils_tf.errors import SpoilsError

SAGITTAL_IOP = (0, 1, 0, 0, 0, -1)   # rows anterior -> posterior, columns head -> foot
SIDE = 80                            # px; above inputs.MIN_IMAGE_SIDE


def _refused(call, *args, **kwargs) -> SpoilsError:
    with pytest.raises(SpoilsError) as info:
        call(*args, **kwargs)
    return info.value


def _assert_names(err: SpoilsError, path: pathlib.Path, *words: str) -> str:
    msg = str(err)
    assert path.name in msg, msg
    for word in words:
        assert word in msg, (word, msg)
    return msg


# === 1. DICOM pixel data and PixelSpacing ===
def _dicom(path: pathlib.Path, **kwargs) -> pathlib.Path:
    from dicom_writer import write_mr_slice
    pixels = (np.arange(SIDE * SIDE).reshape(SIDE, SIDE) % 4000).astype(np.uint16)
    return write_mr_slice(path, pixels, 0, iop=SAGITTAL_IOP, phi={}, **kwargs)


def _edit_dicom(path: pathlib.Path, edit) -> pathlib.Path:
    ds = pydicom.dcmread(str(path))
    edit(ds)
    ds.save_as(str(path))
    return path


def test_dicom_without_pixel_data_names_the_file_and_pixeldata(tmp_path):
    from spoils_tf.data import dicom_io
    path = _edit_dicom(_dicom(tmp_path / "nopix.dcm"), lambda ds: delattr(ds, "PixelData"))
    err = _refused(dicom_io.load_series, path)
    assert err.field == "PixelData (7FE0,0010)"
    _assert_names(err, path, "PixelData", "missing")


def test_dicom_with_short_pixel_data_names_the_file_and_pixeldata(tmp_path):
    from spoils_tf.data import dicom_io

    def cut(ds):
        ds.PixelData = ds.PixelData[:100]     # 100 of 80 x 80 x 2 = 12800 bytes
    path = _edit_dicom(_dicom(tmp_path / "short.dcm"), cut)
    err = _refused(dicom_io.load_series, path)
    _assert_names(err, path, "PixelData", "80x80", "12800")


@pytest.mark.parametrize("spacing, words", [
    (None, ["PixelSpacing", "missing"]),
    ((0.0, 0.5), ["PixelSpacing (0028,0030)", "positive"]),
])
def test_dicom_without_usable_pixel_spacing_names_the_tag(tmp_path, spacing, words):
    from spoils_tf.data import dicom_io
    path = _dicom(tmp_path / "ps.dcm", pixel_spacing=spacing)
    _assert_names(_refused(dicom_io.load_series, path), path, *words)


# === 2. 2-D MHA / NIfTI with zero or negative spacing ===
def _itk_2d(path: pathlib.Path, spacing=(0.5, 0.5)) -> pathlib.Path:
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(np.arange(SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def _mha_with_spacing(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = _itk_2d(tmp_path / "slice.mha")
    data = path.read_bytes()
    assert b"ElementSpacing = 0.5 0.5\n" in data
    path.write_bytes(data.replace(b"ElementSpacing = 0.5 0.5\n",
                                  f"ElementSpacing = {text}\n".encode()))
    return path


def _nifti_with_pixdim(tmp_path: pathlib.Path, value: float) -> pathlib.Path:
    path = _itk_2d(tmp_path / "slice.nii")
    data = bytearray(path.read_bytes())
    assert struct.unpack("<i", data[:4])[0] == 348            # NIfTI-1, little endian
    data[80:84] = struct.pack("<f", value)                     # pixdim[1]: x spacing
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make", [
    lambda d: _mha_with_spacing(d, "0 0.5"),
    lambda d: _mha_with_spacing(d, "-0.5 0.5"),
    lambda d: _nifti_with_pixdim(d, 0.0),      # SimpleITK alone would read this as 1 mm
    lambda d: _nifti_with_pixdim(d, -0.5),
], ids=["mha-zero", "mha-negative", "nifti-zero", "nifti-negative"])
def test_2d_image_with_zero_or_negative_spacing_is_refused_by_every_reader(tmp_path, make):
    from spoils_tf.serve import inputs
    path = make(tmp_path)
    field = "ElementSpacing" if path.suffix == ".mha" else "pixdim"
    for read in (inputs.read_input_slice,
                 lambda p: inputs.read_input(p, pixel_spacing=(0.5, 0.5))):
        _assert_names(_refused(read, path), path, field)


def test_volume_with_zero_spacing_is_refused(tmp_path):
    import SimpleITK as sitk

    from spoils_tf.data import dicom_io
    path = tmp_path / "vol.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, SIDE, SIDE), np.int16)), str(path))
    data = path.read_bytes()
    path.write_bytes(data.replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 0 1"))
    _assert_names(_refused(dicom_io.load_series, path), path, "ElementSpacing")


# === 3. Pixel spacing plausibility, one check for every entry point ===
@pytest.mark.parametrize("spacing", [(0.1, 5.0), (0.469, 0.469), ("0.5", "0.7")])
def test_plausible_spacing_is_accepted(spacing):
    assert images.check_pixel_spacing(spacing, None, "f") == tuple(float(v) for v in spacing)


@pytest.mark.parametrize("spacing, value", [((469, 469), "469 mm"), ((0.5, 0.09), "0.09 mm"),
                                            ((5.01, 0.5), "5.01 mm")])
def test_implausible_spacing_names_the_value_and_unit(spacing, value):
    err = _refused(images.check_pixel_spacing, spacing, "x.csv", "col")
    assert (err.path, err.field) == ("x.csv", "col")
    assert value in str(err) and "0.1-5 mm" in str(err)


def test_implausible_spacing_on_the_command_line(tmp_path):
    from spoils_tf.serve import inputs
    png = tmp_path / "slice.png"
    PIL.Image.fromarray(np.full((SIDE, SIDE), 100, np.uint8)).save(png)
    err = _refused(inputs.read_input, png, pixel_spacing=(469, 469))
    assert err.field == "--pixel-spacing" and "469 mm" in str(err)


def test_implausible_spacing_in_a_dicom_tag(tmp_path):
    from spoils_tf.data import dicom_io
    path = _dicom(tmp_path / "big.dcm", pixel_spacing=(469, 469))
    _assert_names(_refused(dicom_io.load_series, path), path, "PixelSpacing", "469 mm")


def test_implausible_spacing_in_an_mha_header(tmp_path):
    from spoils_tf.serve import inputs
    path = _mha_with_spacing(tmp_path, "469 469")
    _assert_names(_refused(inputs.read_input_slice, path), path, "ElementSpacing", "469 mm")


def test_implausible_spacing_in_a_labelme_file(tmp_path):
    from spoils_tf.data import labelme_io
    path = _labelme(tmp_path, [_rect(1, 1, 1, 4, 4)], spoils={"pixel_spacing_mm": [469, 469]})
    err = _refused(labelme_io.read_labelme, path)
    assert isinstance(err, labelme_io.LabelMeError)
    _assert_names(err, path, "spoils.pixel_spacing_mm", "469 mm")


def test_implausible_spacing_in_patients_csv(tmp_path):
    from spoils_tf.geometry import features
    (tmp_path / "patients.csv").write_text(
        "patient,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,0.5,0.5\nP2,469,469\n")
    err = _refused(features.read_patient_table, tmp_path)
    _assert_names(err, tmp_path / "patients.csv", "line 3", "pixel_spacing_row_mm", "469 mm")


# === 4. Images larger than MAX_IMAGE_PIXELS, refused from the header ===
def _png_header_only(path: pathlib.Path, h: int, w: int) -> pathlib.Path:
    """A PNG whose IHDR says h x w but that holds no pixel data: decoding it would fail, so a
    refusal that names the size proves the size was checked before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)    # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_oversized_png_is_refused_before_decoding(tmp_path):
    from spoils_tf.serve import inputs
    path = _png_header_only(tmp_path / "huge.png", 8000, 8000)
    for read in (images.read_image_gray, inputs.read_input_slice):
        msg = _assert_names(_refused(read, path), path, "8000x8000",
                            str(images.MAX_IMAGE_PIXELS))
        assert "readable" not in msg        # not a decoding failure


def test_oversized_embedded_labelme_image_is_refused(tmp_path):
    import base64

    from spoils_tf.data import labelme_io
    png = _png_header_only(tmp_path / "huge.png", 5000, 5000)
    path = _labelme(tmp_path, [], imageData=base64.b64encode(png.read_bytes()).decode())
    err = _refused(labelme_io.read_labelme, path)
    _assert_names(err, path, "imageData", "5000x5000")


def test_oversized_dicom_is_refused_from_rows_and_columns(tmp_path):
    from spoils_tf.data import dicom_io

    def claim(ds):
        ds.Rows, ds.Columns = 5000, 5000    # the pixel data stays 80 x 80: never decoded
    path = _edit_dicom(_dicom(tmp_path / "huge.dcm"), claim)
    _assert_names(_refused(dicom_io.load_series, path), path, "5000x5000", "Rows")


def test_oversized_mha_is_refused_from_the_header(tmp_path):
    from spoils_tf.serve import inputs
    path = _itk_2d(tmp_path / "huge.mha")
    data = path.read_bytes()
    head, _, _ = data.partition(b"ElementDataFile = LOCAL\n")
    path.write_bytes(head.replace(f"DimSize = {SIDE} {SIDE}".encode(), b"DimSize = 5000 5000")
                     + b"ElementDataFile = LOCAL\n")    # no pixels at all
    _assert_names(_refused(inputs.read_input_slice, path), path, "5000x5000")


def test_mask_of_another_size_is_refused_from_its_header(tmp_path):
    from spoils_tf.serve import inputs
    path = _png_header_only(tmp_path / "mask.png", 8000, 8000)
    err = _refused(inputs.read_mask, path, (SIDE, SIDE))
    assert err.field == "--mask"
    _assert_names(err, path, "8000x8000", f"{SIDE}x{SIDE}")


# === 5. Truncated and missing models ===
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny fixed-spacing U-Net: its ``.keras`` file and its SavedModel version folder."""
    import keras

    from spoils_tf.export import serving
    from spoils_tf.models.unet import UNet
    keras.utils.set_random_seed(0)
    model = UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu")
    root = tmp_path_factory.mktemp("models")
    model.save(root / "seg.keras")
    version = serving.export_saved_model(model, root / "serving", "seg", resize_mode="spacing",
                                         target_spacing_mm=1.0)
    return root / "seg.keras", version


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_keras_file_is_named_as_truncated(tiny_models, tmp_path):
    from spoils_tf.serve import segmenter
    keras_file = tmp_path / "seg.keras"
    keras_file.write_bytes(tiny_models[0].read_bytes())
    _truncate(keras_file)
    err = _refused(segmenter.Segmenter, keras_file, target_spacing_mm=1.0)
    msg = _assert_names(err, keras_file, "truncated")
    assert "not found" not in msg      # Keras alone says "File not found"


def test_truncated_savedmodel_is_named(tiny_models, tmp_path):
    import shutil

    from spoils_tf.serve import segmenter
    version = tmp_path / "1"
    shutil.copytree(tiny_models[1], version)
    for data_file in (version / "variables").glob("variables.data-*"):
        _truncate(data_file)       # TensorFlow raises IndexError for this
    err = _refused(segmenter.Segmenter, version)
    _assert_names(err, version, "SavedModel", "IndexError")


def test_truncated_savedmodel_in_a_bundle_without_checksum(tiny_models, tmp_path):
    import shutil

    from spoils_tf.serve import segmenter
    version = tmp_path / "bundle" / bundle.SEG / "1"
    shutil.copytree(tiny_models[1], version)
    _truncate(version / "saved_model.pb")
    bundle.write_card(version, {"kind": "segmentation", "model_file": ".",
                                "resize_mode": "spacing", "target_spacing_mm": 1.0})
    _assert_names(_refused(segmenter.Segmenter, tmp_path / "bundle"), version, "SavedModel")


def test_missing_model_file_is_named(tmp_path):
    from spoils_tf.serve import segmenter
    missing = tmp_path / "nope.keras"
    err = _refused(segmenter.Segmenter, missing, target_spacing_mm=1.0)
    _assert_names(err, missing, "not found")
    err = _refused(segmenter.load_segmenter, missing)
    _assert_names(err, missing, "not found")


# === 6. Decision config with wrong types ===
@pytest.mark.parametrize("config, field", [
    ({"odi_bands": 5}, "odi_bands"),
    ({"odi_bands": [["low", "fifty", "x"], ["high", 100, "y"]]}, "odi_bands[0][1]"),
    ({"high_nrs_bands": "severe"}, "high_nrs_bands"),
    ({"class_tier": [1, 2]}, "class_tier"),
    ({"rules": [5]}, "rules[0]"),
    ({"no_such_key": 1}, "no_such_key"),
])
def test_decision_config_with_wrong_types_names_file_and_key(tmp_path, config, field):
    from spoils_tf.clinical import rules
    path = tmp_path / "decision.json"
    path.write_text(json.dumps(config))
    err = _refused(rules.DecisionConfig.from_json, path)
    assert err.field == field
    _assert_names(err, path, f"'{field}'")


def test_spoils_decide_with_a_bad_config_exits_2_naming_file_and_key(tmp_path, capsys):
    path = tmp_path / "decision.json"
    path.write_text(json.dumps({"rules": [{"id": 7}]}))
    code = cli.main(["decide", "--class", "L4-L5=4M", "--odi", "45", "--nrs", "7",
                     "--config", str(path)])
    err = capsys.readouterr().err
    assert code == errors.EXIT_BAD_INPUT
    assert "decision.json" in err and "rules[0].id" in err


# === 7. patients.csv without its required columns ===
@pytest.mark.parametrize("header, missing", [
    ("patient,sex", "pixel_spacing_row_mm, pixel_spacing_col_mm"),
    ("id,pixel_spacing_row_mm,pixel_spacing_col_mm", "patient"),
])
def test_patients_csv_without_required_columns_names_them(tmp_path, header, missing):
    from spoils_tf.data import tfds_builder
    from spoils_tf.geometry import features
    path = tmp_path / "patients.csv"
    path.write_text(f"{header}\nP1,0.5,0.5\n")
    for read in (lambda: features.read_patient_table(tmp_path),
                 lambda: tfds_builder.read_patient_spacing(path)):
        err = _refused(read)
        assert err.field == missing
        _assert_names(err, path, missing)


def test_patients_csv_bad_row_names_the_line_and_column(tmp_path):
    from spoils_tf.data import layout
    path = tmp_path / "patients.csv"
    path.write_text("patient,pixel_spacing_row_mm,pixel_spacing_col_mm,slice_spacing_mm\n"
                    "P1,0.5,0.5,3\nP2,,,\nP3,0.5,0.5,abc\n")
    err = _refused(layout.read_patients_csv, path)
    assert err.field == "line 4: slice_spacing_mm"
    path.write_text("patient,pixel_spacing_row_mm,pixel_spacing_col_mm\nP1,0.5,0.5\nP2,,\n")
    rows = layout.read_patients_csv(path)          # empty cells: spacing not known here
    assert rows["P1"]["spacing"] == (0.5, 0.5) and rows["P2"]["spacing"] is None


# === 8. SPIDER conversion: no masks/, a Pfirrmann grade of 9 ===
def test_convert_spider_without_masks_folder_refuses_before_writing(tmp_path):
    from spoils_tf.data import spider
    src, out = tmp_path / "spider", tmp_path / "out"
    (src / "images").mkdir(parents=True)
    PIL.Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(
        src / "images" / "1_t2_SPACE_slice5.png")
    err = _refused(spider.convert_spider, src, out, progress=False)
    assert err.field == "masks/"
    _assert_names(err, src, "masks/")
    assert not out.exists()


def test_pfirrmann_grade_9_names_file_line_and_column(tmp_path):
    from spoils_tf.data import spider
    path = tmp_path / "radiological_gradings.csv"
    columns = ["Patient", "IVD label", spider.PFIRRMANN_COLUMN, *spider.GRADING_COLUMNS]
    good = {c: "0" for c in columns} | {"Patient": "1", "IVD label": "1",
                                        spider.PFIRRMANN_COLUMN: "3"}
    bad = good | {"IVD label": "2", spider.PFIRRMANN_COLUMN: "9"}
    path.write_text("\n".join([",".join(columns)]
                              + [",".join(row[c] for c in columns) for row in (good, bad)]) + "\n")
    err = _refused(spider.read_gradings, path)
    assert err.field == f"line 3: {spider.PFIRRMANN_COLUMN}"
    _assert_names(err, path, "line 3", spider.PFIRRMANN_COLUMN, "9")


# === 9. LabelMe vertices far outside the image ===
def _rect(label_id: int, x0, y0, x1, y1) -> dict:
    from spoils_tf import labels
    return {"label": labels.SEG_CLASSES[label_id].labelme, "points": [[x0, y0], [x1, y1]],
            "group_id": None, "shape_type": "rectangle", "flags": {}}


def _labelme(folder: pathlib.Path, shapes: list, h: int = 20, w: int = 30, **extra
             ) -> pathlib.Path:
    png = folder / "slice.png"
    PIL.Image.fromarray(np.full((h, w), 50, np.uint8)).save(png)
    doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": png.name,
           "imageData": None, "imageHeight": h, "imageWidth": w, **extra}
    path = folder / "slice.json"
    path.write_text(json.dumps(doc))
    return path


def test_labelme_vertex_far_outside_the_image_is_refused(tmp_path):
    from spoils_tf.data import labelme_io
    path = _labelme(tmp_path, [_rect(1, 2, 2, 5, 5), _rect(13, 0, 0, 1e12, 10)])
    err = _refused(labelme_io.read_labelme, path)
    assert isinstance(err, labelme_io.LabelMeError)
    assert err.field == "shapes[1].points[1]"
    _assert_names(err, path, "shapes[1].points[1]", "far outside")


def test_labelme_vertex_a_little_outside_is_clipped(tmp_path):
    from spoils_tf.data import labelme_io
    # corners (-3, -3) and (9, 4) on a 20 x 30 image: rows 0..4 x columns 0..9 = 50 pixels
    record = labelme_io.read_labelme(_labelme(tmp_path, [_rect(1, -3, -3, 9, 4)]))
    assert int((record.mask == 1).sum()) == 50
    assert (record.mask[:5, :10] == 1).all()


# === 10. The console: one line, exit 2, no traceback; bugs still propagate ===
def test_console_prints_one_line_for_a_spoils_error(tmp_path, capsys):
    (tmp_path / "labelme").mkdir()
    (tmp_path / "patients.csv").write_text("patient,sex\nP1,F\n")
    out = tmp_path / "features.parquet"
    code = cli.main(["features", "--data", str(tmp_path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == errors.EXIT_BAD_INPUT
    assert err.startswith("spoils features: ") and "patients.csv" in err
    assert "pixel_spacing_row_mm" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_console_lets_other_exceptions_propagate(monkeypatch):
    from spoils_tf.cli import decide as decide_cli

    def bug(argv):
        raise RuntimeError("a bug")
    monkeypatch.setattr(decide_cli, "main", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["decide"])


def test_every_error_class_is_a_spoils_error():
    from spoils_tf.serve import segmenter
    from spoils_tf.classical import io as cio
    from spoils_tf.data import labelme_io
    from spoils_tf.train import predicted_masks
    for cls in (labelme_io.LabelMeError, bundle.BundleError, cio.ModelIntegrityError,
                cio.UntrustedTypeError, predicted_masks.FoldModelError,
                segmenter.OrientationError):
        assert issubclass(cls, SpoilsError), cls


def test_predict_uses_the_exit_codes_of_errors():
    from spoils_tf.cli import predict
    assert (predict.EXIT_OK, predict.EXIT_BAD_INPUT, predict.EXIT_NO_DISC) == (
        errors.EXIT_OK, errors.EXIT_BAD_INPUT, errors.EXIT_NO_DISC) == (0, 2, 3)


# === 11. README: one exit-code table, the codes of errors.py ===
def test_readme_exit_codes_match_errors_py():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = [int(c) for c in re.findall(r"^\| (\d) \|", section, flags=re.M)]
    assert codes == [errors.EXIT_OK, errors.EXIT_PARTIAL, errors.EXIT_BAD_INPUT,
                     errors.EXIT_NO_DISC]
    assert readme.count("## Exit codes") == 1
