"""The pipeline's public functions and constants under one module name, re-exported from the
stage modules (``example_gen``, ``trainer``, ``classifier_trainer``, ``evaluator``, ``pusher``,
``runner``, ``common``) for callers that import ``spoils_tf.pipeline.stages``."""

from __future__ import annotations

from spoils_tf.pipeline.classifier_trainer import (prepare_grading_data, train_classifiers,
                                                   train_crop_classifier,
                                                   train_geometry_classifier)
from spoils_tf.pipeline.common import (BLESSED_FILE, CLASSIFIER_SHORT, CNN_TARGET,
                                       CROP_MODEL_FILE, ENSEMBLE, GEOMETRY_MODEL_FILE,
                                       GRADE_METRICS, GRADE_PREFIX, NOT_BLESSED_FILE,
                                       SEG_KERAS_FILE)
from spoils_tf.pipeline.evaluator import (bless, evaluate_classifiers, evaluator,
                                          grade_metric_keys, parse_thresholds)
from spoils_tf.pipeline.example_gen import example_gen
from spoils_tf.pipeline.pusher import (PUSH_RECORD_DIR, NotBlessedError, card_metrics,
                                       existing_versions, model_card, next_version, push_bundle,
                                       pusher, read_pushed)
from spoils_tf.pipeline.runner import run_pipeline, summary_text
from spoils_tf.pipeline.trainer import trainer

__all__ = ["BLESSED_FILE", "CLASSIFIER_SHORT", "CNN_TARGET", "CROP_MODEL_FILE", "ENSEMBLE",
           "GEOMETRY_MODEL_FILE", "GRADE_METRICS", "GRADE_PREFIX", "NOT_BLESSED_FILE",
           "PUSH_RECORD_DIR", "SEG_KERAS_FILE", "NotBlessedError", "bless", "card_metrics",
           "evaluate_classifiers", "evaluator", "example_gen", "existing_versions",
           "grade_metric_keys", "model_card", "next_version", "parse_thresholds",
           "prepare_grading_data", "push_bundle", "pusher", "read_pushed", "run_pipeline",
           "summary_text", "train_classifiers", "train_crop_classifier",
           "train_geometry_classifier", "trainer"]
