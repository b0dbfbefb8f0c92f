"""Evaluator: the segmentation model (and the classifiers with their mean ensemble) scored on
the held-out fold, and a blessing of the whole bundle only when every threshold is met.

Thresholds: ``"dice/fg_macro>=0.8, level_accuracy>=0.9, grade/ensemble/accuracy>=0.5"`` (or a
mapping ``{metric: value}``, meaning ``>=``); each metric is a key of the evaluation:
``seg_lib.evaluate_model``'s keys and, with classifiers, ``grade/<cnn|geometry|ensemble>/
<GRADE_METRICS>``; a NaN value fails its check.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import re
import time
from typing import Any, Mapping, Optional, Union

import numpy as np

from spoils_tf import fileio
from spoils_tf.classical import io as cio
from spoils_tf.metrics import classification as cm
from spoils_tf.pipeline import artifacts as art
from spoils_tf.pipeline.common import (BLESSED_FILE, CLASSIFIER_SHORT, CNN_TARGET, ENSEMBLE,
                                       GRADE_METRICS, GRADE_PREFIX, NOT_BLESSED_FILE, fresh_dir,
                                       load_examples, rows_of, with_level_index)
from spoils_tf.serve import bundle

log = logging.getLogger(__name__)

_THRESHOLD_RE = re.compile(r"^\s*(?P<metric>[^<>=\s]+)\s*(?P<op>>=|<=)\s*(?P<value>\S+)\s*$")
_OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}


# === Thresholds ===
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


# === Classifiers ===
def grade_metric_keys(classifiers: Optional[Mapping[str, art.Model]]) -> list[str]:
    """``grade/<short>/<metric>`` keys the Evaluator records for these classifiers (with
    ``grade/ensemble/...`` when both are given), in a stable order; [] for none."""
    if not classifiers:
        return []
    shorts = [CLASSIFIER_SHORT[n] for n in bundle.MODEL_NAMES if n in classifiers]
    if len(shorts) == len(CLASSIFIER_SHORT):
        shorts.append(ENSEMBLE)
    return [f"{GRADE_PREFIX}/{s}/{m}" for s in shorts for m in GRADE_METRICS]


def _check_classifiers(classifiers: Mapping[str, art.Model], examples: art.Examples) -> None:
    for name, m in classifiers.items():
        if name not in CLASSIFIER_SHORT:
            raise ValueError(f"classifiers: unknown model name {name!r}; expected "
                             f"{sorted(CLASSIFIER_SHORT)}")
        if m.kind != bundle.KIND_OF[name]:
            raise ValueError(f"classifier {m.uri}: kind {m.kind!r}; under {name!r} expected "
                             f"{bundle.KIND_OF[name]!r}")
        if m.fingerprint.get("sha256") != examples.fingerprint.get("sha256"):
            raise ValueError(f"classifier {m.uri} was trained on data with fingerprint "
                             f"{m.fingerprint.get('sha256')}, the examples {examples.uri} "
                             f"have {examples.fingerprint.get('sha256')}")


def _grade_report(y_true, probs, classes, prefix: str) -> dict[str, float]:
    report = cm.classification_report(np.asarray(y_true, np.int64),
                                      np.asarray(probs, np.float64).reshape(-1, len(classes)),
                                      list(classes))
    return {f"{prefix}/{k}": float(report[k]) for k in GRADE_METRICS}


def evaluate_classifiers(classifiers: Mapping[str, art.Model], examples: art.Examples
                         ) -> tuple[dict[str, float], "Any"]:
    """Scores the classifiers and their mean ensemble on the held-out patients' discs.

    Each classifier grades every labelled disc of ``examples.eval_patients`` it can: the
    geometry classifier every row of the feature table (NaN measurements are imputed as in
    training), the crop classifier every disc with a usable crop; discs without a label are
    counted (``.../n_unlabelled``), never silently left out. The ensemble is the mean of the
    two probability vectors (the SPOILS paper's; ``spoils_tf.ensemble.mean_ensemble``) on
    the discs both graded; ``grade/ensemble/n_unmatched`` counts discs only one model
    graded. Metrics: :data:`GRADE_METRICS` of ``metrics.classification.classification_report``.

    Returns:
        ``(metrics, predictions)``: metrics keyed ``grade/<cnn|geometry|ensemble>/<metric>``;
        predictions a DataFrame with one row per (patient, slice, level, model): ``model,
        y_true, y_pred, prob/<class>``.

    Raises:
        ValueError: a classifier of an unknown name/kind or trained on other data; the two
            classifiers disagree on the class list.
    """
    import pandas as pd

    from spoils_tf import ensemble as ens

    _check_classifiers(classifiers, examples)
    metrics: dict[str, float] = {}
    tables: dict[str, pd.DataFrame] = {}
    class_lists = {tuple(m.card.get("classes", ())) for m in classifiers.values()}
    if len(class_lists) > 1:
        raise ValueError(f"the classifiers have different class lists {sorted(class_lists)}; "
                         "train them on one target")
    for name in bundle.MODEL_NAMES:
        if name not in classifiers:
            continue
        m = classifiers[name]
        short = CLASSIFIER_SHORT[name]
        classes = list(m.card["classes"])
        if name == bundle.GEOMETRY:
            rows, y, probs, extra = _predict_geometry(m, examples)
        else:
            rows, y, probs, extra = _predict_crops(m, examples)
        metrics.update(_grade_report(y, probs, classes, f"{GRADE_PREFIX}/{short}"))
        metrics.update({f"{GRADE_PREFIX}/{short}/{k}": float(v) for k, v in extra.items()})
        table = rows[list(ens.KEYS)].reset_index(drop=True).copy()
        table["model"] = short
        table["y_true"] = [classes[i] for i in y]
        table["y_pred"] = [classes[i] for i in np.asarray(probs).argmax(axis=1)] \
            if len(table) else []
        table[cm.prob_columns(classes)] = np.asarray(probs, np.float64).reshape(-1, len(classes))
        tables[short] = table
    if len(tables) == len(CLASSIFIER_SHORT):
        classes = list(next(iter(classifiers.values())).card["classes"])
        pcols = cm.prob_columns(classes)
        a, b = tables["cnn"], tables["geometry"]
        joined = a.merge(b, on=list(ens.KEYS), how="inner", suffixes=("_cnn", "_geometry"))
        mismatch = (joined["y_true_cnn"] != joined["y_true_geometry"]).to_numpy()
        if mismatch.any():
            raise ValueError(f"the classifiers disagree on the true class of "
                             f"{int(mismatch.sum())} disc(s) (e.g. "
                             f"{joined.loc[mismatch, list(ens.KEYS)].iloc[0].tolist()})")
        probs = ens.mean_ensemble([joined[[f"{c}_cnn" for c in pcols]].to_numpy(),
                                   joined[[f"{c}_geometry" for c in pcols]].to_numpy()]) \
            if len(joined) else np.zeros((0, len(classes)))
        y = cm.encode(joined["y_true_cnn"], classes, "y_true") if len(joined) else \
            np.zeros(0, np.int64)
        metrics.update(_grade_report(y, probs, classes, f"{GRADE_PREFIX}/{ENSEMBLE}"))
        metrics[f"{GRADE_PREFIX}/{ENSEMBLE}/n_unmatched"] = float(len(a) + len(b)
                                                                  - 2 * len(joined))
        table = joined[list(ens.KEYS)].copy()
        table["model"] = ENSEMBLE
        table["y_true"] = joined["y_true_cnn"].to_numpy()
        table["y_pred"] = [classes[i] for i in probs.argmax(axis=1)] if len(joined) else []
        table[pcols] = probs
        tables[ENSEMBLE] = table
    predictions = pd.concat(list(tables.values()), ignore_index=True) if tables else \
        pd.DataFrame()
    return metrics, predictions


def _predict_geometry(model: art.Model, examples: art.Examples):
    """``(rows, y int [N], probs [N, C], extra counts)`` on the held-out labelled feature rows."""
    from spoils_tf.classical import models as cmodels
    from spoils_tf.train import grade_geometry_lib as ggl

    pipe, meta = cio.load_classifier(model.model_path)
    features = list(meta["feature_names"])
    df = with_level_index(ggl.load_feature_table(model.config["features_path"]), features)
    held_out = rows_of(df, examples.eval_patients)
    labels_ = cmodels.target_labels(df, str(model.card["target"]))
    labelled = np.asarray([v is not None for v in labels_])
    use = held_out & labelled
    rows = df.loc[use].reset_index(drop=True)
    classes = list(model.card["classes"])
    probs = pipe.predict_proba(rows[features].astype(np.float64)) if len(rows) else \
        np.zeros((0, len(classes)))
    y = cm.encode(labels_[use], classes, "y_true") if len(rows) else np.zeros(0, np.int64)
    return rows, y, probs, {"n_unlabelled": int((held_out & ~labelled).sum())}


def _predict_crops(model: art.Model, examples: art.Examples):
    """``(rows, y int [N], probs [N, C], extra counts)`` on the held-out labelled crops."""
    import keras

    from spoils_tf.train import grade_cnn_lib
    import spoils_tf.models

    crops_dir = model.config["crops_dir"]
    index = grade_cnn_lib.read_crops_index(crops_dir)
    index = index[rows_of(index, examples.eval_patients)].reset_index(drop=True)
    classes = list(model.card["classes"])
    empty = (index.iloc[:0], np.zeros(0, np.int64), np.zeros((0, len(classes))),
             {"n_skipped": len(index)})
    if index.empty:
        return empty
    target = CNN_TARGET[str(model.card["target"])]
    try:
        x, y, rows, skipped = grade_cnn_lib.load_crops(crops_dir, index, target,
                                                       int(model.card["crop_height"]),
                                                       int(model.card["crop_width"]))
    except ValueError as e:                 # no usable crop at all: reported, not fatal
        log.warning("crop classifier: no held-out crop to score (%s)", e)
        return empty
    net = spoils_tf.models.load_model(model.model_path)
    probs = np.asarray(net.predict(x, batch_size=32, verbose=0), np.float64)
    keras.backend.clear_session()
    return rows, y, probs, {"n_skipped": len(skipped)}


# === The stage ===
def evaluator(model: art.Model, examples: art.Examples,
              thresholds: Union[str, Mapping[str, Any]], out: Union[str, os.PathLike],
              classifiers: Optional[Mapping[str, art.Model]] = None,
              ) -> tuple[art.ModelEvaluation, art.ModelBlessing]:
    """Scores ``model`` (and ``classifiers``) on the held-out fold and blesses them or not.

    Metrics: ``seg_lib.evaluate_model`` on the ``eval_patients`` (the slices the training
    config used: ``data.max_slices_per_patient``), pooled over slices at their original
    resolution; with ``classifiers`` ({``bundle.CROP``/``bundle.GEOMETRY``: Model}) also
    :func:`evaluate_classifiers` (``grade/...`` keys; held-out predictions in
    ``out/evaluation/grade_predictions.csv``). Blessed only when every threshold holds
    (:func:`bless`), at least one slice was scored and, with classifiers, every classifier
    (and the ensemble) graded at least one held-out disc. The one blessing covers the whole
    bundle (``ModelBlessing.model_uris``). Writes ``out/evaluation`` (ModelEvaluation) and
    ``out/blessing`` (ModelBlessing, with an empty ``BLESSED`` or ``NOT_BLESSED`` file).

    Raises:
        ValueError: invalid thresholds or a threshold on an unknown metric (checked before
            anything is evaluated); a model or classifier trained on other examples
            (fingerprints differ) or of the wrong kind.
        FileExistsError: ``out`` already holds the artifacts.
    """
    from spoils_tf.metrics import segmentation as seg_metrics
    from spoils_tf.train import seg_lib
    import spoils_tf.models  # noqa: F401

    classifiers = dict(classifiers or {})
    known = seg_metrics.SegmentationMetrics().result()
    known["slices"] = float("nan")
    known.update({k: float("nan") for k in grade_metric_keys(classifiers)})
    if classifiers:                   # the extra counts evaluate_classifiers records
        known.update({f"{GRADE_PREFIX}/{k}": float("nan") for k in (
                "cnn/n_skipped", "geometry/n_unlabelled", f"{ENSEMBLE}/n_unmatched")})
    bless(known, thresholds)          # fail fast on a bad spec or an unknown metric
    if model.fingerprint.get("sha256") != examples.fingerprint.get("sha256"):
        raise ValueError(f"model {model.uri} was trained on data with fingerprint "
                         f"{model.fingerprint.get('sha256')}, the examples {examples.uri} have "
                         f"{examples.fingerprint.get('sha256')}; evaluate on the same dataset")
    _check_classifiers(classifiers, examples)
    out = pathlib.Path(out).resolve()
    eval_dir, blessing_dir = fresh_dir(out / "evaluation"), fresh_dir(out / "blessing")
    start = time.perf_counter()
    ds = load_examples(examples)
    data_cfg = model.config.get("data", {})
    keys = seg_lib.central_slice_keys(ds, int(data_cfg.get("max_slices_per_patient", 0) or 0))
    keras_model = spoils_tf.models.load_model(model.model_path)
    metrics = seg_lib.evaluate_model(keras_model, ds, list(examples.eval_patients),
                                     data_cfg.get("resize_mode", "letterbox"), keys)
    metrics["eval_seconds"] = time.perf_counter() - start
    if classifiers:
        t0 = time.perf_counter()
        grade, predictions = evaluate_classifiers(classifiers, examples)
        metrics.update(grade)
        metrics[f"{GRADE_PREFIX}/eval_seconds"] = time.perf_counter() - t0
        fileio.write_csv(eval_dir / "grade_predictions.csv", predictions)
    spec = thresholds if isinstance(thresholds, str) else dict(thresholds)
    model_uris = (model.uri,) + tuple(classifiers[n].uri for n in bundle.MODEL_NAMES
                                      if n in classifiers)
    evaluation = art.ModelEvaluation(
            uri=str(eval_dir), producer="Evaluator", created=art.utc_now(),
            fingerprint=examples.fingerprint, config={"thresholds": spec,
                                                      "eval_patients": list(examples.eval_patients)},
            metrics=metrics, parents=(model.uri, examples.uri) + model_uris[1:],
            model_uri=model.uri, examples_uri=examples.uri, eval_fold=examples.eval_fold)
    art.write_artifact(evaluation)
    blessed, checks, failed = bless(metrics, thresholds)
    if not metrics.get("slices"):
        blessed = False
        failed.append("no held-out slice was evaluated (slices = 0)")
    for key in grade_metric_keys(classifiers):
        if key.endswith("/n") and not metrics.get(key):
            blessed = False
            failed.append(f"no held-out disc was graded ({key} = 0)")
    blessing = art.ModelBlessing(
            uri=str(blessing_dir), producer="Evaluator", created=art.utc_now(),
            fingerprint=examples.fingerprint, config={"thresholds": spec},
            metrics={c["metric"]: c["value"] for c in checks},
            parents=(model.uri, evaluation.uri) + model_uris[1:],
            blessed=bool(blessed), checks=tuple(checks), failed=tuple(failed),
            model_uri=model.uri, evaluation_uri=evaluation.uri, model_uris=model_uris)
    (blessing_dir / (BLESSED_FILE if blessed else NOT_BLESSED_FILE)).touch()
    art.write_artifact(blessing)
    log.info("Evaluator: %s; %s", "BLESSED" if blessed else "NOT blessed",
             "; ".join(failed) if failed else "all thresholds met")
    return evaluation, blessing

