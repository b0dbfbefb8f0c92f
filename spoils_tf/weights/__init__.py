"""The shipped models: a model bundle (``spoils_tf.serve.bundle``) inside the package.

``DEFAULT_BUNDLE`` is what ``spoils segment`` and ``spoils predict`` use when no model is
given. Its ``spoils_seg/<v>/`` holds the segmentation network trained on the 32 SPIDER
patients of ``../shared`` (``model.keras`` with a model card whose ``sha256`` is checked at
load, ``spoils_tf.serve.bundle.latest``); ``MODEL_CARD.md`` beside this file is the human-readable
card (data and its CC BY 4.0 attribution, recipe, command, cross-validated numbers, limits).
"""

from __future__ import annotations

import pathlib

DEFAULT_BUNDLE: pathlib.Path = pathlib.Path(__file__).resolve().parent
MODEL_CARD: pathlib.Path = DEFAULT_BUNDLE / "MODEL_CARD.md"
