"""DeepLabV3+ (Chen et al., ECCV 2018) with a ResNet50 encoder, as used by the SPOILS paper.

Architecture (paper Figure 3; Chen et al. 2018, Sec. 3)::

    image float32 [B, H, W, 3] (normalised, spoils_tf.data.seg_pipeline.normalize_images)
      -> encoder: ResNet50 (keras.applications) made atrous so that its last feature map has
         stride ``output_stride`` (16: conv5 uses dilation 2 instead of stride 2, the
         DeepLabV3 recipe, so ImageNet weights still apply); low-level features = conv2 block
         output (stride 4, 256 channels)
      -> ASPP on the stride-16 map: 1x1 conv | 3x3 atrous convs at ``atrous_rates`` (6, 12, 18)
         | image pooling (global average -> 1x1 conv -> bilinear upsampling), each
         conv-BN-ReLU with ``aspp_filters`` channels; concatenated -> 1x1 conv -> dropout
      -> decoder: bilinear x(output_stride/4) upsampling, concatenated with the 1x1-projected
         low-level features (``low_level_filters``), two 3x3 convs (``decoder_filters``)
      -> 1x1 conv to ``num_classes`` logits -> bilinear x4 upsampling -> softmax (float32 even
         under a mixed-precision policy).

Parameter count (ResNet50, output stride 16, rates 6/12/18, 256/48/256 filters, 14 classes):
40,434,254 (23,587,712 of them the ResNet50 body; the three 3x3 atrous convs on 2048 channels
are another 14.2 M). Parameters do not depend on the input size, so tests build it at 64x64.

``encoder="mini"`` swaps in a small residual encoder (``encoder_filters`` per stage, basic
blocks, same stride-4 / stride-``output_stride`` taps) for tests and CPU-budget runs; it has
no pretrained weights.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Optional, Sequence

import keras
from keras import layers

from spoils_tf import labels
from spoils_tf.models import SegmentationModel

ENCODERS: tuple[str, ...] = ("resnet50", "mini")
_R50_STAGES: tuple[tuple[str, int], ...] = (("conv4", 6), ("conv5", 3))  # stages that may go atrous


# === Layers ===
def _conv_bn_relu(x, filters: int, kernel_size: int, *, dilation: int = 1, strides: int = 1,
                  name: str):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                      dilation_rate=dilation, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _basic_block(x, filters: int, *, strides: int, dilation: int, name: str):
    """Two 3x3 conv-BN (ResNet-18 style) with a projection shortcut when the shape changes."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                 name=f"{name}_short_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_short_bn")(shortcut)
    y = _conv_bn_relu(x, filters, 3, strides=strides, dilation=1 if strides > 1 else dilation,
                      name=f"{name}_1")
    y = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, use_bias=False,
                      name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_2_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def mini_encoder(input_shape: Sequence[int], filters: Sequence[int],
                 output_stride: int) -> keras.Model:
    """Small residual encoder: ``image [B, H, W, 3] -> (low [B, H/4, W/4, filters[0]],
    high [B, H/os, W/os, filters[-1]])``.

    A stride-2 3x3 stem, then one basic block per entry of ``filters``, each halving the
    resolution until the stride reaches ``output_stride``; later blocks keep the resolution and
    double the dilation instead (as the atrous ResNet does).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv_bn_relu(inputs, filters[0], 3, strides=2, name="stem")
    stride, dilation, low = 2, 1, None
    for i, f in enumerate(filters):
        if stride < output_stride:
            x = _basic_block(x, f, strides=2, dilation=1, name=f"stage{i + 1}")
            stride *= 2
        else:
            dilation *= 2
            x = _basic_block(x, f, strides=1, dilation=dilation, name=f"stage{i + 1}")
        if stride == 4 and low is None:
            low = x
    return keras.Model(inputs, [low, x], name="mini_encoder")


def atrous_resnet50(input_shape: Sequence[int], weights: Optional[str],
                    output_stride: int) -> keras.Model:
    """``keras.applications.ResNet50`` returning ``(conv2_block3_out, last stage output)``.

    ``output_stride`` 32 is the plain network; 16 (or 8) replaces the stride-2 of conv5 (and
    conv4) by stride 1 and gives that stage's 3x3 convs dilation 2 (4), exactly the weights
    and shapes of the original, so ``weights`` ("imagenet" or a local ``.h5`` path) load as
    usual.

    Raises:
      ValueError: ``output_stride`` not in (8, 16, 32), or ``weights`` neither None,
        "imagenet" nor an existing file.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32 for resnet50, got {output_stride}")
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise ValueError(f"encoder_weights: {weights!r} is neither None, 'imagenet' nor an "
                         "existing .h5/.weights.h5 file")
    base = keras.applications.ResNet50(include_top=False, weights=weights,
                                       input_shape=tuple(input_shape))
    n_atrous = {32: 0, 16: 1, 8: 2}[output_stride]
    if n_atrous:
        config = copy.deepcopy(base.get_config())
        atrous = _R50_STAGES[len(_R50_STAGES) - n_atrous:]
        for k, (stage, _) in enumerate(atrous):
            rate = 2 ** (k + 1)
            for layer in config["layers"]:
                name = layer["config"]["name"]
                if name in (f"{stage}_block1_0_conv", f"{stage}_block1_1_conv"):
                    layer["config"]["strides"] = (1, 1)
                elif name.startswith(f"{stage}_block") and name.endswith("_2_conv"):
                    layer["config"]["dilation_rate"] = (rate, rate)
                layer.pop("build_config", None)
        atrous_model = keras.Model.from_config(config)
        atrous_model.set_weights(base.get_weights())
        base = atrous_model
    low = base.get_layer("conv2_block3_out").output
    return keras.Model(base.input, [low, base.output], name="resnet50_encoder")


# === Functional Model ===
@keras.saving.register_keras_serializable(package="spoils_tf")
class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ semantic segmentation model.

    Args:
      num_classes: number of output classes (default ``labels.NUM_SEG_CLASSES``).
      input_shape: ``(H, W, 3)`` (``(H, W, 1)`` also for the mini encoder); H and W must be
        multiples of 32 for resnet50 (of
        ``output_stride`` and 4 for mini).
      encoder: ``"resnet50"`` (keras.applications) or ``"mini"``.
      encoder_weights: None, ``"imagenet"`` or a local ``.h5`` / ``.weights.h5`` path (resnet50
        only). Used only when building; ``get_config`` stores None because a saved model
        carries its trained weights.
      encoder_filters: channels per stage of the mini encoder.
      output_stride: input / ASPP feature-map resolution (16 as in the paper's DeepLabV3+).
      atrous_rates: dilation rates of the ASPP 3x3 branches.
      aspp_filters, low_level_filters, decoder_filters: channel counts.
      dropout: dropout rate after the ASPP projection.

    Call: ``float32 [B, H, W, 3] -> float32 [B, H, W, num_classes]`` softmax probabilities.

    Raises:
      ValueError: unknown encoder, or an input size not divisible by the total stride.
    """

    def __init__(self, *, num_classes: int = labels.NUM_SEG_CLASSES,
                 input_shape: Sequence[int] = (512, 512, 3), encoder: str = "resnet50",
                 encoder_weights: Optional[str] = None,
                 encoder_filters: Sequence[int] = (16, 32, 64, 128), output_stride: int = 16,
                 atrous_rates: Sequence[int] = (6, 12, 18), aspp_filters: int = 256,
                 low_level_filters: int = 48, decoder_filters: int = 256,
                 dropout: float = 0.1, **kwargs: Any):
        input_shape = tuple(int(s) for s in input_shape)
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        channels = (3,) if encoder == "resnet50" else (1, 3)
        if len(input_shape) != 3 or input_shape[-1] not in channels:
            raise ValueError(f"input_shape must be (H, W, C) with C in {channels} for encoder "
                             f"{encoder!r}, got {input_shape}")
        total_stride = max(32 if encoder == "resnet50" else output_stride, 4)
        if input_shape[0] % total_stride or input_shape[1] % total_stride:
            raise ValueError(f"input_shape {input_shape[:2]} must be divisible by "
                             f"{total_stride} for encoder {encoder!r}")

        # === Layers ===
        if encoder == "resnet50":
            enc = atrous_resnet50(input_shape, encoder_weights, output_stride)
        else:
            if encoder_weights is not None:
                raise ValueError("encoder_weights: the mini encoder has no pretrained weights")
            enc = mini_encoder(input_shape, encoder_filters, output_stride)

        # === Functional Model ===
        inputs = keras.Input(shape=input_shape, name="image")
        low, high = enc(inputs)
        h, w = int(high.shape[1]), int(high.shape[2])
        branches = [_conv_bn_relu(high, aspp_filters, 1, name="aspp_1x1")]
        for rate in atrous_rates:
            branches.append(_conv_bn_relu(high, aspp_filters, 3, dilation=int(rate),
                                          name=f"aspp_rate{int(rate)}"))
        pool = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(high)
        pool = _conv_bn_relu(pool, aspp_filters, 1, name="aspp_pool")
        pool = layers.UpSampling2D(size=(h, w), interpolation="bilinear",
                                   name="aspp_pool_upsample")(pool)
        branches.append(pool)
        x = layers.Concatenate(name="aspp_concat")(branches)
        x = _conv_bn_relu(x, aspp_filters, 1, name="aspp_project")
        x = layers.Dropout(dropout, name="aspp_dropout")(x)

        up = int(low.shape[1]) // h
        x = layers.UpSampling2D(size=(up, up), interpolation="bilinear",
                                name="decoder_upsample")(x)
        low_proj = _conv_bn_relu(low, low_level_filters, 1, name="decoder_low_level")
        x = layers.Concatenate(name="decoder_concat")([x, low_proj])
        x = _conv_bn_relu(x, decoder_filters, 3, name="decoder_conv1")
        x = _conv_bn_relu(x, decoder_filters, 3, name="decoder_conv2")
        x = layers.Conv2D(num_classes, 1, name="logits")(x)
        scale = input_shape[0] // int(x.shape[1])
        x = layers.UpSampling2D(size=(scale, scale), interpolation="bilinear",
                                name="logits_upsample")(x)
        outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.input_shape_ = input_shape
        self.encoder = encoder
        self.encoder_weights = encoder_weights
        self.encoder_filters = tuple(encoder_filters)
        self.output_stride = output_stride
        self.atrous_rates = tuple(atrous_rates)
        self.aspp_filters = aspp_filters
        self.low_level_filters = low_level_filters
        self.decoder_filters = decoder_filters
        self.dropout = dropout

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
                "num_classes": self.num_classes,
                "input_shape": self.input_shape_,
                "encoder": self.encoder,
                # The weights travel in the .keras file; rebuilding must not download them.
                "encoder_weights": None,
                "encoder_filters": self.encoder_filters,
                "output_stride": self.output_stride,
                "atrous_rates": self.atrous_rates,
                "aspp_filters": self.aspp_filters,
                "low_level_filters": self.low_level_filters,
                "decoder_filters": self.decoder_filters,
                "dropout": self.dropout,
        })
        return config
