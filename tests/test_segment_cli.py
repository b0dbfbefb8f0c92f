"""``spoils segment``: PNG / DICOM / MHA volume in, mask + overlay + areas out; clear errors."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from spoils_tf import labels
from spoils_tf.cli import segment as segment_cmd
from spoils_tf.serve import segmenter
from spoils_tf.models.unet import UNet


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import keras
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "seg.keras"
    UNet(input_shape=(32, 32, 3), filters=(4, 8)).save(path)
    return path


def _png(path, arr):
    PIL.Image.fromarray(arr).save(path)
    return path


def test_png_in_mask_overlay_areas_out(model_path, tmp_path):
    img = (np.arange(80 * 70) % 256).astype(np.uint8).reshape(80, 70)
    src = _png(tmp_path / "slice.png", img)
    assert segment_cmd.main(["--image", str(src), "--model", str(model_path),
                                   "--out", str(tmp_path / "out")]) == 0
    mask = np.asarray(PIL.Image.open(tmp_path / "out" / "slice_mask.png"))
    overlay = np.asarray(PIL.Image.open(tmp_path / "out" / "slice_overlay.png"))
    assert mask.shape == (80, 70) and overlay.shape == (80, 70, 3)
    assert mask.max() < labels.NUM_SEG_CLASSES
    areas = json.loads((tmp_path / "out" / "slice_areas.json").read_text())
    assert sum(a["pixels"] for a in areas["classes"].values()) == 80 * 70
    assert areas["pixel_spacing_mm"] is None and areas["classes"]["L4-L5"]["area_mm2"] is None
    counts = np.bincount(mask.ravel(), minlength=labels.NUM_SEG_CLASSES)
    assert [areas["classes"][n]["pixels"] for n in labels.SEG_NAMES] == counts.tolist()


def test_dicom_spacing_gives_mm2(model_path, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = 72, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.5, 0.6]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]   # sagittal: rows A->P, columns H->F
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelData = (np.arange(72 * 64) % 4000).astype(np.uint16).tobytes()
    path = tmp_path / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = segmenter.segment_file(path, model_path, tmp_path / "out")
    assert result["shape_hw"] == [72, 64] and result["pixel_spacing_mm"] == [0.5, 0.6]
    for a in result["classes"].values():
        assert a["area_mm2"] == pytest.approx(a["pixels"] * 0.3)


def test_mha_volume_uses_middle_sagittal_slice_superior_up(model_path, tmp_path):
    import SimpleITK as sitk
    nz, ny, nx = 70, 66, 5
    z = np.arange(nz)[:, None, None]
    x = np.arange(nx)[None, None, :]
    # middle slice: value z (superior brighter); every other slice the reverse
    arr = np.where(x == nx // 2, z, nz - z) + 0 * np.arange(ny)[None, :, None]
    arr = arr.astype(np.int16)
    vol = sitk.GetImageFromArray(arr)             # identity direction = LPS
    vol.SetSpacing((3.0, 0.7, 0.8))               # x (L-R), y (A-P), z (S-I) in mm
    path = tmp_path / "vol.mha"
    sitk.WriteImage(vol, str(path))
    result = segmenter.segment_file(path, model_path, tmp_path / "out")
    assert result["shape_hw"] == [nz, ny] and result["pixel_spacing_mm"] == [0.8, 0.7]
    assert "middle sagittal slice 2 of 5" in result["source"]   # (5 - 1) // 2
    seen = np.asarray(PIL.Image.open(tmp_path / "out" / "vol_input.png")).astype(int)
    assert seen[0, 0] == 255 and seen[-1, 0] == 0   # top row = highest z = superior


def test_colour_and_tiny_images_are_refused(model_path, tmp_path, capsys):
    colour = np.zeros((80, 80, 3), np.uint8)
    colour[..., 0] = 200
    src = _png(tmp_path / "colour.png", colour)
    assert segment_cmd.main(["--image", str(src), "--model", str(model_path),
                                   "--out", str(tmp_path / "o")]) == 1
    assert "colour image" in capsys.readouterr().err
    tiny = _png(tmp_path / "tiny.png", np.zeros((20, 40), np.uint8))
    assert segment_cmd.main(["--image", str(tiny), "--model", str(model_path),
                                   "--out", str(tmp_path / "o")]) == 1
    assert "too small" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_savedmodel_gives_the_same_mask_as_keras(model_path, tmp_path):
    import keras
    from spoils_tf.export import serving
    exported = serving.export_saved_model(keras.saving.load_model(model_path), tmp_path / "s", "seg")
    src = _png(tmp_path / "slice.png",
               np.random.default_rng(0).integers(0, 256, (90, 64), dtype=np.uint8))
    a = segmenter.segment_file(src, model_path, tmp_path / "a")
    b = segmenter.segment_file(src, exported, tmp_path / "b")
    assert a["classes"] == b["classes"]
