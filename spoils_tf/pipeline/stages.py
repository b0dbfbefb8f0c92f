"""TFX-style pipeline stages as plain functions: ExampleGen -> Trainer -> Evaluator -> Pusher.

No dependency on the ``tfx`` package. Each stage takes typed artifacts
(``spoils_tf.pipeline.artifacts``), writes its output artifact into a fresh directory ``out``
(``out/metadata.json`` last, so an interrupted stage leaves no valid artifact) and returns it.

* :func:`example_gen` validates a spoils dataset directory (``spoils_tf.data.layout``),
  fingerprints it, prepares the TFDS dataset and fixes the patient folds and held-out fold.
* :func:`trainer` trains a segmentation model on the training folds with
  ``spoils_tf.train.seg_lib.run`` and exports a SavedModel (``spoils_tf.export.serving``).
* :func:`train_classifiers` (the Trainer's second half) measures every disc of the dataset's
  ground-truth masks once (``geometry.features.build_feature_table``, ``geometry.crops.
  write_crops``) and trains, on the training patients only, the geometry classifier
  (``classical.models.build_classifier``, saved with ``classical.io.save_classifier``) and
  the crop classifier (``models.classifiers.DiscClassifier`` via ``grade_cnn_lib.train_fold``,
  saved as ``.keras``). Each is a ``Model`` artifact whose ``card`` holds every model-card
  field ``spoils_tf.bundle`` needs (classes, features, crop size, margin, context slices).
* :func:`evaluator` scores the segmentation model on the held-out fold (pooled metrics of
  ``spoils_tf.metrics.segmentation`` at original resolution, ``seg_lib.evaluate_model``) and,
  when given, the classifiers and their mean ensemble on the held-out patients' discs
  (:func:`evaluate_classifiers`), and blesses the whole bundle ONLY when every configured
  threshold is met (:func:`bless`); failed thresholds are recorded.
* :func:`pusher` refuses an unblessed model (:class:`NotBlessedError`) and copies the blessed
  model folder to ``<base_dir>/<model_name>/<version>/`` (TF Serving's layout) with a model
  card (``spoils_tf.bundle.write_card``): version = one more than the highest existing integer
  version; the copy is staged in a hidden temporary folder in ``<base_dir>/<model_name>/``
  (TF Serving ignores non-integer names) and renamed into place with
  ``fileio.rename_no_replace``, so an existing version is never overwritten and a failed
  push leaves no partial version. :func:`push_bundle` pushes the three models of a blessed run
  (segmentation, crop and geometry classifier) under the names of ``spoils_tf.bundle``: all
  three are staged first, then renamed one after the other; if a rename fails, the versions
  this call already renamed are taken back, so a bundle is published whole or not at all.

Thresholds: ``"dice/fg_macro>=0.8, level_accuracy>=0.9, grade/ensemble/accuracy>=0.5"`` (or a
mapping ``{metric: value}``, meaning ``>=``); each metric is a key of the evaluation:
``seg_lib.evaluate_model``'s keys and, with classifiers, ``grade/<cnn|geometry|ensemble>/
<GRADE_METRICS>``; a NaN value fails its check. :func:`run_pipeline` chains the stages for
``experiments/pipeline.py``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import pathlib
import re
import shutil
import tempfile
import time
from typing import Any, Mapping, Optional, Union

import numpy as np

from spoils_tf import bundle, fileio
from spoils_tf.data import layout
from spoils_tf.pipeline import artifacts as art

log = logging.getLogger(__name__)

BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
PUSH_RECORD_DIR = "assets.extra"     # inside a SavedModel; TF Serving leaves it alone
_THRESHOLD_RE = re.compile(r"^\s*(?P<metric>[^<>=\s]+)\s*(?P<op>>=|<=)\s*(?P<value>\S+)\s*$")
_OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}

# Held-out grading metrics recorded per classifier and for their ensemble, as
# ``grade/<short name>/<metric>`` (``spoils_tf.metrics.classification.classification_report``
# keys; ``n`` = discs scored).
GRADE_METRICS: tuple[str, ...] = ("n", "accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                                  "kappa_quadratic", "auroc_macro", "brier", "log_loss")
GRADE_PREFIX = "grade"
ENSEMBLE = "ensemble"
# Bundle model name -> short name in metric keys.
CLASSIFIER_SHORT: dict[str, str] = {bundle.CROP: "cnn", bundle.GEOMETRY: "geometry"}
# Classifier target (``classical.models.TARGETS``, the model card's vocabulary) -> the crop
# classifier's name for it (``models.classifiers.TARGET_CLASSES``).
CNN_TARGET: dict[str, str] = {"grade_class": "grade11", "pfirrmann": "pfirrmann5",
                              "binary": "binary"}
CROP_MODEL_FILE = "model.keras"
SEG_KERAS_FILE = "model.keras"       # next to the segmentation SavedModel
GEOMETRY_MODEL_FILE = "model.skops"


class NotBlessedError(RuntimeError):
    """The Pusher was given a model without a positive blessing for it."""


# === Helpers ===
def _fresh_dir(out: Union[str, os.PathLike]) -> pathlib.Path:
    """``out`` as an absolute path, created; raises FileExistsError if it holds an artifact."""
    out = pathlib.Path(out).resolve()
    if (out / art.METADATA_FILE).exists():
        raise FileExistsError(f"{out}: already holds an artifact ({art.METADATA_FILE}); "
                              "stages write to a new directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def parse_thresholds(spec: Union[str, Mapping[str, Any]]) -> list[tuple[str, str, float]]:
    """``[(metric, op, value)]`` from ``"a>=0.8, b<=3"`` or ``{metric: value}`` (``>=``).

    Raises:
        ValueError: an empty spec, an item that is not ``<metric> >=|<= <number>``, or a
            non-finite value.
    """
    items: list[tuple[str, str, float]] = []
    if isinstance(spec, str):
        for part in (p for p in spec.split(",") if p.strip()):
            m = _THRESHOLD_RE.match(part)
            try:
                value = float(m.group("value")) if m else float("nan")
            except ValueError:
                value = float("nan")
            if not m or not math.isfinite(value):
                raise ValueError(f"threshold {part.strip()!r}: expected '<metric> >= <number>' or "
                                 "'<metric> <= <number>', e.g. 'dice/fg_macro>=0.8'")
            items.append((m.group("metric"), m.group("op"), value))
    else:
        for metric, value in dict(spec).items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = float("nan")
            if not math.isfinite(v):
                raise ValueError(f"threshold for {metric!r}: {value!r}; expected a finite number")
            items.append((str(metric), ">=", v))
    if not items:
        raise ValueError("no thresholds configured: a model is blessed only against at least "
                         "one threshold, e.g. 'dice/fg_macro>=0.8'")
    return items


def bless(metrics: Mapping[str, float], thresholds: Union[str, Mapping[str, Any]]
          ) -> tuple[bool, list[dict[str, Any]], list[str]]:
    """Checks ``metrics`` against ``thresholds``.

    Returns:
        (blessed, checks, failed): blessed is True iff every check passed; each check is
        ``{"metric", "op", "threshold", "value", "passed"}``; failed lists
        ``"<metric> <op> <threshold> (got <value>)"``. A NaN or infinite value fails.

    Raises:
        ValueError: an invalid spec (:func:`parse_thresholds`) or a metric that is not a key
            of ``metrics`` (the message lists the keys).
    """
    checks, failed = [], []
    for metric, op, threshold in parse_thresholds(thresholds):
        if metric not in metrics:
            raise ValueError(f"threshold metric {metric!r} is not an evaluation metric; "
                             f"expected one of {sorted(metrics)}")
        value = float(metrics[metric])
        passed = math.isfinite(value) and _OPS[op](value, threshold)
        checks.append({"metric": metric, "op": op, "threshold": threshold,
                       "value": value if math.isfinite(value) else None, "passed": passed})
        if not passed:
            failed.append(f"{metric} {op} {threshold:g} (got {value:.6g})")
    return not failed, checks, failed


def existing_versions(model_dir: Union[str, os.PathLike]) -> list[int]:
    """Integer version folders under ``model_dir``, sorted ([] when it does not exist)."""
    from spoils_tf.export import serving
    return serving.existing_versions(model_dir)


def next_version(model_dir: Union[str, os.PathLike]) -> int:
    """One more than the highest existing integer version folder (1 for none)."""
    return (existing_versions(model_dir) or [0])[-1] + 1


def _tfds_config_of(dataset_dir: pathlib.Path) -> str:
    """``"synthetic"`` for a ``spoils synth`` cohort (it has ``synth_config.json``), else ``"spider"``."""
    return "synthetic" if (dataset_dir / "synth_config.json").is_file() else "spider"


def _load_examples(examples: art.Examples):
    from spoils_tf.data import tfds_builder
    ds, _ = tfds_builder.load_dataset(examples.dataset_dir, examples.tfds_dir, examples.tfds_config)
    return ds


# === ExampleGen ===
def example_gen(labelme_dir: Union[str, os.PathLike], out: Union[str, os.PathLike], *, k: int = 8,
                seed: int = 0, eval_fold: int = 0, tfds_config: str = "") -> art.Examples:
    """Validates a spoils dataset directory and records it as ``Examples``.

    Steps: check ``labelme/`` holds LabelMe files; fingerprint every data file (manifest in
    ``out/files.tsv``); prepare the TFDS dataset in ``out/tfds`` (a LabelMe file the reader
    refuses is skipped and listed in ``bad_files``, never dropped silently); take the
    dataset's ``folds.json`` when it has one, else make patient-grouped folds
    (``spoils_tf.data.folds.make_folds``, stratified by worst Pfirrmann grade from
    ``discs.csv`` when present) and write them to ``out/folds.json``.

    Args:
        labelme_dir: spoils dataset directory (``labelme/``, ``patients.csv``, ...); read only.
        out: a new artifact directory.
        k, seed: folds to make when the dataset has no ``folds.json``.
        eval_fold: the held-out fold (0..k-1).
        tfds_config: ``"spider" | "synthetic"``; "" = synthetic if the dataset has
            ``synth_config.json``, else spider.

    Returns:
        ``Examples``; ``metrics`` holds counts (patients, slices, slices without pixel
        spacing, patients per fold, bad files) and ``issues`` (``patients.csv`` /
        ``discs.csv`` rows that could not be used).

    Raises:
        FileNotFoundError: no dataset dir / no ``labelme/`` / no LabelMe json.
        ValueError: no readable example; ``eval_fold`` outside 0..k-1; a folds file that does
            not cover every patient.
        FileExistsError: ``out`` already holds an artifact.
    """
    from spoils_tf.data import folds as folds_lib
    from spoils_tf.data import tfds_builder

    start = time.perf_counter()
    dataset_dir = pathlib.Path(labelme_dir).resolve()
    jsons = layout.list_labelme_jsons(dataset_dir)
    if not jsons:
        raise FileNotFoundError(f"{dataset_dir / layout.LABELME_DIR}: no LabelMe .json files; "
                                "expected labelme/<patient>/<patient>_slice<k>.json")
    out = _fresh_dir(out)
    rows = art.data_files(dataset_dir)
    fingerprint = art.fingerprint_of(rows)
    art.atomic_write_text(out / art.MANIFEST_FILE, "path\tbytes\tsha256\n" + "".join(
            f"{rel}\t{size}\t{digest}\n" for rel, size, digest in rows))

    tfds_config = tfds_config or _tfds_config_of(dataset_dir)
    tfds_dir = out / "tfds"
    ds, _ = tfds_builder.load_dataset(dataset_dir, tfds_dir, tfds_config)
    bad = [f"{b.path}: {b.reason}" for b in tfds_builder.bad_files(dataset_dir)]
    _, issues = tfds_builder.read_patient_spacing(dataset_dir / layout.PATIENTS_CSV)
    slices: dict[str, int] = {}
    no_spacing = 0
    for patient, spacing in ds.map(lambda ex: (ex["patient"], ex["pixel_spacing_mm"])
                                   ).as_numpy_iterator():
        slices[patient.decode()] = slices.get(patient.decode(), 0) + 1
        no_spacing += int(not np.all(np.isfinite(spacing)))
    if not slices:
        raise ValueError(f"{dataset_dir}: no readable LabelMe example ({len(bad)} file(s) "
                         f"skipped: {bad[:3]})")

    own_folds = dataset_dir / layout.FOLDS_JSON
    if own_folds.is_file():
        folds = folds_lib.load_folds(own_folds)
        folds_path = own_folds
        missing = sorted(set(slices) - set(folds.assignment))
        if missing:
            raise ValueError(f"{own_folds}: field 'folds': {len(missing)} patient(s) of the dataset "
                             f"have no fold (e.g. {missing[:3]}); expected every patient")
    else:
        grades = {}
        if (dataset_dir / layout.DISCS_CSV).is_file():
            grades, grade_issues = folds_lib.read_worst_grades(dataset_dir / layout.DISCS_CSV)
            issues += grade_issues
        assignment = folds_lib.make_folds(sorted(slices), grades, k=k, seed=seed)
        folds_path = folds_lib.write_folds(
                out / layout.FOLDS_JSON, assignment, k=k, seed=seed, source=str(dataset_dir),
                stratified_by=(folds_lib.STRATIFIED_BY_GRADE if grades else folds_lib.NOT_STRATIFIED))
        folds = folds_lib.load_folds(folds_path)
    if not 0 <= eval_fold < folds.k:
        raise ValueError(f"eval_fold {eval_fold}: expected 0..{folds.k - 1} ({folds_path} has "
                         f"k={folds.k})")
    train, test = folds.split(eval_fold)
    train = [p for p in train if p in slices]
    test = [p for p in test if p in slices]
    per_fold = {str(f): sum(1 for p in slices if folds.assignment.get(p) == f) for f in range(folds.k)}
    metrics = {"patients": len(slices), "slices": sum(slices.values()), "bad_files": len(bad),
               "slices_without_pixel_spacing": no_spacing, "issues": issues,
               "folds": folds.k, "patients_per_fold": per_fold,
               "train_patients": len(train), "eval_patients": len(test),
               "eval_slices": sum(slices[p] for p in test),
               "seconds": time.perf_counter() - start}
    examples = art.Examples(
            uri=str(out), producer="ExampleGen", created=art.utc_now(), fingerprint=fingerprint,
            config={"labelme_dir": str(dataset_dir), "k": folds.k, "seed": folds.seed,
                    "eval_fold": eval_fold, "tfds_config": tfds_config},
            metrics=metrics, parents=(), dataset_dir=str(dataset_dir), tfds_dir=str(tfds_dir),
            tfds_config=tfds_config, folds_path=str(folds_path), eval_fold=int(eval_fold),
            train_patients=tuple(train), eval_patients=tuple(test), bad_files=tuple(bad))
    art.write_artifact(examples)
    log.info("ExampleGen: %d patients, %d slices, %d bad file(s), fingerprint %s -> %s",
             metrics["patients"], metrics["slices"], len(bad), fingerprint["sha256"][:12], out)
    return examples


# === Trainer ===
def trainer(examples: art.Examples, config, out: Union[str, os.PathLike]) -> art.Model:
    """Trains a segmentation model on ``examples``' training folds and exports it.

    Runs ``seg_lib.run`` with ``config.fold`` set to the held-out fold (so the model never
    sees the Evaluator's patients), then exports ``out/fold_<i>/model.keras`` as a SavedModel
    to ``out/serving_model/1`` with ``spoils_tf.export.serving.export_saved_model``.

    Args:
        examples: from :func:`example_gen`.
        config: a segmentation experiment config (``configs/seg_unet.py``,
            ``configs/seg_deeplabv3plus.py``); not modified (a copy is used).
        out: a new artifact directory (also ``seg_lib.run``'s workdir).

    Returns:
        ``Model``; ``metrics`` holds training time, epochs and first/last training loss.

    Raises:
        ValueError: ``config`` has no ``model``/``data``/``train`` sections (not a
            segmentation config).
        FileExistsError: ``out`` already holds an artifact.
    """

    from spoils_tf.data import folds as folds_lib
    from spoils_tf.export import serving
    from spoils_tf.train import seg_lib
    import spoils_tf.models

    for section in ("model", "data", "train"):
        if section not in config:
            raise ValueError(f"trainer config: section {section!r} is missing; expected a "
                             "segmentation experiment config (configs/seg_*.py)")
    out = _fresh_dir(out)
    cfg = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") \
        else config
    cfg.fold = str(examples.eval_fold)
    cfg.data.labelme_dir = examples.dataset_dir
    cfg.data.folds_path = examples.folds_path
    cfg.data.tfds_data_dir = examples.tfds_dir
    folds = folds_lib.load_folds(examples.folds_path)
    result = seg_lib.run(cfg, out, examples=_load_examples(examples), folds=folds)
    fold_metrics = result["folds"][examples.eval_fold]
    model_path = out / f"fold_{examples.eval_fold}" / "model.keras"
    model = spoils_tf.models.load_model(model_path)
    serving_dir = serving.export_saved_model(model, out, "serving_model", version=1,
                                             resize_mode=cfg.data.resize_mode)
    # The Keras model rides along (card field ``keras_file``): `spoils predict` runs it for
    # bfloat16 inference, which the fp32 SavedModel graph cannot do.
    shutil.copy2(model_path, pathlib.Path(serving_dir) / SEG_KERAS_FILE)
    metrics = {k: fold_metrics[k] for k in ("train_seconds", "epochs_run", "train_loss_first",
                                            "train_loss_last", "train_patients") if k in fold_metrics}
    model_art = art.Model(
            uri=str(out), producer="Trainer", created=art.utc_now(),
            fingerprint=examples.fingerprint, config=art.to_plain_config(cfg), metrics=metrics,
            parents=(examples.uri,), kind=bundle.KIND_OF[bundle.SEG], model_path=str(model_path),
            serving_model_dir=str(serving_dir), examples_uri=examples.uri, model_file=".",
            card={"resize_mode": str(cfg.data.resize_mode), "model_name": str(cfg.model.name),
                  "keras_file": SEG_KERAS_FILE,
                  "input_size": list(cfg.data.image_size)})
    art.write_artifact(model_art)
    log.info("Trainer: %s trained in %.1f s -> %s", cfg.model.name,
             metrics.get("train_seconds", float("nan")), out)
    return model_art


# === Trainer: classifiers ===
def _section(config, name: str):
    """``config.<name>`` of a ConfigDict or mapping (KeyError naming it when absent)."""
    try:
        return config[name]
    except (KeyError, AttributeError):
        raise KeyError(f"classifiers config: section {name!r} is missing; expected the "
                       "'classifiers' section of configs/pipeline.py") from None


def _geometry_features(df, geo) -> list[str]:
    """The geometry classifier's feature columns: ``geo.columns`` (or the geometry module's
    default list), minus ``geo.exclude_columns``, plus ``level_index`` when configured."""
    from spoils_tf.train import grade_geometry_lib as ggl

    used, missing = ggl.resolve_feature_columns(df, tuple(geo.columns))
    if missing:
        log.warning("feature table lacks default feature column(s) %s", missing)
    used = [c for c in used if c not in set(geo.exclude_columns)]
    if not used:
        raise ValueError(f"classifiers.geometry: no feature column left after excluding "
                         f"{list(geo.exclude_columns)}")
    if geo.add_level_index:
        used.append(ggl.LEVEL_INDEX_COLUMN)
    return used


def _with_level_index(df, features):
    from spoils_tf.train import grade_geometry_lib as ggl
    return ggl.add_level_index(df) if ggl.LEVEL_INDEX_COLUMN in features else df


def prepare_grading_data(examples: art.Examples, config, out: Union[str, os.PathLike]
                         ) -> dict[str, Any]:
    """Measures every disc of the dataset's ground-truth masks once, for training and evaluation.

    Writes ``out/features.parquet`` (+ ``.csv``, volumes, issues;
    ``geometry.features.write_feature_table``) and ``out/crops/`` (NPY crops of
    ``config.crop_size`` px with ``config.margin_frac`` and ``config.context_slices``, plus
    ``index.csv`` and ``crops_issues.csv``; ``geometry.crops.write_crops``). Measurement is
    deterministic per slice (nothing is fitted), so measuring held-out patients here leaks
    nothing; which rows train and which are scored is decided by the Examples' split.

    Returns:
        ``{"features_path", "crops_dir", "feature_rows", "feature_issues", "crops",
        "crop_issues", "seconds"}`` (counts of rows, and of files/discs skipped, each listed
        with its reason in the ``*issues*`` files).
    """
    from spoils_tf.geometry import crops as crops_lib
    from spoils_tf.geometry import features as features_lib

    start = time.perf_counter()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table, volumes, issues = features_lib.build_feature_table(examples.dataset_dir,
                                                              progress=False)
    features_path = out / "features.parquet"
    features_lib.write_feature_table(table, volumes, issues, features_path)
    crops_dir = out / "crops"
    index, crop_issues = crops_lib.write_crops(
            examples.dataset_dir, crops_dir, size=tuple(int(v) for v in config.crop_size),
            context_slices=int(config.context_slices), fmt="npy",
            margin_frac=float(config.margin_frac), progress=False)
    if len(issues) or len(crop_issues):
        log.warning("grading data: %d file(s) without features (%s), %d disc(s)/file(s) "
                    "without a crop (%s)", len(issues),
                    features_path.with_name("features_issues.csv"), len(crop_issues),
                    crops_dir / "crops_issues.csv")
    return {"features_path": str(features_path), "crops_dir": str(crops_dir),
            "feature_rows": len(table), "feature_issues": len(issues), "crops": len(index),
            "crop_issues": len(crop_issues), "seconds": time.perf_counter() - start}


def _rows_of(df, patients) -> "np.ndarray":
    """``bool [len(df)]``: the rows whose ``patient`` is one of ``patients``."""
    wanted = {str(p) for p in patients}
    return df["patient"].astype(str).isin(wanted).to_numpy()


def train_geometry_classifier(examples: art.Examples, config, data: Mapping[str, Any],
                              out: Union[str, os.PathLike]) -> art.Model:
    """Fits the geometry classifier on the training patients' labelled disc rows.

    Args:
        examples: the split (only ``examples.train_patients`` are used).
        config: the pipeline's ``classifiers`` section (``target``, ``geometry.{model,
            params, class_weight, columns, exclude_columns, add_level_index}``, ``seed``).
        data: :func:`prepare_grading_data`'s result.
        out: a new artifact directory; the model goes to ``out/export/model.skops`` (+ sidecar).

    Returns:
        ``Model`` of kind ``geometry_classifier``; ``card`` = ``target, classes, model_name,
        features``; ``metrics`` = row/patient counts and seconds.

    Raises:
        ValueError: no labelled training row (the dataset's ``discs.csv`` has no grades:
            disable the classifiers with ``--config.classifiers.enabled=False``).
        FileExistsError: ``out`` already holds an artifact.
    """
    from spoils_tf.classical import io as cio
    from spoils_tf.classical import models as cmodels
    from spoils_tf.train import grade_geometry_lib as ggl

    geo = _section(config, "geometry")
    target = str(config.target)
    classes = list(cmodels.TARGETS[target])
    out = _fresh_dir(out)
    start = time.perf_counter()
    df = ggl.load_feature_table(data["features_path"])
    features = _geometry_features(df, geo)
    df = _with_level_index(df, features)
    y = cmodels.target_labels(df, target)
    train = _rows_of(df, examples.train_patients) & np.asarray([v is not None for v in y])
    if not train.any():
        raise ValueError(f"{data['features_path']}: no training row with a {target!r} label "
                         f"({layout.DISCS_CSV} of {examples.dataset_dir} has no grades?); set "
                         "--config.classifiers.enabled=False to train segmentation only")
    params = dict(geo.params.to_dict() if hasattr(geo.params, "to_dict") else geo.params)
    pipe = cmodels.build_classifier(str(geo.model), params, classes=classes,
                                    seed=int(config.seed),
                                    class_weight=str(geo.class_weight) or None)
    pipe.fit(df.loc[train, features].astype(np.float64), y[train])
    export = out / "export"
    model_path = cio.save_classifier(
            pipe, export / GEOMETRY_MODEL_FILE, feature_names=features, target=target,
            classes=classes, extra={"model": str(geo.model), "params": params,
                                    "examples_uri": examples.uri})
    seconds = time.perf_counter() - start
    metrics = {"train_rows": int(train.sum()),
               "train_patients": int(df.loc[train, "patient"].nunique()),
               "train_classes_present": int(len(set(y[train]))),
               "unlabelled_train_rows": int((_rows_of(df, examples.train_patients)
                                             & ~np.asarray([v is not None for v in y])).sum()),
               "train_seconds": seconds, "grading_data": dict(data)}
    plain = art.to_plain_config(config)
    plain.update({"features_path": data["features_path"], "crops_dir": data["crops_dir"]})
    model = art.Model(
            uri=str(out), producer="Trainer", created=art.utc_now(),
            fingerprint=examples.fingerprint, config=plain, metrics=metrics,
            parents=(examples.uri,), kind=bundle.KIND_OF[bundle.GEOMETRY],
            model_path=str(model_path), serving_model_dir=str(export), examples_uri=examples.uri,
            model_file=GEOMETRY_MODEL_FILE,
            card={"target": target, "classes": classes, "model_name": str(geo.model),
                  "features": list(features)})
    art.write_artifact(model)
    log.info("Trainer: geometry classifier %s on %d rows (%d patients) in %.1f s -> %s",
             geo.model, metrics["train_rows"], metrics["train_patients"], seconds, out)
    return model


def train_crop_classifier(examples: art.Examples, config, data: Mapping[str, Any],
                          out: Union[str, os.PathLike]) -> art.Model:
    """Trains the crop classifier (``DiscClassifier``) on the training patients' labelled crops.

    Args:
        examples: the split (only ``examples.train_patients`` are used).
        config: the pipeline's ``classifiers`` section (``target``, ``crop_size``,
            ``margin_frac``, ``context_slices``, ``seed``, ``cnn.{model, train}`` as in
            ``configs/grade_cnn.py``; ``cnn.model.target`` is set from ``target``;
            ``cnn_max_slices_per_patient``: n > 0 trains on the n crops per (patient, level)
            nearest the patient's middle slice, ``grade_cnn_lib.central_slice_rows``).
        data: :func:`prepare_grading_data`'s result.
        out: a new artifact directory; the model goes to ``out/export/model.keras``.

    Returns:
        ``Model`` of kind ``crop_classifier``; ``card`` = ``target, classes, crop_height,
        crop_width, context_slices, margin_frac, backbone``; ``metrics`` = counts, first/last
        training loss, seconds.

    Raises:
        ValueError: no usable labelled training crop.
        FileExistsError: ``out`` already holds an artifact.
    """
    import keras

    from spoils_tf.models import classifiers
    from spoils_tf.train import common
    from spoils_tf.train import grade_cnn_lib

    cnn = _section(config, "cnn")
    cnn = cnn.copy_and_resolve_references() if hasattr(cnn, "copy_and_resolve_references") \
        else cnn
    target = str(config.target)
    cnn.model.target = CNN_TARGET[target]
    classes = list(classifiers.target_classes(cnn.model.target))
    height, width = (int(v) for v in config.crop_size)
    out = _fresh_dir(out)
    start = time.perf_counter()
    index = grade_cnn_lib.read_crops_index(data["crops_dir"])
    index = index[_rows_of(index, examples.train_patients)].reset_index(drop=True)
    if index.empty:
        raise ValueError(f"{data['crops_dir']}: no crop of a training patient")
    n_central = int(config.get("cnn_max_slices_per_patient", 0) or 0)
    not_central = 0
    if n_central:
        index, dropped = grade_cnn_lib.central_slice_rows(index, n_central)
        not_central = len(dropped)
    x, y, rows, skipped = grade_cnn_lib.load_crops(data["crops_dir"], index, cnn.model.target,
                                                   height, width)
    if len(skipped):
        log.warning("crop classifier: %d training crop(s) skipped, e.g. %s", len(skipped),
                    skipped["reason"].head(3).tolist())
    previous = keras.mixed_precision.global_policy()
    common.configure_precision(cnn.train.precision)
    try:
        net, history, _ = grade_cnn_lib.train_fold(cnn, x, y, seed=int(config.seed))
        export = out / "export"
        model_path = grade_cnn_lib.save_model(net, export / CROP_MODEL_FILE)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    seconds = time.perf_counter() - start
    losses = history.get("loss", [])
    metrics = {"train_crops": int(len(x)), "train_patients": int(rows["patient"].nunique()),
               "train_classes_present": int(len(np.unique(y))),
               "skipped_train_crops": int(len(skipped)),
               "not_central_train_crops": int(not_central),
               "epochs": len(losses),
               "train_loss_first": float(losses[0]) if losses else float("nan"),
               "train_loss_last": float(losses[-1]) if losses else float("nan"),
               "train_seconds": seconds, "grading_data": dict(data)}
    plain = art.to_plain_config(config)
    plain["cnn"] = art.to_plain_config(cnn)
    plain.update({"features_path": data["features_path"], "crops_dir": data["crops_dir"]})
    model = art.Model(
            uri=str(out), producer="Trainer", created=art.utc_now(),
            fingerprint=examples.fingerprint, config=plain, metrics=metrics,
            parents=(examples.uri,), kind=bundle.KIND_OF[bundle.CROP],
            model_path=str(model_path), serving_model_dir=str(export), examples_uri=examples.uri,
            model_file=CROP_MODEL_FILE,
            card={"target": target, "classes": classes, "crop_height": height,
                  "crop_width": width, "context_slices": int(config.context_slices),
                  "margin_frac": float(config.margin_frac), "backbone": str(cnn.model.backbone),
                  "input_channels": int(x.shape[-1]),
                  "normalisation": "geometry.crops: 1st-99th percentile of the box -> [0, 1]"})
    art.write_artifact(model)
    keras.backend.clear_session()
    log.info("Trainer: crop classifier %s on %d crops in %.1f s, loss %.4f -> %.4f -> %s",
             cnn.model.backbone, len(x), seconds, metrics["train_loss_first"],
             metrics["train_loss_last"], out)
    return model


def train_classifiers(examples: art.Examples, config, out: Union[str, os.PathLike]
                      ) -> dict[str, art.Model]:
    """The Trainer's classifiers: grading data once, then both classifiers.

    Writes ``out/data`` (:func:`prepare_grading_data`), ``out/<bundle.GEOMETRY>`` and
    ``out/<bundle.CROP>`` (one ``Model`` artifact each).

    Args:
        examples: from :func:`example_gen`.
        config: the pipeline's ``classifiers`` section (configs/pipeline.py).
        out: a new directory.

    Returns:
        ``{bundle.GEOMETRY: Model, bundle.CROP: Model}``.

    Raises:
        ValueError: unknown ``config.target``; no labelled training row or crop.
        FileExistsError: ``out`` already holds the artifacts.
    """
    from spoils_tf.classical import models as cmodels

    if str(config.target) not in CNN_TARGET or str(config.target) not in cmodels.TARGETS:
        raise ValueError(f"classifiers.target: {config.target!r}; expected one of "
                         f"{sorted(CNN_TARGET)}")
    out = pathlib.Path(out).resolve()
    for name in (bundle.GEOMETRY, bundle.CROP):     # fail before measuring anything
        _fresh_dir(out / name)
    data = prepare_grading_data(examples, config, out / "data")
    return {bundle.GEOMETRY: train_geometry_classifier(examples, config, data,
                                                       out / bundle.GEOMETRY),
            bundle.CROP: train_crop_classifier(examples, config, data, out / bundle.CROP)}


# === Evaluator ===
def grade_metric_keys(classifiers: Optional[Mapping[str, art.Model]]) -> list[str]:
    """``grade/<short>/<metric>`` keys the Evaluator records for these classifiers (with
    ``grade/ensemble/...`` when both are given), in a stable order; [] for none."""
    if not classifiers:
        return []
    shorts = [CLASSIFIER_SHORT[n] for n in bundle.MODEL_NAMES if n in classifiers]
    if len(shorts) == len(CLASSIFIER_SHORT):
        shorts.append(ENSEMBLE)
    return [f"{GRADE_PREFIX}/{s}/{m}" for s in shorts for m in GRADE_METRICS]


def _check_classifiers(classifiers: Mapping[str, art.Model], examples: art.Examples) -> None:
    for name, m in classifiers.items():
        if name not in CLASSIFIER_SHORT:
            raise ValueError(f"classifiers: unknown model name {name!r}; expected "
                             f"{sorted(CLASSIFIER_SHORT)}")
        if m.kind != bundle.KIND_OF[name]:
            raise ValueError(f"classifier {m.uri}: kind {m.kind!r}; under {name!r} expected "
                             f"{bundle.KIND_OF[name]!r}")
        if m.fingerprint.get("sha256") != examples.fingerprint.get("sha256"):
            raise ValueError(f"classifier {m.uri} was trained on data with fingerprint "
                             f"{m.fingerprint.get('sha256')}, the examples {examples.uri} "
                             f"have {examples.fingerprint.get('sha256')}")


def _grade_report(y_true, probs, classes, prefix: str) -> dict[str, float]:
    from spoils_tf.metrics import classification as cm

    report = cm.classification_report(np.asarray(y_true, np.int64),
                                      np.asarray(probs, np.float64).reshape(-1, len(classes)),
                                      list(classes))
    return {f"{prefix}/{k}": float(report[k]) for k in GRADE_METRICS}


def evaluate_classifiers(classifiers: Mapping[str, art.Model], examples: art.Examples
                         ) -> tuple[dict[str, float], "Any"]:
    """Scores the classifiers and their mean ensemble on the held-out patients' discs.

    Each classifier grades every labelled disc of ``examples.eval_patients`` it can: the
    geometry classifier every row of the feature table (NaN measurements are imputed as in
    training), the crop classifier every disc with a usable crop; discs without a label are
    counted (``.../n_unlabelled``), never silently left out. The ensemble is the mean of the
    two probability vectors (the SPOILS paper's; ``spoils_tf.ensemble.mean_ensemble``) on
    the discs both graded; ``grade/ensemble/n_unmatched`` counts discs only one model
    graded. Metrics: :data:`GRADE_METRICS` of ``metrics.classification.classification_report``.

    Returns:
        ``(metrics, predictions)``: metrics keyed ``grade/<cnn|geometry|ensemble>/<metric>``;
        predictions a DataFrame with one row per (patient, slice, level, model): ``model,
        y_true, y_pred, prob/<class>``.

    Raises:
        ValueError: a classifier of an unknown name/kind or trained on other data; the two
            classifiers disagree on the class list.
    """
    import pandas as pd

    from spoils_tf import ensemble as ens
    from spoils_tf.metrics import classification as cm

    _check_classifiers(classifiers, examples)
    metrics: dict[str, float] = {}
    tables: dict[str, pd.DataFrame] = {}
    class_lists = {tuple(m.card.get("classes", ())) for m in classifiers.values()}
    if len(class_lists) > 1:
        raise ValueError(f"the classifiers have different class lists {sorted(class_lists)}; "
                         "train them on one target")
    for name in bundle.MODEL_NAMES:
        if name not in classifiers:
            continue
        m = classifiers[name]
        short = CLASSIFIER_SHORT[name]
        classes = list(m.card["classes"])
        if name == bundle.GEOMETRY:
            rows, y, probs, extra = _predict_geometry(m, examples)
        else:
            rows, y, probs, extra = _predict_crops(m, examples)
        metrics.update(_grade_report(y, probs, classes, f"{GRADE_PREFIX}/{short}"))
        metrics.update({f"{GRADE_PREFIX}/{short}/{k}": float(v) for k, v in extra.items()})
        table = rows[list(ens.KEYS)].reset_index(drop=True).copy()
        table["model"] = short
        table["y_true"] = [classes[i] for i in y]
        table["y_pred"] = [classes[i] for i in np.asarray(probs).argmax(axis=1)] \
            if len(table) else []
        table[cm.prob_columns(classes)] = np.asarray(probs, np.float64).reshape(-1, len(classes))
        tables[short] = table
    if len(tables) == len(CLASSIFIER_SHORT):
        classes = list(next(iter(classifiers.values())).card["classes"])
        pcols = cm.prob_columns(classes)
        a, b = tables["cnn"], tables["geometry"]
        joined = a.merge(b, on=list(ens.KEYS), how="inner", suffixes=("_cnn", "_geometry"))
        mismatch = (joined["y_true_cnn"] != joined["y_true_geometry"]).to_numpy()
        if mismatch.any():
            raise ValueError(f"the classifiers disagree on the true class of "
                             f"{int(mismatch.sum())} disc(s) (e.g. "
                             f"{joined.loc[mismatch, list(ens.KEYS)].iloc[0].tolist()})")
        probs = ens.mean_ensemble([joined[[f"{c}_cnn" for c in pcols]].to_numpy(),
                                   joined[[f"{c}_geometry" for c in pcols]].to_numpy()]) \
            if len(joined) else np.zeros((0, len(classes)))
        y = cm.encode(joined["y_true_cnn"], classes, "y_true") if len(joined) else \
            np.zeros(0, np.int64)
        metrics.update(_grade_report(y, probs, classes, f"{GRADE_PREFIX}/{ENSEMBLE}"))
        metrics[f"{GRADE_PREFIX}/{ENSEMBLE}/n_unmatched"] = float(len(a) + len(b)
                                                                  - 2 * len(joined))
        table = joined[list(ens.KEYS)].copy()
        table["model"] = ENSEMBLE
        table["y_true"] = joined["y_true_cnn"].to_numpy()
        table["y_pred"] = [classes[i] for i in probs.argmax(axis=1)] if len(joined) else []
        table[pcols] = probs
        tables[ENSEMBLE] = table
    predictions = pd.concat(list(tables.values()), ignore_index=True) if tables else \
        pd.DataFrame()
    return metrics, predictions


def _predict_geometry(model: art.Model, examples: art.Examples):
    """``(rows, y int [N], probs [N, C], extra counts)`` on the held-out labelled feature rows."""
    from spoils_tf.classical import io as cio
    from spoils_tf.classical import models as cmodels
    from spoils_tf.metrics import classification as cm
    from spoils_tf.train import grade_geometry_lib as ggl

    pipe, meta = cio.load_classifier(model.model_path)
    features = list(meta["feature_names"])
    df = _with_level_index(ggl.load_feature_table(model.config["features_path"]), features)
    held_out = _rows_of(df, examples.eval_patients)
    labels_ = cmodels.target_labels(df, str(model.card["target"]))
    labelled = np.asarray([v is not None for v in labels_])
    use = held_out & labelled
    rows = df.loc[use].reset_index(drop=True)
    classes = list(model.card["classes"])
    probs = pipe.predict_proba(rows[features].astype(np.float64)) if len(rows) else \
        np.zeros((0, len(classes)))
    y = cm.encode(labels_[use], classes, "y_true") if len(rows) else np.zeros(0, np.int64)
    return rows, y, probs, {"n_unlabelled": int((held_out & ~labelled).sum())}


def _predict_crops(model: art.Model, examples: art.Examples):
    """``(rows, y int [N], probs [N, C], extra counts)`` on the held-out labelled crops."""
    import keras

    from spoils_tf.train import grade_cnn_lib
    import spoils_tf.models

    crops_dir = model.config["crops_dir"]
    index = grade_cnn_lib.read_crops_index(crops_dir)
    index = index[_rows_of(index, examples.eval_patients)].reset_index(drop=True)
    classes = list(model.card["classes"])
    empty = (index.iloc[:0], np.zeros(0, np.int64), np.zeros((0, len(classes))),
             {"n_skipped": len(index)})
    if index.empty:
        return empty
    target = CNN_TARGET[str(model.card["target"])]
    try:
        x, y, rows, skipped = grade_cnn_lib.load_crops(crops_dir, index, target,
                                                       int(model.card["crop_height"]),
                                                       int(model.card["crop_width"]))
    except ValueError as e:                 # no usable crop at all: reported, not fatal
        log.warning("crop classifier: no held-out crop to score (%s)", e)
        return empty
    net = spoils_tf.models.load_model(model.model_path)
    probs = np.asarray(net.predict(x, batch_size=32, verbose=0), np.float64)
    keras.backend.clear_session()
    return rows, y, probs, {"n_skipped": len(skipped)}


def evaluator(model: art.Model, examples: art.Examples,
              thresholds: Union[str, Mapping[str, Any]], out: Union[str, os.PathLike],
              classifiers: Optional[Mapping[str, art.Model]] = None,
              ) -> tuple[art.ModelEvaluation, art.ModelBlessing]:
    """Scores ``model`` (and ``classifiers``) on the held-out fold and blesses them or not.

    Metrics: ``seg_lib.evaluate_model`` on the ``eval_patients`` (the slices the training
    config used: ``data.max_slices_per_patient``), pooled over slices at their original
    resolution; with ``classifiers`` ({``bundle.CROP``/``bundle.GEOMETRY``: Model}) also
    :func:`evaluate_classifiers` (``grade/...`` keys; held-out predictions in
    ``out/evaluation/grade_predictions.csv``). Blessed only when every threshold holds
    (:func:`bless`), at least one slice was scored and, with classifiers, every classifier
    (and the ensemble) graded at least one held-out disc. The one blessing covers the whole
    bundle (``ModelBlessing.model_uris``). Writes ``out/evaluation`` (ModelEvaluation) and
    ``out/blessing`` (ModelBlessing, with an empty ``BLESSED`` or ``NOT_BLESSED`` file).

    Raises:
        ValueError: invalid thresholds or a threshold on an unknown metric (checked before
            anything is evaluated); a model or classifier trained on other examples
            (fingerprints differ) or of the wrong kind.
        FileExistsError: ``out`` already holds the artifacts.
    """

    from spoils_tf.metrics import segmentation as seg_metrics
    from spoils_tf.train import seg_lib
    import spoils_tf.models  # noqa: F401

    classifiers = dict(classifiers or {})
    known = seg_metrics.SegmentationMetrics().result()
    known["slices"] = float("nan")
    known.update({k: float("nan") for k in grade_metric_keys(classifiers)})
    if classifiers:                   # the extra counts evaluate_classifiers records
        known.update({f"{GRADE_PREFIX}/{k}": float("nan") for k in (
                "cnn/n_skipped", "geometry/n_unlabelled", f"{ENSEMBLE}/n_unmatched")})
    bless(known, thresholds)          # fail fast on a bad spec or an unknown metric
    if model.fingerprint.get("sha256") != examples.fingerprint.get("sha256"):
        raise ValueError(f"model {model.uri} was trained on data with fingerprint "
                         f"{model.fingerprint.get('sha256')}, the examples {examples.uri} have "
                         f"{examples.fingerprint.get('sha256')}; evaluate on the same dataset")
    _check_classifiers(classifiers, examples)
    out = pathlib.Path(out).resolve()
    eval_dir, blessing_dir = _fresh_dir(out / "evaluation"), _fresh_dir(out / "blessing")
    start = time.perf_counter()
    ds = _load_examples(examples)
    data_cfg = model.config.get("data", {})
    keys = seg_lib.central_slice_keys(ds, int(data_cfg.get("max_slices_per_patient", 0) or 0))
    keras_model = spoils_tf.models.load_model(model.model_path)
    metrics = seg_lib.evaluate_model(keras_model, ds, list(examples.eval_patients),
                                     data_cfg.get("resize_mode", "letterbox"), keys)
    metrics["eval_seconds"] = time.perf_counter() - start
    if classifiers:
        t0 = time.perf_counter()
        grade, predictions = evaluate_classifiers(classifiers, examples)
        metrics.update(grade)
        metrics[f"{GRADE_PREFIX}/eval_seconds"] = time.perf_counter() - t0
        art.atomic_write_text(eval_dir / "grade_predictions.csv", predictions.to_csv(index=False))
    spec = thresholds if isinstance(thresholds, str) else dict(thresholds)
    model_uris = (model.uri,) + tuple(classifiers[n].uri for n in bundle.MODEL_NAMES
                                      if n in classifiers)
    evaluation = art.ModelEvaluation(
            uri=str(eval_dir), producer="Evaluator", created=art.utc_now(),
            fingerprint=examples.fingerprint, config={"thresholds": spec,
                                                      "eval_patients": list(examples.eval_patients)},
            metrics=metrics, parents=(model.uri, examples.uri) + model_uris[1:],
            model_uri=model.uri, examples_uri=examples.uri, eval_fold=examples.eval_fold)
    art.write_artifact(evaluation)
    blessed, checks, failed = bless(metrics, thresholds)
    if not metrics.get("slices"):
        blessed = False
        failed.append("no held-out slice was evaluated (slices = 0)")
    for key in grade_metric_keys(classifiers):
        if key.endswith("/n") and not metrics.get(key):
            blessed = False
            failed.append(f"no held-out disc was graded ({key} = 0)")
    blessing = art.ModelBlessing(
            uri=str(blessing_dir), producer="Evaluator", created=art.utc_now(),
            fingerprint=examples.fingerprint, config={"thresholds": spec},
            metrics={c["metric"]: c["value"] for c in checks},
            parents=(model.uri, evaluation.uri) + model_uris[1:],
            blessed=bool(blessed), checks=tuple(checks), failed=tuple(failed),
            model_uri=model.uri, evaluation_uri=evaluation.uri, model_uris=model_uris)
    (blessing_dir / (BLESSED_FILE if blessed else NOT_BLESSED_FILE)).touch()
    art.write_artifact(blessing)
    log.info("Evaluator: %s; %s", "BLESSED" if blessed else "NOT blessed",
             "; ".join(failed) if failed else "all thresholds met")
    return evaluation, blessing


# === Pusher ===
def _check_blessing(model: art.Model, blessing: art.ModelBlessing) -> None:
    """Raises NotBlessedError unless ``blessing`` is a positive verdict covering ``model``."""
    if not blessing.covers(model.uri):
        raise NotBlessedError(f"the blessing {blessing.uri} is for model {blessing.model_uri}"
                              + (f" (bundle {list(blessing.model_uris)})" if blessing.model_uris
                                 else "") + f", not for {model.uri}; evaluate this model first")
    if not blessing.blessed:
        raise NotBlessedError(f"model {model.uri} is not blessed, refusing to push it; failed "
                              f"thresholds: {'; '.join(blessing.failed) or 'none recorded'}")
    on_disk = pathlib.Path(blessing.uri)
    if not (on_disk / BLESSED_FILE).is_file() or (on_disk / NOT_BLESSED_FILE).exists():
        raise NotBlessedError(f"{on_disk}: no {BLESSED_FILE} marker next to the blessing record; "
                              "refusing to push")


def _check_model_name(model_name: str) -> None:
    if not model_name or os.sep in model_name or model_name.startswith(".") or \
            (os.altsep and os.altsep in model_name):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")


def _check_model_files(model: art.Model) -> pathlib.Path:
    """The folder to push; raises FileNotFoundError when it lacks the model file."""
    src = pathlib.Path(model.serving_model_dir)
    if model.kind == bundle.KIND_OF[bundle.SEG]:
        if not (src / "saved_model.pb").is_file():
            raise FileNotFoundError(f"{src}: no saved_model.pb; the Model artifact {model.uri} "
                                    "has no SavedModel to push")
    elif not (src / model.model_file).is_file():
        raise FileNotFoundError(f"{src / model.model_file}: not found; the Model artifact "
                                f"{model.uri} has no {model.kind} file to push")
    return src


def card_metrics(kind: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The held-out metrics that describe a model of ``kind``: segmentation keys for the
    segmentation model; ``grade/cnn/*`` (crop) or ``grade/geometry/*`` (geometry) plus
    ``grade/ensemble/*`` for a classifier."""
    grade = f"{GRADE_PREFIX}/"
    if kind == bundle.KIND_OF[bundle.SEG]:
        return {k: v for k, v in metrics.items() if not k.startswith(grade)}
    own = {bundle.KIND_OF[n]: CLASSIFIER_SHORT[n] for n in CLASSIFIER_SHORT}.get(kind)
    prefixes = tuple(f"{grade}{s}/" for s in (own, ENSEMBLE) if s)
    return {k: v for k, v in metrics.items() if k.startswith(prefixes)}


def model_card(model: art.Model, metrics: Mapping[str, Any],
               extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The model card (``spoils_tf.bundle``) of a Model artifact, without ``format``.

    ``kind``, ``model_file``, ``created``, ``metrics`` (:func:`card_metrics` of ``metrics``),
    ``data_fingerprint`` (the training data's sha256), ``config`` (the training config), the
    artifact's ``card`` fields, ``model_uri`` and ``extra``. A segmentation model recorded
    without a ``resize_mode`` takes its training config's ``data.resize_mode``, else
    ``"letterbox"`` (the default of ``configs/base.seg_data_config``).
    """
    card = {"kind": model.kind, "model_file": model.model_file, "created": art.utc_now(),
            "metrics": art.jsonable(card_metrics(model.kind, metrics)),
            "data_fingerprint": str(model.fingerprint.get("sha256", "")),
            "config": model.config, "model_uri": model.uri}
    card.update(model.card)
    if model.kind == bundle.KIND_OF[bundle.SEG] and "resize_mode" not in card:
        card["resize_mode"] = str(model.config.get("data", {}).get("resize_mode", "letterbox"))
    card.update(extra or {})
    return card


def _stage(model: art.Model, blessing: art.ModelBlessing, base_dir: pathlib.Path,
           model_name: str, metrics: Mapping[str, Any],
           extra_card: Optional[Mapping[str, Any]] = None) -> tuple[pathlib.Path, art.PushedModel]:
    """Copies the model with its push record and card into a hidden temporary folder of
    ``<base_dir>/<model_name>/``; returns ``(tmp, PushedModel)`` (its ``uri`` = the version
    folder the rename will create). Removes the temporary folder on failure."""
    src = _check_model_files(model)
    model_dir = base_dir / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    final = model_dir / str(version)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-push-{version}-"))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        pushed = art.PushedModel(
                uri=str(final), producer="Pusher", created=art.utc_now(),
                fingerprint=model.fingerprint,
                config={"base_dir": str(base_dir), "model_name": model_name},
                metrics=dict(blessing.metrics), parents=(model.uri, blessing.uri),
                base_dir=str(base_dir), model_name=model_name, version=version,
                model_uri=model.uri, blessing_uri=blessing.uri)
        art.write_artifact(pushed, directory=tmp / PUSH_RECORD_DIR)
        bundle.write_card(tmp, model_card(model, metrics, {"version": version,
                                                           "blessing_uri": blessing.uri,
                                                           **dict(extra_card or {})}))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, pushed


def pusher(model: art.Model, blessing: art.ModelBlessing, base_dir: Union[str, os.PathLike],
           model_name: str, *, evaluation: Optional[art.ModelEvaluation] = None
           ) -> art.PushedModel:
    """Publishes one blessed model as ``<base_dir>/<model_name>/<version>/`` for TF Serving.

    The model folder (``model.serving_model_dir``: the SavedModel, or the classifier's files)
    is copied into a hidden temporary folder in ``<base_dir>/<model_name>/`` together with
    the push record (``assets.extra/metadata.json``, the ``PushedModel`` artifact) and the
    model card (``bundle.card_path``, :func:`model_card`; its ``metrics`` are
    ``evaluation``'s held-out metrics, or the blessing's checked metrics when no evaluation
    is given), then renamed to the next integer version with ``fileio.rename_no_replace``. On
    any failure the temporary folder is removed: no partial version is ever visible.

    Returns:
        ``PushedModel`` whose ``uri`` is the version directory.

    Raises:
        NotBlessedError: the blessing is negative or does not cover the model.
        ValueError: ``model_name`` is not a plain folder name.
        FileNotFoundError: the model has no SavedModel / model file.
        FileExistsError: the version directory appeared while pushing (a concurrent push):
            nothing is overwritten; push again to take the next version.
    """
    _check_blessing(model, blessing)
    _check_model_name(model_name)
    _check_model_files(model)
    metrics = evaluation.metrics if evaluation is not None else blessing.metrics
    tmp, pushed = _stage(model, blessing, pathlib.Path(base_dir).resolve(), model_name, metrics)
    try:
        fileio.rename_no_replace(tmp, pushed.uri)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Pusher: %s version %d -> %s", model_name, pushed.version, pushed.uri)
    return pushed


def push_bundle(models: Mapping[str, art.Model], blessing: art.ModelBlessing,
                base_dir: Union[str, os.PathLike], *,
                evaluation: Optional[art.ModelEvaluation] = None) -> dict[str, art.PushedModel]:
    """Publishes the models of one blessed run as a model bundle (``spoils_tf.bundle``).

    ``models`` maps bundle names (``bundle.SEG``, ``bundle.CROP``, ``bundle.GEOMETRY``; the
    segmentation model is required) to Model artifacts. Every model must be covered by the
    positive ``blessing`` and be of its name's kind. Each is staged as in :func:`pusher`
    (its own next version; the card also records ``bundle``: the versions of all models of
    this push, so a reader can tell models pushed together), then the staged folders are
    renamed into place one after the other. If a rename fails, the versions this call already
    published are renamed back out of sight and removed, and the error is raised: a push
    publishes the whole bundle or nothing (a reader may see the first versions during the
    milliseconds before such a roll-back).

    Returns:
        ``{name: PushedModel}``.

    Raises:
        NotBlessedError: the blessing is negative or does not cover one of the models
            (checked before anything is copied).
        ValueError: an unknown name, no segmentation model, or a model of the wrong kind.
        FileNotFoundError: a model without its files. FileExistsError: a concurrent push
            took a version (nothing is overwritten).
    """
    unknown = sorted(set(models) - set(bundle.MODEL_NAMES))
    if unknown:
        raise ValueError(f"push_bundle: unknown model name(s) {unknown}; expected some of "
                         f"{list(bundle.MODEL_NAMES)}")
    if bundle.SEG not in models:
        raise ValueError(f"push_bundle: a bundle needs its segmentation model ({bundle.SEG!r})")
    names = [n for n in bundle.MODEL_NAMES if n in models]
    for name in names:
        if models[name].kind != bundle.KIND_OF[name]:
            raise ValueError(f"push_bundle: {models[name].uri} is a {models[name].kind!r}; "
                             f"{name!r} must be {bundle.KIND_OF[name]!r}")
        _check_blessing(models[name], blessing)
        _check_model_files(models[name])
    base = pathlib.Path(base_dir).resolve()
    metrics = evaluation.metrics if evaluation is not None else blessing.metrics
    versions = {n: next_version(base / n) for n in names}
    staged: list[tuple[str, pathlib.Path, art.PushedModel]] = []
    try:
        for name in names:
            tmp, pushed = _stage(models[name], blessing, base, name, metrics,
                                 {"bundle": {"versions": versions, "models": names}})
            staged.append((name, tmp, pushed))
            if pushed.version != versions[name]:
                raise FileExistsError(errno.EEXIST, f"{base / name}: version {versions[name]} "
                                      "was taken while pushing; push again", str(base / name))
    except BaseException:
        for _, tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    fileio.publish_all_or_none([(tmp, pushed.uri) for _, tmp, pushed in staged])
    out = {name: pushed for name, _, pushed in staged}
    log.info("Pusher: bundle %s -> %s", ", ".join(f"{n} v{p.version}" for n, p in out.items()),
             base)
    return out


def read_pushed(version_dir: Union[str, os.PathLike]) -> art.PushedModel:
    """The ``PushedModel`` record of a pushed version directory."""
    return art.read_artifact(pathlib.Path(version_dir) / PUSH_RECORD_DIR, art.PushedModel)


# === Pipeline ===
def _next_run_dir(workdir: pathlib.Path) -> pathlib.Path:
    runs = [int(p.name[4:]) for p in workdir.glob("run_*") if p.name[4:].isdigit()]
    for n in range(max(runs, default=0) + 1, max(runs, default=0) + 1000):
        path = workdir / f"run_{n}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"{workdir}: could not create a new run_<n> directory")


def _dataset_dir(config, workdir: pathlib.Path) -> pathlib.Path:
    """The configured dataset, or a synthetic cohort made once in ``workdir/synthetic``."""
    configured = str(config.examples.labelme_dir or "")
    if configured:
        return pathlib.Path(configured)
    out = workdir / "synthetic"
    if not (out / layout.LABELME_DIR).is_dir():
        from spoils_tf.data import synthetic
        syn = config.examples.synthetic
        rc = synthetic.main(["--patients", str(syn.patients), "--slices-per-patient",
                             str(syn.slices_per_patient), "--seed", str(syn.seed),
                             "--size", str(syn.size), "--out", str(out), "--no-progress"])
        if rc:
            raise RuntimeError(f"spoils synth --out {out} failed with exit code {rc}")
    return out


def _classifiers_enabled(config) -> bool:
    return "classifiers" in config and bool(config.classifiers.enabled)


def run_pipeline(config, workdir: Union[str, os.PathLike]) -> dict[str, Any]:
    """ExampleGen -> Trainer (+ classifiers) -> Evaluator -> Pusher (the Pusher only when blessed).

    Artifacts go to ``workdir/run_<n>/{ExampleGen,Trainer,Evaluator}`` (a new ``n`` per call)
    and, when ``config.classifiers.enabled``, ``workdir/run_<n>/Trainer_classifiers/``
    (:func:`train_classifiers`); the Evaluator then scores and blesses all three models and
    the Pusher publishes them as one bundle (:func:`push_bundle`) under
    ``config.pusher.base_dir`` ("" = ``workdir/serving``), which must then use the bundle's
    segmentation name (``config.pusher.model_name == bundle.SEG``).

    Returns:
        ``{"run_dir", "examples", "model", "classifiers" ({name: Model}, {} when disabled),
        "evaluation", "blessing", "pushed" (the segmentation PushedModel, None when not
        blessed), "pushed_bundle" ({name: PushedModel}, {} when not blessed), "seconds":
        {stage: wall seconds}}``.

    Raises:
        ValueError: classifiers enabled with ``pusher.model_name`` other than ``bundle.SEG``
            (checked before any work).
    """
    with_classifiers = _classifiers_enabled(config)
    if with_classifiers and str(config.pusher.model_name) != bundle.SEG:
        raise ValueError(f"config.pusher.model_name is {config.pusher.model_name!r}; with "
                         f"classifiers the bundle layout needs {bundle.SEG!r} "
                         "(spoils_tf.bundle), or set --config.classifiers.enabled=False")
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = _next_run_dir(workdir)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = _dataset_dir(config, workdir)
    e = config.examples
    examples = example_gen(dataset, run_dir / "ExampleGen", k=int(e.k), seed=int(e.seed),
                           eval_fold=int(e.eval_fold), tfds_config=str(e.tfds_config))
    seconds["ExampleGen"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = trainer(examples, config.trainer, run_dir / "Trainer")
    seconds["Trainer"] = time.perf_counter() - t0
    classifiers: dict[str, art.Model] = {}
    if with_classifiers:
        t0 = time.perf_counter()
        classifiers = train_classifiers(examples, config.classifiers,
                                        run_dir / "Trainer_classifiers")
        seconds["Trainer_classifiers"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation, blessing = evaluator(model, examples, config.evaluator.thresholds,
                                     run_dir / "Evaluator", classifiers=classifiers)
    seconds["Evaluator"] = time.perf_counter() - t0
    pushed, pushed_bundle = None, {}
    if blessing.blessed:
        t0 = time.perf_counter()
        base = pathlib.Path(config.pusher.base_dir or workdir / "serving")
        if with_classifiers:
            pushed_bundle = push_bundle({bundle.SEG: model, **classifiers}, blessing, base,
                                        evaluation=evaluation)
            pushed = pushed_bundle[bundle.SEG]
        else:
            pushed = pusher(model, blessing, base, str(config.pusher.model_name),
                            evaluation=evaluation)
            pushed_bundle = {str(config.pusher.model_name): pushed}
        seconds["Pusher"] = time.perf_counter() - t0
    art.atomic_write_text(run_dir / "run_summary.json", json.dumps(
            art.jsonable({"examples": examples.uri, "model": model.uri,
                          "classifiers": {n: m.uri for n, m in classifiers.items()},
                          "evaluation": evaluation.uri, "blessing": blessing.uri,
                          "blessed": blessing.blessed, "failed": list(blessing.failed),
                          "pushed": pushed.uri if pushed else None,
                          "pushed_bundle": {n: p.uri for n, p in pushed_bundle.items()},
                          "seconds": seconds}),
            indent=2) + "\n")
    return {"run_dir": run_dir, "examples": examples, "model": model,
            "classifiers": classifiers, "evaluation": evaluation, "blessing": blessing,
            "pushed": pushed, "pushed_bundle": pushed_bundle, "seconds": seconds}


def summary_text(result: Mapping[str, Any]) -> str:
    """Human-readable summary of :func:`run_pipeline`'s result (artifact paths, metrics)."""
    ex, model, ev, bl, pushed = (result[k] for k in ("examples", "model", "evaluation",
                                                      "blessing", "pushed"))
    m = ev.metrics
    lines = [
            f"run: {result['run_dir']}",
            f"ExampleGen  {ex.uri}",
            f"  {ex.metrics['patients']} patients, {ex.metrics['slices']} slices, "
            f"{ex.metrics['bad_files']} bad file(s); eval fold {ex.eval_fold} "
            f"({len(ex.eval_patients)} patients); data sha256 {ex.fingerprint['sha256'][:16]}...",
            f"Trainer     {model.uri}",
            f"  {model.config.get('model', {}).get('name', '?')}: "
            f"{model.metrics.get('train_seconds', float('nan')):.1f} s, loss "
            f"{model.metrics.get('train_loss_first', float('nan')):.4f} -> "
            f"{model.metrics.get('train_loss_last', float('nan')):.4f}",
    ]
    for name, c in result.get("classifiers", {}).items():
        what = c.card.get("model_name") or c.card.get("backbone", "?")
        rows = c.metrics.get("train_rows", c.metrics.get("train_crops", 0))
        lines.append(f"  {name} ({what}): {int(rows)} training discs, "
                     f"{c.metrics.get('train_seconds', float('nan')):.1f} s -> {c.uri}")
    lines += [
            f"Evaluator   {ev.uri}",
            f"  {int(m.get('slices', 0))} held-out slices: pixel accuracy "
            f"{_fmt(m.get('pixel_accuracy'))}, Dice fg-macro {_fmt(m.get('dice/fg_macro'))}, "
            f"level accuracy {_fmt(m.get('level_accuracy'))}",
    ]
    for short in [*CLASSIFIER_SHORT.values(), ENSEMBLE]:
        key = f"{GRADE_PREFIX}/{short}"
        if f"{key}/n" in m:
            lines.append(f"  grade {short}: {int(m[f'{key}/n'] or 0)} held-out discs, accuracy "
                         f"{_fmt(m.get(f'{key}/accuracy'))}, IoU macro "
                         f"{_fmt(m.get(f'{key}/iou_macro'))}, F1 macro "
                         f"{_fmt(m.get(f'{key}/f1_macro'))}")
    lines.append(f"  blessing {bl.uri}: {'BLESSED' if bl.blessed else 'NOT blessed'}"
                 + ("" if bl.blessed else f" ({'; '.join(bl.failed)})"))
    pushed_bundle = result.get("pushed_bundle") or {}
    if pushed_bundle:
        for name, p in pushed_bundle.items():
            lines.append(f"Pusher      {p.uri} (version {p.version})")
    elif pushed:
        lines.append(f"Pusher      {pushed.uri} (version {pushed.version})")
    else:
        lines.append("Pusher      skipped: not blessed, nothing pushed")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    return "\n".join(lines)


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.4f}"
