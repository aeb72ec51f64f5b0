"""Rigid transforms, once, for everyone.

A transform is a 4x4 homogeneous matrix named ``a_to_b``: it maps points in
frame a to frame b (``apply(a_to_b, points_a)`` gives ``points_b``). Units are
the caller's (metres throughout the edge). Rotations are 3x3 matrices;
angles are in radians unless the name says ``_deg``.

Angles use the scalar ``math`` functions (the C library), not numpy's ufuncs:
numpy picks a SIMD ``arccos`` by CPU (AVX-512 or not) whose last bit differs
from machine to machine, and a replay must give the same numbers everywhere.
"""

from __future__ import annotations

import math

import numpy as np


def invert(a_to_b: np.ndarray) -> np.ndarray:
    """``b_to_a`` of a rigid 4x4 transform (transpose the rotation; no general inverse)."""
    b_to_a = np.eye(4)
    b_to_a[:3, :3] = a_to_b[:3, :3].T
    b_to_a[:3, 3] = -a_to_b[:3, :3].T @ a_to_b[:3, 3]
    return b_to_a


def apply(a_to_b: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Points (N, 3) in frame a, mapped to frame b: ``p @ R.T + t``, (N, 3) float64.

    A single point (3,) comes back as (1, 3).
    """
    p = np.asarray(points_a, dtype=np.float64).reshape(-1, 3)
    return p @ a_to_b[:3, :3].T + a_to_b[:3, 3]


def rotation_angle(rotation: np.ndarray) -> float:
    """Angle of a 3x3 rotation matrix in radians, [0, pi], from its trace.

    The cosine is clipped to [-1, 1]: rounding puts the trace of a near-identity
    rotation slightly above 3.
    """
    return math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)))


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a 3x3 rotation matrix in degrees, [0, 180] (see :func:`rotation_angle`)."""
    return math.degrees(rotation_angle(rotation))


def skew(v: np.ndarray) -> np.ndarray:
    """The 3x3 cross-product matrix ``[v]x`` (``skew(v) @ w == np.cross(v, w)``)."""
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def axis_angle_to_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (radians) about a unit ``axis`` (Rodrigues' formula).

    A zero axis gives the identity.
    """
    K = skew(axis)
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def rotation_vector_to_matrix(rotation_vector: np.ndarray) -> np.ndarray:
    """Rotation for an axis-angle vector (axis times angle in radians); identity below 1e-12."""
    angle = float(np.linalg.norm(rotation_vector))
    if angle < 1e-12:
        return np.eye(3)
    return axis_angle_to_matrix(rotation_vector / angle, angle)


def matrix_to_axis_angle(rotation: np.ndarray) -> tuple[np.ndarray, float]:
    """(unit axis, angle in radians) of a 3x3 rotation matrix.

    Below 1e-9 rad the axis is undefined and comes back as zeros (so that
    :func:`axis_angle_to_matrix` gives the identity for any angle). The axis
    comes from the skew part, ill-conditioned as the angle nears pi.
    """
    R = rotation
    angle = rotation_angle(R)
    if not angle > 1e-9:
        return np.zeros(3), angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    axis /= 2.0 * math.sin(angle)
    return axis, angle
