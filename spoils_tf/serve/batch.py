"""Many inputs, one model load: a manifest CSV -> one report folder per row and a summary.

The manifest (UTF-8 CSV with a header; a byte-order mark is ignored), one row per input:

* ``path`` (required): the input (anything ``spoils predict --input`` takes); a relative path
  is relative to the manifest's folder.
* ``pixel_spacing_row_mm``, ``pixel_spacing_col_mm`` (optional, both or neither): the pixel
  spacing in mm for a file without one (a picture); it overrides a header's.
* ``odi``, ``nrs`` (optional, both or neither): the scores for a recommendation.
* ``id`` (optional): the name of the row's report folder under ``--out``; empty or absent:
  the input's file stem (:func:`spoils_tf.serve.inputs.file_stem`), made unique with
  ``_2``, ``_3``, ... Folder names are often patient names: give ``id`` to avoid carrying
  one into the output.

:func:`read_manifest` checks every row before any work; :func:`run_batch` loads the bundle
once and writes, under ``out_dir``: one report folder per row (``run.run_predict``,
each all or nothing), ``summary.csv`` (:data:`SUMMARY_COLUMNS`, one row per disc per input that
was reported) and ``failed.csv`` (:data:`FAILED_COLUMNS`, one row per input that failed; a
header only when none did). Rows are numbered from 1, the header not counted.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Any, Optional, Sequence

from spoils_tf import errors, fileio
from spoils_tf.data.images import check_pixel_spacing
from spoils_tf.serve.inputs import file_stem

PATH_COLUMN = "path"
SPACING_COLUMNS: tuple[str, str] = ("pixel_spacing_row_mm", "pixel_spacing_col_mm")
SCORE_COLUMNS: tuple[str, str] = ("odi", "nrs")
ID_COLUMN = "id"
MANIFEST_COLUMNS: tuple[str, ...] = (PATH_COLUMN, *SPACING_COLUMNS, *SCORE_COLUMNS, ID_COLUMN)
SUMMARY_FILE = "summary.csv"
FAILED_FILE = "failed.csv"
SUMMARY_COLUMNS: tuple[str, ...] = ("id", "status", "level", "predicted_class",
                                    "probability", "recommendation", "rule_id",
                                    "recommendation_note")
FAILED_COLUMNS: tuple[str, ...] = ("row", "path", "reason")


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One checked manifest row.

    Attributes:
        row: its number, from 1 (the header not counted).
        path: the input, absolute (a relative one resolved against the manifest's folder).
        pixel_spacing_mm: (row_mm, col_mm) or None (not given).
        odi, nrs: the checked scores, or None (not given).
        id: its report folder's name under the output folder.
    """
    row: int
    path: pathlib.Path
    pixel_spacing_mm: Optional[tuple[float, float]]
    odi: Optional[float]
    nrs: Optional[int]
    id: str


@dataclasses.dataclass
class BatchResult:
    """What :func:`run_batch` did: ``reports`` id -> report dict of every row written,
    ``failed`` one ``{"row", "path", "reason"}`` per row that failed, and the paths of
    ``summary.csv`` and ``failed.csv``."""
    reports: dict[str, dict[str, Any]]
    failed: list[dict[str, Any]]
    summary_path: pathlib.Path
    failed_path: pathlib.Path


def _check_id(manifest: pathlib.Path, row: int, value: str) -> str:
    bad = (not value or value in (".", "..") or value.startswith(".") or "/" in value
           or "\\" in value or "\0" in value or value in (SUMMARY_FILE, FAILED_FILE))
    if bad:
        raise errors.SpoilsError(manifest, f"row {row}: {ID_COLUMN}",
                                 f"{value!r} is not usable as a folder name; expected a name "
                                 "without '/', not starting with '.', and not "
                                 f"{SUMMARY_FILE} or {FAILED_FILE}")
    return value


def read_manifest(path) -> list[ManifestRow]:
    """The checked rows of a manifest (module docstring), before any input is read.

    The input files are not opened here: a missing or unreadable input fails its row in
    :func:`run_batch`, not the whole manifest.

    Raises:
        FileNotFoundError: no manifest file.
        SpoilsError: naming the manifest, the row and the column: not a UTF-8 CSV; no ``path``
            column; an unknown column; no rows; an empty ``path``; a pixel spacing or score
            given half, not a number, or out of range (``images.check_pixel_spacing``,
            ``predictor.check_scores``); an ``id`` that is not a folder name or is repeated.
    """
    from spoils_tf.serve.predictor import check_scores
    manifest = pathlib.Path(path)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest not found")
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            errors.require_columns(manifest, reader.fieldnames, (PATH_COLUMN,))
            unknown = [c for c in reader.fieldnames if c not in MANIFEST_COLUMNS]
            if unknown:
                raise errors.SpoilsError(manifest, ", ".join(unknown),
                                         f"unknown column(s) {unknown}; expected some of "
                                         f"{list(MANIFEST_COLUMNS)}")
            raw = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise errors.wrap(manifest, "a UTF-8 CSV table", e) from e
    if not raw:
        raise errors.SpoilsError(manifest, None, "holds no rows; expected one row per input")
    rows: list[ManifestRow] = []
    for n, cells in enumerate(raw, start=1):
        cell = {k: (cells.get(k) or "").strip() for k in MANIFEST_COLUMNS}
        if not cell[PATH_COLUMN]:
            raise errors.SpoilsError(manifest, f"row {n}: {PATH_COLUMN}",
                                     "empty; expected the input file or folder")
        spacing = None
        given = [cell[c] for c in SPACING_COLUMNS]
        if any(given):
            missing = [c for c, v in zip(SPACING_COLUMNS, given) if not v]
            if missing:
                raise errors.SpoilsError(manifest, f"row {n}: {missing[0]}",
                                         "empty; give both pixel spacing columns or neither")
            spacing = check_pixel_spacing(given, manifest, f"row {n}: {', '.join(SPACING_COLUMNS)}")
        odi, nrs = cell["odi"] or None, cell["nrs"] or None
        try:
            odi, nrs = check_scores(odi, nrs)
        except ValueError as e:     # "odi: ..." / "nrs: ..."
            column, _, reason = str(e).partition(": ")
            raise errors.SpoilsError(manifest, f"row {n}: {column}", reason) from None
        source = pathlib.Path(cell[PATH_COLUMN])
        if not source.is_absolute():
            source = manifest.parent / source
        rows.append(ManifestRow(row=n, path=source, pixel_spacing_mm=spacing, odi=odi,
                                nrs=nrs, id=_check_id(manifest, n, cell[ID_COLUMN])
                                if cell[ID_COLUMN] else ""))
    return _with_ids(manifest, rows)


def _with_ids(manifest: pathlib.Path, rows: list[ManifestRow]) -> list[ManifestRow]:
    """Rows with an empty ``id`` get their input's file stem, made unique with ``_2``, ...;
    a repeated given ``id`` is refused (naming both rows)."""
    given: dict[str, int] = {}
    for r in rows:
        if r.id:
            if r.id in given:
                raise errors.SpoilsError(manifest, f"row {r.row}: {ID_COLUMN}",
                                         f"{r.id!r} is also the id of row {given[r.id]}; "
                                         "expected one report folder per row")
            given[r.id] = r.row
    taken = set(given)
    out = []
    for r in rows:
        if not r.id:
            stem = file_stem(r.path) or "input"
            name, k = stem, 2
            while name in taken or name in (SUMMARY_FILE, FAILED_FILE) or name.startswith("."):
                name, k = f"{stem}_{k}", k + 1
            r = dataclasses.replace(r, id=name)
        taken.add(r.id)
        out.append(r)
    return out


def summary_rows(row_id: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The :data:`SUMMARY_COLUMNS` rows of one report: one per disc level in it, or a single
    row without a level when it has none (so no input is left out of the summary)."""
    rec = report.get("recommendation") or {}
    common = {"id": row_id, "status": report.get("status"),
              "recommendation": rec.get("recommendation", ""),
              "rule_id": rec.get("rule_id", ""),
              "recommendation_note": report.get("recommendation_note") or ""}
    discs = report.get("discs") or []
    if not discs:
        return [{**common, "level": "", "predicted_class": "", "probability": ""}]
    return [{**common, "level": d["level"], "predicted_class": d.get("predicted_class") or "",
             "probability": ("" if d.get("predicted_probability") is None
                             else round(float(d["predicted_probability"]), 4))}
            for d in discs]


def run_batch(manifest_path, models_dir, out_dir, *, slices: int = 1,
              precision: str = "float32", progress: bool = True) -> BatchResult:
    """Reads and checks the manifest and ``out_dir``, loads the bundle once and reports on
    every row; a row that fails (its input missing or refused, a report folder in the way) is
    recorded in ``failed.csv`` with its reason and the others go on.

    Args:
        manifest_path: the manifest CSV (module docstring).
        models_dir: the bundle (None: the shipped one).
        out_dir: created if needed; gets ``<id>/`` per row, ``summary.csv`` and ``failed.csv``
            (a previous report folder or summary of the same name is replaced).
        slices, precision: as for ``spoils predict``, for every row.
        progress: show a tqdm progress bar (on stderr).

    Raises (before any input is read or model loaded, nothing written):
        FileNotFoundError, SpoilsError: a bad manifest (:func:`read_manifest`), or ``out_dir``
            not a writable folder.
        FileNotFoundError, ValueError (incl. ``bundle.BundleError``): the bundle does not load.
    """
    from tqdm.auto import tqdm

    from spoils_tf import weights
    from spoils_tf.serve import predictor as pr
    from spoils_tf.serve.run import run_predict
    rows = read_manifest(manifest_path)
    out = fileio.check_writable_dir(out_dir, field="--out")
    pred = pr.Predictor(models_dir if models_dir is not None else weights.DEFAULT_BUNDLE,
                        precision=precision)
    reports: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    for r in tqdm(rows, desc="predict", unit="input", disable=not progress):
        try:
            reports[r.id] = run_predict(r.path, None, out / r.id, odi=r.odi, nrs=r.nrs,
                                        pixel_spacing=r.pixel_spacing_mm, slices=slices,
                                        precision=precision, predictor=pred)
        except (OSError, ValueError) as e:      # FileNotFoundError is an OSError
            failed.append({"row": r.row, "path": str(r.path), "reason": str(e)})
    return BatchResult(reports, failed, *write_batch_tables(out, reports, failed))


def write_batch_tables(out: pathlib.Path, reports: dict[str, dict[str, Any]],
                       failed: Sequence[dict[str, Any]]) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``summary.csv`` and ``failed.csv`` under ``out`` atomically (a header only when
    empty); returns their paths."""
    import pandas as pd
    out.mkdir(parents=True, exist_ok=True)
    summary = [s for rid, rep in reports.items() for s in summary_rows(rid, rep)]
    summary_path = fileio.write_csv(out / SUMMARY_FILE,
                                    pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)))
    failed_path = fileio.write_csv(out / FAILED_FILE,
                                   pd.DataFrame(list(failed), columns=list(FAILED_COLUMNS)))
    return summary_path, failed_path
