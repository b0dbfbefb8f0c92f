"""Tests for spoils_tf.geometry.crops (oriented disc crops and ``spoils crops``)."""

from __future__ import annotations

import math
import pathlib

import cv2
import numpy as np
import pandas as pd
import pytest

from spoils_tf import labels
from spoils_tf.cli import crops as crops_cmd
from spoils_tf.geometry import crops, measure

import phantom


def _disc_geometry(tilt: float, spacing=(0.5, 0.5)):
    ph = phantom.spine_phantom(tilt_deg=tilt, spacing=spacing, discs=("L4-L5",),
                               disc_width=36.0, h_ant=9.0, h_post=9.0)
    (res,) = measure.measure_slice_detailed(ph.mask, ph.spacing, ph.image)
    return ph, res


def _angle_and_aspect(binary: np.ndarray) -> tuple[float, float]:
    rr, cc = np.nonzero(binary)
    pts = np.stack([cc, rr], 1).astype(float)
    w, v = np.linalg.eigh(np.cov((pts - pts.mean(0)).T))
    u = v[:, np.argmax(w)]
    ang = math.degrees(math.atan2(-u[1], u[0]))
    ang = (ang + 90) % 180 - 90
    return ang, (cc.max() - cc.min() + 1) / (rr.max() - rr.min() + 1)


@pytest.mark.parametrize("tilt", [-20.0, 0.0, 25.0])
def test_crop_is_horizontal_keeps_aspect_and_is_normalised(tilt):
    ph, res = _disc_geometry(tilt)
    disc_img = (ph.mask == labels.SEG_ID["L4-L5"]).astype(np.uint8) * 200 + 20
    crop = crops.crop_disc([disc_img], res.geometry, size=(64, 128), margin_frac=0.15)
    assert crop.array.shape == (64, 128, 1) and crop.array.dtype == np.float32
    assert crop.array.min() >= 0.0 and crop.array.max() <= 1.0
    ang, aspect = _angle_and_aspect(crop.array[..., 0] > 0.5)
    assert abs(ang) < 1.5
    assert aspect == pytest.approx(36.0 / 9.0, rel=0.1)
    assert crop.tilt_deg == pytest.approx(tilt, abs=0.5)
    # The box centre is the disc's mid-point and its corners are ordered AS, PS, PI, AI.
    r, c = crop.centre_rc
    assert ph.mask[int(round(r)), int(round(c))] == labels.SEG_ID["L4-L5"]
    as_, ps, pi, ai = crop.corners_rc
    assert ps[1] > as_[1] and pi[1] > ai[1]  # posterior corners to the right
    assert ai[0] > as_[0] and pi[0] > ps[0]  # inferior corners lower


def test_padding_is_zero_and_scale_fits_the_box():
    ph, res = _disc_geometry(0.0)
    crop = crops.crop_disc([ph.image], res.geometry, size=(64, 64), margin_frac=0.0)
    # A 36 x 9 mm box in a 64 x 64 output: scale = 36 / 64 mm/px (within the extent accuracy);
    # the rows above and below the box are padding.
    assert crop.mm_per_px == pytest.approx(36.0 / 64.0, rel=0.05)
    assert np.all(crop.array[:10] == 0.0) and np.all(crop.array[-10:] == 0.0)


def test_context_slices_as_channels():
    ph, res = _disc_geometry(10.0)
    a = ph.image
    b = (ph.image // 2).astype(np.uint8)
    crop = crops.crop_disc([b, a, a], res.geometry, size=(32, 64))
    assert crop.array.shape == (32, 64, 3)
    # Normalised with the centre slice's percentiles: the darker neighbour is darker.
    assert crop.array[..., 0].mean() < crop.array[..., 1].mean()
    assert np.allclose(crop.array[..., 1], crop.array[..., 2])
    with pytest.raises(ValueError, match="different shapes"):
        crops.crop_disc([a[:-1], a], res.geometry)


def test_parse_size():
    assert crops.parse_size("64x128") == (64, 128)
    for bad in ("64", "0x5", "ax3"):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH|positive"):
            crops.parse_size(bad)


def test_spoils_crops_on_synthetic_cohort(tmp_path):
    synthetic = pytest.importorskip("spoils_tf.data.synthetic")
    data = tmp_path / "synth"
    synthetic.generate_cohort(data, n_patients=1, n_slices=3, seed=3, size=256, progress=False)
    out = tmp_path / "crops"
    assert crops_cmd.main(["--data", str(data), "--out", str(out), "--size", "32x64",
                       "--context-slices", "1", "--no-progress"]) == 0
    index = pd.read_csv(out / "index.csv", dtype={"patient": str, "context_missing": str})
    discs = pd.read_csv(data / "discs.csv", dtype={"patient": str})
    assert len(index) == len(discs)
    assert index["grade_class"].notna().all()
    row = index.iloc[0]
    arr = np.load(out / row["file_npy"])
    assert arr.shape == (32, 64, 3)
    png = cv2.imread(str(out / row["file_png"]), cv2.IMREAD_UNCHANGED)
    assert png.shape == (32, 64, 3)
    # Slice 0 has no slice -1 neighbour: flagged, not silently replaced.
    first = index[index["slice"] == 0]
    assert (first["context_missing"].astype(str) == "-1").all()
