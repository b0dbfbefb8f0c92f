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

from absl import app

from experiments import common

_FLAGS = common.define_flags("configs/grade_geometry.py:smoke")


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import grade_geometry_lib

    result = grade_geometry_lib.run(config, _FLAGS.workdir.value)
    print(result["markdown"])


if __name__ == "__main__":
    app.run(main)
