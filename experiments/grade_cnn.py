"""Disc grading from crops, cross-validated: a thin entry around ``grade_cnn_lib.run``.

    python -m experiments.grade_cnn --config=configs/grade_cnn.py:smoke --workdir=runs/grade_smoke
    python -m experiments.grade_cnn --config=configs/grade_cnn.py:cpu \
        --config.data.crops_dir=runs/crops --fold=0 --workdir=runs/grade_cpu
    # leakage comparison (slice-level folds, patients ignored; labelled LEAKY everywhere):
    python -m experiments.grade_cnn --config=configs/grade_cnn.py:cpu --config.split=slice ...
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiment config, e.g. configs/grade_cnn.py:smoke", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory")
_FOLD = flags.DEFINE_string("fold", None, "fold(s) to run: N, a list N,M or 'all' "
                            "(default: config.fold, which is 'all')")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    from spoils_tf.train import grade_cnn_lib

    config = _CONFIG.value
    if _FOLD.value is not None:
        config.fold = _FOLD.value
    summary = grade_cnn_lib.run(config, _WORKDIR.value)
    print(grade_cnn_lib.summary_markdown(summary))


if __name__ == "__main__":
    app.run(main)
