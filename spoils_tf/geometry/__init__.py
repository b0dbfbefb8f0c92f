"""spoils_tf.geometry."""
