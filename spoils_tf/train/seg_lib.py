"""Segmentation training + patient-level k-fold evaluation: ``run(config, workdir) -> dict``.

One call trains and evaluates the folds named by ``config.fold`` (``"all"``, ``"3"``,
``"0,2"``) and, when more than one fold has results, writes the paper-style table.

Workdir layout::

    workdir/config.json                  the resolved config
    workdir/fold_<i>/model.keras         trained model (Keras 3 format)
    workdir/fold_<i>/metrics.json        test-fold metrics (pooled confusion matrix, see
                                         spoils_tf.metrics.segmentation) + timings
    workdir/fold_<i>/history.csv         per-epoch loss/accuracy (appended across restarts)
    workdir/fold_<i>/logs/               TensorBoard
    workdir/fold_<i>/backup/             BackupAndRestore state (removed after a finished fit)
    workdir/seg_cv_table.{md,csv,json}   mean +- SD over folds beside the paper's numbers
    workdir/seg_cv_per_class_dice.{md,csv}

Resuming: a fold whose ``metrics.json`` exists is not retrained (its metrics are reused); a
fold killed mid-training resumes at its last finished epoch (``BackupAndRestore``).

Data (``config.data.labelme_dir``): a spoils dataset dir (SPIDER converted with
``spoils convert-spider``) when it exists, else a synthetic cohort generated into
``workdir/synthetic`` with ``spoils synth``. Folds come from the dataset's ``folds.json``
(written by ``spoils folds`` when missing), so every model sees the same patient split.
Evaluation runs at each slice's original resolution through ``seg_pipeline.make_predictor``
(the exported serving path): the letterbox padding is never scored.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import pathlib
import time
from typing import Any, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from spoils_tf import fileio, labels
from spoils_tf.data import augment_layers, seg_pipeline, synthetic
from spoils_tf.data import folds as folds_lib
from spoils_tf.metrics import tables
from spoils_tf.metrics import segmentation as seg_metrics
from spoils_tf.models import build_segmentation_model
from spoils_tf.models import losses as seg_losses
from spoils_tf.train import common, distribute, seg_spacing_lib, seg_spacing_report

log = logging.getLogger(__name__)

# SPOILS paper (JMIR AI 2026), Results: DeepLabV3+ R50 "initially" and after 8-fold CV, in %.
PAPER_INITIAL: dict[str, float] = {"accuracy": 95.5, "precision": 92.8, "recall": 93.2,
                                   "dice": 93.0, "iou": 87.1}
PAPER_CV: dict[str, float] = {"accuracy": 98.7, "precision": 96.95, "recall": 97.1,
                              "dice": 96.9, "iou": 94.8}
# Which of our keys each paper column is compared with (the paper does not define its
# averaging; we report pixel accuracy and foreground-macro means, background excluded).
FINAL = "final"   # --fold=final: train on every patient (the shipped model), no held-out fold
TABLE_KEYS: dict[str, str] = {"accuracy": "pixel_accuracy", "precision": "precision/fg_macro",
                              "recall": "recall/fg_macro", "dice": "dice/fg_macro",
                              "iou": "iou/fg_macro"}


# === Data ===
def resolve_dataset_dir(config, workdir: pathlib.Path) -> tuple[pathlib.Path, str]:
    """``(dataset dir, tfds config name)``: the configured dataset, else a synthetic cohort.

    The synthetic cohort (``config.data.synthetic``) is written once into ``workdir/synthetic``
    (``synthetic.write_complete_cohort``).

    Raises:
      RuntimeError: the cohort was refused (bad ``config.data.synthetic``) or a patient failed.
    """
    return synthetic.dataset_or_synthetic(config.data.labelme_dir, workdir,
                                          config.data.synthetic)


def ensure_folds(dataset_dir: pathlib.Path, config):
    """``folds_lib.ensure_dataset_folds`` with the config's ``data.folds_path``, ``data.k`` and
    ``seed``."""
    return folds_lib.ensure_dataset_folds(dataset_dir, config.data.folds_path,
                                          k=config.data.k, seed=config.seed)


def central_slice_keys(examples, max_per_patient: int) -> Optional[list[str]]:
    """Keys of the ``max_per_patient`` slices nearest each patient's middle slice index
    (ties: lower index first); None when ``max_per_patient`` is 0 (keep all)."""
    if not max_per_patient:
        return None
    by_patient: dict[str, list[tuple[int, str]]] = {}
    meta = examples.map(lambda ex: (ex["patient"], ex["slice"], ex["key"]))
    for patient, slice_index, key in meta.as_numpy_iterator():
        by_patient.setdefault(patient.decode(), []).append((int(slice_index), key.decode()))
    return sorted(seg_spacing_lib.middle_keys(by_patient, max_per_patient))


def parse_fold_spec(spec: str, k: int) -> list[int]:
    """``"all"`` -> 0..k-1; ``"3"`` -> [3]; ``"0,2"`` -> [0, 2].

    Raises:
      ValueError: a fold outside 0..k-1 or not an integer.
    """
    spec = str(spec).strip()
    if spec == "all":
        return list(range(k))
    try:
        folds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--fold: expected 'all' or integers like '3' or '0,2', got {spec!r}") from None
    bad = [f for f in folds if not 0 <= f < k]
    if bad or not folds:
        raise ValueError(f"--fold: folds must be in 0..{k - 1}, got {spec!r}")
    return folds


# === Training ===
def _optimizer(train_cfg):
    if train_cfg.optimizer == "adam":
        return keras.optimizers.Adam(train_cfg.learning_rate)
    if train_cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    raise ValueError(f"config.train.optimizer: unknown {train_cfg.optimizer!r}; expected adam | adamw")


def _tensorboard(log_dir: pathlib.Path) -> list[Any]:
    """``[TensorBoard callback]``, or ``[]`` with a warning when ``tensorboard`` is not
    installed (tensorflow-cpu does not depend on it; ``pip install tensorboard``)."""
    if importlib.util.find_spec("tensorboard") is None:
        log.warning("tensorboard is not installed: no TensorBoard logs in %s", log_dir)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), update_freq="epoch", write_graph=False)]


def evaluate_model(model, examples, patients: Sequence[str], resize_mode: str,
                   keys: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Scores ``model`` on the given patients' slices at their original resolution.

    Returns:
      ``SegmentationMetrics.result()`` (pooled over all slices) plus ``"slices"``.
    """
    patients_t = tf.constant([str(p) for p in patients])
    ds = examples.filter(lambda ex: tf.reduce_any(tf.equal(ex["patient"], patients_t)))
    if keys is not None:
        keys_t = tf.constant([str(k) for k in keys])
        ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex["key"], keys_t)))
    predict = seg_pipeline.make_predictor(model, resize_mode)
    acc = seg_metrics.SegmentationMetrics()
    n = 0
    for ex in ds.map(lambda ex: (ex["image"], ex["mask"])).prefetch(2):
        image, mask = ex
        grey = image[..., :1]
        pred = predict(tf.concat([grey, grey, grey], axis=-1)[None])["label_map"][0]
        acc.update(mask.numpy()[..., 0], pred.numpy())
        n += 1
    out = acc.result()
    out["slices"] = float(n)
    return out


def train_fold(config, fold_dir: str | pathlib.Path, examples, train_patients: Sequence[str],
               test_patients: Sequence[str], *, keys: Optional[Sequence[str]] = None,
               strategy=None, backup_dir: Optional[str | pathlib.Path] = None,
               extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Trains one fold, saves ``model.keras`` and returns the test-fold metrics.

    Under a ``strategy`` with several replicas the global batch is ``config.train.batch_size``
    and BatchNormalization uses its statistics (``spoils_tf.train.distribute``); on a
    non-chief worker of a multi-worker strategy the test fold is not evaluated.

    Args:
      config: the experiment config (``data``, ``model``, ``train`` sections).
      fold_dir: output folder of this fold.
      examples: unbatched dataset of example dicts (``seg_pipeline`` module docstring).
      train_patients, test_patients: the split (from ``Folds.split``).
      keys: restrict both sides to these example keys (None = all slices).
      strategy: a ``tf.distribute.Strategy`` (None = default).
      backup_dir: the ``BackupAndRestore`` folder (None = ``fold_dir/backup``; a multi-worker
        run passes the chief's, which every worker reads).
      extra_callbacks: more Keras callbacks (tests use one to simulate a crash).

    Returns:
      metrics dict: ``evaluate_model`` keys (chief only) plus ``"train_seconds"``,
      ``"epochs_run"`` (the epoch indices this call trained; a resumed run starts where the
      killed one stopped), ``"train_loss_first"``/``"train_loss_last"``.
    """
    fold_dir = pathlib.Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    common.set_seed(config.seed)   # same initial weights whatever ran before in the process
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    d, t = config.data, config.train
    image_size = tuple(d.image_size)
    augment_cfg = dict(d.augment) if d.augment is not None else {}
    augment_on = str(d.get("augment_on", "host"))   # host | device (augment_layers)
    train_ds = seg_pipeline.make_seg_dataset(
            examples, image_size=image_size, batch_size=t.batch_size, training=True,
            patients=train_patients, keys=keys, resize_mode=d.resize_mode,
            augment_cfg=augment_cfg, cache=d.cache or "", shuffle_buffer=d.shuffle_buffer,
            seed=config.seed, augment_on=augment_on)
    val_ds = None
    if t.monitor_test_fold:
        val_ds = seg_pipeline.make_seg_dataset(
                examples, image_size=image_size, batch_size=t.batch_size, training=False,
                patients=test_patients, keys=keys, resize_mode=d.resize_mode,
                augment_on=augment_on)

    with strategy.scope():
        kwargs = dict(config.model.kwargs)
        kwargs["input_shape"] = image_size + (3,)
        model = build_segmentation_model({"name": config.model.name, "kwargs": kwargs})
        if strategy.num_replicas_in_sync > 1:
            distribute.synchronize_batchnorm(model)
        # augment_on="device": fit a wrapper that augments uint8 batches in its train step;
        # `model` (same weights) is what is saved and evaluated
        fit_model = (augment_layers.DeviceAugmentedModel(model, augment_cfg, seed=config.seed)
                     if augment_on == "device" else model)
        fit_model.compile(optimizer=_optimizer(t),
                          loss=seg_losses.segmentation_loss(t.get("loss", "ce")),
                          metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                          jit_compile=bool(t.jit_compile))
    backup = distribute.BackupAndRestore(backup_dir or fold_dir / "backup", chief=chief)
    first_epoch = backup.resume_epoch()
    distribute.check_same_on_all_workers(strategy, first_epoch,
                                         f"the epoch to resume from ({backup.backup_dir})")
    train_ds = distribute.training_input(strategy, train_ds, first_epoch)
    val_ds = distribute.shard_by_data(val_ds) if val_ds is not None else None
    callbacks = [
            backup,
            keras.callbacks.CSVLogger(str(fold_dir / "history.csv"), append=True),
            *_tensorboard(fold_dir / "logs"),
            *extra_callbacks,
    ]
    start = time.perf_counter()
    history = fit_model.fit(train_ds, epochs=int(t.epochs), validation_data=val_ds,
                            callbacks=callbacks, verbose=t.verbose)
    train_seconds = time.perf_counter() - start

    fileio.atomic_save_keras(model, fold_dir / "model.keras")

    metrics = evaluate_model(model, examples, test_patients, d.resize_mode, keys) if chief else {}
    losses = history.history.get("loss", [])
    metrics.update({
            "train_seconds": train_seconds,
            "epochs_run": list(history.epoch),
            "train_loss_first": float(losses[0]) if losses else float("nan"),
            "train_loss_last": float(losses[-1]) if losses else float("nan"),
            "train_patients": len(train_patients),
            "test_patients": len(test_patients),
    })
    return metrics


# === Reporting ===
def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarize(fold_metrics: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """Mean and sample SD (ddof=1) over folds of the table metrics, per-class Dice and level
    accuracy, in percent, beside the paper's numbers."""
    folds = sorted(fold_metrics)
    table = {}
    for name, key in TABLE_KEYS.items():
        mean, sd = _mean_sd([100.0 * fold_metrics[f][key] for f in folds])
        table[name] = {"key": key, "mean": mean, "sd": sd, "paper_initial": PAPER_INITIAL[name],
                       "paper_cv": PAPER_CV[name]}
    per_class = {}
    for cls in labels.SEG_NAMES:
        mean, sd = _mean_sd([100.0 * fold_metrics[f][f"dice/{cls}"] for f in folds])
        per_class[cls] = {"mean": mean, "sd": sd}
    level_mean, level_sd = _mean_sd([100.0 * fold_metrics[f]["level_accuracy"] for f in folds])
    return {"folds": folds, "n_folds": len(folds), "table": table, "per_class_dice": per_class,
            "dice_fg_macro": table["dice"], "level_accuracy": {"mean": level_mean, "sd": level_sd},
            "per_fold": {str(f): dict(fold_metrics[f]) for f in folds}}


def _pm(mean: float, sd: float) -> str:
    return tables.mean_sd(mean, sd, tables.formatter(1), missing=tables.MISSING)


def table_markdown(summary: Mapping[str, Any]) -> str:
    """The paper-style table and the per-class Dice table as markdown."""
    n = summary["n_folds"]
    rows = [f"| metric (%) | ours: mean ± SD over {n} folds | paper initial | paper 8-fold CV |",
            "| --- | --- | --- | --- |"]
    for name, r in summary["table"].items():
        rows.append(f"| {name} (`{r['key']}`) | {_pm(r['mean'], r['sd'])} | "
                    f"{r['paper_initial']} | {r['paper_cv']} |")
    lv = summary["level_accuracy"]
    rows.append(f"| level accuracy (discs) | {_pm(lv['mean'], lv['sd'])} | – | – |")
    rows += ["", "| class | Dice (%) mean ± SD |", "| --- | --- |"]
    for cls, r in summary["per_class_dice"].items():
        rows.append(f"| {cls} | {_pm(r['mean'], r['sd'])} |")
    return "\n".join(rows) + "\n"


def write_tables(summary: Mapping[str, Any], workdir: str | pathlib.Path) -> None:
    """Writes ``seg_cv_table.{md,csv,json}`` and ``seg_cv_per_class_dice.{md,csv}`` atomically."""
    workdir = pathlib.Path(workdir)
    md = table_markdown(summary)
    fileio.atomic_write_text(workdir / "seg_cv_table.md", md)
    lines = ["metric,key,mean_pct,sd_pct,paper_initial_pct,paper_cv_pct,n_folds"]
    for name, r in summary["table"].items():
        lines.append(f"{name},{r['key']},{r['mean']:.4f},{r['sd']:.4f},{r['paper_initial']},"
                     f"{r['paper_cv']},{summary['n_folds']}")
    lv = summary["level_accuracy"]
    lines.append(f"level_accuracy,level_accuracy,{lv['mean']:.4f},{lv['sd']:.4f},,,"
                 f"{summary['n_folds']}")
    fileio.atomic_write_text(workdir / "seg_cv_table.csv", "\n".join(lines) + "\n")
    fileio.write_json(workdir / "seg_cv_table.json", summary, sort_keys=True)
    per_class = ["class,dice_mean_pct,dice_sd_pct"] + [
            f"{c},{r['mean']:.4f},{r['sd']:.4f}" for c, r in summary["per_class_dice"].items()]
    fileio.atomic_write_text(workdir / "seg_cv_per_class_dice.csv", "\n".join(per_class) + "\n")
    fileio.atomic_write_text(workdir / "seg_cv_per_class_dice.md",
                             md.split("\n\n", 1)[1] if "\n\n" in md else md)


# === Entry ===
def run(config, workdir: str | pathlib.Path, *, examples=None, folds=None,
        strategy_name: str = "default", tpu_address: str = "",
        extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Trains and evaluates ``config.fold`` and returns ``{"folds": {i: metrics}, "summary":
    summarize(...) or None, "chief": bool}``.

    Under a multi-worker strategy only the chief writes into ``workdir``; another worker
    writes into a temporary folder that is removed, and reads the finished folds and the
    backups from ``workdir`` (which must therefore be shared; ``spoils_tf.train.distribute``).

    Args:
      config: experiment config (configs/seg_*.py).
      workdir: output directory (created).
      examples, folds: inject an example dataset and a ``Folds``-like object (``.k``,
        ``.split(i)``) instead of loading them from ``config.data`` (tests, notebooks).
      strategy_name: ``spoils_tf.train.common.STRATEGIES``; ``tpu_address`` for ``"tpu"``.
      extra_callbacks: more Keras callbacks for every fold's ``fit`` (tools/seg_worker.py).

    Raises:
      ValueError: ``--fold=final`` without a fixed-spacing config, or a fixed-spacing config
        with a strategy other than ``"default"`` (``seg_spacing_lib`` trains on one device).
    """
    spacing_path = float(config.data.get("target_spacing_mm", 0.0)) > 0
    if str(config.fold).strip() == FINAL and not spacing_path:
        raise ValueError("--fold=final (train on every patient) needs a fixed-spacing config "
                         "(config.data.target_spacing_mm > 0), e.g. configs/seg_unet.py:spider_cpu")
    if spacing_path and strategy_name != "default":
        raise ValueError(f"--strategy={strategy_name}: fixed-spacing configs "
                         "(config.data.target_spacing_mm > 0) train on one device "
                         "(seg_spacing_lib); use --strategy=default")
    if spacing_path:
        seg_spacing_lib.check_schedule(config.train)
    common.set_seed(config.seed)
    precision = common.configure_precision(config.train.precision)
    strategy = common.get_strategy(strategy_name, tpu_address)
    chief = distribute.is_chief(strategy)
    log.info("precision policy %s, strategy %s with %d replica(s)%s", precision, strategy_name,
             strategy.num_replicas_in_sync, "" if chief else ", not the chief: writes nothing")
    with distribute.worker_output_dir(workdir, chief) as out_dir:
        result = _run_folds(config, pathlib.Path(workdir), out_dir, examples, folds, strategy,
                            precision, spacing_path, extra_callbacks, chief)
    result["chief"] = chief
    return result


def _run_folds(config, workdir: pathlib.Path, out_dir: pathlib.Path, examples, folds, strategy,
               precision: str, spacing_path: bool, extra_callbacks: Sequence[Any], chief: bool):
    """``run`` after the strategy is made: reads finished folds and backups in ``workdir``,
    writes into ``out_dir`` (``workdir`` for the chief); only the chief, which evaluated the
    folds, summarizes them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.save_config(config, out_dir)
    if examples is None or folds is None:
        dataset_dir, tfds_config = resolve_dataset_dir(config, out_dir)
        if examples is None:
            from spoils_tf.data import tfds_builder
            tfds_dir = config.data.tfds_data_dir or str(out_dir / "tfds")
            examples, _ = tfds_builder.load_dataset(dataset_dir, tfds_dir, tfds_config)
        if folds is None:
            folds = ensure_folds(dataset_dir, config)
    if str(config.fold).strip() == FINAL:
        final_dir = out_dir / FINAL
        metrics = seg_spacing_lib.train_fold(config, final_dir, examples,
                                             sorted(folds.assignment), [])
        fileio.write_json(final_dir / "metrics.json", metrics, sort_keys=True)
        return {"folds": {}, "final": metrics, "summary": None}
    keys = central_slice_keys(examples, int(config.data.max_slices_per_patient))
    results: dict[int, dict[str, Any]] = {}
    for fold in parse_fold_spec(config.fold, folds.k):
        fold_dir = out_dir / f"fold_{fold}"
        done = workdir / f"fold_{fold}" / "metrics.json"
        if done.is_file():
            log.info("fold %d: %s exists, reusing its metrics", fold, done)
            results[fold] = json.loads(done.read_text())
            continue
        train_patients, test_patients = folds.split(fold)
        log.info("fold %d: %d train / %d test patients", fold, len(train_patients),
                 len(test_patients))
        if spacing_path:
            metrics = seg_spacing_lib.train_fold(config, fold_dir, examples, train_patients,
                                                 test_patients)
        else:
            metrics = train_fold(config, fold_dir, examples, train_patients, test_patients,
                                 keys=keys, strategy=strategy,
                                 backup_dir=workdir / f"fold_{fold}" / "backup",
                                 extra_callbacks=extra_callbacks)
        metrics["fold"] = fold
        metrics["precision_policy"] = precision
        fileio.write_json(fold_dir / "metrics.json", metrics, sort_keys=True)
        results[fold] = metrics
    summary = None
    if chief and len(results) > 1 and spacing_path:
        summary = seg_spacing_report.summarize(results)
        seg_spacing_report.write_tables(summary, out_dir)
    elif chief and len(results) > 1:
        summary = summarize(results)
        write_tables(summary, out_dir)
    return {"folds": results, "summary": summary}
