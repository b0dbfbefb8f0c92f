"""DeepLabV3+ / ResNet50 segmentation (the SPOILS paper's model), patient-level k-fold CV.

Named experiments (``--config=configs/seg_deeplabv3plus.py:<name>``):

* ``paper``: as the paper says: input 512x512x3, DeepLabV3+ with a ResNet50 encoder (ImageNet
  weights in the paper: set ``--config.model.kwargs.encoder_weights=imagenet`` or a local
  .h5 where a download is possible), ASPP rates 6/12/18, batch 8, Adam 1e-4. The paper
  gives neither the number of epochs nor the learning rate or batch size; 50 epochs, Adam
  1e-4 and batch 8 are our choices, stated here.
* ``cpu``: DeepLabV3+ (ASPP + decoder as in the paper) on the small ``mini`` residual encoder
  (16/32/64/128 channels, 0.65 M params), 256x256 input, the 5 middle slices per patient
  (the paper segments midsagittal slices), 8 epochs, batch 4, Adam 1e-3, cross-entropy +
  soft Dice (``train.loss``; plain CE: ``--config.train.loss=ce``). A network small enough
  to train all 8 SPIDER folds on two CPU cores; ResNet50 would take hours per fold there
  (BUILD.md, "Segmentation", has the training speeds and the loss comparison).
* ``spider_cpu``: the U-Net's CPU recipe for real scans (``configs/seg_unet.py:spider_cpu``:
  0.75 mm, random patches, augmentation, CE + soft Dice, warm-up + cosine over steps) with the
  ``cpu`` config's mini-encoder DeepLabV3+ on one channel, for the comparison in BUILD.md.
* ``smoke``: seconds; the mini encoder at 64x64, 2 folds of a tiny synthetic cohort,
  2 epochs. Checks the plumbing, not the science.

Override any field, e.g. ``--config.data.labelme_dir=/path/to/dataset``.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"paper" | "cpu" | "spider_cpu" | "smoke"``;
    default paper).

    Raises:
      ValueError: for any other name.
    """
    name = (arg or "paper").strip()
    c = base.base_config(f"seg_deeplabv3plus:{name}")
    c.data = base.seg_data_config()
    c.train = base.train_config()
    c.model = ml_collections.ConfigDict()
    c.model.name = "deeplabv3plus"
    c.model.kwargs = ml_collections.ConfigDict({
            "encoder": "resnet50",
            "encoder_weights": None,
            "encoder_filters": (16, 32, 64, 128),
            "output_stride": 16,
            "atrous_rates": (6, 12, 18),
            "aspp_filters": 256,
            "low_level_filters": 48,
            "decoder_filters": 256,
            "dropout": 0.1,
    })
    # encoder_weights may become a string (imagenet / a path) from the command line.
    c.model.kwargs.encoder_weights = ml_collections.FieldReference(None, field_type=str)
    if name == "paper":
        pass
    elif name == "cpu":
        c.data.image_size = (256, 256)
        c.data.max_slices_per_patient = 5
        c.model.kwargs.encoder = "mini"
        c.model.kwargs.encoder_filters = (16, 32, 64, 128)
        c.model.kwargs.aspp_filters = 64
        c.model.kwargs.low_level_filters = 16
        c.model.kwargs.decoder_filters = 64
        c.train.batch_size = 4
        c.train.epochs = 8
        c.train.learning_rate = 1e-3
        # the soft-Dice term raises fg-macro Dice and level accuracy on SPIDER (BUILD.md)
        c.train.loss = "ce+dice"
    elif name == "smoke":
        c.data.labelme_dir = ""          # always the synthetic cohort
        c.data.k = 2
        c.data.image_size = (64, 64)
        c.data.synthetic.patients = 4
        c.data.synthetic.slices_per_patient = 2
        c.data.shuffle_buffer = 16
        c.model.kwargs.encoder = "mini"
        c.model.kwargs.encoder_filters = (8, 16, 16, 32)
        c.model.kwargs.atrous_rates = (1, 2, 3)
        c.model.kwargs.aspp_filters = 16
        c.model.kwargs.low_level_filters = 8
        c.model.kwargs.decoder_filters = 16
        c.train.batch_size = 4
        c.train.epochs = 2
        c.train.learning_rate = 1e-3
        c.train.verbose = 2
    elif name == "spider_cpu":
        # the U-Net's CPU recipe for real scans (configs/seg_unet.py:spider_cpu: pixel size,
        # patches, augmentation, loss, schedule) with the cpu config's DeepLabV3+ mini network
        from configs import seg_unet
        seg_unet.spider_cpu_data_and_training(c)
        c.model.kwargs.encoder = "mini"
        c.model.kwargs.encoder_filters = (16, 32, 64, 128)
        c.model.kwargs.aspp_filters = 64
        c.model.kwargs.low_level_filters = 16
        c.model.kwargs.decoder_filters = 64
    else:
        raise ValueError(f"unknown seg_deeplabv3plus config {name!r}; expected paper | cpu | "
                         "spider_cpu | smoke")
    return c
