"""Segmentation, patient-level k-fold CV: a thin entry around ``spoils_tf.train.seg_lib.run``.

    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:smoke --workdir=runs/seg_smoke
    python -m experiments.seg --config=configs/seg_deeplabv3plus.py:cpu --fold=all \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/seg_cpu
    python -m experiments.seg --config=configs/seg_unet.py:paper --fold=3 --strategy=mirrored \
        --workdir=runs/unet_paper
    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \
      python -m experiments.seg --config=configs/seg_unet.py:paper --fold=3 \
        --strategy=multi_worker --workdir=/shared/runs/unet_paper    # the same on host1, index 1
    python -m experiments.seg --config=configs/seg_unet.py:paper --fold=3 --strategy=tpu \
        --tpu=local --workdir=gs://bucket/runs/unet_paper
    python -m experiments.seg --config=configs/seg_unet.py:spider_cpu --fold=final \
        --config.data.labelme_dir=runs/data/spider --workdir=runs/seg_unet_spider_cpu

``--fold=final`` (fixed-spacing configs) trains on every patient of the folds file: the model
that is shipped; it has no held-out fold, its numbers come from the cross-validation.

``--strategy``: ``spoils_tf.train.common.get_strategy``; ``config.train.batch_size`` is the
global batch whatever the number of replicas. ``--cpu_replicas=N`` splits a GPU-less host's
CPU into N devices for ``--strategy=mirrored`` (a test of distribution, not a speed-up);
``--deterministic`` makes every TensorFlow op deterministic (same weights on a rerun).
"""

from __future__ import annotations

from absl import app, flags

from experiments import common

_FLAGS = common.define_flags("configs/seg_deeplabv3plus.py:smoke")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                              "tf.distribute strategy (multi_worker reads TF_CONFIG)")
_TPU = flags.DEFINE_string("tpu", "", "--strategy=tpu: TPU name or grpc://host:8470 "
                           "('' or 'local' = this Cloud TPU VM)")
_CPU_REPLICAS = flags.DEFINE_integer("cpu_replicas", 0, "split the CPU into this many logical "
                                     "devices (--strategy=mirrored without GPUs; 0 = no split)")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False, "deterministic TensorFlow ops")


def train(argv: list[str], extra_callbacks=()) -> None:
    """``main`` with more Keras callbacks for every fold's ``fit`` (tools/seg_worker.py)."""
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import common as train_common
    from spoils_tf.train import seg_lib

    if _CPU_REPLICAS.value:
        train_common.configure_cpu_replicas(_CPU_REPLICAS.value)
    if _DETERMINISTIC.value:
        train_common.enable_determinism()
    result = seg_lib.run(config, _FLAGS.workdir.value, strategy_name=_STRATEGY.value,
                         tpu_address=_TPU.value, extra_callbacks=extra_callbacks)
    if not result.get("chief", True):
        print(f"worker done; the chief writes the results into {_FLAGS.workdir.value}")
    elif result.get("final") is not None:
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


def main(argv: list[str]) -> None:
    train(argv)


if __name__ == "__main__":
    app.run(main)
