"""Disc grading from geometry features (LR / XGBoost / GB / SVM / LightGBM), cross-validated.

Named experiments (``--config=configs/grade_geometry.py:<name>``):

* ``paper``: the five classifiers with the ``CLASSIFIERS`` defaults (sklearn's defaults for
  gradient boosting: 100 trees of depth 3, learning rate 0.1; the paper gives none), three
  targets, patient-level folds from folds.json, 1000 bootstrap resamples; the leakage mode
  runs every model both ways.
* ``cpu``:   the same models and folds; ``split=leakage`` runs only gradient boosting with
  slice-level folds.
* ``smoke``: seconds; a synthetic 12-patient table written into the workdir, 3 folds,
  10-tree ensembles, 50 resamples, ``split=leakage`` (gradient boosting on slice-level
  folds). Checks the plumbing, not the science.

Override any field with ``--config.x=y``, e.g.
``--config.data.features_path=/data/spider/features.parquet``, ``--config.split=leakage``,
``--config.model_params.gradient_boosting.n_estimators=300``.
"""

from __future__ import annotations

import ml_collections

from configs import base

MODELS = ("logreg", "xgboost", "gradient_boosting", "svm", "lightgbm")
TARGETS = ("grade_class", "pfirrmann", "binary")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"paper" | "cpu" | "smoke"``; default cpu).

    Raises:
        ValueError: for any other name.
    """
    from spoils_tf.classical import models as cmodels

    name = (arg or "cpu").strip()
    c = base.base_config(f"grade_geometry:{name}")
    # "patient" (folds.json; every headline number) | "slice" (LEAKY, comparison only) |
    # "leakage" (both, and the side-by-side table)
    c.split = "patient"
    c.models = MODELS
    c.leakage_models = MODELS          # models also run with slice-level folds (split=leakage)
    c.targets = TARGETS
    c.class_weight = "balanced"        # "balanced" sample weights | "" (none)
    c.save_models = True               # final models on all labelled rows (fold=all only)
    # Hyper-parameters per model; start from the registry defaults so every one is visible in
    # the saved config and can be overridden from the command line.
    c.model_params = ml_collections.ConfigDict(
            {m: dict(cmodels.CLASSIFIERS[m].defaults) for m in MODELS})

    c.data = ml_collections.ConfigDict()
    # `spoils features --data DIR --out DIR/features.parquet`
    c.data.features_path = f"{base.DEFAULT_SPIDER_DATASET_DIR}/features.parquet"
    c.data.folds_path = ""             # "" -> <features dir>/folds.json, else made in the workdir
    c.data.k = 8                       # folds, when folds.json has to be made
    c.data.synthetic = ml_collections.ConfigDict(
            {"enabled": False, "patients": 12, "slices_per_patient": 3, "levels": 5,
             "unlabelled_discs": 1})

    c.features = ml_collections.ConfigDict()
    c.features.columns = ()            # () = spoils_tf.geometry's own feature list
    c.features.add_level_index = False  # add the disc level (0 = T12-L1 .. 5 = L5-S1) as a feature

    c.eval = ml_collections.ConfigDict()
    c.eval.n_boot = 1000               # patient-level bootstrap resamples for the CIs
    c.eval.ci_metrics = ("accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                         "kappa_quadratic", "auroc_macro", "brier")

    if name == "paper":
        pass
    elif name == "cpu":
        c.leakage_models = ("gradient_boosting",)
    elif name == "smoke":
        c.split = "leakage"
        c.leakage_models = ("gradient_boosting",)
        c.data.synthetic.enabled = True
        c.data.features_path = ""
        c.data.k = 3
        for m in ("xgboost", "gradient_boosting", "lightgbm"):
            c.model_params[m].n_estimators = 10
        c.eval.n_boot = 50
    else:
        raise ValueError(f"configs/grade_geometry.py: unknown experiment {name!r}; "
                         "expected paper, cpu or smoke")
    return c
