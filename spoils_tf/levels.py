"""Anatomical level labelling of a segmentation network's output (numpy + scipy only).

Input: the network's per-pixel probabilities ``probs: float [H, W, NUM_SEG_CLASSES]`` for one
sagittal slice in display orientation (row 0 superior, column 0 anterior, the spinal canal to
the right of the vertebral bodies) and ``spacing_mm = (row_mm, col_mm)``. Pixel ``(r, c)`` has
its centre at ``(x, y) = (c * col_mm, r * row_mm)`` mm, as in ``spoils_tf.geometry``.

``assign_levels`` turns the probabilities into one consistent chain of levels:

1. Tissues: the class probabilities are summed into four tissues (background, vertebra = the
   ``labels.VERTEBRA_IDS``, disc = the ``labels.DISC_IDS``, canal) and each pixel takes the
   most probable tissue. Connected components (8-connected) are found per tissue; components
   smaller than ``LevelConfig.min_area_mm2`` are specks and are dropped. A disc or vertebra
   component (at least twice that area) whose pixels' level argmax splits it into two
   adjacent levels, each holding at least ``merge_min_fraction`` of it with centroids
   ``merge_min_separation_mm`` apart, is split in two (merged structures); a disc that stays
   longer than ``merged_extent_steps`` along the centre line is flagged instead.
2. Centre line: a robust quadratic ``x(y)`` (mm) through the disc and vertebra centroids
   (exhaustive RANSAC over lines and parabolas through two or three centroids, scored by the
   area within ``max_offline_mm``, then a weighted least-squares refit on those inliers), so a
   lordotic (curved) spine is followed. Components farther than ``max_offline_mm`` from it are
   dropped; the rest are ordered by arc length along it, bottom to top.
3. Levels, jointly, by dynamic programming (``_align``): the ordered components are aligned
   monotonically to the chain of slots, bottom to top::

       S2 | S1-S2 | S1 | L5-S1 L5 L4-L5 L4 ... L1-L2 L1 T12-L1 | T12 T11-T12 T11 ...

   The slots outside the 14-class scheme (sacrum, the disc below L5-S1, S1, which the
   training data never labels, T12 and above) are background slots: a component placed there
   becomes background and is reported in ``dropped``. A component may only take a slot of its
   own tissue (discs alternate with bodies). The objective (natural-log units) is the sum of

   - per component in a labelled slot: ``log p(slot's class)``, with ``p`` the mean of the
     component's pixel probabilities over its tissue's classes, renormalised to sum to 1;
   - per component in a background slot: ``log(1 / K) - background_slot_penalty`` (``K`` =
     number of classes of its tissue: the network gives no evidence for these slots);
   - per dropped component: ``-drop_penalty``;
   - per pair of consecutive placed components ``j' < j`` at distance ``d`` mm along the
     centre line: ``-skip_penalty`` per labelled slot skipped between them and
     ``-gap_weight * (d / step - (j - j'))**2``, ``step`` being the typical distance between
     neighbouring disc and body centroids on this slice (median). A real gap (a missing disc
     between two bodies lies two steps apart) is cheap; a fake one is expensive;
   - ``-bottom_missing_penalty`` per labelled slot below the lowest placed component and
     ``-top_missing_penalty`` per labelled slot above the highest. The bottom penalty is the
     larger one, so level-uninformative probabilities are counted from the bottom (the lowest
     disc is L5-S1, SPIDER's convention).

   A component the programme drops that lies within ``fragment_max_offset_steps`` (along the
   centre line) of a placed component of its tissue is a fragment of it and takes its level.
   The same optimum is recomputed with one component forced one level (two slots) up or down;
   when the best such alternative scores within ``shift_margin`` of the chosen chain, an
   off-by-one / transitional-vertebra flag is raised instead of silently trusting either.
4. Canal: canal components whose pixels lie within ``canal_max_offline_mm`` (median) of the
   centre line and overlap the chain along it are kept; other canal blobs are dropped.

Orientation: ``canal_side`` tells from a label map whether the canal lies posterior (right,
correct) or anterior (left, the slice is mirrored) of the bodies and discs; ``orient`` applies
one of ``ORIENTATIONS`` to an array; ``choose_orientation`` picks among level results computed
on each candidate orientation of an image the one with a posterior canal and a clearly best
level score, and says when the evidence does not allow a confident choice.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage

from spoils_tf import labels

# === Tissues ===
TISSUES: tuple[str, ...] = ("background", "vertebra", "disc", "canal")
_BG, _VERT, _DISC, _CANAL = range(len(TISSUES))
_LEVEL_IDS: dict[int, tuple[int, ...]] = {_VERT: labels.VERTEBRA_IDS, _DISC: labels.DISC_IDS}
_EIGHT = np.ones((3, 3), dtype=bool)
_PROB_FLOOR = 1e-6
# tissue_map works on row blocks of about this many pixels: a small matrix product per block
# stays in cache (one product over a whole slice is several times slower).
_CHUNK_PIXELS = 4096
_GROUPS = np.zeros((labels.NUM_SEG_CLASSES, len(TISSUES)), np.float32)  # class -> tissue
_GROUPS[labels.BACKGROUND_ID, _BG] = 1.0
_GROUPS[list(labels.VERTEBRA_IDS), _VERT] = 1.0
_GROUPS[list(labels.DISC_IDS), _DISC] = 1.0
_GROUPS[labels.CANAL_ID, _CANAL] = 1.0

ORIENTATIONS: tuple[str, ...] = ("as_is", "flip_lr", "flip_ud", "rot180")
CANAL_SIDES: tuple[str, ...] = ("posterior", "anterior", "unknown")


@dataclasses.dataclass(frozen=True)
class LevelConfig:
    """Thresholds (mm, mm^2) and penalties (natural-log units) of ``assign_levels``.

    Attributes:
        min_area_mm2: components smaller than this are specks and are dropped.
        max_offline_mm: disc/vertebra components whose centroid lies farther than this from
            the centre line are off the spine and are dropped.
        min_radius_mm: smallest radius of curvature accepted for the centre line.
        default_step_mm: distance between neighbouring disc and body centroids used when the
            slice has no disc-body neighbours to measure it from.
        merge_min_fraction, merge_min_separation_mm: a component is split into its two most
            frequent pixel levels when these are adjacent levels, each covers at least this
            fraction of it, and their centroids are at least this far apart.
        merged_extent_steps: an unsplit disc longer than this many steps along the centre line
            is flagged as possibly merged discs.
        fragment_max_offset_steps: a component left out of the chain that lies within this many
            steps (along the centre line) of a chain component of the same tissue is a fragment
            of it and takes its level.
        background_slot_penalty, drop_penalty, skip_penalty, gap_weight,
        bottom_missing_penalty, top_missing_penalty: the dynamic programme's penalties (see the
            module docstring).
        shift_margin: an alignment shifted by one level that scores within this of the best
            raises the off-by-one flag.
        n_above_levels: background vertebra + disc slot pairs above T12-L1 (T12, T11-T12, ...).
        weak_score: a chain whose ``score`` is below this is flagged as weakly supported.
        canal_max_offline_mm: canal components whose median pixel distance from the centre line
            exceeds this are dropped.
        canal_margin_mm: a level votes for a canal side only when the canal's mean column differs
            from the level's by more than this.
        orientation_margin: ``choose_orientation`` needs the best score to exceed the runner-up
            with a posterior canal by at least this.
        orientation_log_margin: ... and its chain objective (``log_score``) to be the best of the
            posterior-canal candidates scoring at least ``min_orientation_score``, by at least
            this many nats (score and objective must agree, else the slice is refused).
        min_orientation_score: ``choose_orientation`` is never confident below this score.
    """

    min_area_mm2: float = 20.0
    max_offline_mm: float = 30.0
    min_radius_mm: float = 80.0
    default_step_mm: float = 20.0
    merge_min_fraction: float = 0.25
    merge_min_separation_mm: float = 15.0
    merged_extent_steps: float = 1.6
    fragment_max_offset_steps: float = 0.5
    background_slot_penalty: float = 1.0
    drop_penalty: float = 4.0
    skip_penalty: float = 1.0
    gap_weight: float = 1.0
    bottom_missing_penalty: float = 1.0
    top_missing_penalty: float = 0.3
    shift_margin: float = 2.0
    n_above_levels: int = 4
    weak_score: float = 0.5
    canal_max_offline_mm: float = 45.0
    canal_margin_mm: float = 5.0
    orientation_margin: float = 0.1
    orientation_log_margin: float = 3.0
    min_orientation_score: float = 0.3


@dataclasses.dataclass
class LevelResult:
    """Output of ``assign_levels`` for one slice.

    Attributes:
        label_map: int32 [H, W] class ids of ``labels``: chain components take their slot's
            class, kept canal components ``labels.CANAL_ID``, everything else 0.
        chain: one dict per labelled component, bottom to top: ``tissue`` ("vertebra" |
            "disc"), ``name`` (class name), ``class_id``, ``area_mm2``, ``centroid_rc``
            ((row, col) pixels), ``position_mm`` (arc length along the centre line above the
            lowest on-spine component), ``level_prob`` (the network's renormalised probability
            of that level, 0-1), ``note`` ("", "fragment": a piece of the structure next to it,
            or "split": a part of a split merged component).
        dropped: one dict per component set to background: ``tissue``, ``area_mm2``,
            ``centroid_rc``, ``reason``.
        flags: human-readable warnings (missing levels, merged discs, transitional vertebra,
            off-by-one ambiguity, weak level evidence, empty input).
        score: geometric mean of ``level_prob`` over ``chain`` (fragments excluded), 0-1: ~1 for
            confident one-hot probabilities, ``1 / 6`` when the network's level part is uniform,
            0.0 for an empty chain. Comparable across orientations of one image.
        log_score: the dynamic programme's objective (natural log; higher is better).
        step_mm: the typical distance between neighbouring disc and body centroids used.
        canal_side: ``canal_side(label_map, spacing_mm)``.
    """

    label_map: np.ndarray
    chain: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    flags: list[str]
    score: float
    log_score: float
    step_mm: float
    canal_side: str


@dataclasses.dataclass(frozen=True)
class OrientationDecision:
    """Output of ``choose_orientation``.

    Attributes:
        name: the best candidate of ``ORIENTATIONS`` (a best guess when not confident; None
            when there were no candidates).
        confident: True only when the anatomy supports ``name`` unambiguously.
        reason: why, in words.
        scores: candidate name -> ``LevelResult.score``.
    """

    name: Optional[str]
    confident: bool
    reason: str
    scores: dict[str, float]


# === Slots ===
@dataclasses.dataclass(frozen=True)
class _Slot:
    name: str
    tissue: int
    class_id: int  # 0 = background slot (outside the 14-class scheme)


def _build_slots(n_above: int) -> tuple[_Slot, ...]:
    """The chain of slots bottom to top; labelled slots come from ``labels``."""
    slots = [_Slot("S2", _VERT, 0), _Slot("S1-S2", _DISC, 0), _Slot("S1", _VERT, 0)]
    for disc in reversed(labels.DISC_NAMES):
        slots.append(_Slot(disc, _DISC, labels.SEG_ID[disc]))
        above, _ = labels.disc_neighbours(disc)
        if above is not None:
            slots.append(_Slot(above, _VERT, labels.SEG_ID[above]))
    for k in range(n_above):
        slots.append(_Slot(f"T{12 - k}", _VERT, 0))
        slots.append(_Slot(f"T{11 - k}-T{12 - k}", _DISC, 0))
    return tuple(slots)


# === Public API ===
def tissue_map(probs: np.ndarray) -> np.ndarray:
    """Most probable tissue per pixel (the class probabilities summed per tissue).

    Args:
        probs: float [H, W, NUM_SEG_CLASSES] class probabilities.

    Returns:
        uint8 [H, W]: index into ``TISSUES`` (0 background, 1 vertebra, 2 disc, 3 canal).
    """
    h, w = probs.shape[:2]
    grouped = np.empty((h * w, len(TISSUES)), np.float32)
    rows = max(1, _CHUNK_PIXELS // max(w, 1))
    for r in range(0, h, rows):
        chunk = probs[r:r + rows].reshape(-1, labels.NUM_SEG_CLASSES)
        np.matmul(chunk.astype(np.float32, copy=False), _GROUPS,
                  out=grouped[r * w:(r + rows) * w])
    # argmax over the 4 columns, first maximum wins (as np.argmax, which is slower on a
    # short last axis).
    best = grouped[:, 0].copy()
    out = np.zeros(h * w, np.uint8)
    for t in range(1, len(TISSUES)):
        column = grouped[:, t]
        out[column > best] = t
        np.maximum(best, column, out=best)
    return out.reshape(h, w)


def assign_levels(probs: np.ndarray, spacing_mm: Sequence[float],
                  config: LevelConfig = LevelConfig()) -> LevelResult:
    """Labels each disc and vertebral body of one slice with its anatomical level.

    Args:
        probs: float [H, W, NUM_SEG_CLASSES] per-pixel class probabilities, display
            orientation (row 0 superior, column 0 anterior).
        spacing_mm: (row_mm, col_mm) pixel spacing.
        config: thresholds and penalties.

    Returns:
        ``LevelResult``; an input without discs or bodies gives an all-zero label map and a
        flag, never an exception.

    Raises:
        ValueError: ``probs`` is not [H, W, NUM_SEG_CLASSES] or the spacing is not two
            positive finite numbers.
    """
    spacing = _check_inputs(probs, spacing_mm)
    comps = _find_components(tissue_map(probs), probs, spacing, config)
    dropped: list[dict[str, Any]] = []
    is_speck = comps.area_mm2 < config.min_area_mm2
    for i in np.flatnonzero(is_speck):
        dropped.append(_dropped_row(comps, i, f"speck (< {config.min_area_mm2:g} mm^2)"))
    spine = ~is_speck & (comps.tissue != _CANAL)
    if not spine.any():
        return _result_without_chain(comps, ~is_speck, dropped, config)
    centre = _CentreLine.fit(comps.centroid_mm[spine], comps.area_mm2[spine], config,
                             comps.shape[0] * spacing[0])
    offline_mm = centre.distance(comps.centroid_mm)
    for i in np.flatnonzero(spine & (offline_mm > config.max_offline_mm)):
        dropped.append(_dropped_row(comps, i, f"off the spine ({offline_mm[i]:.0f} mm from "
                                              "the centre line)"))
    on_chain = np.flatnonzero(spine & (offline_mm <= config.max_offline_mm))
    if on_chain.size == 0:
        return _result_without_chain(comps, ~is_speck & (comps.tissue == _CANAL), dropped,
                                     config)
    position_mm = centre.position(comps.centroid_mm)
    order = on_chain[np.argsort(position_mm[on_chain], kind="stable")]
    chain = _label_chain(comps, order, position_mm[order], config)
    dropped.extend(chain.dropped)
    canal_keep = _keep_canal(comps, ~is_speck, centre, position_mm[order], chain.step_mm,
                             config, dropped)
    label_map = _paint(comps, chain.class_of, canal_keep)
    flags = comps.flags + chain.flags + _disc_extent_flags(comps, chain, centre, config)
    return LevelResult(label_map=label_map, chain=chain.rows, dropped=dropped, flags=flags,
                       score=chain.score, log_score=chain.log_score, step_mm=chain.step_mm,
                       canal_side=canal_side(label_map, spacing, config))


# Flags after which the level names of a slice cannot be trusted (prefix or fragment match).
_LEVEL_DOUBT_MARKERS: tuple[str, ...] = ("possible transitional vertebra", "lowest labelled structure",
                                         "weak level evidence", "extra disc below",
                                         "vertebral body below", " missing between ",
                                         "orientation disagrees")


def level_doubts(result: LevelResult) -> list[str]:
    """The flags of ``result`` that make its level names uncertain (off-by-one, no L5-S1 at the
    bottom, a gap in the chain, weak evidence, structures below L5-S1); [] when none. A caller
    that names levels in a decision should abstain when this is not empty."""
    return [f for f in result.flags if any(m in f for m in _LEVEL_DOUBT_MARKERS)]


def canal_side(label_map: np.ndarray, spacing_mm: Sequence[float],
               config: LevelConfig = LevelConfig()) -> str:
    """On which side of the bodies and discs the spinal canal lies.

    Each disc/vertebra class present votes: the mean over its pixels of (mean canal column in
    the pixel's row - the pixel's column), in mm, over rows that contain canal; more than
    ``config.canal_margin_mm`` is a posterior vote, less than minus it an anterior vote.

    Args:
        label_map: int [H, W] class ids of ``labels`` (not a tissue map).
        spacing_mm: (row_mm, col_mm).
        config: ``canal_margin_mm`` is used.

    Returns:
        One of ``CANAL_SIDES``: "posterior" (canal to the right: display orientation),
        "anterior" (canal to the left: the slice is mirrored left-right) or "unknown" (no
        canal, no bodies or discs in the canal's rows, or a tied vote).
    """
    lm = np.asarray(label_map)
    flat_lm = lm.ravel()
    fg = np.flatnonzero(flat_lm)
    values = flat_lm[fg]
    w = lm.shape[1]
    is_canal = values == labels.CANAL_ID
    canal_rows = fg[is_canal] // w
    if canal_rows.size == 0:
        return "unknown"
    n_canal = np.bincount(canal_rows, minlength=lm.shape[0])
    canal_col = (np.bincount(canal_rows, fg[is_canal] % w, minlength=lm.shape[0])
                 / np.maximum(n_canal, 1))
    level = fg[~is_canal]  # every other foreground id is a vertebra or a disc
    level = level[n_canal[level // w] > 0]
    if level.size == 0:
        return "unknown"
    ids = flat_lm[level]
    offset_mm = (canal_col[level // w] - level % w) * float(spacing_mm[1])
    n = np.bincount(ids, minlength=labels.NUM_SEG_CLASSES)
    mean_mm = np.bincount(ids, offset_mm, minlength=labels.NUM_SEG_CLASSES)[n > 0] / n[n > 0]
    posterior = int(np.sum(mean_mm > config.canal_margin_mm))
    anterior = int(np.sum(mean_mm < -config.canal_margin_mm))
    if posterior > anterior:
        return "posterior"
    if anterior > posterior:
        return "anterior"
    return "unknown"


def orient(array: np.ndarray, name: str) -> np.ndarray:
    """Applies orientation ``name`` to the first two axes (rows, columns) of ``array``.

    ``flip_lr`` mirrors columns, ``flip_ud`` mirrors rows, ``rot180`` both; each is its own
    inverse. Returns a view.

    Raises:
        ValueError: ``name`` not in ``ORIENTATIONS``.
    """
    if name == "as_is":
        return array
    if name == "flip_lr":
        return array[:, ::-1]
    if name == "flip_ud":
        return array[::-1]
    if name == "rot180":
        return array[::-1, ::-1]
    raise ValueError(f"unknown orientation {name!r}; expected one of {ORIENTATIONS}")


def choose_orientation(candidates: Mapping[str, LevelResult],
                       config: LevelConfig = LevelConfig()) -> OrientationDecision:
    """Picks the orientation whose anatomy reads correctly.

    Each candidate's result must come from the network's probabilities on
    ``orient(image, name)``, so it is in that candidate's frame. The choice is the candidate
    with a posterior canal and the best ``score``; it is confident only when that score is at
    least ``config.min_orientation_score``, beats every other posterior-canal candidate by
    ``config.orientation_margin``, and its ``log_score`` (the whole chain's objective) beats
    those of the other posterior-canal candidates with a usable score by
    ``config.orientation_log_margin``. Refusing is the safe outcome: a wrong choice reverses
    every level.

    Args:
        candidates: orientation name -> ``LevelResult``.
        config: ``orientation_margin`` and ``min_orientation_score`` are used.

    Returns:
        ``OrientationDecision``; ``name`` is the best guess even when not confident.
    """
    scores = {n: float(r.score) for n, r in candidates.items()}
    if not scores:
        return OrientationDecision(None, False, "no candidate orientations given", scores)
    sides = ", ".join(f"{n}={r.canal_side}" for n, r in candidates.items())
    posterior = sorted((n for n, r in candidates.items() if r.canal_side == "posterior"),
                       key=lambda n: -scores[n])
    if not posterior:
        guess = max(scores, key=lambda n: scores[n])
        return OrientationDecision(guess, False, "no candidate has the canal posterior to the "
                                   f"vertebral bodies (canal sides: {sides})", scores)
    best = posterior[0]
    if scores[best] < config.min_orientation_score:
        return OrientationDecision(best, False, f"best posterior-canal candidate {best} has a "
                                   f"level score {scores[best]:.2f} < "
                                   f"{config.min_orientation_score:g}", scores)
    if len(posterior) > 1:
        second = posterior[1]
        margin = scores[best] - scores[second]
        if margin < config.orientation_margin:
            return OrientationDecision(best, False, f"{best} and {second} both have a posterior "
                                       f"canal and level scores {scores[best]:.2f} vs "
                                       f"{scores[second]:.2f} (margin < "
                                       f"{config.orientation_margin:g})", scores)
        why = f"next posterior-canal candidate {second} scores {scores[second]:.2f}"
        # the whole chain's objective (with its gap and missing-level penalties) must agree
        rivals = [n for n in posterior[1:] if scores[n] >= config.min_orientation_score]
        logs = {n: float(candidates[n].log_score) for n in [best] + rivals}
        top = max(logs, key=lambda n: logs[n])
        if top != best or any(logs[best] - logs[n] < config.orientation_log_margin
                              for n in rivals):
            return OrientationDecision(best, False, f"{best} has the best level score but the "
                                       f"chain objectives disagree or are close (log scores "
                                       + ", ".join(f"{n} {v:.1f}" for n, v in logs.items())
                                       + f"; margin needed {config.orientation_log_margin:g})",
                                       scores)
    else:
        why = f"the only candidate with a posterior canal (canal sides: {sides})"
    return OrientationDecision(best, True, f"{best}: canal posterior, level score "
                               f"{scores[best]:.2f}; {why}", scores)


# === Components ===
@dataclasses.dataclass
class _Components:
    """Connected components of all tissues of one slice.

    ``tissue``, ``local_id``: int [n]; component k is the pixels of ``pixels[tissue[k]]``
    whose id is ``local_id[k]``. ``pixels``: tissue -> (row int [m], col int [m], id int [m]).
    ``area_mm2``: float [n]; ``centroid_rc``: float [n, 2] pixels; ``level_probs``: float
    [n, 6] renormalised mean probabilities over the tissue's classes (``_LEVEL_IDS`` order;
    uniform for the canal); ``split``: bool [n], a part of a split merged component.
    """

    shape: tuple[int, int]
    spacing: tuple[float, float]
    pixels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    tissue: np.ndarray
    local_id: np.ndarray
    area_mm2: np.ndarray
    centroid_rc: np.ndarray
    level_probs: np.ndarray
    split: np.ndarray
    flags: list[str]

    @property
    def centroid_mm(self) -> np.ndarray:
        return self.centroid_rc * np.asarray(self.spacing)

    def pixels_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) int [m] of component i."""
        r, c, lab = self.pixels[int(self.tissue[i])]
        sel = lab == self.local_id[i]
        return r[sel], c[sel]


def _check_inputs(probs: np.ndarray, spacing_mm: Sequence[float]) -> tuple[float, float]:
    shape = getattr(probs, "shape", None)
    if shape is None or len(shape) != 3 or shape[2] != labels.NUM_SEG_CLASSES:
        raise ValueError(f"probs must be [H, W, {labels.NUM_SEG_CLASSES}], got shape {shape}")
    try:
        row_mm, col_mm = (float(s) for s in spacing_mm)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spacing_mm must be (row_mm, col_mm), got {spacing_mm!r}") from err
    if not (math.isfinite(row_mm) and math.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
        raise ValueError(f"spacing_mm must be two positive numbers, got {spacing_mm!r}")
    return row_mm, col_mm


def _foreground_box(tissue: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), end exclusive, of the non-background pixels' bounding box."""
    rows = np.flatnonzero(tissue.any(axis=1))
    cols = np.flatnonzero(tissue.any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _find_components(tissue: np.ndarray, probs: np.ndarray, spacing: tuple[float, float],
                     config: LevelConfig) -> _Components:
    """Labels, measures and (for discs and bodies) splits the components of every tissue.

    Labelling runs on the bounding box of the foreground; every coordinate returned is in
    the full image.
    """
    r0, r1, c0, c1 = _foreground_box(tissue)
    sub = tissue[r0:r1, c0:c1]
    w = max(sub.shape[1], 1)
    pixels, parts, flags = {}, [], []
    for t in (_VERT, _DISC, _CANAL):
        cc, n = ndimage.label(sub == t, structure=_EIGHT)
        flat = np.flatnonzero(cc)
        lab = cc.ravel()[flat]
        r, c = flat // w + r0, flat % w + c0
        p = None
        split_ids: list[int] = []
        if t in _LEVEL_IDS:
            p = probs[r[:, None], c[:, None], np.asarray(_LEVEL_IDS[t])[None, :]]
            if n:
                lab, n, split_ids = _split_merged(lab, n, r, c, p, t, spacing, config, flags)
        pixels[t] = (r, c, lab)
        part = _measure(t, n, r, c, lab, p, spacing)
        parts.append(part + (np.isin(part[1], split_ids),))
    stacked = [np.concatenate([part[k] for part in parts]) for k in range(6)]
    return _Components(tissue.shape, spacing, pixels, *stacked, flags)


def _measure(t: int, n: int, r: np.ndarray, c: np.ndarray, lab: np.ndarray,
             p: Optional[np.ndarray], spacing: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Per-component arrays (tissue, local id, area mm^2, centroid rc, level probs).

    ``p``: float [m, 6] the pixels' probabilities of the tissue's classes (None for canal).
    """
    count = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    present = count > 0
    ids = np.arange(1, n + 1)[present]
    count = count[present]
    centroid = np.stack([np.bincount(lab, r, minlength=n + 1)[1:][present] / count,
                         np.bincount(lab, c, minlength=n + 1)[1:][present] / count], axis=1)
    k = len(labels.VERTEBRA_IDS)
    level = np.full((ids.size, k), 1.0 / k)
    if p is not None and ids.size:
        sums = np.stack([np.bincount(lab, p[:, j], minlength=n + 1)[1:][present]
                         for j in range(p.shape[1])], axis=1)
        sums = np.maximum(sums / np.maximum(sums.sum(1, keepdims=True), 1e-12), _PROB_FLOOR)
        level = sums / sums.sum(1, keepdims=True)
    area = count * spacing[0] * spacing[1]
    return np.full(ids.size, t), ids, area, centroid.reshape(-1, 2), level


def _split_merged(lab: np.ndarray, n: int, r: np.ndarray, c: np.ndarray, p: np.ndarray,
                  t: int, spacing: tuple[float, float], config: LevelConfig,
                  flags: list[str]) -> tuple[np.ndarray, int, list[int]]:
    """Splits components covering two adjacent levels.

    A component of at least twice ``min_area_mm2`` is split when its two most frequent
    per-pixel level argmaxes are adjacent levels, each covering at least ``merge_min_fraction``
    of it, and the centroids of the two parts lie at least ``merge_min_separation_mm`` apart;
    each pixel goes to whichever of the two levels it finds more probable.

    Args:
        lab: int [m] component id per pixel; r, c: int [m] pixel rows and columns;
        p: float [m, 6] the pixels' probabilities of the tissue's classes.

    Returns:
        (new ids int [m], new component count, ids of both parts of every split component).
    """
    k = p.shape[1]
    hist = np.bincount(lab * k + p.argmax(1), minlength=(n + 1) * k).reshape(n + 1, k)[1:]
    frac = hist / np.maximum(hist.sum(1, keepdims=True), 1)
    top2 = np.argsort(-frac, axis=1, kind="stable")[:, :2]
    both = np.take_along_axis(frac, top2, 1).min(1) >= config.merge_min_fraction
    adjacent = np.abs(top2[:, 0] - top2[:, 1]) == 1
    large = hist.sum(1) * spacing[0] * spacing[1] >= 2 * config.min_area_mm2
    lab = lab.copy()
    n_new, split_ids = n, []
    for comp in np.flatnonzero(both & adjacent & large) + 1:
        a, b = sorted(top2[comp - 1])
        sel = np.flatnonzero(lab == comp)
        to_b = p[sel, b] > p[sel, a]
        yx = np.stack([r[sel] * spacing[0], c[sel] * spacing[1]], axis=1)
        gap = yx[to_b].mean(0) - yx[~to_b].mean(0)
        if np.hypot(*gap) < config.merge_min_separation_mm:
            continue
        n_new += 1
        lab[sel[to_b]] = n_new
        split_ids += [int(comp), n_new]
        ids = _LEVEL_IDS[t]
        flags.append(f"merged {TISSUES[t]}s {labels.SEG_NAMES[ids[a]]} + "
                     f"{labels.SEG_NAMES[ids[b]]} split by the network's level probabilities "
                     f"(near row {np.mean(r[sel]):.0f})")
    return lab, n_new, split_ids


def _dropped_row(comps: _Components, i: int, reason: str) -> dict[str, Any]:
    return {"tissue": TISSUES[comps.tissue[i]], "area_mm2": float(comps.area_mm2[i]),
            "centroid_rc": tuple(float(v) for v in comps.centroid_rc[i]), "reason": reason}


def _result_without_chain(comps: _Components, kept: np.ndarray, dropped: list[dict[str, Any]],
                          config: LevelConfig) -> LevelResult:
    """All-zero result for a slice without any disc or vertebra component."""
    for i in np.flatnonzero(kept):
        dropped.append(_dropped_row(comps, i, "no disc or vertebral body to follow"))
    flag = "empty: no disc or vertebral body found on the spine"
    if not kept.any():
        flag = "empty: the network found nothing but background"
    return LevelResult(np.zeros(comps.shape, np.int32), [], dropped, comps.flags + [flag], 0.0,
                       0.0, config.default_step_mm, "unknown")


# === Centre line ===
class _CentreLine:
    """The spine's centre line ``x = a y^2 + b y + c`` (mm), image y pointing down."""

    def __init__(self, coef: np.ndarray, y_max_mm: float):
        self.coef = np.asarray(coef, np.float64)
        self._y = np.linspace(-0.5 * y_max_mm, 1.5 * y_max_mm, 1024)
        slope = np.polyval(np.polyder(self.coef), self._y)
        ds = np.sqrt(1.0 + slope ** 2) * (self._y[1] - self._y[0])
        self._arc = np.concatenate([[0.0], np.cumsum(0.5 * (ds[1:] + ds[:-1]))])

    @classmethod
    def fit(cls, yx_mm: np.ndarray, area_mm2: np.ndarray, config: LevelConfig,
            y_max_mm: float) -> "_CentreLine":
        """Robust fit through centroids ``float [n, 2]`` (y, x) mm weighted by area."""
        y, x = yx_mm[:, 0], yx_mm[:, 1]
        hyps = _line_hypotheses(y, x, area_mm2, config)
        dist = _distance(hyps, y, x)
        inlier = dist <= config.max_offline_mm
        support = (inlier * area_mm2).sum(1)
        residual = (np.where(inlier, dist, 0.0) * area_mm2).sum(1)
        coef = hyps[np.lexsort((residual, -support))[0]]
        for _ in range(2):
            inlier = _distance(coef[None], y, x)[0] <= config.max_offline_mm
            coef = _refit(y[inlier], x[inlier], area_mm2[inlier], coef, config)
        return cls(coef, y_max_mm)

    def _slope(self, y: np.ndarray) -> np.ndarray:
        return np.polyval(np.polyder(self.coef), y)

    def distance(self, yx_mm: np.ndarray) -> np.ndarray:
        """Approximate perpendicular distance (mm) of points ``float [n, 2]`` (y, x) mm."""
        return _distance(self.coef[None], yx_mm[:, 0], yx_mm[:, 1])[0]

    def position(self, yx_mm: np.ndarray) -> np.ndarray:
        """Arc length (mm) of the points' feet on the line, increasing superiorly."""
        y, x = yx_mm[:, 0], yx_mm[:, 1]
        slope = self._slope(y)
        foot = y + slope * (x - np.polyval(self.coef, y)) / (1.0 + slope ** 2)
        return -np.interp(foot, self._y, self._arc)

    def tangent(self, y: np.ndarray) -> np.ndarray:
        """Unit tangents ``float [n, 2]`` (dy, dx) pointing inferiorly at rows ``y`` mm."""
        slope = self._slope(y)
        norm = np.sqrt(1.0 + slope ** 2)
        return np.stack([1.0 / norm, slope / norm], axis=1)


def _distance(coef: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """float [h, n] distance of n points from h parabolas ``coef: [h, 3]``."""
    a, b, c = coef[:, :1], coef[:, 1:2], coef[:, 2:]
    fit = (a * y + b) * y + c
    slope = 2 * a * y + b
    return np.abs(x - fit) / np.sqrt(1.0 + slope ** 2)


def _line_hypotheses(y: np.ndarray, x: np.ndarray, w: np.ndarray,
                     config: LevelConfig, max_points: int = 25) -> np.ndarray:
    """Candidate centre lines ``float [h, 3]``: vertical, lines and parabolas through points."""
    top = np.argsort(-w, kind="stable")[:max_points]
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    median_x = x[order][np.searchsorted(cum, 0.5 * cum[-1])]
    hyps = [np.array([[0.0, 0.0, median_x]])]
    if top.size >= 2:
        i, j = np.array(list(itertools.combinations(top, 2))).T
        dy = y[j] - y[i]
        ok = np.abs(dy) > 1.0
        b = (x[j] - x[i])[ok] / dy[ok]
        hyps.append(np.stack([np.zeros_like(b), b, x[i][ok] - b * y[i][ok]], axis=1))
    if top.size >= 3:
        hyps.append(_parabolas(y, x, top, config))
    return np.concatenate(hyps, axis=0)


def _parabolas(y: np.ndarray, x: np.ndarray, top: np.ndarray,
               config: LevelConfig) -> np.ndarray:
    """Parabolas ``float [h, 3]`` through every triple of ``top`` within the curvature limit."""
    i, j, k = np.array(list(itertools.combinations(top, 3))).T
    y1, y2, y3, x1, x2, x3 = y[i], y[j], y[k], x[i], x[j], x[k]
    ok = (np.abs(y1 - y2) > 2.0) & (np.abs(y2 - y3) > 2.0) & (np.abs(y1 - y3) > 2.0)
    y1, y2, y3, x1, x2, x3 = (v[ok] for v in (y1, y2, y3, x1, x2, x3))
    d12 = (x2 - x1) / (y2 - y1)
    d23 = (x3 - x2) / (y3 - y2)
    a = (d23 - d12) / (y3 - y1)
    b = d12 - a * (y1 + y2)
    c = x1 - (a * y1 + b) * y1
    keep = np.abs(2 * a) <= 1.0 / config.min_radius_mm
    return np.stack([a, b, c], axis=1)[keep]


def _refit(y: np.ndarray, x: np.ndarray, w: np.ndarray, coef: np.ndarray,
           config: LevelConfig) -> np.ndarray:
    """Weighted least-squares parabola (or line, or constant) through inliers."""
    if y.size == 0:
        return coef
    sw = np.sqrt(w)
    if y.size >= 3 and np.ptp(y) > 10.0:
        quad = np.polyfit(y, x, 2, w=sw)
        if abs(2 * quad[0]) <= 1.0 / config.min_radius_mm:
            return quad
    if y.size >= 2 and np.ptp(y) > 5.0:
        return np.concatenate([[0.0], np.polyfit(y, x, 1, w=sw)])
    return np.array([0.0, 0.0, float(np.average(x, weights=w))])


# === Dynamic programme ===
_SLOTS_CACHE: dict[int, tuple[_Slot, ...]] = {}


def _slots(config: LevelConfig) -> tuple[_Slot, ...]:
    if config.n_above_levels not in _SLOTS_CACHE:
        _SLOTS_CACHE[config.n_above_levels] = _build_slots(config.n_above_levels)
    return _SLOTS_CACHE[config.n_above_levels]


def _emissions(level_probs: np.ndarray, tissue: np.ndarray,
               slots: Sequence[_Slot], config: LevelConfig) -> np.ndarray:
    """float [n, M] log-score of component i in slot j (-inf where the tissue differs)."""
    e = np.full((tissue.size, len(slots)), -np.inf)
    for j, s in enumerate(slots):
        rows = tissue == s.tissue
        if s.class_id:
            e[rows, j] = np.log(level_probs[rows, _LEVEL_IDS[s.tissue].index(s.class_id)])
        else:
            k = len(_LEVEL_IDS[s.tissue])
            e[rows, j] = -math.log(k) - config.background_slot_penalty
    return e


@dataclasses.dataclass
class _Alignment:
    log_score: float
    slot: np.ndarray  # int [n] slot index per ordered component, -1 = dropped


def _align(emission: np.ndarray, position_mm: np.ndarray, step_mm: float,
           labelled: np.ndarray, config: LevelConfig,
           forced: Optional[tuple[int, int]] = None) -> _Alignment:
    """Best monotone alignment of ordered components to slots (see the module docstring).

    Args:
        emission: float [n, M] from ``_emissions``.
        position_mm: float [n] arc length of the components, ascending.
        step_mm: typical neighbour distance.
        labelled: bool [M] slots with a class id.
        forced: (component, slot): that component must take that slot (not be dropped).

    ``V[i, j]`` is the best score of the components 0..i with component i in slot j and
    components after it not yet scored; a transition from (i', j') to (i, j) drops the
    components between i' and i. O(n^2 M^2) numpy work, M ~ 20 slots.
    """
    n, m = emission.shape
    e = emission.copy()
    if forced is not None:
        fi, fj = forced
        e[fi, :fj] = -np.inf
        e[fi, fj + 1:] = -np.inf
    start, end, jump, fixed = _slot_costs(labelled, config)
    value = np.full((n, m), -np.inf)
    back = np.full((n, m), -1, dtype=np.int64)
    for i in range(n):
        must_start_before = forced is not None and i > forced[0]
        best = np.full(m, -np.inf) if must_start_before else start - config.drop_penalty * i
        arg = np.full(m, -1, dtype=np.int64)
        lo = forced[0] if must_start_before else 0
        if i > lo:
            d = (position_mm[i] - position_mm[lo:i]) / step_mm
            drops = config.drop_penalty * (i - 1 - np.arange(lo, i))
            cand = (value[lo:i, :, None] - drops[:, None, None] + fixed[None]
                    - config.gap_weight * (d[:, None, None] - jump[None]) ** 2)
            flat = cand.reshape(-1, m)
            a = flat.argmax(0)
            v = flat[a, np.arange(m)]
            take = v > best
            best = np.where(take, v, best)
            arg = np.where(take, a + lo * m, -1)
        value[i] = e[i] + best
        back[i] = arg
    total = value + end[None] - config.drop_penalty * (n - 1 - np.arange(n))[:, None]
    if forced is not None:
        total[:forced[0]] = -np.inf
    return _backtrack(total, back, forced is None, config)


def _slot_costs(labelled: np.ndarray,
                config: LevelConfig) -> tuple[np.ndarray, ...]:
    """The programme's slot-only terms for ``labelled: bool [M]``.

    Returns (start [M]: bottom-missing cost of starting in slot j, end [M]: top-missing cost of
    ending in slot j, jump [M, M]: j - j', fixed [M, M]: skip cost of j' -> j, -inf unless
    j > j').
    """
    m = labelled.size
    cum = np.concatenate([[0], np.cumsum(labelled)])  # cum[j]: labelled slots below j
    start = -config.bottom_missing_penalty * cum[:-1]
    end = -config.top_missing_penalty * (cum[-1] - cum[1:])
    jump = np.arange(m)[None, :] - np.arange(m)[:, None]
    between = cum[None, :-1] - cum[1:, None]
    fixed = np.where(jump > 0, -config.skip_penalty * between, -np.inf)
    return start, end, jump, fixed


def _backtrack(total: np.ndarray, back: np.ndarray, may_drop_all: bool,
               config: LevelConfig) -> _Alignment:
    """Best end state of ``total: [n, M]`` followed back through ``back`` to its start."""
    n, m = total.shape
    flat_best = int(np.argmax(total))
    slot = np.full(n, -1, dtype=np.int64)
    score = float(total.flat[flat_best])
    if may_drop_all and -config.drop_penalty * n >= score:
        return _Alignment(-config.drop_penalty * n, slot)
    while flat_best >= 0 and np.isfinite(score):
        i, j = divmod(flat_best, m)
        slot[i] = j
        flat_best = int(back[i, j])
    return _Alignment(score, slot)


def _typical_step(position_mm: np.ndarray, tissue: np.ndarray, config: LevelConfig) -> float:
    """Median distance (mm) between ordered neighbours of different tissue (disc-body)."""
    if position_mm.size >= 2:
        gaps = np.diff(position_mm)
        mixed = tissue[1:] != tissue[:-1]
        if mixed.any():
            return max(float(np.median(gaps[mixed])), 1.0)
        return max(float(np.median(gaps)) / 2.0, 1.0)
    return config.default_step_mm


def _shift_margin(emission: np.ndarray, position_mm: np.ndarray, step_mm: float,
                  labelled: np.ndarray, best: _Alignment,
                  config: LevelConfig) -> Optional[tuple[float, str]]:
    """(score deficit, "up"|"down") of the best labelling shifted by one level, or None.

    The lowest component in a labelled slot is forced two slots (one level) up or down.
    """
    placed = np.flatnonzero((best.slot >= 0) & labelled[np.maximum(best.slot, 0)])
    if placed.size == 0:
        return None
    ref = int(placed[0])
    options = []
    for delta, word in ((2, "up"), (-2, "down")):
        j = int(best.slot[ref]) + delta
        if 0 <= j < emission.shape[1] and np.isfinite(emission[ref, j]):
            alt = _align(emission, position_mm, step_mm, labelled, config, forced=(ref, j))
            options.append((best.log_score - alt.log_score, word))
    return min(options) if options else None


# === Chain labelling ===
@dataclasses.dataclass
class _Chain:
    class_of: dict[tuple[int, int], int]  # (tissue, local id) -> class id
    rows: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    flags: list[str]
    score: float
    log_score: float
    step_mm: float


def _label_chain(comps: _Components, order: np.ndarray, position_mm: np.ndarray,
                 config: LevelConfig) -> _Chain:
    """Runs the dynamic programme on the ordered on-spine components and reports it."""
    slots = _slots(config)
    labelled = np.array([s.class_id != 0 for s in slots])
    tissue = comps.tissue[order]
    step = _typical_step(position_mm, tissue, config)
    emission = _emissions(comps.level_probs[order], tissue, slots, config)
    best = _align(emission, position_mm, step, labelled, config)
    slot, note = _attach_fragments(best.slot, tissue, position_mm, step, labelled, config)
    chain = _Chain({}, [], [], [], 0.0, best.log_score, step)
    logs = []
    for k, i in enumerate(order):
        j = int(slot[k])
        if j < 0:
            chain.dropped.append(_dropped_row(comps, i, "does not fit the level chain"))
        elif not labelled[j]:
            chain.dropped.append(_dropped_row(comps, i, f"{slots[j].name} (outside the "
                                                        "labelled levels): background"))
        else:
            cls = slots[j].class_id
            p = float(comps.level_probs[i, _LEVEL_IDS[slots[j].tissue].index(cls)])
            chain.class_of[(int(comps.tissue[i]), int(comps.local_id[i]))] = cls
            chain.rows.append(_chain_row(comps, i, cls, position_mm[k] - position_mm[0], p,
                                         note[k] or ("split" if comps.split[i] else "")))
            if not note[k]:
                logs.append(math.log(p))
    chain.score = float(math.exp(np.mean(logs))) if logs else 0.0
    chain.flags = _chain_flags(best.slot, tissue, slots, labelled, chain.score, config)
    shift = _shift_margin(emission, position_mm, step, labelled, best, config)
    if shift is not None and shift[0] < config.shift_margin:
        chain.flags.append(f"possible transitional vertebra / off-by-one: the labelling shifted "
                           f"one level {shift[1]} scores only {shift[0]:.2f} below the chosen one")
    return chain


def _chain_row(comps: _Components, i: int, cls: int, position_mm: float, p: float,
               note: str) -> dict[str, Any]:
    return {"tissue": TISSUES[comps.tissue[i]], "name": labels.SEG_NAMES[cls], "class_id": cls,
            "area_mm2": float(comps.area_mm2[i]),
            "centroid_rc": tuple(float(v) for v in comps.centroid_rc[i]),
            "position_mm": float(position_mm), "level_prob": p, "note": note}


def _attach_fragments(slot: np.ndarray, tissue: np.ndarray, position_mm: np.ndarray,
                      step_mm: float, labelled: np.ndarray,
                      config: LevelConfig) -> tuple[np.ndarray, list[str]]:
    """Gives a dropped component the labelled slot of a same-tissue neighbour close along
    the centre line (a fragment of it). Returns (slot [n], note per component)."""
    slot = slot.copy()
    note = [""] * slot.size
    placed = np.flatnonzero((slot >= 0) & labelled[np.maximum(slot, 0)])
    for k in np.flatnonzero(slot < 0):
        same = placed[tissue[placed] == tissue[k]]
        if same.size == 0:
            continue
        near = same[np.argmin(np.abs(position_mm[same] - position_mm[k]))]
        if abs(position_mm[near] - position_mm[k]) <= config.fragment_max_offset_steps * step_mm:
            slot[k] = slot[near]
            note[k] = "fragment"
    return slot, note


def _chain_flags(slot: np.ndarray, tissue: np.ndarray, slots: Sequence[_Slot],
                 labelled: np.ndarray, score: float, config: LevelConfig) -> list[str]:
    """Missing levels, transitional anatomy and weak evidence, in words."""
    flags = []
    if not np.any(tissue == _DISC):
        flags.append("no disc found")
    used = [int(j) for j in slot if j >= 0]
    for j0, j1 in zip(used[:-1], used[1:]):
        for j in range(j0 + 1, j1):
            if labelled[j]:
                flags.append(f"{slots[j].name} missing between {slots[j0].name} and "
                             f"{slots[j1].name}")
    lab_used = [j for j in used if labelled[j]]
    lowest_lab = int(np.flatnonzero(labelled)[0])
    if lab_used and lab_used[0] != lowest_lab:
        flags.append(f"lowest labelled structure is {slots[lab_used[0]].name}: no "
                     f"{slots[lowest_lab].name} found below it")
    below = [slots[j] for j in used if j < lowest_lab]
    if any(s.tissue == _DISC for s in below):
        flags.append(f"extra disc below {slots[lowest_lab].name} set to background "
                     f"(possible transitional vertebra, lumbarised S1)")
    bodies = [s.name for s in below if s.tissue == _VERT]
    if bodies:
        flags.append(f"vertebral body below {slots[lowest_lab].name} ({', '.join(bodies)}) set "
                     "to background: six lumbar-type bodies, possible transitional vertebra")
    if lab_used and score < config.weak_score:
        flags.append(f"weak level evidence (score {score:.2f}): levels counted from the bottom")
    return flags


def _disc_extent_flags(comps: _Components, chain: _Chain, centre: _CentreLine,
                       config: LevelConfig) -> list[str]:
    """Flags chain discs longer along the centre line than ``merged_extent_steps`` steps."""
    flags = []
    sr, sc = comps.spacing
    by_id = {int(comps.local_id[i]): i for i in np.flatnonzero(comps.tissue == _DISC)}
    for (t, local), cls in chain.class_of.items():
        if t != _DISC or comps.split[by_id[local]]:
            continue
        r, c = comps.pixels_of(by_id[local])
        tangent = centre.tangent(np.array([comps.centroid_mm[by_id[local], 0]]))[0]
        along = r * sr * tangent[0] + c * sc * tangent[1]
        extent = float(along.max() - along.min())
        if extent > config.merged_extent_steps * chain.step_mm:
            flags.append(f"possibly merged discs: {labels.SEG_NAMES[cls]} spans {extent:.0f} mm "
                         f"along the spine ({extent / chain.step_mm:.1f} steps)")
    return flags


# === Canal and painting ===
def _keep_canal(comps: _Components, kept: np.ndarray, centre: _CentreLine,
                chain_position_mm: np.ndarray, step_mm: float, config: LevelConfig,
                dropped: list[dict[str, Any]]) -> set[int]:
    """Local ids of canal components that run along the chain; the others go to ``dropped``."""
    sr, sc = comps.spacing
    lo, hi = chain_position_mm.min() - step_mm, chain_position_mm.max() + step_mm
    keep = set()
    for i in np.flatnonzero(kept & (comps.tissue == _CANAL)):
        r, c = comps.pixels_of(i)
        yx = np.stack([r[::7] * sr, c[::7] * sc], axis=1)  # a subsample is enough
        dist = float(np.median(centre.distance(yx)))
        pos = centre.position(yx)
        if dist > config.canal_max_offline_mm:
            dropped.append(_dropped_row(comps, i, f"canal away from the spine ({dist:.0f} mm)"))
        elif pos.max() < lo or pos.min() > hi:
            dropped.append(_dropped_row(comps, i, "canal outside the chain's extent"))
        else:
            keep.add(int(comps.local_id[i]))
    return keep


def _paint(comps: _Components, class_of: Mapping[tuple[int, int], int],
           canal_keep: set[int]) -> np.ndarray:
    """int32 [H, W] label map from per-component classes."""
    out = np.zeros(comps.shape, np.int32)
    for t, (r, c, lab) in comps.pixels.items():
        lut = np.zeros(int(lab.max(initial=0)) + 1, np.int32)
        for (tt, local), cls in class_of.items():
            if tt == t:
                lut[local] = cls
        if t == _CANAL:
            lut[list(canal_keep)] = labels.CANAL_ID
        value = lut[lab]
        keep = value > 0
        out[r[keep], c[keep]] = value[keep]
    return out
