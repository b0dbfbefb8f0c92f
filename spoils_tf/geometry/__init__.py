"""spoils_tf.geometry: mask -> measurements (mm), disc crops and the feature table.

numpy / OpenCV / scipy / pandas only (no TensorFlow). ``measure`` holds the definitions.
"""
