"""`python -m spoils_tf.data.tfds_builder` runs TFDS's own `build` command offline."""

import pathlib

import tensorflow_datasets as tfds

from spoils_tf.data import tfds_builder

DATASET_DIR = pathlib.Path(__file__).resolve().parents[1] / "datasets" / "spoils_labelme"


def test_build_command_builds_the_dummy_data_and_skips_the_bad_file(tmp_path):
    rc = tfds_builder.build_main([str(DATASET_DIR), "--config=synthetic",
                                  f"--manual_dir={DATASET_DIR / 'dummy_data'}",
                                  f"--data_dir={tmp_path}"])
    assert rc == 0
    builder = tfds.builder_from_directory(str(tmp_path / "spoils_labelme" / "synthetic" / "1.0.0"))
    # dummy_data: 2 patients x 2 valid slices + 1 file with an unknown label (skipped).
    assert builder.info.splits["train"].num_examples == 4
    keys = sorted(ex["key"].decode() for ex in tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(keys) == 4 and len(set(keys)) == 4
