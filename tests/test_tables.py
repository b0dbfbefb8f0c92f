"""Results-table cells: decimals, percent, sign, unit, missing values, mean ± SD, CIs."""

from __future__ import annotations

import numpy as np

from spoils_tf.metrics import tables


def test_number_rounds_scales_signs_and_marks_missing_values():
    assert tables.number(0.91654, 2, scale=100) == "91.65"
    assert tables.number(0.5) == "0.500"
    assert tables.number(np.float32(0.25), 1) == "0.2"           # round half to even
    assert tables.number(-0.0123, signed=True, suffix=" pp") == "-0.012 pp"
    assert tables.number(0.0123, 2, scale=100, signed=True, suffix=" pp") == "+1.23 pp"
    for missing in (None, float("nan"), np.inf, -np.inf):
        assert tables.number(missing) == "n/a"
        assert tables.number(missing, 2, suffix=" pp", missing="") == ""


def test_metric_format_shows_fractions_as_percent_and_the_rest_as_they_are():
    assert tables.metric("accuracy", 0.8765) == "87.65"
    assert tables.metric("auroc_macro", 1.0) == "100.00"
    assert tables.metric("kappa_quadratic", 0.61234) == "0.612"
    assert tables.metric("brier", np.nan) == "n/a"
    assert tables.metric_format("f1_macro", signed=True, percent_suffix=" pp")(0.05) == "+5.00 pp"
    assert tables.metric_format("brier", signed=True, percent_suffix=" pp")(0.05) == "+0.050"


def test_mean_sd_and_ci_cells():
    pct = tables.formatter(1, scale=100)
    assert tables.mean_sd(0.5, 0.125, pct) == "50.0 ± 12.5"
    assert tables.mean_sd(0.5, np.nan, pct) == "50.0 ± n/a"             # one fold: no SD
    assert tables.mean_sd(np.nan, np.nan, pct) == "n/a ± n/a"
    assert tables.mean_sd(np.nan, 0.1, pct, missing="n/a") == "n/a"
    assert tables.with_ci(0.75, 0.5, 0.9, pct) == "75.0 [50.0, 90.0]"
    assert tables.with_ci(0.75, np.nan, 0.9, pct) == "75.0"            # no interval computed
    assert tables.with_ci(0.75, None, None) == "0.750"
