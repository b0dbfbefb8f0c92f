"""One synthetic patient (``spoils synth``): the column's parts, the disc grades and the
clinical scores, at the midline.

:func:`sample_patient` draws everything a patient's slices share from
``np.random.default_rng([seed, index, 0])`` (the clinical noise from ``[seed, index, 1]``), so
patient i is the same whatever the cohort size. Every part is a polygon in millimetres in its
own frame (``spoils_tf.geometry.frame``: u posterior, v superior), placed top to bottom by
:func:`_place_chain`. The anatomy is described in ``spoils_tf.data.synthetic``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from spoils_tf import labels
from spoils_tf.data.polygons import convex_hull, line_intervals
from spoils_tf.geometry.frame import frame_axes, to_world

# === Constants ===
PATIENT_PREFIX: str = "S"
# Mid-sagittal vertebral body AP depth and height (mm) of T11, T12, L1..L5 (adult means,
# scaled per patient).
BODY_NAMES: tuple[str, ...] = ("T11", "T12") + labels.VERTEBRA_NAMES[:-1]
BODY_WIDTH_MM: tuple[float, ...] = (29.0, 30.0, 32.0, 33.0, 34.0, 35.0, 35.0)
BODY_HEIGHT_MM: tuple[float, ...] = (22.0, 23.5, 25.0, 26.5, 27.0, 27.0, 26.0)
# Healthy (Pfirrmann 1) mean disc height (mm) per labelled level, top -> bottom.
NOMINAL_DISC_HEIGHT_MM: dict[str, float] = dict(zip(labels.DISC_NAMES, (6.0, 7.5, 9.0, 10.0, 11.0, 10.5)))
# Lordotic wedge ratio (h_a - h_p) / (h_a + h_p) of a healthy disc per labelled level, before
# the patient's lordosis factor (0.7..1.3).
DISC_WEDGE_RATIO: dict[str, float] = dict(zip(labels.DISC_NAMES, (0.0, 0.06, 0.12, 0.2, 0.3, 0.45)))
# How much more a level degenerates than T12-L1 (latent score units).
LEVEL_DEGENERATION: dict[str, float] = dict(zip(labels.DISC_NAMES, (0.0, 0.2, 0.45, 0.8, 1.35, 1.45)))
# Latent degeneration score thresholds between Pfirrmann grades 1|2|3|4|5.
GRADE_CUTS: tuple[float, ...] = (1.9, 2.9, 3.8, 4.55)
# Disc height relative to a healthy disc by Pfirrmann grade, and by severity.
GRADE_HEIGHT_FACTOR: dict[int, float] = {1: 1.0, 2: 0.93, 3: 0.8, 4: 0.6, 5: 0.4}
SEVERITY_HEIGHT_FACTOR: dict[str, float] = {"L": 1.0, "M": 0.95, "H": 0.88}
# Nominal T2 intensities (before bias field and noise; CSF is about 1).
CSF_INTENSITY: float = 0.95
ANNULUS_INTENSITY: float = 0.16
NUCLEUS_INTENSITY: dict[int, float] = {1: 0.88, 2: 0.72, 3: 0.48, 4: 0.28, 5: 0.19}
# Edge width of the nucleus profile (fraction of its semi-axes) by grade: sharp -> diffuse.
NUCLEUS_SOFTNESS: dict[int, float] = {1: 0.04, 2: 0.06, 3: 0.12, 4: 0.2, 5: 0.25}
NUCLEUS_SEMI_AXIS_U: dict[int, float] = {1: 0.32, 2: 0.3, 3: 0.27, 4: 0.22, 5: 0.16}  # x width
NUCLEUS_CUTOFF: float = 1.4  # nucleus profile is zero beyond this normalised radius
# Posterior bulge depth (mm) and canal narrowing fraction ranges by severity.
BULGE_MM: dict[str, tuple[float, float]] = {"L": (0.0, 0.0), "M": (1.5, 2.5), "H": (2.5, 4.0)}
CANAL_NARROWING: dict[str, tuple[float, float]] = {"L": (0.0, 0.06), "M": (0.1, 0.2), "H": (0.25, 0.4)}
CANAL_GAP_MM: float = 1.2  # posterior longitudinal ligament between bodies and canal


# === Shapes ===
def disc_local_polygon(width_mm: float, anterior_height_mm: float, posterior_height_mm: float,
                       bulge_mm: float = 0.0, n_arc: int = 24) -> np.ndarray:
    """A disc in its own frame: float [N, 2] of (a along u, b along v), centred at a = b = 0.

    The trapezoid spans a in [-W/2, W/2]; its anterior side (a = -W/2) has height h_a and its
    posterior side h_p, both bisected by b = 0. A bulge of depth ``bulge_mm`` > 0 replaces the
    posterior side by the half ellipse (W/2 + bulge cos phi, h_p/2 sin phi), phi in [-90, 90] deg.
    """
    w2, ha, hp = width_mm / 2, anterior_height_mm / 2, posterior_height_mm / 2
    pts = [(-w2, -ha), (w2, -hp)]
    if bulge_mm > 0:
        phi = np.linspace(-math.pi / 2, math.pi / 2, n_arc + 2)[1:-1]
        pts += list(zip(w2 + bulge_mm * np.cos(phi), hp * np.sin(phi)))
    pts += [(w2, hp), (-w2, ha)]
    return np.asarray(pts, np.float64)


def rect_local_polygon(width_mm: float, height_mm: float) -> np.ndarray:
    """Rectangle [4, 2] in its own frame, centred at the origin (a along u, b along v)."""
    w2, h2 = width_mm / 2, height_mm / 2
    return np.array([(-w2, -h2), (w2, -h2), (w2, h2), (-w2, h2)], np.float64)


def sacral_local_polygon(width_mm: float, height_mm: float, top_tilt_deg: float) -> np.ndarray:
    """The S1 wedge in a frame whose u axis is tilted by ``top_tilt_deg`` from its top edge.

    The segment is a quadrilateral: top edge (the S1 endplate) of ``width_mm``, a straight
    posterior wall of ``height_mm`` perpendicular to it, and an anterior wall converging so that
    the bottom edge is 75 % of the top. Built in the endplate frame, then rotated into the frame
    of the L5-S1 disc (rotation by ``top_tilt_deg``, the wedge half-angle of L5-S1).
    """
    w2, h = width_mm / 2, height_mm
    pts = np.array([(-w2, h / 2), (w2, h / 2), (w2, -h / 2), (-0.5 * w2, -h / 2)])
    r = math.radians(top_tilt_deg)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return pts @ rot.T


# === Anatomy ===
@dataclasses.dataclass(frozen=True)
class Part:
    """One structure of the column at the midline (all lengths mm, image mm coordinates).

    Attributes:
        name: "L3", "T12-L1", "T12", "S2", ...
        class_id: id painted into the mask (``labels.BACKGROUND_ID`` for image-only parts).
        kind: "vertebra" | "disc" | "sacrum".
        centre: float [2] construction centre (image mm).
        tilt_deg: angle of the part's frame (``geometry.frame.frame_axes``).
        local: float [N, 2] polygon in the frame at the midline (a along u, b along v).
        lateral_radius_mm: lateral semi-axis R; the part is absent where |z| >= 0.95 R.
        scale_height: True for discs (both axes shrink laterally), False for bodies (AP only).
    """

    name: str
    class_id: int
    kind: str
    centre: np.ndarray
    tilt_deg: float
    local: np.ndarray
    lateral_radius_mm: float
    scale_height: bool


@dataclasses.dataclass(frozen=True)
class DiscSpec:
    """Per-disc parameters of a patient (midline values, mm; intensities nominal 0..1)."""

    level: str
    pfirrmann: int
    severity: str
    width_mm: float
    anterior_height_mm: float
    posterior_height_mm: float
    bulge_mm: float
    tilt_deg: float
    canal_narrowing: float
    nucleus_intensity: float
    nucleus_softness: float
    nucleus_a_mm: float
    nucleus_b_mm: float

    @property
    def grade_class(self) -> str:
        return labels.grade_class(self.pfirrmann, self.severity)


@dataclasses.dataclass(frozen=True)
class PatientAnatomy:
    """Everything drawn for one patient, sampled once and shared by all its slices.

    Attributes:
        patient: id ``S0000``-style. index: patient index in the cohort.
        age: years (int). sex: "M" | "F". odi: 0..100. nrs: 0..10.
        discs: labelled discs top -> bottom (``labels.DISC_NAMES`` order).
        parts: every part of the column top -> bottom (T11 .. S5), midline geometry.
        canal_diameter_mm: nominal canal AP diameter at the midline.
        canal_radius_mm: lateral semi-axis of the thecal sac.
        marrow_intensity: nominal vertebral marrow T2 intensity.
        tissue: soft-tissue layer parameters (mm offsets from the column centre line).
        shift_frac: (x, y) in [0, 1] placing the column in the field of view.
    """

    patient: str
    index: int
    age: int
    sex: str
    odi: int
    nrs: int
    discs: tuple[DiscSpec, ...]
    parts: tuple[Part, ...]
    canal_diameter_mm: float
    canal_radius_mm: float
    marrow_intensity: float
    tissue: dict
    shift_frac: tuple[float, float]


def patient_id(index: int) -> str:
    """``S0000``, ``S0001``, ... for patient index 0, 1, ..."""
    return f"{PATIENT_PREFIX}{int(index):04d}"


def _sample_grade(rng: np.random.Generator, age: int, level: str) -> tuple[int, str, float]:
    """Pfirrmann grade, severity and the latent degeneration score of one disc."""
    d = 0.7 + 3.2 * (age - 20) / 60 + LEVEL_DEGENERATION[level] + rng.normal(0.0, 0.8)
    cuts = GRADE_CUTS
    grade = 1 + int(np.searchsorted(cuts, d, side="right"))
    lower = cuts[grade - 2] if grade >= 2 else cuts[0] - 1.0
    e = 0.45 * min(d - lower, 1.0) + 0.2 * (grade - 3) + rng.normal(0.0, 0.6)
    severity = "L" if e < 0.2 else ("M" if e < 0.75 else "H")
    if grade <= 2:
        severity = "L"
    return grade, severity, d


# Per-patient random ranges (uniform unless noted): a size factor for all lengths, the lordosis
# factor on the wedge ratios, the tilt (deg) of the T11-T12 disc, per-body depth and height
# jitter, the lateral semi-axes (mm) of vertebral bodies and discs.
AGE_RANGE: tuple[int, int] = (20, 81)                 # years, integers, upper bound exclusive
SIZE_FACTOR_RANGE: tuple[float, float] = (0.9, 1.1)
LORDOSIS_FACTOR_RANGE: tuple[float, float] = (0.7, 1.3)
TOP_TILT_DEG_RANGE: tuple[float, float] = (-8.0, 2.0)
S1_TOP_WIDTH_MM: float = 36.0                         # mean depth of the S1 endplate
S1_HEIGHT_MM: float = 28.0
BODY_WIDTH_JITTER: tuple[float, float] = (0.97, 1.03)
BODY_HEIGHT_JITTER: tuple[float, float] = (0.95, 1.05)
S1_HEIGHT_JITTER: tuple[float, float] = (0.92, 1.08)
BODY_LATERAL_RADIUS_MM: tuple[float, float] = (20.0, 25.0)
DISC_LATERAL_RADIUS_MM: tuple[float, float] = (20.0, 24.0)
# A disc is this fraction (range) of the mean depth of its two bodies; its height varies by a
# normal factor of this standard deviation; the image-only T11-T12 disc is healthy, this high.
DISC_WIDTH_FRACTION: tuple[float, float] = (0.96, 1.0)
DISC_HEIGHT_SD: float = 0.04
IMAGE_ONLY_DISC_HEIGHT_MM: float = 5.5
# When a disc collapses its posterior height keeps at least this fraction of its mean height.
MIN_POSTERIOR_HEIGHT_FRACTION: float = 0.35
NUCLEUS_INTENSITY_JITTER: tuple[float, float] = (0.95, 1.05)
# The nucleus' semi-axis along v: at most this fraction of the disc height.
NUCLEUS_MAX_HEIGHT_FRACTION: float = 0.3
# Sacrum below S1 (S2..S5): each this much less tilted (deg, range), and smaller by these
# factors (depth, height); S2 starts from S1 scaled by SACRUM_FIRST_SCALE.
SACRAL_KYPHOSIS_DEG: tuple[float, float] = (3.0, 7.0)
SACRUM_FIRST_SCALE: tuple[float, float] = (0.75, 0.8)
SACRUM_STEP_SCALE: tuple[float, float] = (0.78, 0.85)
SACRUM_RADIUS_FACTOR: float = 0.8
# Soft tissue: key of PatientAnatomy.tissue -> uniform range (mm, or nominal intensity).
TISSUE_RANGES: dict[str, tuple[float, float]] = {
        "prevertebral_mm": (20.0, 30.0),
        "posterior_elements_mm": (22.0, 30.0),
        "muscle_mm": (35.0, 50.0),
        "fat_mm": (8.0, 25.0),
        "bias_floor": (0.12, 0.25),
        "bias_width_mm": (12.0, 22.0),
        "noise_sigma": (0.025, 0.045),
        "fat_intensity": (0.55, 0.7),
        "muscle_intensity": (0.18, 0.26),
}
CANAL_DIAMETER_MM: tuple[float, float] = (13.0, 17.0)  # x the size factor
CANAL_LATERAL_RADIUS_MM: tuple[float, float] = (9.0, 12.0)
MARROW_INTENSITY: tuple[float, float] = (0.32, 0.5)
# Clinical scores from the worst labelled grade class id w: round(a + b * w + normal(0, sd)),
# clipped to the score's range.
ODI_MODEL: tuple[float, float, float] = (6.0, 5.2, 7.0)   # (a, b, sd), 0..100
NRS_MODEL: tuple[float, float, float] = (1.0, 0.6, 1.1)   # (a, b, sd), 0..10


@dataclasses.dataclass(frozen=True)
class _Build:
    """A patient's overall draws: size and lordosis factors, the top disc's tilt (deg), the
    body depths (T11..L5 then S1's top edge) and heights (T11..L5), S1's height, the lateral
    semi-axes of bodies and discs (mm)."""

    age: int
    sex: str
    size: float
    lordosis: float
    tilt0: float
    body_w: list[float]
    body_h: list[float]
    s1_height: float
    body_r: float
    disc_r: float


def sample_patient(seed: int, index: int) -> PatientAnatomy:
    """Samples one patient's anatomy, grades and clinical scores (midline geometry only).

    Deterministic in (seed, index) alone: ``np.random.default_rng([seed, index, 0])`` draws the
    anatomy and ``[seed, index, 1]`` the clinical noise, in a fixed order (the steps below
    draw in the order they are called).

    Raises:
        ValueError: seed or index negative.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and patient index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([int(seed), int(index), 0])
    build = _sample_build(rng)
    specs = [_sample_disc(rng, build, k, name)
             for k, name in enumerate(("T11-T12",) + labels.DISC_NAMES)]
    specs, betas = _chain_tilts(specs, build.tilt0)
    parts = _column_parts(rng, build, specs, betas)
    tissue = {key: rng.uniform(lo, hi) for key, (lo, hi) in TISSUE_RANGES.items()}
    canal_diameter = rng.uniform(*CANAL_DIAMETER_MM) * build.size
    canal_r = rng.uniform(*CANAL_LATERAL_RADIUS_MM)
    marrow = rng.uniform(*MARROW_INTENSITY)
    shift = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0)))
    odi, nrs = _clinical_scores(seed, index, specs[1:])
    return PatientAnatomy(patient=patient_id(index), index=int(index), age=build.age,
                          sex=build.sex, odi=odi, nrs=nrs, discs=tuple(specs[1:]),
                          parts=tuple(_place_chain(parts)), canal_diameter_mm=canal_diameter,
                          canal_radius_mm=canal_r, marrow_intensity=marrow, tissue=tissue,
                          shift_frac=shift)


def _sample_build(rng: np.random.Generator) -> _Build:
    """Age, sex and the column's overall proportions (``_Build``)."""
    age = int(rng.integers(*AGE_RANGE))
    sex = "F" if rng.random() < 0.5 else "M"
    size = rng.uniform(*SIZE_FACTOR_RANGE)
    lordosis = rng.uniform(*LORDOSIS_FACTOR_RANGE)
    tilt0 = rng.uniform(*TOP_TILT_DEG_RANGE)
    body_w = [w * size * rng.uniform(*BODY_WIDTH_JITTER) for w in BODY_WIDTH_MM + (S1_TOP_WIDTH_MM,)]
    body_h = [h * size * rng.uniform(*BODY_HEIGHT_JITTER) for h in BODY_HEIGHT_MM]
    s1_height = S1_HEIGHT_MM * size * rng.uniform(*S1_HEIGHT_JITTER)
    body_r = rng.uniform(*BODY_LATERAL_RADIUS_MM)
    disc_r = rng.uniform(*DISC_LATERAL_RADIUS_MM)
    return _Build(age, sex, size, lordosis, tilt0, body_w, body_h, s1_height, body_r, disc_r)


def _sample_disc(rng: np.random.Generator, build: _Build, k: int, name: str) -> DiscSpec:
    """Disc ``k`` of the column (0 = T11-T12, image only), between bodies k and k + 1: grade,
    severity, trapezoid, bulge, canal narrowing and nucleus (tilt set by ``_chain_tilts``)."""
    size = build.size
    w = 0.5 * (build.body_w[k] + build.body_w[k + 1]) * rng.uniform(*DISC_WIDTH_FRACTION)
    if name in NOMINAL_DISC_HEIGHT_MM:
        grade, sev, _ = _sample_grade(rng, build.age, name)
        nominal, ratio = NOMINAL_DISC_HEIGHT_MM[name], DISC_WEDGE_RATIO[name]
    else:
        grade, sev, nominal, ratio = 1, "L", IMAGE_ONLY_DISC_HEIGHT_MM, 0.0
    factor = GRADE_HEIGHT_FACTOR[grade] * SEVERITY_HEIGHT_FACTOR[sev] * rng.normal(1.0, DISC_HEIGHT_SD)
    height = nominal * size * factor
    # The lordotic wedge (h_a - h_p) shrinks less than the height when a disc collapses
    # (the posterior part collapses first); h_p stays >= 35 % of the mean height.
    wedge = 2 * ratio * build.lordosis * nominal * size * (0.5 + 0.5 * factor)
    h_p = max(height - wedge / 2, MIN_POSTERIOR_HEIGHT_FRACTION * height)
    h_a = 2 * height - h_p
    lo, hi = BULGE_MM[sev]
    bulge = rng.uniform(lo, hi) if hi > 0 else 0.0
    lo, hi = CANAL_NARROWING[sev]
    narrowing = rng.uniform(lo, hi)
    i_n = NUCLEUS_INTENSITY[grade] * rng.uniform(*NUCLEUS_INTENSITY_JITTER)
    a_n = NUCLEUS_SEMI_AXIS_U[grade] * w
    # the normalised-radius-1.4 ellipse stays inside the trapezoid (see NUCLEUS_CUTOFF)
    h_short = height - (h_a - h_p) * (NUCLEUS_CUTOFF * a_n / w)
    b_n = min(NUCLEUS_MAX_HEIGHT_FRACTION * height, 0.95 * h_short / 2 / NUCLEUS_CUTOFF)
    return DiscSpec(level=name, pfirrmann=grade, severity=sev, width_mm=w,
                    anterior_height_mm=h_a, posterior_height_mm=h_p, bulge_mm=bulge,
                    tilt_deg=0.0, canal_narrowing=narrowing, nucleus_intensity=i_n,
                    nucleus_softness=NUCLEUS_SOFTNESS[grade], nucleus_a_mm=a_n,
                    nucleus_b_mm=b_n)


def _chain_tilts(specs: list[DiscSpec], tilt0: float) -> tuple[list[DiscSpec], list[float]]:
    """The discs with their tilts set, and each disc's wedge half-angle beta (deg):
    consecutive discs differ by beta_prev + beta, starting from ``tilt0``."""
    betas = [math.degrees(math.atan((s.anterior_height_mm - s.posterior_height_mm) / (2 * s.width_mm)))
             for s in specs]
    tilts = [tilt0]
    for k in range(1, len(specs)):
        tilts.append(tilts[-1] + betas[k - 1] + betas[k])
    return [dataclasses.replace(s, tilt_deg=t) for s, t in zip(specs, tilts)], betas


def _column_parts(rng: np.random.Generator, build: _Build, specs: list[DiscSpec],
                  betas: list[float]) -> list[Part]:
    """Every part top -> bottom (T11 .. S5) at the origin, to be placed by ``_place_chain``:
    bodies tilted as the mean of their discs, S1 in the frame of the L5-S1 disc, S2..S5
    (image only) each smaller and less tilted (the sacral kyphosis; draws from ``rng``)."""
    tilts = [s.tilt_deg for s in specs]
    parts: list[Part] = []
    body_tilts = [tilts[0] - betas[0]] + [0.5 * (tilts[k] + tilts[k + 1]) for k in range(len(tilts) - 1)]
    for k, bname in enumerate(BODY_NAMES):
        cid = labels.SEG_ID.get(bname, labels.BACKGROUND_ID)
        parts.append(Part(bname, cid, "vertebra", np.zeros(2), body_tilts[k],
                          rect_local_polygon(build.body_w[k], build.body_h[k]), build.body_r,
                          False))
        s = specs[k]
        cid = labels.SEG_ID.get(s.level, labels.BACKGROUND_ID)
        parts.append(Part(s.level, cid, "disc", np.zeros(2), s.tilt_deg,
                          disc_local_polygon(s.width_mm, s.anterior_height_mm, s.posterior_height_mm,
                                             s.bulge_mm), build.disc_r, True))
    # S1 in the frame of the L5-S1 disc, its top edge parallel to that disc's lower endplate.
    s1_w = build.body_w[-1]
    parts.append(Part("S1", labels.SEG_ID["S1"], "vertebra", np.zeros(2), tilts[-1],
                      sacral_local_polygon(s1_w, build.s1_height, betas[-1]), build.body_r, False))
    sac_tilt = tilts[-1] + betas[-1]
    sw, sh = s1_w * SACRUM_FIRST_SCALE[0], build.s1_height * SACRUM_FIRST_SCALE[1]
    for name in ("S2", "S3", "S4", "S5"):
        sac_tilt -= rng.uniform(*SACRAL_KYPHOSIS_DEG)
        parts.append(Part(name, labels.BACKGROUND_ID, "sacrum", np.zeros(2), sac_tilt,
                          sacral_local_polygon(sw, sh, 0.0), build.body_r * SACRUM_RADIUS_FACTOR,
                          False))
        sw, sh = sw * SACRUM_STEP_SCALE[0], sh * SACRUM_STEP_SCALE[1]
    return parts


def _clinical_scores(seed: int, index: int, discs: Sequence[DiscSpec]) -> tuple[int, int]:
    """(ODI 0..100, NRS 0..10) from the worst labelled disc (higher class id = worse), with
    noise from the patient's own clinical stream ``[seed, index, 1]``."""
    crng = np.random.default_rng([int(seed), int(index), 1])
    worst = max(labels.GRADE_CLASS_ID[s.grade_class] for s in discs)
    a, b, sd = ODI_MODEL
    odi = int(np.clip(round(a + b * worst + crng.normal(0.0, sd)), 0, 100))
    a, b, sd = NRS_MODEL
    nrs = int(np.clip(round(a + b * worst + crng.normal(0.0, sd)), 0, 10))
    return odi, nrs


# Gap between consecutive parts (mm) at the midline placement (about one pixel at 0.6-0.9 mm).
PLACEMENT_GAP_MM: float = 0.9


def _place_chain(parts: list[Part]) -> list[Part]:
    """Sets the centres so that consecutive parts are at least ``PLACEMENT_GAP_MM`` apart.

    The first part sits at the origin; each next one moves from the previous centre along the
    mean inferior direction (-v) of the two frames by the smallest distance lam at which it no
    longer meets the previous part grown by the gap: lam is where the ray lam * d leaves the
    Minkowski difference (previous part + disc of radius gap) - (next part), a convex polygon
    (hulls of the parts are used; they contain the parts, so the true gap is >= the target).
    """
    circle = PLACEMENT_GAP_MM / math.cos(math.pi / 32) * np.stack(
            [np.cos(np.arange(32) * math.pi / 16), np.sin(np.arange(32) * math.pi / 16)], axis=1)
    placed = [dataclasses.replace(parts[0], centre=np.zeros(2))]
    for part in parts[1:]:
        prev = placed[-1]
        d = -(frame_axes(prev.tilt_deg)[1] + frame_axes(part.tilt_deg)[1])
        d /= np.linalg.norm(d)
        grown = convex_hull((convex_hull(to_world(prev.local, prev.centre, prev.tilt_deg))[:, None, :]
                       + circle[None, :, :]).reshape(-1, 2))
        nxt = convex_hull(to_world(part.local, prev.centre, part.tilt_deg))
        diff = convex_hull((grown[:, None, :] - nxt[None, :, :]).reshape(-1, 2))
        lam = float(line_intervals(diff, np.zeros(2), d)[:, 1].max())
        placed.append(dataclasses.replace(part, centre=prev.centre + lam * d))
    return placed
