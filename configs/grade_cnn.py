"""Disc grading from crops with a CNN (plain CNN | MobileNetV2 | VGG16), cross-validated.

Named experiments (``--config=configs/grade_cnn.py:<name>``):

* ``paper``: as the paper: MobileNetV2, 11-class target, 150 epochs, 8 patient-level folds.
* ``cpu``:   the same model (MobileNetV2, 11 classes, 8 patient-level folds) on a schedule
  that two CPU cores finish for all 8 folds of the 32 SPIDER patients: the 3 crops per
  (patient, level) nearest the mid-sagittal slice (574 of 3,694 crops), resized to 32x64 px,
  14 epochs, batch-norm momentum 0.9, the training step traced once and reused by later
  folds. A feasibility schedule, not the paper's 150 epochs: read its numbers as a lower
  bound of what the model can do.
* ``smoke``: seconds; a plain CNN on a toy crops dir written into the workdir, 3 folds,
  2 epochs. Checks the plumbing, not the science.

Override any field with ``--config.x=y``, e.g. ``--config.data.crops_dir=runs/crops``,
``--config.model.backbone=vgg16``, ``--config.model.target=pfirrmann5``,
``--config.train.learning_rate=1e-4`` (needed for VGG16 from random init: it has no batch
norm and diverges at the default 1e-3),
``--config.split=slice`` (LEAKAGE MODE: slice-level random folds that ignore patients, for
comparison with a slice-level CV only; every output is labelled as leaky).

Self-contained: a plain ``ml_collections.ConfigDict``, not built from configs/base.py.
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"paper" | "cpu" | "smoke"``; default cpu).

    Raises:
        ValueError: for any other name.
    """
    name = (arg or "cpu").strip()
    c = ml_collections.ConfigDict()
    c.experiment = f"grade_cnn:{name}"
    c.seed = 0
    # Folds to run: "all", one fold "3" or a list "0,2" (the --fold flag sets this).
    c.fold = "all"
    # "patient" (folds.json, no patient on both sides) | "slice" (LEAKY, comparison only).
    c.split = "patient"

    c.data = ml_collections.ConfigDict()
    c.data.crops_dir = ""    # written by `spoils crops --data DIR --out CROPS_DIR`
    c.data.folds_path = ""   # "" -> <crops_dir>/folds.json, else made once in the workdir
    c.data.k = 8             # folds when they have to be made (and for split=slice)
    # Per (patient, level), keep only the n crops nearest the patient's middle (mid-sagittal)
    # slice; 0 = all. The others are listed in skipped.csv with the reason.
    c.data.max_slices_per_patient = 0
    c.data.toy = ml_collections.ConfigDict()
    c.data.toy.enabled = False   # write a toy crops dir into the workdir (smoke runs)
    c.data.toy.patients = 3
    c.data.toy.crops = 10
    c.data.toy.height = 32
    c.data.toy.width = 64

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "mobilenetv2"     # cnn | mobilenetv2 | vgg16
    c.model.target = "grade11"           # grade11 | pfirrmann5 | binary
    # px; 0 = the size the crops are stored at (`spoils crops --size`); other values resize
    # every crop (aspect ratio distorted if it differs)
    c.model.input_height = 0
    c.model.input_width = 0
    c.model.dropout = 0.3
    c.model.backbone_weights = ""        # "" (random init) | "imagenet" | path to .weights.h5
    c.model.cnn_filters = (32, 64, 128, 256)
    c.model.mobilenet_alpha = 1.0
    # Batch-norm momentum set on every BN layer before training; 0 = each backbone's own
    # (keras MobileNetV2 0.999, the plain CNN Keras's 0.99; VGG16 has none). Short schedules
    # need ~0.9, else the moving statistics used at inference stay near their initial values.
    c.model.bn_momentum = 0.0

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 150
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.class_weighting = True       # balanced weights from the training fold only
    c.train.verbose = 2
    # Folds run in one process reuse the first fold's compiled model (fresh weights drawn with
    # the fold's seed, optimizer state zeroed) so its training step is traced once, not per
    # fold. False = a new model per fold.
    c.train.reuse_traced_model = True
    # "auto" (mixed_float16 on a GPU, else float32) | float32 | mixed_float16 | mixed_bfloat16
    c.train.precision = "auto"
    c.train.augment = ml_collections.ConfigDict()
    c.train.augment.enabled = True
    c.train.augment.shift_fraction = 0.05
    c.train.augment.zoom_fraction = 0.05
    c.train.augment.brightness = 0.1
    c.train.augment.contrast = 0.1

    c.eval = ml_collections.ConfigDict()
    c.eval.n_boot = 1000                 # patient-level bootstrap resamples for the CIs

    if name == "paper":
        pass
    elif name == "cpu":
        c.data.max_slices_per_patient = 3
        c.model.input_height = 32
        c.model.input_width = 64
        c.model.bn_momentum = 0.9
        c.train.epochs = 14
    elif name == "smoke":
        c.data.toy.enabled = True
        c.data.k = 3
        c.model.backbone = "cnn"
        c.model.input_height = 32
        c.model.input_width = 64
        c.model.cnn_filters = (8, 16)
        c.train.epochs = 2
        c.train.batch_size = 8
        c.train.verbose = 0
        c.train.augment.enabled = False
        c.eval.n_boot = 50
    else:
        raise ValueError(f"configs/grade_cnn.py: unknown experiment {name!r}; "
                         "expected paper, cpu or smoke")
    return c
