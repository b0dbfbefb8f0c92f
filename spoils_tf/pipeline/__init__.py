"""TFX-style pipeline: ExampleGen -> Trainer -> Evaluator -> Pusher, plain Python (no tfx).

Artifacts are typed dataclasses recorded in ``<uri>/metadata.json``
(``spoils_tf.pipeline.artifacts``); stages are plain functions
(``spoils_tf.pipeline.stages``). Entry point: ``python -m experiments.pipeline``.
"""

from __future__ import annotations

from spoils_tf.pipeline.artifacts import (Artifact, Examples, Model, ModelBlessing,
                                          ModelEvaluation, PushedModel, data_fingerprint,
                                          read_artifact, write_artifact)
from spoils_tf.pipeline.stages import (NotBlessedError, bless, evaluator, example_gen, pusher,
                                       run_pipeline, trainer)

__all__ = ["Artifact", "Examples", "Model", "ModelBlessing", "ModelEvaluation", "PushedModel",
           "NotBlessedError", "bless", "data_fingerprint", "evaluator", "example_gen", "pusher",
           "read_artifact", "run_pipeline", "trainer", "write_artifact"]
