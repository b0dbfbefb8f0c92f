"""Segmentation training at a fixed pixel spacing on random patches, and its evaluation.

Used by ``spoils_tf.train.seg_lib.run`` when ``config.data.target_spacing_mm > 0`` (the
``spider_cpu`` configs). Differences from the letterbox path:

* every slice of every training patient is resampled to ``target_spacing_mm`` once
  (``spacing_pipeline.ResampledSlices``) and random ``patch_size`` patches are drawn from it
  with augmentation for other scanners (``spacing_pipeline.DEFAULT_PATCH_AUGMENT``);
* training is counted in optimizer steps (``train.steps``), in chunks of
  ``train.steps_per_epoch`` ("epochs" for Keras' progress bar, BackupAndRestore, CSV and
  TensorBoard logs), with a learning rate that decays to ``lr * train.final_lr_fraction`` at the
  last step (``train.schedule``: cosine | poly);
* inference runs on the whole slice resampled to the same spacing
  (``spacing_pipeline.make_spacing_predictor``), and each held-out slice is scored at its
  original resolution twice: the network's arg-max ("raw") and after the anatomical level
  labelling of ``spoils_tf.levels`` ("levels").

Fold folder additions: ``progress.json`` (training seconds so far, for resumed runs),
``curve.csv`` (held-out scores against training minutes, when ``train.eval_every_epochs``).
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any, Sequence

import keras
import numpy as np

from spoils_tf import fileio, levels
from spoils_tf.data import spacing_pipeline
from spoils_tf.data.seg_arrays import middle_keys  # noqa: F401  (TF-free; users call it from here)
from spoils_tf.metrics import segmentation as seg_metrics
from spoils_tf.models import build_segmentation_model, load_model
from spoils_tf.models import losses as seg_losses
from spoils_tf.train import common

log = logging.getLogger(__name__)

CURVE_COLUMNS = ("step", "train_minutes", "dice_fg_macro", "tissue_dice_fg_macro",
                 "level_accuracy", "disc_detection")


# === Model and optimizer ===
def build_model(config):
    """The configured network for 1-channel input of any size (U-Net) or the patch size
    (fixed-size networks, rebuilt per slice size at inference)."""
    kwargs = dict(config.model.kwargs)
    if config.model.name == "unet":
        kwargs["input_shape"] = (None, None, 1)
    else:
        kwargs["input_shape"] = tuple(config.data.patch_size) + (1,)
    return build_segmentation_model({"name": config.model.name, "kwargs": kwargs})


def learning_rate_schedule(train_cfg):
    """Warm-up to ``learning_rate`` over ``warmup_steps``, then cosine or poly (exponent 0.9,
    nnU-Net) decay to ``learning_rate * final_lr_fraction`` at ``steps``."""
    lr, steps = float(train_cfg.learning_rate), int(train_cfg.steps)
    warmup = min(int(train_cfg.warmup_steps), max(steps - 1, 0))
    end = lr * float(train_cfg.final_lr_fraction)
    if train_cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
                lr * 0.1 if warmup else lr, decay_steps=max(steps - warmup, 1),
                alpha=float(train_cfg.final_lr_fraction), warmup_target=lr if warmup else None,
                warmup_steps=warmup)
    if train_cfg.schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(lr, max(steps, 1), end, power=0.9)
    raise ValueError(f"config.train.schedule: unknown {train_cfg.schedule!r}; expected cosine | poly")


def check_schedule(train_cfg) -> None:
    """Raises ValueError unless ``steps`` is a positive multiple of ``steps_per_epoch`` (the
    learning-rate schedule ends at ``steps``; Keras runs whole "epochs")."""
    steps, per = int(train_cfg.steps), int(train_cfg.steps_per_epoch)
    if steps <= 0 or per <= 0 or steps % per:
        raise ValueError(f"config.train.steps={steps} must be a positive multiple of "
                         f"config.train.steps_per_epoch={per}")


# === Evaluation ===
def evaluate(predict, examples, patients: Sequence[str], *, middle_n: int = 5,
             only_middle: bool = False, level_labelling: bool = True,
             progress: bool = False) -> dict[str, dict[str, float]]:
    """Scores a spacing predictor on the given patients' slices at original resolution.

    Args:
      predict: ``(uint8 [H, W], float32 [2]) -> float32 [H, W, 14]``.
      examples: example dicts (``tfds_builder.load_dataset``).
      patients: held-out patient ids.
      middle_n: the "middle" subset = this many slices per patient nearest its middle.
      only_middle: score the middle subset only (cheaper; the training curve).
      level_labelling: also score after ``spoils_tf.levels.assign_levels``.

    Returns:
      ``{"all/raw", "all/levels", "middle/raw", "middle/levels"}`` (present subsets only) ->
      ``TwoLevelMetrics.result()`` plus ``"slices"``.
    """
    wanted = {str(p) for p in patients}
    rows = []
    for ex in examples.as_numpy_iterator():
        patient = ex["patient"].decode()
        if patient in wanted:
            rows.append((patient, int(ex["slice"]), ex["key"].decode(), ex))
    by_patient: dict[str, list] = {}
    for patient, idx, key, _ in rows:
        by_patient.setdefault(patient, []).append((idx, key))
    middle = middle_keys(by_patient, middle_n)
    subsets = ("middle",) if only_middle else ("all", "middle")
    variants = ("raw", "levels") if level_labelling else ("raw",)
    acc = {f"{s}/{v}": seg_metrics.TwoLevelMetrics() for s in subsets for v in variants}
    counts = {s: 0 for s in subsets}
    it = rows
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(rows, desc="evaluate", unit="slice")
    for _, _, key, ex in it:
        in_middle = key in middle
        if only_middle and not in_middle:
            continue
        spacing = np.asarray(ex["pixel_spacing_mm"], np.float32)
        probs = np.asarray(predict(ex["image"][..., 0], spacing))
        truth = ex["mask"][..., 0].astype(np.int32)
        preds = {"raw": np.argmax(probs, axis=-1)}
        if level_labelling:
            preds["levels"] = levels.assign_levels(probs, tuple(spacing.tolist())).label_map
        for s in subsets:
            if s == "all" or in_middle:
                counts[s] += 1
                for v in variants:
                    acc[f"{s}/{v}"].update(truth, preds[v])
    out = {}
    for name, m in acc.items():
        out[name] = m.result()
        out[name]["slices"] = float(counts[name.split("/")[0]])
    return out


# === Training ===
class _Progress:
    """``progress.json``: training seconds accumulated over (resumed) runs."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.state = json.loads(path.read_text()) if path.is_file() else {"train_seconds": 0.0}

    def add(self, seconds: float, step: int) -> float:
        self.state["train_seconds"] += seconds
        self.state["step"] = step
        fileio.write_json(self.path, self.state, sort_keys=True)
        return self.state["train_seconds"]


def _callbacks(config, fold_dir: pathlib.Path, model, predict, examples, test_patients):
    """Timing/curve callback + BackupAndRestore + CSV + TensorBoard."""
    from spoils_tf.train import seg_lib
    t = config.train
    progress = _Progress(fold_dir / "progress.json")
    curve_path = fold_dir / "curve.csv"
    every = int(t.eval_every_epochs) if test_patients else 0

    class Timing(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * int(t.steps_per_epoch)
            seconds = progress.add(time.perf_counter() - self._start, step)
            last = step >= int(t.steps)
            if every and ((epoch + 1) % every == 0 or last):
                r = evaluate(predict, examples, test_patients, only_middle=True,
                             level_labelling=False)["middle/raw"]
                row = [step, seconds / 60.0, r["dice/fg_macro"], r["tissue/dice/fg_macro"],
                       r["level_accuracy"], r["disc_detection"]]
                if not curve_path.is_file():
                    curve_path.write_text(",".join(CURVE_COLUMNS) + "\n")
                with open(curve_path, "a", encoding="utf-8") as f:
                    f.write(",".join(f"{v:.5g}" for v in row) + "\n")
                log.info("step %d (%.1f min): held-out middle Dice %.3f, tissue %.3f, level acc %.3f",
                         step, seconds / 60.0, row[2], row[3], row[4])

    return [keras.callbacks.BackupAndRestore(str(fold_dir / "backup")), Timing(),
            keras.callbacks.CSVLogger(str(fold_dir / "history.csv"), append=True),
            *seg_lib._tensorboard(fold_dir / "logs")]


def train_fold(config, fold_dir: str | pathlib.Path, examples, train_patients: Sequence[str],
               test_patients: Sequence[str], *, extra_callbacks: Sequence[Any] = ()
               ) -> dict[str, Any]:
    """Trains one fold on patches at ``config.data.target_spacing_mm``, saves ``model.keras``
    and returns the held-out metrics (empty ``test_patients``: the final model, no metrics).

    Returns:
      ``evaluate(...)`` flattened as ``"<subset>/<variant>/<metric>"`` plus ``train_seconds``
      (summed over resumed runs), ``steps``, ``train_images``, ``train_loss_last``.
    """
    d, t = config.data, config.train
    check_schedule(t)
    fold_dir = pathlib.Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    common.set_seed(config.seed)
    target = float(d.target_spacing_mm)
    slices = spacing_pipeline.ResampledSlices.from_examples(
            examples, target, patients=train_patients, progress=bool(t.verbose))
    log.info("%d training slices at %.3f mm, canvas %s", len(slices), target, slices.images.shape[1:])
    train_ds = spacing_pipeline.make_patch_dataset(
            slices, patch_hw=tuple(d.patch_size), batch_size=int(t.batch_size),
            augment_cfg=dict(d.patch_augment), seed=int(config.seed))
    epochs = max(1, int(t.steps) // int(t.steps_per_epoch))
    progress = _Progress(fold_dir / "progress.json").state
    losses = []
    if (fold_dir / "model.keras").is_file() and progress.get("step", 0) >= epochs * int(t.steps_per_epoch):
        # trained earlier, killed before its evaluation finished: evaluate only
        model = load_model(fold_dir / "model.keras", compile=False)
        predict = spacing_pipeline.make_spacing_predictor(model, target)
    else:
        model = build_model(config)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(t)),
                      loss=seg_losses.segmentation_loss(t.loss), jit_compile=False)
        predict = spacing_pipeline.make_spacing_predictor(model, target)
        history = model.fit(train_ds, epochs=epochs, steps_per_epoch=int(t.steps_per_epoch),
                            callbacks=[*_callbacks(config, fold_dir, model, predict, examples,
                                                   test_patients), *extra_callbacks],
                            verbose=t.verbose)
        losses = history.history.get("loss", [])
        fileio.atomic_save_keras(model, fold_dir / "model.keras")
        progress = _Progress(fold_dir / "progress.json").state
    metrics: dict[str, Any] = {}
    if test_patients:
        results = evaluate(predict, examples, test_patients, progress=bool(t.verbose))
        metrics = {f"{name}/{k}": v for name, r in results.items() for k, v in r.items()}
    metrics.update({"train_seconds": progress["train_seconds"], "steps": epochs * int(t.steps_per_epoch),
                    "train_images": epochs * int(t.steps_per_epoch) * int(t.batch_size),
                    "train_slices": len(slices), "target_spacing_mm": target,
                    "train_loss_last": float(losses[-1]) if losses else float("nan"),
                    "train_patients": len(train_patients), "test_patients": len(test_patients)})
    return metrics
