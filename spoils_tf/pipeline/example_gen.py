"""ExampleGen: a spoils dataset directory -> an ``Examples`` artifact (fingerprint, TFDS, folds)."""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any, Union

import numpy as np

from spoils_tf import fileio
from spoils_tf.data import layout
from spoils_tf.data import folds as folds_lib
from spoils_tf.pipeline import artifacts as art
from spoils_tf.pipeline.common import fresh_dir

log = logging.getLogger(__name__)


def example_gen(labelme_dir: Union[str, os.PathLike], out: Union[str, os.PathLike], *, k: int = 8,
                seed: int = 0, eval_fold: int = 0, tfds_config: str = "") -> art.Examples:
    """Validates a spoils dataset directory and records it as ``Examples``.

    Steps: check ``labelme/`` holds LabelMe files; fingerprint every data file (manifest in
    ``out/files.tsv``); prepare the TFDS dataset in ``out/tfds`` (a LabelMe file the reader
    refuses is skipped and listed in ``bad_files``, never dropped silently); take the
    dataset's ``folds.json`` when it has one, else make patient-grouped folds
    (``spoils_tf.data.folds.make_folds``, stratified by worst Pfirrmann grade from
    ``discs.csv`` when present) and write them to ``out/folds.json``.

    Args:
        labelme_dir: spoils dataset directory (``labelme/``, ``patients.csv``, ...); read only.
        out: a new artifact directory.
        k, seed: folds to make when the dataset has no ``folds.json``.
        eval_fold: the held-out fold (0..k-1).
        tfds_config: ``"spider" | "synthetic"``; "" = synthetic if the dataset has
            ``synth_config.json``, else spider.

    Returns:
        ``Examples``; ``metrics`` holds counts (patients, slices, slices without pixel
        spacing, patients per fold, bad files) and ``issues`` (``patients.csv`` /
        ``discs.csv`` rows that could not be used).

    Raises:
        FileNotFoundError: no dataset dir / no ``labelme/`` / no LabelMe json.
        ValueError: no readable example; ``eval_fold`` outside 0..k-1; a folds file that does
            not cover every patient.
        FileExistsError: ``out`` already holds an artifact.
    """
    from spoils_tf.data import tfds_builder

    start = time.perf_counter()
    dataset_dir = pathlib.Path(labelme_dir).resolve()
    jsons = layout.list_labelme_jsons(dataset_dir)
    if not jsons:
        raise FileNotFoundError(f"{dataset_dir / layout.LABELME_DIR}: no LabelMe .json files; "
                                "expected labelme/<patient>/<patient>_slice<k>.json")
    out = fresh_dir(out)
    fingerprint = _write_manifest(dataset_dir, out)

    tfds_config = tfds_config or _tfds_config_of(dataset_dir)
    tfds_dir = out / "tfds"
    ds, _ = tfds_builder.load_dataset(dataset_dir, tfds_dir, tfds_config)
    bad = [f"{b.path}: {b.reason}" for b in tfds_builder.bad_files(dataset_dir)]
    _, issues = tfds_builder.read_patient_spacing(dataset_dir / layout.PATIENTS_CSV)
    slices, no_spacing = _count_slices(ds)
    if not slices:
        raise ValueError(f"{dataset_dir}: no readable LabelMe example ({len(bad)} file(s) "
                         f"skipped: {bad[:3]})")

    folds, folds_path = _folds_of(dataset_dir, slices, out, k, seed, issues)
    if not 0 <= eval_fold < folds.k:
        raise ValueError(f"eval_fold {eval_fold}: expected 0..{folds.k - 1} ({folds_path} has "
                         f"k={folds.k})")
    train, test = folds.split(eval_fold)
    train = [p for p in train if p in slices]
    test = [p for p in test if p in slices]
    per_fold = {str(f): sum(1 for p in slices if folds.assignment.get(p) == f) for f in range(folds.k)}
    metrics = {"patients": len(slices), "slices": sum(slices.values()), "bad_files": len(bad),
               "slices_without_pixel_spacing": no_spacing, "issues": issues,
               "folds": folds.k, "patients_per_fold": per_fold,
               "train_patients": len(train), "eval_patients": len(test),
               "eval_slices": sum(slices[p] for p in test),
               "seconds": time.perf_counter() - start}
    examples = art.Examples(
            uri=str(out), producer="ExampleGen", created=art.utc_now(), fingerprint=fingerprint,
            config={"labelme_dir": str(dataset_dir), "k": folds.k, "seed": folds.seed,
                    "eval_fold": eval_fold, "tfds_config": tfds_config},
            metrics=metrics, parents=(), dataset_dir=str(dataset_dir), tfds_dir=str(tfds_dir),
            tfds_config=tfds_config, folds_path=str(folds_path), eval_fold=int(eval_fold),
            train_patients=tuple(train), eval_patients=tuple(test), bad_files=tuple(bad))
    art.write_artifact(examples)
    log.info("ExampleGen: %d patients, %d slices, %d bad file(s), fingerprint %s -> %s",
             metrics["patients"], metrics["slices"], len(bad), fingerprint["sha256"][:12], out)
    return examples


def _tfds_config_of(dataset_dir: pathlib.Path) -> str:
    """``"synthetic"`` for a ``spoils synth`` cohort (it has ``synth_config.json``), else ``"spider"``."""
    return "synthetic" if (dataset_dir / "synth_config.json").is_file() else "spider"


def _write_manifest(dataset_dir: pathlib.Path, out: pathlib.Path) -> dict[str, Any]:
    """Fingerprints every data file of the dataset, writes the manifest ``out/files.tsv``
    (path, bytes, sha256 per file) and returns the fingerprint (``art.fingerprint_of``)."""
    rows = art.data_files(dataset_dir)
    fingerprint = art.fingerprint_of(rows)
    fileio.atomic_write_text(out / art.MANIFEST_FILE, "path\tbytes\tsha256\n" + "".join(
            f"{rel}\t{size}\t{digest}\n" for rel, size, digest in rows))
    return fingerprint


def _count_slices(ds) -> tuple[dict[str, int], int]:
    """(slices per patient, number of slices without a finite pixel spacing) of a dataset of
    examples with ``patient`` and ``pixel_spacing_mm``."""
    slices: dict[str, int] = {}
    no_spacing = 0
    for patient, spacing in ds.map(lambda ex: (ex["patient"], ex["pixel_spacing_mm"])
                                   ).as_numpy_iterator():
        slices[patient.decode()] = slices.get(patient.decode(), 0) + 1
        no_spacing += int(not np.all(np.isfinite(spacing)))
    return slices, no_spacing


def _folds_of(dataset_dir: pathlib.Path, slices: dict[str, int], out: pathlib.Path, k: int,
              seed: int, issues: list):
    """The dataset's own ``folds.json`` when it has one, else new patient-grouped folds
    (stratified by worst grade when ``discs.csv`` has grades) written to ``out/folds.json``.
    ``discs.csv`` rows that could not be read are appended to ``issues``.

    Returns:
        (``data.folds`` Folds, the path they were read from).

    Raises:
        ValueError: the dataset's folds file leaves a patient without a fold.
    """
    own_folds = dataset_dir / layout.FOLDS_JSON
    if own_folds.is_file():
        folds = folds_lib.load_folds(own_folds)
        missing = sorted(set(slices) - set(folds.assignment))
        if missing:
            raise ValueError(f"{own_folds}: field 'folds': {len(missing)} patient(s) of the dataset "
                             f"have no fold (e.g. {missing[:3]}); expected every patient")
        return folds, own_folds
    grades = {}
    if (dataset_dir / layout.DISCS_CSV).is_file():
        grades, grade_issues = folds_lib.read_worst_grades(dataset_dir / layout.DISCS_CSV)
        issues += grade_issues
    assignment = folds_lib.make_folds(sorted(slices), grades, k=k, seed=seed)
    folds_path = folds_lib.write_folds(
            out / layout.FOLDS_JSON, assignment, k=k, seed=seed, source=str(dataset_dir),
            stratified_by=(folds_lib.STRATIFIED_BY_GRADE if grades else folds_lib.NOT_STRATIFIED))
    return folds_lib.load_folds(folds_path), folds_path
