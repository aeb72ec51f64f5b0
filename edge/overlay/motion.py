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
from collections import deque

import numpy as np

from edge import geometry
from edge.errors import StateError
from edge.transport.prediction import PoseVelocity

# A gap longer than this between current poses starts the history again (the
# motion before it says nothing about the motion after it).
MAX_GAP_S = 0.25
# Faster than a head moves: the poses jumped (a re-initialisation), no velocity.
MAX_LINEAR_M_S = 1.0
MAX_ANGULAR_RAD_S = 2.0 * math.pi


class VelocityEstimator:
    """Velocity of the current pose from the last ``frames`` current poses.

    ``point_patient_m`` is the point whose linear velocity is given (the
    targets' centroid, where the prediction matters), in the plan's frame.
    """

    def __init__(self, frames: int, point_patient_m: np.ndarray) -> None:
        if frames < 2:
            raise StateError(f"a velocity needs at least 2 frames, got {frames}", "set >= 2")
        self.frames = frames
        self.point_patient_m = np.asarray(point_patient_m, dtype=np.float64).reshape(3)
        # (capture time, pose, the point in the camera frame) per current pose.
        self._history: deque[tuple[float, np.ndarray, np.ndarray]] = deque(maxlen=frames)

    def reset(self) -> None:
        self._history.clear()

    def update(self, capture_s: float, patient_to_camera: np.ndarray | None) -> PoseVelocity | None:
        """Account for one frame's pose (None: not current) and return its velocity.

        None when the pose is not current, is the first after a gap, or the
        fit is faster than a head moves.
        """
        if patient_to_camera is None:
            self._history.clear()
            return None
        if self._history and not 0.0 < capture_s - self._history[-1][0] <= MAX_GAP_S:
            self._history.clear()
        pose = np.asarray(patient_to_camera, dtype=np.float64)
        self._history.append((capture_s, pose, pose[:3, :3] @ self.point_patient_m + pose[:3, 3]))
        if len(self._history) < 2:
            return None
        return self._fit()

    def _fit(self) -> PoseVelocity | None:
        t_last, last, _ = self._history[-1]
        tau = np.array([t for t, _, _ in self._history]) - t_last
        points = np.stack([x for _, _, x in self._history])
        # Rotation of each pose from the last, as a rotation vector (camera frame).
        turns = np.zeros((len(tau), 3))
        for i, (_, pose, _) in enumerate(list(self._history)[:-1]):
            axis, angle = geometry.matrix_to_axis_angle(pose[:3, :3] @ last[:3, :3].T)
            turns[i] = axis * angle
        centred = tau - tau.mean()
        spread = float(centred @ centred)
        linear = centred @ (points - points.mean(axis=0)) / spread
        angular = centred @ (turns - turns.mean(axis=0)) / spread
        if np.linalg.norm(linear) > MAX_LINEAR_M_S or np.linalg.norm(angular) > MAX_ANGULAR_RAD_S:
            return None
        return PoseVelocity(points[-1], linear, angular)
