"""What a Keras trainer does differently under ``tf.distribute``: who writes, what every
worker must still run, how the input is split, and how a killed run resumes.

The rules (Keras' multi-worker pattern):

* Every worker runs the same program on the same data pipeline (same seeds). Only the
  *chief* (``TF_CONFIG`` task ``chief``, or ``worker`` 0 when there is no ``chief`` job;
  always the one process of the other strategies) writes outputs. The other workers still
  execute every save (a save may need all workers), into a temporary folder that is removed
  (:func:`worker_output_dir`).
* The training input is split at the data level (:func:`training_input`): each worker
  reads the whole pipeline and keeps its share of every global batch, so a global batch is
  the same examples whatever the number of workers.
* ``BatchNormalization`` computes its statistics over the global batch
  (:func:`synchronize_batchnorm`), so N replicas train the same network as one device with
  the same global batch.
* :class:`BackupAndRestore` (the Keras callback, multi-worker safe): the chief writes the
  backup atomically at each epoch end; every worker restores from it, so on a cluster its
  folder must be on a filesystem every worker reads (NFS, GCS). The input is positioned at
  the epoch trained (:func:`training_input`), so a resumed run sees the same shuffles and
  augmentations as an uninterrupted one, and N replicas the same as one device.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Iterator

import keras
import tensorflow as tf


# === Roles ===
def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a ``MultiWorkerMirroredStrategy`` (any number of workers)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: True except on the non-chief workers of a
    ``MultiWorkerMirroredStrategy`` (chief = task ``chief``, or ``worker`` 0 when the cluster
    has no ``chief`` job)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs


@contextlib.contextmanager
def worker_output_dir(workdir: str | os.PathLike, chief: bool) -> Iterator[pathlib.Path]:
    """Yields where this process writes: ``workdir`` for the chief, else a fresh temporary
    folder that is removed on exit (whatever happens)."""
    if chief:
        yield pathlib.Path(workdir)
        return
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="spoils_worker_"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_same_on_all_workers(strategy: tf.distribute.Strategy, value: int, what: str) -> None:
    """Raises unless every worker of a multi-worker strategy holds the same ``value`` (one
    collective: every worker must call this at the same point). No-op otherwise.

    Raises:
      RuntimeError: the workers disagree; names ``what`` and the smallest and largest value.
    """
    if not is_multi_worker(strategy):
        return
    spec = strategy.cluster_resolver.cluster_spec()
    if sum(spec.num_tasks(job) for job in spec.jobs) < 2:
        return

    @tf.function
    def gather():
        def per_replica():
            ctx = tf.distribute.get_replica_context()
            return ctx.all_gather(tf.constant([float(value)], tf.float32), axis=0)
        return strategy.run(per_replica)

    values = strategy.experimental_local_results(gather())[0].numpy()
    if values.min() != values.max():
        raise RuntimeError(f"workers disagree on {what}: smallest {values.min():g}, "
                           f"largest {values.max():g}")


# === Model ===
def synchronize_batchnorm(model: keras.Model) -> int:
    """Makes every ``BatchNormalization`` layer of ``model`` (nested models included: anything
    listed in a ``.layers``) compute its batch statistics over all replicas
    (``synchronized=True``, TensorFlow backend; one replica: the plain statistics). Returns
    how many layers were switched.

    Call it before the first training step (the setting is read when the step is traced);
    it is kept in the layer config of a saved model.
    """
    switched = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            switched += 1
        elif hasattr(layer, "layers"):
            switched += synchronize_batchnorm(layer)
    return switched


# === Input ===
def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with data-level auto-sharding: under a multi-worker strategy each worker
    runs the whole pipeline and keeps its part of every global batch (file-level sharding,
    the default, would split the TFDS files, of which there may be fewer than workers).
    Other strategies ignore the option."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def training_input(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
                   first_epoch: int = 0):
    """The training input of ``model.fit`` under ``strategy``, positioned at ``first_epoch``.

    ``dataset`` yields global batches and reshuffles / re-draws its augmentation seeds on each
    pass (``reshuffle_each_iteration``, ``rerandomize_each_iteration``), so what epoch ``e``
    draws depends on how many passes were started before it. Under any strategy but the
    default one, Keras' TensorFlow trainer starts one pass before epoch 0 to build the model
    (it reads one batch); under the default strategy this function starts that pass itself,
    so epoch ``e`` is pass ``e + 1`` whatever the strategy: one device and N replicas see the
    same global batches. Resuming at ``first_epoch`` (:meth:`BackupAndRestore.resume_epoch`)
    starts and drops ``first_epoch`` more passes, so the resumed epochs draw what an
    uninterrupted run draws.

    Returns:
      a ``tf.distribute.DistributedDataset`` (data-sharded, :func:`shard_by_data`); the
      dataset itself under the default strategy.
    """
    with strategy.scope():
        keras_starts_a_pass = tf.distribute.has_strategy()
    distributed = strategy.experimental_distribute_dataset(shard_by_data(dataset))
    for _ in range(int(first_epoch) + (0 if keras_starts_a_pass else 1)):
        iter(distributed)   # a new pass: advances the shuffle and augmentation seeds
    return distributed


# === Backup ===
class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` (per epoch) for one worker of any strategy.

    The chief writes ``latest.weights.h5`` and ``training_metadata.json`` atomically into
    ``backup_dir`` and removes the folder after a finished ``fit``; another worker runs the
    same weight save into a temporary folder that is removed, and never touches
    ``backup_dir``. Every worker restores from ``backup_dir``.

    Args:
      backup_dir: the backup folder (shared by all workers of a cluster).
      chief: whether this process writes (:func:`is_chief`).
    """

    def __init__(self, backup_dir: str | os.PathLike, *, chief: bool = True):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=True)
        self.chief = bool(chief)

    def resume_epoch(self) -> int:
        """The epoch a ``fit`` with this callback starts at (0 without a backup).

        Raises:
          ValueError: ``training_metadata.json`` exists but has no integer ``epoch``.
        """
        path = pathlib.Path(self._training_metadata_path)
        if not path.is_file():
            return 0
        try:
            epoch = json.loads(path.read_text(encoding="utf-8"))["epoch"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: expected JSON with an integer 'epoch' ({e})") from e
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"{path}: 'epoch' must be an integer >= 0, got {epoch!r}")
        return epoch

    def _save_model(self) -> None:
        if not self.chief:
            with tempfile.TemporaryDirectory(prefix="spoils_worker_backup_") as tmp:
                self.model.save_weights(os.path.join(tmp, "latest.weights.h5"))
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        pid = os.getpid()
        weights_tmp = os.path.join(self.backup_dir, f".latest.{pid}.tmp.weights.h5")
        meta_tmp = os.path.join(self.backup_dir, f".training_metadata.{pid}.tmp.json")
        try:
            self.model.save_weights(weights_tmp, overwrite=True)
            with open(meta_tmp, "w", encoding="utf-8") as f:
                json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
            os.replace(weights_tmp, self._weights_path)
            os.replace(meta_tmp, self._training_metadata_path)
        finally:
            for tmp in (weights_tmp, meta_tmp):
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def on_train_end(self, logs=None) -> None:
        if self.chief:
            super().on_train_end(logs)
