"""The radiomics table of a dataset: one row per disc (patient, level), slices aggregated.

``build_radiomics_table(data_dir, settings)`` reads every LabelMe file of a spoils dataset
directory (``spoils_tf.data.layout``), and for each disc level of each patient:

1. takes the ``settings.n_middle_slices`` slices nearest the disc's middle slice (the median
   index of the slices its mask is on; :func:`middle_slices`);
2. normalises each slice to the reference tissue: the median intensity of the spinal canal
   (``labels.CANAL_ID``; CSF on T2) on that slice, or the patient's median over all its
   slices when the slice has fewer than ``settings.min_reference_pixels`` canal pixels;
3. computes ``spoils_tf.radiomics.extract.disc_slice_features`` on each of those slices and
   averages every feature over the slices that succeeded.

Rows: ``patient, level, fold`` (from ``folds.json`` when present), the labels of
``discs.csv`` (``pfirrmann, severity, grade_class``; the value on the disc's middle slice),
``n_slices`` (the disc's slices), ``slices_used`` (space-joined indices that gave features),
``reference_source`` (``slice`` / ``patient`` / empty), ``reason`` (``;``-joined codes of
slices that failed and why; all features NaN when none succeeded) and the feature columns.
Unreadable files go to the issues list (file + reason); the batch never stops on bad data.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from spoils_tf import fileio, labels
from spoils_tf.radiomics import extract

KEY_COLUMNS: tuple[str, ...] = ("patient", "level")
LABEL_COLUMNS: tuple[str, ...] = ("pfirrmann", "severity", "grade_class")
META_COLUMNS: tuple[str, ...] = ("fold", "n_slices", "slices_used", "reference_source",
                                 "reason", "seconds")
SETTINGS_SUFFIX = "_settings.json"


def middle_slices(slices: Iterable[int], n: int) -> list[int]:
    """The ``n`` slice indices nearest the middle of ``slices`` (sorted ascending).

    The middle is the median index; ties in distance go to the lower index. ``n <= 0`` or
    ``n >= len(slices)`` returns all of them.
    """
    s = sorted(int(x) for x in set(slices))
    if n <= 0 or n >= len(s):
        return s
    mid = float(np.median(s))
    return sorted(sorted(s, key=lambda x: (abs(x - mid), x))[:n])


def reference_median(image: np.ndarray, mask: np.ndarray, min_pixels: int) -> float:
    """Median image intensity inside the canal (``labels.CANAL_ID``); NaN if fewer than
    ``min_pixels`` canal pixels."""
    canal = mask == labels.CANAL_ID
    if int(canal.sum()) < max(int(min_pixels), 1):
        return float("nan")
    return float(np.median(image[canal]))


@dataclasses.dataclass
class _Slice:
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float]
    reference: float


def patient_rows(patient: str, slices: dict[int, _Slice],
                 settings: extract.RadiomicsSettings,
                 disc_labels: Optional[dict] = None, fold: Optional[int] = None
                 ) -> list[dict[str, Any]]:
    """Rows of one patient: one per disc level present on any of ``slices`` (see module)."""
    disc_labels = disc_labels or {}
    refs = [s.reference for s in slices.values() if np.isfinite(s.reference)]
    patient_ref = float(np.median(refs)) if refs else float("nan")
    rows = []
    for disc_id, level in zip(labels.DISC_IDS, labels.DISC_NAMES):
        on = [k for k, s in slices.items() if (s.mask == disc_id).any()]
        if not on:
            continue
        t0 = time.perf_counter()
        chosen = middle_slices(on, settings.n_middle_slices)
        mid = middle_slices(on, 1)[0]
        feats: list[dict[str, float]] = []
        used, reasons, sources = [], [], set()
        for k in chosen:
            s = slices[k]
            ref, source = s.reference, "slice"
            if not np.isfinite(ref):
                ref, source = patient_ref, "patient"
            f, why = extract.disc_slice_features(s.image, s.mask, disc_id, s.spacing, ref,
                                                 settings)
            if why:
                reasons.append(f"slice{k}:{why}")
                continue
            feats.append(f)
            used.append(k)
            sources.add(source)
        lab = next((disc_labels[(patient, k, level)] for k in [mid] + chosen + on
                    if (patient, k, level) in disc_labels), {})
        row: dict[str, Any] = {"patient": patient, "level": level,
                               **{c: lab.get(c) for c in LABEL_COLUMNS},
                               "fold": fold, "n_slices": len(on),
                               "slices_used": " ".join(str(k) for k in used),
                               "reference_source": "+".join(sorted(sources)),
                               "reason": ";".join(reasons)}
        if feats:
            keys = list(feats[0])
            row.update({c: float(np.mean([f.get(c, np.nan) for f in feats])) for c in keys})
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def build_radiomics_table(data_dir: str | pathlib.Path, settings: extract.RadiomicsSettings, *,
                          reader: Optional[Callable[[pathlib.Path], Any]] = None,
                          patients: Optional[Sequence[str]] = None, progress: bool = True
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Radiomics of every disc of a dataset directory.

    Args:
        data_dir: a spoils dataset directory (``labelme/``, ``patients.csv``, optional
            ``discs.csv`` and ``folds.json``).
        settings: :class:`~spoils_tf.radiomics.extract.RadiomicsSettings`.
        reader: ``path -> record`` with ``image, mask, patient, slice, pixel_spacing_mm``
            (default ``spoils_tf.data.labelme_io.read_labelme``).
        patients: only these patients (default all).
        progress: a tqdm bar over patients.

    Returns:
        ``(table, issues)``: one row per (patient, level) (columns ``KEY_COLUMNS +
        LABEL_COLUMNS + META_COLUMNS`` + the features; every feature column on every row,
        NaN where it failed), and the files that could not be used (``file``, ``reason``).
    """
    from spoils_tf.data import layout
    from spoils_tf.geometry import features as gfeatures
    data_dir = pathlib.Path(data_dir)
    if reader is None:
        from spoils_tf.data.labelme_io import read_labelme
        reader = read_labelme
    patient_table = gfeatures.read_patient_table(data_dir)
    disc_labels = gfeatures.read_disc_labels(data_dir)
    folds = None
    if (data_dir / layout.FOLDS_JSON).is_file():
        from spoils_tf.data.folds import load_folds
        folds = load_folds(data_dir / layout.FOLDS_JSON)
    by_patient: dict[str, list[pathlib.Path]] = {}
    for path in layout.list_labelme_jsons(data_dir):
        by_patient.setdefault(path.parent.name, []).append(path)
    wanted = sorted(by_patient) if patients is None else [str(p) for p in patients]
    issues: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    for patient_dir in gfeatures.progress_iter(wanted, progress, "radiomics"):
        slices: dict[int, _Slice] = {}
        patient = patient_dir
        for path in by_patient.get(patient_dir, []):
            try:
                rec = reader(path)
            except Exception as e:  # noqa: BLE001 - report and continue
                issues.append({"file": str(path), "reason": f"unreadable: {e}"})
                continue
            patient = str(rec.patient)
            spacing = gfeatures.spacing_for(rec, patient_table)
            if spacing is None:
                issues.append({"file": str(path), "reason": "no pixel spacing"})
                continue
            img = rec.image if rec.image.ndim == 2 else rec.image[..., 0]
            slices[int(rec.slice)] = _Slice(img, rec.mask, tuple(spacing),
                                            reference_median(img, rec.mask,
                                                             settings.min_reference_pixels))
        fold = None
        if folds is not None and patient in folds.assignment:
            fold = folds.fold_of(patient)
        rows += patient_rows(patient, slices, settings, disc_labels, fold)
    return assemble(rows, settings), pd.DataFrame(issues, columns=["file", "reason"])


def assemble(rows: Sequence[dict[str, Any]], settings: extract.RadiomicsSettings
             ) -> pd.DataFrame:
    """Rows -> the table with every feature column (``extract.feature_names``) in a fixed
    order, NaN where a disc failed."""
    names = extract.feature_names(settings)
    cols = list(KEY_COLUMNS) + list(LABEL_COLUMNS) + list(META_COLUMNS)
    table = pd.DataFrame(list(rows))
    for c in cols + names:
        if c not in table.columns:
            table[c] = np.nan if c in names else None
    table = table[cols + names]
    table["fold"] = pd.to_numeric(table["fold"], errors="coerce").astype("Int64")
    table["pfirrmann"] = pd.to_numeric(table["pfirrmann"], errors="coerce").astype("Int64")
    return table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


def write_radiomics_table(out: str | pathlib.Path, table: pd.DataFrame, issues: pd.DataFrame,
                          settings: extract.RadiomicsSettings) -> dict[str, pathlib.Path]:
    """Writes ``out`` (.parquet), the .csv beside it, ``<stem>_issues.csv`` and
    ``<stem>_settings.json`` (the settings, pyradiomics' parameters and version).

    Raises:
        ValueError: ``out`` does not end in ``.parquet``.
    """
    out = pathlib.Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"out must end in .parquet, got {out}")
    stem = out.with_suffix("")
    try:
        import radiomics
        version = str(radiomics.__version__)
    except ImportError:  # pragma: no cover
        version = "not installed"
    fileio.write_table(stem, table)
    fileio.write_csv(stem.with_name(stem.name + "_issues.csv"), issues)
    settings_path = stem.with_name(stem.name + SETTINGS_SUFFIX)
    fileio.write_json(settings_path, {
            "settings": settings.to_dict(),
            "pyradiomics_version": version,
            "pyradiomics_params": extract.pyradiomics_params(settings, (1.0, 1.0)),
            "n_discs": int(len(table)),
            "n_failed": int(table[extract.feature_names(settings)[0]].isna().sum())
            if len(table) else 0,
            "n_features": len(extract.feature_names(settings))}, sort_keys=True)
    return {"table": out, "settings": settings_path}


def read_settings(table_path: str | pathlib.Path) -> dict:
    """The ``<stem>_settings.json`` written next to a radiomics table.

    Raises:
        FileNotFoundError: it is missing.
    """
    import json
    p = pathlib.Path(table_path).with_suffix("")
    p = p.with_name(p.name + SETTINGS_SUFFIX)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no radiomics settings next to {table_path}")
    return json.loads(p.read_text(encoding="utf-8"))


def run(config, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Builds and writes the radiomics table of ``config.data.data_dir`` into ``workdir``.

    Args:
        config: ``configs/radiomics.py`` (``data.data_dir``, ``data.max_patients``,
            ``settings``: the :class:`~spoils_tf.radiomics.extract.RadiomicsSettings` fields).
        workdir: output folder: ``radiomics.parquet|.csv``, ``radiomics_issues.csv``,
            ``radiomics_settings.json``, ``config.json``.

    Returns:
        ``{"table": DataFrame, "issues": DataFrame, "paths": {...}, "summary": str}``.
    """
    from spoils_tf.data import layout
    workdir = pathlib.Path(workdir)
    settings = extract.RadiomicsSettings.from_mapping(config.settings.to_dict())
    fileio.save_config(config, workdir)
    patients = None
    if int(config.data.max_patients) > 0:
        dirs = sorted({p.parent.name for p in layout.list_labelme_jsons(config.data.data_dir)})
        patients = dirs[:int(config.data.max_patients)]
    tab, issues = build_radiomics_table(config.data.data_dir, settings, patients=patients)
    paths = write_radiomics_table(workdir / "radiomics.parquet", tab, issues, settings)
    names = extract.feature_names(settings)
    failed = int(tab[names[0]].isna().sum()) if len(tab) else 0
    summary = (f"{len(tab)} discs of {tab['patient'].nunique()} patients, {len(names)} features, "
               f"{failed} discs without features, {len(issues)} unusable files; median "
               f"{1000 * float(tab['seconds'].median()):.0f} ms per disc -> {paths['table']}")
    return {"table": tab, "issues": issues, "paths": paths, "summary": summary}
