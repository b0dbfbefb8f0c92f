"""spoils_tf.models."""
