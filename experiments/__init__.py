"""Thin absl entry points: parse flags, call ``spoils_tf.train.*_lib.run``."""
