"""Rigid-transform helpers against known answers and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from edge import geometry


def _pose(rotvec: list[float], t_m: list[float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    m[:3, 3] = t_m
    return m


def test_apply_maps_points_from_a_to_b() -> None:
    a_to_b = _pose([0, 0, np.pi / 2], [1.0, 0.0, 0.0])  # a quarter turn about z, then 1 m in x
    points_b = geometry.apply(a_to_b, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    assert points_b == pytest.approx(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]]))
    assert geometry.apply(a_to_b, [0.0, 0.0, 0.0]).shape == (1, 3)


def test_invert_undoes_the_transform() -> None:
    a_to_b = _pose([0.3, -0.2, 0.9], [0.01, -0.5, 0.7])
    b_to_a = geometry.invert(a_to_b)
    assert b_to_a @ a_to_b == pytest.approx(np.eye(4))
    assert b_to_a == pytest.approx(np.linalg.inv(a_to_b))
    points = np.random.default_rng(0).normal(size=(5, 3))
    assert geometry.apply(b_to_a, geometry.apply(a_to_b, points)) == pytest.approx(points)


@pytest.mark.parametrize("angle", [0.0, 1e-4, 0.3, 2.0, np.pi])
def test_rotation_angle(angle: float) -> None:
    r = Rotation.from_rotvec([0.0, angle, 0.0]).as_matrix()
    assert geometry.rotation_angle(r) == pytest.approx(angle, abs=1e-7)
    assert geometry.rotation_angle_deg(r) == pytest.approx(np.degrees(angle), abs=1e-5)


def test_rotation_angle_clips_a_trace_above_three() -> None:
    assert geometry.rotation_angle(np.eye(3) * (1 + 1e-12)) == 0.0


def test_rotation_vector_matches_scipy() -> None:
    for v in np.random.default_rng(1).normal(size=(20, 3)):
        expected = Rotation.from_rotvec(v).as_matrix()
        assert geometry.rotation_vector_to_matrix(v) == pytest.approx(expected, abs=1e-12)
    assert np.array_equal(geometry.rotation_vector_to_matrix(np.zeros(3)), np.eye(3))


def test_axis_angle_round_trip() -> None:
    v = np.array([0.2, -0.4, 0.5])
    axis, angle = geometry.matrix_to_axis_angle(Rotation.from_rotvec(v).as_matrix())
    assert angle == pytest.approx(np.linalg.norm(v))
    assert axis == pytest.approx(v / np.linalg.norm(v))
    assert geometry.axis_angle_to_matrix(axis, angle) == pytest.approx(
        Rotation.from_rotvec(v).as_matrix()
    )


def test_axis_of_no_rotation_is_zero_and_gives_the_identity() -> None:
    axis, angle = geometry.matrix_to_axis_angle(np.eye(3))
    assert angle == 0.0 and not axis.any()
    assert np.array_equal(geometry.axis_angle_to_matrix(axis, 0.7), np.eye(3))
