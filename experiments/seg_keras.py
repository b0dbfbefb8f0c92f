"""Segmentation k-fold CV on any Keras 3 backend (NumPy input, no tf.data): a thin entry around
``spoils_tf.train.keras_backend_lib.run``. The backend is Keras' (``KERAS_BACKEND``).

    KERAS_BACKEND=jax python -m experiments.seg_keras \
        --config=configs/seg_deeplabv3plus.py:smoke --jit_compile --workdir=runs/seg_keras_smoke
    KERAS_BACKEND=jax python -m experiments.seg_keras --config=configs/seg_deeplabv3plus.py:paper \
        --pack=.gpu_pack/spider_512.npz --time_budget_s=420 --workdir=$OUT/cv
"""

from __future__ import annotations

from absl import app, flags

from experiments import common

_FLAGS = common.define_flags("configs/seg_deeplabv3plus.py:smoke")
_PACK = flags.DEFINE_string("pack", None, "segmentation pack (.npz from tools/gpu_pack.py) "
                            "instead of the config's dataset")
_BUDGET = flags.DEFINE_float("time_budget_s", 0.0, "all folds' training within this many "
                             "seconds (0 = config.train.epochs each)")
_JIT = flags.DEFINE_bool("jit_compile", None, "override config.train.jit_compile (under JAX "
                         "XLA is much faster than op-by-op, also on a CPU)")


def main(argv: list[str]) -> None:
    config = common.config_from_flags(argv, _FLAGS)
    from spoils_tf.train import keras_backend_lib

    result = keras_backend_lib.run(config, _FLAGS.workdir.value, pack=_PACK.value,
                                   time_budget_s=_BUDGET.value, jit_compile=_JIT.value)
    s = result["summary"]
    for fold, m in result["folds"].items():
        print(f"fold {fold}: Dice fg-macro {m['dice/fg_macro']:.4f}, "
              f"epochs {len(m['epochs_run'])}, loss {m['train_loss'][0]:.4f} -> "
              f"{m['train_loss'][-1]:.4f}")
    d = s["dice/fg_macro"]
    print(f"{result['backend']} ({s['accelerator']}, {result['precision']}): Dice fg-macro "
          f"{d['mean']:.4f} ± {d['sd']:.4f} over {s['n_folds']} folds")


if __name__ == "__main__":
    app.run(main)
