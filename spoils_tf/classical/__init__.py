"""spoils_tf.classical."""
