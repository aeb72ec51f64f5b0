"""The patient's velocity from the recent current poses, for prediction to display time.

A headset renders some milliseconds after the frame's capture; with the
pose's velocity it extrapolates the pose to its own display time
(:mod:`edge.transport.prediction`, docs/protocol.md). The velocity is a
least-squares fit over the last ``frames`` TRACKING poses on the camera
clock (``Frame.capture_s``): two frames give the finite difference, more
frames average the registration's frame-to-frame noise at the cost of lag
when the motion changes (``edge bench`` reports the prediction error that
results, ``prediction_error_mm``).
"""

from __future__ import annotations

import math

import numpy as np

from edge.errors import StateError
from edge.jit import kernel
from edge.transport.prediction import PoseVelocity

# A gap longer than this between current poses starts the history again (the
# motion before it says nothing about the motion after it).
MAX_GAP_S = 0.25
# Faster than a head moves: the poses jumped (a re-initialisation), no velocity.
MAX_LINEAR_M_S = 1.0
MAX_ANGULAR_RAD_S = 2.0 * math.pi


@kernel("Tuple((float64[::1], float64[::1]))(float64[::1], float64[:, :, ::1], float64[:, ::1])")
def _fit(times, rotations, points):
    """Least-squares slopes over time of the point and of each rotation from the last one
    (as a rotation vector, camera frame): (linear m/s, angular rad/s)."""
    n = times.shape[0]
    last = rotations[n - 1]
    centred = times - times[n - 1]
    centred -= centred.mean()
    spread = 0.0
    for i in range(n):
        spread += centred[i] * centred[i]
    turns = np.zeros((n, 3))
    for i in range(n - 1):
        r = np.zeros((3, 3))  # rotations[i] @ last.T
        for a in range(3):
            for b in range(3):
                for k in range(3):
                    r[a, b] += rotations[i, a, k] * last[b, k]
        cosine = (r[0, 0] + r[1, 1] + r[2, 2] - 1.0) / 2.0
        cosine = -1.0 if cosine < -1.0 else (1.0 if cosine > 1.0 else cosine)
        angle = np.arccos(cosine)
        if angle > 1e-9:  # else no turn (its axis is undefined)
            scale = angle / (2.0 * np.sin(angle))
            turns[i, 0] = (r[2, 1] - r[1, 2]) * scale
            turns[i, 1] = (r[0, 2] - r[2, 0]) * scale
            turns[i, 2] = (r[1, 0] - r[0, 1]) * scale
    linear = np.zeros(3)
    angular = np.zeros(3)
    for c in range(3):
        point_mean = points[:, c].mean()
        turn_mean = turns[:, c].mean()
        for i in range(n):
            linear[c] += centred[i] * (points[i, c] - point_mean)
            angular[c] += centred[i] * (turns[i, c] - turn_mean)
    return linear / spread, angular / spread


class VelocityEstimator:
    """Velocity of the current pose from the last ``frames`` current poses.

    ``point_patient_m`` is the point whose linear velocity is given (the
    targets' centroid, where the prediction matters), in the plan's frame.
    The history is kept in arrays and fitted by one compiled kernel.
    """

    def __init__(self, frames: int, point_patient_m: np.ndarray) -> None:
        if frames < 2:
            raise StateError(f"a velocity needs at least 2 frames, got {frames}", "set >= 2")
        self.frames = frames
        self.point_patient_m = np.asarray(point_patient_m, dtype=np.float64).reshape(3)
        # Per current pose, oldest first: capture time, rotation, the point in the camera.
        self._times = np.zeros(frames)
        self._rotations = np.zeros((frames, 3, 3))
        self._points = np.zeros((frames, 3))
        self._count = 0

    def reset(self) -> None:
        self._count = 0

    def update(self, capture_s: float, patient_to_camera: np.ndarray | None) -> PoseVelocity | None:
        """Account for one frame's pose (None: not current) and return its velocity.

        None when the pose is not current, is the first after a gap, or the
        fit is faster than a head moves.
        """
        if patient_to_camera is None:
            self._count = 0
            return None
        n = self._count
        if n and not 0.0 < capture_s - self._times[n - 1] <= MAX_GAP_S:
            n = 0
        if n == self.frames:  # drop the oldest
            self._times[:-1] = self._times[1:]
            self._rotations[:-1] = self._rotations[1:]
            self._points[:-1] = self._points[1:]
            n -= 1
        pose = np.asarray(patient_to_camera, dtype=np.float64)
        self._times[n] = capture_s
        self._rotations[n] = pose[:3, :3]
        self._points[n] = pose[:3, :3] @ self.point_patient_m + pose[:3, 3]
        self._count = n = n + 1
        if n < 2:
            return None
        linear, angular = _fit(self._times[:n], self._rotations[:n], self._points[:n])
        # The norms as np.linalg.norm takes them (sqrt of the dot), without its overhead.
        if (
            math.sqrt(linear.dot(linear)) > MAX_LINEAR_M_S
            or math.sqrt(angular.dot(angular)) > MAX_ANGULAR_RAD_S
        ):
            return None
        return PoseVelocity(self._points[n - 1].copy(), linear, angular)
