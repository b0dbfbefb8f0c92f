"""Segmentation, patient-level k-fold CV: a thin entry around ``spoils_tf.train.seg_lib.run``.

    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:smoke --workdir=runs/seg_smoke
    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:cpu --fold=all \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/seg_cpu
    python -m experiments.seg --config=configs/seg_unet.py:paper --fold=3 --strategy=mirrored \
        --workdir=runs/unet_paper
    python -m experiments.seg --config=configs/seg_unet.py:spider_cpu --fold=final \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/seg_unet_spider_cpu

``--fold=final`` (fixed-spacing configs) trains on every patient of the folds file: the model
that is shipped; it has no held-out fold, its numbers come from the cross-validation.
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
    if result.get("final") is not None:
        m = result["final"]
        print(f"final model ({m['train_patients']} patients, {m['steps']} steps, "
              f"{m['train_seconds'] / 60:.1f} min): {_FLAGS.workdir.value}/final/model.keras")
    elif result["summary"] is not None and "metrics" in result["summary"]:
        from spoils_tf.train import seg_spacing_report
        print(seg_spacing_report.table_markdown(result["summary"]))
    elif result["summary"] is not None:
        print(seg_lib.table_markdown(result["summary"]))
    else:
        for fold, metrics in result["folds"].items():
            prefix = "middle/levels/" if "middle/levels/dice/fg_macro" in metrics else ""
            print(f"fold {fold}{' (middle slices, after level labelling)' if prefix else ''}: "
                  f"pixel accuracy {metrics[prefix + 'pixel_accuracy']:.4f}, "
                  f"Dice fg-macro {metrics[prefix + 'dice/fg_macro']:.4f}, "
                  f"level accuracy {metrics[prefix + 'level_accuracy']:.4f}")


if __name__ == "__main__":
    app.run(main)
