"""spoils_tf.export."""
