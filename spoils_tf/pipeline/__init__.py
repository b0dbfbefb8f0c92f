"""spoils_tf.pipeline."""
