"""TFDS dataset folder for ``spoils_labelme`` (builder: spoils_tf.data.tfds_builder)."""
