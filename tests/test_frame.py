"""Tests of the one frame convention (spoils_tf.geometry.frame), shared by the measurements,
the synthetic cohort and the test phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from spoils_tf.geometry.frame import Frame, frame_axes, tilt_of, to_world


def test_frame_axes_convention():
    u, v = frame_axes(30.0)
    # posterior end higher: u points right (+x) and up (-y in image rows)
    assert u[0] > 0 and u[1] < 0 and v[1] < 0
    assert tilt_of(u) == pytest.approx(30.0)
    assert float(u @ v) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("tilt", [-40.0, -5.0, 0.0, 12.5, 30.0, 60.0])
def test_frame_from_u_agrees_with_frame_axes(tilt):
    # A measured frame (from a u axis, either sign) and a drawn one (from a tilt) are the same.
    u, v = frame_axes(tilt)
    for sign in (1.0, -1.0):
        fr = Frame.from_u(np.zeros(2), sign * u)
        np.testing.assert_allclose(fr.u, u, atol=1e-15)
        np.testing.assert_allclose(fr.v, v, atol=1e-15)
        assert fr.tilt_deg == pytest.approx(tilt, abs=1e-12)


def test_to_world_and_project_are_inverse_hand_numbers():
    # Tilt 0: u = +x, v = -y; the point 3 mm posterior and 2 mm superior of (10, 20) is
    # (13, 18); projected back into the frame at (10, 20) it reads (3, 2).
    xy = to_world(np.array([[3.0, 2.0]]), np.array([10.0, 20.0]), 0.0)
    np.testing.assert_allclose(xy, [[13.0, 18.0]])
    a, b = Frame.from_u(np.array([10.0, 20.0]), frame_axes(0.0)[0]).project(xy)
    assert (float(a[0]), float(b[0])) == pytest.approx((3.0, 2.0))
