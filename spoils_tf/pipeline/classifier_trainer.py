"""Trainer, classifiers: the grading data measured once, then the geometry classifier
(scikit-learn, ``classical.models``) and the crop classifier (``models.classifiers.DiscClassifier``)
trained on the training patients only. Each is a ``Model`` artifact whose ``card`` holds every
model-card field ``spoils_tf.serve.bundle`` needs (classes, features, crop size, margin, context
slices)."""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any, Mapping, Union

import numpy as np

from spoils_tf import fileio
from spoils_tf.classical import io as cio
from spoils_tf.data import layout
from spoils_tf.pipeline import artifacts as art
from spoils_tf.pipeline.common import (CNN_TARGET, CROP_MODEL_FILE, GEOMETRY_MODEL_FILE, fresh_dir,
                                       rows_of, with_level_index)
from spoils_tf.serve import bundle

log = logging.getLogger(__name__)


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


def _record_classifier(out: Union[str, os.PathLike], examples: art.Examples,
                       plain: dict[str, Any], metrics: dict[str, Any], data: Mapping[str, Any],
                       *, kind: str, model_path: Union[str, os.PathLike],
                       export: pathlib.Path, model_file: str, card: dict[str, Any]) -> art.Model:
    """Writes the ``Model`` artifact of a grading classifier trained on ``examples`` into
    ``out`` and returns it.

    ``plain`` (the plain training config) gains the grading data's ``features_path`` and
    ``crops_dir`` (:func:`prepare_grading_data`); ``export`` is the serving folder, ``kind``,
    ``model_file`` and ``card`` the model-card fields (``spoils_tf.serve.bundle``).
    """
    plain.update({"features_path": data["features_path"], "crops_dir": data["crops_dir"]})
    model = art.Model(
            uri=str(out), producer="Trainer", created=art.utc_now(),
            fingerprint=examples.fingerprint, config=plain, metrics=metrics,
            parents=(examples.uri,), kind=kind, model_path=str(model_path),
            serving_model_dir=str(export), examples_uri=examples.uri, model_file=model_file,
            card=card)
    art.write_artifact(model)
    return model


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
    from spoils_tf.classical import models as cmodels
    from spoils_tf.train import grade_geometry_lib as ggl

    geo = _section(config, "geometry")
    target = str(config.target)
    classes = list(cmodels.TARGETS[target])
    out = fresh_dir(out)
    start = time.perf_counter()
    df = ggl.load_feature_table(data["features_path"])
    features = _geometry_features(df, geo)
    df = with_level_index(df, features)
    y = cmodels.target_labels(df, target)
    train = rows_of(df, examples.train_patients) & np.asarray([v is not None for v in y])
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
               "unlabelled_train_rows": int((rows_of(df, examples.train_patients)
                                             & ~np.asarray([v is not None for v in y])).sum()),
               "train_seconds": seconds, "grading_data": dict(data)}
    model = _record_classifier(
            out, examples, art.to_plain_config(config), metrics, data,
            kind=bundle.KIND_OF[bundle.GEOMETRY], model_path=model_path, export=export,
            model_file=GEOMETRY_MODEL_FILE,
            card={"target": target, "classes": classes, "model_name": str(geo.model),
                  "features": list(features)})
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
    out = fresh_dir(out)
    start = time.perf_counter()
    index = grade_cnn_lib.read_crops_index(data["crops_dir"])
    index = index[rows_of(index, examples.train_patients)].reset_index(drop=True)
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
        model_path = fileio.atomic_save_keras(net, export / CROP_MODEL_FILE)
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
    model = _record_classifier(
            out, examples, plain, metrics, data,
            kind=bundle.KIND_OF[bundle.CROP], model_path=model_path, export=export,
            model_file=CROP_MODEL_FILE,
            card={"target": target, "classes": classes, "crop_height": height,
                  "crop_width": width, "context_slices": int(config.context_slices),
                  "margin_frac": float(config.margin_frac), "backbone": str(cnn.model.backbone),
                  "input_channels": int(x.shape[-1]),
                  "normalisation": "geometry.crops: 1st-99th percentile of the box -> [0, 1]"})
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
        fresh_dir(out / name)
    data = prepare_grading_data(examples, config, out / "data")
    return {bundle.GEOMETRY: train_geometry_classifier(examples, config, data,
                                                       out / bundle.GEOMETRY),
            bundle.CROP: train_crop_classifier(examples, config, data, out / bundle.CROP)}

