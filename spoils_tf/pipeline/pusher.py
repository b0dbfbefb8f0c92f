"""Pusher: a blessed model published as ``<base_dir>/<model_name>/<version>/`` (TF Serving's
layout) with a model card; a blessed run's three models published as one bundle.

The Pusher refuses an unblessed model (``NotBlessedError``). Version = one more than the
highest existing integer version; the copy is staged in a hidden temporary folder in
``<base_dir>/<model_name>/`` (TF Serving ignores non-integer names) and renamed into place with
``fileio.rename_no_replace``, so an existing version is never overwritten and a failed push
leaves no partial version. ``push_bundle`` stages all models first, then renames them one after
the other; if a rename fails, the versions this call already renamed are taken back, so a
bundle is published whole or not at all.
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping, Optional, Union

from spoils_tf import fileio
from spoils_tf.serve import bundle
from spoils_tf.pipeline import artifacts as art
from spoils_tf.pipeline.common import (BLESSED_FILE, CLASSIFIER_SHORT, ENSEMBLE, GRADE_PREFIX,
                                       NOT_BLESSED_FILE)

log = logging.getLogger(__name__)

PUSH_RECORD_DIR = "assets.extra"     # inside a SavedModel; TF Serving leaves it alone


class NotBlessedError(RuntimeError):
    """The Pusher was given a model without a positive blessing for it."""


# === Versions ===
def existing_versions(model_dir: Union[str, os.PathLike]) -> list[int]:
    """Integer version folders under ``model_dir``, sorted ([] when it does not exist)."""
    from spoils_tf.export import serving
    return serving.existing_versions(model_dir)


def next_version(model_dir: Union[str, os.PathLike]) -> int:
    """One more than the highest existing integer version folder (1 for none)."""
    return (existing_versions(model_dir) or [0])[-1] + 1



# === Checks and model card ===
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
    """The model card (``spoils_tf.serve.bundle``) of a Model artifact, without ``format``.

    ``kind``, ``model_file``, ``created``, ``metrics`` (:func:`card_metrics` of ``metrics``),
    ``data_fingerprint`` (the training data's sha256), ``config`` (the training config), the
    artifact's ``card`` fields, ``model_uri`` and ``extra``. A segmentation model recorded
    without a ``resize_mode`` takes its training config's ``data.resize_mode``, else
    ``"letterbox"`` (the default of ``configs/base.seg_data_config``).
    """
    card = {"kind": model.kind, "model_file": model.model_file, "created": art.utc_now(),
            "metrics": fileio.json_safe(card_metrics(model.kind, metrics)),
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
    """Publishes the models of one blessed run as a model bundle (``spoils_tf.serve.bundle``).

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

