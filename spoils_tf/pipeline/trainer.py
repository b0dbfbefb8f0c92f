"""Trainer: a segmentation model trained on the Examples' training folds, exported as a
SavedModel (``spoils_tf.export.serving``) with its Keras file alongside."""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
from typing import Union

from spoils_tf.data import folds as folds_lib
from spoils_tf.pipeline import artifacts as art
from spoils_tf.pipeline.common import SEG_KERAS_FILE, fresh_dir, load_examples
from spoils_tf.serve import bundle

log = logging.getLogger(__name__)


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
    from spoils_tf.export import serving
    from spoils_tf.train import seg_lib
    import spoils_tf.models

    for section in ("model", "data", "train"):
        if section not in config:
            raise ValueError(f"trainer config: section {section!r} is missing; expected a "
                             "segmentation experiment config (configs/seg_*.py)")
    out = fresh_dir(out)
    cfg = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") \
        else config
    cfg.fold = str(examples.eval_fold)
    cfg.data.labelme_dir = examples.dataset_dir
    cfg.data.folds_path = examples.folds_path
    cfg.data.tfds_data_dir = examples.tfds_dir
    folds = folds_lib.load_folds(examples.folds_path)
    result = seg_lib.run(cfg, out, examples=load_examples(examples), folds=folds)
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

