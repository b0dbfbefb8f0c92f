"""spoils-tf: TensorFlow/Keras reimplementation of SPOILS (JMIR AI 2026)."""

__version__ = "0.1.0"
