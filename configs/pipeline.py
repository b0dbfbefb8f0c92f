"""The TFX-style pipeline (ExampleGen -> Trainer -> Evaluator -> Pusher), one config per run.

Named runs (``--config=configs/pipeline.py:<name>``):

* ``smoke``: seconds; 4 synthetic patients x 1 slice at 64x64, 2 folds, a 2-level U-Net at
  32x32 for 2 epochs. The threshold ``dice/fg_macro>=0`` passes any model with a defined
  score: it checks the plumbing (blessing, push), not the science.
* ``demo``: ~4-5 min on 2 shared CPU cores; 16 synthetic patients x 3 slices at 256x256,
  4 folds, the ``seg_unet.py:cpu`` U-Net (128x128) for 24 epochs at Adam 2e-3, blessed at
  ``pixel_accuracy>=0.85, dice/fg_macro>=0.1``: a demonstration gate, not a clinical one.
  Measured 2026-11-23 (``python -m experiments.pipeline --config=configs/pipeline.py:demo``):
  held-out pixel accuracy 0.929, Dice fg-macro 0.140, level accuracy 0.0 on 12 slices; with
  the ``cpu`` schedule (6 epochs, 1e-3) Dice fg-macro was 0.042 and the model was not blessed.
* ``spider``: the converted SPIDER dataset (``spoils convert-spider --out runs/data/spider``),
  8 folds (the dataset's ``folds.json`` when it has one), ``seg_deeplabv3plus.py:cpu``,
  blessed at ``dice/fg_macro>=0.8, level_accuracy>=0.8`` (our policy, not from the paper).

Sections: ``examples`` (dataset, folds, held-out fold), ``trainer`` (a complete segmentation
experiment config, configs/seg_*.py), ``evaluator.thresholds`` (``"<metric> >=|<= <value>,
..."``, metric keys of ``spoils_tf.metrics.segmentation`` plus ``level_accuracy``),
``pusher`` (TF Serving base dir, "" = ``<workdir>/serving``, and model name).
"""

from __future__ import annotations

import ml_collections

from configs import base, seg_deeplabv3plus, seg_unet

NAMES = ("smoke", "demo", "spider")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of pipeline run ``arg`` (``"smoke" | "demo" | "spider"``; default smoke).

    Raises:
      ValueError: for any other name.
    """
    name = (arg or "smoke").strip()
    if name not in NAMES:
        raise ValueError(f"unknown pipeline config {name!r}; expected one of {' | '.join(NAMES)}")
    c = ml_collections.ConfigDict()
    c.experiment = f"pipeline:{name}"
    c.examples = ml_collections.ConfigDict()
    c.examples.labelme_dir = ""       # "" -> a synthetic cohort made in <workdir>/synthetic
    c.examples.synthetic = ml_collections.ConfigDict(
            {"patients": 16, "slices_per_patient": 3, "seed": 0, "size": 256})
    c.examples.k = 4                  # folds, when the dataset has no folds.json
    c.examples.seed = 0
    c.examples.eval_fold = 0          # the held-out fold the Evaluator scores
    c.examples.tfds_config = ""       # "" -> synthetic | spider from the dataset
    c.evaluator = ml_collections.ConfigDict()
    c.evaluator.thresholds = "dice/fg_macro>=0.5"
    c.pusher = ml_collections.ConfigDict()
    c.pusher.base_dir = ""            # "" -> <workdir>/serving
    c.pusher.model_name = "spoils_seg"
    if name == "smoke":
        c.examples.synthetic.update({"patients": 4, "slices_per_patient": 1, "size": 64})
        c.examples.k = 2
        c.trainer = seg_unet.get_config("smoke")
        c.trainer.data.image_size = (32, 32)
        c.trainer.model.kwargs.filters = (4, 8)
        c.trainer.train.epochs = 2
        c.trainer.train.verbose = 0
        c.trainer.data.shuffle_buffer = 8
        c.evaluator.thresholds = "dice/fg_macro>=0"
    elif name == "demo":
        c.trainer = seg_unet.get_config("cpu")
        c.trainer.data.max_slices_per_patient = 0
        c.trainer.train.epochs = 24
        c.trainer.train.learning_rate = 2e-3
        c.trainer.train.verbose = 2
        c.evaluator.thresholds = "pixel_accuracy>=0.85, dice/fg_macro>=0.1"
    else:
        c.examples.labelme_dir = base.DEFAULT_SPIDER_DATASET_DIR
        c.examples.k = 8
        c.trainer = seg_deeplabv3plus.get_config("cpu")
        c.evaluator.thresholds = "dice/fg_macro>=0.8, level_accuracy>=0.8"
    # Keep the trainer's own data section consistent with the pipeline's (it is saved with
    # the model; the Trainer overrides the paths with the Examples artifact's).
    c.trainer.data.labelme_dir = c.examples.labelme_dir
    c.trainer.data.synthetic.patients = c.examples.synthetic.patients
    c.trainer.data.synthetic.slices_per_patient = c.examples.synthetic.slices_per_patient
    c.trainer.data.synthetic.seed = c.examples.synthetic.seed
    c.trainer.data.k = c.examples.k
    c.trainer.seed = c.examples.seed
    return c
