"""Held-out predicted masks as a spoils dataset, and grading scored against ground truth.

Grading is reported twice: with features measured on the ground-truth masks and with
features measured on the segmentation model's masks. This module makes the second input and
scores it fairly.

**predict** (``spoils predicted-masks --data DIR --seg-workdir RUN --out OUT``): for every fold ``k`` of ``DIR/folds.json``, the model ``RUN/fold_<k>/model.keras``
(``spoils_tf.train.seg_lib``: trained on the other folds) predicts
EVERY slice of fold k's patients as deployment runs it (:func:`fold_segmenter`: a fixed-spacing
model with the level labelling of ``spoils predict``, a letterbox model through
``serve.segmenter.load_segmenter``). No patient is ever predicted by a model that trained
on it: :func:`check_fold_models` refuses to start unless the folds file the run trained with
(``RUN/config.json``: ``data.folds_path``, else ``<data.labelme_dir>/folds.json``, else
``RUN/synthetic/folds.json``) holds exactly the same patient -> fold assignment as
``DIR/folds.json`` and is older than every fold model, and every
``RUN/fold_<k>/metrics.json`` says ``fold == k`` with as many train / test patients as that
split. OUT is a complete spoils dataset (``spoils_tf.data.layout``), so ``spoils features``,
``spoils crops`` and every experiment run on it unchanged::

    OUT/labelme/<patient>/<stem>.json|.png   predicted label map as LabelMe polygons
                                             (``labelme_io.write_labelme``); the PNG holds
                                             the source slice's pixels, imagePath = sibling
    OUT/patients.csv, discs.csv, folds.json  copied byte for byte (also clinical.csv and
                                             geometry_truth.csv when the source has them)
    OUT/issues.csv          one row per slice that could not be predicted (ISSUE_COLUMNS)
    OUT/disc_matches.csv    per slice, every ground-truth disc and what the prediction made
                            of it (DISC_MATCH_COLUMNS, statuses in DISC_STATUSES)
    OUT/provenance.json     source, run, folds file sha256, and per fold / per patient the
                            model (path, sha256, held-out Dice) that predicted it

``discs.csv`` is copied unchanged: ``spoils features`` joins grades by ``(patient, slice,
level)``, so a predicted disc carries the grade of the ground-truth disc OF THE SAME LEVEL
NAME on that slice. That is the end-to-end reading (a report says "L4-L5: grade X"): a disc
the model names wrongly is graded against the disc it was named after, or is unlabelled when
no such disc is annotated there. ``disc_matches.csv`` separates the cases by overlap.

The dataset is built in ``<OUT>.partial-<pid>`` and moved to ``OUT`` only when complete (an
existing ``OUT`` is replaced only with ``--overwrite``); every file is written atomically.
A slice that fails is listed in ``issues.csv`` and the batch goes on.

**compare** (``spoils predicted-masks compare --gt-workdir A --pred-workdir B --out DIR``): the two ``experiments.grade_geometry`` runs (split=patient) side by side. A
disc scored in the ground-truth run (a labelled row of its out-of-fold predictions) that has
no row in the predicted-mask run is a MISSED disc. The predicted-mask run's own tables score
only the discs it found (its denominator shrinks); :func:`all_disc_scores` adds the row in
which every ground-truth disc counts and a missed one is wrong (accuracy, macro IoU, macro
F1; a missed disc is a false negative of its true class and nobody's false positive).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from spoils_tf import fileio, labels
from spoils_tf.data import labelme_io, layout
from spoils_tf.data import folds as folds_lib
from spoils_tf.errors import SpoilsError
from spoils_tf.metrics import confusion, tables
from spoils_tf.metrics import classification as cm
from spoils_tf.serve import segmenter

PROVENANCE_JSON = "provenance.json"
DISC_MATCHES_CSV = "disc_matches.csv"
PROVENANCE_FORMAT = "spoils-tf/predicted-masks/1"
# Source files copied unchanged when present (the layout's tables; not issues.csv, which
# OUT rewrites with its own prediction issues).
COPIED_FILES: tuple[str, ...] = (layout.PATIENTS_CSV, layout.DISCS_CSV, layout.FOLDS_JSON,
                                 layout.CLINICAL_CSV, layout.GEOMETRY_TRUTH_CSV)
DISC_MATCH_COLUMNS: tuple[str, ...] = (
        "patient", "slice", "fold", "level", "status", "best_pred_level", "gt_px",
        "pred_px_same_level", "overlap_same_level_px", "dice_same_level", "overlap_best_px")
# same_level: the predicted disc overlapping this ground-truth disc most has its level name;
# other_level: it has another disc's name; missed: no predicted disc pixel overlaps it;
# extra: a predicted disc level with no ground-truth disc of that name on the slice (its
# feature row is unlabelled; best_pred_level then names the ground-truth disc it overlaps
# most, empty when none).
DISC_STATUSES: tuple[str, ...] = ("same_level", "other_level", "missed", "extra")


class FoldModelError(SpoilsError):
    """A segmentation run whose fold models cannot be shown to be held out: ``path`` is the
    file at fault, ``field`` its field where there is one."""


# === Fold models (the leakage guard) ===
@dataclasses.dataclass(frozen=True)
class FoldModel:
    """The model of one fold.

    Attributes:
        fold: fold index k.
        model_path: ``RUN/fold_<k>/model.keras`` (resolved).
        sha256: of the model file.
        test_patients: fold k's patients (sorted): the only ones this model predicts.
        n_train_patients: patients it was trained on (all other folds).
        heldout: ``{"dice/fg_macro", "level_accuracy", "slices"}`` from its metrics.json.
    """

    fold: int
    model_path: pathlib.Path
    sha256: str
    test_patients: tuple[str, ...]
    n_train_patients: int
    heldout: dict[str, float]


def _resolve(path_text: str, seg_workdir: pathlib.Path) -> pathlib.Path:
    """A path from a run's config: as given (relative to the working directory) when it
    exists, else relative to each parent of the run directory (the run was started from a
    repository root); the path as given when found nowhere."""
    p = pathlib.Path(path_text)
    if p.is_absolute() or p.exists():
        return p
    for parent in seg_workdir.resolve().parents:
        if (parent / p).exists():
            return parent / p
    return p


def run_folds_path(seg_workdir: str | os.PathLike) -> pathlib.Path:
    """The folds file a ``seg_lib`` run trained with, from ``RUN/config.json``.

    ``data.folds_path`` when set, else ``<data.labelme_dir>/folds.json`` when that dataset
    exists, else ``RUN/synthetic/folds.json`` (``seg_lib.resolve_dataset_dir``'s fallback).

    Raises:
        FoldModelError: no ``config.json``, or fields ``data.*`` missing.
        FileNotFoundError: the folds file it names does not exist.
    """
    seg_workdir = pathlib.Path(seg_workdir)
    cfg_path = seg_workdir / "config.json"
    if not cfg_path.is_file():
        raise FoldModelError(cfg_path, None, "not found; expected the resolved config of a "
                                             "segmentation run (spoils_tf.train.seg_lib.run "
                                             "writes it)")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))["data"]
        folds_path, labelme_dir = str(data["folds_path"] or ""), str(data["labelme_dir"] or "")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FoldModelError(cfg_path, "data.folds_path, data.labelme_dir",
                             f"unreadable ({e!r}); expected a seg_lib config") from e
    if folds_path:
        path = _resolve(folds_path, seg_workdir)
    elif labelme_dir and (_resolve(labelme_dir, seg_workdir) / layout.LABELME_DIR).is_dir():
        path = _resolve(labelme_dir, seg_workdir) / layout.FOLDS_JSON
    else:
        path = seg_workdir / "synthetic" / layout.FOLDS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{cfg_path}: the run's folds file {path} does not exist; "
                                "cannot show which patients each fold model trained on")
    return path


def check_fold_models(data_dir: str | os.PathLike, seg_workdir: str | os.PathLike, *,
                      allow_newer_folds: bool = False):
    """Proves every fold model of ``seg_workdir`` is held out for its fold of ``data_dir``.

    Checks, in order: the run's folds file (:func:`run_folds_path`) has the same k and
    patient -> fold assignment as ``DIR/folds.json``; it is not newer than any fold's
    ``model.keras`` (seg_lib reads the folds before training the first fold, and ``spoils
    folds`` leaves an unchanged file untouched, so a newer file was rewritten after
    training and may not be the split the models saw; ``allow_newer_folds`` accepts it, e.g.
    after copying a run with ``cp`` without ``-p``); each ``fold_<k>/metrics.json`` has
    ``fold == k`` and the split's numbers of train and test patients, and, when it lists
    them, ``test_patient_ids`` equal to the fold's patients.

    Returns:
        ``(folds, {k: FoldModel}, run_folds_file)``: ``folds`` is ``DIR/folds.json``
        (``spoils_tf.data.folds.Folds``).

    Raises:
        FileNotFoundError: ``DIR/folds.json`` or the run's folds file is missing.
        FoldModelError: the run's folds differ from the dataset's (k or any patient's fold)
            or are newer than a model, a fold has no ``model.keras`` or ``metrics.json``, or
            a ``metrics.json`` field ``fold`` / ``train_patients`` / ``test_patients`` /
            ``test_patient_ids`` disagrees with the split.
    """
    data_dir, seg_workdir = pathlib.Path(data_dir), pathlib.Path(seg_workdir)
    folds = folds_lib.load_folds(data_dir / layout.FOLDS_JSON)
    run_path = run_folds_path(seg_workdir)
    run_folds = folds_lib.load_folds(run_path)
    if run_folds.k != folds.k or run_folds.assignment != folds.assignment:
        differ = sorted(p for p in set(folds.assignment) | set(run_folds.assignment)
                        if folds.assignment.get(p) != run_folds.assignment.get(p))
        raise FoldModelError(
                run_path, None,
                f"the segmentation run trained with k={run_folds.k} folds that "
                f"differ from {data_dir / layout.FOLDS_JSON} (k={folds.k}) for {len(differ)} "
                f"patient(s) (first: {differ[:5]}); a fold model could have trained on a "
                "patient it would predict. Expected the same folds file")
    models: dict[int, FoldModel] = {}
    for k in range(folds.k):
        train, test = folds.split(k)
        fold_dir = seg_workdir / f"fold_{k}"
        model_path, metrics_path = fold_dir / "model.keras", fold_dir / "metrics.json"
        for p in (model_path, metrics_path):
            if not p.is_file():
                raise FoldModelError(p, None, f"not found; every fold 0..{folds.k - 1} needs a "
                                              "finished model (train it with experiments.seg)")
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise FoldModelError(metrics_path, "json", f"invalid JSON ({e})") from e
        expected = {"fold": k, "train_patients": len(train), "test_patients": len(test)}
        for field, want in expected.items():
            got = metrics.get(field)
            if got is None or not isinstance(got, (int, float)) or int(got) != want:
                raise FoldModelError(metrics_path, field,
                                     f"{got!r}; expected {want} for fold {k} of "
                                     f"{data_dir / layout.FOLDS_JSON}")
        ids = metrics.get("test_patient_ids")
        if ids is not None and sorted(str(p) for p in ids) != list(test):
            raise FoldModelError(metrics_path, "test_patient_ids",
                                 f"{sorted(ids)[:5]} differs from fold {k}'s patients "
                                 f"{list(test)[:5]}")
        if not allow_newer_folds and run_path.stat().st_mtime > model_path.stat().st_mtime:
            raise FoldModelError(
                    run_path, None,
                    f"modified after {model_path} was trained; the folds may have "
                    "been rewritten since, so the split the models saw is unknown. Retrain, or "
                    "pass --allow-newer-folds if only the file's time changed (e.g. a copy)")
        models[k] = FoldModel(
                fold=k, model_path=model_path.resolve(), sha256=fileio.sha256_file(model_path),
                test_patients=tuple(test), n_train_patients=len(train),
                heldout={key: float(metrics.get(key, float("nan")))
                         for key in ("dice/fg_macro", "level_accuracy", "slices")})
    return folds, models, run_path


def _run_data_config(seg_workdir: pathlib.Path) -> dict[str, Any]:
    return json.loads((seg_workdir / "config.json").read_text(encoding="utf-8"))["data"]


def _run_resize_mode(seg_workdir: pathlib.Path) -> str:
    return str(_run_data_config(seg_workdir).get("resize_mode") or "letterbox")


def _run_target_spacing(seg_workdir: pathlib.Path) -> float:
    """The run's fixed pixel size in mm (``data.target_spacing_mm``), 0 for letterbox runs."""
    return float(_run_data_config(seg_workdir).get("target_spacing_mm") or 0.0)


def fold_segmenter(model_path: pathlib.Path, resize_mode: str, target_spacing_mm: float
                   ) -> Callable[[np.ndarray, Any], np.ndarray]:
    """``(uint8 [H, W], (row_mm, col_mm)) -> int32 [H, W]``: one fold's model as deployment
    runs it.

    A fixed-spacing model (``target_spacing_mm > 0``) runs inside ``serve.segmenter.
    SpacingSegmenter`` with the anatomical level labelling of ``spoils predict``; the slice is
    taken as given (the source dataset is in display orientation). A letterbox model runs
    ``serve.segmenter.load_segmenter`` and ignores the spacing.
    """
    if target_spacing_mm > 0:
        seg = segmenter.SpacingSegmenter(model_path, target_spacing_mm, orientation="as_is")
        return lambda grey, spacing: seg(grey, tuple(spacing)).label_map
    run = segmenter.load_segmenter(model_path, resize_mode)
    return lambda grey, spacing: run(grey)


# === Disc matching ===
def match_discs(gt_mask: np.ndarray, pred_mask: np.ndarray) -> list[dict[str, Any]]:
    """What the prediction made of each ground-truth disc of one slice.

    Args:
        gt_mask, pred_mask: int [H, W] class ids (``labels.SEG_CLASSES``), same shape.

    Returns:
        One dict per ground-truth disc level on the slice (``status`` same_level /
        other_level / missed) and one per predicted disc level with no ground-truth disc of
        that name (``extra``), keys ``DISC_MATCH_COLUMNS[3:]`` (pixel counts, Dice of the
        same-level pair in 0..1).

    Raises:
        ValueError: the masks' shapes differ.
    """
    g, p = np.asarray(gt_mask), np.asarray(pred_mask)
    if g.shape != p.shape:
        raise ValueError(f"ground-truth mask {g.shape} and predicted mask {p.shape} differ")
    n = labels.NUM_SEG_CLASSES
    joint = np.bincount(g.astype(np.int64).ravel() * n + p.astype(np.int64).ravel(),
                        minlength=n * n).reshape(n, n)       # [gt class, pred class] pixels
    disc_ids = list(labels.DISC_IDS)
    gt_px, pred_px = joint.sum(axis=1), joint.sum(axis=0)
    rows = []
    for d in disc_ids:
        if gt_px[d] == 0:
            continue
        overlaps = joint[d, disc_ids]
        best = disc_ids[int(np.argmax(overlaps))] if overlaps.max() > 0 else None
        status = ("missed" if best is None else "same_level" if best == d else "other_level")
        rows.append(_match_row(d, status, best, gt_px[d], pred_px[d], joint[d, d],
                               overlaps.max()))
    for d in disc_ids:
        if pred_px[d] == 0 or gt_px[d] > 0:
            continue
        overlaps = joint[disc_ids, d]
        best = disc_ids[int(np.argmax(overlaps))] if overlaps.max() > 0 else None
        rows.append(_match_row(d, "extra", best, 0, pred_px[d], 0, overlaps.max()))
    return rows


def _match_row(disc_id: int, status: str, best: Optional[int], gt_px: int, pred_px: int,
               overlap: int, overlap_best: int) -> dict[str, Any]:
    den = int(gt_px) + int(pred_px)
    return {"level": labels.SEG_NAMES[disc_id], "status": status,
            "best_pred_level": "" if best is None else labels.SEG_NAMES[best],
            "gt_px": int(gt_px), "pred_px_same_level": int(pred_px),
            "overlap_same_level_px": int(overlap),
            "dice_same_level": 2.0 * int(overlap) / den if den else float("nan"),
            "overlap_best_px": int(overlap_best)}


# === Predict ===
@dataclasses.dataclass
class _PredictionLog:
    """What a predict run collects as it goes.

    Attributes:
        issues: one row per slice that could not be predicted (``layout.ISSUE_COLUMNS``).
        matches: one row per disc of every predicted slice (``DISC_MATCH_COLUMNS``).
        per_patient: ``{patient: {"fold", "model", "slices", "slices_failed"}}``.
    """

    issues: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    matches: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    per_patient: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="predicted masks", unit="slice", file=sys.stderr,
                disable=not enabled)


def _check_out_dir(data_dir: pathlib.Path, out_dir: pathlib.Path, overwrite: bool) -> None:
    """Refuses an ``out_dir`` inside the source dataset, or one with files unless
    ``overwrite``."""
    if out_dir.resolve() == data_dir.resolve() or out_dir.resolve().is_relative_to(
            data_dir.resolve()):
        raise ValueError(f"--out {out_dir} is the source dataset {data_dir} or inside it; "
                         "expected a separate directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: exists and is not empty; pass --overwrite to "
                              "replace it")


def _slices_by_fold(jsons: Sequence[pathlib.Path], folds
                    ) -> dict[Optional[int], list[pathlib.Path]]:
    """The LabelMe files grouped by their patient's fold (None: patient in no fold), so that
    each fold model is loaded once. The patient comes from the path, as ``spoils folds``
    counts it."""
    by_fold: dict[Optional[int], list[pathlib.Path]] = collections.defaultdict(list)
    for path in jsons:
        by_fold[folds.assignment.get(folds_lib.patient_of_json(path))].append(path)
    return by_fold


def _copy_source_tables(data_dir: pathlib.Path, partial: pathlib.Path) -> None:
    for name in COPIED_FILES:
        if (data_dir / name).is_file():
            fileio.atomic_write_bytes(partial / name, (data_dir / name).read_bytes())


def _list_unassigned(paths: Sequence[pathlib.Path], data_dir: pathlib.Path,
                     log: _PredictionLog) -> None:
    """An issue for every slice of a patient that no fold holds out."""
    for path in paths:
        patient = folds_lib.patient_of_json(path)
        log.issues.append({"patient": patient, "slice": "",
                           "file": str(path.relative_to(data_dir)),
                           "reason": f"patient {patient!r} is not in {layout.FOLDS_JSON}: no "
                                     "fold model holds it out"})


def _predict_slice(path: pathlib.Path, fold_model: FoldModel,
                   segment: Callable[[np.ndarray], np.ndarray], data_dir: pathlib.Path,
                   partial: pathlib.Path, log: _PredictionLog) -> None:
    """Predicts one LabelMe slice with its fold's model, writes the predicted LabelMe pair
    under ``partial`` and logs its disc matches; a failure is logged as an issue."""
    k = fold_model.fold
    patient = folds_lib.patient_of_json(path)
    entry = log.per_patient.setdefault(patient, {"fold": k, "model": str(fold_model.model_path),
                                                 "slices": 0, "slices_failed": 0})
    try:
        rec = labelme_io.read_labelme(path)
        if str(rec.patient) != patient:
            raise ValueError(f"field 'spoils.patient' is {rec.patient!r} but the "
                             f"file name says {patient!r}")
        pred = np.asarray(segment(rec.image, rec.pixel_spacing_mm), np.int32)
        if pred.shape != rec.mask.shape:
            raise ValueError(f"predicted mask {pred.shape} != image {rec.mask.shape}")
        labelme_io.write_labelme(partial / path.relative_to(data_dir), rec.image, pred,
                                 patient=patient, slice_index=rec.slice,
                                 pixel_spacing_mm=rec.pixel_spacing_mm)
        for m in match_discs(rec.mask, pred):
            log.matches.append({"patient": patient, "slice": int(rec.slice), "fold": k, **m})
        entry["slices"] += 1
    except Exception as e:  # noqa: BLE001 - listed in issues.csv, batch goes on
        slice_index = ""
        try:
            slice_index = layout.parse_stem(path.stem)[1]
        except ValueError:
            pass
        log.issues.append({"patient": patient, "slice": slice_index,
                           "file": str(path.relative_to(data_dir)),
                           "reason": f"{type(e).__name__}: {e}"})
        entry["slices_failed"] += 1


def _write_tables(partial: pathlib.Path, log: _PredictionLog) -> dict[str, int]:
    """Writes ``issues.csv`` and ``disc_matches.csv``; returns the count of each disc
    status."""
    fileio.write_csv(partial / layout.ISSUES_CSV,
                     pd.DataFrame(log.issues, columns=list(layout.ISSUE_COLUMNS)))
    match_df = pd.DataFrame(log.matches, columns=list(DISC_MATCH_COLUMNS))
    fileio.write_csv(partial / DISC_MATCHES_CSV, match_df)
    return {s: int((match_df["status"] == s).sum()) for s in DISC_STATUSES}


def _provenance(data_dir: pathlib.Path, seg_workdir: pathlib.Path, resize_mode: str, folds,
                models: Mapping[int, FoldModel], run_path: pathlib.Path, n_slices: int,
                log: _PredictionLog, status_counts: Mapping[str, int]) -> dict[str, Any]:
    """The ``provenance.json`` of a finished run (module docstring)."""
    per_patient = log.per_patient
    return {
            "format": PROVENANCE_FORMAT,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "source_dataset": str(data_dir.resolve()),
            "seg_workdir": str(seg_workdir.resolve()),
            "resize_mode": resize_mode,
            "folds_file": str((data_dir / layout.FOLDS_JSON).resolve()),
            "folds_sha256": fileio.sha256_file(data_dir / layout.FOLDS_JSON),
            "run_folds_file": str(run_path.resolve()),
            "k": folds.k,
            "folds": {str(k): {"model": str(m.model_path), "model_sha256": m.sha256,
                               "test_patients": list(m.test_patients),
                               "n_train_patients": m.n_train_patients,
                               "heldout_metrics": m.heldout}
                      for k, m in sorted(models.items())},
            "patients": {p: per_patient[p] for p in sorted(per_patient)},
            "slices": {"total": n_slices,
                       "written": sum(e["slices"] for e in per_patient.values()),
                       "failed": len(log.issues)},
            "disc_matches": dict(status_counts),
            "copied": [n for n in COPIED_FILES if (data_dir / n).is_file()],
    }


def _publish(partial: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Moves the finished ``partial`` folder to ``out_dir``, replacing an existing one."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(partial, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def predict_dataset(data_dir: str | os.PathLike, seg_workdir: str | os.PathLike,
                    out_dir: str | os.PathLike, *, overwrite: bool = False,
                    progress: bool = True, allow_newer_folds: bool = False,
                    load_segmenter: Optional[Callable[[pathlib.Path, str], Callable]] = None
                    ) -> dict[str, Any]:
    """Writes the predicted-mask dataset ``out_dir`` (module docstring).

    Args:
        data_dir: the source spoils dataset (ground-truth LabelMe files and ``folds.json``).
        seg_workdir: a ``seg_lib`` run directory with ``fold_<k>/model.keras`` for every fold.
        out_dir: the dataset to write; must not exist (or be empty) unless ``overwrite``.
        overwrite: replace an existing ``out_dir`` once the new one is complete.
        progress: tqdm bar on stderr.
        allow_newer_folds: see :func:`check_fold_models`.
        load_segmenter: ``(model_path, resize_mode) -> ((uint8 [H, W], (row_mm, col_mm)) ->
            int [H, W])``; default :func:`fold_segmenter` with the run's target spacing.

    Returns:
        the provenance dict (also ``out_dir/provenance.json``).

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is False.
        ValueError: ``out_dir`` is ``data_dir`` or inside it.
        FileNotFoundError, FoldModelError: from :func:`check_fold_models` (nothing written).
    """
    data_dir, seg_workdir = pathlib.Path(data_dir), pathlib.Path(seg_workdir)
    out_dir = pathlib.Path(out_dir)
    _check_out_dir(data_dir, out_dir, overwrite)
    jsons = layout.list_labelme_jsons(data_dir)
    folds, models, run_path = check_fold_models(data_dir, seg_workdir,
                                                allow_newer_folds=allow_newer_folds)
    resize_mode = _run_resize_mode(seg_workdir)
    target_spacing = _run_target_spacing(seg_workdir)
    if load_segmenter is None:
        def load_segmenter(path, mode):
            return fold_segmenter(path, mode, target_spacing)
    by_fold = _slices_by_fold(jsons, folds)

    partial = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    log = _PredictionLog()
    try:
        _copy_source_tables(data_dir, partial)
        bar = _progress(len(jsons), progress)
        unassigned = by_fold.pop(None, [])
        _list_unassigned(unassigned, data_dir, log)
        bar.update(len(unassigned))
        for k in sorted(by_fold):
            segment = load_segmenter(models[k].model_path, resize_mode)
            for path in by_fold[k]:
                _predict_slice(path, models[k], segment, data_dir, partial, log)
                bar.update(1)
        bar.close()
        status_counts = _write_tables(partial, log)
        provenance = _provenance(data_dir, seg_workdir, resize_mode, folds, models, run_path,
                                 len(jsons), log, status_counts)
        fileio.write_json(partial / PROVENANCE_JSON, provenance, indent=1)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _publish(partial, out_dir)
    return provenance


# === Scoring against the ground-truth run ===
def _oof(workdir: pathlib.Path, target: str, model: str) -> pd.DataFrame:
    from spoils_tf.train import grade_geometry_lib as ggl
    return ggl.read_predictions(workdir / "patient" / target / model / "oof_predictions")


def _labelled(series: pd.Series) -> np.ndarray:
    return (series.notna() & (series.astype(str) != "") & (series.astype(str) != "nan")
            & (series.astype(str) != "None")).to_numpy()


def all_disc_scores(gt_oof: pd.DataFrame, pred_oof: pd.DataFrame, classes: Sequence[str],
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Scores the predicted-mask run on EVERY disc the ground-truth run scored.

    Args:
        gt_oof, pred_oof: out-of-fold predictions (``patient, slice, level, fold, y_true,
            y_pred``) of the ground-truth-mask and predicted-mask runs of one (target, model).
        classes: the target's class names.
        n_boot: patient-level bootstrap resamples for the pooled CIs.

    Returns:
        ``{"n_gt_scored", "n_pred_scored", "n_found", "n_missed", "n_pred_not_in_gt",
        "correct_found", "mean"/"sd" (over the ground-truth run's folds: accuracy,
        iou_macro, f1_macro), "pooled": {metric: {estimate, ci_low, ci_high}}}``.
        A missed disc counts as wrong: a false negative of its true class.

    Raises:
        ValueError: a disc labelled differently in the two runs (not the same discs.csv).
    """
    keys = ["patient", "slice", "level"]
    gt = gt_oof.loc[_labelled(gt_oof["y_true"]), keys + ["fold", "y_true"]]
    pr = pred_oof.loc[:, keys + ["y_true", "y_pred"]].rename(
            columns={"y_true": "y_true_pred_run"})
    merged = gt.merge(pr, on=keys, how="left", validate="one_to_one")
    found = merged["y_pred"].notna().to_numpy()
    both = found & _labelled(merged["y_true_pred_run"])
    bad = both & (merged["y_true"].astype(str) != merged["y_true_pred_run"].astype(str)).to_numpy()
    if bad.any():
        first = merged.loc[bad, keys].iloc[0].tolist()
        raise ValueError(f"{int(bad.sum())} disc(s) have different labels in the two runs "
                         f"(first: {first}); expected tables built from the same discs.csv")
    n_cls = len(classes)
    y = cm.encode(merged["y_true"], classes, field="y_true")
    index = {c: i for i, c in enumerate(classes)}
    # missed -> class index n_cls, an extra column that is nobody's true class
    p = np.asarray([index[str(v)] if f else n_cls for v, f in zip(merged["y_pred"], found)],
                   np.int64)

    def scores(t: np.ndarray, q: np.ndarray) -> dict[str, float]:
        conf = cm.confusion_matrix(t, q, n_cls + 1)
        return {"accuracy": cm.accuracy(t, q),
                "iou_macro": confusion.nanmean(cm.jaccard_per_class(conf)[:n_cls]),
                "f1_macro": confusion.nanmean(cm.f1_per_class(conf)[:n_cls])}

    fold = merged["fold"].to_numpy()
    per_fold = {int(f): scores(y[fold == f], p[fold == f]) for f in sorted(set(fold))}
    mean, sd = {}, {}
    for name in ("accuracy", "iou_macro", "f1_macro"):
        v = np.asarray([s[name] for s in per_fold.values()], np.float64)
        v = v[np.isfinite(v)]
        mean[name] = float(v.mean()) if v.size else float("nan")
        sd[name] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    pooled = {}
    patients = merged["patient"].astype(str).to_numpy()
    for name in ("accuracy", "iou_macro", "f1_macro"):
        ci = cm.bootstrap_ci(lambda t, q, name=name: scores(t, q)[name], patients, y, p,
                             n_boot=int(n_boot), seed=int(seed))
        pooled[name] = {"estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high}
    pred_keys = pred_oof.loc[_labelled(pred_oof["y_true"]), keys]
    not_in_gt = pred_keys.merge(gt[keys], on=keys, how="left", indicator=True)
    return {"n_gt_scored": int(len(merged)),
            "n_pred_scored": int(_labelled(pred_oof["y_true"]).sum()),
            "n_found": int(found.sum()), "n_missed": int((~found).sum()),
            "n_pred_not_in_gt": int((not_in_gt["_merge"] == "left_only").sum()),
            "correct_found": int((found & (p == y)).sum()),
            "per_fold": per_fold, "mean": mean, "sd": sd, "pooled": pooled}


_PERCENT = tables.formatter(1, scale=100.0)     # the comparison's cells: percent, 1 decimal
_COMPARED_METRICS: tuple[str, ...] = ("accuracy", "iou_macro", "f1_macro", "kappa_quadratic",
                                      "auroc_macro")


def _finished_pairs(gt_workdir: pathlib.Path, pred_workdir: pathlib.Path,
                    targets: Sequence[str], models: Sequence[str]) -> list[tuple[str, str]]:
    """The (target, model) pairs with ``patient/<target>/<model>/summary.json`` in both runs.

    Raises:
        FileNotFoundError: a pair named by both ``targets`` and ``models`` is missing from a
            run, or no pair is finished in both.
    """
    from spoils_tf.classical import models as cmodels

    pairs = []
    for target in (targets or tuple(cmodels.TARGETS)):
        for model in (models or tuple(cmodels.CLASSIFIERS)):
            found = [(w / "patient" / target / model / "summary.json").is_file()
                     for w in (gt_workdir, pred_workdir)]
            if all(found):
                pairs.append((target, model))
            elif targets and models:
                missing = [str(w / "patient" / target / model / "summary.json")
                           for w, f in zip((gt_workdir, pred_workdir), found) if not f]
                raise FileNotFoundError(f"{missing}: not found; run experiments.grade_geometry")
    if not pairs:
        raise FileNotFoundError(f"{gt_workdir} and {pred_workdir} share no finished "
                                "patient/<target>/<model>/summary.json")
    return pairs


def _score_row(target: str, model: str, features: str, scores: Mapping[str, Any],
               metrics: Sequence[str], **counts: int) -> dict[str, Any]:
    """One row of ``gt_vs_pred.csv``: keys, ``counts``, then mean / SD over folds and the
    pooled estimate with its CI of every metric in ``metrics``."""
    row = {"target": target, "model": model, "features": features, **counts}
    for k in metrics:
        row[f"{k}_mean"], row[f"{k}_sd"] = scores["mean"][k], scores["sd"][k]
        for q in ("estimate", "ci_low", "ci_high"):
            row[f"{k}_pooled_{q}"] = scores["pooled"][k][q]
    return row


def _compare_model(gt_workdir: pathlib.Path, pred_workdir: pathlib.Path, target: str,
                   model: str, classes: Sequence[str], n_boot: int, seed: int
                   ) -> list[dict[str, Any]]:
    """The three rows of one (target, model): GT masks, pred found, pred all discs."""
    s_gt, s_pr = (json.loads((w / "patient" / target / model / "summary.json")
                             .read_text(encoding="utf-8"))
                  for w in (gt_workdir, pred_workdir))
    gt_oof = _oof(gt_workdir, target, model)
    extra = all_disc_scores(gt_oof, _oof(pred_workdir, target, model), classes,
                            n_boot=n_boot, seed=seed)
    rows = [_score_row(target, model, label, s, _COMPARED_METRICS, n_scored=s["n_scored"],
                       n_patients=s["n_patients"], n_missed=missed)
            for label, s, missed in (("GT masks", s_gt, 0),
                                     ("pred, found", s_pr, extra["n_missed"]))]
    rows.append(_score_row(target, model, "pred, all discs", extra,
                           ("accuracy", "iou_macro", "f1_macro"),
                           n_scored=extra["n_gt_scored"],
                           n_patients=int(gt_oof["patient"].nunique()),
                           n_missed=extra["n_missed"],
                           n_pred_not_in_gt=extra["n_pred_not_in_gt"]))
    return rows


def _markdown_row(row: Mapping[str, Any]) -> str:
    """A row of ``gt_vs_pred.md`` from its ``gt_vs_pred.csv`` row; a metric the row lacks
    (QWK and AUROC of the all-discs row) is ``n/a``."""
    def ci(k: str, fmt: tables.Formatter = _PERCENT) -> str:
        if f"{k}_pooled_estimate" not in row:
            return tables.MISSING
        return tables.with_ci(row[f"{k}_pooled_estimate"], row[f"{k}_pooled_ci_low"],
                              row[f"{k}_pooled_ci_high"], fmt)

    cells = [row["model"], row["features"], f"{row['n_scored']} ({row['n_patients']})",
             row["n_missed"]]
    cells += [tables.mean_sd(row[f"{k}_mean"], row[f"{k}_sd"], _PERCENT)
              for k in ("accuracy", "iou_macro")]
    cells += [ci("accuracy"), ci("f1_macro"), ci("kappa_quadratic", tables.formatter(3)),
              ci("auroc_macro")]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _compare_intro(gt_workdir: pathlib.Path, pred_workdir: pathlib.Path) -> list[str]:
    return ["# Grading from ground-truth vs predicted masks (patient-level folds)", "",
            f"Ground-truth-mask run: `{gt_workdir}`; predicted-mask run: `{pred_workdir}`.", "",
            "Rows: **GT masks** (features measured on the annotation); **pred, found** "
            "(features on the held-out segmentation; scored only on discs the prediction "
            "produced under the annotated level name); **pred, all discs** (every disc scored "
            "in the GT run; a disc missing from the predicted table counts as wrong, a false "
            "negative of its class). Accuracy / IoU: mean ± SD over folds; pooled out-of-fold "
            "values with a patient-level bootstrap 95 % CI in brackets. QWK and AUROC need a "
            "probability for every disc, so they are n/a on the all-discs row.", ""]


def compare_runs(gt_workdir: str | os.PathLike, pred_workdir: str | os.PathLike,
                 out_dir: str | os.PathLike, *, models: Sequence[str] = (),
                 targets: Sequence[str] = (), n_boot: int = 1000, seed: int = 0
                 ) -> dict[str, Any]:
    """Side-by-side tables of two ``experiments.grade_geometry`` runs (split=patient) and the
    all-discs row (:func:`all_disc_scores`); writes ``out_dir/gt_vs_pred.{md,csv,json}``.

    Args:
        gt_workdir, pred_workdir: the runs on the ground-truth and predicted-mask tables.
        models, targets: restrict (default: every (target, model) present in both).

    Returns:
        ``{"rows": [one dict per (target, model, features)], "markdown": str}``.

    Raises:
        FileNotFoundError: a run without ``patient/<target>/<model>/summary.json``.
    """
    from spoils_tf.classical import models as cmodels

    gt_workdir, pred_workdir = pathlib.Path(gt_workdir), pathlib.Path(pred_workdir)
    pairs = _finished_pairs(gt_workdir, pred_workdir, targets, models)
    rows: list[dict[str, Any]] = []
    md = _compare_intro(gt_workdir, pred_workdir)
    for target in dict.fromkeys(t for t, _ in pairs):
        classes = cmodels.TARGETS[target]
        md += [f"## target {target} ({len(classes)} classes)", "",
               "| model | features | scored discs (patients) | missed | accuracy % mean ± SD "
               "| IoU % mean ± SD | accuracy % [CI] | macro-F1 % [CI] | QWK [CI] | "
               "AUROC % [CI] |", "| --- " * 10 + "|"]
        for model in (m for t, m in pairs if t == target):
            model_rows = _compare_model(gt_workdir, pred_workdir, target, model, classes,
                                        n_boot, seed)
            rows += model_rows
            md += [_markdown_row(r) for r in model_rows]
        md.append("")
    text = "\n".join(md) + "\n"
    out_dir = pathlib.Path(out_dir)
    fileio.atomic_write_text(out_dir / "gt_vs_pred.md", text)
    fileio.write_csv(out_dir / "gt_vs_pred.csv", pd.DataFrame(rows))
    fileio.write_json(out_dir / "gt_vs_pred.json", rows, indent=1)
    return {"rows": rows, "markdown": text}
