"""``spoils_labelme``: the dataset-folder entry point of ``spoils_tf.data.tfds_builder``.

Lets ``tfds build datasets/spoils_labelme --config=spider --manual_dir=DIR`` find the builder.
The class only re-exports ``SpoilsLabelme`` (same name ``spoils_labelme``, configs, version
and features, so both build the same data dir); it is not registered a second time.
"""

from __future__ import annotations

from spoils_tf.data import tfds_builder


class Builder(tfds_builder.SpoilsLabelme, skip_registration=True):
    """``spoils_tf.data.tfds_builder.SpoilsLabelme`` under the TFDS dataset-folder name."""
