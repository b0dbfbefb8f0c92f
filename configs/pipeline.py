"""The TFX-style pipeline (ExampleGen -> Trainer -> Evaluator -> Pusher), one config per run.

Named runs (``--config=configs/pipeline.py:<name>``):

* ``smoke``: seconds; 4 synthetic patients x 1 slice at 64x64, 2 folds, a 2-level U-Net at
  32x32 for 2 epochs. The threshold ``dice/fg_macro>=0`` passes any model with a defined
  score: it checks the plumbing (blessing, push), not the science.
* ``demo``: 24 synthetic patients x 6 slices at 256x256, 4 folds (18 training / 6 held-out
  patients), the ``seg_unet.py:cpu`` U-Net (widths 16..128, 128x128 input) for 20 epochs,
  batch 8, Adam 3e-3, **cross-entropy + soft Dice loss**; classifiers: gradient boosting on
  the geometry features and MobileNetV2 (random init, batch-norm momentum 0.9) on 32x64 crops
  of the 3 central slices per disc, 8 epochs. Blessed at ``pixel_accuracy>=0.9,
  dice/fg_macro>=0.5, level_accuracy>=0.7, grade/ensemble/accuracy>=0.4``: a gate the tuned
  model passes with margin and a broken run fails (an all-background segmentation scores pixel
  accuracy ~0.93 but Dice ~0; chance accuracy over 11 classes is 0.09, the majority class
  0.20). The soft Dice term is there for the discs: about 4 px high at 128 px and ~3 % of
  the pixels, they are what plain cross-entropy misses, and the Dice term weights every class
  equally (BUILD.md, "Pipeline", compares the losses on this run). Command:
  ``python -m experiments.pipeline --config=configs/pipeline.py:demo --workdir=DIR``.
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

from configs import base, grade_cnn, seg_deeplabv3plus, seg_unet
from spoils_tf.serve import bundle

NAMES = ("smoke", "demo", "spider")


def classifiers_config(name: str) -> ml_collections.ConfigDict:
    """The ``classifiers`` section: the grading models the Trainer trains next to segmentation.

    Both are trained on the training patients' ground-truth masks (features and crops of
    every labelled disc slice) and pushed with the segmentation model as one bundle.
    """
    from spoils_tf.classical import models as cmodels
    from spoils_tf.geometry import crops

    c = ml_collections.ConfigDict()
    c.enabled = True
    c.target = "grade_class"          # grade_class (11 classes) | pfirrmann | binary
    c.seed = 0
    c.crop_size = crops.DEFAULT_SIZE  # (height, width) px of the disc crops (`spoils crops`)
    c.margin_frac = crops.DEFAULT_MARGIN_FRAC
    c.context_slices = 0              # 1: slices k-1, k, k+1 as channels
    c.geometry = ml_collections.ConfigDict()
    c.geometry.model = "gradient_boosting"   # the paper's; any classical.models.CLASSIFIERS name
    c.geometry.params = ml_collections.ConfigDict(
            dict(cmodels.CLASSIFIERS["gradient_boosting"].defaults))
    c.geometry.class_weight = "balanced"     # "balanced" | "" (none)
    c.geometry.columns = ()                   # () = the geometry module's feature list
    # `spoils predict` measures the slice(s) it segments; a disc volume needs the whole
    # series, so it is not a feature of the bundle's model (set () to keep it).
    c.geometry.exclude_columns = ("disc_volume_mm3",)
    c.geometry.add_level_index = False
    cnn = grade_cnn.get_config("smoke" if name == "smoke" else "cpu")
    c.cnn = ml_collections.ConfigDict({"model": cnn.model, "train": cnn.train})
    c.cnn.model.input_height = 0      # 0 = the crop size above
    c.cnn.model.input_width = 0
    c.cnn.train.verbose = 0
    # n > 0: the crop classifier trains on the n crops per (patient, level) nearest the
    # patient's middle (mid-sagittal) slice, as configs/grade_cnn.py:cpu; 0 = every crop.
    c.cnn_max_slices_per_patient = int(cnn.data.max_slices_per_patient)
    if name == "smoke":
        c.crop_size = (32, 64)
        c.geometry.params.n_estimators = 10
    elif name == "demo":
        c.crop_size = (32, 64)        # synthetic 256 px slices: a disc is ~40 x 10 px
        c.cnn.train.epochs = 8
    return c


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
    c.pusher.model_name = bundle.SEG  # with classifiers the bundle's names are used (bundle.py)
    c.classifiers = classifiers_config(name)
    if name == "smoke":
        # 128 px: at 64 px most synthetic discs are 2 px high, too small to measure or crop.
        c.examples.synthetic.update({"patients": 4, "slices_per_patient": 1, "size": 128})
        c.examples.k = 2
        c.trainer = seg_unet.get_config("smoke")
        c.trainer.data.image_size = (32, 32)
        c.trainer.model.kwargs.filters = (4, 8)
        c.trainer.train.epochs = 2
        c.trainer.train.verbose = 0
        c.trainer.data.shuffle_buffer = 8
        c.evaluator.thresholds = "dice/fg_macro>=0"
    elif name == "demo":
        c.examples.synthetic.update({"patients": 24, "slices_per_patient": 6})
        c.trainer = seg_unet.get_config("cpu")
        c.trainer.data.max_slices_per_patient = 0
        c.trainer.train.batch_size = 8
        c.trainer.train.epochs = 20
        c.trainer.train.learning_rate = 3e-3
        c.trainer.train.loss = "ce+dice"
        c.trainer.train.verbose = 2
        c.evaluator.thresholds = ("pixel_accuracy>=0.9, dice/fg_macro>=0.5, level_accuracy>=0.7, "
                                  "grade/ensemble/accuracy>=0.4")
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
