"""spoils_tf.metrics."""
