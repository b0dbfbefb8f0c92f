"""Tests for the spoils_labelme TFDS builder over dummy_data/ (2 patients x 2 slices + 1 bad file).

Run: .venv/bin/python -m pytest -q datasets
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from spoils_tf import labels
from spoils_tf.data import labelme_io, layout, tfds_builder

from . import spoils_labelme_dataset_builder

DUMMY_DATA = pathlib.Path(__file__).resolve().parent / "dummy_data"

# tfds.testing imports `dill` (an extra of tensorflow-datasets, "tests-all").
if importlib.util.find_spec("dill") is not None:

    class SpoilsLabelmeTest(tfds.testing.DatasetBuilderTestCase):
        """Builds every config from dummy_data/: 4 good slices; P2_slice7.json is skipped."""

        DATASET_CLASS = spoils_labelme_dataset_builder.Builder
        SPLITS = {"train": 4}
        SKIP_CHECKSUMS = True

else:

    def test_dataset_builder_test_case():
        pytest.skip("tfds.testing needs the 'dill' package (pip install dill)")


def test_examples_content_and_bad_file_report(tmp_path):
    dummy = DUMMY_DATA
    ds, info = tfds_builder.load_dataset(dummy, tmp_path, "synthetic")
    assert info.name == "spoils_labelme" and info.splits["train"].num_examples == 4
    examples = {ex["key"].decode(): ex for ex in tfds.as_numpy(ds)}
    assert sorted(examples) == ["P1_slice0", "P1_slice1", "P2_slice0", "P2_slice1"]

    ex = examples["P1_slice1"]
    assert ex["image"].shape == (32, 32, 1) and ex["image"].dtype == np.uint8
    assert ex["mask"].shape == (32, 32, 1) and ex["patient"] == b"P1" and ex["slice"] == 1
    # make_dummy_data.py, shift 2: L4 rows 4..13, L4-L5 rows 14..17, both over columns 4..17
    mask = ex["mask"][:, :, 0]
    assert (mask == labels.SEG_ID["L4"]).sum() == 10 * 14
    assert (mask == labels.SEG_ID["L4-L5"]).sum() == 4 * 14
    assert (mask == labels.CANAL_ID).sum() == 32 * 5
    # spacing: P1 from its LabelMe files, P2 from patients.csv
    np.testing.assert_allclose(ex["pixel_spacing_mm"], [0.5, 0.6])
    np.testing.assert_allclose(examples["P2_slice0"]["pixel_spacing_mm"], [0.7, 0.8])

    bad = tfds_builder.bad_files(dummy)
    assert [b.path for b in bad] == ["labelme/P2/P2_slice7.json"]
    assert "shapes[0].label" in bad[0].reason and "'L7'" in bad[0].reason


def test_spacing_is_nan_without_any_source(tmp_path):
    data = tmp_path / "data"
    labelme_io.write_labelme(layout.labelme_json_path(data, "Q", 3), np.zeros((8, 8), np.uint8),
                             np.ones((8, 8), np.int32))
    ds, _ = tfds_builder.load_dataset(data, tmp_path / "tfds", "spider")
    (ex,) = list(tfds.as_numpy(ds))
    assert ex["key"] == b"Q_slice3" and all(math.isnan(v) for v in ex["pixel_spacing_mm"])
    assert int(ex["mask"].sum()) == 64
