"""Disc grading from geometry features, cross-validated by patient: ``run(config, workdir)``.

Input: the feature table written by ``spoils features --data DIR --out DIR/features.parquet``
(one row per ``(patient, slice, level)``: the measurement columns of ``spoils_tf.geometry``,
the labels ``pfirrmann`` / ``severity`` / ``grade_class``, optionally ``fold`` and ``reason``).
The path is REQUIRED: ``config.data.features_path`` (the configs default it to
``<configs.base.DEFAULT_SPIDER_DATASET_DIR>/features.parquet``); a missing file raises with
the commands that make it. This module does not run segmentation or measurement itself, so one
feature table (from ground-truth masks, or from a segmentation model's masks) is exactly one
experiment. ``config.data.synthetic.enabled`` writes a small synthetic table into the workdir
instead (smoke runs and tests; it checks the plumbing, not the science).

For every model of ``config.models`` (``spoils_tf.classical.models.CLASSIFIERS``: logreg,
xgboost, gradient_boosting, svm, lightgbm) and every target of ``config.targets``
(``grade_class`` 11 classes, ``pfirrmann`` PG1-5, ``binary`` PG1-3 vs PG4-5), fold ``k`` is
predicted by a model fitted on the rows of the other folds only. Folds (``config.split``):

* ``"patient"`` (default; every headline number): from ``folds.json`` (``spoils folds``):
  ``config.data.folds_path``, else ``<features dir>/folds.json``, else ``<workdir>/folds.json``,
  else made once with ``spoils_tf.data.folds.make_folds`` and written to
  ``<workdir>/folds.json``. Every slice and disc of a patient is on one side. A ``fold``
  column in the table that disagrees with the folds file raises (stale table).
* ``"slice"``: LEAKAGE MODE. Each ``(patient, slice)`` gets a random fold (same ``k``),
  ignoring the patient, so other slices of the same disc are in training (as
  ``grade_cnn_lib.slice_level_folds``). For comparison only; labelled LEAKY everywhere.
* ``"leakage"``: runs ``"patient"`` (all ``config.models``) and ``"slice"``
  (``config.leakage_models``) and writes the side-by-side table.

Labels: a row is scored only for a target it has a label for; rows without one are still
predicted (``y_true`` empty in ``oof_predictions``) and counted in every table as
"unlabelled", never dropped. Metrics (``spoils_tf.metrics.classification``): accuracy and IoU
(the paper's classification "IoU", read as macro Jaccard) as mean +- SD over folds with the
paper's numbers beside, and pooled out-of-fold macro-F1, balanced accuracy, quadratic
weighted kappa, macro one-vs-rest AUROC, Brier score, each with a patient-level bootstrap
95 % CI. Final models (fitted on every labelled row, for ``spoils predict``) are saved with
``spoils_tf.classical.io.save_classifier`` (skops + sha256 sidecar, with feature names).

Workdir::

    config.json                        the resolved config
    folds.json                         only if the folds had to be made here
    <split>/folds_used.json            fold of every (patient, slice, level) row
    <split>/<target>/<model>/folds/fold_<k>.csv|.json  held-out predictions + fold facts
    <split>/<target>/<model>/oof_predictions.csv|.parquet  patient, slice, level, fold,
                                       target, y_true, y_pred, prob/<class>
    <split>/<target>/<model>/fold_metrics.csv, summary.json, confusion.png
    <split>/<target>/comparison.md|.csv|.json   the paper's table, one row per model
    <split>/results.md                 every target's table (+ the anchors)
    leakage.md|.csv|.json              patient- vs slice-level folds (split=leakage)
    models/<target>/<model>.skops(.json)   final models (fold spec "all" only)
    summary.md                         everything above in one page

Folds may run in separate processes (``config.fold = "3"``); each run re-aggregates every
finished fold in the workdir (a fold left by a run with other features/params raises).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from spoils_tf import fileio, labels
from spoils_tf.classical import io as cio
from spoils_tf.classical import models as cmodels
from spoils_tf.data import folds as folds_lib
from spoils_tf.data.folds import folds_to_run, slice_level_folds  # re-exported
from spoils_tf.metrics import classification as cm
from spoils_tf.metrics import tables

SPLITS: tuple[str, ...] = ("patient", "slice")
MODES: tuple[str, ...] = SPLITS + ("leakage",)
KEY_COLUMNS: tuple[str, ...] = cmodels.KEY_COLUMNS
# Columns of ``geometry.measure.MEASUREMENT_COLUMNS`` that are not grading features: the level
# name (a key), the disc centroid in pixels (where the disc is in the image, not what it is)
# and the failure codes.
NON_FEATURE_COLUMNS: tuple[str, ...] = ("level", "centroid_row", "centroid_col", "reason")
LEVEL_INDEX_COLUMN = "level_index"
LEAKY_BANNER = ("LEAKY SPLIT (split=slice): folds were drawn per slice ignoring patients, so "
                "other slices of every test disc were in training. These numbers are NOT an "
                "estimate of performance on new patients.")
# The paper's geometry result (%), 11-class target, private data (4260 disc slices):
# "the Gradient Boosting Classifier ... accuracy=91.65% and IoU=84.59%". Its CV protocol
# (patient or slice level) is not stated.
PAPER_NUMBERS: dict[str, dict[str, dict[str, float]]] = {
    "grade_class": {"gradient_boosting": {"accuracy": 91.65, "iou_macro": 84.59}},
}
# Published results on the same dataset family (SPIDER) to compare with, as fractions.
# "relation" says how the number was given.
ANCHORS: dict[str, tuple[dict[str, Any], ...]] = {
    "pfirrmann": (
        {"source": "SPIDER radiomics + LightGBM/TabPFN", "metric": "auroc_macro",
         "value": 0.867, "relation": "="},
        {"source": "SPIDER radiomics + LightGBM/TabPFN", "metric": "accuracy",
         "value": 0.603, "relation": "="},
        {"source": "SpineNet", "metric": "balanced_accuracy", "value": 0.78, "relation": "="},
        {"source": "SpineNet (kappa as reported)", "metric": "kappa_quadratic",
         "value": 0.68, "relation": "="},
    ),
    "binary": (
        {"source": "SPIDER PG1-3 vs PG4-5", "metric": "auroc_macro", "value": 0.93,
         "relation": ">="},
        {"source": "SPIDER PG1-3 vs PG4-5", "metric": "accuracy", "value": 0.86,
         "relation": "~"},
    ),
}
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                                    "kappa_quadratic", "auroc_macro", "brier", "log_loss")
LEAKAGE_METRICS: tuple[str, ...] = ("accuracy", "iou_macro", "f1_macro", "auroc_macro")

log = logging.getLogger(__name__)


# === Files ===
def read_predictions(stem: str | os.PathLike) -> pd.DataFrame:
    """Reads ``<stem>.parquet`` (else ``<stem>.csv``) with patient/level as str, slice as int.

    Raises:
        FileNotFoundError: neither file exists.
    """
    stem = pathlib.Path(stem)
    pq, csv = stem.with_name(stem.name + ".parquet"), stem.with_name(stem.name + ".csv")
    if pq.is_file():
        df = pd.read_parquet(pq)
    elif csv.is_file():
        df = pd.read_csv(csv, dtype={"patient": str, "level": str, "y_true": str,
                                     "y_pred": str})
    else:
        raise FileNotFoundError(f"{stem}: no predictions (.parquet or .csv)")
    return _normalise_keys(df, str(stem))


# === Feature table ===
def default_feature_columns() -> tuple[str, ...]:
    """The grading features, from the geometry module's own constant.

    ``spoils_tf.geometry.features.FEATURE_COLUMNS`` when that module exposes it; otherwise
    ``spoils_tf.geometry.measure.MEASUREMENT_COLUMNS`` without ``NON_FEATURE_COLUMNS``, plus
    the volumes in ``features.VOLUME_COLUMNS`` (names ending ``_mm3``: the paper's "disk
    volume"). Slice counts, slice positions and ``ivd_label`` are never features.
    """
    try:
        from spoils_tf.geometry import features as gfeatures
    except ImportError:
        gfeatures = None
    cols = getattr(gfeatures, "FEATURE_COLUMNS", None)
    if cols is None:
        from spoils_tf.geometry import measure
        cols = [c for c in measure.MEASUREMENT_COLUMNS if c not in NON_FEATURE_COLUMNS]
        cols += [c for c in getattr(gfeatures, "VOLUME_COLUMNS", ()) if c.endswith("_mm3")]
    return tuple(str(c) for c in cols)


def resolve_feature_columns(df: pd.DataFrame, configured: Sequence[str] = ()
                            ) -> tuple[list[str], list[str]]:
    """The feature columns to use: ``(used, missing)``.

    Args:
        df: the feature table.
        configured: explicit column names (``config.features.columns``); empty = the default
            list (``default_feature_columns``), of which the table may hold a subset.

    Returns:
        ``used``: columns present in ``df``, in list order; ``missing``: default columns the
        table lacks (reported, not fatal). Explicit columns must all exist.

    Raises:
        KeyError: an explicit column is missing, or no default column is in the table.
        ValueError: a feature column is not numeric.
    """
    if configured:
        used = [str(c) for c in configured]
        absent = [c for c in used if c not in df.columns]
        if absent:
            raise KeyError(f"config.features.columns: {absent} not in the feature table; it "
                           f"has {list(df.columns)}")
        missing: list[str] = []
    else:
        default = default_feature_columns()
        used = [c for c in default if c in df.columns]
        missing = [c for c in default if c not in df.columns]
        if not used:
            raise KeyError(f"the feature table has none of the feature columns {default}; "
                           f"it has {list(df.columns)}")
    bad = [c for c in used if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"feature column(s) {bad} are not numeric")
    return used, missing


def add_level_index(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with ``level_index`` = position of ``level`` in ``labels.DISC_NAMES``
    (0 = T12-L1 ... 5 = L5-S1), float; NaN for an unknown level name."""
    index = {name: float(i) for i, name in enumerate(labels.DISC_NAMES)}
    out = df.copy()
    out[LEVEL_INDEX_COLUMN] = out["level"].astype(str).map(index).astype(np.float64)
    return out


def _normalise_keys(df: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing key column(s) {missing}; expected {KEY_COLUMNS}")
    df = df.copy()
    df["patient"] = df["patient"].astype(str)
    df["level"] = df["level"].astype(str)
    if df["slice"].isna().any():
        raise ValueError(f"{source}: field 'slice' is empty on {int(df['slice'].isna().sum())} "
                         "row(s); expected an integer slice index")
    df["slice"] = df["slice"].astype(np.int64)
    return df


def load_feature_table(path: str | os.PathLike) -> pd.DataFrame:
    """Reads a feature table (``.parquet`` or ``.csv``); keys normalised (patient/level str,
    slice int64), row order kept.

    Raises:
        FileNotFoundError: no such file (the message says how to make one).
        ValueError: unknown suffix, a key column missing, a duplicated key, or no rows.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no feature table. Make one with `spoils convert-spider --src SRC --out "
            f"DIR && spoils folds --data DIR && spoils features --data DIR --out {path}` "
            "(or set --config.data.features_path)")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".csv":
        df = pd.read_csv(path, dtype={"patient": str, "level": str, "grade_class": str,
                                      "severity": str, "reason": str})
    else:
        raise ValueError(f"{path}: feature table must be .parquet or .csv, got {path.suffix!r}")
    if df.empty:
        raise ValueError(f"{path}: no rows")
    df = _normalise_keys(df, str(path))
    # Nullable dtypes (Int64, string) hold pd.NA, which the target mapping does not know:
    # grades become float (NaN = unknown), class names object (None = unknown).
    if "pfirrmann" in df.columns:
        df["pfirrmann"] = pd.to_numeric(df["pfirrmann"], errors="coerce").astype(np.float64)
    for col in ("grade_class", "severity"):
        if col in df.columns:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    dup = df.duplicated(list(KEY_COLUMNS))
    if dup.any():
        first = df.loc[dup, list(KEY_COLUMNS)].iloc[0].tolist()
        raise ValueError(f"{path}: {int(dup.sum())} duplicated (patient, slice, level) key(s), "
                         f"e.g. {first}; expected one row per disc slice")
    return df.reset_index(drop=True)


def synthetic_feature_table(n_patients: int = 12, slices_per_patient: int = 3,
                            n_levels: int = 5, n_unlabelled: int = 1, seed: int = 0,
                            disc_sd: float = 0.8, slice_sd: float = 0.15,
                            feature_cols: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """A small feature table whose features depend on the class (smoke runs and tests).

    Disc ``j`` of patient ``p`` has class ``GRADE_CLASSES[(3 p + j) mod 11]`` (so every
    patient has several classes); levels are the lowest ``n_levels`` of ``labels.DISC_NAMES``,
    slices ``5, 6, ...``. Every feature ``f`` is::

        a_f (grade - 3) / 1.4 + b_f (severity index - 1) + patient_f + disc_f + noise

    with loadings ``a_f, b_f ~ N(0, 1)``, a patient effect ``N(0, 0.3)``, a disc effect
    ``N(0, disc_sd)`` shared by the slices of one disc (what a slice-level split can memorise)
    and slice noise ``N(0, slice_sd)``. The first ``n_unlabelled`` discs have no label (empty
    ``grade_class``, NaN ``pfirrmann``/``severity``), and one cell of the first feature is
    NaN with ``reason`` set (a failed measurement).

    Returns:
        ``n_patients * n_levels * slices_per_patient`` rows: ``patient`` (``syn000``...),
        ``slice``, ``level``, ``pfirrmann``, ``severity``, ``grade_class``, ``reason`` and the
        features (``default_feature_columns()`` unless given).
    """
    cols = list(feature_cols or default_feature_columns())
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, len(cols))
    b = rng.normal(0.0, 1.0, len(cols))
    levels = labels.DISC_NAMES[-n_levels:]
    rows = []
    disc = 0
    for p in range(n_patients):
        patient_effect = rng.normal(0.0, 0.3, len(cols))
        for j, level in enumerate(levels):
            cls = labels.GRADE_CLASSES[(3 * p + j) % labels.NUM_GRADE_CLASSES]
            g, sev = labels.pfirrmann_of(cls), labels.severity_of(cls)
            disc_effect = rng.normal(0.0, disc_sd, len(cols))
            labelled = disc >= n_unlabelled
            disc += 1
            for s in range(slices_per_patient):
                x = (a * (g - 3) / 1.4 + b * (labels.SEVERITIES.index(sev) - 1)
                     + patient_effect + disc_effect + rng.normal(0.0, slice_sd, len(cols)))
                row = {"patient": f"syn{p:03d}", "slice": 5 + s, "level": level,
                       "pfirrmann": float(g) if labelled else np.nan,
                       "severity": sev if labelled else "",
                       "grade_class": cls if labelled else "", "reason": ""}
                row.update(zip(cols, x.tolist()))
                rows.append(row)
    df = pd.DataFrame(rows)
    df.loc[len(df) - 1, cols[0]] = np.nan
    df.loc[len(df) - 1, "reason"] = "synthetic_failed_measurement"
    return df


# === Folds ===


def patient_folds(df: pd.DataFrame, config, workdir: pathlib.Path,
                  features_path: Optional[pathlib.Path] = None
                  ) -> tuple[np.ndarray, int, str]:
    """Patient-level fold of every row, from folds.json (search order in the module docstring).

    Returns:
        ``(fold int64 [len(df)], k, folds file used)``.

    Raises:
        ValueError: the folds file does not cover a patient of the table, or the table's own
            ``fold`` column disagrees with it.
    """
    candidates = [pathlib.Path(config.data.folds_path)] if config.data.folds_path else []
    if features_path is not None:
        candidates.append(features_path.parent / "folds.json")
    candidates.append(workdir / "folds.json")
    path = next((p for p in candidates if p.is_file()), None)
    patients = sorted(df["patient"].unique())
    if path is None:
        g = pd.to_numeric(df["pfirrmann"], errors="coerce") if "pfirrmann" in df else None
        worst = None
        if g is not None:
            worst = {p: int(v) for p, v in g.groupby(df["patient"]).max().dropna().items()}
        assignment = folds_lib.make_folds(patients, worst, k=int(config.data.k),
                                          seed=int(config.seed))
        path = workdir / "folds.json"
        folds_lib.write_folds(path, assignment, k=int(config.data.k), seed=int(config.seed),
                              stratified_by="worst_pfirrmann" if worst else "none",
                              source=str(features_path or "synthetic feature table"))
        log.info("no folds file found; made %s", path)
    folds = folds_lib.load_folds(path)
    missing = [p for p in patients if p not in folds.assignment]
    if missing:
        raise ValueError(f"{path}: folds do not cover {len(missing)} patient(s) of the feature "
                         f"table (first: {missing[:5]}); remake folds for this dataset")
    fold = df["patient"].map(folds.assignment).to_numpy(np.int64)
    if "fold" in df.columns:
        own = pd.to_numeric(df["fold"], errors="coerce")
        differ = own.notna().to_numpy() & (own.fillna(-1).to_numpy() != fold)
        if differ.any():
            bad = sorted(df.loc[differ, "patient"].unique())[:5]
            raise ValueError(f"feature table field 'fold' disagrees with {path} for patients "
                             f"{bad}: the table is stale; remake it with `spoils features`")
    return fold, int(folds.k), str(path)


# === Cross-validation ===
def _class_weight(config) -> Optional[str]:
    return str(config.class_weight) if config.class_weight else None


def model_params(config, name: str) -> dict[str, Any]:
    """Hyper-parameters of model ``name`` from ``config.model_params.<name>`` (may be absent:
    then the ``CLASSIFIERS`` defaults)."""
    params = config.model_params.get(name) if "model_params" in config else None
    return dict(params.to_dict() if hasattr(params, "to_dict") else (params or {}))


def _signature(**parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=fileio.json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def predict_fold(X: pd.DataFrame, y: np.ndarray, rows: pd.DataFrame, fold: np.ndarray, k: int,
                 target: str, model: str, params: Mapping[str, Any], seed: int,
                 class_weight: Optional[str] = "balanced") -> tuple[pd.DataFrame, dict]:
    """Fits ``model`` on the labelled rows outside fold ``k`` and predicts every row of fold k.

    Args:
        X: ``[N, F]`` features (NaN allowed); y: ``object [N]`` class names or None (from
            ``classical.models.target_labels``); rows: the key columns of the N rows;
            fold: ``int [N]``.

    Returns:
        ``(predictions, facts)``: predictions of the fold's rows (keys, ``fold``, ``target``,
        ``y_true`` (None = unlabelled), ``y_pred``, ``prob/<class>``); facts: row and patient
        counts, the patients on both sides, fit seconds.

    Raises:
        ValueError: no labelled training row or no test row.
    """
    classes = cmodels.TARGETS[target]
    labelled = np.asarray([v is not None for v in y])
    train = (fold != k) & labelled
    test = fold == k
    if not train.any() or not test.any():
        raise ValueError(f"fold {k}: {int(train.sum())} labelled training and "
                         f"{int(test.sum())} test rows; every fold needs both")
    pipe = cmodels.build_classifier(model, params, classes=classes, seed=seed,
                                    class_weight=class_weight)
    start = time.time()
    pipe.fit(X[train], y[train])
    seconds = time.time() - start
    probs = np.asarray(pipe.predict_proba(X[test]), np.float64)
    pred = rows.loc[test, list(KEY_COLUMNS)].reset_index(drop=True)
    pred["fold"] = int(k)
    pred["target"] = target
    pred["y_true"] = pd.Series(y[test], dtype=object)
    pred["y_pred"] = np.asarray(classes, object)[probs.argmax(axis=1)]
    pred[cm.prob_columns(classes)] = probs
    patients = rows["patient"].to_numpy()
    train_p, test_p = set(patients[train]), set(patients[test])
    facts = {"fold": int(k), "n_train": int(train.sum()), "n_test": int(test.sum()),
             "n_test_labelled": int((test & labelled).sum()),
             "n_train_patients": len(train_p), "n_test_patients": len(test_p),
             "patients_in_train_and_test": len(train_p & test_p), "fit_seconds": seconds}
    return pred, facts


def evaluate_predictions(pred: pd.DataFrame, classes: Sequence[str], n_boot: int = 1000,
                         seed: int = 0, ci_metrics: Sequence[str] = SUMMARY_METRICS) -> dict:
    """Metrics of an out-of-fold prediction table, per fold and pooled.

    Args:
        pred: rows with ``patient``, ``fold``, ``y_true`` (class name, or None/NaN/"" =
            unlabelled) and ``prob/<class>`` columns.
        classes: the target's class names (column order).
        n_boot: patient-level bootstrap resamples for the pooled CIs (0 = no CI).
        ci_metrics: metrics that get a CI (the others only an estimate).

    Returns:
        ``{"n_scored", "n_unlabelled", "n_patients", "folds", "per_fold": [{fold, n, metrics
        ...}], "mean", "sd" (over folds with a finite value; SD ddof=1, NaN for one fold),
        "pooled": {metric: {estimate, ci_low, ci_high, n_boot, n_valid}}, "pooled_report"
        (every key of ``classification_report``), "confusion": [[...]]}``.

    Raises:
        ValueError: no labelled row, or a probability row that does not sum to 1.
    """
    y_raw = pred["y_true"]
    labelled = (y_raw.notna() & (y_raw.astype(str) != "")).to_numpy()
    if not labelled.any():
        raise ValueError("no labelled row to score")
    scored = pred.loc[labelled].reset_index(drop=True)
    y = cm.encode(scored["y_true"], classes, field="y_true")
    probs = scored[cm.prob_columns(classes)].to_numpy(np.float64)
    dev = np.abs(probs.sum(axis=1) - 1.0)
    if dev.size and dev.max() > 1e-6:
        raise ValueError(f"probabilities do not sum to 1 (max deviation {dev.max():.3g})")
    per_fold = []
    for f in sorted(scored["fold"].unique()):
        m = (scored["fold"] == f).to_numpy()
        report = cm.classification_report(y[m], probs[m], classes)
        per_fold.append({"fold": int(f), "n": int(m.sum()),
                         "n_patients": int(scored.loc[m, "patient"].nunique()),
                         **{k: report[k] for k in SUMMARY_METRICS}})
    fold_df = pd.DataFrame(per_fold)
    mean, sd = {}, {}
    for k in SUMMARY_METRICS:
        vals = fold_df[k].to_numpy(np.float64)
        vals = vals[np.isfinite(vals)]
        mean[k] = float(vals.mean()) if vals.size else float("nan")
        sd[k] = float(vals.std(ddof=1)) if vals.size > 1 else float("nan")
    report = cm.classification_report(y, probs, classes)
    pooled = {}
    patients = scored["patient"].to_numpy()
    for k in SUMMARY_METRICS:
        if n_boot > 0 and k in ci_metrics:
            ci = cm.bootstrap_ci(cm.metric_by_name(k, len(classes)), patients, y, probs,
                                 n_boot=int(n_boot), seed=int(seed))
            pooled[k] = {"estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                         "n_boot": ci.n_boot, "n_valid": ci.n_valid}
        else:
            pooled[k] = {"estimate": report[k], "ci_low": float("nan"),
                         "ci_high": float("nan"), "n_boot": 0, "n_valid": 0}
    return {"n_scored": int(labelled.sum()), "n_unlabelled": int((~labelled).sum()),
            "n_patients": int(scored["patient"].nunique()),
            "folds": [int(f) for f in fold_df["fold"]], "per_fold": per_fold,
            "mean": mean, "sd": sd, "pooled": pooled, "pooled_report": report,
            "confusion": cm.confusion_matrix(y, probs.argmax(axis=1), len(classes)).tolist()}


# === Tables ===
def comparison_frame(summaries: Sequence[dict], target: str,
                     paper: Optional[Mapping[str, Mapping[str, float]]] = None) -> pd.DataFrame:
    """One row per model: counts, mean/SD over folds, pooled estimate and CI of every metric,
    the paper's accuracy/IoU (%) where it reports them (``paper[model]``, default
    ``PAPER_NUMBERS[target]``)."""
    paper = PAPER_NUMBERS.get(target, {}) if paper is None else paper
    rows = []
    for s in summaries:
        row = {"target": target, "model": s["model"], "split": s["split"],
               "leaky": s["split"] == "slice", "n_scored": s["n_scored"],
               "n_unlabelled": s["n_unlabelled"], "n_patients": s["n_patients"],
               "folds": " ".join(str(f) for f in s["folds"])}
        for k in SUMMARY_METRICS:
            row[f"{k}_mean"] = s["mean"][k]
            row[f"{k}_sd"] = s["sd"][k]
            p = s["pooled"][k]
            row[f"{k}_pooled"] = p["estimate"]
            row[f"{k}_ci_low"] = p["ci_low"]
            row[f"{k}_ci_high"] = p["ci_high"]
        numbers = paper.get(s["model"], {})
        row["paper_accuracy_pct"] = numbers.get("accuracy", float("nan"))
        row["paper_iou_macro_pct"] = numbers.get("iou_macro", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(row: Mapping[str, Any], k: str) -> str:
    return tables.with_ci(row[f"{k}_pooled"], row[f"{k}_ci_low"], row[f"{k}_ci_high"],
                          tables.metric_format(k))


def comparison_markdown(frame: pd.DataFrame, target: str, title: str = "") -> str:
    """The paper's comparison table for one target (markdown), with the published anchors
    (:data:`ANCHORS`) below for ``pfirrmann`` / ``binary``."""
    classes = cmodels.TARGETS.get(target, ())
    lines = []
    if len(frame) and bool(frame["leaky"].iloc[0]):
        lines += [f"**{LEAKY_BANNER}**", ""]
    lines += [title or f"Target {target} ({len(classes)} classes: {', '.join(classes)})", "",
              "| model | scored rows (patients) | unlabelled rows | accuracy % mean ± SD | "
              "IoU % mean ± SD | paper acc % | paper IoU % | accuracy % [95 % CI] | "
              "IoU % [95 % CI] | macro-F1 % [CI] | balanced acc % [CI] | QWK [CI] | "
              "AUROC % [CI] | Brier [CI] |",
              "| --- " * 14 + "|"]
    paper_cell = tables.formatter(2, missing="")
    for _, r in frame.iterrows():
        cells = [r["model"], f"{r['n_scored']} ({r['n_patients']})", r["n_unlabelled"]]
        cells += [tables.mean_sd(r[f"{k}_mean"], r[f"{k}_sd"], tables.metric_format(k))
                  for k in ("accuracy", "iou_macro")]
        cells += [paper_cell(r["paper_accuracy_pct"]), paper_cell(r["paper_iou_macro_pct"])]
        cells += [_ci(r, k) for k in ("accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                                      "kappa_quadratic", "auroc_macro", "brier")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Mean ± SD over folds (SD ddof=1); pooled out-of-fold estimate with a "
              "patient-level bootstrap 95 % CI in brackets. IoU = macro Jaccard over present "
              "classes. QWK = quadratic weighted kappa. Unlabelled rows are predicted (empty "
              "y_true in oof_predictions) but not scored."]
    if target == "grade_class":
        lines.append("Paper: gradient boosting on the geometry table, 11 classes, private data "
                     "(4260 disc slices), CV protocol not stated.")
    anchors = ANCHORS.get(target, ())
    if anchors:
        best = {}
        for k in {a["metric"] for a in anchors}:
            vals = frame[f"{k}_pooled"].to_numpy(np.float64) if len(frame) else np.array([])
            vals = vals[np.isfinite(vals)]
            best[k] = float(vals.max()) if vals.size else float("nan")
        lines += ["", "| anchor (issue 5) | metric | anchor | best model here (pooled) |",
                  "| --- | --- | --- | --- |"]
        for a in anchors:
            k = a["metric"]
            lines.append(f"| {a['source']} | {k} | {a['relation']} {tables.metric(k, a['value'])} "
                         f"| {tables.metric(k, best[k])} |")
    return "\n".join(lines) + "\n"


def leakage_frame(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Side-by-side patient- vs slice-level numbers for every (target, model) run both ways.

    Args:
        frames: ``{"patient": comparison frames concatenated, "slice": ...}``.

    Returns:
        One row per (target, model, metric): pooled and fold-mean values under each split and
        ``inflation = slice - patient`` (pooled).
    """
    pat, sli = frames["patient"], frames["slice"]
    rows = []
    if pat.empty or sli.empty:
        return pd.DataFrame(columns=["target", "model", "metric", "patient_pooled",
                                     "slice_pooled", "patient_fold_mean", "slice_fold_mean",
                                     "inflation"])
    for _, s in sli.iterrows():
        p = pat[(pat["target"] == s["target"]) & (pat["model"] == s["model"])]
        if p.empty:
            continue
        p = p.iloc[0]
        for k in LEAKAGE_METRICS:
            rows.append({"target": s["target"], "model": s["model"], "metric": k,
                         "patient_pooled": p[f"{k}_pooled"], "slice_pooled": s[f"{k}_pooled"],
                         "patient_fold_mean": p[f"{k}_mean"], "slice_fold_mean": s[f"{k}_mean"],
                         "inflation": s[f"{k}_pooled"] - p[f"{k}_pooled"]})
    return pd.DataFrame(rows)


def leakage_markdown(frame: pd.DataFrame) -> str:
    """The leakage table (markdown)."""
    lines = ["Leakage check: the same models with patient-level folds (folds.json, no patient "
             "on both sides) and with LEAKY slice-level folds (slices of one patient, and of "
             "one disc, on both sides). Pooled out-of-fold values; fold means in brackets.", "",
             "| target | model | metric | patient-level | slice-level (LEAKY) | inflation |",
             "| --- | --- | --- | --- | --- | --- |"]
    for _, r in frame.iterrows():
        k = r["metric"]
        fmt = tables.metric_format(k)
        inflation = tables.metric_format(k, signed=True, percent_suffix=" pp")(r["inflation"])
        lines.append(f"| {r['target']} | {r['model']} | {k} | {fmt(r['patient_pooled'])} "
                     f"({fmt(r['patient_fold_mean'])}) | "
                     f"{fmt(r['slice_pooled'])} ({fmt(r['slice_fold_mean'])}) "
                     f"| {inflation} |")
    return "\n".join(lines) + "\n"


# === One split ===
def _run_split(config, workdir: pathlib.Path, df: pd.DataFrame, X: pd.DataFrame,
               features: list[str], split: str, fold: np.ndarray, k: int, source: str,
               models: Sequence[str], targets: Sequence[str]) -> dict:
    split_dir = workdir / split
    if split == "slice":
        log.warning(LEAKY_BANNER)
    fileio.write_json(split_dir / "folds_used.json",
                      {"split": split, "k": k, "source": source,
                       "rows": [{"patient": p, "slice": int(s), "level": lv, "fold": int(f)}
                                for p, s, lv, f in zip(df["patient"], df["slice"], df["level"],
                                                       fold)]})
    if split == "patient":
        per_patient = pd.Series(fold).groupby(df["patient"].to_numpy()).nunique()
        if (per_patient > 1).any():
            raise ValueError(f"patients {per_patient[per_patient > 1].index[:5].tolist()} in "
                             "more than one fold")
    run_folds = folds_to_run(config.fold, k)
    rows = df[list(KEY_COLUMNS)]
    out: dict[str, Any] = {"split": split, "k": k, "source": source, "targets": {},
                           "skipped_targets": {}, "frames": {}}
    for target in targets:
        if target not in cmodels.TARGETS:  # a config error, not a data gap: fail
            raise KeyError(f"config.targets: unknown target {target!r}; expected one of "
                           f"{tuple(cmodels.TARGETS)}")
        try:
            y = cmodels.target_labels(df, target)
        except KeyError as e:
            out["skipped_targets"][target] = str(e)
            log.warning("target %s skipped: %s", target, e)
            continue
        if not any(v is not None for v in y):
            out["skipped_targets"][target] = "no labelled row"
            log.warning("target %s skipped: no labelled row", target)
            continue
        summaries = []
        for model in models:
            params = model_params(config, model)
            sig = _signature(features=features, params=params, seed=int(config.seed),
                             class_weight=_class_weight(config), n_rows=len(df),
                             split=split, k=k)
            mdir = split_dir / target / model
            for f in run_folds:
                pred, facts = predict_fold(X, y, rows, fold, f, target, model, params,
                                           int(config.seed), _class_weight(config))
                if split == "patient" and facts["patients_in_train_and_test"]:
                    raise ValueError(f"fold {f}: a patient is in both train and test")
                fileio.write_table(mdir / "folds" / f"fold_{f}", pred, parquet=False)
                fileio.write_json(mdir / "folds" / f"fold_{f}.json",
                                  {**facts, "split": split, "target": target, "model": model,
                                   "signature": sig, "params": params})
                log.info("%s %s %s fold %d: %d test rows, %.1f s", split, target, model, f,
                         facts["n_test"], facts["fit_seconds"])
            summaries.append(_aggregate_model(config, mdir, split, target, model, sig))
        frame = comparison_frame(summaries, target, PAPER_NUMBERS.get(target, {}))
        fileio.write_table(split_dir / target / "comparison", frame, parquet=False)
        fileio.write_json(split_dir / target / "comparison.json", summaries)
        md = comparison_markdown(frame, target, _title(target, split, k))
        fileio.atomic_write_text(split_dir / target / "comparison.md", md)
        out["targets"][target] = summaries
        out["frames"][target] = frame
    results = "\n".join(comparison_markdown(f, t, _title(t, split, k))
                        for t, f in out["frames"].items())
    for t, why in out["skipped_targets"].items():
        results += f"\nTarget {t} not run: {why}\n"
    fileio.atomic_write_text(split_dir / "results.md", results)
    out["markdown"] = results
    return out


def _title(target: str, split: str, k: int) -> str:
    classes = cmodels.TARGETS[target]
    return (f"Geometry classifiers, target {target} ({len(classes)} classes), split={split}"
            f"{' (LEAKY)' if split == 'slice' else ''}, k={k} folds.")


def _aggregate_model(config, mdir: pathlib.Path, split: str, target: str, model: str,
                     sig: str) -> dict:
    """Combines every finished fold of one (split, target, model) into OOF files + summary."""
    classes = cmodels.TARGETS[target]
    fold_json = sorted((mdir / "folds").glob("fold_*.json"),
                       key=lambda p: int(p.stem.split("_")[1]))
    facts, preds = [], []
    for p in fold_json:
        meta = json.loads(p.read_text(encoding="utf-8"))
        if meta.get("signature") != sig:
            raise ValueError(f"{p}: field 'signature' {meta.get('signature')!r} != {sig!r}: this "
                             "fold was run with other features/params/data; use a fresh workdir")
        facts.append(meta)
        preds.append(pd.read_csv(p.with_suffix(".csv"), dtype={"patient": str, "level": str,
                                                               "y_true": str, "y_pred": str}))
    oof = pd.concat(preds, ignore_index=True)
    oof["y_true"] = oof["y_true"].astype(object).where(oof["y_true"].notna(), None)
    fileio.write_table(mdir / "oof_predictions", oof)
    ev = evaluate_predictions(oof, classes, n_boot=int(config.eval.n_boot),
                              seed=int(config.seed), ci_metrics=tuple(config.eval.ci_metrics))
    fold_df = pd.DataFrame(ev["per_fold"]).merge(pd.DataFrame(facts).drop(
        columns=["signature", "params", "split", "target", "model"]), on="fold", how="right")
    fileio.write_table(mdir / "fold_metrics", fold_df, parquet=False)
    cm.plot_confusion_matrix(np.asarray(ev["confusion"]), classes, mdir / "confusion.png",
                             title=f"{model} {target} out-of-fold ({split})")
    summary = {"model": model, "target": target, "split": split, "leaky": split == "slice",
               "banner": LEAKY_BANNER if split == "slice" else "", "classes": list(classes),
               "facts": facts, **ev}
    fileio.write_json(mdir / "summary.json", summary)
    return summary


# === Final models ===
def fit_final_models(df: pd.DataFrame, X: pd.DataFrame, features: Sequence[str], config,
                     out_dir: pathlib.Path, models: Sequence[str], targets: Sequence[str],
                     features_path: str) -> list[str]:
    """Fits each (target, model) on every labelled row and saves it with ``save_classifier``.

    Returns:
        the saved ``.skops`` paths (targets without a labelled row are skipped).
    """
    saved = []
    for target in targets:
        try:
            y = cmodels.target_labels(df, target)
        except KeyError:
            continue
        lab = np.asarray([v is not None for v in y])
        if not lab.any():
            continue
        for model in models:
            params = model_params(config, model)
            pipe = cmodels.build_classifier(model, params, classes=cmodels.TARGETS[target],
                                            seed=int(config.seed),
                                            class_weight=_class_weight(config))
            pipe.fit(X[lab], y[lab])
            path = cio.save_classifier(
                pipe, out_dir / target / f"{model}.skops", feature_names=list(features),
                target=target, classes=cmodels.TARGETS[target],
                extra={"experiment": config.experiment, "model": model, "params": params,
                       "features_path": features_path, "n_train": int(lab.sum()),
                       "n_patients": int(df.loc[lab, "patient"].nunique()),
                       "add_level_index": bool(config.features.add_level_index)})
            saved.append(str(path))
    return saved


# === Entry ===
def _features_path(config, workdir: pathlib.Path) -> pathlib.Path:
    if config.data.synthetic.enabled:
        s = config.data.synthetic
        path = workdir / "synthetic_features.parquet"
        if not path.is_file():
            table = synthetic_feature_table(int(s.patients), int(s.slices_per_patient),
                                            int(s.levels), int(s.unlabelled_discs),
                                            seed=int(config.seed))
            fileio.write_table(path.with_suffix(""), table)
        return path
    if not config.data.features_path:
        raise ValueError("config.data.features_path is empty and config.data.synthetic.enabled "
                         "is False: give --config.data.features_path=DIR/features.parquet "
                         "(written by `spoils features --data DIR --out ...`)")
    return pathlib.Path(config.data.features_path)


def run(config, workdir: str | os.PathLike) -> dict:
    """Cross-validated geometry classifiers for every model x target (module docstring).

    Args:
        config: an ``ml_collections.ConfigDict`` from ``configs/grade_geometry.py``.
        workdir: output directory (created).

    Returns:
        ``{"features", "features_missing", "features_path", "n_rows", "splits": {split: {"k",
        "source", "targets": {target: [model summaries]}, "skipped_targets", "frames",
        "markdown"}}, "leakage": DataFrame or None, "models_saved": [paths], "markdown"}``.

    Raises:
        FileNotFoundError: no feature table.
        ValueError/KeyError: a bad config field (split, fold, model, target), feature columns
            missing, folds not covering the patients, or a patient on both sides of a
            patient-level fold.
    """
    if config.split not in MODES:
        raise ValueError(f"config.split must be one of {MODES}, got {config.split!r}")
    bad = [m for m in list(config.models) + list(config.leakage_models)
           if m not in cmodels.CLASSIFIERS]
    if bad:
        raise ValueError(f"config.models: unknown model(s) {bad}; expected some of "
                         f"{tuple(cmodels.CLASSIFIERS)}")
    bad = [t for t in config.targets if t not in cmodels.TARGETS]
    if bad:
        raise ValueError(f"config.targets: unknown target(s) {bad}; expected some of "
                         f"{tuple(cmodels.TARGETS)}")
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fileio.save_config(config, workdir)
    features_path = _features_path(config, workdir)
    df = load_feature_table(features_path)
    features, missing = resolve_feature_columns(df, tuple(config.features.columns))
    if missing:
        log.warning("feature table lacks default feature column(s) %s", missing)
    if config.features.add_level_index:
        df = add_level_index(df)
        features = features + [LEVEL_INDEX_COLUMN]
    X = df[features].astype(np.float64)
    n_all_missing = int(X.isna().all(axis=1).sum())
    if n_all_missing:
        log.warning("%d row(s) have every feature missing; they are predicted from imputed "
                    "medians", n_all_missing)

    patient_fold, k, source = patient_folds(df, config, workdir, features_path)
    splits = ("patient", "slice") if config.split == "leakage" else (config.split,)
    result: dict[str, Any] = {"features": features, "features_missing": missing,
                              "features_path": str(features_path), "n_rows": len(df),
                              "n_rows_all_features_missing": n_all_missing, "splits": {},
                              "leakage": None, "models_saved": []}
    for split in splits:
        if split == "patient":
            fold, src, models = patient_fold, source, tuple(config.models)
        else:
            fold = slice_level_folds(df, k, int(config.seed))
            src = f"random slice-level folds (seed {int(config.seed)})"
            models = tuple(config.leakage_models if config.split == "leakage"
                           else config.models)
        result["splits"][split] = _run_split(config, workdir, df, X, features, split, fold,
                                             k, src, models, tuple(config.targets))
    if config.split == "leakage":
        frames = {s: pd.concat(list(result["splits"][s]["frames"].values()) or [pd.DataFrame()],
                               ignore_index=True) for s in SPLITS}
        leak = leakage_frame(frames)
        fileio.write_table(workdir / "leakage", leak, parquet=False)
        fileio.write_json(workdir / "leakage.json", leak.to_dict(orient="records"))
        fileio.atomic_write_text(workdir / "leakage.md", leakage_markdown(leak))
        result["leakage"] = leak
    if config.save_models and str(config.fold).strip().lower() in ("all", ""):
        result["models_saved"] = fit_final_models(df, X, features, config, workdir / "models",
                                                  tuple(config.models), tuple(config.targets),
                                                  str(features_path))
    md = [f"# Geometry classifiers ({config.experiment})", "",
          f"Feature table {features_path}: {len(df)} rows, {df['patient'].nunique()} patients, "
          f"{len(features)} features ({', '.join(features)})."
          + (f" Missing default features: {', '.join(missing)}." if missing else "")
          + (f" {n_all_missing} row(s) with every feature missing (imputed)."
             if n_all_missing else ""), ""]
    for split, r in result["splits"].items():
        md += [f"## split={split}" + (" (LEAKY)" if split == "slice" else ""), "", r["markdown"]]
    if result["leakage"] is not None:
        md += ["## Leakage check", "", leakage_markdown(result["leakage"])]
    if result["models_saved"]:
        md += [f"Final models (all labelled rows): {len(result['models_saved'])} files under "
               f"{workdir / 'models'}."]
    result["markdown"] = "\n".join(md) + "\n"
    fileio.atomic_write_text(workdir / "summary.md", result["markdown"])
    return result
