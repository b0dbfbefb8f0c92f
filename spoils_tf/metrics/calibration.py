"""Calibration of class probabilities: top-label ECE and the reliability diagram.

* :func:`expected_calibration_error`: top-label ECE (Guo et al., ICML 2017): rows are put in
  ``n_bins`` equal-width bins of their highest probability (the confidence); ECE is
  ``sum_b (n_b / N) |accuracy_b - confidence_b|``. sklearn has only the binary
  ``calibration_curve``, which is not the multi-class top-label quantity, hence this function.
* :func:`reliability_bins`: the per-bin counts, confidences and accuracies behind it.
* :func:`plot_reliability`: a reliability diagram PNG of several prediction sets.

Conventions as ``spoils_tf.metrics.classification``: ``y_true int [N]``, ``probs float [N, C]``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from spoils_tf import fileio


def reliability_bins(y_true, probs, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Top-label reliability bins.

    Bin ``b`` holds the rows whose confidence ``max_c probs`` lies in
    ``(b / n_bins, (b + 1) / n_bins]`` (the first bin also takes 0).

    Returns:
        ``{"edges" [n_bins + 1], "count" int [n_bins], "confidence" [n_bins] (mean
        confidence, NaN in an empty bin), "accuracy" [n_bins] (fraction right, NaN if
        empty)}``.

    Raises:
        ValueError: shapes disagree or ``n_bins < 1``.
    """
    t = np.asarray(y_true, np.int64)
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise ValueError(f"probs {p.shape} must be [N, C] with N = len(y_true) = {t.shape[0]}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = p.max(axis=1) if p.size else np.zeros(0)
    right = (p.argmax(axis=1) == t) if p.size else np.zeros(0, bool)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=right.astype(np.float64), minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(y_true, probs, n_bins: int = 10) -> float:
    """Top-label ECE in [0, 1] (0 = calibrated); NaN with no rows."""
    b = reliability_bins(y_true, probs, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    ok = b["count"] > 0
    gap = np.abs(b["accuracy"][ok] - b["confidence"][ok])
    return float(np.sum(b["count"][ok] / n * gap))


def plot_reliability(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     path: str | os.PathLike, n_bins: int = 10, title: str = ""
                     ) -> pathlib.Path:
    """Writes a reliability diagram (matplotlib Agg) atomically; returns its path.

    Args:
        curves: ``{label: (y_true int [N], probs [N, C])}``, one line each (with its ECE in
            the legend), and the confidence histogram of each below.
        path: the ``.png``.
        n_bins: equal-width confidence bins.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.2, 6.4), dpi=100, sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    centres = None
    for i, (label, (t, p)) in enumerate(curves.items()):
        b = reliability_bins(t, p, n_bins)
        ece = expected_calibration_error(t, p, n_bins)
        ok = b["count"] > 0
        ax.plot(b["confidence"][ok], b["accuracy"][ok], marker="o", lw=1.5,
                label=f"{label} (ECE {ece:.3f}, n={int(b['count'].sum())})")
        centres = 0.5 * (b["edges"][:-1] + b["edges"][1:])
        width = 1.0 / n_bins / (len(curves) + 1)
        hx.bar(b["edges"][:-1] + (i + 0.5) * width, b["count"], width=width, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in bin")
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    hx.set_xlabel("confidence (top-class probability)")
    hx.set_ylabel("rows")
    if centres is not None:
        hx.set_xticks(np.linspace(0, 1, 6))
    fig.tight_layout()
    try:
        return fileio.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def ece_metric(n_bins: int = 10):
    """``metric(y_true, probs) -> ECE`` for ``classification.bootstrap_ci``."""
    return lambda t, p: expected_calibration_error(t, p, n_bins)


__all__: Sequence[str] = ("reliability_bins", "expected_calibration_error", "plot_reliability",
                          "ece_metric")
