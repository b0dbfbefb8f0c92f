"""One parasagittal slice of a synthetic patient as polygons (image mm), and its exact ground
truth.

:func:`build_slice` places a patient's parts (``spoils_tf.data.synthetic_anatomy``) in the
field of view at a lateral offset z (a disc shrinks in both axes, a body in depth, by
sqrt(1 - (z/R)^2)) and builds the canal; :func:`slice_truth` measures the labelled discs, their
vertebrae and the canal on those polygons by the shared definitions (``spoils_tf.geometry``),
never on pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import numpy as np

from spoils_tf import labels
from spoils_tf.data.polygons import (line_intervals, measure_in_frame, polygon_area_centroid,
                                     resample_polyline, subtract_intervals)
from spoils_tf.data.synthetic_anatomy import (ANNULUS_INTENSITY, CANAL_GAP_MM, CSF_INTENSITY,
                                              NUCLEUS_CUTOFF, PatientAnatomy)
from spoils_tf.geometry.frame import frame_axes, to_world, v_axis

# === Constants ===
GEOMETRY_TRUTH_COLUMNS: tuple[str, ...] = (
        "patient", "slice", "level", "slice_offset_mm", "x_px", "y_px", "tilt_deg",
        "disc_width_mm", "disc_midpoint_width_mm", "disc_height_mm", "disc_central_height_mm",
        "disc_anterior_height_mm", "disc_posterior_height_mm", "disc_area_mm2",
        "vert_above_height_mm", "vert_above_width_mm", "vert_below_height_mm", "vert_below_width_mm",
        "canal_ap_diameter_mm", "disc_height_index",
        "trapezoid_width_mm", "trapezoid_anterior_height_mm", "trapezoid_posterior_height_mm",
        "bulge_mm", "canal_narrowing",
        "nucleus_intensity", "annulus_intensity", "csf_intensity", "nucleus_ratio", "signal_ratio")


# === One slice ===
@dataclasses.dataclass(frozen=True)
class SliceShapes:
    """The polygons (image mm) of one slice at lateral offset ``offset_mm``.

    Attributes:
        offset_mm: lateral offset z from the midline.
        parts: name -> (Part, polygon [N, 2] mm) for parts present (|z| < 0.95 R).
        canal: canal polygon [N, 2] mm or None where the slice misses the thecal sac.
        canal_lines: (anterior [M, 2], posterior [M, 2]) canal boundary polylines (image only use).
        posterior_elements: polygons [N, 2] of laminae/spinous processes (image only).
        scale: name -> lateral scale factor sqrt(1 - (z/R)^2) applied to that part.
        origin_mm: [2] translation applied to the anatomy (placement in the field of view).
    """

    offset_mm: float
    parts: dict
    canal: Optional[np.ndarray]
    canal_lines: Optional[tuple[np.ndarray, np.ndarray]]
    posterior_elements: list
    scale: dict
    origin_mm: np.ndarray


def _lateral_scale(z: float, radius: float) -> Optional[float]:
    if abs(z) >= 0.95 * radius:
        return None
    return math.sqrt(1.0 - (z / radius) ** 2)


def _placement_origin(anat: PatientAnatomy, fov_mm: tuple[float, float]) -> np.ndarray:
    """Translation putting the labelled column inside the field of view (fov = (x_mm, y_mm)).

    Raises:
        ValueError: the field of view cannot hold the labelled structures with a 4 mm margin.
    """
    pts = np.concatenate([to_world(p.local, p.centre, p.tilt_deg) for p in anat.parts
                          if p.class_id != labels.BACKGROUND_ID])
    lo, hi = pts.min(0), pts.max(0)
    # the canal and posterior elements need room behind the bodies
    hi = hi + np.array([anat.canal_diameter_mm + 10.0, 0.0])
    margin = 4.0
    room = np.asarray(fov_mm) - (hi - lo) - 2 * margin
    if np.any(room < 0):
        raise ValueError(f"field of view {fov_mm[0]:.0f} x {fov_mm[1]:.0f} mm (W x H) cannot hold the "
                         f"labelled spine of patient {anat.patient} ({hi[0] - lo[0]:.0f} x "
                         f"{hi[1] - lo[1]:.0f} mm + margins); expected --size x --pixel-spacing larger")
    # horizontally: the column a little left of centre (posterior soft tissue needs room)
    fx = 0.45 + 0.25 * anat.shift_frac[0]
    fy = 0.3 + 0.4 * anat.shift_frac[1]
    return np.array([margin + fx * room[0], margin + fy * room[1]]) - lo


def build_slice(anat: PatientAnatomy, offset_mm: float, fov_mm: tuple[float, float]) -> SliceShapes:
    """Polygons of one parasagittal slice (see ``SliceShapes``), in image mm coordinates.

    Raises:
        ValueError: the field of view is too small (``_placement_origin``).
    """
    origin = _placement_origin(anat, fov_mm)
    z = float(offset_mm)
    parts, scale = {}, {}
    for p in anat.parts:
        g = _lateral_scale(z, p.lateral_radius_mm)
        if g is None:
            continue
        local = p.local * np.array([g, g if p.scale_height else 1.0])
        parts[p.name] = (p, to_world(local, p.centre + origin, p.tilt_deg))
        scale[p.name] = g

    canal, lines, post = None, None, []
    g_c = _lateral_scale(z, anat.canal_radius_mm)
    bodies = [p for p in anat.parts if p.kind == "vertebra" and p.name in parts]
    if g_c is not None and len(bodies) >= 2:
        canal, lines = _canal_polygon(anat, parts, bodies, g_c, origin)
    for p in anat.parts:
        if p.kind != "vertebra" or p.name not in parts or p.name == "S1":
            continue
        w2, h2 = p.local[:, 0].max(), p.local[:, 1].max()
        a0 = w2 + CANAL_GAP_MM + anat.canal_diameter_mm + 1.5
        length = anat.tissue["posterior_elements_mm"]
        local = np.array([(a0, 0.55 * h2), (a0 + 6, 0.75 * h2), (a0 + length, 0.1 * h2 - 8),
                          (a0 + length, -0.5 * h2 - 8), (a0 + 4, -0.45 * h2), (a0, -0.3 * h2)])
        post.append(to_world(local, p.centre + origin, p.tilt_deg))
    return SliceShapes(offset_mm=z, parts=parts, canal=canal, canal_lines=lines,
                       posterior_elements=post, scale=scale, origin_mm=origin)


def _canal_polygon(anat: PatientAnatomy, parts: dict, bodies: list, g_c: float,
                   origin: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The thecal sac: anterior line through the bodies' offset posterior corners, posterior
    line at the (narrowed) diameter along the smoothed normal; closed at the bottom of S1."""
    anterior = []
    for i, p in enumerate(bodies):
        poly = parts[p.name][1]
        u, v = frame_axes(p.tilt_deg)
        local = (poly - (p.centre + origin)) @ np.stack([u, v], axis=1)
        a_post = local[:, 0].max()
        b_top, b_bot = local[:, 1].max(), local[:, 1].min()
        top = p.centre + origin + (a_post + CANAL_GAP_MM) * u + b_top * v
        bot = p.centre + origin + (a_post + CANAL_GAP_MM) * u + b_bot * v
        if i == 0:
            anterior.append(top + 80.0 * v)  # beyond the top of the image
        anterior += [top, bot]
        if p.name == "S1":
            break
    line, s = resample_polyline(np.asarray(anterior), 0.5)
    n_pts = len(line)
    w = 8
    idx_hi = np.minimum(np.arange(n_pts) + w, n_pts - 1)
    idx_lo = np.maximum(np.arange(n_pts) - w, 0)
    tang = line[idx_hi] - line[idx_lo]
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    normal = np.stack([tang[:, 1], -tang[:, 0]], axis=1)  # posterior
    diam = np.full(n_pts, anat.canal_diameter_mm * g_c)
    narrowing = np.zeros(n_pts)
    for spec in anat.discs:
        if spec.level not in parts:
            continue
        part, poly = parts[spec.level]
        _, c = polygon_area_centroid(poly)
        u, v = frame_axes(part.tilt_deg)
        rel = line - c[None, :]
        cand = np.where(rel @ u > 0, np.abs(rel @ v), np.inf)
        s_k = s[int(np.argmin(cand))]
        half = 0.5 * spec.anterior_height_mm + 0.5 * spec.posterior_height_mm + 6.0
        x = np.clip((s - s_k) / half, -1, 1)
        narrowing = np.maximum(narrowing, spec.canal_narrowing * 0.5 * (1 + np.cos(math.pi * x)))
    diam *= 1 - narrowing
    taper = np.clip((s[-1] - s) / 20.0, 0.0, 1.0)
    diam *= 0.35 + 0.65 * taper
    posterior = line + diam[:, None] * normal
    return np.concatenate([line, posterior[::-1]]), (line, posterior)


# === Ground truth ===
def _vertebra_frame(level_discs: list[tuple[str, float]]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Frame (u, v) of a vertebra from the tilts of its adjacent present discs (mean of u)."""
    if not level_discs:
        return None
    u = np.sum([frame_axes(t)[0] for _, t in level_discs], axis=0)
    u /= np.linalg.norm(u)
    return u, v_axis(u)


@functools.lru_cache(maxsize=64)
def _nucleus_profile_integral(softness: float) -> float:
    """J = integral over rho in [0, NUCLEUS_CUTOFF] of sigmoid((1 - rho)/k) * 2 rho d rho.

    The nucleus contributes (I_n - I_a) * pi * A * B * J to the disc's intensity integral.
    """
    rho = np.linspace(0.0, NUCLEUS_CUTOFF, 4001)
    f = 2 * rho / (1 + np.exp(-(1 - rho) / softness))
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(rho)))


def slice_truth(anat: PatientAnatomy, shapes: SliceShapes, slice_index: int,
                spacing_mm: tuple[float, float]) -> list[dict]:
    """Ground-truth rows (``GEOMETRY_TRUTH_COLUMNS``) for the labelled discs of one slice.

    Every length follows the shared definitions (module ``spoils_tf.geometry``) computed
    exactly on the polygons; vertebra/canal fields are None where the structure is absent.
    """
    sr, sc = spacing_mm
    present = {s.level: s for s in anat.discs if s.level in shapes.parts}
    over = [poly for name, (p, poly) in shapes.parts.items()]  # painted after the canal
    rows = []
    for spec in anat.discs:
        if spec.level not in present:
            continue
        part, poly = shapes.parts[spec.level]
        g = shapes.scale[spec.level]
        u, v = frame_axes(part.tilt_deg)
        m = measure_in_frame(poly, u, v)
        row = {"patient": anat.patient, "slice": slice_index, "level": spec.level,
               "slice_offset_mm": shapes.offset_mm,
               "x_px": m.centroid_mm[0] / sc, "y_px": m.centroid_mm[1] / sr,
               "tilt_deg": part.tilt_deg,
               "disc_width_mm": m.area_width_mm, "disc_midpoint_width_mm": m.midpoint_width_mm,
               "disc_height_mm": m.height_mm, "disc_central_height_mm": m.central_height_mm,
               "disc_anterior_height_mm": m.anterior_height_mm,
               "disc_posterior_height_mm": m.posterior_height_mm, "disc_area_mm2": m.area_mm2}
        vert_heights = []
        above, below = labels.disc_neighbours(spec.level)
        for key, vname in (("above", above), ("below", below)):
            row[f"vert_{key}_height_mm"] = row[f"vert_{key}_width_mm"] = None
            if vname is None or vname not in shapes.parts:
                continue
            adj = [(d, shapes.parts[d][0].tilt_deg) for d in labels.DISC_NAMES
                   if d in present and vname in labels.disc_neighbours(d)]
            frame = _vertebra_frame(adj)
            vm = measure_in_frame(shapes.parts[vname][1], *frame)
            row[f"vert_{key}_height_mm"] = vm.height_mm
            row[f"vert_{key}_width_mm"] = vm.width_mm
            vert_heights.append(vm.height_mm)
        row["canal_ap_diameter_mm"] = None
        if shapes.canal is not None:
            base = line_intervals(shapes.canal, m.centroid_mm, u)
            cuts = [line_intervals(q, m.centroid_mm, u) for q in over]
            tip = line_intervals(poly, m.centroid_mm, u)[:, 1].max()
            after = [iv for iv in subtract_intervals(base, cuts) if iv[0] >= tip - 1e-9]
            if after:
                row["canal_ap_diameter_mm"] = after[0][1] - after[0][0]
        row["disc_height_index"] = m.height_mm / float(np.mean(vert_heights)) if vert_heights else None
        row.update({"trapezoid_width_mm": spec.width_mm * g,
                    "trapezoid_anterior_height_mm": spec.anterior_height_mm * g,
                    "trapezoid_posterior_height_mm": spec.posterior_height_mm * g,
                    "bulge_mm": spec.bulge_mm * g, "canal_narrowing": spec.canal_narrowing})
        a_n, b_n = spec.nucleus_a_mm * g, spec.nucleus_b_mm * g
        j = _nucleus_profile_integral(spec.nucleus_softness)
        nucleus_area_fraction = math.pi * a_n * b_n * j / m.area_mm2
        mean = ANNULUS_INTENSITY + (spec.nucleus_intensity - ANNULUS_INTENSITY) * nucleus_area_fraction
        row.update({"nucleus_intensity": spec.nucleus_intensity, "annulus_intensity": ANNULUS_INTENSITY,
                    "csf_intensity": CSF_INTENSITY, "nucleus_ratio": spec.nucleus_intensity / CSF_INTENSITY,
                    "signal_ratio": mean / CSF_INTENSITY})
        rows.append(row)
    return rows
