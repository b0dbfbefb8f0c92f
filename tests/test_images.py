"""Tests for spoils_tf.data.images: every input layout becomes uint8 [H, W]."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from spoils_tf.data import images


def test_uint8_gray_is_kept_unchanged():
    a = np.array([[0, 7], [200, 255]], np.uint8)
    out = images.to_uint8_gray(a, "a.png")
    assert out.dtype == np.uint8 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, a)


def test_uint16_is_min_max_rescaled():
    # (x - 0) * 255 / 2000: 1000 -> 127.5 -> 128 (round half to even), 2000 -> 255
    a = np.array([[0, 1000, 2000]], np.uint16)
    np.testing.assert_array_equal(images.to_uint8_gray(a, "a"), [[0, 128, 255]])


def test_uint16_min_is_subtracted():
    # 100 -> 0, 200 -> 127.5 -> 128, 300 -> 255: a 16-bit image with a dark offset
    a = np.array([[100, 200, 300]], np.uint16)
    np.testing.assert_array_equal(images.to_uint8_gray(a, "a"), [[0, 128, 255]])


def test_float_is_min_max_rescaled():
    a = np.array([[-1.0, 0.0], [0.5, 1.0]], np.float32)
    # (x + 1) / 2 * 255: 0, 127.5 -> 128, 191.25 -> 191, 255
    np.testing.assert_array_equal(images.to_uint8_gray(a, "a"), [[0, 128], [191, 255]])


def test_constant_16bit_image_becomes_zeros():
    out = images.to_uint8_gray(np.full((3, 4), 500, np.uint16), "a")
    assert out.shape == (3, 4) and out.max() == 0


def test_single_channel_axis_is_squeezed():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    np.testing.assert_array_equal(images.to_uint8_gray(a, "a"), a[:, :, 0])


def test_rgb_greyscale_and_rgba_with_any_alpha():
    g = np.array([[10, 20], [30, 40]], np.uint8)
    rgb = np.stack([g, g, g], axis=2)
    rgba = np.concatenate([rgb, np.array([[[0], [255]], [[17], [3]]], np.uint8)], axis=2)
    np.testing.assert_array_equal(images.to_uint8_gray(rgb, "a"), g)
    np.testing.assert_array_equal(images.to_uint8_gray(rgba, "a"), g)


def test_rgb_within_tolerance_takes_channel_mean():
    # R, G, B = 10, 11, 12: differ by 2 grey levels (the tolerance) -> mean 11
    a = np.zeros((2, 2, 3), np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = 10, 11, 12
    a[1, 1] = (255, 255, 255)  # value range 245 -> tolerance 245 * 2/255 = 1.9 < 2
    with pytest.raises(ValueError):
        images.to_uint8_gray(a, "a")
    a[1, 1] = (0, 0, 0)  # value range 12 -> tolerance max(12, 1) * 2/255 < 2: still colour
    with pytest.raises(ValueError):
        images.to_uint8_gray(a, "a")
    b = np.zeros((1, 2, 3), np.uint8)
    b[0, 0] = (100, 101, 100)
    b[0, 1] = (0, 0, 0)  # range 101 -> tolerance 0.79; a difference of 1 level is colour
    with pytest.raises(ValueError):
        images.to_uint8_gray(b, "a")
    c = np.zeros((1, 2, 3), np.uint8)
    c[0, 0] = (254, 255, 254)  # range 255 -> tolerance 2: accepted, mean 254.33 -> 254
    np.testing.assert_array_equal(images.to_uint8_gray(c, "a"), [[254, 0]])


def test_colour_image_is_refused_naming_the_source():
    a = np.zeros((4, 4, 3), np.uint8)
    a[..., 0] = 200  # red overlay
    with pytest.raises(ValueError, match="overlay.png"):
        images.to_uint8_gray(a, "overlay.png")


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), (2, 2, 5), (0, 3)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="x.png"):
        images.to_uint8_gray(np.zeros(shape, np.uint8), "x.png")


def test_nan_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        images.to_uint8_gray(np.array([[0.0, np.nan]]), "x")


def test_read_16bit_png_keeps_depth(tmp_path):
    a = np.array([[0, 1000, 2000], [2000, 1000, 0]], np.uint16)
    path = tmp_path / "a16.png"
    PIL.Image.fromarray(a).save(path)
    out = images.read_image_gray(path)
    np.testing.assert_array_equal(out, [[0, 128, 255], [255, 128, 0]])


def test_read_16bit_tiff(tmp_path):
    a = np.array([[0, 3000], [6000, 0]], np.uint16)
    path = tmp_path / "a.tif"
    PIL.Image.fromarray(a).save(path)
    # 3000 / 6000 * 255 = 127.5 -> 128
    np.testing.assert_array_equal(images.read_image_gray(path), [[0, 128], [255, 0]])


def test_read_rgba_png_with_equal_channels(tmp_path):
    g = np.array([[0, 50], [100, 250]], np.uint8)
    rgba = np.stack([g, g, g, np.full_like(g, 255)], axis=2)
    path = tmp_path / "rgba.png"
    PIL.Image.fromarray(rgba).save(path)
    np.testing.assert_array_equal(images.read_image_gray(path), g)


def test_read_jpeg_grey(tmp_path):
    g = np.full((16, 16), 120, np.uint8)
    path = tmp_path / "a.jpg"
    PIL.Image.fromarray(g).save(path, quality=95)
    out = images.read_image_gray(path)
    assert out.shape == (16, 16) and abs(int(out.mean()) - 120) <= 1


def test_read_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        images.read_image_gray(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        images.read_image_gray(bad)


def test_png_encoding_round_trip():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(images.decode_image_gray(images.encode_png(g), "mem"), g)
