"""spoils_tf.clinical."""
