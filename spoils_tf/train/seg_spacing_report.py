"""Cross-validation tables of the fixed-spacing segmentation recipe (``seg_spacing_lib``).

Each fold's ``metrics.json`` holds ``"<subset>/<variant>/<metric>"`` keys: subset ``all`` (every
slice of the held-out patients) or ``middle`` (the 5 slices nearest each patient's middle, what
the paper segments), variant ``raw`` (the network's arg-max) or ``levels`` (after
``spoils_tf.levels``). :func:`summarize` gives mean and sample SD over folds of each; the
tables put tissue-level and 14-class Dice, level accuracy and disc detection side by side.

Files: ``seg_cv_table.{md,json}`` and ``seg_cv_per_class_dice.{md,csv}``.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from spoils_tf import fileio, labels
from spoils_tf.metrics import segmentation as seg_metrics
from spoils_tf.metrics import tables

SUBSETS: tuple[str, ...] = ("middle", "all")
VARIANTS: tuple[str, ...] = ("raw", "levels")
# (row title, metric key) of the headline table
HEADLINE: tuple[tuple[str, str], ...] = (
        ("tissue Dice, fg macro (bodies/discs/canal)", "tissue/dice/fg_macro"),
        ("tissue Dice, vertebra", "tissue/dice/vertebra"),
        ("tissue Dice, disc", "tissue/dice/disc"),
        ("tissue Dice, canal", "tissue/dice/canal"),
        ("14-class Dice, fg macro", "dice/fg_macro"),
        ("14-class IoU, fg macro", "iou/fg_macro"),
        ("pixel accuracy", "pixel_accuracy"),
        ("level accuracy (discs)", "level_accuracy"),
        ("disc detection", "disc_detection"),
)
TARGETS: dict[str, float] = {"tissue/dice/fg_macro": 0.93, "dice/fg_macro": 0.88,
                             "level_accuracy": 0.98, "disc_detection": 1.0}


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def summarize(fold_metrics: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """``{"folds", "n_folds", "metrics": {"<subset>/<variant>/<key>": {"mean", "sd", "n"}},
    "train_minutes": {...}, "per_fold": ...}`` over every key the folds share."""
    folds = sorted(fold_metrics)
    keys = sorted(set.intersection(*(set(fold_metrics[f]) for f in folds)))
    out: dict[str, Any] = {}
    for key in keys:
        if key.split("/")[0] not in SUBSETS:
            continue
        mean, sd, n = _mean_sd([float(fold_metrics[f][key]) for f in folds])
        out[key] = {"mean": mean, "sd": sd, "n": n}
    minutes = _mean_sd([fold_metrics[f].get("train_seconds", float("nan")) / 60.0 for f in folds])
    return {"folds": folds, "n_folds": len(folds), "metrics": out,
            "train_minutes": {"mean": minutes[0], "sd": minutes[1]},
            "steps": sorted({int(fold_metrics[f].get("steps", 0)) for f in folds}),
            "per_fold": {str(f): dict(fold_metrics[f]) for f in folds}}


def _cell(summary: Mapping[str, Any], key: str) -> str:
    r = summary["metrics"].get(key) or {}
    return tables.mean_sd(r.get("mean"), r.get("sd"), tables.formatter(3),
                          missing=tables.MISSING)


def table_markdown(summary: Mapping[str, Any]) -> str:
    """Headline table (middle-5 and all slices, raw and with level labelling) and the
    per-class Dice table, as markdown."""
    n = summary["n_folds"]
    head = ["metric (mean ± SD over %d folds)" % n] + [f"{s} / {v}" for s in SUBSETS for v in VARIANTS]
    rows = ["| " + " | ".join(head + ["target (middle)"]) + " |",
            "|" + " --- |" * (len(head) + 1)]
    for title, key in HEADLINE:
        cells = [_cell(summary, f"{s}/{v}/{key}") for s in SUBSETS for v in VARIANTS]
        target = TARGETS.get(key)
        rows.append(f"| {title} | " + " | ".join(cells) + f" | {'≥ %.2f' % target if target else ''} |")
    tm = summary["train_minutes"]
    rows.append("")
    rows.append(f"Training per fold: {tm['mean']:.1f} ± {tm['sd']:.1f} CPU-wall minutes, "
                f"steps {summary['steps']}.")
    rows += ["", "| class | Dice middle / raw | middle / levels | all / raw | all / levels |",
             "| --- | --- | --- | --- | --- |"]
    for cls in labels.SEG_NAMES:
        cells = [_cell(summary, f"{s}/{v}/dice/{cls}") for s in SUBSETS for v in VARIANTS]
        rows.append(f"| {cls} | " + " | ".join(cells) + " |")
    for tissue in seg_metrics.TISSUE_NAMES[1:]:
        cells = [_cell(summary, f"{s}/{v}/tissue/dice/{tissue}") for s in SUBSETS for v in VARIANTS]
        rows.append(f"| tissue: {tissue} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_tables(summary: Mapping[str, Any], workdir: str | pathlib.Path) -> None:
    """Writes ``seg_cv_table.{md,json}`` and ``seg_cv_per_class_dice.csv`` atomically."""
    workdir = pathlib.Path(workdir)
    fileio.atomic_write_text(workdir / "seg_cv_table.md", table_markdown(summary))
    fileio.write_json(workdir / "seg_cv_table.json", summary, sort_keys=True)
    lines = ["subset,variant,class,dice_mean,dice_sd,n_folds"]
    for s in SUBSETS:
        for v in VARIANTS:
            for cls in labels.SEG_NAMES:
                r = summary["metrics"].get(f"{s}/{v}/dice/{cls}")
                if r:
                    lines.append(f"{s},{v},{cls},{r['mean']:.5f},{r['sd']:.5f},{r['n']}")
    fileio.atomic_write_text(workdir / "seg_cv_per_class_dice.csv", "\n".join(lines) + "\n")
