"""Disc grading from crops, cross-validated: a thin entry around ``grade_cnn_lib.run``.

    python -m experiments.grade_cnn --config=configs/grade_cnn.py:smoke --workdir=runs/grade_smoke
    python -m experiments.grade_cnn --config=configs/grade_cnn.py:cpu \
        --config.data.crops_dir=runs/crops --fold=0 --workdir=runs/grade_cpu
    # leakage comparison (slice-level folds, patients ignored; labelled LEAKY everywhere):
    python -m experiments.grade_cnn --config=configs/grade_cnn.py:cpu --config.split=slice ...
"""

from __future__ import annotations

from absl import app

from experiments import common

_FLAGS = common.define_flags("configs/grade_cnn.py:smoke")


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import grade_cnn_lib

    summary = grade_cnn_lib.run(config, _FLAGS.workdir.value)
    print(grade_cnn_lib.summary_markdown(summary))


if __name__ == "__main__":
    app.run(main)
