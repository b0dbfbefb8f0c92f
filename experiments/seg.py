"""Segmentation, patient-level k-fold CV: a thin entry around ``spoils_tf.train.seg_lib.run``.

    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:smoke --workdir=runs/seg_smoke
    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:cpu --fold=all \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/seg_cpu
    python -m experiments.seg --config=configs/seg_unet.py:paper --fold=3 --strategy=mirrored \
        --workdir=runs/unet_paper
"""

from __future__ import annotations

from absl import app, flags

from experiments import common

_FLAGS = common.define_flags("configs/seg_deeplabv3plus.py:smoke")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                              "tf.distribute strategy")


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import seg_lib

    result = seg_lib.run(config, _FLAGS.workdir.value, strategy_name=_STRATEGY.value)
    if result["summary"] is not None:
        print(seg_lib.table_markdown(result["summary"]))
    else:
        for fold, metrics in result["folds"].items():
            print(f"fold {fold}: pixel accuracy {metrics['pixel_accuracy']:.4f}, "
                  f"Dice fg-macro {metrics['dice/fg_macro']:.4f}, "
                  f"level accuracy {metrics['level_accuracy']:.4f}")


if __name__ == "__main__":
    app.run(main)
