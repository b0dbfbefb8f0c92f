"""Signal intensity of a disc: grey-value references and the histogram peak separation.

Grey values are those of the image as given. ``disc_signals`` reads, for every measured disc
of a slice, the disc's mean grey value, the cerebrospinal fluid reference (median of the canal
posterior to the disc within its height band), the vertebral reference (mean of the medians of
the adjacent vertebral bodies) and the nucleus (t in [0.3, 0.7]) / annulus (t < 0.15 or
t > 0.85) means. ``gmm_peak_gaps`` fits a two-component Gaussian mixture to each disc's
grey-value histogram (the histogram peak separation of Waldenberg et al., Eur Spine J
2018;27(5):1042-8).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from spoils_tf.geometry.extents import Extent
from spoils_tf.geometry.frame import Frame
from spoils_tf.geometry.reductions import array_mean, mean_of, median_grey, segment_counts
from spoils_tf.geometry.structures import Structure, band_points

# === Constants ===
# Minimum number of pixels for an intensity reference or a mixture fit.
MIN_SI_PIXELS = 5
MIN_GMM_PIXELS = 20
# Nucleus and annulus regions of a disc, as ranges of t (0 = anterior end, 1 = posterior end).
NUCLEUS_T = (0.3, 0.7)
ANNULUS_T = (0.15, 0.85)  # the annulus is t < ANNULUS_T[0] or t > ANNULUS_T[1]


# === Two-component mixture on a histogram ===
def _uniform_histogram(x: np.ndarray, lo: float, hi: float, n_bins: int,
                       weights: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(x, bins=n_bins, range=(lo, hi), weights=weights)`` for float64 ``x``
    within [lo, hi] (lo < hi): numpy's own uniform-bin assignment, without its overhead."""
    edges = np.linspace(lo, hi, n_bins + 1)
    idx = ((x - lo) / (hi - lo) * n_bins).astype(np.intp)
    idx[idx == n_bins] -= 1
    idx[x < edges[idx]] -= 1
    idx[(x >= edges[idx + 1]) & (idx != n_bins - 1)] += 1
    return np.bincount(idx, weights=weights, minlength=n_bins), edges


def gmm_peak_gap(values: np.ndarray, n_bins: int = 32, n_iter: int = 6) -> float:
    """Distance between the two means of a 2-component 1-D Gaussian mixture (EM on a histogram).

    EM runs on a ``n_bins`` histogram, initialised from the Otsu split, until the means move
    by less than 1e-3 of the value range or ``n_iter`` iterations.

    Args:
        values: float [N] grey values (integer arrays, e.g. uint8 grey values, are binned
            through a per-value count first, which gives the same histogram faster).

    Returns:
        |mu_2 - mu_1| in the units of ``values``; 0.0 for constant values, NaN for N < 2.
    """
    return gmm_peak_gaps([values], n_bins, n_iter)[0]


def _value_histogram(values: np.ndarray,
                     n_bins: int) -> Optional[tuple[np.ndarray, np.ndarray, float]]:
    """(counts float64 [n_bins], edges [n_bins + 1], value range) of ``values`` over their own
    range, or None when fewer than 2 values or constant (range < 1e-9)."""
    arr = np.asarray(values)
    if arr.size < 2:
        return None
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize <= 2:
        # Same bin for equal values: histogram the distinct values weighted by their counts.
        xi = arr.ravel()
        imin, imax = int(xi.min()), int(xi.max())
        lo, hi = float(imin), float(imax)
        if hi - lo < 1e-9:
            return None
        per_value = np.bincount(xi.astype(np.int64) - imin)
        nz = np.flatnonzero(per_value)
        counts, edges = _uniform_histogram((nz + imin).astype(np.float64), lo, hi, n_bins,
                                           per_value[nz].astype(np.float64))
    else:
        x = arr.astype(np.float64, copy=False).ravel()
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-9:
            return None
        counts, edges = _uniform_histogram(x, lo, hi, n_bins)
    return counts.astype(np.float64), edges, hi - lo


def gmm_peak_gaps(values_list: Sequence[np.ndarray], n_bins: int = 32,
                  n_iter: int = 6) -> list[float]:
    """``gmm_peak_gap`` of each array in ``values_list``, with the EM run for all at once."""
    arrays = [np.asarray(v) for v in values_list]
    out: list[float] = [float("nan") if a.size < 2 else 0.0 for a in arrays]
    if all(a.dtype == np.uint8 for a in arrays):
        hists = _uint8_histograms(arrays, n_bins)
    else:
        hists = _value_histograms(arrays, n_bins)
    if hists is None:
        return out
    which, counts, edges, tol = hists
    centres, mu, var, pi, var_floor = _otsu_mixture(counts, edges, n_bins)
    mu = _em_means(counts, centres, mu, var, pi, var_floor, tol, n_iter)
    gaps = np.abs(mu[:, 1] - mu[:, 0])
    for i, g in zip(which, gaps.tolist()):
        out[i] = g
    return out


_Histograms = tuple[list[int], np.ndarray, np.ndarray, np.ndarray]


def _uint8_histograms(arrays: Sequence[np.ndarray], n_bins: int) -> Optional[_Histograms]:
    """Histograms of uint8 grey-value arrays (the usual case), all from one table of per-value
    counts.

    Returns:
        (indices of the arrays with at least 2 distinct values, counts float64 [B, n_bins],
        edges float64 [B, n_bins + 1] over each array's own range, EM tolerance float64 [B]
        = 1e-3 of that range), or None when no array has 2 distinct values.
    """
    sized = [i for i, a in enumerate(arrays) if a.size >= 2]
    if not sized:
        return None
    table = np.stack([np.bincount(arrays[i].ravel(), minlength=256) for i in sized])
    # Each array's min and max grey value: its first and last non-empty table entry.
    nonempty = table > 0                                          # [B, 256]
    lo_i = nonempty.argmax(axis=1)
    hi_i = 255 - nonempty[:, ::-1].argmax(axis=1)
    varied = lo_i != hi_i                                         # constant arrays: gap 0
    ok = [i for i, v in zip(sized, varied.tolist()) if v]
    if not ok:
        return None
    if len(ok) < len(sized):
        table, lo_i, hi_i = table[varied], lo_i[varied], hi_i[varied]
    nzb, nzv = np.nonzero(table)
    lo_v = lo_i.astype(np.float64)
    hi_v = hi_i.astype(np.float64)
    # np.linspace(lo_v, hi_v, n_bins + 1, axis=1) [B, n_bins + 1], written out as numpy
    # computes it (arange x step + start, last = stop): the same floats, a third the cost.
    edges = np.arange(n_bins + 1.0)[:, None] * ((hi_v - lo_v) / n_bins)
    edges += lo_v
    edges[-1] = hi_v
    edges = edges.T
    x = nzv.astype(np.float64)
    lo, hi = lo_v[nzb], hi_v[nzb]
    # numpy's uniform-bin assignment (as in _uniform_histogram), row by row.
    idx = ((x - lo) / (hi - lo) * n_bins).astype(np.intp)
    idx[idx == n_bins] -= 1
    idx[x < edges[nzb, idx]] -= 1
    idx[(x >= edges[nzb, idx + 1]) & (idx != n_bins - 1)] += 1
    counts = np.bincount(nzb * n_bins + idx, weights=table[nzb, nzv].astype(np.float64),
                         minlength=len(ok) * n_bins).reshape(len(ok), n_bins)
    tol = 1e-3 * (hi_v - lo_v)
    return ok, counts, edges, tol


def _value_histograms(arrays: Sequence[np.ndarray], n_bins: int) -> Optional[_Histograms]:
    """``_uint8_histograms`` for arrays of any dtype, one ``_value_histogram`` each."""
    hists = []
    for i, a in enumerate(arrays):
        h = _value_histogram(a, n_bins)
        if h is not None:
            hists.append((i, h))
    if not hists:
        return None
    counts = np.stack([h[0] for _, h in hists])        # [B, n_bins]
    edges = np.stack([h[1] for _, h in hists])         # [B, n_bins + 1]
    tol = 1e-3 * np.array([h[2] for _, h in hists])    # [B]
    return [i for i, _ in hists], counts, edges, tol


def _otsu_mixture(w: np.ndarray, edges: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """The starting mixture of each histogram: the two classes of its Otsu split.

    Args:
        w: float64 [B, n_bins] bin counts; edges: float64 [B, n_bins + 1].

    Returns:
        (centres [B, n_bins] bin centres, mu [B, 2] means, var [B, 2] variances, pi [B, 2]
        weights, var_floor [B, 1] the variance of a uniform bin, a lower bound for var).
    """
    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])
    c0 = np.cumsum(w, axis=1)
    m0 = np.cumsum(w * centres, axis=1)
    total, mtot = c0[:, -1:], m0[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mtot * c0 / total - m0) ** 2 / (c0 * (total - c0))
    b = between[:, :-1]
    # np.nanargmax per row (NaN -> -inf), n_bins // 2 where no finite value.
    k = np.argmax(np.where(np.isnan(b), -np.inf, b), axis=1)
    k[~np.isfinite(b).any(axis=1)] = n_bins // 2
    low = np.arange(n_bins)[None, :] <= k[:, None]    # [B, n_bins] lower class
    wl = np.where(low, w + 1e-12, 0.0)
    wh = np.where(low, 0.0, w + 1e-12)
    s_lo, s_hi = wl.sum(axis=1), wh.sum(axis=1)
    mu = np.stack([(centres * wl).sum(axis=1) / s_lo, (centres * wh).sum(axis=1) / s_hi], axis=1)
    var_floor = ((edges[:, 1] - edges[:, 0]) ** 2 / 12.0)[:, None]
    var = np.stack([((centres - mu[:, :1]) ** 2 * wl).sum(axis=1) / s_lo,
                    ((centres - mu[:, 1:]) ** 2 * wh).sum(axis=1) / s_hi], axis=1)
    var = np.maximum(var, var_floor)
    pi = np.stack([np.where(low, w, 0.0).sum(axis=1), np.where(low, 0.0, w).sum(axis=1)], axis=1)
    pi = np.minimum(np.maximum(pi / total, 1e-3), 1.0)  # np.clip without its overhead
    return centres, mu, var, pi, var_floor


def _em_means(w: np.ndarray, centres: np.ndarray, mu: np.ndarray, var: np.ndarray,
              pi: np.ndarray, var_floor: np.ndarray, tol: np.ndarray, n_iter: int) -> np.ndarray:
    """EM of B two-component mixtures on their histograms (``_otsu_mixture``'s arrays) until
    each one's means move by less than ``tol`` [B] or ``n_iter`` iterations: mu float64 [B, 2].
    """
    cc = centres[:, :, None]                          # [B, n_bins, 1]
    active = np.ones(len(w), bool)
    # The sums over the two components (max, sum of a length-2 axis) are written out as
    # a + b: the same float operations as the reductions, with fewer numpy calls.
    for _ in range(n_iter):
        d = cc - mu[:, None, :]
        d *= d
        logp = (-0.5 / var)[:, None, :] * d
        logp += (np.log(pi) - 0.5 * np.log(var))[:, None, :]
        logp -= np.maximum(logp[:, :, :1], logp[:, :, 1:])
        r = np.exp(logp)
        r *= (w / (r[:, :, 0] + r[:, :, 1]))[:, :, None]   # responsibilities x bin counts
        nk = r.sum(axis=1) + 1e-12                    # [B, 2]
        new_pi = nk / (nk[:, :1] + nk[:, 1:])
        new_mu = (r * cc).sum(axis=1) / nk
        d = cc - new_mu[:, None, :]
        r *= d
        r *= d
        new_var = np.maximum(r.sum(axis=1) / nk, var_floor)
        done = (np.abs(new_mu - mu) < tol[:, None]).all(axis=1)
        if active.all():
            mu, var, pi = new_mu, new_var, new_pi
        else:
            upd = active[:, None]
            mu = np.where(upd, new_mu, mu)
            var = np.where(upd, new_var, var)
            pi = np.where(upd, new_pi, pi)
        active &= ~done
        if not active.any():
            break
    return mu


# === Signal-intensity columns ===
SignalResult = tuple[dict[str, float], list[str], Optional[np.ndarray]]
_DiscItem = tuple[Structure, Frame, Extent, list[Structure]]


def disc_signals(img: np.ndarray, img_int: Optional[np.ndarray], discs: Sequence[_DiscItem],
                 canal: Optional[Structure], spacing: tuple[float, float]) -> list[SignalResult]:
    """The disc_si_* / csf / vert signal columns of every measured disc of a slice.

    The grey values of all discs are read at once, the canal pixels in every disc's height
    band projected at once (``band_points``) and the nucleus/annulus masks made at once;
    what remains per disc are its means and medians, each a numpy reduction over that
    disc's own values (the same arithmetic as one disc at a time).

    Args:
        img: [H, W] grey image as given, read at the structures' pixels as float32.
        img_int: the same image when it holds small integers (else None), whose grey values
            give a faster but identical mixture histogram.
        discs: per disc (structure, frame, extent, usable adjacent vertebral bodies).
        canal: the canal structure, or None when absent; spacing: (row, col) mm.

    Returns:
        Per disc: (columns disc_si_mean, csf_si_median, vert_si_median, disc_si_csf_ratio,
        disc_si_vert_ratio and, when its regions are large enough,
        disc_si_inner_outer_diff; reason codes; the grey values for the mixture fit
        (``gmm_peak_gaps``), or None when too few).
    """
    if not discs:
        return []
    flat_img = img.ravel()
    # Grey values of every disc pixel (disc k's at d_starts[k]:d_starts[k + 1]).
    d_lengths = [st.rows.size for st, _, _, _ in discs]
    d_starts = np.zeros(len(discs) + 1, np.int64)
    np.cumsum(d_lengths, out=d_starts[1:])
    rows = np.concatenate([st.rows for st, _, _, _ in discs])
    cols = np.concatenate([st.cols for st, _, _, _ in discs])
    raw_all = flat_img[rows * img.shape[1] + cols]
    vals_all = raw_all.astype(np.float32)
    csf = _csf_medians(img, discs, canal, spacing)
    inner, outer = _nucleus_annulus_masks(discs, spacing, d_lengths)
    n_inner = segment_counts(inner, d_starts).tolist()
    n_outer = segment_counts(outer, d_starts).tolist()
    out: list[SignalResult] = []
    for k, (_, _, _, verts) in enumerate(discs):
        s0, s1 = int(d_starts[k]), int(d_starts[k + 1])
        disc_vals = vals_all[s0:s1]
        values, why = _reference_columns(disc_vals, csf[k], verts, img)
        if n_inner[k] >= MIN_SI_PIXELS and n_outer[k] >= MIN_SI_PIXELS:
            diff = (array_mean(disc_vals[inner[s0:s1]])
                    - array_mean(disc_vals[outer[s0:s1]]))
            values["disc_si_inner_outer_diff"] = float(diff) / values["csf_si_median"]
        else:
            why.append("si_regions_too_small")
        gmm_vals = None
        if disc_vals.size >= MIN_GMM_PIXELS:
            gmm_vals = disc_vals if img_int is None else raw_all[s0:s1]
        else:
            why.append("si_gmm_too_few_pixels")
        out.append((values, why, gmm_vals))
    return out


def _csf_medians(img: np.ndarray, discs: Sequence[_DiscItem], canal: Optional[Structure],
                 spacing: tuple[float, float]) -> list[float]:
    """Per disc, the median grey value of the canal pixels posterior to it (a > 0) within its
    height band (|b| <= half its extent along v), or NaN when the canal is absent or fewer than
    ``MIN_SI_PIXELS`` such pixels."""
    n = len(discs)
    csf = [float("nan")] * n
    if canal is None or not canal.n_pixels:
        return csf
    W = img.shape[1]
    flat_img = img.ravel()
    halves = [0.5 * (ext.b_sup - ext.b_inf) for _, _, ext, _ in discs]
    a, b, sls, c_starts = band_points(
        [(canal, fr, -h, h) for (_, fr, _, _), h in zip(discs, halves)], spacing)
    sel = (a > 0) & (np.abs(b) <= np.repeat(halves, np.diff(c_starts)))
    c_rows = np.concatenate([canal.rows[sl] for sl in sls])
    c_cols = np.concatenate([canal.cols[sl] for sl in sls])
    counts = segment_counts(sel, c_starts)
    for k in range(n):
        s0, s1 = int(c_starts[k]), int(c_starts[k + 1])
        if s1 > s0 and counts[k] >= MIN_SI_PIXELS:
            keep = sel[s0:s1]
            csf[k] = median_grey(flat_img[c_rows[s0:s1][keep] * W + c_cols[s0:s1][keep]])
    return csf


def _nucleus_annulus_masks(discs: Sequence[_DiscItem], spacing: tuple[float, float],
                           d_lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """bool [N] nucleus (t in ``NUCLEUS_T``) and annulus (t outside ``ANNULUS_T``) masks of
    the pixels of all discs, concatenated in order (disc k has ``d_lengths[k]`` pixels)."""
    a_all = np.concatenate([st.project(fr, spacing)[0] for st, fr, _, _ in discs])
    a_ant = np.repeat([ext.a_ant for _, _, ext, _ in discs], d_lengths)
    span = np.repeat([ext.a_post - ext.a_ant for _, _, ext, _ in discs], d_lengths)
    t = (a_all - a_ant) / span
    inner = (t >= NUCLEUS_T[0]) & (t <= NUCLEUS_T[1])
    outer = (t < ANNULUS_T[0]) | (t > ANNULUS_T[1])
    return inner, outer


def _reference_columns(disc_vals: np.ndarray, csf: float, verts: list[Structure],
                       img: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """A disc's mean grey value, its CSF and vertebral references and their ratios
    (disc_si_mean, csf_si_median, vert_si_median, disc_si_csf_ratio, disc_si_vert_ratio), and
    the reason codes of a missing reference (the reference is then NaN).

    Args:
        disc_vals: float32 [N] the disc's grey values; csf: ``_csf_medians``' value;
        verts: the usable adjacent vertebral bodies; img: [H, W] grey image.
    """
    values: dict[str, float] = {"disc_si_mean": float(array_mean(disc_vals))}
    why: list[str] = []
    if not (csf > 0):
        why.append("csf_reference_missing")
        csf = float("nan")
    values["csf_si_median"] = csf
    vmeds = [v.median_of(img) for v in verts if v.n_pixels >= MIN_SI_PIXELS]
    vref = mean_of(vmeds) if vmeds else float("nan")
    if not (vref > 0):
        why.append("vertebra_reference_missing")
        vref = float("nan")
    values["vert_si_median"] = vref
    values["disc_si_csf_ratio"] = values["disc_si_mean"] / csf
    values["disc_si_vert_ratio"] = values["disc_si_mean"] / vref
    return values, why
