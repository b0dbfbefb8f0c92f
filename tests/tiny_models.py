"""Test helper: a small fitted geometry classifier for bundle tests (seconds, not science)."""

from __future__ import annotations

import numpy as np

from spoils_tf import labels


def tiny_geometry_classifier():
    """``(gradient boosting with 5 trees fitted on 6 synthetic patients' feature rows, its
    feature columns)``; classes ``labels.GRADE_CLASSES``, target ``grade_class``."""
    from spoils_tf.classical import models as cmodels
    from spoils_tf.train import grade_geometry_lib as ggl

    df = ggl.add_level_index(ggl.synthetic_feature_table(n_patients=6, slices_per_patient=1))
    feats = list(ggl.default_feature_columns()) + [ggl.LEVEL_INDEX_COLUMN]
    y = cmodels.target_labels(df, "grade_class")
    lab = np.asarray([v is not None for v in y])
    gb = cmodels.build_classifier("gradient_boosting", {"n_estimators": 5, "max_depth": 2},
                                  classes=labels.GRADE_CLASSES)
    gb.fit(df.loc[lab, feats].astype(np.float64), y[lab])
    return gb, feats
