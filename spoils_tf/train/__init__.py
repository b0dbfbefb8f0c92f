"""spoils_tf.train."""
