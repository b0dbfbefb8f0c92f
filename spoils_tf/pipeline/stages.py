"""TFX-style pipeline stages as plain functions: ExampleGen -> Trainer -> Evaluator -> Pusher.

No dependency on the ``tfx`` package. Each stage takes typed artifacts
(``spoils_tf.pipeline.artifacts``), writes its output artifact into a fresh directory ``out``
(``out/metadata.json`` last, so an interrupted stage leaves no valid artifact) and returns it.

* :func:`example_gen` validates a spoils dataset directory (``spoils_tf.data.layout``),
  fingerprints it, prepares the TFDS dataset and fixes the patient folds and held-out fold.
* :func:`trainer` trains a segmentation model on the training folds with
  ``spoils_tf.train.seg_lib.run`` and exports a SavedModel (``spoils_tf.export.serving``).
* :func:`evaluator` scores the model on the held-out fold (pooled metrics of
  ``spoils_tf.metrics.segmentation`` at original resolution, ``seg_lib.evaluate_model``) and
  blesses it ONLY when every configured threshold is met (:func:`bless`); failed thresholds
  are recorded.
* :func:`pusher` refuses an unblessed model (:class:`NotBlessedError`) and copies the blessed
  SavedModel to ``<base_dir>/<model_name>/<version>/`` (TF Serving's layout): version = one
  more than the highest existing integer version; the copy is staged in a hidden temporary
  folder in ``<base_dir>/<model_name>/`` (TF Serving ignores non-integer names) and renamed
  into place with :func:`rename_no_replace`, so an existing version is never overwritten and
  a failed push leaves no partial version.

Thresholds: ``"dice/fg_macro>=0.8, level_accuracy>=0.9"`` (or a mapping ``{metric: value}``,
meaning ``>=``); each metric is a key of the evaluation (``seg_lib.evaluate_model``); a
NaN value fails its check. :func:`run_pipeline` chains the four stages for
``experiments/pipeline.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import math
import os
import pathlib
import re
import shutil
import tempfile
import time
from typing import Any, Mapping, Optional, Union

import numpy as np

from spoils_tf.data import layout
from spoils_tf.pipeline import artifacts as art

log = logging.getLogger(__name__)

BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
PUSH_RECORD_DIR = "assets.extra"     # inside a SavedModel; TF Serving leaves it alone
_THRESHOLD_RE = re.compile(r"^\s*(?P<metric>[^<>=\s]+)\s*(?P<op>>=|<=)\s*(?P<value>\S+)\s*$")
_OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}


class NotBlessedError(RuntimeError):
    """The Pusher was given a model without a positive blessing for it."""


# === Helpers ===
def _fresh_dir(out: Union[str, os.PathLike]) -> pathlib.Path:
    """``out`` as an absolute path, created; raises FileExistsError if it holds an artifact."""
    out = pathlib.Path(out).resolve()
    if (out / art.METADATA_FILE).exists():
        raise FileExistsError(f"{out}: already holds an artifact ({art.METADATA_FILE}); "
                              "stages write to a new directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def parse_thresholds(spec: Union[str, Mapping[str, Any]]) -> list[tuple[str, str, float]]:
    """``[(metric, op, value)]`` from ``"a>=0.8, b<=3"`` or ``{metric: value}`` (``>=``).

    Raises:
        ValueError: an empty spec, an item that is not ``<metric> >=|<= <number>``, or a
            non-finite value.
    """
    items: list[tuple[str, str, float]] = []
    if isinstance(spec, str):
        for part in (p for p in spec.split(",") if p.strip()):
            m = _THRESHOLD_RE.match(part)
            try:
                value = float(m.group("value")) if m else float("nan")
            except ValueError:
                value = float("nan")
            if not m or not math.isfinite(value):
                raise ValueError(f"threshold {part.strip()!r}: expected '<metric> >= <number>' or "
                                 "'<metric> <= <number>', e.g. 'dice/fg_macro>=0.8'")
            items.append((m.group("metric"), m.group("op"), value))
    else:
        for metric, value in dict(spec).items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = float("nan")
            if not math.isfinite(v):
                raise ValueError(f"threshold for {metric!r}: {value!r}; expected a finite number")
            items.append((str(metric), ">=", v))
    if not items:
        raise ValueError("no thresholds configured: a model is blessed only against at least "
                         "one threshold, e.g. 'dice/fg_macro>=0.8'")
    return items


def bless(metrics: Mapping[str, float], thresholds: Union[str, Mapping[str, Any]]
          ) -> tuple[bool, list[dict[str, Any]], list[str]]:
    """Checks ``metrics`` against ``thresholds``.

    Returns:
        (blessed, checks, failed): blessed is True iff every check passed; each check is
        ``{"metric", "op", "threshold", "value", "passed"}``; failed lists
        ``"<metric> <op> <threshold> (got <value>)"``. A NaN or infinite value fails.

    Raises:
        ValueError: an invalid spec (:func:`parse_thresholds`) or a metric that is not a key
            of ``metrics`` (the message lists the keys).
    """
    checks, failed = [], []
    for metric, op, threshold in parse_thresholds(thresholds):
        if metric not in metrics:
            raise ValueError(f"threshold metric {metric!r} is not an evaluation metric; "
                             f"expected one of {sorted(metrics)}")
        value = float(metrics[metric])
        passed = math.isfinite(value) and _OPS[op](value, threshold)
        checks.append({"metric": metric, "op": op, "threshold": threshold,
                       "value": value if math.isfinite(value) else None, "passed": passed})
        if not passed:
            failed.append(f"{metric} {op} {threshold:g} (got {value:.6g})")
    return not failed, checks, failed


def rename_no_replace(src: Union[str, os.PathLike], dst: Union[str, os.PathLike]) -> None:
    """Renames ``src`` to ``dst`` atomically, failing if ``dst`` exists (even as an empty folder).

    Uses Linux ``renameat2(..., RENAME_NOREPLACE)``; where that is unavailable (other systems,
    file systems without it) it checks ``dst`` and calls ``os.rename``, which refuses a
    non-empty ``dst`` folder but would replace an empty one created in between.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: any other failure of the rename.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    renameat2 = _renameat2()
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, f"{dst} already exists; not overwriting it", dst)
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, f"rename {src} -> {dst}: {os.strerror(err)}")
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, f"{dst} already exists; not overwriting it", dst)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, f"{dst} already exists; not overwriting it",
                                  dst) from e
        raise


_RENAMEAT2: list = []


def _renameat2():
    """libc's ``renameat2`` (glibc >= 2.28) or None."""
    if not _RENAMEAT2:
        fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def existing_versions(model_dir: Union[str, os.PathLike]) -> list[int]:
    """Integer version folders under ``model_dir``, sorted ([] when it does not exist)."""
    from spoils_tf.export import serving
    return serving.existing_versions(model_dir)


def next_version(model_dir: Union[str, os.PathLike]) -> int:
    """One more than the highest existing integer version folder (1 for none)."""
    return (existing_versions(model_dir) or [0])[-1] + 1


def _tfds_config_of(dataset_dir: pathlib.Path) -> str:
    """``"synthetic"`` for a ``spoils synth`` cohort (it has ``synth_config.json``), else ``"spider"``."""
    return "synthetic" if (dataset_dir / "synth_config.json").is_file() else "spider"


def _load_examples(examples: art.Examples):
    from spoils_tf.data import tfds_builder
    ds, _ = tfds_builder.load_dataset(examples.dataset_dir, examples.tfds_dir, examples.tfds_config)
    return ds


# === ExampleGen ===
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
    from spoils_tf.data import folds as folds_lib
    from spoils_tf.data import tfds_builder

    start = time.perf_counter()
    dataset_dir = pathlib.Path(labelme_dir).resolve()
    jsons = layout.list_labelme_jsons(dataset_dir)
    if not jsons:
        raise FileNotFoundError(f"{dataset_dir / layout.LABELME_DIR}: no LabelMe .json files; "
                                "expected labelme/<patient>/<patient>_slice<k>.json")
    out = _fresh_dir(out)
    rows = art.data_files(dataset_dir)
    fingerprint = art.fingerprint_of(rows)
    art.atomic_write_text(out / art.MANIFEST_FILE, "path\tbytes\tsha256\n" + "".join(
            f"{rel}\t{size}\t{digest}\n" for rel, size, digest in rows))

    tfds_config = tfds_config or _tfds_config_of(dataset_dir)
    tfds_dir = out / "tfds"
    ds, _ = tfds_builder.load_dataset(dataset_dir, tfds_dir, tfds_config)
    bad = [f"{b.path}: {b.reason}" for b in tfds_builder.bad_files(dataset_dir)]
    _, issues = tfds_builder.read_patient_spacing(dataset_dir / layout.PATIENTS_CSV)
    slices: dict[str, int] = {}
    no_spacing = 0
    for patient, spacing in ds.map(lambda ex: (ex["patient"], ex["pixel_spacing_mm"])
                                   ).as_numpy_iterator():
        slices[patient.decode()] = slices.get(patient.decode(), 0) + 1
        no_spacing += int(not np.all(np.isfinite(spacing)))
    if not slices:
        raise ValueError(f"{dataset_dir}: no readable LabelMe example ({len(bad)} file(s) "
                         f"skipped: {bad[:3]})")

    own_folds = dataset_dir / layout.FOLDS_JSON
    if own_folds.is_file():
        folds = folds_lib.load_folds(own_folds)
        folds_path = own_folds
        missing = sorted(set(slices) - set(folds.assignment))
        if missing:
            raise ValueError(f"{own_folds}: field 'folds': {len(missing)} patient(s) of the dataset "
                             f"have no fold (e.g. {missing[:3]}); expected every patient")
    else:
        grades = {}
        if (dataset_dir / layout.DISCS_CSV).is_file():
            grades, grade_issues = folds_lib.read_worst_grades(dataset_dir / layout.DISCS_CSV)
            issues += grade_issues
        assignment = folds_lib.make_folds(sorted(slices), grades, k=k, seed=seed)
        folds_path = folds_lib.write_folds(
                out / layout.FOLDS_JSON, assignment, k=k, seed=seed, source=str(dataset_dir),
                stratified_by=(folds_lib.STRATIFIED_BY_GRADE if grades else folds_lib.NOT_STRATIFIED))
        folds = folds_lib.load_folds(folds_path)
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


# === Trainer ===
def trainer(examples: art.Examples, config, out: Union[str, os.PathLike]) -> art.Model:
    """Trains a segmentation model on ``examples``' training folds and exports it.

    Runs ``seg_lib.run`` with ``config.fold`` set to the held-out fold (so the model never
    sees the Evaluator's patients), then exports ``out/fold_<i>/model.keras`` as a SavedModel
    to ``out/serving_model/1`` with ``spoils_tf.export.serving.export_saved_model``.

    Args:
        examples: from :func:`example_gen`.
        config: a segmentation experiment config (``configs/seg_unet.py``,
            ``configs/seg_deeplabv3plus.py``); not modified (a copy is used).
        out: a new artifact directory (also ``seg_lib.run``'s workdir).

    Returns:
        ``Model``; ``metrics`` holds training time, epochs and first/last training loss.

    Raises:
        ValueError: ``config`` has no ``model``/``data``/``train`` sections (not a
            segmentation config).
        FileExistsError: ``out`` already holds an artifact.
    """
    import keras

    from spoils_tf.data import folds as folds_lib
    from spoils_tf.export import serving
    from spoils_tf.train import seg_lib
    import spoils_tf.models  # noqa: F401  (registers the custom layers for loading)

    for section in ("model", "data", "train"):
        if section not in config:
            raise ValueError(f"trainer config: section {section!r} is missing; expected a "
                             "segmentation experiment config (configs/seg_*.py)")
    out = _fresh_dir(out)
    cfg = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") \
        else config
    cfg.fold = str(examples.eval_fold)
    cfg.data.labelme_dir = examples.dataset_dir
    cfg.data.folds_path = examples.folds_path
    cfg.data.tfds_data_dir = examples.tfds_dir
    folds = folds_lib.load_folds(examples.folds_path)
    result = seg_lib.run(cfg, out, examples=_load_examples(examples), folds=folds)
    fold_metrics = result["folds"][examples.eval_fold]
    model_path = out / f"fold_{examples.eval_fold}" / "model.keras"
    model = keras.saving.load_model(model_path)
    serving_dir = serving.export_saved_model(model, out, "serving_model", version=1,
                                             resize_mode=cfg.data.resize_mode)
    metrics = {k: fold_metrics[k] for k in ("train_seconds", "epochs_run", "train_loss_first",
                                            "train_loss_last", "train_patients") if k in fold_metrics}
    model_art = art.Model(
            uri=str(out), producer="Trainer", created=art.utc_now(),
            fingerprint=examples.fingerprint, config=art.to_plain_config(cfg), metrics=metrics,
            parents=(examples.uri,), kind="segmentation", model_path=str(model_path),
            serving_model_dir=str(serving_dir), examples_uri=examples.uri)
    art.write_artifact(model_art)
    log.info("Trainer: %s trained in %.1f s -> %s", cfg.model.name,
             metrics.get("train_seconds", float("nan")), out)
    return model_art


# === Evaluator ===
def evaluator(model: art.Model, examples: art.Examples,
              thresholds: Union[str, Mapping[str, Any]], out: Union[str, os.PathLike]
              ) -> tuple[art.ModelEvaluation, art.ModelBlessing]:
    """Scores ``model`` on the held-out fold of ``examples`` and blesses it or not.

    Metrics: ``seg_lib.evaluate_model`` on the ``eval_patients`` (the slices the training
    config used: ``data.max_slices_per_patient``), pooled over slices at their original
    resolution. Blessed only when every threshold holds (:func:`bless`) and at least one
    slice was scored. Writes ``out/evaluation`` (ModelEvaluation) and ``out/blessing``
    (ModelBlessing, with an empty ``BLESSED`` or ``NOT_BLESSED`` file).

    Raises:
        ValueError: invalid thresholds or a threshold on an unknown metric (checked before
            the model is evaluated); a model trained on other examples (fingerprints differ).
        FileExistsError: ``out`` already holds the artifacts.
    """
    import keras

    from spoils_tf.metrics import segmentation as seg_metrics
    from spoils_tf.train import seg_lib
    import spoils_tf.models  # noqa: F401

    known = seg_metrics.SegmentationMetrics().result()
    known["slices"] = float("nan")
    bless(known, thresholds)          # fail fast on a bad spec or an unknown metric
    if model.fingerprint.get("sha256") != examples.fingerprint.get("sha256"):
        raise ValueError(f"model {model.uri} was trained on data with fingerprint "
                         f"{model.fingerprint.get('sha256')}, the examples {examples.uri} have "
                         f"{examples.fingerprint.get('sha256')}; evaluate on the same dataset")
    out = pathlib.Path(out).resolve()
    eval_dir, blessing_dir = _fresh_dir(out / "evaluation"), _fresh_dir(out / "blessing")
    start = time.perf_counter()
    ds = _load_examples(examples)
    data_cfg = model.config.get("data", {})
    keys = seg_lib.central_slice_keys(ds, int(data_cfg.get("max_slices_per_patient", 0) or 0))
    keras_model = keras.saving.load_model(model.model_path)
    metrics = seg_lib.evaluate_model(keras_model, ds, list(examples.eval_patients),
                                     data_cfg.get("resize_mode", "letterbox"), keys)
    metrics["eval_seconds"] = time.perf_counter() - start
    spec = thresholds if isinstance(thresholds, str) else dict(thresholds)
    evaluation = art.ModelEvaluation(
            uri=str(eval_dir), producer="Evaluator", created=art.utc_now(),
            fingerprint=examples.fingerprint, config={"thresholds": spec,
                                                      "eval_patients": list(examples.eval_patients)},
            metrics=metrics, parents=(model.uri, examples.uri), model_uri=model.uri,
            examples_uri=examples.uri, eval_fold=examples.eval_fold)
    art.write_artifact(evaluation)
    blessed, checks, failed = bless(metrics, thresholds)
    if not metrics.get("slices"):
        blessed = False
        failed.append("no held-out slice was evaluated (slices = 0)")
    blessing = art.ModelBlessing(
            uri=str(blessing_dir), producer="Evaluator", created=art.utc_now(),
            fingerprint=examples.fingerprint, config={"thresholds": spec},
            metrics={c["metric"]: c["value"] for c in checks}, parents=(model.uri, evaluation.uri),
            blessed=bool(blessed), checks=tuple(checks), failed=tuple(failed),
            model_uri=model.uri, evaluation_uri=evaluation.uri)
    (blessing_dir / (BLESSED_FILE if blessed else NOT_BLESSED_FILE)).touch()
    art.write_artifact(blessing)
    log.info("Evaluator: %s; %s", "BLESSED" if blessed else "NOT blessed",
             "; ".join(failed) if failed else "all thresholds met")
    return evaluation, blessing


# === Pusher ===
def _check_blessing(model: art.Model, blessing: art.ModelBlessing) -> None:
    """Raises NotBlessedError unless ``blessing`` is a positive verdict on ``model``."""
    if blessing.model_uri != model.uri:
        raise NotBlessedError(f"the blessing {blessing.uri} is for model {blessing.model_uri}, "
                              f"not for {model.uri}; evaluate this model first")
    if not blessing.blessed:
        raise NotBlessedError(f"model {model.uri} is not blessed, refusing to push it; failed "
                              f"thresholds: {'; '.join(blessing.failed) or 'none recorded'}")
    on_disk = pathlib.Path(blessing.uri)
    if not (on_disk / BLESSED_FILE).is_file() or (on_disk / NOT_BLESSED_FILE).exists():
        raise NotBlessedError(f"{on_disk}: no {BLESSED_FILE} marker next to the blessing record; "
                              "refusing to push")


def pusher(model: art.Model, blessing: art.ModelBlessing, base_dir: Union[str, os.PathLike],
           model_name: str) -> art.PushedModel:
    """Publishes a blessed model as ``<base_dir>/<model_name>/<version>/`` for TF Serving.

    The SavedModel (``model.serving_model_dir``) is copied into a hidden temporary folder in
    ``<base_dir>/<model_name>/`` together with the push record
    (``assets.extra/metadata.json``, the ``PushedModel`` artifact), then renamed to the next
    integer version with :func:`rename_no_replace`. On any failure the temporary folder is
    removed: no partial version is ever visible.

    Returns:
        ``PushedModel`` whose ``uri`` is the version directory.

    Raises:
        NotBlessedError: the blessing is negative or belongs to another model.
        ValueError: ``model_name`` is not a plain folder name.
        FileNotFoundError: the model has no SavedModel.
        FileExistsError: the version directory appeared while pushing (a concurrent push):
            nothing is overwritten; push again to take the next version.
    """
    _check_blessing(model, blessing)
    if not model_name or os.sep in model_name or model_name.startswith(".") or \
            (os.altsep and os.altsep in model_name):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    src = pathlib.Path(model.serving_model_dir)
    if not (src / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{src}: no saved_model.pb; the Model artifact {model.uri} has no "
                                "SavedModel to push")
    base_dir = pathlib.Path(base_dir).resolve()
    model_dir = base_dir / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    final = model_dir / str(version)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-push-{version}-"))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        pushed = art.PushedModel(
                uri=str(final), producer="Pusher", created=art.utc_now(),
                fingerprint=model.fingerprint,
                config={"base_dir": str(base_dir), "model_name": model_name},
                metrics=dict(blessing.metrics), parents=(model.uri, blessing.uri),
                base_dir=str(base_dir), model_name=model_name, version=version,
                model_uri=model.uri, blessing_uri=blessing.uri)
        art.write_artifact(pushed, directory=tmp / PUSH_RECORD_DIR)
        rename_no_replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Pusher: %s version %d -> %s", model_name, version, final)
    return pushed


def read_pushed(version_dir: Union[str, os.PathLike]) -> art.PushedModel:
    """The ``PushedModel`` record of a pushed version directory."""
    return art.read_artifact(pathlib.Path(version_dir) / PUSH_RECORD_DIR, art.PushedModel)


# === Pipeline ===
def _next_run_dir(workdir: pathlib.Path) -> pathlib.Path:
    runs = [int(p.name[4:]) for p in workdir.glob("run_*") if p.name[4:].isdigit()]
    for n in range(max(runs, default=0) + 1, max(runs, default=0) + 1000):
        path = workdir / f"run_{n}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"{workdir}: could not create a new run_<n> directory")


def _dataset_dir(config, workdir: pathlib.Path) -> pathlib.Path:
    """The configured dataset, or a synthetic cohort made once in ``workdir/synthetic``."""
    configured = str(config.examples.labelme_dir or "")
    if configured:
        return pathlib.Path(configured)
    out = workdir / "synthetic"
    if not (out / layout.LABELME_DIR).is_dir():
        from spoils_tf.data import synthetic
        syn = config.examples.synthetic
        rc = synthetic.main(["--patients", str(syn.patients), "--slices-per-patient",
                             str(syn.slices_per_patient), "--seed", str(syn.seed),
                             "--size", str(syn.size), "--out", str(out), "--no-progress"])
        if rc:
            raise RuntimeError(f"spoils synth --out {out} failed with exit code {rc}")
    return out


def run_pipeline(config, workdir: Union[str, os.PathLike]) -> dict[str, Any]:
    """ExampleGen -> Trainer -> Evaluator -> Pusher (the Pusher only when blessed).

    Artifacts go to ``workdir/run_<n>/{ExampleGen,Trainer,Evaluator}`` (a new ``n`` per call);
    pushed versions to ``config.pusher.base_dir`` ("" = ``workdir/serving``).

    Returns:
        ``{"run_dir", "examples", "model", "evaluation", "blessing", "pushed" (None when not
        blessed), "seconds": {stage: wall seconds}}``.
    """
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = _next_run_dir(workdir)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = _dataset_dir(config, workdir)
    e = config.examples
    examples = example_gen(dataset, run_dir / "ExampleGen", k=int(e.k), seed=int(e.seed),
                           eval_fold=int(e.eval_fold), tfds_config=str(e.tfds_config))
    seconds["ExampleGen"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = trainer(examples, config.trainer, run_dir / "Trainer")
    seconds["Trainer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation, blessing = evaluator(model, examples, config.evaluator.thresholds,
                                     run_dir / "Evaluator")
    seconds["Evaluator"] = time.perf_counter() - t0
    pushed = None
    if blessing.blessed:
        t0 = time.perf_counter()
        base = pathlib.Path(config.pusher.base_dir or workdir / "serving")
        pushed = pusher(model, blessing, base, str(config.pusher.model_name))
        seconds["Pusher"] = time.perf_counter() - t0
    art.atomic_write_text(run_dir / "run_summary.json", json.dumps(
            art.jsonable({"examples": examples.uri, "model": model.uri,
                           "evaluation": evaluation.uri, "blessing": blessing.uri,
                           "blessed": blessing.blessed, "failed": list(blessing.failed),
                           "pushed": pushed.uri if pushed else None, "seconds": seconds}),
            indent=2) + "\n")
    return {"run_dir": run_dir, "examples": examples, "model": model, "evaluation": evaluation,
            "blessing": blessing, "pushed": pushed, "seconds": seconds}


def summary_text(result: Mapping[str, Any]) -> str:
    """Human-readable summary of :func:`run_pipeline`'s result (artifact paths, metrics)."""
    ex, model, ev, bl, pushed = (result[k] for k in ("examples", "model", "evaluation",
                                                      "blessing", "pushed"))
    m = ev.metrics
    lines = [
            f"run: {result['run_dir']}",
            f"ExampleGen  {ex.uri}",
            f"  {ex.metrics['patients']} patients, {ex.metrics['slices']} slices, "
            f"{ex.metrics['bad_files']} bad file(s); eval fold {ex.eval_fold} "
            f"({len(ex.eval_patients)} patients); data sha256 {ex.fingerprint['sha256'][:16]}...",
            f"Trainer     {model.uri}",
            f"  {model.config.get('model', {}).get('name', '?')}: "
            f"{model.metrics.get('train_seconds', float('nan')):.1f} s, loss "
            f"{model.metrics.get('train_loss_first', float('nan')):.4f} -> "
            f"{model.metrics.get('train_loss_last', float('nan')):.4f}",
            f"Evaluator   {ev.uri}",
            f"  {int(m.get('slices', 0))} held-out slices: pixel accuracy "
            f"{_fmt(m.get('pixel_accuracy'))}, Dice fg-macro {_fmt(m.get('dice/fg_macro'))}, "
            f"level accuracy {_fmt(m.get('level_accuracy'))}",
            f"  blessing {bl.uri}: {'BLESSED' if bl.blessed else 'NOT blessed'}"
            + ("" if bl.blessed else f" ({'; '.join(bl.failed)})"),
            f"Pusher      {pushed.uri} (version {pushed.version})" if pushed else
            "Pusher      skipped: model not blessed",
            "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()),
    ]
    return "\n".join(lines)


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.4f}"
