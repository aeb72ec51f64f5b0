"""Pose prediction to display time: the overlay's velocity and how a client extrapolates.

A current overlay (TRACKING) carries, with its pose, the patient's rigid
motion at the frame's capture (docs/protocol.md, "Pose prediction"): the
angular velocity ``w`` (rad/s, camera frame) and the linear velocity ``v``
(m/s, camera frame) of one point ``c`` (camera frame, metres, at capture;
the centroid of the plan's targets). Over a horizon ``dt`` seconds after
capture, a point ``p`` of the patient (camera frame, at capture) moves to::

    p(dt) = c + v dt + exp([w] dt) (p - c)

i.e. the patient turns at ``w`` about ``c`` while ``c`` moves at ``v``, and
``patient_to_camera(dt) = M(dt) @ patient_to_camera`` with ``M(dt)`` that
motion as a 4x4 transform. Headset runtimes predict their own pose to the
display time the same way (constant velocity over tens of milliseconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge import geometry
from edge.errors import DecodeError

# The overlay's velocity arrays (each <f8 [3], camera frame), present together or not at all.
VELOCITY_POINT = "velocity_point_camera_m"
LINEAR_VELOCITY = "linear_velocity_m_s"
ANGULAR_VELOCITY = "angular_velocity_rad_s"
VELOCITY_ARRAYS = (VELOCITY_POINT, LINEAR_VELOCITY, ANGULAR_VELOCITY)


@dataclass(frozen=True)
class PoseVelocity:
    """Rigid motion of the patient at a capture: ``angular_rad_s`` about ``point_camera_m``,
    which moves at ``linear_m_s`` (all (3,) in the camera frame)."""

    point_camera_m: np.ndarray
    linear_m_s: np.ndarray
    angular_rad_s: np.ndarray

    def motion(self, dt_s: float) -> np.ndarray:
        """The 4x4 camera-frame motion ``M`` over ``dt_s`` seconds: ``p(dt) = M p``."""
        rotation = geometry.rotation_vector_to_matrix(self.angular_rad_s * dt_s)
        out = np.eye(4)
        out[:3, :3] = rotation
        out[:3, 3] = self.point_camera_m + self.linear_m_s * dt_s - rotation @ self.point_camera_m
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            VELOCITY_POINT: np.asarray(self.point_camera_m, dtype=np.float64),
            LINEAR_VELOCITY: np.asarray(self.linear_m_s, dtype=np.float64),
            ANGULAR_VELOCITY: np.asarray(self.angular_rad_s, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PoseVelocity | None:
        """The velocity an overlay message carries, or None when it carries none."""
        if VELOCITY_POINT not in arrays:
            return None
        return cls(*(np.asarray(arrays[n], dtype=np.float64) for n in VELOCITY_ARRAYS))


def predict_pose(patient_to_camera: np.ndarray, velocity: PoseVelocity, dt_s: float) -> np.ndarray:
    """``patient_to_camera`` extrapolated ``dt_s`` seconds past its capture."""
    return velocity.motion(dt_s) @ np.asarray(patient_to_camera, dtype=np.float64)


def predict_points(points_camera_m: np.ndarray, velocity: PoseVelocity, dt_s: float) -> np.ndarray:
    """Camera-frame points (N, 3) of the patient at capture, moved ``dt_s`` seconds on."""
    return geometry.apply(velocity.motion(dt_s), points_camera_m)


def check_velocity_arrays(arrays: dict[str, np.ndarray], current: bool) -> None:
    """The decoder's rule: all three arrays or none, each 3 finite floats, only when current."""
    present = [n for n in VELOCITY_ARRAYS if n in arrays]
    if not present:
        return
    if len(present) != len(VELOCITY_ARRAYS):
        missing = ", ".join(n for n in VELOCITY_ARRAYS if n not in arrays)
        raise DecodeError(f"overlay velocity is incomplete: no array {missing}")
    if not current:
        raise DecodeError("an overlay that is not current must not carry a velocity")
    for name in VELOCITY_ARRAYS:
        a = arrays[name]
        if a.shape != (3,) or a.dtype.kind != "f" or not all(math.isfinite(x) for x in a):
            raise DecodeError(f"overlay array '{name}' must be 3 finite floats")
