"""Means, medians and segment counts with numpy's arithmetic, without its per-call overhead.

The geometry runs these reductions a few hundred times per slice on small arrays, where
``np.mean`` / ``np.median``'s Python-level dispatch costs more than the arithmetic. Each
function here gives the same float result as the numpy call it names.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def array_mean(x: np.ndarray) -> Any:
    """``x.mean()`` of a non-empty 1-D array, without its Python-level overhead: the same
    pairwise sum divided by the count, in the same dtype (float32 stays float32; an integer
    sum is exact, as np.mean's float64 sum of integers below 2**53 is)."""
    return np.add.reduce(x) / x.size


def mean_of(xs: Sequence[float]) -> float:
    """``float(np.mean(xs))`` for a short list of floats (same arithmetic for 1 or 2 values)."""
    if len(xs) == 1:
        return float(xs[0]) / 1.0
    if len(xs) == 2:
        return (float(xs[0]) + float(xs[1])) / 2.0
    return float(np.mean(xs))


def median(x: np.ndarray) -> float:
    """``float(np.median(x))`` of a non-empty 1-D array (the same partition and the same
    float arithmetic, NaN when x holds a NaN), without np.median's overhead."""
    n = x.size
    h = n // 2
    kth = [h - 1, h] if n % 2 == 0 else [h]
    inexact = np.issubdtype(x.dtype, np.inexact)
    part = np.partition(x, kth + [-1] if inexact else kth)
    if inexact and math.isnan(part[-1]):
        return float("nan")
    if n % 2:
        return float(part[h])
    if not inexact:  # np.mean of integers accumulates in float64
        return (float(part[h - 1]) + float(part[h])) / 2.0
    return float((part[h - 1] + part[h]) / 2)


def median_grey(values: np.ndarray) -> float:
    """``float(np.median(values.astype(np.float32)))`` of non-empty 1-D grey values: for uint8
    by counting (the k-th smallest value is the first whose cumulative count exceeds k; the mean
    of two integers <= 255 is exact in float32), a few times faster than a partition; other
    dtypes through ``median``."""
    if values.dtype != np.uint8:
        return median(values.astype(np.float32))
    cum = np.cumsum(np.bincount(values))
    n = values.size
    h = n // 2
    if n % 2:
        return float(cum.searchsorted(h, side="right"))
    lo, hi = cum.searchsorted([h - 1, h], side="right").tolist()
    return (lo + hi) / 2.0


def segment_counts(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """int64 [n] number of True entries of bool ``mask`` [N] in each segment
    ``starts[k]:starts[k + 1]`` (int [n + 1], ascending; empty segments count 0)."""
    cum = np.zeros(mask.size + 1, np.int64)
    np.cumsum(mask, out=cum[1:])
    return cum[starts[1:]] - cum[starts[:-1]]
