"""Writes the dummy spoils dataset directory used by spoils_labelme_dataset_builder_test.py.

2 patients x 2 slices of 32x32 LabelMe files, plus one bad file (an unknown label) that the
builder must skip, plus patients.csv. P1 records its pixel spacing in the LabelMe files;
P2's comes from patients.csv only. Deterministic: rerunning rewrites identical files.

    .venv/bin/python datasets/spoils_labelme/dummy_data/make_dummy_data.py
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from spoils_tf import labels
from spoils_tf.data import labelme_io, layout

HERE = pathlib.Path(__file__).resolve().parent
SIZE = 32


def slice_arrays(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [32, 32] image, int32 [32, 32] mask): L4 / L4-L5 / L5 stacked, canal behind."""
    mask = np.zeros((SIZE, SIZE), np.int32)
    mask[2 + shift:12 + shift, 4:18] = labels.SEG_ID["L4"]
    mask[12 + shift:16 + shift, 4:18] = labels.SEG_ID["L4-L5"]
    mask[16 + shift:26 + shift, 4:18] = labels.SEG_ID["L5"]
    mask[:, 21:26] = labels.CANAL_ID
    image = (40 + 12 * mask + 3 * np.arange(SIZE)[None, :]).astype(np.uint8)
    return image, mask


def main() -> None:
    for patient, spacing in (("P1", (0.5, 0.6)), ("P2", None)):
        for k in (0, 1):
            image, mask = slice_arrays(shift=2 * k)
            labelme_io.write_labelme(layout.labelme_json_path(HERE, patient, k), image, mask,
                                     patient=patient, slice_index=k, pixel_spacing_mm=spacing)
    # A bad file: valid image, unknown label "L7" -> skipped by the builder.
    bad = layout.labelme_json_path(HERE, "P2", 7)
    bad.write_text(json.dumps({
        "version": labelme_io.LABELME_FORMAT_VERSION, "flags": {},
        "shapes": [{"label": "L7", "points": [[1, 1], [9, 1], [9, 9]], "group_id": None,
                    "description": "", "shape_type": "polygon", "flags": {}, "mask": None}],
        "imagePath": "P2_slice0.png", "imageData": None, "imageHeight": SIZE, "imageWidth": SIZE,
    }, indent=1) + "\n")
    (HERE / layout.PATIENTS_CSV).write_text(
        ",".join(layout.PATIENT_COLUMNS) + "\n"
        "P1,F,,,4.0,4.0\n"
        "P2,M,0.7,0.8,4.0,4.0\n")


if __name__ == "__main__":
    main()
