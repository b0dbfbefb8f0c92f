"""U-Net segmentation baseline, same data, folds and metrics as seg_deeplabv3plus.

Named experiments (``--config=configs/seg_unet.py:<name>``): ``paper`` (512x512, the
original U-Net widths 64..1024, batch 8, Adam 1e-4, 50 epochs: our choices, U-Net is not in
the paper), ``cpu`` (128x128, widths 16..128, 5 middle slices per patient, 8 epochs, CE + soft Dice; not timed) and
``smoke`` (64x64, widths 8/16/32, tiny synthetic cohort, 2 folds, 2 epochs).
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"paper" | "cpu" | "smoke"``; default paper).

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
        raise ValueError(f"unknown seg_unet config {name!r}; expected paper | cpu | smoke")
    return c
