"""CNN + geometry ensemble on out-of-fold predictions: ``run(config, workdir)``.

Inputs (both out-of-fold, so every probability comes from a model that never saw the row's
patient):

* the CNN run (``experiments.grade_cnn``): ``<cnn_workdir>/oof_predictions.parquet`` (or
  ``.csv``) with ``patient, slice, level, fold, y_true, prob/<class>`` and
  ``<cnn_workdir>/summary.json`` (its ``split``, ``classes`` and ``backbone`` are checked);
* the geometry run (``experiments.grade_geometry``):
  ``<geometry_workdir>/<split>/<target>/<geometry_model>/oof_predictions.parquet``.

The two are lined up on ``(patient, slice, level)`` (``spoils_tf.ensemble.join_predictions``
on the keys both have). Rows in one table only (a disc measured but its crop skipped, or an
unlabelled row the CNN never saw) are written to ``unmatched.csv`` with the side they come
from and why (``explain_unmatched``: a geometry row's reason is looked up in the CNN run's
``skipped.csv``, e.g. a crop beyond ``data.max_slices_per_patient``) and counted in every
table (``config.on_unmatched = "raise"`` refuses them instead).
The folds of a row must agree between the two runs (same folds.json), else it raises: the
cross-fitted weights would leak otherwise.

Methods compared (same metrics as ``grade_geometry_lib``: accuracy and IoU as mean +- SD over
folds, pooled macro-F1, balanced accuracy, QWK, macro AUROC, Brier with patient-bootstrap
95 % CIs):

* ``cnn:<backbone>`` and ``<geometry_model>`` alone, on the joined rows;
* ``mean``: the paper's ensemble, the unweighted mean of the two probability vectors;
* ``cross_fit``: a convex weight ``w`` (CNN) / ``1 - w`` (geometry) chosen on a grid of step
  ``config.weight_step`` to minimise log-loss on the OTHER folds' rows, then applied to fold
  k (``spoils_tf.ensemble.cross_fit_ensemble``); the weights of each fold are in
  ``weights.json``.

Workdir: ``config.json``, ``predictions/<method>.csv|.parquet``, ``fold_metrics.csv`` (every
method's per-fold metrics), ``weights.json``, ``unmatched.csv``, ``confusion_<method>.png``,
``comparison.md|.csv|.json``. ``config.toy.enabled`` (smoke) first writes both inputs into
``<workdir>/toy`` (a geometry smoke run and a fake "CNN" made from its labels plus noise).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

from spoils_tf import ensemble, fileio
from spoils_tf.classical import models as cmodels
from spoils_tf.metrics import classification as cm
from spoils_tf.train import grade_geometry_lib as geo

KEYS: tuple[str, ...] = ensemble.KEYS
MEAN = "mean"
CROSS_FIT = "cross_fit"
ON_UNMATCHED: tuple[str, ...] = ("report", "raise")
# The paper's numbers (%, 11-class target, private data): MobileNetV2 after 8-fold CV
# (its "initial" split: 86.40 / 74.27) and gradient boosting on the geometry table. The paper
# gives no number for the ensemble itself.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "cnn:mobilenetv2": {"accuracy": 97.84, "iou_macro": 96.76},
    "gradient_boosting": {"accuracy": 91.65, "iou_macro": 84.59},
}

log = logging.getLogger(__name__)


# === Inputs ===
def load_cnn_predictions(cnn_workdir: str | os.PathLike, target: str, split: str
                         ) -> tuple[pd.DataFrame, dict]:
    """The CNN run's out-of-fold table and its summary.

    Raises:
        FileNotFoundError: no ``oof_predictions`` in ``cnn_workdir``.
        ValueError: ``summary.json`` says another split, or classes other than
            ``TARGETS[target]`` (naming the file and field).
    """
    cnn_workdir = pathlib.Path(cnn_workdir)
    pred = geo.read_predictions(cnn_workdir / "oof_predictions")
    summary_path = cnn_workdir / "summary.json"
    meta: dict = {}
    if summary_path.is_file():
        meta = json.loads(summary_path.read_text(encoding="utf-8"))
        want = list(cmodels.TARGETS[target])
        if meta.get("classes") is not None and list(meta["classes"]) != want:
            raise ValueError(f"{summary_path}: field 'classes' {meta['classes']} != the classes "
                             f"of target {target!r} {want}")
        if meta.get("split") is not None and meta["split"] != split:
            raise ValueError(f"{summary_path}: field 'split' {meta['split']!r} != "
                             f"config.split {split!r}")
    return pred, meta


def geometry_predictions_path(geometry_workdir: str | os.PathLike, split: str, target: str,
                              model: str) -> pathlib.Path:
    """Stem of a geometry run's out-of-fold table for (split, target, model)."""
    return pathlib.Path(geometry_workdir) / split / target / model / "oof_predictions"


def _key_strings(df: pd.DataFrame) -> pd.Series:
    return df[list(KEYS)].astype(str).apply(tuple, axis=1)


def align(cnn: pd.DataFrame, geom: pd.DataFrame, classes: Sequence[str]
          ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame]:
    """Lines up two out-of-fold tables on ``(patient, slice, level)``.

    Returns:
        ``(rows, probs_cnn, probs_geom, unmatched)``: ``rows`` = keys, ``fold``, ``y_true``
        of the rows in both tables (CNN order); ``probs_*``: ``float64 [N, C]``; ``unmatched``:
        keys, ``y_true`` and ``only_in`` (``"cnn"`` | ``"geometry"``) of the other rows.

    Raises:
        ValueError: duplicated keys, disagreeing ``y_true`` or ``fold`` on a joined row,
            a missing column, or no common row.
    """
    for name, t in (("cnn", cnn), ("geometry", geom)):
        if "fold" not in t.columns:
            raise ValueError(f"{name} predictions: missing column 'fold'")
    kc, kg = _key_strings(cnn), _key_strings(geom)
    common = set(kc) & set(kg)
    if not common:
        raise ValueError(f"the CNN and geometry predictions share no (patient, slice, level) "
                         f"key (e.g. cnn {kc.iloc[:2].tolist()}, geometry "
                         f"{kg.iloc[:2].tolist()})")
    in_c, in_g = kc.isin(common).to_numpy(), kg.isin(common).to_numpy()
    unmatched = pd.concat([
        cnn.loc[~in_c, list(KEYS) + ["y_true"]].assign(only_in="cnn"),
        geom.loc[~in_g, list(KEYS) + ["y_true"]].assign(only_in="geometry")],
        ignore_index=True)
    a, b = cnn.loc[in_c].reset_index(drop=True), geom.loc[in_g].reset_index(drop=True)
    rows, pa, pb = ensemble.join_predictions(a, b, classes, KEYS)
    fold_of_b = pd.Series(b["fold"].to_numpy(np.int64),
                          index=pd.Index(_key_strings(b).to_list(), tupleize_cols=False))
    fold_a = a["fold"].to_numpy(np.int64)
    fold_b = fold_of_b.loc[pd.Index(_key_strings(a).to_list(), tupleize_cols=False)].to_numpy()
    if np.any(fold_a != fold_b):
        i = int(np.flatnonzero(fold_a != fold_b)[0])
        raise ValueError(f"folds differ between the CNN and geometry runs on "
                         f"{int((fold_a != fold_b).sum())} row(s), e.g. {tuple(rows.loc[i, list(KEYS)])}:"
                         f" {fold_a[i]} vs {fold_b[i]}; both must use the same folds.json")
    rows["fold"] = fold_a
    return rows, pa, pb, unmatched


def explain_unmatched(unmatched: pd.DataFrame, cnn_workdir: str | os.PathLike
                      ) -> pd.DataFrame:
    """Adds ``reason`` (and its short ``reason_kind``) to the rows in one table only.

    A geometry row without a CNN prediction is looked up in the CNN run's ``skipped.csv``
    (``grade_cnn_lib``: crops beyond ``data.max_slices_per_patient``, unreadable or
    unlabelled crops): its reason there is given, and ``reason_kind`` is the text before
    the first ``:`` (e.g. ``max_slices_per_patient=3``). A geometry row not in it has no
    crop in the CNN's crops index (``"no crop in the CNN's crops index"``); a CNN row has no
    geometry prediction (``"no geometry prediction"``).

    Args:
        unmatched: keys, ``y_true``, ``only_in`` (``"cnn" | "geometry"``), from ``align``.
        cnn_workdir: the CNN run's workdir (``skipped.csv`` is optional).

    Returns:
        a copy of ``unmatched`` with the columns ``reason`` and ``reason_kind``.
    """
    out = unmatched.copy()
    reason = pd.Series("no crop in the CNN's crops index", index=out.index, dtype=object)
    reason[out["only_in"] == "cnn"] = "no geometry prediction"
    path = pathlib.Path(cnn_workdir) / "skipped.csv"
    if path.is_file() and len(out):
        skipped = pd.read_csv(path, dtype={"patient": str, "level": str, "reason": str})
        if len(skipped):
            by_key = dict(zip(_key_strings(skipped), skipped["reason"].fillna("").astype(str)))
            geom = (out["only_in"] == "geometry").to_numpy()
            found = _key_strings(out).map(by_key)
            use = geom & found.notna().to_numpy()
            reason[use] = "not scored by the CNN: " + found[use]
    out["reason"] = reason
    out["reason_kind"] = [r.split(": ", 1)[1].split(":", 1)[0]
                          if r.startswith("not scored by the CNN: ") else r for r in reason]
    return out


def unmatched_summary(unmatched: pd.DataFrame) -> str:
    """``"n (side: reason_kind), ..."`` counts of ``explain_unmatched``'s table, or ``"none"``."""
    if unmatched.empty:
        return "none"
    counts = unmatched.groupby(["only_in", "reason_kind"], sort=True).size()
    return ", ".join(f"{int(n)} only in {side} ({kind})" for (side, kind), n in counts.items())


# === Toy inputs (smoke) ===
def write_toy_inputs(config, workdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Smoke inputs: a geometry run (``config.toy.geometry``) and a fake CNN run.

    The fake CNN's probabilities are ``softmax(2 onehot(y_true) + N(0, 1))`` on the geometry
    run's labelled rows, with the same folds; its ``summary.json`` has the target's classes,
    ``split`` and ``backbone = "toy"``. Returns ``(cnn_workdir, geometry_workdir)``.
    """
    toy = workdir / "toy"
    geom_dir, cnn_dir = toy / "geometry", toy / "cnn"
    gconf = config.toy.geometry
    geo.run(gconf, geom_dir)
    classes = cmodels.TARGETS[config.target]
    g = geo.read_predictions(geometry_predictions_path(geom_dir, config.split, config.target,
                                                       config.geometry_model))
    g = g[g["y_true"].notna() & (g["y_true"].astype(str) != "")].reset_index(drop=True)
    rng = np.random.default_rng(int(config.seed))
    logits = 2.0 * np.eye(len(classes))[cm.encode(g["y_true"], classes)]
    logits += rng.normal(0.0, 1.0, logits.shape)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    cnn = g[list(KEYS) + ["fold", "y_true"]].copy()
    cnn["y_pred"] = np.asarray(classes, object)[probs.argmax(axis=1)]
    cnn[cm.prob_columns(classes)] = probs
    fileio.write_table(cnn_dir / "oof_predictions", cnn)
    fileio.write_json(cnn_dir / "summary.json", {"split": config.split,
                                                 "classes": list(classes), "backbone": "toy"})
    return cnn_dir, geom_dir


# === Ensemble ===
def _prediction_table(rows: pd.DataFrame, probs: np.ndarray, classes: Sequence[str],
                      target: str) -> pd.DataFrame:
    out = rows[list(KEYS) + ["fold"]].copy()
    out["target"] = target
    out["y_true"] = rows["y_true"].astype(object).where(rows["y_true"].notna(), None)
    out["y_pred"] = np.asarray(classes, object)[probs.argmax(axis=1)]
    out[cm.prob_columns(classes)] = probs
    return out


def combine(probs_cnn: np.ndarray, probs_geom: np.ndarray, y: np.ndarray, folds: np.ndarray,
            step: float = 0.05) -> tuple[dict[str, np.ndarray], dict[int, list[float]]]:
    """The two ensembles of aligned out-of-fold probabilities.

    Args:
        probs_cnn, probs_geom: ``float [N, C]``, rows summing to 1.
        y: ``int [N]`` class indices, ``-1`` = unlabelled (never used to fit weights).
        folds: ``int [N]``.
        step: grid step of the CNN weight.

    Returns:
        ``({"mean": [N, C], "cross_fit": [N, C]}, {fold: [w_cnn, w_geom]})``.
    """
    mean = ensemble.mean_ensemble([probs_cnn, probs_geom])
    crossed, weights = ensemble.cross_fit_ensemble([probs_cnn, probs_geom], y, folds, step)
    return ({MEAN: mean, CROSS_FIT: crossed},
            {int(k): [float(x) for x in w] for k, w in weights.items()})


# === Entry ===
def _check_config(config) -> None:
    """Raises ValueError naming the first of ``target``, ``split``, ``on_unmatched`` that has
    an unknown value."""
    if config.target not in cmodels.TARGETS:
        raise ValueError(f"config.target must be one of {tuple(cmodels.TARGETS)}, got "
                         f"{config.target!r}")
    if config.split not in geo.SPLITS:
        raise ValueError(f"config.split must be one of {geo.SPLITS}, got {config.split!r}")
    if config.on_unmatched not in ON_UNMATCHED:
        raise ValueError(f"config.on_unmatched must be one of {ON_UNMATCHED}, got "
                         f"{config.on_unmatched!r}")


def _input_workdirs(config, workdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """``(cnn_workdir, geometry_workdir)``: the toy runs written into ``workdir`` when
    ``config.toy.enabled``, else the configured ones.

    Raises:
        ValueError: a configured workdir is empty.
    """
    if config.toy.enabled:
        return write_toy_inputs(config, workdir)
    if not config.cnn_workdir or not config.geometry_workdir:
        raise ValueError("config.cnn_workdir and config.geometry_workdir are required "
                         "(the workdirs of experiments.grade_cnn and "
                         "experiments.grade_geometry)")
    return pathlib.Path(config.cnn_workdir), pathlib.Path(config.geometry_workdir)


def _record_unmatched(unmatched: pd.DataFrame, workdir: pathlib.Path,
                      on_unmatched: str) -> None:
    """Writes ``unmatched.csv`` and warns about its rows (``on_unmatched = "report"``).

    Raises:
        ValueError: there are unmatched rows and ``on_unmatched = "raise"``.
    """
    fileio.write_table(workdir / "unmatched", unmatched, parquet=False)
    if not len(unmatched):
        return
    counts = unmatched["only_in"].value_counts().to_dict()
    if on_unmatched == "raise":
        raise ValueError(f"{len(unmatched)} row(s) are in one table only ({counts}); see "
                         f"{workdir / 'unmatched.csv'}")
    log.warning("%d row(s) in one table only (%s): not ensembled, listed in %s",
                len(unmatched), counts, workdir / "unmatched.csv")


def _label_indices(rows: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """``int64 [N]`` class index of each row's ``y_true``; ``-1`` where it is unlabelled."""
    labelled = (rows["y_true"].notna() & (rows["y_true"].astype(str) != "")).to_numpy()
    y = np.full(len(rows), -1, np.int64)
    y[labelled] = cm.encode(rows.loc[labelled, "y_true"], classes, field="y_true")
    return y


def _evaluate_method(name: str, table: pd.DataFrame, classes: Sequence[str], config,
                     workdir: pathlib.Path, n_unmatched: int) -> dict:
    """Writes one method's predictions and confusion matrix; returns its summary
    (``geo.evaluate_predictions`` plus ``model``, ``target``, ``split``, ``n_unmatched``)."""
    safe = name.replace(":", "_")
    fileio.write_table(workdir / "predictions" / safe, table)
    ev = geo.evaluate_predictions(table, classes, n_boot=int(config.eval.n_boot),
                                  seed=int(config.seed),
                                  ci_metrics=tuple(config.eval.ci_metrics))
    cm.plot_confusion_matrix(np.asarray(ev["confusion"]), classes,
                             workdir / f"confusion_{safe}.png",
                             title=f"{name} {config.target} out-of-fold ({config.split})")
    return {"model": name, "target": config.target, "split": config.split,
            "n_unmatched": n_unmatched, **ev}


def _weights_note(weights: dict[int, list[float]], paper: bool) -> str:
    """The lines under the comparison table: what the two ensembles are, each fold's CNN
    weight, and where the paper's numbers come from."""
    note = ("\nmean = the paper's unweighted mean; cross_fit = CNN weight chosen per fold on "
            "the other folds only (weights.json: " + ", ".join(
                f"fold {f}: {w[0]:.2f}" for f, w in sorted(weights.items())) + ").\n")
    if paper:
        note += ("Paper CNN numbers are MobileNetV2 after 8-fold CV (initial split 86.40 / "
                 "74.27); the paper reports no number for its ensemble.\n")
    return note


def run(config, workdir: str | os.PathLike) -> dict:
    """Joins the CNN and geometry out-of-fold predictions, ensembles and evaluates them.

    Args:
        config: an ``ml_collections.ConfigDict`` from ``configs/ensemble.py``.
        workdir: output directory (created).

    Returns:
        ``{"methods": {method: summary}, "weights": {fold: [w_cnn, w_geom]}, "n_joined",
        "n_unmatched", "frame": comparison DataFrame, "markdown"}``.

    Raises:
        ValueError: bad config field, inputs that disagree (classes, split, folds, y_true),
            or unmatched rows with ``on_unmatched = "raise"``.
        FileNotFoundError: an input prediction table is missing.
    """
    _check_config(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fileio.save_config(config, workdir)
    cnn_dir, geom_dir = _input_workdirs(config, workdir)
    target, classes = config.target, cmodels.TARGETS[config.target]

    # Join the two out-of-fold tables; rows in one table only are reported, not ensembled.
    cnn, cnn_meta = load_cnn_predictions(cnn_dir, target, config.split)
    geom = geo.read_predictions(geometry_predictions_path(geom_dir, config.split, target,
                                                          config.geometry_model))
    rows, p_cnn, p_geom, unmatched = align(cnn, geom, classes)
    unmatched = explain_unmatched(unmatched, cnn_dir)
    _record_unmatched(unmatched, workdir, config.on_unmatched)

    # Ensemble, then score every method on the rows of the folds asked for.
    folds = rows["fold"].to_numpy(np.int64)
    combined, weights = combine(p_cnn, p_geom, _label_indices(rows, classes), folds,
                                float(config.weight_step))
    cnn_name = f"cnn:{cnn_meta.get('backbone', 'cnn')}"
    methods = {cnn_name: p_cnn, config.geometry_model: p_geom, **combined}
    k = int(max(folds.max() + 1, int(cnn_meta.get("k", 0) or 0)))
    keep = np.isin(folds, geo.folds_to_run(config.fold, k))
    summaries = [
            _evaluate_method(name, _prediction_table(rows, probs, classes, target)
                             .loc[keep].reset_index(drop=True),
                             classes, config, workdir, int(len(unmatched)))
            for name, probs in methods.items()]
    fold_rows = [{"method": s["model"], **r} for s in summaries for r in s["per_fold"]]
    fileio.write_table(workdir / "fold_metrics", pd.DataFrame(fold_rows), parquet=False)
    fileio.write_json(workdir / "weights.json",
                      {"order": [cnn_name, config.geometry_model], "step": config.weight_step,
                       "per_fold": {str(f): w for f, w in weights.items()}})

    # The comparison table, the paper's numbers beside where it has them.
    paper = PAPER_NUMBERS if target == "grade_class" else {}
    frame = geo.comparison_frame(summaries, target, paper)
    fileio.write_table(workdir / "comparison", frame, parquet=False)
    fileio.write_json(workdir / "comparison.json", summaries)
    md = geo.comparison_markdown(
        frame, target, f"Ensemble of {cnn_name} and {config.geometry_model}, target {target} "
        f"({len(classes)} classes), split={config.split}: {int(keep.sum())} joined rows in "
        f"folds {geo.folds_to_run(config.fold, k)}; {len(unmatched)} row(s) in one table only "
        f"(unmatched.csv: not ensembled, not scored): {unmatched_summary(unmatched)}.")
    md += _weights_note(weights, bool(paper))
    fileio.atomic_write_text(workdir / "comparison.md", md)
    return {"methods": {s["model"]: s for s in summaries}, "weights": weights,
            "n_joined": int(len(rows)), "n_unmatched": int(len(unmatched)),
            "unmatched": unmatched_summary(unmatched), "frame": frame, "markdown": md}
