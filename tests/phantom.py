"""Hand-checkable spine phantoms for the geometry tests (numpy only).

Shapes are convex polygons given in a local frame (``spoils_tf.geometry.frame``: a along
u = posterior, b along v = superior, mm) and rasterised by pixel centre: pixel ``(r, c)``
belongs to a shape iff its centre ``(x, y) = (c * col_mm, r * row_mm)`` lies inside the
polygon (boundary included), the rule of ``spoils_tf.data.polygons.rasterize``, so that
analytic lengths are unbiased.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from spoils_tf import labels
from spoils_tf.geometry.frame import frame_axes, to_world


def fill_convex(mask: np.ndarray, poly_xy: np.ndarray, value: int,
                spacing: tuple[float, float]) -> None:
    """Sets ``mask[r, c] = value`` where the pixel centre lies in the convex polygon (in place).

    Args:
        mask: int [H, W].
        poly_xy: float [N, 3+] vertices (x, y) mm, either winding.
        spacing: (row_mm, col_mm).
    """
    sr, sc = spacing
    p = np.asarray(poly_xy, np.float64)
    H, W = mask.shape
    r0 = max(0, int(math.floor(p[:, 1].min() / sr)) - 1)
    r1 = min(H, int(math.ceil(p[:, 1].max() / sr)) + 2)
    c0 = max(0, int(math.floor(p[:, 0].min() / sc)) - 1)
    c1 = min(W, int(math.ceil(p[:, 0].max() / sc)) + 2)
    if r1 <= r0 or c1 <= c0:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1]
    x = xx * sc
    y = yy * sr
    q = np.roll(p, -1, axis=0)
    cross = [(q[i, 0] - p[i, 0]) * (y - p[i, 1]) - (q[i, 1] - p[i, 1]) * (x - p[i, 0])
             for i in range(len(p))]
    eps = 1e-9
    inside = np.all([c >= -eps for c in cross], axis=0) | np.all([c <= eps for c in cross], axis=0)
    sub = mask[r0:r1, c0:c1]
    sub[inside] = value


def trapezoid(width: float, h_ant: float, h_post: float) -> np.ndarray:
    """Local (a, b) vertices of a disc wedge centred on its mid-line: float [4, 2] mm."""
    w = 0.5 * width
    return np.array([[-w, 0.5 * h_ant], [w, 0.5 * h_post], [w, -0.5 * h_post], [-w, -0.5 * h_ant]])


def rectangle(width: float, height: float) -> np.ndarray:
    """Local (a, b) vertices of an axis-aligned rectangle centred on 0: float [4, 2] mm."""
    return trapezoid(width, height, height)


@dataclasses.dataclass(frozen=True)
class SpinePhantom:
    """A straight (tilted) stack: vertebra, disc, vertebra, ... with a canal band behind it.

    All discs and vertebrae share one frame (``tilt_deg``) so every analytic value is exact.

    Attributes:
        mask: int32 [H, W]; image: uint8 [H, W] (disc inner 40 % = ``nucleus_value``, rest of
            disc = ``annulus_value``, vertebrae = ``vert_value``, canal = ``csf_value``).
        spacing: (row_mm, col_mm).
        truth: disc name -> dict of analytic values (same keys as measure.MEASUREMENT_COLUMNS).
    """

    mask: np.ndarray
    image: np.ndarray
    spacing: tuple[float, float]
    truth: dict[str, dict[str, float]]


def spine_phantom(shape: tuple[int, int] = (320, 256), spacing: tuple[float, float] = (0.6, 0.6),
                  tilt_deg: float = 15.0, discs: Sequence[str] = ("L3-L4", "L4-L5"),
                  disc_width: float = 36.0, h_ant: float = 10.0, h_post: float = 7.0,
                  vert_width: float = 32.0, vert_height: float = 24.0,
                  canal_gap: float = 2.0, canal_ap: float = 13.0,
                  nucleus_value: int = 200, annulus_value: int = 100, vert_value: int = 120,
                  csf_value: int = 250,
                  centre_offset_mm: tuple[float, float] = (0.137, 0.213)) -> SpinePhantom:
    """Draws discs (wedges) between rectangular vertebral bodies, all in one tilted frame.

    Vertebral bodies and discs are centred on one straight axis through the image centre
    (moved by ``centre_offset_mm`` (x, y) so that edges do not fall exactly on pixel centres,
    the degenerate case where centre rasterisation gains a whole row);
    the posterior edges of the vertebrae lie at a = vert_width / 2, the disc's posterior end
    at a = disc_width / 2 (so the analytic bulge is (disc_width - vert_width) / 2), and the
    canal is a band from a = disc_width / 2 + canal_gap to that + canal_ap.

    Returns:
        ``SpinePhantom`` with analytic truth per disc.
    """
    H, W = shape
    sr, sc = spacing
    mask = np.zeros(shape, np.int32)
    image = np.full(shape, 20, np.uint8)
    centre = np.array([0.5 * (W - 1) * sc, 0.5 * (H - 1) * sr]) + np.asarray(centre_offset_mm)
    u, v = frame_axes(tilt_deg)
    # Stack from the top: v above, disc, v below, ... along -v.
    idx = [labels.DISC_NAMES.index(d) for d in discs]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise ValueError(f"discs must be consecutive levels top to bottom, got {discs}")
    # Rectangular vertebrae spaced so that the wedge never overlaps them (a thin gap of
    # background remains at the lower end of the wedge).
    pitch = vert_height + max(h_ant, h_post)
    n = len(discs)
    # b position of each disc centre relative to the stack centre.
    disc_b = [(0.5 * (n - 1) - k) * pitch for k in range(n)]
    truth: dict[str, dict[str, float]] = {}
    verts_drawn: dict[str, float] = {}
    for k, d in enumerate(discs):
        above, below = labels.disc_neighbours(d)
        for vname, db in ((above, disc_b[k] + 0.5 * pitch), (below, disc_b[k] - 0.5 * pitch)):
            if vname is not None and vname not in verts_drawn:
                verts_drawn[vname] = db
                poly = to_world(rectangle(vert_width, vert_height), centre + db * v, tilt_deg)
                fill_convex(mask, poly, labels.SEG_ID[vname], spacing)
        c = centre + disc_b[k] * v
        fill_convex(mask, to_world(trapezoid(disc_width, h_ant, h_post), c, tilt_deg),
                    labels.SEG_ID[d], spacing)
    image[mask > 0] = vert_value
    for d in discs:
        image[mask == labels.SEG_ID[d]] = annulus_value
    # Nucleus: the middle 40 % of the disc length (t in [0.3, 0.7]), drawn into the image only.
    nuc = np.zeros(shape, np.int32)
    for k, d in enumerate(discs):
        c = centre + disc_b[k] * v
        w = disc_width
        nuc_poly = np.array([[-0.2 * w, 5 * h_ant], [0.2 * w, 5 * h_ant],
                             [0.2 * w, -5 * h_ant], [-0.2 * w, -5 * h_ant]])
        fill_convex(nuc, to_world(nuc_poly, c, tilt_deg), 1, spacing)
    disc_any = np.isin(mask, [labels.SEG_ID[d] for d in discs])
    image[(nuc > 0) & disc_any] = nucleus_value
    # Canal band, long along v, covering the whole stack.
    a0 = 0.5 * disc_width + canal_gap
    half_len = 0.5 * (n * pitch + vert_height) + 5.0
    canal_poly = np.array([[a0, half_len], [a0 + canal_ap, half_len],
                           [a0 + canal_ap, -half_len], [a0, -half_len]])
    fill_convex(mask, to_world(canal_poly, centre, tilt_deg), labels.CANAL_ID, spacing)
    image[mask == labels.CANAL_ID] = csf_value

    for d in discs:
        truth[d] = {
            "tilt_deg": tilt_deg,
            "disc_height_mm": 0.5 * (h_ant + h_post),
            "disc_central_height_mm": 0.5 * (h_ant + h_post),
            "disc_anterior_height_mm": h_ant + 0.1 * (h_post - h_ant),
            "disc_posterior_height_mm": h_ant + 0.9 * (h_post - h_ant),
            # area / mean height: a trapezoid's width, whatever its wedge
            "disc_width_mm": disc_width,
            "disc_midpoint_width_mm": disc_width,
            "disc_area_mm2": 0.5 * (h_ant + h_post) * disc_width,
            "vert_above_height_mm": vert_height,
            "vert_above_width_mm": vert_width,
            "vert_below_height_mm": vert_height,
            "vert_below_width_mm": vert_width,
            "disc_height_index": 0.5 * (h_ant + h_post) / vert_height,
            "canal_ap_diameter_mm": canal_ap,
            "disc_bulge_mm": 0.5 * (disc_width - vert_width),
        }
    return SpinePhantom(mask, image, spacing, truth)
