"""Radiomics per disc (pyradiomics, IBSI): one row per (patient, level), slices aggregated.

Named experiments (``--config=configs/radiomics.py:<name>``):

* ``default``: shape 2D, first order, GLCM, GLRLM, GLSZM, GLDM, NGTDM on the original image,
  LoG (sigma 1, 2, 3 mm) and the four in-plane coif1 wavelet images; intensities divided by
  the canal's (CSF) median and scaled to 100; bin width 5; the 3 slices nearest each disc's
  middle slice, averaged.
* ``smoke``: the original image only, first order + GLCM + shape, 1 slice per disc, the
  first 2 patients.

Override any field with ``--config.x=y``, e.g. ``--config.data.data_dir=/data/spider``,
``--config.settings.bin_width=3``.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The complete config of experiment ``arg`` (``"default" | "smoke"``).

    Raises:
        ValueError: for any other name.
    """
    from spoils_tf.radiomics import extract

    name = (arg or "default").strip()
    c = base.base_config(f"radiomics:{name}")
    c.data = ml_collections.ConfigDict()
    c.data.data_dir = base.DEFAULT_SPIDER_DATASET_DIR   # a spoils dataset dir (labelme/, ...)
    c.data.max_patients = 0                             # 0 = all
    c.settings = ml_collections.ConfigDict(extract.RadiomicsSettings().to_dict())
    if name == "default":
        pass
    elif name == "smoke":
        c.data.max_patients = 2
        c.settings.feature_classes = ("shape2D", "firstorder", "glcm")
        c.settings.log_sigmas_mm = ()
        c.settings.wavelet = False
        c.settings.n_middle_slices = 1
    else:
        raise ValueError(f"unknown radiomics config {name!r}; expected default | smoke")
    return c
