"""The TensorFlow runtime of the Keras trainers: distribution strategy, precision, seeds,
determinism, machine facts.

Importing this module imports TensorFlow; code without a Keras model (the scikit-learn
trainers, tables, file writers) uses ``spoils_tf.fileio`` and never imports it.

Precision modes (``config.train.precision``):

* ``"auto"``: ``mixed_float16`` when a GPU is visible (Tensor Cores; Keras wraps the
  optimizer in a ``LossScaleOptimizer``), else ``float32``.
* ``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"`` (bf16 compute on CPUs with AVX-512
  BF16 / AMX, float32 variables; no loss scaling needed).

Models keep their final softmax in float32 whatever the policy.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import keras
import tensorflow as tf

STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def get_strategy(name: str = "default", tpu_address: str = "") -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name.

    ``default``: the no-op default strategy (one device); ``mirrored``: all local GPUs;
    ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``;
    ``tpu``: ``TPUStrategy`` on ``tpu_address`` ("" = the local / Cloud TPU VM).

    Raises:
      ValueError: unknown name.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy: unknown strategy {name!r}; expected one of {STRATEGIES}")


def configure_precision(mode: str = "auto") -> str:
    """Sets the global Keras dtype policy and returns its name.

    Raises:
      ValueError: unknown mode.
    """
    if mode not in PRECISIONS:
        raise ValueError(f"config.train.precision: unknown {mode!r}; expected one of {PRECISIONS}")
    if mode == "auto":
        mode = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(mode)
    return mode


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


def enable_determinism() -> None:
    """Makes every later TensorFlow op in this process deterministic (process-wide, not undone).

    With :func:`set_seed` before each training, the same run gives the same weights and the
    same printed numbers on the same machine; some ops run slower. Used by ``make demo``.
    """
    tf.config.experimental.enable_op_determinism()


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, TF/Keras versions and visible accelerators (for benchmark JSON)."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in f
                              if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_model": cpu_model,
            "cpu_count": os.cpu_count(),
            "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }
