"""Segmentation k-fold training on any Keras 3 backend (JAX, TensorFlow, torch): ``run(config,
workdir) -> dict``, without importing TensorFlow unless the backend is TensorFlow.

The same configs (``configs/seg_*.py``), models, losses and folds as ``seg_lib``; the input is
``spoils_tf.data.seg_arrays`` (NumPy arrays through a ``keras.utils.PyDataset``) instead of
tf.data, so the JAX backend trains on a machine without TensorFlow (the lent GPU image).
Differences from ``seg_lib``, all on purpose:

* augmentation (``config.data.augment``; ``{}`` = none) is ``augment_layers.SegAugment``
  applied to each training batch as the ``SegBatches`` hook (:func:`batch_augment`: eagerly,
  on the backend's device, in the batch-preparing threads), whatever ``config.data.augment_on``
  says: ``DeviceAugmentedModel``'s train step is TensorFlow-only. Same magnitudes as the
  tf.data path, other random draws;
* ``time_budget_s``: a fold stops after the epoch at which the next one would overrun it;
* no TensorBoard / BackupAndRestore (a fold killed mid-way is retrained), and no
  ``model.keras`` per fold (the numbers are the product; ``seg_lib`` ships models);
* data from a pack file (``tools/gpu_pack.py``) when given, else the dataset dir or synthetic
  cohort that ``seg_lib`` would use.

Evaluation is ``seg_lib.evaluate_model``'s: the prediction at model resolution has its
letterbox padding cropped and is resized back to the slice's original size
(``seg_arrays.restore_resolution``) before the pooled metrics
(``spoils_tf.metrics.segmentation.SegmentationMetrics``).

Workdir layout::

    workdir/config.json                  the resolved config
    workdir/fold_<i>/history.csv         per-epoch loss/accuracy
    workdir/fold_<i>/metrics.json        test-fold metrics + timings
    workdir/cv_summary.json              Dice per fold, mean +- SD (ddof 1), backend, timings
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import pathlib
import random
import time
from typing import Any, Mapping, Optional, Sequence

import keras
import numpy as np

from spoils_tf import fileio, labels
from spoils_tf.data import folds as folds_lib
from spoils_tf.data import layout, seg_arrays
from spoils_tf.metrics import segmentation as seg_metrics
from spoils_tf.models import build_segmentation_model
from spoils_tf.models import losses as seg_losses

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


# === Runtime ===
def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and Keras' global ``SeedGenerator`` (what
    ``keras.utils.set_random_seed`` does, without importing TensorFlow to seed it when the
    backend is another; under the TensorFlow backend it calls that function)."""
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(int(seed))
        return
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, int(seed))
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(int(seed))
    np.random.seed(int(seed))


def accelerator() -> str:
    """``"gpu"``, ``"tpu"`` or ``"cpu"``: the platform the backend computes on."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return jax.devices()[0].platform
    if backend == "tensorflow":
        import tensorflow as tf
        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def configure_precision(mode: str = "auto") -> str:
    """Sets the global Keras dtype policy and returns its name. ``"auto"``: float32 on CPU;
    on a GPU ``mixed_float16`` under TensorFlow (as ``train.common``), ``mixed_bfloat16``
    otherwise (bf16 needs no loss scaling).

    Raises:
      ValueError: unknown mode.
    """
    if mode not in PRECISIONS:
        raise ValueError(f"config.train.precision: unknown {mode!r}; expected one of {PRECISIONS}")
    if mode == "auto":
        if accelerator() == "cpu":
            mode = "float32"
        else:
            mode = "mixed_float16" if keras.backend.backend() == "tensorflow" else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(mode)
    return mode


def optimizer(train_cfg) -> keras.optimizers.Optimizer:
    """``config.train.optimizer`` (``adam | adamw``) at ``config.train.learning_rate``.

    Raises:
      ValueError: another name.
    """
    if train_cfg.optimizer == "adam":
        return keras.optimizers.Adam(train_cfg.learning_rate)
    if train_cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(train_cfg.learning_rate,
                                      weight_decay=train_cfg.weight_decay)
    raise ValueError(f"config.train.optimizer: unknown {train_cfg.optimizer!r}; "
                     "expected adam | adamw")


def compile_model(config, *, jit_compile: Optional[bool] = None) -> keras.Model:
    """The config's segmentation model for ``config.data.image_size`` + 3 channels, compiled
    with its optimizer and loss and a pixel-accuracy metric (``jit_compile`` None = the
    config's)."""
    kwargs = dict(config.model.kwargs)
    kwargs["input_shape"] = tuple(config.data.image_size) + (3,)
    model = build_segmentation_model({"name": config.model.name, "kwargs": kwargs})
    jit = bool(config.train.jit_compile) if jit_compile is None else bool(jit_compile)
    model.compile(optimizer=optimizer(config.train),
                  loss=seg_losses.segmentation_loss(config.train.get("loss", "ce")),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit)
    return model


# === Data ===
def resolve_dataset_dir(config, workdir: pathlib.Path) -> pathlib.Path:
    """``config.data.labelme_dir`` when it holds ``labelme/``, else the synthetic cohort of
    ``config.data.synthetic`` written once into ``workdir/synthetic`` (``seg_lib``'s rule)."""
    from spoils_tf.data import synthetic
    return synthetic.dataset_or_synthetic(config.data.labelme_dir, workdir,
                                          config.data.synthetic, progress=False)[0]


def load_folds(dataset_dir: pathlib.Path, config) -> folds_lib.Folds:
    """``config.data.folds_path`` or ``dataset_dir/folds.json``, written with
    ``folds_lib.write_dataset_folds`` (k ``config.data.k``, seed ``config.seed``) if missing
    (``folds_lib.ensure_dataset_folds``, as ``seg_lib``)."""
    return folds_lib.ensure_dataset_folds(dataset_dir, config.data.folds_path,
                                          k=config.data.k, seed=config.seed)


# === Training ===
def batch_augment(augment_cfg: Mapping[str, float]):
    """The ``SegBatches`` augment hook: ``(uint8 [B, S, S], uint8 [B, S, S], rng) ->
    (float32 [B, S, S] 0..255, uint8 [B, S, S])`` through ``augment_layers.SegAugment``.

    Each batch gets a layer seeded from ``rng`` (a NumPy generator derived from the seed, the
    epoch and the batch index), so batches are reproducible and the worker threads share no
    random state.
    """
    from spoils_tf.data import augment_layers
    cfg = {k: float(v) for k, v in augment_cfg.items()}

    def apply(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator):
        layer = augment_layers.SegAugment(cfg, seed=int(rng.integers(2**31 - 1)),
                                          dtype="float32")   # not the bf16 policy
        out_images, out_masks = layer((images[..., None], masks), training=True)
        return (keras.ops.convert_to_numpy(out_images)[..., 0],
                keras.ops.convert_to_numpy(out_masks))

    return apply


class EpochTimer(keras.callbacks.Callback):
    """Records wall seconds per epoch and stops training when another epoch would end after
    ``deadline`` (``time.perf_counter()`` seconds; None = never)."""

    def __init__(self, deadline: Optional[float] = None):
        super().__init__()
        self.deadline = deadline
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.seconds.append(now - self._start)
        if self.deadline is not None:
            typical = self.seconds[-1] if len(self.seconds) == 1 else min(self.seconds[1:])
            if now + typical > self.deadline:
                self.model.stop_training = True


def evaluate(model: keras.Model, arrays: seg_arrays.SegArrays, indices: Sequence[int],
             batch_size: int = 8) -> dict[str, float]:
    """Pooled metrics of ``model`` on ``arrays[indices]`` at each slice's original resolution.

    A short last batch is padded to ``batch_size`` (copies of its last slice, not scored), so
    one compiled predict step serves every batch. The resizing back to the original size and
    the argmax run in a thread pool (NumPy releases the GIL); slices are scored in order.

    Returns:
      ``SegmentationMetrics.result()`` plus ``"slices"``.
    """
    acc = seg_metrics.SegmentationMetrics()
    indices = np.asarray(indices)

    def label_map(item: tuple[np.ndarray, int]) -> np.ndarray:
        probs, i = item
        h, w = arrays.original_masks[i].shape
        full = seg_arrays.restore_resolution(probs, h, w, arrays.resize_mode)
        return np.argmax(full, axis=-1).astype(np.int32)

    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            padded = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])])
            x = seg_arrays.normalize_images(arrays.images[padded])
            probs = np.asarray(model.predict_on_batch(x), np.float32)[:len(idx)]
            for i, pred in zip(idx, pool.map(label_map, zip(probs, idx))):
                acc.update(arrays.original_masks[i].astype(np.int32), pred)
    out = acc.result()
    out["slices"] = float(len(indices))
    return out


def train_fold(config, fold_dir: str | pathlib.Path, arrays: seg_arrays.SegArrays,
               train_patients: Sequence[str], test_patients: Sequence[str], *,
               keys: Optional[Sequence[str]] = None, epochs: Optional[int] = None,
               deadline: Optional[float] = None, jit_compile: Optional[bool] = None,
               init_weights: Optional[str | pathlib.Path] = None,
               complete_last: bool = False, workers: int = 1) -> dict[str, Any]:
    """Trains one fold with ``model.fit`` on a :class:`seg_arrays.SegBatches` and scores it.

    Args:
      epochs: None = ``config.train.epochs``.
      deadline: ``time.perf_counter()`` time after which no epoch may end (EpochTimer).
      jit_compile: None = ``config.train.jit_compile``.
      init_weights: a ``.weights.h5`` of this architecture to start from (Keras weight files
        are backend-independent: the same start under TensorFlow and JAX); None = fresh.
      complete_last: every training batch full (``SegBatches``; one XLA program).
      workers: PyDataset threads preparing batches.

    Returns:
      :func:`evaluate` keys plus ``train_seconds``, ``epoch_seconds``, ``epochs_run``,
      ``train_loss`` (per epoch), ``train_images_per_s`` (epochs after the first, which
      includes compilation), ``eval_seconds``, patients, ``augmented``.
    """
    fold_dir = pathlib.Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    train_idx = arrays.indices(train_patients, keys)
    test_idx = arrays.indices(test_patients, keys)
    augment_cfg = dict(config.data.augment or {})
    batches = seg_arrays.SegBatches(arrays, train_idx, int(config.train.batch_size),
                                    shuffle=True, seed=int(config.seed),
                                    augment=batch_augment(augment_cfg) if augment_cfg else None,
                                    complete_last=complete_last, workers=workers)
    model = compile_model(config, jit_compile=jit_compile)
    if init_weights is not None:
        model.load_weights(str(init_weights))
    timer = EpochTimer(deadline)
    start = time.perf_counter()
    history = model.fit(batches, epochs=int(epochs or config.train.epochs),
                        callbacks=[timer, keras.callbacks.CSVLogger(str(fold_dir / "history.csv"))],
                        verbose=config.train.verbose)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(model, arrays, test_idx, int(config.train.batch_size))
    steady = timer.seconds[1:]
    metrics.update({
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start,
            "epoch_seconds": list(timer.seconds),
            "epochs_run": list(history.epoch),
            "train_loss": [float(v) for v in history.history.get("loss", [])],
            "train_images_per_s": (_images_per_epoch(batches) * len(steady) / sum(steady))
            if steady else float("nan"),
            "train_slices": int(len(train_idx)),
            "train_patients": len(train_patients),
            "test_patients": len(test_patients),
            "augmented": bool(augment_cfg),
    })
    return metrics


def measure_train_throughput(config, *, jit_compile: bool, steps: int, warmup: int = 2,
                             seed: int = 0) -> dict[str, Any]:
    """Training speed of the config's model: ``model.train_on_batch`` on one random batch of
    ``config.train.batch_size`` normalised images at ``config.data.image_size``, already on
    the device, under the current dtype policy (:func:`configure_precision`).

    Each step's wall time ends when its loss reaches the host (``train_on_batch`` returns
    Python floats), so asynchronous dispatch cannot hide work.

    Returns:
      ``{"jit_compile", "batch_size", "image_size", "warmup_s" (all warm-up steps, compilation
      included), "step_s" (each timed step), "median_step_s", "images_per_s" (batch / median
      step), "loss_first", "loss_last", "params"}``.

    Raises:
      ValueError: ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    set_seed(seed)
    model = compile_model(config, jit_compile=jit_compile)
    batch = int(config.train.batch_size)
    size = tuple(int(s) for s in config.data.image_size)
    rng = np.random.default_rng(seed)
    x = seg_arrays.normalize_images(rng.integers(0, 256, (batch,) + size, dtype=np.uint8))
    y = rng.integers(0, labels.NUM_SEG_CLASSES, (batch,) + size).astype(np.int32)
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    start = time.perf_counter()
    first = None
    for _ in range(warmup):
        loss = model.train_on_batch(x, y)
        first = first if first is not None else loss
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    as_float = lambda v: float(v[0] if isinstance(v, (list, tuple)) else v)  # noqa: E731
    return {"jit_compile": bool(jit_compile), "batch_size": batch, "image_size": list(size),
            "warmup_steps": int(warmup), "warmup_s": warmup_s, "step_s": times,
            "median_step_s": median, "images_per_s": batch / median,
            "loss_first": as_float(first if first is not None else loss),
            "loss_last": as_float(loss), "params": int(model.count_params()),
            "dtype_policy": keras.mixed_precision.global_policy().name}


def _images_per_epoch(batches: seg_arrays.SegBatches) -> int:
    if batches.complete_last:
        return len(batches) * batches.batch_size
    return len(batches.indices)


# === Reporting ===
def summarize(fold_metrics: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Dice (foreground macro, pixel accuracy, level accuracy) per fold and mean +- sample SD
    (ddof 1; 0 for one fold), in [0, 1]."""
    folds = sorted(fold_metrics)
    out: dict[str, Any] = {"folds": folds, "n_folds": len(folds)}
    for key in ("dice/fg_macro", "pixel_accuracy", "level_accuracy"):
        values = np.asarray([fold_metrics[f][key] for f in folds], np.float64)
        finite = values[~np.isnan(values)]
        out[key] = {"per_fold": {str(f): float(v) for f, v in zip(folds, values)},
                    "mean": float(finite.mean()) if finite.size else math.nan,
                    "sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0}
    out["per_class_dice_mean"] = {
            c: float(np.nanmean([fold_metrics[f][f"dice/{c}"] for f in folds]))
            for c in labels.SEG_NAMES}
    return out


# === Entry ===
def run(config, workdir: str | pathlib.Path, *, pack: Optional[str | pathlib.Path] = None,
        arrays: Optional[seg_arrays.SegArrays] = None, folds=None,
        time_budget_s: float = 0.0, jit_compile: Optional[bool] = None,
        init_weights: Optional[str | pathlib.Path] = None, complete_last: bool = False,
        workers: int = 1) -> dict[str, Any]:
    """Trains and scores ``config.fold`` (``"all"``, ``"3"``, ``"0,2"``) on the current Keras
    backend and writes the workdir layout of the module docstring.

    Args:
      pack: a ``seg_arrays.save_npz`` file (``tools/gpu_pack.py``); its ``folds.json`` is
        read from the same folder unless ``folds`` is given. Its slices are used as they are
        (the pack already chose them; ``config.data.max_slices_per_patient`` is not applied).
      arrays, folds: inject data (tests); else the pack or the config's dataset.
      time_budget_s: > 0: all folds together end within this many seconds of training (each
        fold gets an equal share of what is left; at least one epoch each).
      jit_compile: None = ``config.train.jit_compile``.
      init_weights: every fold starts from these weights (``train_fold``).
      complete_last, workers: as ``train_fold``.

    Returns:
      ``{"folds": {i: metrics}, "summary": summarize(...), "backend", "precision"}``.

    Raises:
      ValueError: a bad fold spec, or a fold with no example in the data.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fileio.save_config(config, workdir)
    set_seed(config.seed)
    precision = configure_precision(config.train.precision)
    if arrays is None and pack is not None:
        arrays = seg_arrays.load_npz(pack)
        if folds is None:
            folds = folds_lib.load_folds(pathlib.Path(pack).parent / layout.FOLDS_JSON)
    if arrays is None or folds is None:
        dataset_dir = resolve_dataset_dir(config, workdir)
        if arrays is None:
            arrays = seg_arrays.from_dataset_dir(
                    dataset_dir, tuple(config.data.image_size), config.data.resize_mode,
                    int(config.data.max_slices_per_patient))
        if folds is None:
            folds = load_folds(dataset_dir, config)
    if arrays.image_size != tuple(int(s) for s in config.data.image_size):
        raise ValueError(f"data at {arrays.image_size}, config.data.image_size "
                         f"{tuple(config.data.image_size)}: pack and config disagree")
    fold_ids = _parse_folds(str(config.fold), folds.k)
    start = time.perf_counter()
    results: dict[int, dict[str, Any]] = {}
    for n, fold in enumerate(fold_ids):
        deadline = None
        if time_budget_s > 0:
            left = time_budget_s - (time.perf_counter() - start)
            deadline = time.perf_counter() + left / (len(fold_ids) - n)
        train_patients, test_patients = folds.split(fold)
        log.info("fold %d: %d train / %d test patients", fold, len(train_patients),
                 len(test_patients))
        metrics = train_fold(config, workdir / f"fold_{fold}", arrays, train_patients,
                             test_patients, deadline=deadline, jit_compile=jit_compile,
                             init_weights=init_weights, complete_last=complete_last,
                             workers=workers)
        metrics.update({"fold": fold, "precision_policy": precision,
                        "backend": keras.backend.backend()})
        fileio.write_json(workdir / f"fold_{fold}" / "metrics.json", metrics, sort_keys=True)
        results[fold] = metrics
    summary = summarize(results)
    summary.update({"backend": keras.backend.backend(), "precision_policy": precision,
                    "accelerator": accelerator(), "seconds": time.perf_counter() - start,
                    "slices": int(len(arrays.keys)), "image_size": list(arrays.image_size),
                    "augmented": any(m["augmented"] for m in results.values()),
                    "keras": keras.__version__})
    fileio.write_json(workdir / "cv_summary.json", summary, sort_keys=True)
    return {"folds": results, "summary": summary, "backend": keras.backend.backend(),
            "precision": precision}


def _parse_folds(spec: str, k: int) -> list[int]:
    """``"all"`` -> 0..k-1, ``"3"`` -> [3], ``"0,2"`` -> [0, 2] (``seg_lib.parse_fold_spec``).

    Raises:
      ValueError: not integers, or outside 0..k-1.
    """
    spec = spec.strip()
    if spec == "all":
        return list(range(k))
    try:
        out = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"fold: expected 'all' or integers like '3' or '0,2', "
                         f"got {spec!r}") from None
    if not out or any(not 0 <= f < k for f in out):
        raise ValueError(f"fold: folds must be in 0..{k - 1}, got {spec!r}")
    return out

