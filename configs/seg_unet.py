"""U-Net segmentation baseline, same data, folds and metrics as seg_deeplabv3plus.

Named experiments (``--config=configs/seg_unet.py:<name>``): ``paper`` (512x512, the
original U-Net widths 64..1024, batch 8, Adam 1e-4, 50 epochs: our choices, U-Net is not in
the paper), ``cpu`` (128x128, widths 16..128, 5 middle slices per patient, 8 epochs, CE + soft Dice) and
``spider_cpu`` (the CPU recipe for real scans: every slice resampled to 0.75 mm, random
288 x 224 patches with augmentation for other scanners, a 5-stage conv-BN-LeakyReLU U-Net (16..256 filters, 1.9 M parameters),
CE + soft Dice, Adam 2e-3 with warm-up and cosine decay over ``train.steps``; trained by
``spoils_tf.train.seg_spacing_lib``), ``spider_cpu_smoke`` (the same code on a tiny synthetic
cohort for a few steps) and
``smoke`` (64x64, widths 8/16/32, tiny synthetic cohort, 2 folds, 2 epochs).
"""

from __future__ import annotations

import ml_collections

from configs import base

# The spider_cpu recipe's pixel size (mm) and number of training steps.
SPIDER_CPU_SPACING_MM = 0.75
SPIDER_CPU_STEPS = 1200


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"paper" | "cpu" | "spider_cpu" |
    "spider_cpu_smoke" | "smoke"``; default paper).

    Raises:
      ValueError: for any other name.
    """
    name = (arg or "paper").strip()
    c = base.base_config(f"seg_unet:{name}")
    c.data = base.seg_data_config()
    c.train = base.train_config()
    c.model = ml_collections.ConfigDict()
    c.model.name = "unet"
    c.model.kwargs = ml_collections.ConfigDict({
            "filters": (64, 128, 256, 512, 1024),
            "upsampling": "transpose",
            "dropout": 0.0,
    })
    if name == "paper":
        pass
    elif name == "cpu":
        c.data.image_size = (128, 128)
        c.data.max_slices_per_patient = 5
        c.model.kwargs.filters = (16, 32, 64, 128)
        c.train.batch_size = 4
        c.train.epochs = 8
        c.train.learning_rate = 1e-3
        c.train.loss = "ce+dice"      # discs are ~4 px high at 128 px: CE alone misses them
    elif name in ("spider_cpu", "spider_cpu_smoke"):
        _spider_cpu(c)
        if name == "spider_cpu_smoke":
            _smoke_steps(c)
    elif name == "smoke":
        c.data.labelme_dir = ""
        c.data.k = 2
        c.data.image_size = (64, 64)
        c.data.synthetic.patients = 4
        c.data.synthetic.slices_per_patient = 2
        c.data.shuffle_buffer = 16
        c.model.kwargs.filters = (8, 16, 32)
        c.train.batch_size = 4
        c.train.epochs = 2
        c.train.learning_rate = 1e-3
        c.train.verbose = 2
    else:
        raise ValueError(f"unknown seg_unet config {name!r}; expected paper | cpu | "
                         "spider_cpu | spider_cpu_smoke | smoke")
    return c


def _spider_cpu(c: ml_collections.ConfigDict) -> None:
    """The CPU recipe for real scans (BUILD.md, "Segmentation on real scans")."""
    spider_cpu_data_and_training(c)
    c.model.kwargs.filters = (16, 32, 64, 128, 256)
    c.model.kwargs.activation = "leaky_relu"


def spider_cpu_data_and_training(c: ml_collections.ConfigDict) -> None:
    """The recipe's data and training sections (any network): 0.75 mm, every slice, random
    patches, CE + soft Dice, Adam with warm-up and cosine decay over ``SPIDER_CPU_STEPS``."""
    c.data.target_spacing_mm = SPIDER_CPU_SPACING_MM
    c.data.patch_size = (288, 224)
    c.data.max_slices_per_patient = 0          # every slice of every training patient
    c.train.loss = "ce+dice"
    c.train.batch_size = 8
    c.train.learning_rate = 2e-3
    c.train.schedule = "cosine"
    c.train.warmup_steps = 50
    c.train.final_lr_fraction = 0.01
    c.train.steps = SPIDER_CPU_STEPS
    c.train.steps_per_epoch = 50
    c.train.eval_every_epochs = 0


def _smoke_steps(c: ml_collections.ConfigDict) -> None:
    """A few steps on a tiny synthetic cohort: the plumbing of the recipe, not the science."""
    c.data.labelme_dir = ""
    c.data.k = 2
    c.data.synthetic.patients = 4
    c.data.synthetic.slices_per_patient = 2
    c.data.target_spacing_mm = 1.5
    c.data.patch_size = (64, 64)
    c.model.kwargs.filters = (8, 16, 32)
    c.train.batch_size = 2
    c.train.steps = 4
    c.train.steps_per_epoch = 2
    c.train.warmup_steps = 1
    c.train.verbose = 2
