"""Segmentation, patient-level k-fold CV: a thin entry around ``spoils_tf.train.seg_lib.run``.

    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:smoke --workdir=runs/seg_smoke
    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:cpu --fold=all \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/seg_cpu
    python -m experiments.seg --config=configs/seg_unet.py:paper --fold=3 --strategy=mirrored \
        --workdir=runs/unet_paper
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiment config, e.g. configs/seg_deeplabv3plus.py:smoke",
        lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory")
_FOLD = flags.DEFINE_string("fold", None, "fold(s) to run: N, N,M or 'all' (default: config.fold)")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                              "tf.distribute strategy")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    from spoils_tf.train import seg_lib

    config = _CONFIG.value
    if _FOLD.value is not None:
        config.fold = _FOLD.value
    result = seg_lib.run(config, _WORKDIR.value, strategy_name=_STRATEGY.value)
    if result["summary"] is not None:
        print(seg_lib.table_markdown(result["summary"]))
    else:
        for fold, metrics in result["folds"].items():
            print(f"fold {fold}: pixel accuracy {metrics['pixel_accuracy']:.4f}, "
                  f"Dice fg-macro {metrics['dice/fg_macro']:.4f}, "
                  f"level accuracy {metrics['level_accuracy']:.4f}")


if __name__ == "__main__":
    app.run(main)
