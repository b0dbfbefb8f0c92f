"""Tests for spoils_tf.data.labelme_io: reading, writing, round trips and every bad input."""

from __future__ import annotations

import base64
import json
import pathlib

import cv2
import numpy as np
import PIL.Image
import pytest

from spoils_tf import labels
from spoils_tf.data import images, labelme_io
from spoils_tf.data.labelme_io import LabelMeError


# === Helpers ===
def _write_json(path: pathlib.Path, shapes: list[dict], *, image_path: str = "img.png",
                h: int = 10, w: int = 12, image_data: str | None = None, **extra) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path,
               "imageData": image_data, "imageHeight": h, "imageWidth": w, **extra}
    path.write_text(json.dumps(payload))
    return path


def _grey_png(path: pathlib.Path, h: int = 10, w: int = 12) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)
    PIL.Image.fromarray(img).save(path)
    return img


def _poly(label: str, points, shape_type: str = "polygon") -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "",
            "shape_type": shape_type, "flags": {}, "mask": None}


def _rect(label: str, x0, y0, x1, y1) -> dict:
    return _poly(label, [[x0, y0], [x1, y1]], "rectangle")


@pytest.fixture
def slice_dir(tmp_path):
    """DIR/labelme/p1/ with a 10x12 grey image img.png; returns (DIR, patient dir, image)."""
    pdir = tmp_path / "labelme" / "p1"
    img = _grey_png(pdir / "img.png")
    return tmp_path, pdir, img


def _boundary(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose 3x3 neighbourhood holds more than one class."""
    m = mask.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    return cv2.dilate(m, k) != cv2.erode(m, k)


def _all_classes_mask() -> np.ndarray:
    """int32 [64, 80] with all 14 classes: vertebrae/discs in a column, the canal next to
    them with a disc-coloured island and a background hole inside, and a free-floating disc."""
    m = np.zeros((64, 80), np.int32)
    y = 2
    for name in ("T12-L1", "L1", "L1-L2", "L2", "L2-L3", "L3", "L3-L4", "L4", "L4-L5", "L5", "L5-S1", "S1"):
        tall = 6 if name in labels.VERTEBRA_NAMES else 3
        m[y:y + tall, 10:30] = labels.SEG_ID[name]
        y += tall
    m[2:60, 32:44] = labels.CANAL_ID                       # canal next to the column
    m[20:30, 35:41] = 0                                    # a hole in the canal ...
    m[23:27, 37:39] = labels.SEG_ID["L4-L5"]               # ... with a disc inside the hole
    cv2.ellipse(m, (62, 30), (10, 6), 30.0, 0, 360, labels.SEG_ID["L2-L3"], -1)  # a disc in nothing
    m[5, 70] = labels.SEG_ID["L1"]                         # a single pixel
    return m


# === Reading: the shapes ===
def test_painting_follows_file_order_and_labels_are_case_insensitive(slice_dir):
    _, pdir, img = slice_dir
    path = _write_json(pdir / "p1_slice4.json", [_rect("l4", 0, 0, 5, 3), _rect("CANAL", 4, 0, 7, 1)],
                       image_path="img.png")
    rec = labelme_io.read_labelme(path)
    np.testing.assert_array_equal(rec.image, img)
    assert rec.mask.dtype == np.int32 and rec.mask.shape == (10, 12)
    # L4 rectangle: x 0..5, y 0..3 = 24 px; the canal (x 4..7, y 0..1 = 8 px) paints over 4 of them
    assert (rec.mask == labels.SEG_ID["L4"]).sum() == 24 - 4
    assert (rec.mask == labels.CANAL_ID).sum() == 8
    assert (rec.patient, rec.slice, rec.pixel_spacing_mm) == ("p1", 4, None)
    assert rec.meta["patient_source"] == "stem"


def test_aliases_background_holes_and_circles(slice_dir):
    _, pdir, _ = slice_dir
    shapes = [_rect("Spinal Canal", 0, 0, 4, 4), _rect("_background_", 1, 1, 3, 3),
              _poly("L5-S1", [[8, 5], [9, 5]], "circle")]
    rec = labelme_io.read_labelme(_write_json(pdir / "x.json", shapes))
    assert (rec.mask == labels.CANAL_ID).sum() == 25 - 9  # 5x5 square with a 3x3 hole
    # circle of radius 1 around (8, 5): PIL's ellipse covers the centre and its 4 neighbours
    assert (rec.mask == labels.SEG_ID["L5-S1"]).sum() == 5
    assert rec.mask[5, 8] == labels.SEG_ID["L5-S1"]


def test_mask_shape_type_and_pickling_of_errors(slice_dir):
    import io
    import pickle

    _, pdir, _ = slice_dir
    bits = np.array([[1, 1, 0], [0, 1, 1]], np.uint8)  # 2 rows x 3 cols, 4 set
    buf = io.BytesIO()
    PIL.Image.fromarray(bits * 255).save(buf, format="PNG")
    shape = _poly("L2", [[5, 3], [7, 4]], "mask")  # box x 5..7, y 3..4
    shape["mask"] = base64.b64encode(buf.getvalue()).decode()
    rec = labelme_io.read_labelme(_write_json(pdir / "m.json", [shape]))
    assert sorted(map(tuple, np.argwhere(rec.mask == labels.SEG_ID["L2"]).tolist())) == [
        (3, 5), (3, 6), (4, 6), (4, 7)]
    err = pickle.loads(pickle.dumps(LabelMeError("a.json", "shapes[0]", "bad")))
    assert (err.path, err.field, str(err)) == ("a.json", "shapes[0]", "a.json: field 'shapes[0]': bad")


def test_unknown_label(slice_dir):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "p1_slice1.json", [_rect("L4", 0, 0, 2, 2), _rect("L6", 0, 0, 2, 2)])
    with pytest.raises(LabelMeError) as e:
        labelme_io.read_labelme(path)
    assert e.value.field == "shapes[1].label" and e.value.path == path
    assert "p1_slice1.json" in str(e.value) and "shapes[1].label" in str(e.value)
    assert "'L6'" in str(e.value) and "L5-S1" in str(e.value)


def test_polygon_with_two_points(slice_dir):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "two.json", [_poly("L3", [[0, 0], [3, 3]])])
    with pytest.raises(LabelMeError, match=r"two.json: field 'shapes\[0\].points'.*at least 3"):
        labelme_io.read_labelme(path)


def test_rectangle_with_three_points(slice_dir):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "rect.json", [_poly("L3", [[0, 0], [3, 3], [1, 1]], "rectangle")])
    with pytest.raises(LabelMeError, match=r"rect.json: field 'shapes\[0\].points'.*expected 2"):
        labelme_io.read_labelme(path)


@pytest.mark.parametrize("shape_type,points", [("line", [[0, 0], [3, 3]]), ("point", [[1, 1]]),
                                                ("linestrip", [[0, 0], [3, 3], [5, 1]])])
def test_shapes_without_area_are_errors(slice_dir, shape_type, points):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "line.json", [_rect("L1", 0, 0, 2, 2), _poly("L3", points, shape_type)])
    with pytest.raises(LabelMeError, match=r"line.json: field 'shapes\[1\].shape_type'.*no area"):
        labelme_io.read_labelme(path)


def test_malformed_point(slice_dir):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "pt.json", [_poly("L3", [[0, 0], [3, "a"], [1, 1]])])
    with pytest.raises(LabelMeError, match=r"pt.json: field 'shapes\[0\].points\[1\]'"):
        labelme_io.read_labelme(path)


# === Reading: the file and the image ===
def test_invalid_json(slice_dir):
    _, pdir, _ = slice_dir
    path = pdir / "broken.json"
    path.write_text('{"shapes": [')
    with pytest.raises(LabelMeError, match=r"broken.json: field 'json': invalid JSON"):
        labelme_io.read_labelme(path)


def test_missing_image_file(slice_dir):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "noimg.json", [], image_path="gone.png")
    with pytest.raises(LabelMeError, match=r"noimg.json: field 'imagePath'.*gone.png not found"):
        labelme_io.read_labelme(path)


def test_image_path_escaping_the_root(slice_dir):
    root, pdir, _ = slice_dir
    _grey_png(root.parent / "outside.png")  # exists, but outside DIR
    path = _write_json(pdir / "esc.json", [], image_path="../../../outside.png")
    with pytest.raises(LabelMeError, match=r"esc.json: field 'imagePath'.*outside the dataset root"):
        labelme_io.read_labelme(path)
    # an explicit, wider root allows it
    assert labelme_io.read_labelme(path, root=root.parent).image.shape == (10, 12)


@pytest.mark.parametrize("field,h,w", [("imageHeight", 11, 12), ("imageWidth", 10, 13)])
def test_image_size_mismatch(slice_dir, field, h, w):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "size.json", [], h=h, w=w)
    with pytest.raises(LabelMeError, match=rf"size.json: field '{field}'.*10x12"):
        labelme_io.read_labelme(path)


def test_bad_image_data(slice_dir):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "b64.json", [], image_data=base64.b64encode(b"not an image").decode())
    with pytest.raises(LabelMeError, match=r"b64.json: field 'imageData'"):
        labelme_io.read_labelme(path)


def test_colour_image_is_refused(slice_dir):
    _, pdir, _ = slice_dir
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 255
    PIL.Image.fromarray(rgb).save(pdir / "green.png")
    path = _write_json(pdir / "col.json", [], image_path="green.png")
    with pytest.raises(LabelMeError, match=r"col.json: field 'imagePath'.*colour image"):
        labelme_io.read_labelme(path)


def test_bad_spoils_metadata(slice_dir):
    _, pdir, _ = slice_dir
    path = _write_json(pdir / "meta.json", [], spoils={"patient": "p", "slice": 1, "pixel_spacing_mm": [0.5, -1]})
    with pytest.raises(LabelMeError, match=r"meta.json: field 'spoils.pixel_spacing_mm'"):
        labelme_io.read_labelme(path)


@pytest.mark.parametrize("kind", ["rgba", "uint16", "rgb_grey"])
def test_image_layouts(slice_dir, kind):
    _, pdir, _ = slice_dir
    g = np.array([[0, 1000], [2000, 1000]], np.uint16)
    expected = np.array([[0, 128], [255, 128]], np.uint8)  # 1000/2000*255 = 127.5 -> 128
    if kind == "uint16":
        arr = g
    else:
        g8 = expected
        arr = np.stack([g8, g8, g8] + ([np.array([[255, 0], [9, 255]], np.uint8)] if kind == "rgba" else []), axis=2)
    PIL.Image.fromarray(arr).save(pdir / f"{kind}.png")
    rec = labelme_io.read_labelme(_write_json(pdir / f"{kind}.json", [], image_path=f"{kind}.png", h=2, w=2))
    assert rec.image.dtype == np.uint8
    np.testing.assert_array_equal(rec.image, expected)


def test_patient_and_slice_sources(slice_dir):
    _, pdir, _ = slice_dir
    spoils = {"patient": "P7", "slice": 12, "pixel_spacing_mm": [0.6, 0.5]}
    rec = labelme_io.read_labelme(_write_json(pdir / "p1_slice3.json", [], spoils=spoils))
    assert (rec.patient, rec.slice, rec.pixel_spacing_mm) == ("P7", 12, (0.6, 0.5))
    rec = labelme_io.read_labelme(_write_json(pdir / "p1_slice3.json", []))
    assert (rec.patient, rec.slice, rec.meta["patient_source"]) == ("p1", 3, "stem")
    rec = labelme_io.read_labelme(_write_json(pdir / "annotation.json", []))
    assert (rec.patient, rec.slice, rec.meta["patient_source"]) == ("p1", 0, "directory")


# === Writing and round trips ===
def test_round_trip_all_14_classes_with_nesting(tmp_path):
    mask = _all_classes_mask()
    assert set(np.unique(mask)) == set(range(labels.NUM_SEG_CLASSES))
    image = (np.arange(mask.size).reshape(mask.shape) % 256).astype(np.uint8)
    path = tmp_path / "labelme" / "p9" / "p9_slice21.json"
    assert labelme_io.write_labelme(path, image, mask, pixel_spacing_mm=(0.5, 0.75)) == path
    raw = json.loads(path.read_text())
    assert raw["version"].startswith("5.") and raw["imagePath"] == "p9_slice21.png"
    assert raw["imageData"] is None and (raw["imageHeight"], raw["imageWidth"]) == (64, 80)
    assert raw["spoils"] == {"patient": "p9", "slice": 21, "pixel_spacing_mm": [0.5, 0.75]}
    # the background hole in the canal is written as a _background_ polygon
    assert sum(s["label"] == "_background_" for s in raw["shapes"]) == 1
    rec = labelme_io.read_labelme(path)
    np.testing.assert_array_equal(rec.image, image)
    diff = rec.mask != mask
    assert diff.mean() < 0.01
    assert not (diff & ~_boundary(mask)).any()
    assert (rec.patient, rec.slice, rec.pixel_spacing_mm) == ("p9", 21, (0.5, 0.75))
    assert sorted(p.name for p in path.parent.iterdir()) == ["p9_slice21.json", "p9_slice21.png"]


def test_round_trip_of_random_labels_is_within_one_pixel_of_boundaries():
    # worst case: every pixel a random class (hundreds of 1-3 px components, holes in holes)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, labels.NUM_SEG_CLASSES, (30, 30)).astype(np.int32)
    back = labelme_io.shapes_to_mask(labelme_io.mask_to_shapes(mask), mask.shape, "mem")
    diff = back != mask
    assert diff.mean() < 0.05
    assert not (diff & ~_boundary(mask)).any()


def test_ring_with_background_hole_and_island():
    # L1 ring (7x7 outer, 5x5 hole), in the hole a background ring around an L1 pixel
    mask = np.zeros((9, 9), np.int32)
    mask[1:8, 1:8] = 1
    mask[2:7, 2:7] = 0
    mask[4, 4] = 1
    shapes = labelme_io.mask_to_shapes(mask)
    assert [s["label"] for s in shapes] == ["L1", "_background_", "L1"]  # largest area first
    np.testing.assert_array_equal(labelme_io.shapes_to_mask(shapes, (9, 9), "mem"), mask)


def test_embedded_versus_sibling_image(tmp_path):
    mask = np.zeros((16, 16), np.int32)
    mask[4:12, 3:9] = labels.SEG_ID["L3"]
    image = np.full((16, 16), 90, np.uint8)
    emb = labelme_io.write_labelme(tmp_path / "a" / "emb.json", image, mask, embed_image=True,
                                   patient="q", slice_index=2)
    sib = labelme_io.write_labelme(tmp_path / "b" / "sib.json", image, mask)
    assert sorted(p.name for p in emb.parent.iterdir()) == ["emb.json"]
    assert sorted(p.name for p in sib.parent.iterdir()) == ["sib.json", "sib.png"]
    raw_emb, raw_sib = json.loads(emb.read_text()), json.loads(sib.read_text())
    assert isinstance(raw_emb["imageData"], str) and raw_sib["imageData"] is None
    np.testing.assert_array_equal(images.decode_image_gray(base64.b64decode(raw_emb["imageData"]), "x"), image)
    r_emb, r_sib = labelme_io.read_labelme(emb), labelme_io.read_labelme(sib)
    assert r_emb.meta["image_source"] == "imageData"
    for rec in (r_emb, r_sib):
        np.testing.assert_array_equal(rec.image, image)
        np.testing.assert_array_equal(rec.mask, mask)
    assert (r_emb.patient, r_emb.slice) == ("q", 2)
    assert raw_sib["spoils"] == {"patient": None, "slice": None, "pixel_spacing_mm": None}
    assert (r_sib.patient, r_sib.slice) == ("b", 0)  # stem is not <patient>_slice<k>


def test_write_16bit_image_and_refuse_bad_inputs(tmp_path):
    mask = np.zeros((2, 3), np.int32)
    path = labelme_io.write_labelme(tmp_path / "p_slice0.json", np.array([[0, 50, 100], [100, 50, 0]], np.uint16), mask)
    np.testing.assert_array_equal(labelme_io.read_labelme(path, root=tmp_path).image,
                                  [[0, 128, 255], [255, 128, 0]])
    with pytest.raises(ValueError, match="mask shape"):
        labelme_io.write_labelme(tmp_path / "x.json", np.zeros((3, 3), np.uint8), mask)
    with pytest.raises(ValueError, match="class ids"):
        labelme_io.write_labelme(tmp_path / "x.json", np.zeros((2, 3), np.uint8), mask + labels.NUM_SEG_CLASSES)
    assert not (tmp_path / "x.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p_slice0.json", "p_slice0.png"]  # no temp files
