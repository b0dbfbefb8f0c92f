"""A series' slices segmented in one batched network call give the slice-by-slice masks.

``spacing_pipeline.predict_probabilities_batch`` (each slice standardised on its own),
``SpacingSegmenter.segment_many`` / ``Segmenter.segment_slices`` (every orientation branch),
``OrientationNet.probabilities_many`` and the letterbox ``load_segmenter`` batch, each against
one call per slice, on tiny random-weight networks.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from spoils_tf import labels
from spoils_tf.data import seg_pipeline
from spoils_tf.data import spacing_pipeline as sp
from spoils_tf.models import orientation
from spoils_tf.models.deeplabv3plus import DeepLabV3Plus
from spoils_tf.models.unet import UNet
from spoils_tf.serve import segmenter

H, W = 72, 56
SPACING = (0.8, 0.9)


def _series(n=5) -> list[np.ndarray]:
    """``n`` slices that differ in content, brightness and contrast (one flat: SD floor)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n - 1):
        base = rng.integers(0, 256, (H, W)).astype(np.float32)
        out.append(np.clip(base * (0.2 + 0.2 * i) + 30 * i, 0, 255).astype(np.uint8))
    out.append(np.full((H, W), 17, np.uint8))
    return out


@pytest.fixture(scope="module")
def unet_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu")
    path = tmp_path_factory.mktemp("seg") / "unet.keras"
    model.save(path)
    return path


def _assert_same_masks(batched: np.ndarray, single: np.ndarray, atol=1e-5):
    """Probabilities within ``atol``; label maps equal wherever the top two classes are
    further apart than twice that (a tie may flip on rounding)."""
    np.testing.assert_allclose(batched, single, atol=atol)
    top2 = np.sort(single, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 2 * atol
    assert clear.mean() > 0.5      # random weights: the flat slice is all ties
    np.testing.assert_array_equal(batched.argmax(-1)[clear], single.argmax(-1)[clear])


# === The network path ===
@pytest.mark.parametrize("kind", ["unet", "deeplab_fixed_size"])
def test_batched_probabilities_equal_slice_by_slice(kind):
    keras.utils.set_random_seed(1)
    if kind == "unet":
        model = UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu")
    else:
        model = DeepLabV3Plus(input_shape=(64, 64, 1), encoder="mini",
                              encoder_filters=(4, 8, 8, 16), atrous_rates=(1, 2),
                              aspp_filters=8, low_level_filters=4, decoder_filters=8)
    single = sp.make_spacing_predictor(model, 1.0)
    batched = sp.make_spacing_predictor(model, 1.0, batched=True)
    series = _series()
    spacing = np.float32(SPACING)
    out = np.asarray(batched(np.stack(series), spacing))
    assert out.shape == (len(series), H, W, labels.NUM_SEG_CLASSES)
    expected = np.stack([np.asarray(single(s, spacing)) for s in series])
    _assert_same_masks(out, expected)


def test_each_slice_is_standardised_on_its_own():
    """A slice's probabilities do not depend on the other slices of the batch."""
    keras.utils.set_random_seed(2)
    model = UNet(input_shape=(None, None, 1), filters=(4, 8), activation="leaky_relu")
    batched = sp.make_spacing_predictor(model, 1.0, batched=True)
    series = _series()
    spacing = np.float32(SPACING)
    alone = np.asarray(batched(np.stack(series[:1]), spacing))[0]
    together = np.asarray(batched(np.stack(series), spacing))[0]
    np.testing.assert_allclose(together, alone, atol=1e-5)


# === The segmenter ===
class _Counting:
    """Wraps a ``probabilities_many`` function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, greys, spacing):
        self.calls += 1
        return self.fn(greys, spacing)


def test_segment_many_as_is_is_one_call_and_equals_per_slice(unet_path):
    seg = segmenter.SpacingSegmenter(unet_path, 1.0, orientation="as_is")
    series = _series()
    single = [seg(s, SPACING) for s in series]
    counter = _Counting(seg._probabilities_many)
    seg._probabilities_many = counter
    many = seg.segment_many(series, SPACING)
    assert counter.calls == 1
    for a, b in zip(many, single):
        assert a.orientation == b.orientation == "as_is"
        np.testing.assert_array_equal(a.image, b.image)
        assert (a.label_map == b.label_map).mean() > 0.99
        assert a.levels.flags == b.levels.flags


def test_max_batch_slices_splits_a_long_series(unet_path):
    seg = segmenter.SpacingSegmenter(unet_path, 1.0, orientation="as_is")
    counter = _Counting(seg._probabilities_many)
    seg._probabilities_many = counter
    seg.max_batch_slices = 2
    probs = seg.probabilities_many(_series(5), SPACING)
    assert counter.calls == 3 and probs.shape[0] == 5
    with pytest.raises(ValueError, match="one shape"):
        seg.probabilities_many([_series()[0], _series()[0][:-1]], SPACING)


class _FixedNet:
    """An orientation network that answers ``probs`` for every slice (ORIENTATIONS order)."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float64)

    def probabilities(self, grey, spacing_mm):
        return self.probs


@pytest.mark.parametrize("branch", ["from_header", "network", "anatomy"])
def test_every_orientation_branch_batches_to_the_per_slice_result(unet_path, branch):
    net = _FixedNet([0.01, 0.97, 0.01, 0.01]) if branch != "anatomy" else None
    seg = segmenter.SpacingSegmenter(unet_path, 1.0, orientation="auto", orientation_net=net)
    series = _series(3)
    kw = {"from_header": branch == "from_header"}

    def outcome(fn):
        try:
            return fn()
        except segmenter.OrientationError as e:
            return e
    single = [outcome(lambda s=s: seg(s, SPACING, **kw)) for s in series]
    many = outcome(lambda: seg.segment_many(series, SPACING, sources=["a", "b", "c"], **kw))
    first_error = next((r for r in single if isinstance(r, Exception)), None)
    if first_error is not None:      # random weights: the anatomy may be unreadable
        assert isinstance(many, segmenter.OrientationError)
        assert many.reason == first_error.reason
        assert many.path is not None and str(many.path) in "abc"
        return
    for a, b in zip(many, single):
        assert (a.orientation, a.orientation_note) == (b.orientation, b.orientation_note)
        np.testing.assert_array_equal(a.image, b.image)
        assert (a.label_map == b.label_map).mean() > 0.99


def test_segmenter_segment_slices_names_the_slice_and_checks_shapes(unet_path):
    seg = segmenter.Segmenter(unet_path, target_spacing_mm=1.0, orientation="as_is")
    series = _series(3)
    out = seg.segment_slices(series, SPACING, ["x", "y", "z"])
    assert [o.label_map.shape for o in out] == [(H, W)] * 3
    with pytest.raises(ValueError, match="one shape"):
        seg.segment_slices([series[0], series[1][:, :-2]], SPACING)
    with pytest.raises(segmenter.SpoilsError, match="pixel spacing"):
        seg.segment_slices(series, None, ["x", "y", "z"])


def test_orientation_network_batch_equals_per_slice():
    keras.utils.set_random_seed(3)
    net = orientation.OrientationNet(orientation.build_orientation_net(canvas=32,
                                                                       filters=(4, 8)),
                                     pixel_mm=4.0, canvas=32)
    series = _series(4)
    many = net.probabilities_many(series, SPACING)
    assert many.shape == (4, 4)
    np.testing.assert_allclose(many, np.stack([net.probabilities(s, SPACING) for s in series]),
                               atol=1e-6)


def test_letterbox_segmenter_takes_a_batch(tmp_path):
    keras.utils.set_random_seed(4)
    model = UNet(input_shape=(32, 32, 3), filters=(4, 8))
    path = tmp_path / "letterbox.keras"
    model.save(path)
    predict = segmenter.load_segmenter(path)
    series = _series(3)
    batch = predict(np.stack(series))
    assert batch.shape == (3, H, W)
    for s, m in zip(series, batch):
        np.testing.assert_array_equal(m, predict(s))
    # the same through seg_pipeline's predictor on one slice at a time
    p = seg_pipeline.make_predictor(model)
    rgb = np.repeat(series[0][None, ..., None], 3, -1)
    np.testing.assert_array_equal(batch[0], p(tf.constant(rgb))["label_map"].numpy()[0])


def test_letterbox_label_maps_in_batches_of_at_most_max_batch_slices(monkeypatch):
    calls = []

    def predict(batch):
        calls.append(batch.shape[0])
        return batch.astype(np.int32) % labels.NUM_SEG_CLASSES

    monkeypatch.setattr(segmenter, "MAX_BATCH_SLICES", 2)
    series = _series(5)
    out = segmenter.label_maps_batched(predict, series)
    assert calls == [2, 2, 1] and len(out) == 5
    for s, m in zip(series, out):
        np.testing.assert_array_equal(m, s.astype(np.int32) % labels.NUM_SEG_CLASSES)
