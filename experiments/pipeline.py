"""The TFX-style pipeline, ExampleGen -> Trainer -> Evaluator -> Pusher: a thin entry around
``spoils_tf.pipeline.runner.run_pipeline``.

    python -m experiments.pipeline --config=configs/pipeline.py:smoke --workdir=runs/pipeline_smoke
    python -m experiments.pipeline --config=configs/pipeline.py:demo --workdir=runs/pipeline_demo
    python -m experiments.pipeline --config=configs/pipeline.py:spider --workdir=runs/pipeline \
        --config.evaluator.thresholds="dice/fg_macro>=0.85, grade/ensemble/accuracy>=0.5"

The Trainer trains the segmentation model and (``config.classifiers.enabled``, the default)
the geometry and crop classifiers; the Evaluator scores all three and their ensemble on the
held-out fold; a blessed run is pushed as a model bundle (``spoils_tf.serve.bundle``:
``<base>/spoils_seg|spoils_grade_cnn|spoils_grade_geometry/<version>/``, base
``config.pusher.base_dir`` or ``<workdir>/serving``) that ``spoils predict --models`` reads.

Prints a summary with the artifact paths; each artifact's ``metadata.json`` records its
config, data fingerprint, metrics and parents. Exit status 0 when the models were pushed, 3
when they were trained and evaluated but not blessed (so scripts can tell the two apart).
"""

from __future__ import annotations

import sys

from absl import app

from experiments import common

_FLAGS = common.define_flags("configs/pipeline.py:smoke", fold=False,
                             workdir_help="output directory (one run_<n>/ per call)")

NOT_BLESSED_EXIT = 3


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.pipeline import runner

    result = runner.run_pipeline(config, _FLAGS.workdir.value)
    print(runner.summary_text(result))
    if result["pushed"] is None:
        sys.exit(NOT_BLESSED_EXIT)


if __name__ == "__main__":
    app.run(main)
