"""The feature table: every disc of every slice measured in mm, with labels and folds.

``spoils features --data DIR --out features.parquet`` reads every LabelMe file of a dataset
directory (``spoils_tf.data.layout``), measures each disc level present
(``spoils_tf.geometry.measure``) and writes one row per (patient, slice, level) to
``features.parquet`` and ``features.csv`` next to it, with:

- ``patient, slice, level, file``, the label columns of ``discs.csv`` where known
  (``ivd_label, pfirrmann, severity, grade_class``), ``fold`` from ``DIR/folds.json`` when it
  exists (so a classifier never mixes a patient's slices across folds; empty otherwise);
- every column of ``measure.MEASUREMENT_COLUMNS``;
- ``disc_volume_mm3`` = sum over the patient's slices of disc_area_mm2 x slice_spacing_mm
  (``patients.csv``) and ``disc_volume_n_slices``, repeated on each row of that (patient,
  level); also written per (patient, level) to ``<stem>_disc_volumes.{parquet,csv}``;
- ``reason``: ``;``-joined codes for every NaN or caveat (empty when all is well). Volume
  codes start with ``volume_``: ``volume_slice_spacing_missing`` and ``volume_area_missing``
  (NaN volume), ``volume_touches_edge_slice`` (the disc is on the first or last slice of
  the series, so the volume is a lower bound) and ``volume_slice_gap`` (slices missing in
  between).

Files that cannot be read, have no pixel spacing or no disc are listed in
``<stem>_issues.csv`` (file + reason) and the batch goes on. All files are written
atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import math
import pathlib
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from spoils_tf import fileio
from spoils_tf.data import layout
from spoils_tf.data.folds import load_folds
from spoils_tf.errors import SpoilsError
from spoils_tf.geometry import measure

LABEL_COLUMNS: tuple[str, ...] = ("ivd_label", "pfirrmann", "severity", "grade_class")
KEY_COLUMNS: tuple[str, ...] = ("patient", "slice", "level", "file")
VOLUME_COLUMNS: tuple[str, ...] = ("patient", "level", "disc_volume_mm3", "disc_volume_n_slices",
                                   "slice_spacing_mm", "first_slice", "last_slice", "reason")
ISSUE_COLUMNS: tuple[str, ...] = ("file", "reason")


# === Dataset tables ===
def read_patient_table(data_dir: str | pathlib.Path) -> dict[str, dict[str, Any]]:
    """``DIR/patients.csv`` -> {patient: {"spacing": (row_mm, col_mm) | None,
    "slice_spacing_mm": float (NaN if unknown)}} (``layout.read_patients_csv``); {} when the
    file is absent.

    Raises:
        SpoilsError: a required column missing, a bad row (``layout.read_patients_csv``).
    """
    path = pathlib.Path(data_dir) / layout.PATIENTS_CSV
    if not path.is_file():
        return {}
    return layout.read_patients_csv(path)


def read_disc_labels(data_dir: str | pathlib.Path) -> dict[tuple[str, int, str], dict[str, Any]]:
    """``discs.csv`` -> {(patient, slice, level): {label column: value}}; {} when absent."""
    path = pathlib.Path(data_dir) / layout.DISCS_CSV
    if not path.is_file():
        return {}
    df = pd.read_csv(path, dtype={"patient": str, "level": str, "severity": str,
                                  "grade_class": str})
    out = {}
    for r in df.to_dict("records"):
        out[(str(r["patient"]), int(r["slice"]), str(r["level"]))] = {
            c: (None if pd.isna(r.get(c)) else r.get(c)) for c in LABEL_COLUMNS}
    return out


def spacing_for(record: Any, patients: dict[str, dict[str, Any]]) -> Optional[tuple[float, float]]:
    """Pixel spacing of a record: ``patients.csv`` first, then the LabelMe file's own."""
    entry = patients.get(str(record.patient))
    if entry and entry["spacing"] is not None:
        return entry["spacing"]
    return tuple(record.pixel_spacing_mm) if record.pixel_spacing_mm is not None else None


def progress_iter(items: list, enabled: bool, desc: str) -> Iterable:
    """``tqdm`` over ``items`` when enabled (to stderr), else the items themselves."""
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="file", file=sys.stderr)


# === Volumes ===
def disc_volumes(table: pd.DataFrame, patients: dict[str, dict[str, Any]],
                 slices_of: dict[str, list[int]]) -> pd.DataFrame:
    """Per (patient, level) disc volume (mm^3) = sum of disc_area_mm2 x slice spacing.

    Args:
        table: per-slice rows with ``patient, slice, level, disc_area_mm2``.
        patients: ``read_patient_table`` output (for ``slice_spacing_mm``).
        slices_of: patient -> all slice indices of the series that were read (to tell whether
            a disc reaches the first/last slice and whether slices are missing in between).

    Returns:
        DataFrame with ``VOLUME_COLUMNS``; NaN volume + reason where it cannot be computed.
    """
    rows = []
    if table.empty:
        return pd.DataFrame(columns=list(VOLUME_COLUMNS))
    for (patient, level), g in table.groupby(["patient", "level"], sort=True):
        reasons = []
        ss = patients.get(str(patient), {}).get("slice_spacing_mm", float("nan"))
        sl = sorted(int(s) for s in g["slice"])
        areas = g["disc_area_mm2"].to_numpy(np.float64)
        vol = float("nan")
        if not (isinstance(ss, float) and math.isfinite(ss)):
            reasons.append("volume_slice_spacing_missing")
        elif not np.all(np.isfinite(areas)):
            reasons.append("volume_area_missing")
        else:
            vol = float(areas.sum() * ss)
        series = slices_of.get(str(patient), sl)
        if series and (sl[0] == min(series) or sl[-1] == max(series)):
            reasons.append("volume_touches_edge_slice")
        present = set(series)
        expected = [k for k in range(sl[0], sl[-1] + 1) if k in present]
        if len(expected) != len(sl):
            reasons.append("volume_slice_gap")
        rows.append({"patient": patient, "level": level, "disc_volume_mm3": vol,
                     "disc_volume_n_slices": len(sl), "slice_spacing_mm": ss,
                     "first_slice": sl[0], "last_slice": sl[-1], "reason": ";".join(reasons)})
    return pd.DataFrame(rows, columns=list(VOLUME_COLUMNS))


# === Table ===
def build_feature_table(data_dir: str | pathlib.Path, *,
                        reader: Optional[Callable[[pathlib.Path], Any]] = None,
                        progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Measures every disc of a dataset directory.

    Args:
        data_dir: dataset directory (``labelme/``, ``patients.csv``, optional ``discs.csv``
            and ``folds.json``).
        reader: ``path -> record`` with ``image, mask, patient, slice, pixel_spacing_mm``
            (default ``spoils_tf.data.labelme_io.read_labelme``).
        progress: show a tqdm bar.

    Returns:
        (table, volumes, issues): the per-(patient, slice, level) table (columns
        ``KEY_COLUMNS + LABEL_COLUMNS + fold + MEASUREMENT_COLUMNS[1:] + volume``), the
        per-(patient, level) volumes (``VOLUME_COLUMNS``) and the skipped files
        (``ISSUE_COLUMNS``).

    Raises:
        FileNotFoundError: if ``data_dir`` has no ``labelme/`` directory.
    """
    data_dir = pathlib.Path(data_dir)
    if reader is None:
        from spoils_tf.data.labelme_io import read_labelme
        reader = read_labelme
    paths = layout.list_labelme_jsons(data_dir)
    patients = read_patient_table(data_dir)
    disc_labels = read_disc_labels(data_dir)
    folds = None
    folds_path = data_dir / layout.FOLDS_JSON
    if folds_path.is_file():
        folds = load_folds(folds_path)
    rows: list[dict[str, Any]] = []
    issues: list[dict[str, str]] = []
    slices_of: dict[str, list[int]] = {}
    for path in progress_iter(paths, progress, "features"):
        try:
            rec = reader(path)
        except Exception as e:  # noqa: BLE001 - report and continue
            issues.append({"file": str(path), "reason": f"unreadable: {e}"})
            continue
        slices_of.setdefault(str(rec.patient), []).append(int(rec.slice))
        spacing = spacing_for(rec, patients)
        if spacing is None:
            issues.append({"file": str(path),
                           "reason": f"no pixel spacing for patient {rec.patient!r} in "
                                     f"{layout.PATIENTS_CSV} or the LabelMe file"})
            continue
        try:
            results = measure.measure_slice(rec.mask, spacing, rec.image)
        except ValueError as e:
            issues.append({"file": str(path), "reason": str(e)})
            continue
        if not results:
            issues.append({"file": str(path), "reason": "no disc label in mask"})
            continue
        fold = None
        fold_reason = ""
        if folds is not None:
            try:
                fold = folds.fold_of(str(rec.patient))
            except KeyError:
                fold_reason = "patient_not_in_folds"
        for values in results:
            key = (str(rec.patient), int(rec.slice), values["level"])
            rows.append(feature_row(values, patient=str(rec.patient), slice_index=int(rec.slice),
                                    file=str(path.relative_to(data_dir)),
                                    disc_label=disc_labels.get(key, {}), fold=fold,
                                    fold_reason=fold_reason))
    table, volumes = assemble_feature_table(rows, patients, slices_of)
    return table, volumes, pd.DataFrame(issues, columns=list(ISSUE_COLUMNS))


def feature_row(values: Mapping[str, Any], *, patient: str, slice_index: int, file: str = "",
                disc_label: Optional[Mapping[str, Any]] = None, fold: Optional[int] = None,
                fold_reason: str = "") -> dict[str, Any]:
    """One row of the feature table from one disc's measurements (``measure.measure_slice``).

    The one place a row is made: ``build_feature_table`` (training data) and ``spoils
    predict`` (``spoils_tf.serve.predictor``, one patient) both call it, so a geometry classifier sees
    the same columns at training and prediction time.

    Args:
        values: a ``measure`` row keyed by ``MEASUREMENT_COLUMNS``.
        patient, slice_index, file: the key columns (``file`` may be empty).
        disc_label: ``LABEL_COLUMNS`` values where known (missing ones become None).
        fold: the patient's fold or None; fold_reason: a code appended to ``reason``.

    Returns:
        dict with ``KEY_COLUMNS + LABEL_COLUMNS + fold`` and every measurement column.
    """
    lab = disc_label or {}
    row: dict[str, Any] = {"patient": str(patient), "slice": int(slice_index),
                           "level": values["level"], "file": file}
    row.update({c: lab.get(c) for c in LABEL_COLUMNS})
    row["fold"] = fold
    row.update({k: v for k, v in values.items() if k != "level"})
    if fold_reason:
        row["reason"] = ";".join(x for x in (row["reason"], fold_reason) if x)
    return row


def assemble_feature_table(rows: Sequence[Mapping[str, Any]], patients: dict[str, dict[str, Any]],
                           slices_of: dict[str, list[int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``feature_row`` dicts -> (feature table, volumes), as ``build_feature_table`` returns them.

    Adds ``disc_volume_mm3`` / ``disc_volume_n_slices`` per (patient, level)
    (:func:`disc_volumes`; slice spacing from ``patients[patient]["slice_spacing_mm"]``),
    joins the volume reason codes into ``reason``, sets the dtypes and sorts by
    (patient, slice, level).

    Args:
        rows: from :func:`feature_row`.
        patients: ``read_patient_table``-style {patient: {"slice_spacing_mm": float, ...}}.
        slices_of: patient -> every slice index of the series that was read.
    """
    columns = (list(KEY_COLUMNS) + list(LABEL_COLUMNS) + ["fold"]
               + [c for c in measure.MEASUREMENT_COLUMNS if c != "level"])
    table = pd.DataFrame(list(rows), columns=columns)
    volumes = disc_volumes(table, patients, slices_of)
    if not table.empty:
        vol = volumes[["patient", "level", "disc_volume_mm3", "disc_volume_n_slices", "reason"]]
        vol = vol.rename(columns={"reason": "_volume_reason"})
        table = table.merge(vol, on=["patient", "level"], how="left")
        table["reason"] = [";".join(x for x in (a, b) if isinstance(x, str) and x)
                           for a, b in zip(table["reason"], table["_volume_reason"])]
        table = table.drop(columns="_volume_reason")
    else:
        table["disc_volume_mm3"] = pd.Series(dtype=float)
        table["disc_volume_n_slices"] = pd.Series(dtype=float)
    table["fold"] = table["fold"].astype("Int64")
    for c in ("ivd_label", "pfirrmann"):
        table[c] = pd.to_numeric(table[c], errors="coerce").astype("Int64")
    for c in ("severity", "grade_class"):
        table[c] = table[c].astype("string")
    table = table.sort_values(["patient", "slice", "level"], kind="stable").reset_index(drop=True)
    return table, volumes


def output_paths(out: str | pathlib.Path) -> list[pathlib.Path]:
    """The files :func:`write_feature_table` writes for ``out``: ``out`` (.parquet), the
    ``.csv`` next to it, ``<stem>_disc_volumes.{parquet,csv}`` and ``<stem>_issues.csv``.

    Raises:
        ValueError: if ``out`` does not end in ``.parquet``.
    """
    out = pathlib.Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"--out must end in .parquet, got {out}")
    stem = out.with_suffix("")
    return [out, out.with_suffix(".csv"), pathlib.Path(f"{stem}_disc_volumes.parquet"),
            pathlib.Path(f"{stem}_disc_volumes.csv"), pathlib.Path(f"{stem}_issues.csv")]


def check_output(out: str | pathlib.Path) -> None:
    """Checks, before any work, that the files of :func:`output_paths` can be written.

    Raises:
        SpoilsError: (the path, ``--out``) not ending in ``.parquet``; one of the files is
            an existing folder; the folder is under a file or not writable
            (``fileio.check_writable_dir``).
    """
    out = pathlib.Path(out)
    if out.suffix != ".parquet":
        raise SpoilsError(out, "--out", "expected a file name ending in .parquet (a .csv and "
                                        "the volume and issue tables are written next to it)")
    for path in output_paths(out):
        if path.is_dir():
            raise SpoilsError(path, "--out", "is a folder; expected a file to write (or "
                                             "replace)")
    fileio.check_writable_dir(out.parent, field="--out")


def write_feature_table(table: pd.DataFrame, volumes: pd.DataFrame, issues: pd.DataFrame,
                        out: str | pathlib.Path) -> list[pathlib.Path]:
    """Writes the files of :func:`output_paths` for ``out``. Returns the paths written.

    Raises:
        ValueError: if ``out`` does not end in ``.parquet``.
    """
    paths = output_paths(out)
    fileio.write_parquet(paths[0], table)
    fileio.write_csv(paths[1], table)
    fileio.write_parquet(paths[2], volumes)
    fileio.write_csv(paths[3], volumes)
    fileio.write_csv(paths[4], issues)
    return paths
