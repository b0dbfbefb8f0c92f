"""Orientation network, patient-grouped k-fold CV: a thin entry around
``spoils_tf.train.orientation_lib.run``.

    python -m experiments.orientation --config=configs/orientation.py:spider_cpu --fold=all \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/orientation_cv
    python -m experiments.orientation --config=configs/orientation.py:spider_cpu --fold=final \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/orientation_cv

``--fold=final`` trains on every patient of the folds file: the model that is shipped.
"""

from __future__ import annotations

import pathlib

from absl import app

from experiments import common

_FLAGS = common.define_flags("configs/orientation.py:spider_cpu")


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import orientation_lib

    result = orientation_lib.run(config, _FLAGS.workdir.value, str(config.fold))
    if "final" in result:
        info = result["final"]
        print(f"final model ({info['train_patients']} patients, {info['train_slices']} slices, "
              f"{info['train_seconds'] / 60:.1f} min): {_FLAGS.workdir.value}/final/model.keras")
    else:
        print((pathlib.Path(_FLAGS.workdir.value) / "cv_table.md").read_text())


if __name__ == "__main__":
    app.run(main)
