"""The orientation network (``spoils_tf.models.orientation``), its training loop
(``spoils_tf.train.orientation_lib``) and how ``segmenter.SpacingSegmenter`` uses it: a 2-D
picture is corrected when the network is sure and the canal ends up posterior, refused
otherwise; a volume's header orientation is trusted, and a disagreeing network makes the levels
doubtful.

The segmenter runs on hand-made probability maps (``test_levels``' synthetic spine), so the
outcome of every branch can be checked by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from spoils_tf import labels, levels
from spoils_tf.serve import bundle, segmenter
from spoils_tf.models import orientation
from spoils_tf.train import orientation_lib
from test_levels import SPACING, _probs, _spine

UPRIGHT = _spine()                      # int [H, W] label map in display orientation


class FakeNet:
    """An orientation network that always answers ``probs`` (ORIENTATIONS order)."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float64)
        self.calls = 0

    def probabilities(self, grey, spacing_mm):
        self.calls += 1
        return self.probs


def _network_on(upright: np.ndarray):
    """A segmentation 'network' for the four flips of ``upright`` given as grey images: it
    finds the tissues in any of them (the flipped label map) but is sure of the level names
    only in display orientation (uniform level probabilities otherwise), as a network trained
    on upright slices is."""
    def probabilities(grey, spacing_mm):
        for name in levels.ORIENTATIONS:
            candidate = np.ascontiguousarray(levels.orient(upright, name))
            if np.array_equal(grey, (candidate * 10).astype(np.uint8)):
                return _probs(candidate, "onehot" if name == "as_is" else "uniform")
        raise AssertionError("the image is not a flip of the test spine")
    return probabilities


def _grey(name: str) -> np.ndarray:
    return np.ascontiguousarray(levels.orient((UPRIGHT * 10).astype(np.uint8), name))


def _segmenter(net, **kw):
    return segmenter.SpacingSegmenter.from_function(_network_on(UPRIGHT), orientation_net=net,
                                                    **kw)


def _one_hot(name: str, p: float) -> list[float]:
    rest = (1.0 - p) / 3
    return [p if n == name else rest for n in levels.ORIENTATIONS]


# === preprocessing and network ===
def test_prepare_resamples_to_the_pixel_size_and_centres_on_the_canvas():
    grey = np.zeros((100, 200), np.uint8)
    grey[:, 100:] = 200                  # right half bright
    x = orientation.prepare(grey, (1.0, 1.0), pixel_mm=5.0, canvas=64)
    assert x.shape == (64, 64) and x.dtype == np.float32
    # 100 x 200 px at 1 mm -> 20 x 40 px at 5 mm, centred: rows 22..41, columns 12..51
    assert np.all(x[:22] == 0) and np.all(x[42:] == 0)
    assert np.all(x[:, :12] == 0) and np.all(x[:, 52:] == 0)
    assert x[30, 45] == pytest.approx(1.0) and x[30, 14] == pytest.approx(0.0)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_prepare_crops_a_field_of_view_larger_than_the_canvas():
    grey = np.arange(1000 * 10, dtype=np.float32).reshape(1000, 10)
    x = orientation.prepare(grey, (1.0, 5.0), pixel_mm=5.0, canvas=64)
    # 1000 mm tall -> 200 px, centre 64 kept; 10 columns at 5 mm stay 10 px wide
    assert x.shape == (64, 64)
    assert np.count_nonzero(x.any(axis=0)) == 10
    with pytest.raises(ValueError, match="2-D"):
        orientation.prepare(np.zeros((4, 4, 3)), (1.0, 1.0))


def test_network_gives_a_distribution_over_the_four_flips():
    model = orientation.build_orientation_net(32, (4, 8))
    net = orientation.OrientationNet(model, pixel_mm=5.0, canvas=32)
    p = net.probabilities(np.random.default_rng(0).integers(0, 255, (80, 60), np.uint8),
                          (1.0, 1.0))
    assert p.shape == (len(levels.ORIENTATIONS),) and p.sum() == pytest.approx(1.0, abs=1e-5)


# === scoring ===
def test_score_counts_right_refused_and_wrong():
    eye = np.eye(4)
    probs = np.stack([eye, eye[[1, 0, 2, 3]] * 0.95 + 0.0125, np.full((4, 4), 0.25)])
    # slice 0: all right; slice 1: flips 0 and 1 swapped (wrong), 2 and 3 right at 0.9625;
    # slice 2: uniform -> refused
    assert orientation_lib.score(probs, 0.9) == {"right": 6, "refused": 4, "wrong": 2}
    assert orientation_lib.score(probs, 0.99) == {"right": 4, "refused": 8, "wrong": 0}
    m = orientation_lib.fold_metrics(probs, np.array([True, False, False]), 0.9)
    assert m["middle"] == {"slices": 1, "cases": 4, "top1_accuracy": 1.0,
                           "right": 4, "refused": 0, "wrong": 0}
    assert m["all"]["top1_accuracy"] == pytest.approx(6 / 12 + 1 / 12)


# === the segmenter's decisions ===
@pytest.mark.parametrize("given", levels.ORIENTATIONS)
def test_confident_network_undoes_the_flip(given):
    seg = _segmenter(FakeNet(_one_hot(given, 0.97)))(_grey(given), SPACING)
    assert seg.orientation == given
    np.testing.assert_array_equal(seg.image, _grey("as_is"))
    assert seg.levels.canal_side == "posterior"
    assert [c["name"] for c in seg.levels.chain][0] == "L5-S1"
    assert "orientation network p 0.97" in seg.orientation_note


def test_unsure_network_refuses_the_slice():
    net = FakeNet([0.6, 0.1, 0.2, 0.1])
    with pytest.raises(segmenter.OrientationError, match="orientation network: as_is 0.60"):
        _segmenter(net)(_grey("as_is"), SPACING)
    # the threshold is the card's: 0.5 accepts the same answer
    assert _segmenter(net, orientation_threshold=0.5)(_grey("as_is"), SPACING).orientation == "as_is"


def test_network_contradicted_by_the_canal_is_refused():
    # the slice is mirrored but the network says it is upright: the canal lands in front
    with pytest.raises(segmenter.OrientationError, match="canal in front"):
        _segmenter(FakeNet(_one_hot("as_is", 0.99)))(_grey("flip_lr"), SPACING)


def test_header_orientation_is_trusted_and_a_disagreeing_network_is_a_level_doubt():
    net = FakeNet(_one_hot("flip_ud", 0.98))
    seg = _segmenter(net)(_grey("as_is"), SPACING, from_header=True)
    assert seg.orientation == "as_is"
    assert [c["name"] for c in seg.levels.chain][0] == "L5-S1"
    doubts = levels.level_doubts(seg.levels)
    assert len(doubts) == 1 and "upside down" in doubts[0] and "p 0.98" in doubts[0]
    agreeing = _segmenter(FakeNet(_one_hot("as_is", 0.98)))(_grey("as_is"), SPACING,
                                                            from_header=True)
    assert levels.level_doubts(agreeing.levels) == []
    # an unsure network does not cast doubt on the header either
    unsure = _segmenter(FakeNet([0.3, 0.2, 0.4, 0.1]))(_grey("as_is"), SPACING, from_header=True)
    assert levels.level_doubts(unsure.levels) == []


def test_without_a_network_auto_still_reads_the_anatomy():
    seg = segmenter.SpacingSegmenter.from_function(_network_on(UPRIGHT))(_grey("flip_lr"),
                                                                          SPACING)
    assert seg.orientation == "flip_lr"


def test_as_is_never_asks_the_network():
    net = FakeNet(_one_hot("rot180", 0.99))
    seg = _segmenter(net, orientation="as_is")(_grey("as_is"), SPACING)
    assert seg.orientation == "as_is" and net.calls == 0


# === bundle: the orientation network travels with the segmentation model ===
def _bundle_with_orientation(tmp_path, *, sha: str | None, write_file: bool = True):
    vdir = tmp_path / "bundle" / bundle.SEG / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.keras").write_bytes(b"segmentation model bytes")
    if write_file:
        (vdir / "orientation.keras").write_bytes(b"orientation model bytes")
    card = {"format": bundle.CARD_FORMAT, "kind": "segmentation", "model_file": "model.keras",
            "resize_mode": "spacing", "target_spacing_mm": 0.75,
            "orientation_model": "orientation.keras", "orientation_pixel_mm": 5.0,
            "orientation_threshold": 0.9}
    if sha is not None:
        card["orientation_sha256"] = sha
    bundle.write_card(vdir, card)
    return tmp_path / "bundle"


def test_bundle_checks_the_orientation_model_checksum(tmp_path):
    import hashlib
    good = hashlib.sha256(b"orientation model bytes").hexdigest()
    entry = bundle.load_bundle(_bundle_with_orientation(tmp_path / "a", sha=good))[bundle.SEG]
    assert entry.orientation_path.name == "orientation.keras"
    with pytest.raises(bundle.BundleError, match="orientation_sha256"):
        bundle.load_bundle(_bundle_with_orientation(tmp_path / "b", sha="0" * 64))
    with pytest.raises(bundle.BundleError, match="orientation_model"):
        bundle.load_bundle(_bundle_with_orientation(tmp_path / "c", sha=None, write_file=False))


# === training loop: patient-grouped CV, resumable ===
def test_cross_validation_writes_each_fold_and_resumes(tmp_path):
    from configs import orientation as orientation_config
    from spoils_tf.data import folds as folds_lib
    config = orientation_config.get_config("smoke")
    config.model.canvas = 32
    config.model.filters = (4, 8)
    config.train.batch_size = 4
    config.eval.middle_slices = 1
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    patients = [f"p{i}" for i in range(4)]
    folds_lib.write_folds(data_dir / "folds.json", {p: i % 2 for i, p in enumerate(patients)},
                          k=2, seed=0, stratified_by="none", source="test")
    config.data.labelme_dir = str(data_dir)
    rng = np.random.default_rng(0)
    x = rng.random((12, 32, 32)).astype(np.float16)
    x[:, :8] = 1.0                                   # a bright band at the top: "superior"
    work = tmp_path / "work"
    work.mkdir()
    np.savez_compressed(work / "slices.npz", pixel_mm=config.model.pixel_mm, x=x,
                        patient=np.repeat(patients, 3), slice=np.tile([0, 1, 2], 4),
                        key=np.asarray([f"{p}_{s}" for p in patients for s in range(3)]))
    summary = orientation_lib.run(config, work, "all")
    assert summary["folds_done"] == [0, 1]
    for k in (0, 1):
        m = json.loads((work / f"fold_{k}" / "metrics.json").read_text())
        assert m["all"]["cases"] == 6 * 4 and m["middle"]["cases"] == 2 * 4
        assert m["all"]["right"] + m["all"]["refused"] + m["all"]["wrong"] == 24
        assert set(m["test_patients"]) == {p for i, p in enumerate(patients) if i % 2 == k}
    assert (work / "cv_table.md").read_text().count("| middle |") == 1
    before = (work / "fold_0" / "metrics.json").stat().st_mtime_ns
    orientation_lib.run(config, work, "0")           # done: skipped, not retrained
    assert (work / "fold_0" / "metrics.json").stat().st_mtime_ns == before
