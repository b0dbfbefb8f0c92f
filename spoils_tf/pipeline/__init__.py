"""TFX-style pipeline: ExampleGen -> Trainer -> Evaluator -> Pusher, plain Python (no tfx).

Each stage is a plain function that takes typed artifacts (``spoils_tf.pipeline.artifacts``,
recorded in ``<uri>/metadata.json``), writes its output artifact into a fresh directory ``out``
(``out/metadata.json`` last, so an interrupted stage leaves no valid artifact) and returns it.
One module per stage:

* ``example_gen.example_gen`` validates a spoils dataset directory (``spoils_tf.data.layout``),
  fingerprints it, prepares the TFDS dataset and fixes the patient folds and held-out fold.
* ``trainer.trainer`` trains a segmentation model on the training folds with
  ``spoils_tf.train.seg_lib.run`` and exports a SavedModel (``spoils_tf.export.serving``).
* ``classifier_trainer.train_classifiers`` (the Trainer's second half) measures every disc of
  the dataset's ground-truth masks once (``geometry.features.build_feature_table``,
  ``geometry.crops.write_crops``) and trains, on the training patients only, the geometry
  classifier and the crop classifier.
* ``evaluator.evaluator`` scores the segmentation model on the held-out fold and, when given,
  the classifiers and their mean ensemble, and blesses the whole bundle ONLY when every
  configured threshold is met (``evaluator.bless``); failed thresholds are recorded.
* ``pusher.pusher`` refuses an unblessed model (``NotBlessedError``) and copies the blessed
  model folder to ``<base_dir>/<model_name>/<version>/`` with a model card;
  ``pusher.push_bundle`` publishes a blessed run's three models whole or not at all.

``runner.run_pipeline`` chains the stages; ``common`` holds what they share. Entry point:
``python -m experiments.pipeline``.
"""

from __future__ import annotations

from spoils_tf.pipeline.artifacts import (Artifact, Examples, Model, ModelBlessing,
                                          ModelEvaluation, PushedModel, data_fingerprint,
                                          read_artifact, write_artifact)
from spoils_tf.pipeline.evaluator import bless
from spoils_tf.pipeline.pusher import NotBlessedError
from spoils_tf.pipeline.runner import run_pipeline

__all__ = ["Artifact", "Examples", "Model", "ModelBlessing", "ModelEvaluation", "PushedModel",
           "NotBlessedError", "bless", "data_fingerprint", "read_artifact", "run_pipeline",
           "write_artifact"]
