"""What the pipeline's stages share: the artifact directory rule, the held-out split's rows,
the metric names of the grading models and the marker and model file names.
"""

from __future__ import annotations

import os
import pathlib
from typing import Union

import numpy as np

from spoils_tf.serve import bundle
from spoils_tf.pipeline import artifacts as art

# === Constants ===
# Empty marker files next to a blessing record: the Pusher pushes only with BLESSED present.
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"

# Held-out grading metrics recorded per classifier and for their ensemble, as
# ``grade/<short name>/<metric>`` (``spoils_tf.metrics.classification.classification_report``
# keys; ``n`` = discs scored).
GRADE_METRICS: tuple[str, ...] = ("n", "accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                                  "kappa_quadratic", "auroc_macro", "brier", "log_loss")
GRADE_PREFIX = "grade"
ENSEMBLE = "ensemble"
# Bundle model name -> short name in metric keys.
CLASSIFIER_SHORT: dict[str, str] = {bundle.CROP: "cnn", bundle.GEOMETRY: "geometry"}
# Classifier target (``classical.models.TARGETS``, the model card's vocabulary) -> the crop
# classifier's name for it (``models.classifiers.TARGET_CLASSES``).
CNN_TARGET: dict[str, str] = {"grade_class": "grade11", "pfirrmann": "pfirrmann5",
                              "binary": "binary"}
CROP_MODEL_FILE = "model.keras"
SEG_KERAS_FILE = "model.keras"       # next to the segmentation SavedModel
GEOMETRY_MODEL_FILE = "model.skops"


# === Helpers ===
def fresh_dir(out: Union[str, os.PathLike]) -> pathlib.Path:
    """``out`` as an absolute path, created; raises FileExistsError if it holds an artifact."""
    out = pathlib.Path(out).resolve()
    if (out / art.METADATA_FILE).exists():
        raise FileExistsError(f"{out}: already holds an artifact ({art.METADATA_FILE}); "
                              "stages write to a new directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_examples(examples: art.Examples):
    """The ``tf.data.Dataset`` of an ``Examples`` artifact (``tfds_builder.load_dataset``)."""
    from spoils_tf.data import tfds_builder
    ds, _ = tfds_builder.load_dataset(examples.dataset_dir, examples.tfds_dir, examples.tfds_config)
    return ds


def rows_of(df, patients) -> np.ndarray:
    """``bool [len(df)]``: the rows whose ``patient`` is one of ``patients``."""
    wanted = {str(p) for p in patients}
    return df["patient"].astype(str).isin(wanted).to_numpy()


def with_level_index(df, features):
    """``df`` with the level-index column added when ``features`` use it."""
    from spoils_tf.train import grade_geometry_lib as ggl
    return ggl.add_level_index(df) if ggl.LEVEL_INDEX_COLUMN in features else df
