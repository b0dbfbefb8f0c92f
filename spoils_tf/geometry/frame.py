"""The disc frame convention, and resampling an image in a frame (numpy + OpenCV).

Coordinates: image rows are ``y`` (down = inferior), columns are ``x`` (left = anterior,
right = posterior). Pixel ``(r, c)`` has its centre at ``(x, y) = (c * col_mm, r * row_mm)``:
everything is converted to mm with the per-axis pixel spacing BEFORE any angle work, so
anisotropic pixels are handled.

A frame is an origin and two unit axes in image mm coordinates: ``u`` along the long
(anteroposterior) axis pointing posterior, ``v = (u_y, -u_x)`` perpendicular to it pointing
superior. Its tilt is the angle from the image +x axis to ``u``, positive when the posterior end
is higher (measured with y pointing up): tilt 0 gives ``u = (1, 0)``, ``v = (0, -1)``.
A point at ``a`` mm along ``u`` and ``b`` mm along ``v`` from the origin lies at
``origin + a * u + b * v``. This one convention is used by the measurements
(``spoils_tf.geometry.measure``), the synthetic cohort (``spoils_tf.data.synthetic``) and the
test phantoms.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import cv2
import numpy as np


# === The convention ===
def frame_axes(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit axes (u, v) of a frame with the given tilt, in image mm coordinates (x, y down).

    u points posterior (tilt 0 -> +x), v points superior (tilt 0 -> -y); ``tilt_deg`` is
    the angle from +x to u with y pointing up (positive = posterior end higher).

    Returns:
        (u, v): float64 [2] each.
    """
    t = math.radians(tilt_deg)
    return np.array([math.cos(t), -math.sin(t)]), np.array([-math.sin(t), -math.cos(t)])


def v_axis(u: np.ndarray) -> np.ndarray:
    """The superior axis ``v = (u_y, -u_x)`` of a frame with long axis ``u``: float64 [2]."""
    return np.array([u[1], -u[0]])


def tilt_of(u: np.ndarray) -> float:
    """Inverse of ``frame_axes``: the tilt (degrees) of a u axis given in image mm coordinates."""
    return math.degrees(math.atan2(-float(u[1]), float(u[0])))


def to_world(local_ab: np.ndarray, centre: np.ndarray, tilt_deg: float) -> np.ndarray:
    """Local frame coordinates (a along u, b along v; mm) ``[N, 2]`` -> image mm ``[N, 2]``."""
    u, v = frame_axes(tilt_deg)
    ab = np.asarray(local_ab, np.float64)
    return np.asarray(centre, np.float64)[None, :] + ab[:, :1] * u[None, :] + ab[:, 1:2] * v[None, :]


@dataclasses.dataclass(frozen=True)
class Frame:
    """An orthonormal frame in image mm coordinates (x = col * col_mm, y = row * row_mm).

    Attributes:
        origin: float64 [2], (x, y) mm.
        u: float64 [2], unit vector pointing posterior (x component > 0).
        v: float64 [2], unit vector perpendicular to ``u`` pointing superior (y component < 0).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @staticmethod
    def from_u(origin: np.ndarray, u: np.ndarray) -> "Frame":
        """The frame at ``origin`` (mm) whose long axis is ``u`` (any length; its sign is
        chosen so that it points posterior)."""
        u = np.asarray(u, np.float64)
        u = u / np.linalg.norm(u)
        if u[0] < 0 or (u[0] == 0 and u[1] > 0):
            u = -u
        return Frame(np.asarray(origin, np.float64), u, v_axis(u))

    @property
    def tilt_deg(self) -> float:
        """Angle from +x to ``u`` with y pointing up (posterior end higher -> positive)."""
        return tilt_of(self.u)

    def project(self, xy_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points ``float [N, 2]`` (x, y) mm -> (a along u, b along v), each float [N] mm."""
        xy = np.asarray(xy_mm, np.float64)
        return self.project_xy(xy[:, 0], xy[:, 1])

    def project_xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points given as x, y float64 [N] mm -> (a along u, b along v), each float64 [N] mm.

        Elementwise (``dx * u_x + dy * u_y``): several times faster than a matrix product
        with an inner dimension of 2.
        """
        dx = x - self.origin[0]
        dy = y - self.origin[1]
        u0, u1 = float(self.u[0]), float(self.u[1])
        a = dx * u0
        a += dy * u1
        b = dx * u1
        b -= dy * u0
        return a, b

    def to_pixel(self, a: float, b: float, spacing: tuple[float, float]) -> tuple[float, float]:
        """Frame coordinates (mm) -> (row, col) in pixels."""
        o, u, v = self.origin.tolist(), self.u.tolist(), self.v.tolist()
        x = o[0] + a * u[0] + b * v[0]
        y = o[1] + a * u[1] + b * v[1]
        return y / spacing[0], x / spacing[1]


# === Resampling in a frame ===
@dataclasses.dataclass(frozen=True)
class Grid:
    """A mask resampled on a regular grid in a frame.

    ``values[j, i]`` (float32, bilinear, in [0, 1]) is the mask at ``a = a0 + i * step``,
    ``b = b1 - j * step`` (row 0 is the most superior); ``inside = values >= 0.5``. Lengths are
    integrals of ``values`` along grid lines (sum x step), which for a mask rasterised by pixel
    centre equals the number of pixels crossed x their size, without sampling quantisation.
    """

    values: np.ndarray
    a0: float
    b1: float
    step: float

    @property
    def inside(self) -> np.ndarray:
        return self.values >= 0.5


def grid_size(lo: float, hi: float, step: float) -> int:
    """Number of grid samples covering [lo, hi] mm with ``step`` mm (at least 1)."""
    return max(1, int(math.ceil((hi - lo) / step)) + 1)


def grid_to_pixel(frame: Frame, spacing: tuple[float, float], a0: float, b1: float,
                  step: float, offset_rc: tuple[int, int]) -> np.ndarray:
    """float64 [2, 3] affine map from grid (i, j) to (col, row) pixel coordinates of a region
    whose pixel (0, 0) is image pixel ``offset_rc``: grid sample ``[j, i]`` lies at
    ``a = a0 + i * step``, ``b = b1 - j * step`` mm in ``frame`` (``cv2.WARP_INVERSE_MAP``)."""
    sr, sc = spacing
    # Python floats: the same IEEE operations as numpy's on the 2-vectors, a tenth the cost.
    (u0, u1), (v0, v1), (o0, o1) = frame.u.tolist(), frame.v.tolist(), frame.origin.tolist()
    p0x = o0 + a0 * u0 + b1 * v0
    p0y = o1 + a0 * u1 + b1 * v1
    return np.array([
        [step * u0 / sc, -step * v0 / sc, p0x / sc - offset_rc[1]],
        [step * u1 / sr, -step * v1 / sr, p0y / sr - offset_rc[0]],
    ], np.float64)


def warp(image: np.ndarray, m: np.ndarray, size_wh: tuple[int, int], interpolation: int,
         dst: Optional[np.ndarray] = None) -> np.ndarray:
    """``cv2.warpAffine`` with an inverse map ``m`` (``grid_to_pixel``); outside reads 0.
    ``dst``: optional C-contiguous [h, w] array of ``image``'s dtype to write into."""
    return cv2.warpAffine(image, m, size_wh, dst=dst, flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def sample_in_frame(image: np.ndarray, frame: Frame, spacing: tuple[float, float],
                    a_range: tuple[float, float], b_range: tuple[float, float], step: float,
                    offset_rc: tuple[int, int] = (0, 0),
                    interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, float, float]:
    """Resamples ``image`` on the grid a in a_range, b in b_range (mm) of ``frame``.

    Args:
        image: float32 [h, w] (a region of interest whose pixel (0, 0) is image pixel
            ``offset_rc``), or uint8.
        frame, spacing: the frame and the (row, col) pixel spacing in mm.
        a_range, b_range: (min, max) mm along ``u`` and ``v``.
        step: grid step in mm.

    Returns:
        (samples [nb, na] same dtype as ``image``, a0, b1): sample ``[j, i]`` is at
        ``a = a0 + i * step``, ``b = b1 - j * step``; outside the image reads 0.
    """
    na = grid_size(a_range[0], a_range[1], step)
    nb = grid_size(b_range[0], b_range[1], step)
    a0, b1 = float(a_range[0]), float(b_range[1])
    m = grid_to_pixel(frame, spacing, a0, b1, step, offset_rc)
    return warp(image, m, (na, nb), interpolation), a0, b1
