"""A structure's extent in a frame: its mask resampled along the frame's axes, and its ends.

Lengths are read from the mask resampled in the frame (bilinear, threshold 0.5; step
``SAMPLE_STEP_FRACTION`` of the smaller pixel spacing for discs and the canal,
``VERTEBRA_STEP_FRACTION`` for the 3-4 times larger vertebral bodies), which puts the boundary
half-way between the last inside and the first outside pixel centre: an unbiased edge for masks
rasterised by pixel centre, so measurements agree with analytic shapes within a pixel.

All structures of one kind on a slice are done at once: their grids are resampled into one
stacked array (``_resample_stack``), and their edge crossings, median-filtered ends, edge fits
and canal runs each come from a few whole-slice numpy calls (``measure_extents``,
``canal_runs``); the column crossings transpose only the 0/1 inside masks and read the values
from the stack (``crossings_strided``); grid extents come from the rows' end pixels
(``Structure.row_ends``). Results are bit-identical to resampling each structure alone (grid
values are multiples of 1/1024 from OpenCV's fixed-point bilinear weights, so their sums do not
depend on summation order, nor on whether a zero neighbour lies inside or outside the ROI); the
edge fits' least-squares sums are accumulated in another order, which moves the fitted ends by
< 1e-12 mm.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import cv2
import numpy as np

from spoils_tf.geometry.frame import Frame, Grid, grid_size, grid_to_pixel, warp
from spoils_tf.geometry.reductions import array_mean
from spoils_tf.geometry.structures import Structure

# === Constants ===
# Resampling step, as a fraction of the smaller pixel spacing: discs (and the canal) 1/3;
# vertebral bodies, 3-4 times larger, one pixel (within a pixel of the truth, as at 1/2 pixel,
# for a quarter of the warp; BUILD.md, "Geometry").
SAMPLE_STEP_FRACTION = 1.0 / 3.0
VERTEBRA_STEP_FRACTION = 1.0
# An edge fit is trusted only if its RMS residual is at most this many pixels.
EDGE_FIT_MAX_RMS_PX = 0.75
# Range of t over which the superior/inferior edges are fitted (the rest of the posterior end,
# where a bulge changes the shape, is read from the resampled grid).
EDGE_FIT_T = (0.02, 0.98)


# === Extents ===
@dataclasses.dataclass(frozen=True)
class Extent:
    """Lengths of one structure read in a frame (all mm).

    Attributes:
        grid: the resampled structure.
        a_ant, a_post: anterior / posterior end along ``u``.
        b_inf, b_sup: inferior / superior end along ``v``.
        edge_fit: quadratic fits of the superior and inferior edges (see ``_fit_v_edges``),
            or None when they do not describe the shape.
    """

    grid: Grid
    a_ant: float
    a_post: float
    b_inf: float
    b_sup: float
    edge_fit: Optional[tuple[np.ndarray, np.ndarray]] = None

    def h_at(self, t: float) -> float:
        """Extent along v at normalised position t (0 = anterior end, 1 = posterior end)."""
        g = self.grid
        a = self.a_ant + t * (self.a_post - self.a_ant)
        i = int(round((a - g.a0) / g.step))
        i = min(max(i, 0), g.values.shape[1] - 1)
        return float(np.add.reduce(g.values[:, i]) * g.step)

    def mean_h(self, t0: float = 0.1, t1: float = 0.9) -> float:
        g = self.grid
        a_lo = self.a_ant + t0 * (self.a_post - self.a_ant)
        a_hi = self.a_ant + t1 * (self.a_post - self.a_ant)
        i0 = int(math.ceil((a_lo - g.a0) / g.step))
        i1 = int(math.floor((a_hi - g.a0) / g.step))
        if i1 < i0:
            return self.h_at(0.5 * (t0 + t1))
        return float(array_mean(np.add.reduce(g.values[:, i0:i1 + 1], axis=0)) * g.step)

    def chord_at_b(self, b: float) -> float:
        """Chord along u at height b (mm in the frame)."""
        g = self.grid
        j = int(round((g.b1 - b) / g.step))
        j = min(max(j, 0), g.values.shape[0] - 1)
        return float(np.add.reduce(g.values[j]) * g.step)

    def mean_width(self, central: float = 0.8) -> float:
        """Mean chord along u over the central fraction of the extent along v, read from the
        resampled grid (the vertebral body width; a disc's width is area / mean height)."""
        g = self.grid
        margin = 0.5 * (1.0 - central) * (self.b_sup - self.b_inf)
        b_lo, b_hi = self.b_inf + margin, self.b_sup - margin
        j0 = int(math.ceil((g.b1 - b_hi) / g.step))
        j1 = int(math.floor((g.b1 - b_lo) / g.step))
        if j1 < j0:
            return self.chord_at_b(0.5 * (b_lo + b_hi))
        return float(array_mean(np.add.reduce(g.values[j0:j1 + 1], axis=1)) * g.step)


_GridSpec = tuple[float, float, int, int]  # a grid's (a0 mm, b1 mm, na, nb)
_Run = tuple[float, float]  # (a_start, a_end) mm along a line


def _resample_stack(structs: Sequence[Structure], frames: Sequence[Frame],
                    spacing: tuple[float, float],
                    step: float) -> tuple[np.ndarray, np.ndarray, list[_GridSpec]]:
    """Every structure resampled in its frame, the grids stacked one below the other.

    Structure k's grid spans its pixel centres' range along ``u`` and ``v`` plus 1.5 pixels on
    each side: ``nb`` rows by ``na`` columns, ``vals[offsets[k]:offsets[k + 1], :na]``, exactly
    ``sample_in_frame``'s grid (the warp is computed per output sample, whatever the output
    size). Its columns ``na:`` (larger ``a``: padding to the widest grid) lie more than 1.5
    pixels beyond every pixel of the structure and read 0.

    Returns:
        (vals float32 [sum of nb, max of na], offsets int [n + 1],
        [(a0, b1, na, nb)] per structure; a0, b1 in mm).
    """
    pad = 1.5 * max(spacing)
    specs = []
    for s, fr in zip(structs, frames):
        # The extremes along u and v are taken at the rows' end pixels (Structure.row_ends):
        # the same projected values, a few hundred instead of thousands.
        x, y = s.x_y_mm(spacing)
        ends = s.row_ends()
        a, b = fr.project_xy(x[ends], y[ends])
        a_lo, a_hi, b_lo, b_hi = a.min() - pad, a.max() + pad, b.min() - pad, b.max() + pad
        specs.append((float(a_lo), float(b_hi), grid_size(a_lo, a_hi, step),
                      grid_size(b_lo, b_hi, step)))
    na_max = max(sp[2] for sp in specs)
    offsets = np.cumsum([0] + [sp[3] for sp in specs])
    vals = np.empty((int(offsets[-1]), na_max), np.float32)
    for k, (s, fr, (a0, b1, _, nb)) in enumerate(zip(structs, frames, specs)):
        m = grid_to_pixel(fr, spacing, a0, b1, step, s.offset)
        warp(s.roi, m, (na_max, nb), cv2.INTER_LINEAR, dst=vals[offsets[k]:offsets[k + 1]])
    return vals, offsets, specs


def measure_extents(structs: Sequence[Structure], frames: Sequence[Frame],
                    spacing: tuple[float, float], step: float, fit_edges: bool) -> list[Extent]:
    """Each structure resampled in its frame and its ends (mm), for all structures at once.

    The grids are stacked (``_resample_stack``) so that the edge crossings of every grid row
    (along u) and column (along v) of every structure come from two ``crossings`` calls, the
    median-filtered ends from two ``segment_median_ends`` calls and the edge fits from one
    ``_fit_v_edges`` call: a few dozen numpy calls per slice instead of per structure.
    ``fit_edges``: also fit the superior/inferior edges (discs; vertebral bodies are large
    enough without).

    Args:
        structs: usable structures (``problem == ""``, at least ``MIN_STRUCTURE_PIXELS``);
            frames: their frames; spacing: (row, col) mm; step: grid step in mm.

    Returns:
        One ``Extent`` per structure, in order; its grid is a view into the stack.

    Raises:
        RuntimeError: if a resampled structure is empty (cannot happen for a usable one).
    """
    n = len(structs)
    if n == 0:
        return []
    vals, offsets, specs = _resample_stack(structs, frames, spacing, step)
    win = max(1, int(round(max(spacing) / step)))
    # Crossings along u of all grid rows, and along v of all grid columns.
    inside = vals >= 0.5
    first, last, rows = crossings(vals, inside)
    top_all, bottom_all, cols, col_starts = _column_crossings(vals, inside, offsets, specs)
    row_starts = rows.searchsorted(offsets)
    if (np.diff(row_starts) == 0).any():  # cannot happen for >= MIN_STRUCTURE_PIXELS
        empty = [structs[k].name for k in np.flatnonzero(np.diff(row_starts) == 0)]
        raise RuntimeError(f"{', '.join(empty)}: resampled structure is empty")
    first_col, last_col = segment_median_ends(first, last, row_starts, win)
    first_row, last_row = segment_median_ends(top_all, bottom_all, col_starts, win)
    a0s = np.array([sp[0] for sp in specs])
    b1s = np.array([sp[1] for sp in specs])
    a_ants = a0s + first_col * step
    a_posts = a0s + last_col * step
    b_infs = (b1s - last_row * step).tolist()
    b_sups = (b1s - first_row * step).tolist()
    fits: list[Optional[tuple[np.ndarray, np.ndarray]]] = [None] * n
    if fit_edges:
        fits = _fit_v_edges(a0s, b1s, step, a_ants, a_posts, max(spacing), cols, col_starts,
                            top_all, bottom_all)
        fitted = [k for k in range(n) if fits[k] is not None]
        if fitted:
            _apply_edge_fits(fitted, fits, specs, step, a_ants.tolist(), a_posts.tolist(),
                             b_infs, b_sups, win, cols, col_starts, top_all, bottom_all)
    out = []
    for k, (a0, b1, na, _) in enumerate(specs):
        grid = Grid(vals[offsets[k]:offsets[k + 1], :na], a0, b1, step)
        out.append(Extent(grid, float(a_ants[k]), float(a_posts[k]), b_infs[k], b_sups[k],
                          fits[k]))
    return out


def _column_crossings(vals: np.ndarray, inside: np.ndarray, offsets: np.ndarray,
                      specs: list[_GridSpec]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        np.ndarray]:
    """``crossings`` of every grid column of the stacked grids (``_resample_stack``).

    The columns are the rows of the transposed grids, stacked likewise (structure k's at
    ``t_offsets[k]:t_offsets[k + 1]``). Only the 0/1 inside masks are transposed (a quarter of
    the float grids' bytes); the values at the crossings are read from the untransposed stack.

    Args:
        vals: float32 [sum of nb, max of na] the stack; inside: bool, ``vals >= 0.5``;
        offsets: int [n + 1] the grids' first rows; specs: (a0, b1, na, nb) per grid.

    Returns:
        (top float64 [N], bottom float64 [N] first / last crossing in grid rows, cols int [N]
        the non-empty columns (per-structure indices, ascending within a structure),
        col_starts int [n + 1] structure k's entries at ``col_starts[k]:col_starts[k + 1]``).
    """
    n = len(specs)
    nas = [sp[2] for sp in specs]
    nbs = [sp[3] for sp in specs]
    t_offsets = np.cumsum([0] + nas)
    inside_t = np.zeros((int(t_offsets[-1]), max(nbs)), np.uint8)
    inside8 = inside.view(np.uint8)
    for k, (na, nb) in enumerate(zip(nas, nbs)):
        inside_t[t_offsets[k]:t_offsets[k + 1], :nb] = cv2.transpose(
            inside8[offsets[k]:offsets[k + 1], :na])
    na_max = vals.shape[1]
    # Row r of the transposed stack (structure k, grid column i): sample j at
    # vals[offsets[k] + j, i], of nb samples.
    seg_t = np.repeat(np.arange(n), nas)
    col_t = np.arange(int(t_offsets[-1])) - t_offsets[:-1][seg_t]
    top, bottom, cols = crossings_strided(
        vals.ravel(), inside_t.view(np.bool_), offsets[:-1][seg_t] * na_max + col_t, na_max,
        np.array(nbs)[seg_t])
    col_starts = cols.searchsorted(t_offsets)
    cols = cols - np.repeat(t_offsets[:-1], np.diff(col_starts))  # per-structure index
    return top, bottom, cols, col_starts


def _apply_edge_fits(fitted: list[int], fits: list, specs: list, step: float,
                     a_ants: list[float], a_posts: list[float], b_infs: list[float],
                     b_sups: list[float], win: int, cols: np.ndarray, col_starts: np.ndarray,
                     top_all: np.ndarray, bottom_all: np.ndarray) -> None:
    """Superior/inferior ends (``b_sups``, ``b_infs``, updated in place) of the structures
    ``fitted`` from their edge fits over t <= ``EDGE_FIT_T[1]``, and beyond it (the posterior
    end, where a bulge changes the shape) from the raw, median-filtered edge profiles of the
    grid columns there (``cols``, ``top_all``, ``bottom_all``: as in ``measure_extents``)."""
    i_splits = {}
    for k in fitted:
        a_ant, a_post = a_ants[k], a_posts[k]
        a_split = a_ant + EDGE_FIT_T[1] * (a_post - a_ant)
        aa = np.linspace(a_ant, a_split, 64)
        sup, inf = fits[k]
        b_sups[k] = float(((sup[0] * aa + sup[1]) * aa + sup[2]).max())  # np.polyval
        b_infs[k] = float(((inf[0] * aa + inf[1]) * aa + inf[2]).min())
        i_splits[k] = int(math.ceil((a_split - specs[k][0]) / step))
    # The posterior columns of each fitted structure: a tail of its (ascending) columns.
    starts = [int(col_starts[k]) + int(np.searchsorted(cols[col_starts[k]:col_starts[k + 1]],
                                                        i_splits[k])) for k in fitted]
    ends = [int(col_starts[k + 1]) for k in fitted]
    idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
    tail_starts = np.concatenate([[0], np.cumsum([e - s for s, e in zip(starts, ends)])])
    top_row, bottom_row = segment_median_ends(top_all[idx], bottom_all[idx], tail_starts, win)
    for j, k in enumerate(fitted):
        if ends[j] > starts[j]:
            b1 = specs[k][1]
            b_sups[k] = max(b_sups[k], b1 - float(top_row[j]) * step)
            b_infs[k] = min(b_infs[k], b1 - float(bottom_row[j]) * step)


def _fit_v_edges(a0s: np.ndarray, b1s: np.ndarray, step: float, a_ants: np.ndarray,
                 a_posts: np.ndarray, pixel_mm: float, cols: np.ndarray, col_starts: np.ndarray,
                 top: np.ndarray,
                 bottom: np.ndarray) -> list[Optional[tuple[np.ndarray, np.ndarray]]]:
    """Quadratic fits b = p(a) of the superior and inferior edges of n structures, or None.

    The edge of a rasterised, nearly horizontal boundary is a staircase, so its single highest
    point is off by up to half a pixel and chords near a sloping edge jump by many pixels. A
    quadratic fitted to each edge over t in ``EDGE_FIT_T`` = [0.02, 0.98] (exact for straight
    wedge edges, close for the curved endplates of real discs) averages the staircase out;
    the last 2 %, where a bulge changes the shape, is read from the grid. It is used only
    when it describes the edge: None if fewer than 8 columns or if either fit's RMS residual
    exceeds ``EDGE_FIT_MAX_RMS_PX`` pixels (irregular shapes then use the raw grid).

    Least squares on (a^2, a, 1), a centred per structure for conditioning, by the 3 x 3
    normal equations; the sums of all structures come from one ``np.bincount`` each.

    Args:
        a0s, b1s: float64 [n] the grids' origins (``Grid``), step: their step (mm);
        a_ants, a_posts: float64 [n] the structures' ends along u (mm);
        pixel_mm: the larger pixel spacing.
        cols: int [N] non-empty grid columns of all structures (structure k's are
            ``cols[col_starts[k]:col_starts[k + 1]]``, per-structure indices); top, bottom:
            float64 [N] their first / last crossing (sub-sample grid rows, from ``crossings``
            of the transposed grids).

    Returns:
        Per structure, (superior coefficients, inferior coefficients) for ``np.polyval``
        (a in mm -> b in mm), or None.
    """
    n = len(a0s)
    seg = np.repeat(np.arange(n), np.diff(col_starts))
    a = a0s[seg] + cols * step
    span = (a_posts - a_ants)[seg]
    keep = (a >= a_ants[seg] + EDGE_FIT_T[0] * span) & (a <= a_ants[seg] + EDGE_FIT_T[1] * span)
    seg, a = seg[keep], a[keep]
    count = np.bincount(seg, minlength=n).astype(np.float64)
    ok = count >= 8
    out: list[Optional[tuple[np.ndarray, np.ndarray]]] = [None] * n
    if not ok.any():
        return out
    cnt = np.where(ok, count, 1.0)
    m = np.bincount(seg, a, minlength=n) / cnt
    ac = a - m[seg]
    a2 = ac * ac
    s1, s2, s3, s4 = (np.bincount(seg, w, minlength=n) for w in (ac, a2, a2 * ac, a2 * a2))
    ys = (top[keep] * -step + b1s[seg], bottom[keep] * -step + b1s[seg])  # superior, inferior
    normal = np.stack([np.stack([s4, s3, s2], 1), np.stack([s3, s2, s1], 1),
                       np.stack([s2, s1, cnt], 1)], 1)[ok]  # [n_ok, 3, 3]
    rhs = np.stack([np.stack([np.bincount(seg, y * w, minlength=n) for y in ys], 1)
                    for w in (a2, ac, np.ones_like(a))], 1)[ok]  # [n_ok, 3 terms, 2 edges]
    coef = np.zeros((n, 3, 2))
    coef[ok] = np.linalg.solve(normal, rhs)
    c2, c1, c0 = coef[seg, 0], coef[seg, 1], coef[seg, 2]  # [N_kept, 2]
    resid = c2 * a2[:, None] + c1 * ac[:, None] + c0 - np.stack(ys, 1)
    ss = np.stack([np.bincount(seg, resid[:, e] ** 2, minlength=n) for e in (0, 1)], 1)
    rms = np.sqrt(ss / cnt[:, None]).max(axis=1)
    # Back to polynomials in a: p(a) = c2 (a - m)^2 + c1 (a - m) + c0.
    for k in np.flatnonzero(ok & (rms <= EDGE_FIT_MAX_RMS_PX * pixel_mm)).tolist():
        mk = float(m[k])
        fits = [np.array([c2k, c1k - 2 * c2k * mk, c2k * mk * mk - c1k * mk + c0k])
                for c2k, c1k, c0k in coef[k].T.tolist()]
        out[k] = (fits[0], fits[1])
    return out


def crossings(f: np.ndarray,
               inside: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-sample positions where each row of ``f`` (float [rows, n]) first rises to and last
    falls from 0.5, by linear interpolation, for the rows that hold an inside sample.

    Args:
        f: float32 [rows, n] resampled values (C-contiguous).
        inside: optional precomputed ``f >= 0.5`` (bool, C-contiguous).

    Returns:
        (first float64 [k], last float64 [k], rows int64 [k]): the crossings of the k rows
        with an inside sample, and those rows' indices (ascending).
    """
    if inside is None:
        inside = f >= 0.5
    n_rows, n = f.shape
    i = inside.argmax(axis=1)  # first inside sample (0 for an empty row)
    rows = np.flatnonzero(inside[np.arange(n_rows), i])  # rows with an inside sample
    # Last inside sample per row: argmax of the row-reversed mask, reversed by cv2.flip
    # (numpy's argmax on a negatively strided view is several times slower).
    k = (n - 1) - cv2.flip(inside.view(np.uint8), 1).view(np.bool_).argmax(axis=1)[rows]
    i = i[rows]
    # Samples before the first, at the first, at the last and after the last inside sample,
    # read from the flat array (outside the row: 0).
    flat = f.ravel()
    base = rows * n
    prev = flat[base + np.maximum(i - 1, 0)]
    prev[i == 0] = 0.0
    cur = flat[base + i]
    first = i - 1 + (0.5 - prev) / np.maximum(cur - prev, 1e-6)
    nxt = flat[base + np.minimum(k + 1, n - 1)]
    nxt[k == n - 1] = 0.0
    cur = flat[base + k]
    last = k + (cur - 0.5) / np.maximum(cur - nxt, 1e-6)
    return first, last, rows


def crossings_strided(flat: np.ndarray, inside: np.ndarray, base: np.ndarray, stride: int,
                       length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``crossings`` of rows stored with a stride: row r's sample j is
    ``flat[base[r] + j * stride]`` for j < ``length[r]`` and reads 0 beyond (the columns of
    the stacked grids, without transposing the float values).

    Args:
        flat: float32 [M] the values; inside: bool [rows, n] (C-contiguous) row r's samples
            >= 0.5, False beyond ``length[r]`` (n >= every length); base: int [rows];
        stride: int; length: int [rows].

    Returns:
        As ``crossings``: (first float64 [k], last float64 [k], rows int64 [k]), the same
        float operations on the same float32 values, so the same bits.
    """
    n_rows, n = inside.shape
    i = inside.argmax(axis=1)
    rows = np.flatnonzero(inside[np.arange(n_rows), i])
    k = (n - 1) - cv2.flip(inside.view(np.uint8), 1).view(np.bool_).argmax(axis=1)[rows]
    i = i[rows]
    base = base[rows]
    length = length[rows]
    prev = flat[base + np.maximum(i - 1, 0) * stride]
    prev[i == 0] = 0.0
    cur = flat[base + i * stride]
    first = i - 1 + (0.5 - prev) / np.maximum(cur - prev, 1e-6)
    nxt = flat[base + np.minimum(k + 1, length - 1) * stride]
    nxt[k + 1 >= length] = 0.0
    cur = flat[base + k * stride]
    last = k + (cur - 0.5) / np.maximum(cur - nxt, 1e-6)
    return first, last, rows


def segment_median_ends(first: np.ndarray, last: np.ndarray, starts: np.ndarray,
                         win: int) -> tuple[np.ndarray, np.ndarray]:
    """(min of ``first``, max of ``last``) of each segment ``[starts[k], starts[k + 1])`` of
    concatenated edge profiles (one segment per structure: the first and last crossing of
    every grid row, or column), robust to staircase corners, for all segments at once.

    Each profile is median-filtered over ``win`` entries (about one pixel; edge-padded) before
    taking its extreme, so a single corner pixel protruding from a rasterised edge does not
    set the extent. No filter when ``win`` <= 1 or the segment has at most ``win`` entries.

    Args:
        first, last: float64 [N] concatenated profiles; starts: int [n + 1] segment bounds
            (ascending, ``starts[0] == 0``, ``starts[-1] == N``); win: filter length.

    Returns:
        (lo float64 [n], hi float64 [n]); NaN for an empty segment.
    """
    starts = np.asarray(starts)
    lengths = np.diff(starts)
    n_seg = lengths.size
    lo = np.full(n_seg, np.nan)
    hi = np.full(n_seg, np.nan)
    nonempty = lengths > 0
    if not nonempty.any():
        return lo, hi
    pad = win // 2
    filtered = (lengths > win) if win > 1 else np.zeros(n_seg, bool)
    if pad > 1:
        # Longer windows (anisotropic pixels): one segment at a time.
        for k in np.flatnonzero(filtered):
            s, e = starts[k], starts[k + 1]
            both = np.pad(np.stack([first[s:e], last[s:e]]), ((0, 0), (pad, pad)), mode="edge")
            windows = np.lib.stride_tricks.sliding_window_view(both, 2 * pad + 1, axis=1)
            med = np.partition(windows, pad, axis=2)[:, :, pad]
            lo[k], hi[k] = float(med[0].min()), float(med[1].max())
        for k in np.flatnonzero(nonempty & ~filtered):
            s, e = starts[k], starts[k + 1]
            lo[k], hi[k] = float(first[s:e].min()), float(last[s:e].max())
        return lo, hi
    f, l = first, last
    if filtered.any():
        # Median of 3 with edge padding: a segment's end values stay as they are
        # (median(x0, x0, x1) = x0), interior ones become the median of their neighbours.
        interior = np.repeat(filtered, lengths)
        interior[starts[:-1][nonempty]] = False
        interior[starts[1:][nonempty] - 1] = False
        f, l = first.copy(), last.copy()
        for prof, out in ((first, f), (last, l)):
            a, b, c = prof[:-2], prof[1:-1], prof[2:]
            med = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
            np.copyto(out[1:-1], med, where=interior[1:-1])
    idx = starts[:-1][nonempty]
    lo[nonempty] = np.minimum.reduceat(f, idx)
    hi[nonempty] = np.maximum.reduceat(l, idx)
    return lo, hi




def canal_runs(canal: Structure, frames: Sequence[Frame], spacing: tuple[float, float],
                step: float, shape: tuple[int, int]) -> list[tuple[Optional[_Run], str]]:
    """First canal run (a_start, a_end) mm along each disc's mid-line posterior to its centroid.

    The canal is resampled along every mid-line (``a`` in [0, a_max], a_max where the line
    leaves the image's pixel-centre box) into one array, and the first run of inside samples
    and its two crossings of 0.5 (as ``crossings``) are found for all discs at once.

    Args:
        canal: the canal structure (``n_pixels > 0``); frames: the discs' frames;
        spacing: (row, col) mm; step: sampling step (mm); shape: the image's (H, W).

    Returns:
        Per frame, ((a_start, a_end), "") or (None, reason): reason
        "canal_not_on_disc_midline" or "canal_cut_by_border".
    """
    H, W = shape
    out: list[tuple[Optional[_Run], str]] = [(None, "canal_not_on_disc_midline")] * len(frames)
    todo, a_maxs = [], []
    for k, fr in enumerate(frames):
        # Longest a for which the mid-line stays inside the image (pixel-centre box).
        limits = []
        for c, hi in ((0, (W - 1) * spacing[1]), (1, (H - 1) * spacing[0])):
            u_c, o_c = float(fr.u[c]), float(fr.origin[c])
            if abs(u_c) > 1e-12:
                for bound in (0.0, hi):
                    t = (bound - o_c) / u_c
                    if t > 0:
                        limits.append(t)
        a_max = min(limits) if limits else 0.0
        if a_max > step:
            todo.append(k)
            a_maxs.append(a_max)
    if not todo:
        return out
    lengths = np.array([grid_size(0.0, a_max, step) for a_max in a_maxs])
    n, L = len(todo), int(lengths.max())
    f = np.empty((n, L), np.float32)  # f[j, i]: the canal at a = i * step on mid-line j
    for j, k in enumerate(todo):
        m = grid_to_pixel(frames[k], spacing, 0.0, 0.0, step, canal.offset)
        warp(canal.roi, m, (L, 1), cv2.INTER_LINEAR, dst=f[j:j + 1])
    valid = np.arange(L) < lengths[:, None]
    inside = (f >= 0.5) & valid
    r = np.arange(n)
    start = inside.argmax(axis=1)                       # first inside sample
    found = inside[r, start]
    outside_after = ~inside & valid & (np.arange(L) >= start[:, None])
    end = outside_after.argmax(axis=1)                  # first outside sample after the run
    closed = outside_after[r, end]
    # Crossings of the run, read as crossings reads f[off:end + 1] (off = start - 1 or 0).
    off = np.maximum(start - 1, 0)
    prev = f[r, off]
    prev[start == 0] = 0.0
    cur = f[r, start]
    first = (start - off) - 1 + (0.5 - prev) / np.maximum(cur - prev, 1e-6)
    cur = f[r, np.maximum(end - 1, 0)]
    nxt = f[r, end]
    last = (end - 1 - off) + (cur - 0.5) / np.maximum(cur - nxt, 1e-6)
    a_starts = ((off + first) * step).tolist()
    a_ends = ((off + last) * step).tolist()
    for j, k in enumerate(todo):
        if not found[j]:
            continue
        if not closed[j]:
            out[k] = (None, "canal_cut_by_border")
            continue
        # The canal ROI reads 0 outside the image: a run ending at the image border is cut there.
        r_end, c_end = frames[k].to_pixel(a_ends[j], 0.0, spacing)
        if r_end <= 0.5 or c_end <= 0.5 or r_end >= H - 1.5 or c_end >= W - 1.5:
            out[k] = (None, "canal_cut_by_border")
        else:
            out[k] = ((a_starts[j], a_ends[j]), "")
    return out


