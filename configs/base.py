"""Shared pieces of the experiment configs (``ml_collections``), one function per section.

A named experiment (``configs/<kind>.py:get_config(arg)``) starts from these sections and
changes only what differs, so every config is complete and is saved resolved next to its
results (``workdir/config.json``). Fields that mean "not set" use ``""`` or ``0`` rather than
None, so that ``--config.x=y`` overrides keep their type.
"""

from __future__ import annotations

import ml_collections

from spoils_tf.data import seg_constants  # TF-free: configs load without TensorFlow


# Where `spoils convert-spider --out` writes the SPIDER dataset by default (a spoils dataset
# dir, spoils_tf/data/layout.py); relative paths are relative to the working directory.
DEFAULT_SPIDER_DATASET_DIR = "runs/data/spider"


def base_config(experiment: str) -> ml_collections.ConfigDict:
    """Top level: experiment name, seed, which folds to run."""
    c = ml_collections.ConfigDict()
    c.experiment = experiment
    c.seed = 0
    c.fold = "all"    # "all", "3" or "0,2" (the --fold flag sets this)
    return c


def seg_data_config() -> ml_collections.ConfigDict:
    """Data section of a segmentation experiment."""
    d = ml_collections.ConfigDict()
    # A spoils dataset dir (labelme/ + patients.csv + ...). Used when it exists; otherwise a
    # synthetic cohort (d.synthetic) is generated into <workdir>/synthetic and used instead.
    d.labelme_dir = DEFAULT_SPIDER_DATASET_DIR
    d.tfds_data_dir = ""          # "" -> <workdir>/tfds
    d.folds_path = ""             # "" -> <dataset dir>/folds.json (made with `spoils folds` if missing)
    d.k = 8                       # folds, when folds.json has to be made
    d.image_size = (512, 512)     # model input (H, W)
    d.resize_mode = "letterbox"   # letterbox (keep aspect, pad) | resize (stretch)
    d.max_slices_per_patient = 0  # 0 = every slice; n = the n slices nearest the patient's middle
    d.cache = ""                  # "" = in memory; a path prefix = on disk
    d.shuffle_buffer = 1024
    d.augment = ml_collections.ConfigDict(dict(seg_constants.DEFAULT_AUGMENT))
    # Where d.augment runs: "host" (tf.data, per example; the published runs) | "device" (the
    # train step, batched, spoils_tf/data/augment_layers.py; the host only batches cached uint8)
    d.augment_on = "host"
    d.synthetic = ml_collections.ConfigDict(
            {"patients": 16, "slices_per_patient": 3, "seed": 0})
    # Fixed-spacing patch training (spoils_tf/train/seg_spacing_lib.py) when > 0: every slice
    # resampled to this pixel size in mm, random patches of patch_size (H, W) pixels.
    d.target_spacing_mm = 0.0
    d.patch_size = (320, 256)
    d.patch_augment = ml_collections.ConfigDict(dict(seg_constants.DEFAULT_PATCH_AUGMENT))
    return d


def train_config() -> ml_collections.ConfigDict:
    """Training section (optimizer, schedule, precision, logging)."""
    t = ml_collections.ConfigDict()
    t.batch_size = 8
    t.epochs = 50
    t.optimizer = "adam"
    t.loss = "ce"                # ce | ce+dice (spoils_tf/models/losses.py)
    t.learning_rate = 1e-4
    t.weight_decay = 0.0
    t.precision = "auto"         # auto (mixed_float16 on GPU) | float32 | mixed_float16 | mixed_bfloat16
    t.jit_compile = False        # XLA stays off on CPU
    t.monitor_test_fold = False  # also evaluate the test fold each epoch (monitoring only)
    t.verbose = 1                # Keras progress bars
    t.eval_batch_size = 1
    # Step-counted training (fixed-spacing path only): steps in chunks of steps_per_epoch,
    # warm-up then cosine | poly decay to learning_rate * final_lr_fraction at the last step.
    t.steps = 0
    t.steps_per_epoch = 50
    t.schedule = "cosine"
    t.warmup_steps = 50
    t.final_lr_fraction = 0.01
    t.eval_every_epochs = 0        # held-out curve every n "epochs" (0 = off)
    return t
