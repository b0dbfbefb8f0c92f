"""CNN + geometry ensemble on out-of-fold predictions: a thin entry around
``ensemble_lib.run``.

    python -m experiments.ensemble --config=configs/ensemble.py:smoke --workdir=runs/ens_smoke
    python -m experiments.ensemble --config=configs/ensemble.py:cpu \
        --config.cnn_workdir=runs/grade_cnn_cpu \
        --config.geometry_workdir=runs/grade_geometry_cpu --workdir=runs/ensemble_cpu
"""

from __future__ import annotations

from absl import app

from experiments import common

_FLAGS = common.define_flags("configs/ensemble.py:smoke")


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import ensemble_lib

    result = ensemble_lib.run(config, _FLAGS.workdir.value)
    print(result["markdown"])


if __name__ == "__main__":
    app.run(main)
