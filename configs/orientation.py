"""The orientation network (``spoils_tf.models.orientation``): which flip of
``spoils_tf.levels.ORIENTATIONS`` a sagittal slice was given in.

Named experiments (``--config=configs/orientation.py:<name>``):

* ``spider_cpu``: every slice of the SPIDER dataset at 5 mm on a 64 x 64 canvas (320 mm), random
  flip (the label), rotation, zoom, shift, bias field, gamma, blur and noise; AdamW with a
  warm-up and cosine decay. Minutes per fold on two CPU cores.
* ``smoke``: two epochs, for the plumbing.

The decision threshold (``eval.threshold``) is fixed here, not tuned on the folds it is
reported on: below it a slice is refused.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"spider_cpu" | "smoke"``; default
    spider_cpu).

    Raises:
      ValueError: for any other name.
    """
    name = (arg or "spider_cpu").strip()
    c = base.base_config(f"orientation:{name}")
    c.data = ml_collections.ConfigDict({"labelme_dir": base.DEFAULT_SPIDER_DATASET_DIR,
                                        "tfds_dir": "runs/tfds"})
    c.model = ml_collections.ConfigDict({"pixel_mm": 5.0, "canvas": 64,
                                         "filters": (16, 32, 64, 128), "dropout": 0.3})
    c.augment = ml_collections.ConfigDict({
            "rotation_deg": 15.0,     # +- degrees
            "zoom": 0.25,             # +- fraction
            "shift": 0.12,            # +- fraction of the canvas
            "bias": 0.3,              # multiplicative field in [1 - bias, 1 + bias]
            "log_gamma": 0.5,         # gamma in [e^-0.5, e^0.5]
            "max_blur_factor": 2.5,   # down/up-sampling factor in [1, 2.5]
            "noise": 0.06,            # Gaussian noise SD up to this (intensities 0..1)
    })
    c.train = ml_collections.ConfigDict({"epochs": 40, "batch_size": 32, "learning_rate": 2e-3,
                                         "weight_decay": 1e-4, "warmup_steps": 30,
                                         "verbose": True})
    c.eval = ml_collections.ConfigDict({"threshold": 0.9, "middle_slices": 5})
    if name == "spider_cpu":
        pass
    elif name == "smoke":
        c.train.epochs = 2
        c.train.warmup_steps = 2
    else:
        raise ValueError(f"unknown experiment {name!r}; expected spider_cpu | smoke")
    return c
