"""NumPy segmentation input (spoils_tf.data.seg_arrays) against the tf.data pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from spoils_tf import labels
from spoils_tf.data import seg_arrays, seg_pipeline, synthetic


def test_bilinear_by_hand():
    # width 2 -> 4, half-pixel: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
    out = seg_arrays.resize_bilinear(np.array([[0.0, 10.0]]), 1, 4)
    np.testing.assert_allclose(out, [[0.0, 2.5, 7.5, 10.0]])
    # 4 -> 2: sources 0.5 and 2.5, i.e. the means of neighbours
    np.testing.assert_allclose(seg_arrays.resize_bilinear(np.array([[0.0, 2.0, 4.0, 8.0]]), 1, 2),
                               [[1.0, 6.0]])


def test_nearest_and_letterbox_by_hand():
    # 4 -> 2 NEAREST: floor((i + 0.5) * 2) = 1, 3
    np.testing.assert_array_equal(
            seg_arrays.resize_nearest(np.array([[1, 2, 3, 4]], np.uint8), 1, 2), [[2, 4]])
    # 640 x 512 into 512 x 512: scale 0.8 -> 512 x 410, 51 columns of padding on the left
    assert seg_arrays.letterbox_geometry(640, 512, 512, 512) == (512, 410, 0, 51)


@pytest.mark.parametrize("shape, size", [((640, 512), (512, 512)), ((640, 512), (64, 48)),
                                         ((37, 23), (64, 48)), ((20, 60), (64, 48))])
@pytest.mark.parametrize("mode", ["letterbox", "resize"])
def test_fit_to_model_matches_tensorflow(shape, size, mode):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    mask = rng.integers(0, labels.NUM_SEG_CLASSES, shape, dtype=np.uint8)
    ours = seg_arrays.prepare_image(image, size, mode)
    theirs = seg_pipeline.prepare_images(tf.constant(image[..., None]), size, mode).numpy()[..., 0]
    np.testing.assert_array_equal(ours, theirs)   # same float32 arithmetic, same rounding
    ours_m = seg_arrays.fit_to_model(mask, size, mode, is_mask=True)
    theirs_m = seg_pipeline.fit_to_model(tf.constant(mask[..., None]), size, mode,
                                         is_mask=True).numpy()[..., 0]
    np.testing.assert_array_equal(ours_m, theirs_m)
    probs = rng.random(size + (3,)).astype(np.float32)
    back = seg_arrays.restore_resolution(probs, *shape, mode)
    back_tf = seg_pipeline.restore_resolution(tf.constant(probs[None]), shape[0], shape[1],
                                              mode).numpy()[0]
    np.testing.assert_allclose(back, back_tf, atol=1e-5)


def test_normalize_matches_tensorflow():
    x = np.arange(12, dtype=np.uint8).reshape(2, 2, 3, 1) * 20
    np.testing.assert_allclose(seg_arrays.normalize_images(x),
                               seg_pipeline.normalize_images(tf.constant(x)).numpy(), atol=1e-5)
    # grey 0 -> minus the BGR means
    np.testing.assert_allclose(seg_arrays.normalize_images(np.zeros((1, 1), np.uint8))[0, 0],
                               [-103.939, -116.779, -123.68], rtol=1e-6)


def test_middle_keys_by_hand():
    keys = {"a": [(3, "a3"), (4, "a4"), (5, "a5"), (6, "a6")], "b": [(10, "b10")]}
    # a's middle is 4.5: 4 and 5 are nearest; tie -> lower index first
    assert seg_arrays.middle_keys(keys, 1) == {"a4", "b10"}
    assert seg_arrays.middle_keys(keys, 2) == {"a4", "a5", "b10"}


def _toy_arrays(n=10, size=(16, 16)):
    rng = np.random.default_rng(0)
    masks = rng.integers(0, labels.NUM_SEG_CLASSES, (n,) + size, dtype=np.uint8)
    return seg_arrays.SegArrays(
            images=rng.integers(0, 256, (n,) + size, dtype=np.uint8), masks=masks,
            patients=np.asarray([f"p{i // 2}" for i in range(n)]),
            keys=np.asarray([f"p{i // 2}_slice{i % 2}" for i in range(n)]),
            slices=np.asarray([i % 2 for i in range(n)], np.int32),
            original_masks=tuple(m[:, :12] for m in masks))


def test_batches_cover_the_fold_and_reshuffle():
    arrays = _toy_arrays()
    idx = arrays.indices(patients=["p0", "p1", "p3"])
    np.testing.assert_array_equal(idx, [0, 1, 2, 3, 6, 7])
    batches = seg_arrays.SegBatches(arrays, idx, 4, shuffle=True, seed=3)
    assert len(batches) == 2
    x, y = batches[0]
    assert x.shape == (4, 16, 16, 3) and x.dtype == np.float32 and y.dtype == np.int32
    seen = []
    for i in range(len(batches)):
        x, y = batches[i]
        for row in y:
            seen.append(int(np.flatnonzero((arrays.masks == row).all(axis=(1, 2)))[0]))
    assert sorted(seen) == idx.tolist()
    first = batches._order.copy()
    batches.on_epoch_end()
    assert sorted(batches._order) == idx.tolist() and not np.array_equal(first, batches._order)
    with pytest.raises(ValueError, match="empty list"):
        arrays.indices(patients=[])
    with pytest.raises(IndexError):
        batches[2]


def test_complete_last_batch():
    arrays = _toy_arrays()
    batches = seg_arrays.SegBatches(arrays, np.arange(6), 4, complete_last=True)
    x, y = batches[1]
    assert x.shape[0] == 4      # slices 4, 5, then 0, 1 again (the epoch's order, no shuffle)
    np.testing.assert_array_equal(y, arrays.masks[[4, 5, 0, 1]])
    assert seg_arrays.SegBatches(arrays, np.arange(6), 4)[1][0].shape[0] == 2


def test_class_ids_are_checked():
    a = _toy_arrays(2)
    masks = a.masks.copy()
    masks[1, 0, 0] = labels.NUM_SEG_CLASSES
    with pytest.raises(ValueError, match="p0_slice1"):
        seg_arrays.SegArrays(a.images, masks, a.patients, a.keys, a.slices, a.original_masks)


def test_pack_round_trip(tmp_path):
    arrays = _toy_arrays()
    size = seg_arrays.save_npz(arrays, tmp_path / "pack.npz")
    assert size == (tmp_path / "pack.npz").stat().st_size > 0
    back = seg_arrays.load_npz(tmp_path / "pack.npz")
    np.testing.assert_array_equal(back.images, arrays.images)
    np.testing.assert_array_equal(back.masks, arrays.masks)
    assert back.keys.tolist() == arrays.keys.tolist() and back.resize_mode == "letterbox"
    for a, b in zip(back.original_masks, arrays.original_masks):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        seg_arrays.load_npz(tmp_path / "bad.npz")


def test_from_dataset_dir_matches_the_tf_pipeline(tmp_path):
    synthetic.write_complete_cohort(tmp_path, 2, 3, 0)
    arrays = seg_arrays.from_dataset_dir(tmp_path, (64, 64), max_slices_per_patient=2)
    assert len(arrays.keys) == 4 and len(set(arrays.patients.tolist())) == 2
    from spoils_tf.data import labelme_io, layout
    for i, key in enumerate(arrays.keys):
        patient, index = layout.parse_stem(str(key))
        rec = labelme_io.read_labelme(layout.labelme_json_path(tmp_path, patient, index),
                                      root=tmp_path)
        np.testing.assert_array_equal(arrays.original_masks[i], rec.mask)
        theirs = seg_pipeline.fit_to_model(tf.constant(rec.mask.astype(np.uint8)[..., None]),
                                           (64, 64), is_mask=True).numpy()[..., 0]
        np.testing.assert_array_equal(arrays.masks[i], theirs)
