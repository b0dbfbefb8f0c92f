"""CNN + geometry ensemble on out-of-fold predictions: a thin entry around
``ensemble_lib.run``.

    python -m experiments.ensemble --config=configs/ensemble.py:smoke --workdir=runs/ens_smoke
    python -m experiments.ensemble --config=configs/ensemble.py:cpu \
        --config.cnn_workdir=runs/grade_cnn_cpu \
        --config.geometry_workdir=runs/grade_geometry_cpu --workdir=runs/ensemble_cpu
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiment config, e.g. configs/ensemble.py:smoke", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory")
_FOLD = flags.DEFINE_string("fold", None, "fold(s) to evaluate: N, a list N,M or 'all' "
                            "(default: config.fold, which is 'all')")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    from spoils_tf.train import ensemble_lib

    config = _CONFIG.value
    if _FOLD.value is not None:
        config.fold = _FOLD.value
    result = ensemble_lib.run(config, _WORKDIR.value)
    print(result["markdown"])


if __name__ == "__main__":
    app.run(main)
