"""Disc grading by nested, patient-grouped cross-validation: ``run(config, workdir)``.

One row per disc (patient, level). Features come in families: ``geometry`` (the geometry
table of ``spoils features``, per slice, reduced to the median over the
``config.data.n_middle_slices`` slices nearest each disc's middle slice), ``radiomics``
(``spoils_tf.radiomics``: one row per disc already) and ``both``.

For every target (``pfirrmann`` PG1-5, ``binary`` PG1-3 vs PG4-5, ``grade_class`` 11
classes) and family, each OUTER fold of ``folds.json`` is held out in turn. Inside its
training patients only:

1. **Inner folds**: ``StratifiedGroupKFold(config.inner_k)`` over the training patients
   (:func:`nested_splits`; no patient on both sides, no test patient anywhere).
2. **Model and feature selection**: every candidate of :func:`candidates.candidate_grid`
   (impute -> scale -> L1 selection -> logistic regression / gradient boosting / random forest
   / SVM / cumulative-link ordinal model, class-balanced) is fitted on each inner training
   fold and predicts its inner test fold; the candidate with the best pooled inner
   ``config.selection_metric`` wins (:func:`select_candidate`).
3. **Calibration**: a :class:`candidates.CrossFitCalibrator` is fitted on the winner's inner
   out-of-fold probabilities (rows predicted by models that never saw them).
4. **Abstention** (11-class target only): the intervention threshold of decision support is
   chosen on the winner's inner out-of-fold probabilities, cross-fit calibrated
   (:func:`choose_abstention`, ``spoils_tf.classical.abstention``).
5. The winner is refitted on all training rows; the outer test fold is predicted once and
   calibrated. Only then is the test fold looked at.

Metrics over the pooled outer predictions, one row per disc, each with a 95 % patient
bootstrap CI: accuracy, balanced accuracy, macro-F1, macro one-vs-rest AUROC, quadratic
weighted kappa, Brier, top-label ECE (also Brier and ECE before calibration).

Workdir::

    config.json
    <mask_source>/<target>/<family>/folds/fold_<k>.csv|.json   predictions + what was chosen
    <mask_source>/<target>/<family>/summary.json, oof_predictions.csv, confusion.png
    <mask_source>/<target>/reliability.png                       families, calibrated
    <mask_source>/ablation.md|.csv                               family x target table
    <mask_source>/abstention.md                                  11-class: thresholds and
                                                                 what they withheld
    discs.csv                                                    the disc table's keys/labels

Each outer fold is written when it finishes; a rerun skips folds whose ``signature`` (config,
columns and data) matches, so an interrupted run resumes, and aggregates whatever is there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import time
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from spoils_tf import fileio, labels
from spoils_tf.classical import abstention
from spoils_tf.classical import candidates as cand
from spoils_tf.classical import models as cmodels
from spoils_tf.metrics import calibration as calib
from spoils_tf.metrics import classification as cm
from spoils_tf.metrics import tables

FAMILIES: tuple[str, ...] = ("geometry", "radiomics", "both")
# Targets whose classes are ordered grades (the ordinal model is tried only on these).
ORDERED_TARGETS: tuple[str, ...] = ("pfirrmann",)
METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro",
                            "kappa_quadratic", "brier", "ece")
LOWER_IS_BETTER: tuple[str, ...] = ("log_loss", "brier", "ece")
RADIOMICS_PREFIX = "radiomics/"
RAW_PREFIX = "raw/"

log = logging.getLogger(__name__)


# === The disc table ===
def geometry_per_disc(features: pd.DataFrame, n_middle: int,
                      columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Per-slice geometry rows -> one row per (patient, level).

    Each feature is the median over the ``n_middle`` slices nearest the disc's middle slice
    (``spoils_tf.radiomics.table.middle_slices``; NaN cells ignored); labels
    (``pfirrmann``, ``grade_class``) are those of the middle slice.

    Args:
        features: the ``spoils features`` table.
        n_middle: slices per disc (<= 0: all).
        columns: feature columns (default: ``grade_geometry_lib.default_feature_columns``
            present in the table).
    """
    from spoils_tf.radiomics.table import middle_slices
    from spoils_tf.train import grade_geometry_lib as ggl
    cols = list(columns) if columns is not None else \
        [c for c in ggl.default_feature_columns() if c in features.columns]
    rows = []
    for (patient, level), g in features.groupby(["patient", "level"], sort=True):
        chosen = middle_slices(g["slice"], n_middle)
        mid = middle_slices(g["slice"], 1)[0]
        sel = g[g["slice"].isin(chosen)]
        at_mid = g[g["slice"] == mid].iloc[0]
        row = {"patient": str(patient), "level": str(level),
               "pfirrmann": at_mid.get("pfirrmann"), "grade_class": at_mid.get("grade_class")}
        row.update({c: float(np.nanmedian(sel[c].to_numpy(np.float64)))
                    if np.isfinite(sel[c].to_numpy(np.float64)).any() else float("nan")
                    for c in cols})
        rows.append(row)
    return pd.DataFrame(rows)


def load_disc_table(config) -> tuple[pd.DataFrame, dict[str, list[str]], list[dict]]:
    """The disc table of ``config.data``: geometry and radiomics joined on (patient, level).

    Returns:
        ``(table, family_columns, unmatched)``: one row per disc with ``patient, level,
        pfirrmann, grade_class, fold`` and the features; ``{family: columns}``; discs present
        in only one of the two tables (kept, their other family NaN and imputed) with why.

    Raises:
        FileNotFoundError: a configured table or the folds file is missing.
        ValueError: a patient of the table is not in the folds file.
    """
    from spoils_tf.data.folds import load_folds
    from spoils_tf.train import grade_geometry_lib as ggl
    d = config.data
    geo = geometry_per_disc(ggl.load_feature_table(d.features_path), int(d.n_middle_slices))
    geo_cols = [c for c in geo.columns if c not in ("patient", "level", "pfirrmann",
                                                    "grade_class")]
    rad_path = pathlib.Path(d.radiomics_path)
    if not rad_path.is_file():
        raise FileNotFoundError(f"{rad_path}: no radiomics table; make one with `python -m "
                                "experiments.radiomics_features --config=configs/radiomics.py "
                                "--workdir=DIR` (or set --config.data.radiomics_path)")
    rad = pd.read_parquet(rad_path)
    rad["patient"] = rad["patient"].astype(str)
    rad_cols = [c for c in rad.columns if c.startswith(RADIOMICS_PREFIX)]
    rad = rad[["patient", "level", "pfirrmann", "grade_class"] + rad_cols].rename(
            columns={"pfirrmann": "_pfirrmann_rad", "grade_class": "_grade_rad"})
    table = geo.merge(rad, on=["patient", "level"], how="outer", indicator=True)
    unmatched = [{"patient": p, "level": lv,
                  "reason": "no radiomics row" if m == "left_only" else "no geometry row"}
                 for p, lv, m in zip(table["patient"], table["level"], table["_merge"])
                 if m != "both"]
    table["pfirrmann"] = pd.to_numeric(table["pfirrmann"], errors="coerce").fillna(
            pd.to_numeric(table["_pfirrmann_rad"], errors="coerce"))
    table["grade_class"] = table["grade_class"].astype(object).where(
            table["grade_class"].notna(), table["_grade_rad"].astype(object))
    table = table.drop(columns=["_merge", "_pfirrmann_rad", "_grade_rad"])
    folds = load_folds(d.folds_path)
    missing = sorted(set(table["patient"]) - set(folds.assignment))
    if missing:
        raise ValueError(f"{d.folds_path}: patients {missing[:5]} of the disc table are not in "
                         "the folds file; remake the folds or the tables")
    table["fold"] = table["patient"].map(folds.assignment).astype(np.int64)
    table = table.sort_values(["patient", "level"], kind="stable").reset_index(drop=True)
    families = {"geometry": geo_cols, "radiomics": rad_cols, "both": geo_cols + rad_cols}
    return table, families, unmatched


def target_codes(table: pd.DataFrame, target: str) -> np.ndarray:
    """``int64 [N]`` class index of ``target`` per disc (into ``cmodels.TARGETS[target]``);
    -1 = unlabelled."""
    names = cmodels.target_labels(table, target)
    index = {c: i for i, c in enumerate(cmodels.TARGETS[target])}
    return np.asarray([index[v] if v is not None else -1 for v in names], np.int64)


# === Splits ===
def nested_splits(patients: Sequence[str], y: np.ndarray, fold_ids: np.ndarray,
                  test_fold: int, inner_k: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Outer train/test rows and the inner folds of the outer training rows.

    Args:
        patients: ``[N]`` patient of each row; y: ``[N]`` class codes (-1 unlabelled);
        fold_ids: ``[N]`` outer fold of each row; test_fold: the held-out outer fold.
        inner_k: inner folds (patient-grouped, stratified by class where possible).

    Returns:
        ``(train, test, inner)``: row indices; ``train`` = labelled rows outside
        ``test_fold``, ``test`` = every row of ``test_fold``; ``inner`` = ``inner_k`` pairs
        of row indices (into the full table), both subsets of ``train``.

    Raises:
        AssertionError: a patient would be on both sides of an outer or inner split (a bug).
    """
    from sklearn.model_selection import StratifiedGroupKFold
    patients = np.asarray(patients).astype(str)
    train = np.flatnonzero((fold_ids != test_fold) & (y >= 0))
    test = np.flatnonzero(fold_ids == test_fold)
    assert not set(patients[train]) & set(patients[test]), "patient in outer train and test"
    k = min(int(inner_k), len(set(patients[train])))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed))
    inner = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for tr, te in splitter.split(np.zeros(len(train)), y[train], patients[train]):
            a, b = train[tr], train[te]
            assert not set(patients[a]) & set(patients[b]), "patient in inner train and test"
            inner.append((a, b))
    return train, test, inner


# === Inner folds ===
def inner_oof_probs(make_estimator, X: np.ndarray, y: np.ndarray,
                    splits: Sequence[tuple[np.ndarray, np.ndarray]], n_classes: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities over ``splits``.

    Args:
        make_estimator: ``() -> unfitted estimator``.
        X, y: the full arrays (row indices of ``splits`` index them).
        splits: ``(fit rows, predict rows)`` pairs.

    Returns:
        ``(rows, probs)``: the predicted rows (concatenated test rows, sorted) and their
        ``[len(rows), n_classes]`` probabilities, each from the model of the split that held
        it out.
    """
    rows = np.sort(np.concatenate([te for _, te in splits]))
    pos = {r: i for i, r in enumerate(rows)}
    probs = np.zeros((len(rows), n_classes))
    for tr, te in splits:
        est = make_estimator()
        est.fit(X[tr], y[tr])
        probs[[pos[r] for r in te]] = cand.full_proba(est, X[te], n_classes)
    return rows, probs


def _score(metric: str, y, probs, n_classes: int) -> float:
    if metric == "ece":
        return calib.expected_calibration_error(y, probs)
    return float(cm.metric_by_name(metric, n_classes)(y, probs))


def select_candidate(X: np.ndarray, y: np.ndarray, splits, candidate_list, n_classes: int,
                     metric: str, seed: int, max_features: int
                     ) -> tuple[cand.Candidate, np.ndarray, np.ndarray, list[dict]]:
    """Fits every candidate on the inner folds; the best pooled inner ``metric`` wins (the
    first listed on a tie; a candidate that raises scores worst and is reported).

    Returns:
        ``(best, rows, oof_probs_of_best, scores)``.
    """
    lower = metric in LOWER_IS_BETTER
    best, best_score, best_oof, rows, scores = None, None, None, None, []
    for c in candidate_list:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r, p = inner_oof_probs(lambda c=c: cand.build_pipeline(
                        c, seed, max_features=max_features), X, y, splits, n_classes)
            s = _score(metric, y[r], p, n_classes)
            err = ""
        except Exception as e:  # noqa: BLE001 - a failing candidate loses, the run goes on
            s, err, r, p = float("nan"), f"{type(e).__name__}: {e}", None, None
        scores.append({**c.to_dict(), metric: s, "error": err,
                       "seconds": time.perf_counter() - t0})
        if np.isfinite(s) and (best_score is None or (s < best_score if lower
                                                       else s > best_score)):
            best, best_score, best_oof, rows = c, s, p, r
    if best is None:
        raise RuntimeError(f"every candidate failed on the inner folds: "
                           f"{[s['error'] for s in scores][:3]}")
    return best, rows, best_oof, scores


def run_outer_fold(X: np.ndarray, y: np.ndarray, patients: Sequence[str], fold_ids: np.ndarray,
                   test_fold: int, columns: Sequence[str], candidate_list, n_classes: int,
                   cfg: Mapping[str, Any], abstain: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Everything of one outer fold (module docstring, steps 1-4).

    Args:
        X: ``[N, F]`` features (NaN allowed); y: ``[N]`` codes (-1 unlabelled);
        patients, fold_ids: per row; columns: the ``F`` feature names;
        candidate_list: :class:`candidates.Candidate` s; n_classes: the target's classes;
        cfg: ``inner_k``, ``seed``, ``selection_metric``, ``calibration``, ``max_features``.
        abstain: the target is the 11-class grade (``labels.GRADE_CLASSES``): also choose the
            intervention threshold on the inner folds (:func:`choose_abstention`) and count
            what it does on the test fold.

    Returns:
        ``(test_rows, calibrated [T, C], uncalibrated [T, C], facts)``; ``facts`` names the
        chosen candidate, every candidate's inner score, the selected features and the
        patients on each side; with ``abstain``, ``facts["abstention"]`` holds the threshold,
        its inner curve and ``"test"``: ``abstention.threshold_curve`` on the test fold at 0
        (no abstention) and at the threshold.
    """
    t0 = time.perf_counter()
    train, test, inner = nested_splits(patients, y, fold_ids, test_fold, cfg["inner_k"],
                                       cfg["seed"])
    fit = fit_recipe(X, y, train, inner, candidate_list, n_classes, cfg, abstain)
    raw = cand.full_proba(fit.pipeline, X[test], n_classes)
    probs = fit.calibrator.transform(raw)
    patients = np.asarray(patients).astype(str)
    facts = {"test_fold": int(test_fold), "chosen": fit.best.to_dict(),
             "inner_scores": fit.scores, "selection_metric": cfg["selection_metric"],
             "selected_features": fit.selected(columns),
             "n_features": len(columns), "n_train": int(len(train)), "n_test": int(len(test)),
             "train_patients": sorted(set(patients[train])),
             "test_patients": sorted(set(patients[test])),
             "inner_test_patients": [sorted(set(patients[te])) for _, te in inner],
             "seconds": time.perf_counter() - t0}
    if fit.abstention is not None:
        facts["abstention"] = {**fit.abstention, "test": abstention.threshold_curve(
                probs, y[test], (0.0, fit.abstention["threshold"]))}
    return test, probs, raw, facts


@dataclasses.dataclass
class RecipeFit:
    """What :func:`fit_recipe` chose and fitted.

    Attributes:
        best: the winning candidate; scores: every candidate's inner score.
        pipeline: the winner refitted on the training rows (integer class codes).
        calibrator: its calibration map, fitted on the winner's inner out-of-fold probabilities.
        abstention: :func:`choose_abstention`'s result, or None (not an 11-class target).
    """
    best: cand.Candidate
    scores: list[dict]
    pipeline: Any
    calibrator: cand.CrossFitCalibrator
    abstention: Optional[dict]

    def selected(self, columns: Sequence[str]) -> list[str]:
        """The feature names the pipeline's L1 step kept."""
        support = self.pipeline.named_steps["select"].get_support()
        return [c for c, k in zip(columns, support) if k]


def fit_recipe(X: np.ndarray, y: np.ndarray, train: np.ndarray,
               inner: Sequence[tuple[np.ndarray, np.ndarray]], candidate_list,
               n_classes: int, cfg: Mapping[str, Any], abstain: bool) -> RecipeFit:
    """The recipe on one training set (module docstring, steps 2-5 up to the test fold): the
    inner folds ``inner`` choose the candidate, fit its calibration map and, with ``abstain``,
    choose the intervention threshold; the winner is refitted on the rows ``train``."""
    best, rows, oof, scores = select_candidate(X, y, inner, candidate_list, n_classes,
                                               cfg["selection_metric"], cfg["seed"],
                                               cfg["max_features"])
    calibrator = cand.CrossFitCalibrator(cfg["calibration"]).fit(oof, y[rows])
    pipeline = cand.build_pipeline(best, cfg["seed"], max_features=cfg["max_features"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(X[train], y[train])
    chosen = (choose_abstention(oof, y[rows], rows, inner, cfg["calibration"])
              if abstain else None)
    return RecipeFit(best, scores, pipeline, calibrator, chosen)


def choose_abstention(oof: np.ndarray, y_oof: np.ndarray, rows: np.ndarray,
                      inner: Sequence[tuple[np.ndarray, np.ndarray]], method: str) -> dict:
    """The intervention threshold of an 11-class grader, chosen on its inner folds.

    Args:
        oof: ``[R, C]`` inner out-of-fold probabilities of the chosen candidate, for ``rows``
            (sorted row indices) with true codes ``y_oof``.
        inner: the inner ``(fit, held-out)`` row pairs that produced them.
        method: the calibration method.

    Returns:
        ``abstention.choose_threshold`` on the cross-fit calibrated inner probabilities (no
        inner row calibrated by a map that saw it).
    """
    group = np.empty(len(rows), np.int64)
    pos = {r: i for i, r in enumerate(rows)}
    for j, (_, te) in enumerate(inner):
        group[[pos[r] for r in te]] = j
    held_out = abstention.cross_fit_calibrated(oof, y_oof, group, method)
    return abstention.choose_threshold(held_out, y_oof)


# === Metrics ===
def summarise(pred: pd.DataFrame, classes: Sequence[str], n_boot: int, seed: int) -> dict:
    """Pooled metrics of the outer predictions, with patient-bootstrap 95 % CIs.

    Args:
        pred: ``patient, y_true`` (class name; empty = unlabelled), ``prob/<c>`` and
            ``raw/<c>`` columns.

    Returns:
        ``{"n", "n_patients", "metrics": {name: {estimate, ci_low, ci_high}}, "uncalibrated":
        {brier, ece: {...}}, "confusion"}``.
    """
    lab = pred["y_true"].notna() & (pred["y_true"].astype(str) != "")
    p = pred[lab]
    y = cm.encode(p["y_true"], classes, field="y_true")
    probs = p[cm.prob_columns(classes)].to_numpy(np.float64)
    raw = p[[RAW_PREFIX + c for c in classes]].to_numpy(np.float64)
    patients = p["patient"].astype(str).to_numpy()
    k = len(classes)

    def fn(name):
        return calib.ece_metric() if name == "ece" else cm.metric_by_name(name, k)

    def ci(name, pr):
        if n_boot <= 0:
            return {"estimate": _score(name, y, pr, k), "ci_low": float("nan"),
                    "ci_high": float("nan")}
        r = cm.bootstrap_ci(fn(name), patients, y, pr, n_boot=int(n_boot), seed=int(seed))
        return {"estimate": r.estimate, "ci_low": r.low, "ci_high": r.high}

    return {"n": int(len(p)), "n_unlabelled": int((~lab).sum()),
            "n_patients": int(len(set(patients))),
            "metrics": {m: ci(m, probs) for m in METRICS},
            "uncalibrated": {m: ci(m, raw) for m in ("brier", "ece")},
            "confusion": cm.confusion_matrix(y, probs.argmax(axis=1), k).tolist()}


# === Tables ===
def _cell(s: Mapping[str, Any], m: str) -> str:
    v = s[m] if m in s else s
    return tables.with_ci(v["estimate"], v["ci_low"], v["ci_high"], tables.metric_format(m))


def ablation_frame(results: Sequence[dict]) -> pd.DataFrame:
    """One row per (mask source, target, family): every metric with its CI, and what the
    inner folds chose."""
    rows = []
    for r in results:
        s = r["summary"]
        row = {"masks": r["mask_source"], "target": r["target"], "family": r["family"],
               "n_discs": s["n"], "n_patients": s["n_patients"], "folds": r["folds"],
               "chosen_models": r["chosen_models"], "median_features": r["median_features"]}
        for m in METRICS:
            row.update({f"{m}": s["metrics"][m]["estimate"],
                        f"{m}_ci_low": s["metrics"][m]["ci_low"],
                        f"{m}_ci_high": s["metrics"][m]["ci_high"]})
        for m in ("brier", "ece"):
            row[f"{m}_uncalibrated"] = s["uncalibrated"][m]["estimate"]
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_markdown(results: Sequence[dict]) -> str:
    """The family ablation table (markdown), one row per (masks, target, family)."""
    lines = ["| masks | target | family | discs (patients) | folds | accuracy % | balanced acc % "
             "| macro-F1 % | AUROC % | QWK | Brier | ECE | Brier / ECE uncalibrated | "
             "chosen on inner folds | median features |",
             "| --- " * 15 + "|"]
    for r in results:
        s = r["summary"]
        mets = [_cell(s["metrics"][m], m) for m in METRICS]
        unc = (f"{tables.metric('brier', s['uncalibrated']['brier']['estimate'])} / "
               f"{tables.metric('ece', s['uncalibrated']['ece']['estimate'])}")
        lines.append("| " + " | ".join([r["mask_source"], r["target"], r["family"],
                                         f"{s['n']} ({s['n_patients']})", r["folds"]] + mets
                                        + [unc, r["chosen_models"],
                                           str(r["median_features"])]) + " |")
    lines += ["", "Pooled outer-fold predictions, one per disc; 95 % patient-bootstrap CI in "
              "brackets. Model, L1 feature selection and calibration chosen/fitted on inner "
              "patient-grouped folds of each outer training set only. QWK = quadratic weighted "
              "kappa; ECE = top-label expected calibration error (10 bins)."]
    return "\n".join(lines) + "\n"


# === Run ===
def _signature(**parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _data_hash(table: pd.DataFrame, cols: Sequence[str], y: np.ndarray) -> str:
    h = pd.util.hash_pandas_object(table[["patient", "level"] + list(cols)], index=False)
    return hashlib.sha256(h.to_numpy().tobytes() + y.tobytes()).hexdigest()[:16]


def _abstention_rule() -> dict[str, Any]:
    return {"grid": abstention.THRESHOLD_GRID, "target_precision": abstention.TARGET_PRECISION,
            "min_acted": abstention.MIN_ACTED}


def _cfg(config) -> dict[str, Any]:
    return {"inner_k": int(config.inner_k), "seed": int(config.seed),
            "selection_metric": str(config.selection_metric),
            "calibration": str(config.calibration), "max_features": int(config.max_features)}


def _candidates(config, target: str) -> list[cand.Candidate]:
    grids = {m: {k: tuple(v) for k, v in config.grids[m].items()} for m in config.models}
    return cand.candidate_grid(tuple(config.models), grids, tuple(config.select_Cs),
                               ordered_target=target in ORDERED_TARGETS)


def _folds_to_run(spec: str, k: int) -> list[int]:
    from spoils_tf.data.folds import folds_to_run
    return list(folds_to_run(spec, k))


def run_cell(config, workdir: pathlib.Path, table: pd.DataFrame, columns: Sequence[str],
             target: str, family: str) -> Optional[dict]:
    """All outer folds of one (target, family): runs the missing ones, aggregates the
    finished ones. Returns the cell's result (None if no fold has finished)."""
    classes = cmodels.TARGETS[target]
    y = target_codes(table, target)
    X = table[list(columns)].to_numpy(np.float64)
    patients = table["patient"].astype(str).to_numpy()
    fold_ids = table["fold"].to_numpy(np.int64)
    k = int(fold_ids.max()) + 1
    cdir = workdir / str(config.data.mask_source) / target / family
    cfg = _cfg(config)
    cands = _candidates(config, target)
    abstain = tuple(classes) == labels.GRADE_CLASSES
    rule = {"abstention": _abstention_rule()} if abstain else {}
    sig = _signature(cfg=cfg, candidates=[c.name for c in cands], columns=list(columns),
                     data=_data_hash(table, columns, y), target=target, **rule)
    for f in _folds_to_run(str(config.fold), k):
        meta_path = cdir / "folds" / f"fold_{f}.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("signature") == sig:
                log.info("%s/%s fold %d: done before, skipped", target, family, f)
                continue
            raise ValueError(f"{meta_path}: field 'signature' {meta.get('signature')!r} != "
                             f"{sig!r}: made with another config or data; use a fresh workdir")
        test, probs, raw, facts = run_outer_fold(X, y, patients, fold_ids, f, columns, cands,
                                                 len(classes), cfg, abstain=abstain)
        pred = table.loc[test, ["patient", "level"]].reset_index(drop=True)
        pred["fold"] = f
        pred["y_true"] = [classes[v] if v >= 0 else "" for v in y[test]]
        pred["y_pred"] = [classes[i] for i in probs.argmax(axis=1)]
        for i, c in enumerate(classes):
            pred[cm.prob_column(c)] = probs[:, i]
        for i, c in enumerate(classes):
            pred[RAW_PREFIX + c] = raw[:, i]
        fileio.write_csv(cdir / "folds" / f"fold_{f}.csv", pred)
        fileio.write_json(meta_path, fileio.json_safe({**facts, "signature": sig,
                                                       "target": target, "family": family}))
        log.info("%s/%s fold %d: chose %s, %d features, %.0f s", target, family, f,
                 facts["chosen"]["name"], len(facts["selected_features"]), facts["seconds"])
    return aggregate_cell(config, cdir, target, family, sig)


def aggregate_cell(config, cdir: pathlib.Path, target: str, family: str,
                   sig: str) -> Optional[dict]:
    """Summary of every finished outer fold of one cell (files: module docstring)."""
    metas = sorted((cdir / "folds").glob("fold_*.json"), key=lambda p: int(p.stem[5:]))
    if not metas:
        return None
    facts = [json.loads(p.read_text(encoding="utf-8")) for p in metas]
    for p, m in zip(metas, facts):
        if m.get("signature") != sig:
            raise ValueError(f"{p}: field 'signature' {m.get('signature')!r} != {sig!r}")
    pred = pd.concat([pd.read_csv(p.with_suffix(".csv"), dtype={"patient": str, "y_true": str},
                                  keep_default_na=False) for p in metas], ignore_index=True)
    classes = cmodels.TARGETS[target]
    summary = summarise(pred, classes, int(config.eval.n_boot), int(config.seed))
    chosen = pd.Series([m["chosen"]["model"] for m in facts]).value_counts()
    result = {"mask_source": str(config.data.mask_source), "target": target, "family": family,
              "folds": " ".join(str(m["test_fold"]) for m in facts),
              "chosen_models": ", ".join(f"{k} x{v}" for k, v in chosen.items()),
              "chosen_per_fold": [m["chosen"]["name"] for m in facts],
              "median_features": int(np.median([len(m["selected_features"]) for m in facts])),
              "summary": summary}
    if all("abstention" in m for m in facts):
        result["abstention"] = abstention_summary(facts)
    fileio.write_csv(cdir / "oof_predictions.csv", pred)
    fileio.write_json(cdir / "summary.json", fileio.json_safe(result))
    cm.plot_confusion_matrix(np.asarray(summary["confusion"]), classes, cdir / "confusion.png",
                             title=f"{target} / {family}")
    return result


# === The shipped grader ===
FINAL = "final"


def fit_final(config, table: pd.DataFrame, columns: Sequence[str], target: str
              ) -> tuple[Any, dict[str, Any]]:
    """The recipe of one outer fold applied to every labelled disc: the model for shipping.

    Inner patient-grouped folds over ALL patients choose the candidate (model, parameters,
    L1 strength) and fit the calibration map on its out-of-fold probabilities; for the
    11-class target they also choose the intervention threshold (:func:`choose_abstention`).
    The winner is then refitted on every labelled disc.

    Args:
        table: the disc table (:func:`load_disc_table`); columns: the family's features;
        target: ``cmodels.TARGETS`` key.

    Returns:
        ``(grader, facts)``: a fitted ``classical.calibrated.CalibratedGrader`` over the
        target's class names; ``facts``: chosen candidate, inner scores, selected features,
        counts, and ``abstention`` (11-class only).
    """
    from spoils_tf.classical.calibrated import CalibratedGrader
    classes = cmodels.TARGETS[target]
    y = target_codes(table, target)
    X = table[list(columns)].to_numpy(np.float64)
    patients = table["patient"].astype(str).to_numpy()
    cfg = _cfg(config)
    every = np.zeros(len(table), np.int64)      # one outer fold; none held out
    train, _, inner = nested_splits(patients, y, every, -1, cfg["inner_k"], cfg["seed"])
    fit = fit_recipe(X, y, train, inner, _candidates(config, target), len(classes), cfg,
                     abstain=tuple(classes) == labels.GRADE_CLASSES)
    grader = CalibratedGrader(fit.pipeline, fit.calibrator, classes, list(columns)).fit()
    facts = {"target": target, "chosen": fit.best.to_dict(), "inner_scores": fit.scores,
             "selection_metric": cfg["selection_metric"], "calibration": cfg["calibration"],
             "selected_features": fit.selected(columns),
             "n_train": int(len(train)), "n_patients": int(len(set(patients[train]))),
             "inner_k": cfg["inner_k"]}
    if fit.abstention is not None:
        facts["abstention"] = fit.abstention
    return grader, facts


def run_final(config, workdir: pathlib.Path, table: pd.DataFrame,
              families: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """:func:`fit_final` for every configured (target, family), each saved as
    ``<workdir>/final/<mask_source>/<target>/<family>/model.skops`` (+ sidecar, with the
    facts under ``extra``) and ``facts.json``."""
    from spoils_tf.classical import io as cio
    out = []
    for target in config.targets:
        for family in config.families:
            grader, facts = fit_final(config, table, families[family], target)
            d = workdir / FINAL / str(config.data.mask_source) / target / family
            facts = fileio.json_safe({**facts, "family": family,
                                      "mask_source": str(config.data.mask_source)})
            cio.save_classifier(grader, d / "model.skops", feature_names=list(families[family]),
                                target=target, extra={"nested_cv_final": facts})
            fileio.write_json(d / "facts.json", facts)
            log.info("final %s/%s: chose %s, %d features%s", target, family,
                     facts["chosen"]["name"], len(facts["selected_features"]),
                     f", threshold {facts['abstention']['threshold']:g}"
                     if "abstention" in facts else "")
            out.append({"path": str(d / "model.skops"), **facts})
    return out


def abstention_summary(facts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The outer folds' abstention facts (``run_outer_fold``) side by side and pooled.

    Returns:
        ``{"per_fold": [{fold, threshold, calls, acted, over_treating, over_treating_without}],
        "pooled": {calls, acted, over_treating, precision, over_treating_without,
        precision_without}}``: ``*_without`` = every intervention call acted on (no
        threshold).
    """
    per_fold = []
    for m in facts:
        a = m["abstention"]
        none, at = a["test"]
        per_fold.append({"fold": int(m["test_fold"]), "threshold": float(a["threshold"]),
                         "calls": int(at["calls"]), "acted": int(at["acted"]),
                         "over_treating": int(at["over_treating"]),
                         "over_treating_without": int(none["over_treating"])})
    tot = {k: int(sum(r[k] for r in per_fold))
           for k in ("calls", "acted", "over_treating", "over_treating_without")}
    tot["precision"] = (1.0 - tot["over_treating"] / tot["acted"]) if tot["acted"] else None
    tot["precision_without"] = ((1.0 - tot["over_treating_without"] / tot["calls"])
                                if tot["calls"] else None)
    return {"per_fold": per_fold, "pooled": tot}


def abstention_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per cell with abstention facts: thresholds chosen per outer fold and what they
    did to the intervention calls of the test folds."""
    lines = ["| masks | family | thresholds (outer folds) | intervention calls | acted | "
             "over-treating acted | over-treating with no threshold |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        a = r.get("abstention")
        if not a:
            continue
        p = a["pooled"]
        thresholds = " ".join(f"{x['threshold']:g}" for x in a["per_fold"])
        lines.append(f"| {r['mask_source']} | {r['family']} | {thresholds} | {p['calls']} | "
                     f"{p['acted']} | {p['over_treating']} | {p['over_treating_without']} |")
    lines += ["", "Per disc of the held-out outer folds: an intervention call is a disc whose "
              "predicted 11-class grade is in the injection or surgical tier; it acts when the "
              "calibrated probability of that class reaches the fold's threshold, chosen on "
              "the inner folds only (`spoils_tf.classical.abstention`); it over-treats when the "
              "true class's tier is less intensive. Threshold 1 = every intervention withheld."]
    return "\n".join(lines) + "\n"


def run(config, workdir: str | os.PathLike) -> dict[str, Any]:
    """The nested CV of ``config`` (``configs/grade_nested.py``) into ``workdir``, with BLAS
    and OpenMP limited to ``config.threads`` threads (more threads than free cores make
    L-BFGS spin: the fits ran several times slower on the shared 2-core machine).

    Returns:
        ``{"results": [cell results], "markdown": the ablation table, "unmatched": [...]}``.
    """
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=int(config.threads)):
        return _run(config, pathlib.Path(workdir))


def _run(config, workdir: pathlib.Path) -> dict[str, Any]:
    fileio.save_config(config, workdir)
    if config.data.synthetic.enabled:
        params = {k: v for k, v in config.data.synthetic.to_dict().items() if k != "enabled"}
        table, families, unmatched = synthetic_disc_table(**params)
    else:
        table, families, unmatched = load_disc_table(config)
    fileio.write_csv(workdir / "discs.csv",
                     table[["patient", "level", "pfirrmann", "grade_class", "fold"]])
    if unmatched:
        fileio.write_csv(workdir / "unmatched.csv", pd.DataFrame(unmatched))
    if str(config.fold).strip() == FINAL:
        final = run_final(config, workdir, table, families)
        return {"results": [], "final": final, "unmatched": unmatched,
                "markdown": "".join(f"final model: {f['path']} ({f['chosen']['name']})\n"
                                    for f in final)}
    src = workdir / str(config.data.mask_source)
    results = []
    for target in config.targets:
        curves = {}
        for family in config.families:
            if family not in families:
                raise KeyError(f"config.families: unknown family {family!r}; expected one of "
                               f"{tuple(families)}")
            r = run_cell(config, workdir, table, families[family], target, family)
            if r is None:
                continue
            results.append(r)
            pred = pd.read_csv(src / target / family / "oof_predictions.csv",
                               dtype={"y_true": str}, keep_default_na=False)
            pred = pred[pred["y_true"] != ""]
            classes = cmodels.TARGETS[target]
            y = cm.encode(pred["y_true"], classes)
            curves[family] = (y, pred[cm.prob_columns(classes)].to_numpy(np.float64))
            if family == config.families[-1]:
                curves[f"{family}, uncalibrated"] = (
                        y, pred[[RAW_PREFIX + c for c in classes]].to_numpy(np.float64))
            md = ablation_markdown(results)
            fileio.atomic_write_text(src / "ablation.md", md)
            if any("abstention" in x for x in results):
                fileio.atomic_write_text(src / "abstention.md", abstention_markdown(results))
            fileio.write_csv(src / "ablation.csv", ablation_frame(results))
        if curves:
            calib.plot_reliability(curves, src / target / "reliability.png",
                                   title=f"{target}: pooled outer folds "
                                         f"({config.data.mask_source} masks)")
    md = ablation_markdown(results) if results else "no finished fold\n"
    return {"results": results, "markdown": md, "unmatched": unmatched}


# === Synthetic data (smoke runs and tests) ===
def synthetic_disc_table(patients: int = 16, levels: int = 5, n_geometry: int = 4,
                         n_radiomics: int = 12, k: int = 4, seed: int = 0
                         ) -> tuple[pd.DataFrame, dict[str, list[str]], list[dict]]:
    """A small disc table whose features depend on the Pfirrmann grade.

    Disc ``j`` of patient ``p`` has grade ``1 + (p + j) mod 5`` (severity ``L`` below 3,
    else ``M``); the first two geometry and radiomics features are
    ``grade + N(0, 0.7)``, the rest pure noise. Patient ``p`` is in outer fold ``p mod k``.

    Returns:
        As :func:`load_disc_table`.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        for j, level in enumerate(labels.DISC_NAMES[-levels:]):
            g = 1 + (p + j) % 5
            row = {"patient": f"syn{p:03d}", "level": level, "pfirrmann": float(g),
                   "grade_class": labels.grade_class(g, "L" if g < 3 else "M"), "fold": p % k}
            for i in range(n_geometry):
                row[f"geo_{i}"] = g + rng.normal(0, 0.7) if i < 2 else rng.normal()
            for i in range(n_radiomics):
                row[f"{RADIOMICS_PREFIX}f{i}"] = g + rng.normal(0, 0.7) if i < 2 \
                    else rng.normal()
            rows.append(row)
    table = pd.DataFrame(rows)
    geo = [f"geo_{i}" for i in range(n_geometry)]
    rad = [f"{RADIOMICS_PREFIX}f{i}" for i in range(n_radiomics)]
    return table, {"geometry": geo, "radiomics": rad, "both": geo + rad}, []
