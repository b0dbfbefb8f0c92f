"""Numbers as the cells of the results tables (markdown): one formatter for every trainer.

A cell is a value with a fixed number of decimals, optionally scaled (``scale=100`` shows a
fraction in [0, 1] as percent), signed, or with a unit suffix; a missing value (None, NaN,
+-inf) is ``"n/a"`` (or the ``missing`` text given). The grading tables show the metrics of
:data:`PERCENT_METRICS` as percent with 2 decimals and every other metric (kappa, Brier,
log-loss) as it is with 3 (:func:`metric_format`). Cells combine as ``"mean ± sd"``
(:func:`mean_sd`) and ``"estimate [low, high]"`` (:func:`with_ci`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

MISSING = "n/a"
# Metrics in [0, 1] that the grading tables show as percent.
PERCENT_METRICS: tuple[str, ...] = ("accuracy", "iou_macro", "f1_macro", "balanced_accuracy",
                                    "auroc_macro")

Formatter = Callable[[Optional[float]], str]


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(float(value))


def number(value: Optional[float], digits: int = 3, *, scale: float = 1.0,
           signed: bool = False, suffix: str = "", missing: str = MISSING) -> str:
    """``value * scale`` with ``digits`` decimals (a leading ``+`` when ``signed``) and
    ``suffix``; ``missing`` when ``value`` is None, NaN or infinite.

    ``number(0.91654, 2, scale=100)`` is ``"91.65"``; ``number(-0.0123, signed=True,
    suffix=" pp")`` is ``"-0.012 pp"``.
    """
    if not _finite(value):
        return missing
    sign = "+" if signed else ""
    return f"{float(value) * scale:{sign}.{digits}f}{suffix}"


def formatter(digits: int = 3, **kwargs) -> Formatter:
    """:func:`number` with ``digits`` and the keyword arguments fixed: ``value -> str``."""
    return functools.partial(number, digits=digits, **kwargs)


def metric_format(name: str, *, signed: bool = False, percent_suffix: str = "") -> Formatter:
    """The grading tables' formatter of metric ``name``: percent with 2 decimals (and
    ``percent_suffix``) for :data:`PERCENT_METRICS`, else the value with 3 decimals."""
    if name in PERCENT_METRICS:
        return formatter(2, scale=100.0, signed=signed, suffix=percent_suffix)
    return formatter(3, signed=signed)


def metric(name: str, value: Optional[float]) -> str:
    """``value`` of metric ``name`` as a grading-table cell (:func:`metric_format`)."""
    return metric_format(name)(value)


def mean_sd(mean: Optional[float], sd: Optional[float], fmt: Formatter = number, *,
            missing: Optional[str] = None) -> str:
    """``"<mean> ± <sd>"``, each through ``fmt``; ``missing`` alone instead when it is given
    and ``mean`` is missing."""
    if missing is not None and not _finite(mean):
        return missing
    return f"{fmt(mean)} ± {fmt(sd)}"


def with_ci(estimate: Optional[float], low: Optional[float], high: Optional[float],
            fmt: Formatter = number) -> str:
    """``"<estimate> [<low>, <high>]"``, each through ``fmt``; the estimate alone when either
    bound is missing (no interval was computed)."""
    if not (_finite(low) and _finite(high)):
        return fmt(estimate)
    return f"{fmt(estimate)} [{fmt(low)}, {fmt(high)}]"
