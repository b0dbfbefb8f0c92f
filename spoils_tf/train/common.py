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

import json
import logging
import os
import platform
from typing import Any, Mapping, Optional

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def configure_cpu_replicas(n: int) -> list[str]:
    """Splits the host CPU into ``n`` logical devices ``/device:CPU:0 .. n-1`` and returns
    their names, so that ``get_strategy("mirrored")`` on a machine without GPUs runs ``n``
    replicas (one process, the same threads shared: for testing distribution, not for speed).

    Must run before TensorFlow initialises its devices, i.e. before the process's first
    tensor, model or dataset (importing TensorFlow is fine).

    Raises:
      ValueError: ``n < 1``.
      RuntimeError: TensorFlow's devices are already initialised.
    """
    if int(n) < 1:
        raise ValueError(f"cpu_replicas: expected an integer >= 1, got {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(n))])
    except RuntimeError as e:
        raise RuntimeError(
                f"cpu_replicas={n}: TensorFlow has already initialised its devices ({e}); "
                "split the CPU first thing in a fresh process (python -m experiments.seg "
                "--cpu_replicas=N does)") from e
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """All local GPUs; without GPUs, the logical CPU devices (:func:`configure_cpu_replicas`)."""
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(cpus) > 1:
        log.info("--strategy=mirrored: no GPU visible; %d replicas on the logical CPU devices %s",
                 len(cpus), cpus)
    else:
        log.warning("--strategy=mirrored: no GPU visible and the CPU is one device, so this is "
                    "one replica on %s (the same training as --strategy=default); "
                    "--cpu_replicas=N splits the CPU into N replicas to test distribution",
                    cpus[0])
    return tf.distribute.MirroredStrategy(devices=cpus)


def check_tf_config(environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` of a multi-worker run, checked.

    Expected (one line of JSON in the environment of every worker; ``index`` differs)::

        {"cluster": {"worker": ["host0:12345", "host1:12345"]},
         "task": {"type": "worker", "index": 0}}

    Raises:
      ValueError: ``TF_CONFIG`` is unset, not JSON, or lacks ``cluster.worker`` (a list of
        ``host:port``) or a ``task`` whose ``type``/``index`` names one of its entries.
    """
    environ = os.environ if environ is None else environ
    example = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    raw = environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ValueError(f"--strategy=multi_worker: TF_CONFIG is not set; set it on every worker, "
                         f"e.g. TF_CONFIG='{example}' (task.index differs per worker)")
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG: not JSON ({e}); expected e.g. {example}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker", []), list) or not (
            cluster.get("worker") or cluster.get("chief")):
        raise ValueError(f"TF_CONFIG.cluster: expected a list of host:port under 'worker' "
                         f"(and optionally 'chief'), got {cluster!r}; e.g. {example}")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(
            task.get("index"), int) or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ValueError(f"TF_CONFIG.task: expected {{'type': one of {sorted(cluster)}, "
                         f"'index': an entry of that list}}, got {task!r}")
    return tf_config


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``tf.distribute.MultiWorkerMirroredStrategy`` whose :meth:`reduce` takes what Keras 3's
    TensorFlow trainer passes it (keras-team/keras#20585; pinned by tests/test_distribute.py).

    * a nest of values, as ``MirroredStrategy.reduce`` does: ``fit`` reduces a whole
      ``(x, y)`` batch when it builds the model, which the plain class refuses ("Attempt to
      convert a value (PerReplica...) to a Tensor");
    * ``axis=0`` on per-replica scalars (the loss and metric logs of each step), which is the
      reduction across replicas alone (``axis=None``) rather than an error ("Invalid reduction
      dimension 0 for input with 0 dimensions").
    """

    def reduce(self, reduce_op, value, axis):
        """``tf.distribute.Strategy.reduce`` applied to every leaf of ``value``."""
        parent = super()

        def leaf(v):
            local = self.experimental_local_results(v)[0] if isinstance(
                    v, tf.distribute.DistributedValues) else v
            leaf_axis = None if axis is not None and local.shape.rank == 0 else axis
            return parent.reduce(reduce_op, v, leaf_axis)

        return tf.nest.map_structure(leaf, value)


def get_strategy(name: str = "default", tpu_address: str = "") -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name.

    ``default``: the no-op default strategy (one device); ``mirrored``: all local GPUs, or
    without GPUs the logical CPU devices of :func:`configure_cpu_replicas` (one CPU device:
    one replica, with a warning); ``multi_worker``: :class:`MultiWorkerMirroredStrategy`
    configured from ``TF_CONFIG`` (:func:`check_tf_config`); ``tpu``: ``TPUStrategy`` on
    ``tpu_address`` (a TPU name or ``grpc://host:8470``; "" = the local Cloud TPU VM).

    Raises:
      ValueError: unknown name, or a missing/malformed ``TF_CONFIG`` for ``multi_worker``.
      RuntimeError: ``tpu`` and no TPU answered at ``tpu_address``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored_strategy()
    if name == "multi_worker":
        check_tf_config()
        return MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            raise RuntimeError(f"--strategy=tpu: no TPU at "
                               f"{tpu_address or 'this machine (Cloud TPU VM)'}: {e}") from e
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
    from spoils_tf import machine
    cpu_model = machine.cpu_model()
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
