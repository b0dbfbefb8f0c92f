"""Constants of the segmentation input pipelines, importable without TensorFlow.

The configs (``configs/base.py``) and the Keras-3 backend-agnostic path
(``spoils_tf.data.seg_arrays``, ``spoils_tf.train.keras_backend_lib``) need these values on
machines without TensorFlow (a JAX-only GPU image); ``seg_pipeline`` and ``spacing_pipeline``
re-export them, so ``seg_pipeline.DEFAULT_AUGMENT`` etc. keep working.
"""

from __future__ import annotations

# keras.applications.resnet50.preprocess_input ("caffe" mode): RGB -> BGR, minus the ImageNet
# per-channel mean, no scaling. Used for every model so ImageNet weights see what they expect.
IMAGENET_CAFFE_MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)
RESIZE_MODES: tuple[str, ...] = ("letterbox", "resize")

# Augmentation of the whole-slice pipeline (seg_pipeline.augment).
DEFAULT_AUGMENT: dict[str, float] = {
        "rotation_deg": 10.0,     # uniform in [-10, 10] degrees
        "scale": 0.1,             # isotropic zoom factor in [0.9, 1.1]
        "shift": 0.05,            # translation, fraction of the image side, each axis
        "contrast": 0.2,          # (x - mean) * U[0.8, 1.2] + mean
        "brightness": 0.1,        # + U[-0.1, 0.1] * 255
        "gamma": 0.2,             # 255 * (x / 255) ** U[0.8, 1.2]
}

# Augmentation of the fixed-spacing patch pipeline (spacing_pipeline); every entry is
# (probability, magnitude) or a range, see spacing_pipeline._intensity / _patch_transform.
DEFAULT_PATCH_AUGMENT: dict[str, float] = {
        "rotation_deg": 15.0,       # uniform in [-15, 15] degrees
        "scale_min": 0.8,           # isotropic zoom, log-uniform in [scale_min, scale_max]
        "scale_max": 1.25,
        "anisotropy": 0.1,          # extra row/col zoom ratio in [1 - a, 1 + a]
        "foreground_fraction": 0.67,  # patches centred inside the labelled spine's box
        "p_gamma": 0.3, "gamma_min": 0.7, "gamma_max": 1.5,
        "p_contrast": 0.3, "contrast": 0.25,   # (x - mean) * U[1 - c, 1 + c] + mean
        "p_gain": 0.3, "gain": 0.25,           # x * U[1 - g, 1 + g]
        "p_bias_field": 0.3, "bias_field": 0.3,  # x * exp(smooth field, SD bias_field)
        "p_blur": 0.2, "blur_sigma_max": 1.5,    # Gaussian blur, sigma U[0.5, max] px
        "p_low_res": 0.25, "low_res_max": 2.0,   # down by U[1, max] then back up (bilinear)
        "p_noise": 0.15, "noise": 0.08,          # + N(0, U[0, noise] * 255)
}
