"""The on-disk layout of a spoils-tf dataset directory: the one contract between stages.

Both ``spoils convert-spider`` and ``spoils synth`` write, and every later stage reads::

    DIR/
      labelme/<patient>/<patient>_slice<k>.json   LabelMe 5.x json, imagePath = sibling PNG
      labelme/<patient>/<patient>_slice<k>.png    uint8 greyscale image
      patients.csv    one row per patient   (PATIENT_COLUMNS, then source-specific extras)
      discs.csv       one row per (patient, slice, level) where a disc is in the mask
                      (DISC_COLUMNS, then source-specific extras)
      issues.csv      one row per slice/file that was skipped or is ambiguous (ISSUE_COLUMNS)
      folds.json      written by ``spoils folds`` (see spoils_tf.data.folds)

Synthetic cohorts add ``geometry_truth.csv`` (ground-truth geometry per disc, in mm) and
``clinical.csv`` (age, sex, ODI, NRS per patient).

A user's own LabelMe annotations need only ``labelme/<patient>/*.json`` plus a
``patients.csv`` giving pixel spacing; the grade columns of ``discs.csv`` may be empty.
:func:`read_patients_csv` reads ``patients.csv`` and checks every row.
"""

from __future__ import annotations

import csv
import math
import pathlib
import re
from typing import Any

from spoils_tf import errors

LABELME_DIR = "labelme"
PATIENTS_CSV = "patients.csv"
DISCS_CSV = "discs.csv"
ISSUES_CSV = "issues.csv"
FOLDS_JSON = "folds.json"
GEOMETRY_TRUTH_CSV = "geometry_truth.csv"
CLINICAL_CSV = "clinical.csv"

# patient: str id (never a name from a DICOM header); pixel spacing in mm along image rows
# (vertical, superior-inferior) and columns (horizontal, anterior-posterior); slice_spacing_mm
# is the distance between neighbouring sagittal slices (used for disc volume).
PATIENT_COLUMNS = ("patient", "sex", "pixel_spacing_row_mm", "pixel_spacing_col_mm",
                   "slice_thickness_mm", "slice_spacing_mm")
# the columns every reader of patients.csv needs (read_patients_csv refuses a file without one)
PATIENT_REQUIRED_COLUMNS = ("patient", "pixel_spacing_row_mm", "pixel_spacing_col_mm")
# level: disc name from labels.DISC_NAMES; ivd_label: n-th disc from the bottom (1 = L5-S1);
# pfirrmann 1-5 (empty if unknown); severity L/M/H; grade_class from labels.GRADE_CLASSES.
DISC_COLUMNS = ("patient", "slice", "level", "ivd_label", "pfirrmann", "severity", "grade_class")
ISSUE_COLUMNS = ("patient", "slice", "file", "reason")

_STEM_RE = re.compile(r"^(?P<patient>.+)_slice(?P<slice>\d+)$")


def slice_stem(patient: str, slice_index: int) -> str:
    """File stem of one slice: ``<patient>_slice<k>``."""
    return f"{patient}_slice{int(slice_index)}"


def labelme_json_path(root: str | pathlib.Path, patient: str, slice_index: int) -> pathlib.Path:
    """``root/labelme/<patient>/<patient>_slice<k>.json``."""
    return pathlib.Path(root) / LABELME_DIR / str(patient) / f"{slice_stem(patient, slice_index)}.json"


def parse_stem(stem: str) -> tuple[str, int]:
    """Inverse of ``slice_stem``: ``"107_slice53" -> ("107", 53)``.

    Raises:
      ValueError: if the stem does not end in ``_slice<digits>``.
    """
    m = _STEM_RE.match(stem)
    if not m:
        raise ValueError(f"file stem {stem!r} is not of the form <patient>_slice<k>")
    return m.group("patient"), int(m.group("slice"))


def list_labelme_jsons(root: str | pathlib.Path) -> list[pathlib.Path]:
    """All ``*.json`` under ``root/labelme`` in a stable (sorted) order."""
    base = pathlib.Path(root) / LABELME_DIR
    if not base.is_dir():
        raise FileNotFoundError(f"{root}: no {LABELME_DIR}/ directory (not a spoils dataset dir)")
    return sorted(base.rglob("*.json"))


def read_patients_csv(path: str | pathlib.Path) -> dict[str, dict[str, Any]]:
    """``patients.csv`` -> ``{patient: {"spacing": (row_mm, col_mm) | None,
    "slice_spacing_mm": float}}``.

    Empty spacing cells mean "not known here" (``spacing`` None: the LabelMe file's own is
    used); an empty or absent ``slice_spacing_mm`` is NaN. A byte-order mark (Excel) is ignored.

    Raises:
      FileNotFoundError: no such file.
      SpoilsError: naming the file and the column or line: not readable as UTF-8 CSV; a
        column of ``PATIENT_REQUIRED_COLUMNS`` missing (all missing ones named); an empty
        patient id or one listed twice; a pixel spacing ``images.check_pixel_spacing``
        refuses (the 469 vs 0.469 mm mistake); a ``slice_spacing_mm`` that is not a positive
        number.
    """
    from spoils_tf.data import images
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    out: dict[str, dict[str, Any]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            errors.require_columns(path, reader.fieldnames, PATIENT_REQUIRED_COLUMNS)
            rows = [(reader.line_num, row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise errors.wrap(path, "a UTF-8 CSV table", e) from e
    for line, row in rows:
        patient = (row.get("patient") or "").strip()
        if not patient:
            raise errors.SpoilsError(path, f"line {line}: patient", "empty; expected a patient id")
        if patient in out:
            raise errors.SpoilsError(path, f"line {line}: patient",
                                     f"{patient!r} is listed twice; expected one row per patient")
        cells = [(row.get(c) or "").strip() for c in PATIENT_REQUIRED_COLUMNS[1:]]
        spacing = None
        if any(cells):
            spacing = images.check_pixel_spacing(
                    cells, path, f"line {line}: {', '.join(PATIENT_REQUIRED_COLUMNS[1:])}")
        ss_text = (row.get("slice_spacing_mm") or "").strip()
        ss = float("nan")
        if ss_text:
            try:
                ss = float(ss_text)
            except ValueError:
                ss = float("nan")
            if not (math.isfinite(ss) and ss > 0):
                raise errors.SpoilsError(path, f"line {line}: slice_spacing_mm",
                                         f"{ss_text!r}; expected a positive number (mm) or an "
                                         "empty cell")
        out[patient] = {"spacing": spacing, "slice_spacing_mm": ss}
    return out
