"""spoils_tf.data."""
