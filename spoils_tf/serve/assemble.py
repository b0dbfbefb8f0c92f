"""A model bundle for ``spoils predict`` from the models experiments saved (the library behind
``spoils bundle``).

The pipeline's Pusher publishes a bundle for the models *it* trained. Models trained with the
experiment entry points (``python -m experiments.seg | grade_cnn | grade_geometry``, e.g. the
``paper`` configs on a GPU) are turned into one here, without retraining::

    spoils bundle --out runs/models \\
        --seg runs/seg/fold_0/model.keras \\
        --crop runs/grade_cnn/folds/fold_0/model.keras \\
        --geometry runs/grade_geometry/models/grade_class/gradient_boosting.skops

* ``--seg``: a ``.keras`` segmentation model (``experiments.seg`` writes
  ``<workdir>/fold_<k>/model.keras``). Exported as a SavedModel (``spoils_tf.export.serving``)
  with the ``.keras`` copy next to it. Its ``resize_mode`` is ``--resize-mode`` or the
  ``data.resize_mode`` of the run's ``config.json`` (looked for in the model's folder and the
  one above); the card's ``metrics`` are the fold's held-out ``metrics.json`` (pixel accuracy,
  Dice fg-macro, level accuracy) when present.
* ``--crop``: a ``DiscClassifier`` ``.keras`` file (``experiments.grade_cnn`` writes
  ``<workdir>/folds/fold_<k>/model.keras``). Crop size, channels (context slices) and target
  come from the model; ``--margin-frac`` (default ``crops.DEFAULT_MARGIN_FRAC``) must be the
  margin its training crops were cut with. ``spoils predict`` cuts crops at the model's input
  size directly; a model trained on larger stored crops resized down (the ``cpu`` config:
  64x128 -> 32x64) sees crops resampled once instead of twice.
* ``--geometry``: a ``.skops`` classifier with its sidecar (``experiments.grade_geometry``
  fits one per target and model on every labelled row: ``<workdir>/models/<target>/
  <model>.skops``). Copied byte for byte (its sha256 is checked by the loader).

A fold model was trained without that fold's patients; the card records the file it came from
(name and sha256) and the run's config. Every model given gets the next free version under
``--out`` (``bundle.SEG | CROP | GEOMETRY``); all are staged in a hidden folder and published
together (``fileio.publish_all_or_none``): nothing is overwritten and a failure leaves no
partial version. ``--out`` must end up with a segmentation model (given now or already there).
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import shutil
import tempfile
from typing import Any, Optional

from spoils_tf import fileio, labels
from spoils_tf.classical import io as cio
from spoils_tf.pipeline.stages import CNN_TARGET
from spoils_tf.serve import bundle

SEG_KERAS_FILE = "model.keras"
CROP_MODEL_FILE = "model.keras"
GEOMETRY_MODEL_FILE = "model.skops"
SEG_CARD_METRICS = ("pixel_accuracy", "dice/fg_macro", "level_accuracy")


def _run_config(model_path: pathlib.Path) -> tuple[Optional[dict], Optional[pathlib.Path]]:
    """The experiment's ``config.json``: the nearest one in the model's folder or the two
    above (``<workdir>/fold_<k>/``, ``<workdir>/folds/fold_<k>/``), or None."""
    for folder in list(model_path.parents)[:3]:
        path = folder / "config.json"
        if path.is_file():
            try:
                return json.loads(path.read_text()), path
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
    return None, None


def _fold_metrics(model_path: pathlib.Path, keys: tuple[str, ...]) -> dict[str, float]:
    """Finite ``keys`` of the fold's ``metrics.json`` next to the model ({} without one)."""
    path = model_path.parent / "metrics.json"
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    return {k: float(metrics[k]) for k in keys
            if isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k])}


def _common(source: pathlib.Path, config: Optional[dict], metrics: dict) -> dict[str, Any]:
    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "data_fingerprint": "", "config": config or {}, "metrics": metrics,
            "source_model": {"file": source.name, "sha256": fileio.sha256_file(source)}}


def _stage_seg(path: pathlib.Path, stage: pathlib.Path, version: int,
               resize_mode: Optional[str], seg_format: str = "savedmodel"
               ) -> tuple[pathlib.Path, dict]:
    from spoils_tf.data import seg_pipeline
    from spoils_tf.export import serving
    from spoils_tf.models import load_model

    config, config_path = _run_config(path)
    target = float(((config or {}).get("data") or {}).get("target_spacing_mm") or 0.0)
    if target > 0:
        return _stage_seg_spacing(path, stage, version, config, target, seg_format)
    if resize_mode is None:
        resize_mode = ((config or {}).get("data") or {}).get("resize_mode")
        if resize_mode is None:
            where = config_path or path.parent / "config.json"
            raise ValueError(f"{where}: field 'data.resize_mode' not found; give --resize-mode "
                             f"({' | '.join(seg_pipeline.RESIZE_MODES)})")
    if resize_mode not in seg_pipeline.RESIZE_MODES:
        raise ValueError(f"--resize-mode / data.resize_mode is {resize_mode!r}; expected one of "
                         f"{list(seg_pipeline.RESIZE_MODES)}")
    model = load_model(path)
    if len(model.output_shape) != 4 or int(model.output_shape[-1]) != _num_seg_classes():
        raise ValueError(f"{path}: output shape {model.output_shape} is not a "
                         f"{_num_seg_classes()}-class segmentation [B, H, W, C]")
    version_dir = serving.export_saved_model(model, stage, bundle.SEG, version=version,
                                             resize_mode=resize_mode)
    shutil.copyfile(path, version_dir / SEG_KERAS_FILE)
    card = {"kind": bundle.KIND_OF[bundle.SEG], "model_file": ".", "keras_file": SEG_KERAS_FILE,
            "resize_mode": resize_mode,
            **_common(path, config, _fold_metrics(path, SEG_CARD_METRICS))}
    return version_dir, card


def _stage_seg_spacing(path: pathlib.Path, stage: pathlib.Path, version: int,
                       config: dict, target_mm: float, seg_format: str
                       ) -> tuple[pathlib.Path, dict]:
    """A model trained at a fixed pixel size (``seg_spacing_lib``): ``resize_mode`` "spacing"
    and ``target_spacing_mm`` on the card; ``seg_format`` "keras" ships the ``.keras`` file
    alone, saved without its optimizer state (``model_file``), "savedmodel" the spacing
    SavedModel with the ``.keras`` beside it.
    The card's ``sha256`` is the model file's (checked at load)."""
    from spoils_tf.export import serving
    from spoils_tf.models import load_model

    model = load_model(path, compile=False)
    if len(model.output_shape) != 4 or int(model.output_shape[-1]) != _num_seg_classes():
        raise ValueError(f"{path}: output shape {model.output_shape} is not a "
                         f"{_num_seg_classes()}-class segmentation [B, H, W, C]")
    if seg_format == "keras":
        version_dir = stage / bundle.SEG / str(version)
        version_dir.mkdir(parents=True)
        model.save(version_dir / SEG_KERAS_FILE)   # loaded uncompiled: no optimizer state
        model_file = SEG_KERAS_FILE
    else:
        version_dir = serving.export_saved_model(model, stage, bundle.SEG, version=version,
                                                 resize_mode=serving.SPACING_MODE,
                                                 target_spacing_mm=target_mm)
        shutil.copyfile(path, version_dir / SEG_KERAS_FILE)
        model_file = "."
    sha = bundle.model_sha256(version_dir / model_file)
    card = {"kind": bundle.KIND_OF[bundle.SEG], "model_file": model_file,
            "keras_file": SEG_KERAS_FILE, "resize_mode": serving.SPACING_MODE,
            "target_spacing_mm": target_mm, "sha256": sha,
            **_common(path, config, _fold_metrics(path, SEG_CARD_METRICS))}
    return version_dir, card


def _num_seg_classes() -> int:
    return labels.NUM_SEG_CLASSES


def _stage_crop(path: pathlib.Path, stage: pathlib.Path, version: int,
                margin_frac: float) -> tuple[pathlib.Path, dict]:
    import spoils_tf.models.classifiers as classifiers
    from spoils_tf.models import load_model

    if not 0.0 <= margin_frac < 1.0:
        raise ValueError(f"--margin-frac must be in [0, 1), got {margin_frac}")
    model = load_model(path)
    if not isinstance(model, classifiers.DiscClassifier):
        raise ValueError(f"{path}: a {type(model).__name__}, not a DiscClassifier (the crop "
                         "classifier experiments.grade_cnn saves)")
    card_target = {v: k for k, v in CNN_TARGET.items()}[model.target]
    config, _ = _run_config(path)
    version_dir = stage / bundle.CROP / str(version)
    version_dir.mkdir(parents=True)
    shutil.copyfile(path, version_dir / CROP_MODEL_FILE)
    card = {"kind": bundle.KIND_OF[bundle.CROP], "model_file": CROP_MODEL_FILE,
            "target": card_target, "classes": list(model.class_names),
            "crop_height": int(model.input_height), "crop_width": int(model.input_width),
            "context_slices": 1 if int(model.input_channels) == 3 else 0,
            "margin_frac": float(margin_frac), "backbone": model.backbone_name,
            **_common(path, config, _fold_metrics(path, ("accuracy", "iou_macro")))}
    return version_dir, card


def _stage_geometry(path: pathlib.Path, stage: pathlib.Path,
                    version: int) -> tuple[pathlib.Path, dict]:
    _, side = cio.load_classifier(path)            # checks the hash and the allow-list
    for key in ("target", "classes", "feature_names"):
        if key not in side:
            raise ValueError(f"{cio.sidecar_path(path)}: field {key!r} is missing")
    version_dir = stage / bundle.GEOMETRY / str(version)
    version_dir.mkdir(parents=True)
    dst = version_dir / GEOMETRY_MODEL_FILE
    shutil.copyfile(path, dst)
    shutil.copyfile(cio.sidecar_path(path), cio.sidecar_path(dst))
    extra = side.get("extra") or {}
    card = {"kind": bundle.KIND_OF[bundle.GEOMETRY], "model_file": GEOMETRY_MODEL_FILE,
            "target": side["target"], "classes": list(side["classes"]),
            "model_name": str(extra.get("model", path.stem)),
            "features": list(side["feature_names"]), **_common(path, extra, {})}
    return version_dir, card


def assemble_bundle(out: str | pathlib.Path, *, seg: Optional[str | pathlib.Path] = None,
                    crop: Optional[str | pathlib.Path] = None,
                    geometry: Optional[str | pathlib.Path] = None,
                    resize_mode: Optional[str] = None,
                    margin_frac: Optional[float] = None, seg_format: str = "savedmodel",
                    card_extra: Optional[dict] = None) -> dict[str, pathlib.Path]:
    """Publishes the given models as the next versions of a bundle under ``out``.

    Args:
        out: the bundle directory (created). seg / crop / geometry: model files (module
            docstring); at least one. resize_mode: the segmentation model's (default: its
            run's config). margin_frac: the crop classifier's crop margin (default
            ``crops.DEFAULT_MARGIN_FRAC``). seg_format: ``"savedmodel"`` (TF Serving) or
            ``"keras"`` (the ``.keras`` file alone; fixed-spacing models only, the shipped
            bundle). card_extra: more fields for every card (e.g. training data, licence,
            recipe, limits: the model card).

    Returns:
        ``{bundle name: published version directory}``.

    Raises:
        ValueError: no model given, a model file of the wrong kind, a missing field, or a
            bundle that would have no segmentation model. FileNotFoundError: a model file
            does not exist. FileExistsError: a version was taken meanwhile (nothing
            overwritten).
    """
    from spoils_tf.geometry.crops import DEFAULT_MARGIN_FRAC

    given = {name: pathlib.Path(p) for name, p in
             ((bundle.SEG, seg), (bundle.CROP, crop), (bundle.GEOMETRY, geometry)) if p}
    if not given:
        raise ValueError("give at least one of --seg, --crop, --geometry")
    for name, p in given.items():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: model file not found (for {name})")
    out = pathlib.Path(out)
    if bundle.SEG not in given and not bundle.versions(out / bundle.SEG):
        raise ValueError(f"{out}: a bundle needs a segmentation model and {out / bundle.SEG} "
                         "has none; give --seg")
    out.mkdir(parents=True, exist_ok=True)
    versions = {name: (bundle.versions(out / name) or [0])[-1] + 1 for name in given}
    stage = pathlib.Path(tempfile.mkdtemp(dir=out, prefix=".assemble-"))
    try:
        staged: dict[str, tuple[pathlib.Path, dict]] = {}
        if bundle.SEG in given:
            staged[bundle.SEG] = _stage_seg(given[bundle.SEG], stage, versions[bundle.SEG],
                                            resize_mode, seg_format)
        if bundle.CROP in given:
            staged[bundle.CROP] = _stage_crop(
                    given[bundle.CROP], stage, versions[bundle.CROP],
                    DEFAULT_MARGIN_FRAC if margin_frac is None else float(margin_frac))
        if bundle.GEOMETRY in given:
            staged[bundle.GEOMETRY] = _stage_geometry(given[bundle.GEOMETRY], stage,
                                                      versions[bundle.GEOMETRY])
        together = {"versions": versions, "models": list(staged), "assembled_by": "spoils bundle"}
        for version_dir, card in staged.values():
            bundle.write_card(version_dir, {**card, **dict(card_extra or {}), "bundle": together})
        pairs = []
        for name, (version_dir, _) in staged.items():
            (out / name).mkdir(exist_ok=True)
            pairs.append((version_dir, out / name / str(versions[name])))
        fileio.publish_all_or_none(pairs)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {name: out / name / str(versions[name]) for name in staged}
