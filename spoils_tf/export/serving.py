"""SavedModel export of a segmentation model for TF Serving.

Layout: ``<base_dir>/<model_name>/<version>/`` (TF Serving's model base path; it serves the
highest integer version). An existing version is never overwritten: the export is written
to a hidden temporary folder next to it and renamed into place, so a crash leaves no partial
version that Serving could pick up.

Signature ``serving_default``:

* input ``images``: ``uint8 [batch, H, W, 3]``, any H and W (one size per request);
  greyscale MRI is sent with R = G = B.
* outputs ``probabilities``: ``float32 [batch, H, W, num_classes]`` and ``label_map``:
  ``int32 [batch, H, W]`` class ids of ``spoils_tf.labels``, both at the INPUT resolution.

Models trained at a fixed pixel size (``resize_mode="spacing"``) get instead inputs ``image:
uint8 [H, W]`` and ``pixel_spacing_mm: float32 [2]`` and outputs ``[H, W, C]`` / ``[H, W]``:
the server resamples to the training spacing as training did.

Resizing / letterboxing and normalisation run inside the graph, through the same functions
that fed training (``spoils_tf.data.seg_pipeline.make_predictor``). ``assets.extra/
spoils_model.json`` records class names, input size, resize mode and normalisation.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Optional

import tensorflow as tf

from spoils_tf import errors, fileio, labels
from spoils_tf.data import seg_pipeline, spacing_pipeline

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
METADATA_FILE = "spoils_model.json"


SPACING_MODE = "spacing"
SPACING_INPUTS = ("image", "pixel_spacing_mm")


def load_signature(version_dir: str | pathlib.Path):
    """The ``serving_default`` function of an exported SavedModel version folder.

    Raises:
      SpoilsError: no folder; no ``saved_model.pb``; a SavedModel TensorFlow cannot load (a
        truncated ``saved_model.pb`` or ``variables/``, ...) or without the signature; the
        message names the folder and TensorFlow's error.
    """
    path = pathlib.Path(version_dir)
    if not (path / "saved_model.pb").is_file():
        raise errors.SpoilsError(path, "saved_model.pb", "not found; expected a SavedModel "
                                                         "version folder")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:   # OSError (bad .pb), IndexError (short variables), OpError, ...
        raise errors.wrap(path, "a SavedModel (TensorFlow)", e) from e
    if SIGNATURE_NAME not in loaded.signatures:
        raise errors.SpoilsError(path, "signatures", f"no {SIGNATURE_NAME!r} signature; has "
                                                     f"{sorted(loaded.signatures)}")
    return loaded.signatures[SIGNATURE_NAME]


class _SegmentationServing(tf.Module):
    """Holds the Keras model (its variables) and the serving function."""

    def __init__(self, model, resize_mode: str, target_spacing_mm: float = 0.0):
        super().__init__(name="spoils_segmentation")
        self.model = model
        if resize_mode != SPACING_MODE:
            self.serve = seg_pipeline.make_predictor(model, resize_mode)
            return
        predict = spacing_pipeline.make_spacing_predictor(model, target_spacing_mm)

        @tf.function(input_signature=[
                tf.TensorSpec([None, None], tf.uint8, name=SPACING_INPUTS[0]),
                tf.TensorSpec([2], tf.float32, name=SPACING_INPUTS[1])])
        def serve(image, pixel_spacing_mm):
            probs = predict(image, pixel_spacing_mm)
            return {"probabilities": probs,
                    "label_map": tf.argmax(probs, axis=-1, output_type=tf.int32)}

        self.serve = serve


def existing_versions(model_dir: str | pathlib.Path) -> list[int]:
    """Integer version folders under ``model_dir`` (sorted; [] when it does not exist)."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_saved_model(model, base_dir: str | pathlib.Path, model_name: str,
                       version: Optional[int] = None,
                       resize_mode: str = "letterbox",
                       target_spacing_mm: float = 0.0) -> pathlib.Path:
    """Exports ``model`` to ``base_dir/model_name/version``.

    Args:
      model: a Keras segmentation model, ``float32 [B, S_h, S_w, 3] -> [B, S_h, S_w, C]``.
      base_dir: TF Serving model base directory.
      model_name: the served model name (a folder name).
      version: positive integer; None = one more than the highest existing version (or 1).
      resize_mode: how inputs are fitted to the model (``seg_pipeline.RESIZE_MODES``); use the
        training config's ``data.resize_mode``; or ``"spacing"`` for a model trained at a fixed
        pixel size (``spoils_tf.data.spacing_pipeline``): the signature then takes one slice
        ``image: uint8 [H, W]`` and ``pixel_spacing_mm: float32 [2]`` (row, col) and resamples
        to ``target_spacing_mm`` inside the graph, as training did.
      target_spacing_mm: the training pixel size (``"spacing"`` mode only).

    Returns:
      the version directory.

    Raises:
      FileExistsError: ``base_dir/model_name/version`` already exists.
      ValueError: a version < 1, or a model name that is not a plain folder name.
    """
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    model_dir = pathlib.Path(base_dir) / model_name
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    version = int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final}: version {version} of model {model_name!r} already "
                              f"exists; choose another version (existing: "
                              f"{existing_versions(model_dir)})")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        if resize_mode == SPACING_MODE and not target_spacing_mm > 0:
            raise ValueError("resize_mode 'spacing' needs target_spacing_mm > 0")
        module = _SegmentationServing(model, resize_mode, target_spacing_mm)
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: module.serve})
        signature = {"name": SIGNATURE_NAME, "input": f"{INPUT_NAME}: uint8 [B, H, W, 3]",
                     "outputs": ["probabilities: float32 [B, H, W, C]",
                                 "label_map: int32 [B, H, W]"]}
        if resize_mode == SPACING_MODE:
            signature = {"name": SIGNATURE_NAME,
                         "input": "image: uint8 [H, W]; pixel_spacing_mm: float32 [2] (row, col)",
                         "outputs": ["probabilities: float32 [H, W, C]", "label_map: int32 [H, W]"]}
        meta = {
                "model_name": model_name, "version": version,
                "class_names": list(labels.SEG_NAMES),
                "num_classes": int(model.output_shape[-1]),
                "model_input_size": [None if s is None else int(s) for s in model.input_shape[1:3]],
                "resize_mode": resize_mode,
                "target_spacing_mm": float(target_spacing_mm) if resize_mode == SPACING_MODE else None,
                "normalization": "spoils_tf.data.seg_pipeline.normalize_images (caffe: BGR "
                                 f"minus {list(seg_pipeline.IMAGENET_CAFFE_MEAN_BGR)})",
                "signature": signature,
        }
        (tmp / "assets.extra").mkdir(exist_ok=True)
        fileio.write_json(tmp / "assets.extra" / METADATA_FILE, meta)
        os.rename(tmp, final)   # fails if `final` appeared meanwhile: never overwrites
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
