"""Disc-crop classifiers: a plain CNN, MobileNetV2 and VGG16, each with a softmax head.

The paper (SPOILS, JMIR AI 2026) compares "a CNN, a CNN with MobileNetV2 and a CNN with
VGG16" on the extracted disc crops ("disk volumes") and keeps MobileNetV2 (Sandler et al.,
CVPR 2018). Here every variant is one ``DiscClassifier``: input preprocessing -> backbone
(``keras.applications`` with ``include_top=False`` or a few conv blocks) -> global average
pooling -> dropout -> dense softmax over the classes of one target.

Input: ``float32 [batch, H, W, C]`` with intensities in ``[0, 1]`` (normalised crops) and
``C = 1`` (greyscale; replicated to 3 channels inside the model) or ``C = 3`` (e.g. a crop
stacked with its neighbouring sagittal slices). The model does its own backbone-specific
scaling (MobileNetV2 ``[-1, 1]``; VGG16 ``0..255`` minus the ImageNet "caffe" channel means;
the plain CNN takes ``[0, 1]`` as it is), so callers never need to know which backbone runs.
Output: ``float32 [batch, num_classes]`` probabilities summing to 1.

Minimum input size (height and width each): MobileNetV2 and VGG16 need >= 32 px (they
down-sample by 32; ``keras.applications`` refuses smaller inputs); the plain CNN needs
``>= 2 ** len(cnn_filters)`` px (one 2x2 max-pool per block: 16 px for the default 4 blocks).
Typical crops are 64x128 or 96x192 (height x width), well above all three.

Targets (``TARGET_CLASSES``, derived from ``spoils_tf.labels``): ``grade11`` (the paper's 11
Pfirrmann x severity classes), ``pfirrmann5`` (Pfirrmann grade 1-5) and ``binary``
(PG1-3 vs PG4-5).
"""

from __future__ import annotations

import keras
import numpy as np

from spoils_tf import labels

# === Targets ===
# target name -> class names (index in the tuple = class id = output unit). The one place
# that ties a target to its classes; every other module looks targets up here.
TARGET_CLASSES: dict[str, tuple[str, ...]] = {
        "grade11": labels.GRADE_CLASSES,
        "pfirrmann5": labels.PFIRRMANN_CLASSES,
        "binary": labels.BINARY_CLASSES,
}
BACKBONES: tuple[str, ...] = ("cnn", "mobilenetv2", "vgg16")
# Smallest height/width (px) accepted by each keras.applications backbone.
MIN_INPUT_SIZE: dict[str, int] = {"mobilenetv2": 32, "vgg16": 32}
# ImageNet channel means of the VGG "caffe" preprocessing, in BGR order (keras.applications
# .imagenet_utils); for greyscale crops replicated to 3 channels the order does not matter.
_VGG_BGR_MEANS: tuple[float, float, float] = (103.939, 116.779, 123.68)


def target_classes(target: str) -> tuple[str, ...]:
    """Class names of a target (``"grade11" | "pfirrmann5" | "binary"``).

    Raises:
        ValueError: if ``target`` is not a key of ``TARGET_CLASSES``.
    """
    if target not in TARGET_CLASSES:
        raise ValueError(f"unknown target {target!r}; expected one of {tuple(TARGET_CLASSES)}")
    return TARGET_CLASSES[target]


def min_input_size(backbone: str, cnn_filters: tuple[int, ...] = (32, 64, 128, 256)) -> int:
    """Smallest input height/width in px that ``backbone`` accepts (see module docstring).

    Raises:
        ValueError: if ``backbone`` is not one of ``BACKBONES``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")
    if backbone == "cnn":
        return 2 ** len(cnn_filters)
    return MIN_INPUT_SIZE[backbone]


def build_backbone(backbone: str, input_shape: tuple[int, int, int], *,
                   weights: str | None = None, cnn_filters: tuple[int, ...] = (32, 64, 128, 256),
                   mobilenet_alpha: float = 1.0) -> keras.Model:
    """Feature extractor ``float32 [B, H, W, 3] -> float32 [B, h, w, features]``.

    The input is already backbone-scaled (see ``DiscClassifier``).

    Args:
        backbone: ``"cnn" | "mobilenetv2" | "vgg16"``.
        input_shape: ``(H, W, 3)`` in px.
        weights: ``None`` (random init), ``"imagenet"`` (downloaded by keras.applications;
            needs network) or the path of a local ``.weights.h5`` / ``.h5`` file matching
            the backbone with ``include_top=False``. Ignored for ``"cnn"``.
        cnn_filters: filters of each conv block of the plain CNN (each block: 3x3 conv ->
            batch norm -> ReLU -> 2x2 max-pool).
        mobilenet_alpha: MobileNetV2 width multiplier (ImageNet weights exist for 0.35, 0.5,
            0.75, 1.0, 1.3, 1.4).

    Raises:
        ValueError: unknown backbone, input smaller than ``min_input_size``, or weights given
            for the plain CNN.
    """
    height, width, channels = (int(v) for v in input_shape)
    need = min_input_size(backbone, tuple(cnn_filters))
    if min(height, width) < need:
        raise ValueError(f"backbone {backbone!r} needs input height and width >= {need} px, "
                         f"got input_shape={tuple(input_shape)}")
    if backbone == "cnn":
        if weights:
            raise ValueError(f"the plain CNN has no pretrained weights; got weights={weights!r}")
        inputs = keras.Input(shape=(height, width, channels), name="image")
        x = inputs
        for i, filters in enumerate(cnn_filters):
            x = keras.layers.Conv2D(int(filters), 3, padding="same", use_bias=False,
                                    name=f"block{i + 1}_conv")(x)
            x = keras.layers.BatchNormalization(name=f"block{i + 1}_bn")(x)
            x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
            x = keras.layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
        return keras.Model(inputs, x, name="cnn_backbone")
    if backbone == "mobilenetv2":
        return keras.applications.MobileNetV2(
                input_shape=(height, width, channels), alpha=mobilenet_alpha,
                include_top=False, weights=weights or None, name="mobilenetv2_backbone")
    return keras.applications.VGG16(input_shape=(height, width, channels), include_top=False,
                                    weights=weights or None, name="vgg16_backbone")


@keras.saving.register_keras_serializable(package="spoils_tf")
class DiscClassifier(keras.Model):
    """Disc-crop classifier: preprocessing -> backbone -> GAP -> dropout -> dense softmax.

    Args:
        backbone: ``"cnn" | "mobilenetv2" | "vgg16"``.
        target: ``"grade11" | "pfirrmann5" | "binary"`` (classes from ``TARGET_CLASSES``).
        input_height: crop height in px (>= ``min_input_size(backbone)``).
        input_width: crop width in px (>= ``min_input_size(backbone)``).
        input_channels: 1 (greyscale, replicated to 3 inside the model) or 3.
        dropout: dropout rate before the dense head, in [0, 1).
        backbone_weights: ``None | "imagenet" | path`` (see ``build_backbone``). Only used
            when building fresh: ``from_config`` (and so ``keras.models.load_model``) always
            rebuilds with ``None`` because the trained weights come from the saved file.
        cnn_filters: conv-block filters of the plain CNN (ignored by other backbones).
        mobilenet_alpha: MobileNetV2 width multiplier (ignored by other backbones).

    Call: ``float32 [B, input_height, input_width, input_channels]`` in ``[0, 1]`` ->
    ``float32 [B, len(TARGET_CLASSES[target])]`` softmax probabilities.

    Raises:
        ValueError: unknown backbone/target, input too small, ``input_channels`` not 1 or 3,
            or ``dropout`` outside [0, 1).
    """

    def __init__(self, backbone: str = "mobilenetv2", target: str = "grade11",
                 input_height: int = 64, input_width: int = 128, input_channels: int = 1,
                 dropout: float = 0.3, backbone_weights: str | None = None,
                 cnn_filters: tuple[int, ...] | list[int] = (32, 64, 128, 256),
                 mobilenet_alpha: float = 1.0, **kwargs):
        classes = target_classes(target)
        if int(input_channels) not in (1, 3):
            raise ValueError(f"input_channels must be 1 or 3, got {input_channels!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        cnn_filters = tuple(int(f) for f in cnn_filters)

        # === Layers ===
        features = build_backbone(backbone, (int(input_height), int(input_width), 3),
                                  weights=backbone_weights, cnn_filters=cnn_filters,
                                  mobilenet_alpha=float(mobilenet_alpha))
        if backbone == "mobilenetv2":
            scale = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")
        elif backbone == "vgg16":
            scale = keras.layers.Rescaling(255.0, offset=[-m for m in _VGG_BGR_MEANS],
                                           name="to_caffe")
        else:
            scale = None
        pool = keras.layers.GlobalAveragePooling2D(name="gap")
        drop = keras.layers.Dropout(float(dropout), name="dropout")
        # float32 softmax whatever the mixed-precision policy.
        head = keras.layers.Dense(len(classes), activation="softmax", dtype="float32",
                                  name="probs")

        # === Functional Model ===
        inputs = keras.Input(shape=(int(input_height), int(input_width), int(input_channels)),
                             name="crop")
        x = inputs
        if int(input_channels) == 1:
            x = keras.layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
        if scale is not None:
            x = scale(x)
        x = features(x)
        x = pool(x)
        x = drop(x)
        outputs = head(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.backbone_name = backbone
        self.target = target
        self.class_names = classes
        self.input_height = int(input_height)
        self.input_width = int(input_width)
        self.input_channels = int(input_channels)
        self.dropout_rate = float(dropout)
        self.backbone_weights = backbone_weights
        self.cnn_filters = cnn_filters
        self.mobilenet_alpha = float(mobilenet_alpha)

    def get_config(self) -> dict:
        # As keras-hub's Backbone/Task: do not chain to the functional get_config (a nested
        # layer graph that this constructor cannot take); store the constructor arguments.
        return {
                "name": self.name,
                "trainable": self.trainable,
                "backbone": self.backbone_name,
                "target": self.target,
                "input_height": self.input_height,
                "input_width": self.input_width,
                "input_channels": self.input_channels,
                "dropout": self.dropout_rate,
                "backbone_weights": self.backbone_weights,
                "cnn_filters": list(self.cnn_filters),
                "mobilenet_alpha": self.mobilenet_alpha,
        }

    @classmethod
    def from_config(cls, config: dict) -> "DiscClassifier":
        config = dict(config)
        # Weights come from the saved file; never download or read a weights path again.
        config["backbone_weights"] = None
        return cls(**config)


def build_classifier(backbone: str, target: str, input_height: int, input_width: int,
                     **kwargs) -> DiscClassifier:
    """``DiscClassifier(backbone, target, input_height, input_width, **kwargs)``.

    A convenience for callers that pass config fields; see ``DiscClassifier`` for arguments
    and errors.
    """
    return DiscClassifier(backbone=backbone, target=target, input_height=input_height,
                          input_width=input_width, **kwargs)


# === Class weights ===
def balanced_class_weights(y_train, num_classes: int) -> dict[int, float]:
    """Balanced class weights from the TRAINING labels of one fold.

    ``w_c = n / (k * n_c)`` for each class ``c`` present in ``y_train``, where ``n`` is the
    number of training samples, ``n_c`` the count of class ``c`` and ``k`` the number of
    classes present (scikit-learn's ``class_weight="balanced"``, King & Zeng 2001): every
    present class then carries the same total weight ``n / k``. Classes absent from the
    training fold get 1.0 (they never occur in training, so the value has no effect; it is
    there so the dict covers every output unit).

    Args:
        y_train: int array-like ``[n]`` of class ids in ``0..num_classes-1``; compute it on
            the training patients only, never on held-out ones.
        num_classes: number of output classes.

    Returns:
        ``{class_id: weight}`` for every id in ``0..num_classes-1``.

    Raises:
        ValueError: if ``y_train`` is empty or holds an id outside ``0..num_classes-1``.
    """
    y = np.asarray(y_train).reshape(-1)
    if y.size == 0:
        raise ValueError("y_train is empty: cannot compute class weights")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"y_train must hold integer class ids, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"y_train ids must be in 0..{num_classes - 1}, "
                         f"got min {y.min()} max {y.max()}")
    counts = np.bincount(y, minlength=num_classes)
    present = int(np.count_nonzero(counts))
    return {c: (float(y.size) / (present * counts[c]) if counts[c] else 1.0)
            for c in range(num_classes)}


def target_label(target: str, pfirrmann=None, grade_cls: str | None = None) -> int:
    """Class id (index into ``TARGET_CLASSES[target]``) of one disc from its labels.

    ``grade11`` uses ``grade_cls`` (an 11-class name such as ``"4M"``); ``pfirrmann5`` and
    ``binary`` use ``pfirrmann`` (1-5), falling back to the grade of ``grade_cls`` when
    ``pfirrmann`` is missing. Missing means ``None``, ``""`` or NaN.

    Raises:
        ValueError: unknown target, or the label the target needs is missing or invalid
            (the message names the field and the value).
    """
    classes = target_classes(target)

    def missing(v) -> bool:
        return v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""

    if target == "grade11":
        if missing(grade_cls):
            raise ValueError(f"target {target!r} needs field grade_class, which is missing")
        name = str(grade_cls).strip()
        if name not in labels.GRADE_CLASS_ID:
            raise ValueError(f"grade_class {name!r} is not one of {labels.GRADE_CLASSES}")
        return classes.index(name)
    if missing(pfirrmann):
        if missing(grade_cls):
            raise ValueError(f"target {target!r} needs field pfirrmann (or grade_class), "
                             "which is missing")
        grade = labels.pfirrmann_of(str(grade_cls).strip())
    else:
        try:
            grade = float(pfirrmann)
        except (TypeError, ValueError):
            raise ValueError(f"pfirrmann {pfirrmann!r} is not a number 1..5") from None
        if grade not in labels.PFIRRMANN_GRADES:
            raise ValueError(f"pfirrmann {pfirrmann!r} is not one of {labels.PFIRRMANN_GRADES}")
        grade = int(grade)
    if target == "pfirrmann5":
        return labels.PFIRRMANN_GRADES.index(grade)
    return labels.binary_of(grade)
