"""CNN + geometry ensemble on out-of-fold predictions (the paper's mean, and a cross-fitted
weight chosen on training folds only).

Named experiments (``--config=configs/ensemble.py:<name>``):

* ``paper``: MobileNetV2 (``experiments.grade_cnn``) + gradient boosting
  (``experiments.grade_geometry``), 11-class target, patient-level folds, 1000 resamples.
  Give the two workdirs: ``--config.cnn_workdir=runs/grade_cnn_paper
  --config.geometry_workdir=runs/grade_geometry_paper``.
* ``cpu``: the same with the ``cpu`` runs' workdirs (defaults below).
* ``smoke``: seconds; writes a geometry smoke run (gradient boosting only) and a fake CNN
  made from its labels plus noise into ``<workdir>/toy``, then ensembles them.

The CNN run's target must have the same classes as ``target`` (grade_cnn ``grade11`` =
``grade_class``, ``pfirrmann5`` = ``pfirrmann``, ``binary`` = ``binary``).
"""

from __future__ import annotations

import ml_collections

from configs import base
from configs import grade_geometry


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"paper" | "cpu" | "smoke"``; default cpu).

    Raises:
        ValueError: for any other name.
    """
    name = (arg or "cpu").strip()
    c = base.base_config(f"ensemble:{name}")
    c.split = "patient"                   # the runs' split; "slice" only to ensemble leaky runs
    c.target = "grade_class"              # grade_class | pfirrmann | binary
    c.cnn_workdir = "runs/grade_cnn_cpu"  # workdir of experiments.grade_cnn
    c.geometry_workdir = "runs/grade_geometry_cpu"  # workdir of experiments.grade_geometry
    c.geometry_model = "gradient_boosting"
    c.weight_step = 0.05                  # grid step of the cross-fitted CNN weight
    c.on_unmatched = "report"             # rows in one table only: report (unmatched.csv) | raise
    c.eval = ml_collections.ConfigDict()
    c.eval.n_boot = 1000
    c.eval.ci_metrics = ("accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                         "kappa_quadratic", "auroc_macro", "brier")
    c.toy = ml_collections.ConfigDict()
    c.toy.enabled = False
    c.toy.geometry = grade_geometry.get_config("smoke")
    if name == "paper":
        c.cnn_workdir = "runs/grade_cnn_paper"
        c.geometry_workdir = "runs/grade_geometry_paper"
    elif name == "cpu":
        pass
    elif name == "smoke":
        c.cnn_workdir = ""
        c.geometry_workdir = ""
        c.toy.enabled = True
        c.toy.geometry.split = "patient"
        c.toy.geometry.models = ("gradient_boosting",)
        c.toy.geometry.targets = ("grade_class",)
        c.toy.geometry.save_models = False
        c.toy.geometry.eval.n_boot = 0
        c.eval.n_boot = 50
    else:
        raise ValueError(f"configs/ensemble.py: unknown experiment {name!r}; "
                         "expected paper, cpu or smoke")
    return c
