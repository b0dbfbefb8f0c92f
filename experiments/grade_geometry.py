"""Disc grading from geometry features, cross-validated: a thin entry around
``grade_geometry_lib.run``.

    python -m experiments.grade_geometry --config=configs/grade_geometry.py:smoke \
        --workdir=runs/grade_geometry_smoke --fold=all
    python -m experiments.grade_geometry --config=configs/grade_geometry.py:cpu \
        --config.data.features_path=runs/data/spider/features.parquet \
        --workdir=runs/grade_geometry_cpu
    # leakage check (patient-level next to LEAKY slice-level folds):
    python -m experiments.grade_geometry --config=configs/grade_geometry.py:cpu \
        --config.split=leakage --workdir=runs/grade_geometry_leakage
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiment config, e.g. configs/grade_geometry.py:smoke",
        lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory")
_FOLD = flags.DEFINE_string("fold", None, "fold(s) to run: N, a list N,M or 'all' "
                            "(default: config.fold, which is 'all')")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    from spoils_tf.train import grade_geometry_lib

    config = _CONFIG.value
    if _FOLD.value is not None:
        config.fold = _FOLD.value
    result = grade_geometry_lib.run(config, _WORKDIR.value)
    print(result["markdown"])


if __name__ == "__main__":
    app.run(main)
