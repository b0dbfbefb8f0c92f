"""Keras model builders: segmentation (DeepLabV3+, U-Net) and, later, disc classifiers.

Every model here is a Keras-3 functional model written as a class in the keras-hub style:
``__init__`` builds the graph and stores every argument, ``get_config()`` returns them, so a
``.keras`` file reloads with ``keras.saving.load_model`` (the classes are registered under the
``spoils_tf`` package). Sizes (input size, filters, rates, encoder width) come from configs
(``configs/seg_*.py``), never from code.

Submodules are imported lazily by :func:`build_segmentation_model` so that
``import spoils_tf.models`` stays cheap and the submodules can import :class:`SegmentationModel`
from here without an import cycle.
"""

from __future__ import annotations

import pathlib
import zipfile
from typing import Any, Mapping

import keras

from spoils_tf import errors
from spoils_tf.models import losses  # noqa: F401,E402  (registers the losses for load_model)

SEGMENTATION_MODELS: tuple[str, ...] = ("deeplabv3plus", "unet")


@keras.saving.register_keras_serializable(package="spoils_tf")
class SegmentationModel(keras.Model):
    """Base of the segmentation models: a functional model whose config is its init args.

    Subclasses build ``inputs -> softmax probabilities float32 [B, H, W, num_classes]``
    in ``__init__``, call ``super().__init__(inputs=..., outputs=..., **kwargs)`` and extend
    :meth:`get_config` with their own arguments (keras-hub ``Backbone`` pattern).
    """

    def get_config(self) -> dict[str, Any]:
        # Not the functional config of keras.Model: only what __init__ needs to rebuild.
        return {"name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SegmentationModel":
        return cls(**config)


def build_segmentation_model(model_config: Mapping[str, Any]) -> SegmentationModel:
    """Builds the segmentation model described by a ``config.model`` section.

    Args:
      model_config: mapping (``ml_collections.ConfigDict`` or dict) with ``name`` in
        ``SEGMENTATION_MODELS`` and ``kwargs``: the constructor arguments of that class.

    Raises:
      ValueError: if ``model_config["name"]`` is not one of ``SEGMENTATION_MODELS``.
    """
    name = model_config["name"]
    kwargs = dict(model_config.get("kwargs", {}))
    for key, value in list(kwargs.items()):  # ConfigDict/lists -> tuples for the config
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    if name == "deeplabv3plus":
        from spoils_tf.models.deeplabv3plus import DeepLabV3Plus
        return DeepLabV3Plus(**kwargs)
    if name == "unet":
        from spoils_tf.models.unet import UNet
        return UNet(**kwargs)
    raise ValueError(f"config.model.name: unknown segmentation model {name!r}; "
                     f"expected one of {SEGMENTATION_MODELS}")


def load_model(path, **kwargs) -> keras.Model:
    """``keras.saving.load_model`` after registering every spoils_tf model and loss class.

    The model classes are imported lazily elsewhere; a fresh process that only imports
    ``spoils_tf.models`` would otherwise fail with "Could not locate class 'UNet'".

    Raises:
      SpoilsError: no such file; a ``.keras`` file that is not a complete zip archive
        (truncated: Keras would say "file not found"); any other failure to load it (names
        the file and Keras' error).
    """
    from spoils_tf.models import classifiers, deeplabv3plus, unet  # noqa: F401  (register)
    path = pathlib.Path(path)
    if not path.is_file():
        raise errors.SpoilsError(path, None, "model file not found")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise errors.SpoilsError(path, None, "not a complete .keras file (a .keras model is a "
                                             "zip archive; this one is truncated or damaged)")
    try:
        return keras.saving.load_model(path, **kwargs)
    except Exception as e:   # Keras raises many types for a damaged archive or config
        raise errors.wrap(path, "a Keras model", e) from e


def with_input_size(model: keras.Model, size_hw) -> keras.Model:
    """The same network rebuilt for input ``(H, W)`` with ``model``'s weights (a model built
    for a fixed size, such as DeepLabV3+, applied to a slice of another size).

    Raises:
      ValueError: the size does not suit the architecture (the model's own message).
    """
    config = model.get_config()
    config["input_shape"] = (int(size_hw[0]), int(size_hw[1]), int(model.input_shape[-1]))
    rebuilt = type(model).from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt
