"""Disc grading from crops with a CNN, cross-validated by patient: ``run(config, workdir)``.

Reads the crops written by ``spoils crops`` (``spoils_tf.geometry.crops``:
``<crops_dir>/index.csv`` with columns ``patient, slice, level, pfirrmann, severity,
grade_class, file_npy, file_png, ...``; file paths relative to ``crops_dir`` or absolute; the
NPY is used when present, else the PNG, else a plain ``file`` column), trains one
``DiscClassifier`` per fold on the training patients only, predicts the held-out patients
and writes::

    workdir/
      config.json                   the resolved config
      folds_used.json               the fold of every patient (or slice, in split=slice mode)
      skipped.csv                   index rows not used, with the reason (never silently dropped)
                                    (unreadable / unlabelled, or beyond
                                    data.max_slices_per_patient)
      folds/fold_<k>/model.keras    the trained model of fold k
      folds/fold_<k>/predictions.csv  held-out rows: patient, slice, level, fold, target,
                                    y_true, y_pred, prob/<class> (class names from labels.py)
      folds/fold_<k>/history.csv    loss/accuracy per epoch
      folds/fold_<k>/metrics.json   metrics of the fold + train/test patients + class weights
      oof_predictions.csv/.parquet  all held-out predictions of the folds run so far
      fold_metrics.csv              one row per fold
      summary.json, summary.md      mean +- SD over folds, pooled out-of-fold metrics with a
                                    patient-level bootstrap 95 % CI, the paper's numbers beside
      confusion.png                 pooled out-of-fold confusion matrix

Splits (``config.split``):

* ``"patient"`` (default): folds from ``folds.json`` (``spoils folds``), so every slice and
  disc of a patient is on one side. A patient found in both train and test raises.
* ``"slice"``: LEAKAGE MODE, for comparison only. Each (patient, slice) is put in a random
  fold ignoring the patient, so other slices of a test patient are in training. It shows how
  much a slice-level cross-validation inflates the numbers; every output says so.

Folds may run in separate processes (``config.fold = "3"``); each run re-aggregates every
finished fold found in ``workdir``.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Sequence

import cv2
import keras
import numpy as np
import pandas as pd
import PIL.Image
import tensorflow as tf

from spoils_tf import fileio, labels
from spoils_tf.data import folds as folds_lib
from spoils_tf.data.folds import folds_to_run, slice_level_folds  # re-exported
from spoils_tf.metrics import classification as cm
from spoils_tf.metrics import tables
from spoils_tf.models import classifiers
from spoils_tf.train import common

INDEX_CSV = "index.csv"
INDEX_COLUMNS = ("patient", "slice", "level")
# Crop file columns in order of preference (the float32 NPY is exact; the PNG is 8-bit).
FILE_COLUMNS = ("file_npy", "file_png", "file")
KEY_COLUMNS = ("patient", "slice", "level")
SPLITS = ("patient", "slice")
LEAKY_BANNER = ("LEAKY SPLIT (split=slice): folds were drawn per slice ignoring patients, so "
                "other slices of every test patient were in training. These numbers are NOT "
                "an estimate of performance on new patients.")
# Numbers reported by the paper for the CNN with MobileNetV2 on the 11-class target (%):
# "initial" = single train/test split, "after_cv" = after 8-fold cross-validation.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
        "accuracy": {"initial": 86.40, "after_cv": 97.84},
        "iou_macro": {"initial": 74.27, "after_cv": 96.76},
}
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                                    "kappa_quadratic", "auroc_macro", "brier", "log_loss")

log = logging.getLogger(__name__)


# === Crops ===
def read_crops_index(crops_dir: str | os.PathLike) -> pd.DataFrame:
    """Reads ``<crops_dir>/index.csv`` (patient and level as str, slice as int).

    Raises:
        FileNotFoundError: no index.csv in ``crops_dir``.
        ValueError: a required column (``INDEX_COLUMNS`` and one of ``FILE_COLUMNS``) is
            missing or the index is empty.
    """
    path = pathlib.Path(crops_dir) / INDEX_CSV
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no crops index (write one with `spoils crops "
                                f"--data DIR --out {crops_dir}`)")
    df = pd.read_csv(path, dtype={"patient": str, "level": str, "grade_class": str,
                                  "severity": str, **{c: str for c in FILE_COLUMNS}})
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if not any(c in df.columns for c in FILE_COLUMNS):
        missing.append(" | ".join(FILE_COLUMNS))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {INDEX_COLUMNS} and "
                         f"one of {FILE_COLUMNS}")
    if df.empty:
        raise ValueError(f"{path}: no rows")
    df["slice"] = df["slice"].astype(int)
    return df.reset_index(drop=True)


def load_crop(path: str | os.PathLike) -> np.ndarray:
    """One crop as ``float32 [H, W, C]`` in ``[0, 1]`` (``C`` = 1 or 3).

    PNG: greyscale (C = 1) or RGB (C = 3: neighbouring slices k-1, k, k+1 as written by
    ``spoils crops --context-slices 1``); an alpha channel is dropped.
    NPY: ``[H, W]`` or ``[H, W, C]`` with C in {1, 3}.
    Intensity: ``uint8`` / 255; floats already in ``[0, 1]`` are kept; anything else is
    min-max rescaled over the whole crop (the project rule of ``spoils_tf.data.images``;
    a constant crop becomes zeros).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown suffix, wrong shape, or non-finite values (naming the file).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: crop file not found")
    suffix = path.suffix.lower()
    if suffix == ".png":
        with PIL.Image.open(path) as img:
            arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # LA / RGBA: drop alpha
            arr = arr[..., :-1]
    elif suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        raise ValueError(f"{path}: crop must be .png or .npy, got {suffix!r}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: crop shape {arr.shape}; expected [H, W], [H, W, 1] or [H, W, 3]")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    x = arr.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: crop has non-finite values")
    if np.issubdtype(arr.dtype, np.floating) and x.min() >= 0.0 and x.max() <= 1.0:
        return x.astype(np.float32)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return x.astype(np.float32)


def crop_file(row: dict) -> str:
    """The crop file of one index row: the first non-empty of ``FILE_COLUMNS``.

    Raises:
        ValueError: if all are empty.
    """
    for col in FILE_COLUMNS:
        v = row.get(col)
        if v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v).strip():
            return str(v).strip()
    raise ValueError(f"no crop file in columns {FILE_COLUMNS}")


def _resize(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """``float32 [h, w, C] -> [height, width, C]`` (area when shrinking, linear otherwise)."""
    if crop.shape[:2] == (height, width):
        return crop
    shrink = height < crop.shape[0] or width < crop.shape[1]
    out = cv2.resize(crop, (width, height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape(height, width, crop.shape[-1]).astype(np.float32)


def load_crops(crops_dir: str | os.PathLike, index: pd.DataFrame, target: str,
               height: int = 0, width: int = 0
               ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Loads every usable crop of ``index`` and its label for ``target``.

    A row is skipped (and reported) when its label for the target is missing/invalid, its
    file cannot be read, or its channel count differs from the first readable crop; the
    batch continues. Crops of a different size are resized to ``(height, width)`` (which
    distorts the aspect ratio when it differs: prefer ``0``); ``0`` means the size of the
    first readable crop.

    Returns:
        ``(x float32 [N, height, width, C], y int64 [N], rows, skipped)`` where ``rows`` is
        the index restricted to the N used rows (same order as x) and ``skipped`` has the
        columns patient, slice, level, file, reason.

    Raises:
        ValueError: if no row is usable.
    """
    crops_dir = pathlib.Path(crops_dir)
    xs, ys, keep, skipped = [], [], [], []
    channels = None
    for i, row in enumerate(index.itertuples(index=False)):
        rec = row._asdict()
        file = ""
        try:
            file = crop_file(rec)
            y = classifiers.target_label(target, rec.get("pfirrmann"), rec.get("grade_class"))
            path = pathlib.Path(file)
            crop = load_crop(path if path.is_absolute() else crops_dir / path)
            if channels is None:
                channels = crop.shape[-1]
                height = height or crop.shape[0]
                width = width or crop.shape[1]
            elif crop.shape[-1] != channels:
                raise ValueError(f"{file}: {crop.shape[-1]} channels, earlier crops have "
                                 f"{channels}")
            xs.append(_resize(crop, height, width))
            ys.append(y)
            keep.append(i)
        except (ValueError, FileNotFoundError, OSError) as e:
            skipped.append({"patient": rec["patient"], "slice": rec["slice"],
                            "level": rec["level"], "file": file, "reason": str(e)})
    skipped_df = pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    if not xs:
        reasons = skipped_df["reason"].head(3).tolist()
        raise ValueError(f"{crops_dir / INDEX_CSV}: no usable crop for target {target!r} "
                         f"({len(skipped_df)} skipped; first reasons: {reasons})")
    return (np.stack(xs).astype(np.float32), np.asarray(ys, np.int64),
            index.iloc[keep].reset_index(drop=True), skipped_df)


SKIPPED_COLUMNS: tuple[str, ...] = ("patient", "slice", "level", "file", "reason")


def central_slice_rows(index: pd.DataFrame, max_slices_per_patient: int
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keeps, per (patient, level), the ``n`` crops nearest the patient's middle slice.

    The middle slice of a patient is ``(min + max) / 2`` of the slice numbers of ALL that
    patient's rows in ``index`` (every level), as ``seg_lib.central_slice_keys`` does for
    segmentation: in a sagittal series the middle is the mid-sagittal plane, where the
    disc, its nucleus and the canal are seen best and lateral partial-volume crops are
    avoided. Within a (patient, level) the rows are ranked by ``|slice - middle|``, ties to
    the lower slice number; the first ``n`` are kept.

    Args:
        index: crops index (columns ``patient, slice, level`` at least; ``slice`` int).
        max_slices_per_patient: ``n`` >= 0; ``0`` keeps every row.

    Returns:
        ``(kept, dropped)``: ``kept`` is ``index`` restricted to the kept rows (original
        order, index reset); ``dropped`` has the columns ``SKIPPED_COLUMNS`` with a reason
        naming the setting, the slice's distance and the patient's middle slice.

    Raises:
        ValueError: ``max_slices_per_patient`` < 0.
    """
    n = int(max_slices_per_patient)
    if n < 0:
        raise ValueError(f"config.data.max_slices_per_patient must be >= 0, got {n}")
    index = index.reset_index(drop=True)
    if n == 0 or index.empty:
        return index, pd.DataFrame(columns=list(SKIPPED_COLUMNS))
    patient = index["patient"].astype(str)
    slices = index["slice"].astype(int)
    by_patient = slices.groupby(patient)
    middle = (by_patient.transform("min") + by_patient.transform("max")) / 2.0
    distance = (slices - middle).abs()
    order = pd.DataFrame({"patient": patient, "level": index["level"].astype(str),
                          "distance": distance, "slice": slices})
    order = order.sort_values(["patient", "level", "distance", "slice"], kind="stable")
    rank = order.groupby(["patient", "level"], sort=False).cumcount()
    keep = np.zeros(len(index), bool)
    keep[rank.index[rank.to_numpy() < n].to_numpy()] = True
    dropped_rows = index.loc[~keep]
    files = []
    for rec in dropped_rows.to_dict("records"):
        try:
            files.append(crop_file(rec))
        except ValueError:
            files.append("")
    dropped = pd.DataFrame({
            "patient": patient[~keep].to_numpy(), "slice": slices[~keep].to_numpy(),
            "level": dropped_rows["level"].astype(str).to_numpy(), "file": files,
            "reason": [f"max_slices_per_patient={n}: slice {s} is {d:g} slices from the "
                       f"patient's middle slice {m:g}; {n} slice(s) of this level are nearer"
                       for s, d, m in zip(slices[~keep], distance[~keep], middle[~keep])]},
            columns=list(SKIPPED_COLUMNS))
    return index.loc[keep].reset_index(drop=True), dropped


# === Folds ===


def patient_folds(rows: pd.DataFrame, config,
                  workdir: pathlib.Path) -> tuple[np.ndarray, int, str]:
    """Patient-level fold of every row, from folds.json.

    The folds file is ``config.data.folds_path`` if set, else ``<crops_dir>/folds.json``;
    if neither exists, folds are made once with ``spoils_tf.data.folds.make_folds``
    (stratified by each patient's worst Pfirrmann grade, ``config.data.k``, ``config.seed``)
    and written to ``workdir/folds.json`` so that later runs reuse them.

    Returns:
        ``(fold int64 [len(rows)], k, source)`` where source is the folds file used.

    Raises:
        ValueError: the folds file does not cover every patient of the crops.
    """
    candidates = [pathlib.Path(p) for p in (config.data.folds_path,) if p]
    candidates.append(pathlib.Path(config.data.crops_dir) / "folds.json")
    candidates.append(workdir / "folds.json")
    path = next((p for p in candidates if p.is_file()), None)
    patients = sorted(rows["patient"].astype(str).unique())
    if path is None:
        worst = None
        if "pfirrmann" in rows.columns:
            g = pd.to_numeric(rows["pfirrmann"], errors="coerce")
            worst_s = g.groupby(rows["patient"].astype(str)).max().dropna()
            worst = {p: int(v) for p, v in worst_s.items()}
        assignment = folds_lib.make_folds(patients, worst, k=int(config.data.k),
                                          seed=int(config.seed))
        path = workdir / "folds.json"
        folds_lib.write_folds(path, assignment, k=int(config.data.k), seed=int(config.seed),
                              stratified_by="worst_pfirrmann" if worst else "none",
                              source=str(pathlib.Path(config.data.crops_dir) / INDEX_CSV))
        log.info("no folds file found; wrote %s", path)
    folds = folds_lib.load_folds(path)
    known = set(str(p) for p in folds.patients)
    missing = [p for p in patients if p not in known]
    if missing:
        raise ValueError(f"{path}: folds do not cover {len(missing)} patient(s) of the crops "
                         f"(first: {missing[:5]}); remake folds for this dataset")
    fold = np.asarray([folds.fold_of(str(p)) for p in rows["patient"]], np.int64)
    return fold, int(folds.k), str(path)


# === Training ===
def _augmenter(config):
    """Training-only augmentation (small shifts/zoom, brightness/contrast); None if off.

    No flips: a horizontal flip swaps anterior and posterior, a vertical one the upper and
    lower end plates, and both sides carry grading information (e.g. posterior bulging).
    """
    aug = config.train.augment
    if not aug.enabled:
        return None
    return keras.Sequential([
            keras.layers.RandomTranslation(aug.shift_fraction, aug.shift_fraction,
                                           fill_mode="constant", fill_value=0.0),
            keras.layers.RandomZoom(aug.zoom_fraction, fill_mode="constant", fill_value=0.0),
            keras.layers.RandomBrightness(aug.brightness, value_range=(0.0, 1.0)),
            keras.layers.RandomContrast(aug.contrast, value_range=(0.0, 1.0)),
    ], name="augment")


def build_model(config, input_shape: tuple[int, int, int]):
    """The ``DiscClassifier`` described by ``config.model`` for ``input_shape (H, W, C)``."""
    m = config.model
    return classifiers.DiscClassifier(
            backbone=m.backbone, target=m.target, input_height=int(input_shape[0]),
            input_width=int(input_shape[1]), input_channels=int(input_shape[2]),
            dropout=float(m.dropout), backbone_weights=m.backbone_weights or None,
            cnn_filters=tuple(m.cnn_filters), mobilenet_alpha=float(m.mobilenet_alpha))


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Sets ``momentum`` on every ``BatchNormalization`` layer of ``model`` (nested too).

    Why: ``keras.applications.MobileNetV2`` builds its batch norms with momentum 0.999, so
    the moving mean/variance used at inference move by 0.1 % per step; after the few hundred
    steps of a short CPU schedule they are still mostly their initial values (0 and 1) and a
    randomly initialised network predicts one class for every crop at test time (BUILD.md,
    "Grading"). 0.9 lets them follow the batch
    statistics within ~10 steps. Training itself is unchanged (it uses batch statistics).
    Call before ``compile``/``fit``; the saved model keeps its learnt moving statistics.

    Args:
        model: a Keras model or layer.
        momentum: in (0, 1).

    Returns:
        the number of layers changed.

    Raises:
        ValueError: ``momentum`` outside (0, 1).
    """
    if not 0.0 < float(momentum) < 1.0:
        raise ValueError(f"config.model.bn_momentum must be in (0, 1) (or 0 = backbone "
                         f"default), got {momentum!r}")
    changed, stack, seen = 0, [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            changed += 1
        stack.extend(getattr(layer, "layers", []) or [])
    return changed


def reset_optimizer(optimizer) -> int:
    """Zeroes every optimizer variable except the learning rate (step counter, Adam moments).

    Returns:
        the number of variables reset.
    """
    n = 0
    for v in optimizer.variables:
        if v.path.split("/")[-1] == "learning_rate":
            continue
        v.assign(np.zeros(tuple(v.shape), dtype=v.dtype))
        n += 1
    return n


def train_fold(config, x_train: np.ndarray, y_train: np.ndarray, seed: int, model=None):
    """Trains one model on a fold's training rows.

    Args:
        x_train: ``float32 [N, H, W, C]`` in [0, 1]; y_train: ``int64 [N]`` class ids.
        seed: seeds Python, numpy and TensorFlow for this fold.
        model: ``None`` (build and compile a new model) or the compiled model returned by
            an earlier call with the same config and input shape. Its traced training step
            is reused (tracing costs minutes on a CPU; BUILD.md, "Grading"); its variables
            (weights, batch-norm statistics, dropout random state) are overwritten with those
            of a new model built after seeding with ``seed`` and its optimizer state is
            zeroed, so it trains as a new model would and nothing carries over from the
            earlier fold.

    Returns:
        ``(model, history dict of per-epoch lists, class_weight dict or None)``.

    Raises:
        ValueError: ``model`` has weights of other shapes than this config builds.
    """
    common.set_seed(seed)
    num_classes = len(classifiers.target_classes(config.model.target))
    fresh = build_model(config, x_train.shape[1:])
    if model is None:
        model = fresh
        bn_momentum = float(config.model.get("bn_momentum", 0.0) or 0.0)
        if bn_momentum:
            n_bn = set_batchnorm_momentum(model, bn_momentum)
            log.info("batch-norm momentum %.3f on %d layers", bn_momentum, n_bn)
        model.compile(optimizer=keras.optimizers.Adam(float(config.train.learning_rate)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=False)
    else:
        # variables = weights + the dropout layers' random-generator states: copying all of
        # them makes the reused model start exactly where a new one would.
        old_vars, new_vars = model.variables, fresh.variables
        if [tuple(v.shape) for v in old_vars] != [tuple(v.shape) for v in new_vars]:
            raise ValueError("train_fold(model=...): the model's variables do not match the "
                             f"config's model for input {tuple(x_train.shape[1:])}")
        for old, new in zip(old_vars, new_vars):
            old.assign(new.value)
        reset_optimizer(model.optimizer)
    del fresh
    class_weight = (classifiers.balanced_class_weights(y_train, num_classes)
                    if config.train.class_weighting else None)
    ds = tf.data.Dataset.from_tensor_slices((x_train, y_train.astype(np.int32)))
    ds = ds.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(config.train.batch_size))
    augment = _augmenter(config)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    history = model.fit(ds, epochs=int(config.train.epochs), class_weight=class_weight,
                        shuffle=False,  # the dataset shuffles itself
                        verbose=int(config.train.verbose))
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}, class_weight


def predictions_table(rows: pd.DataFrame, probs: np.ndarray, y_true: np.ndarray, fold: int,
                      target: str) -> pd.DataFrame:
    """One row per held-out crop: keys, fold, target, y_true, y_pred, ``prob/<class>``."""
    classes = classifiers.target_classes(target)
    out = pd.DataFrame({
            "patient": rows["patient"].astype(str).to_numpy(),
            "slice": rows["slice"].astype(int).to_numpy(),
            "level": rows["level"].astype(str).to_numpy(),
            "fold": int(fold),
            "target": target,
            "y_true": [classes[i] for i in y_true],
            "y_pred": [classes[i] for i in probs.argmax(axis=1)],
    })
    for j, col in enumerate(cm.prob_columns(classes)):
        out[col] = probs[:, j].astype(np.float64)
    return out


# === Aggregation ===
def aggregate(workdir: str | os.PathLike, config) -> dict:
    """Combines every finished fold in ``workdir/folds`` into the OOF table and summary.

    Returns:
        the summary dict also written to ``summary.json`` (``folds``, ``per_fold``,
        ``mean``/``sd`` over folds (SD with ddof=1; NaN for one fold), ``pooled`` out-of-fold
        metrics with 95 % patient-bootstrap CIs, ``paper``, ``split``, ``leaky``).

    Raises:
        FileNotFoundError: no finished fold in ``workdir``.
        ValueError: a fold in ``workdir`` was run with another split, target or backbone.
    """
    workdir = pathlib.Path(workdir)
    target = config.model.target
    classes = classifiers.target_classes(target)
    fold_dirs = sorted((d for d in (workdir / "folds").glob("fold_*")
                        if (d / "metrics.json").is_file() and (d / "predictions.csv").is_file()),
                       key=lambda d: int(d.name.split("_")[1]))
    if not fold_dirs:
        raise FileNotFoundError(f"{workdir / 'folds'}: no finished fold (metrics.json + "
                                "predictions.csv)")
    per_fold = [json.loads((d / "metrics.json").read_text()) for d in fold_dirs]
    for d, m in zip(fold_dirs, per_fold):
        got = (m.get("split"), m.get("target"), m.get("backbone"))
        want = (config.split, target, config.model.backbone)
        if got != want:
            raise ValueError(f"{d / 'metrics.json'}: fields (split, target, backbone) = {got}, "
                             f"but this run has {want}; use a fresh workdir per experiment")
    oof = pd.concat([pd.read_csv(d / "predictions.csv", dtype={"patient": str, "level": str})
                     for d in fold_dirs], ignore_index=True)
    fileio.write_csv(workdir / "oof_predictions.csv", oof)
    fileio.write_parquet(workdir / "oof_predictions.parquet", oof)

    fold_rows = []
    for m in per_fold:
        row = {"fold": m["fold"], "split": m["split"], "n_train": m["n_train"],
               "n_test": m["n_test"], "n_train_patients": len(m["train_patients"]),
               "n_test_patients": len(m["test_patients"]),
               "patients_in_train_and_test": m["patients_in_train_and_test"],
               "loss_first_epoch": m["loss_first_epoch"], "loss_last_epoch": m["loss_last_epoch"],
               "train_seconds": m["train_seconds"]}
        row.update({k: m["metrics"][k] for k in SUMMARY_METRICS})
        fold_rows.append(row)
    fold_df = pd.DataFrame(fold_rows)
    fileio.write_csv(workdir / "fold_metrics.csv", fold_df)

    y_true = cm.encode(oof["y_true"], classes, field="y_true")
    probs = oof[cm.prob_columns(classes)].to_numpy(np.float64)
    pooled_report = cm.classification_report(y_true, probs, classes)
    pooled = {}
    for name in SUMMARY_METRICS:
        ci = cm.bootstrap_ci(cm.metric_by_name(name, len(classes)), oof["patient"].to_numpy(),
                             y_true, probs, n_boot=int(config.eval.n_boot), seed=int(config.seed))
        pooled[name] = {"estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                        "n_boot": ci.n_boot, "n_valid": ci.n_valid}
    cm.plot_confusion_matrix(cm.confusion_matrix(y_true, probs.argmax(axis=1), len(classes)),
                             classes, workdir / "confusion.png",
                             title=f"{config.model.backbone} {target} out-of-fold")
    mean = {k: float(np.nanmean(fold_df[k])) if fold_df[k].notna().any() else float("nan")
            for k in SUMMARY_METRICS}
    sd = {k: float(fold_df[k].std(ddof=1)) if fold_df[k].notna().sum() > 1 else float("nan")
          for k in SUMMARY_METRICS}
    leaky = config.split == "slice"
    summary = {
            "split": config.split, "leaky": leaky, "banner": LEAKY_BANNER if leaky else "",
            "backbone": config.model.backbone, "target": target, "classes": list(classes),
            "folds": [m["fold"] for m in per_fold], "k": per_fold[0]["k"],
            "n_oof": int(len(oof)), "n_patients": int(oof["patient"].nunique()),
            "mean": mean, "sd": sd, "pooled": pooled, "pooled_report": pooled_report,
            "per_fold": fold_rows, "paper": PAPER_NUMBERS,
            "paper_comparable": config.model.backbone == "mobilenetv2" and target == "grade11",
    }
    fileio.write_json(workdir / "summary.json", summary)
    fileio.atomic_write_text(workdir / "summary.md", summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    """The results table: mean +- SD over folds, pooled OOF [95 % CI], the paper beside."""
    lines = []
    if summary["leaky"]:
        lines += [f"**{summary['banner']}**", ""]
    lines += [f"Disc grading, {summary['backbone']}, target {summary['target']} "
              f"({len(summary['classes'])} classes), split={summary['split']}, folds "
              f"{summary['folds']} of k={summary['k']}, {summary['n_oof']} held-out crops from "
              f"{summary['n_patients']} patients.", "",
              "| metric | mean ± SD over folds | pooled out-of-fold [95 % CI, patient bootstrap] "
              "| paper initial | paper after 8-fold CV |",
              "| --- | --- | --- | --- | --- |"]
    paper_cell = tables.formatter(2, missing="")
    for k in SUMMARY_METRICS:
        p = summary["pooled"][k]
        paper = summary["paper"].get(k, {})
        fmt = tables.metric_format(k)
        lines.append(f"| {k} | {tables.mean_sd(summary['mean'][k], summary['sd'][k], fmt)} | "
                     f"{fmt(p['estimate'])} [{fmt(p['ci_low'])}, {fmt(p['ci_high'])}] | "
                     f"{paper_cell(paper.get('initial'))} | "
                     f"{paper_cell(paper.get('after_cv'))} |")
    lines += ["", "Percent for accuracy, IoU (macro Jaccard), F1, balanced accuracy and AUROC; "
              "kappa, Brier and log-loss as they are. SD over folds uses ddof=1.",
              "Paper: CNN with MobileNetV2 on the 11-class target, private data (4260 disc "
              "slices, 402 patients); their CV protocol (patient or slice level) is not stated."]
    if not summary["paper_comparable"]:
        lines.append("This run is not MobileNetV2 on grade11, so the paper's numbers are for "
                     "orientation only.")
    return "\n".join(lines) + "\n"


# === Entry ===
def _resolve_crops_dir(config, workdir: pathlib.Path) -> pathlib.Path:
    if config.data.crops_dir:
        return pathlib.Path(config.data.crops_dir)
    if config.data.toy.enabled:
        toy = config.data.toy
        out = workdir / "toy_crops"
        if not (out / INDEX_CSV).is_file():
            write_toy_crops(out, n_patients=int(toy.patients), crops_per_patient=int(toy.crops),
                            height=int(toy.height), width=int(toy.width), seed=int(config.seed))
        return out
    raise ValueError("config.data.crops_dir is empty and config.data.toy.enabled is False: "
                     "give --config.data.crops_dir=DIR (written by `spoils crops`)")


def run(config, workdir: str | os.PathLike) -> dict:
    """Cross-validated training and evaluation of one disc-crop classifier.

    Args:
        config: an ``ml_collections.ConfigDict`` from ``configs/grade_cnn.py``.
        workdir: output directory (created); see the module docstring for its contents.

    Returns:
        the summary dict of ``aggregate`` (also ``summary.json``).

    Raises:
        ValueError: bad config field (split, fold, target, backbone), no usable crop, folds
            not covering the patients, or a patient in both train and test (split=patient).
        FileNotFoundError: no crops index.
    """
    if config.split not in SPLITS:
        raise ValueError(f"config.split must be one of {SPLITS}, got {config.split!r}")
    classes = classifiers.target_classes(config.model.target)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    crops_dir = _resolve_crops_dir(config, workdir)
    fileio.save_config(config, workdir)
    previous_policy = keras.mixed_precision.global_policy()
    precision = common.configure_precision(config.train.precision)
    log.info("precision policy: %s", precision)
    try:
        _run_folds(config, workdir, crops_dir, classes)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    return aggregate(workdir, config)


def _run_folds(config, workdir: pathlib.Path, crops_dir: pathlib.Path,
               classes: Sequence[str]) -> None:

    index = read_crops_index(crops_dir)
    central, not_central = central_slice_rows(index, int(config.data.max_slices_per_patient))
    if len(not_central):
        log.info("max_slices_per_patient=%d: %d of %d crops kept (%d patients x levels)",
                 int(config.data.max_slices_per_patient), len(central), len(index),
                 central.groupby(["patient", "level"]).ngroups)
    x, y, rows, unreadable = load_crops(crops_dir, central, config.model.target,
                                        int(config.model.input_height),
                                        int(config.model.input_width))
    skipped = pd.concat([d for d in (not_central, unreadable) if len(d)] or [unreadable],
                        ignore_index=True)
    fileio.write_csv(workdir / "skipped.csv", skipped)
    if len(skipped):
        log.warning("%d of %d crops not used (%d not central, %d unusable; see %s)",
                    len(skipped), len(index), len(not_central), len(unreadable),
                    workdir / "skipped.csv")
    if config.split == "patient":
        fold, k, source = patient_folds(rows, config, workdir)
    else:
        k = int(config.data.k)
        fold, source = slice_level_folds(rows, k, int(config.seed)), "random slice-level folds"
        log.warning(LEAKY_BANNER)
    fileio.write_json(workdir / "folds_used.json",
                      {"split": config.split, "k": k, "source": source,
                       "rows": [{"patient": p, "slice": int(s), "level": lv, "fold": int(f)}
                                for p, s, lv, f in zip(rows["patient"], rows["slice"],
                                                       rows["level"], fold)]})

    patients = rows["patient"].astype(str).to_numpy()
    reuse = bool(config.train.get("reuse_traced_model", False))
    model = None
    for f in folds_to_run(config.fold, k):
        test = fold == f
        train = ~test
        train_p, test_p = set(patients[train]), set(patients[test])
        both = sorted(train_p & test_p)
        if config.split == "patient" and both:
            raise ValueError(f"fold {f}: patient(s) {both[:5]} in both train and test")
        if not test.any() or not train.any():
            raise ValueError(f"fold {f}: {int(train.sum())} training and {int(test.sum())} "
                             "test crops; every fold needs both")
        start = time.time()
        model, history, class_weight = train_fold(
                config, x[train], y[train], seed=int(config.seed) + f,
                model=model if reuse else None)
        seconds = time.time() - start
        probs = model.predict(x[test], batch_size=int(config.train.batch_size), verbose=0)
        probs = np.asarray(probs, np.float64)
        fold_dir = workdir / "folds" / f"fold_{f}"
        fileio.atomic_save_keras(model, fold_dir / "model.keras")
        table = predictions_table(rows[test], probs, y[test], f, config.model.target)
        fileio.write_csv(fold_dir / "history.csv",
                         pd.DataFrame(history).rename_axis("epoch").reset_index())
        fileio.write_csv(fold_dir / "predictions.csv", table)
        report = cm.classification_report(y[test], probs, classes)
        fileio.write_json(fold_dir / "metrics.json", {
                "fold": f, "k": k, "split": config.split, "target": config.model.target,
                "backbone": config.model.backbone, "input_shape": list(x.shape[1:]),
                "n_train": int(train.sum()),
                "n_test": int(test.sum()), "train_patients": sorted(train_p),
                "test_patients": sorted(test_p), "patients_in_train_and_test": len(both),
                "class_weight": ({classes[c]: w for c, w in class_weight.items()}
                                 if class_weight else None),
                "loss_first_epoch": history["loss"][0],
                "loss_last_epoch": history["loss"][-1],
                "train_seconds": seconds, "metrics": report})
        log.info("fold %d: acc %.4f iou %.4f (%d test crops, %.0f s)", f, report["accuracy"],
                 report["iou_macro"], int(test.sum()), seconds)
        if not reuse:
            keras.backend.clear_session()


# === Toy data ===
def write_toy_crops(out_dir: str | os.PathLike, n_patients: int = 3, crops_per_patient: int = 10,
                    height: int = 32, width: int = 64, seed: int = 0) -> pathlib.Path:
    """Writes a tiny fake crops dir (PNG + index.csv) for smoke runs and tests.

    Each crop is a dark image with a horizontal bright band (the "disc"): its brightness
    falls and its thickness shrinks with the Pfirrmann grade, as T2 signal and disc height do
    with degeneration, and a small bright bump on the posterior (right) edge grows with the
    severity; plus Gaussian noise. Classes cycle through ``labels.GRADE_CLASSES`` starting at
    a patient-dependent offset, so every patient has several classes. Patients are
    ``toy000, toy001, ...``; levels cycle through ``labels.DISC_NAMES``.

    Returns:
        ``out_dir`` (with ``index.csv``).
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        patient = f"toy{p:03d}"
        for j in range(crops_per_patient):
            cls = labels.GRADE_CLASSES[(p * 3 + j) % labels.NUM_GRADE_CLASSES]
            grade, sev = labels.pfirrmann_of(cls), labels.severity_of(cls)
            level = labels.DISC_NAMES[j % len(labels.DISC_NAMES)]
            img = np.full((height, width), 0.15)
            half = max(1, round(height * (0.35 - 0.05 * (grade - 1)) / 2))
            c = height // 2
            img[c - half:c + half, width // 8: width - width // 8] = 1.0 - 0.15 * (grade - 1)
            bump = max(1, width // 24) * (1 + labels.SEVERITIES.index(sev))
            img[c - 2:c + 2, width - width // 8: width - width // 8 + bump] = 0.9
            img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
            file = f"{patient}/{patient}_slice{j}_{level}.png"  # as `spoils crops` names it
            (out / patient).mkdir(exist_ok=True)
            PIL.Image.fromarray((img * 255).round().astype(np.uint8)).save(out / file)
            rows.append({"patient": patient, "slice": j, "level": level, "pfirrmann": grade,
                         "severity": sev, "grade_class": cls, "file_npy": "",
                         "file_png": file})
    fileio.write_csv(out / INDEX_CSV, pd.DataFrame(rows))
    return out
