"""Non-rigid lower face: the jaw opening and a smile, on a rigid skull.

The plan is the neutral face and the ground truth is the skull's pose; these
move the skin of the lower face against both, as a patient's does under a
light sedation or when talking:

* **Jaw opening**: the mandible turns about the temporomandibular joints (an
  axis along face-frame x, ~25 mm below and ~80 mm behind the nasion, near
  the tragus) by the angle that moves the chin (landmark 152) by ``jaw_m``.
  Skin below the mouth corners follows it fully; between them and 12 mm
  above it blends to nothing (the cheeks stretch), and laterally it fades
  beyond the mandible's width (75 mm from the midline).
* **Smile**: each mouth corner (landmarks 61 and 291) moves ``smile_m``
  outwards and upwards, the cheeks under the eyes (landmarks 50 and 280) half
  of it forwards, each fading smoothly to nothing 30 and 35 mm away.

Everything is in the face frame (x subject's left, y down, z posterior;
face.py), metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.sources.phantom.face import CHIN, NASION_TO_HEAD_CENTRE_M

MOUTH_CORNERS = (61, 291)  # right, left cheilion
CHEEKS = (50, 280)
JAW_HINGE_BELOW_NASION_M = 0.025
JAW_HINGE_BEHIND_NASION_M = 0.080
JAW_BLEND_M = 0.012  # above the mouth corners, the skin's share of the jaw motion fades
MANDIBLE_HALF_WIDTH_M = 0.075
SMILE_RADIUS_M = 0.030
CHEEK_RADIUS_M = 0.035


def _bump(points_m: np.ndarray, centre_m: np.ndarray, radius_m: float) -> np.ndarray:
    """(1 - (d / radius)^2)^2 within ``radius`` of ``centre``, else 0: smooth, compact."""
    q = ((points_m - centre_m) ** 2).sum(axis=1) / radius_m**2
    return np.where(q < 1.0, (1.0 - q) ** 2, 0.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class LowerFace:
    """The lower face's rest geometry, from the face's landmarks (face frame, metres)."""

    hinge_m: np.ndarray  # a point on the jaw's axis (parallel to x)
    chin_m: np.ndarray
    mouth_y_m: float
    corners_m: np.ndarray  # (2, 3) right, left
    cheeks_m: np.ndarray  # (2, 3)

    @classmethod
    def of(cls, landmarks_m: np.ndarray) -> LowerFace:
        lm = np.asarray(landmarks_m, dtype=np.float64)
        hinge = np.array(
            [0.0, JAW_HINGE_BELOW_NASION_M, JAW_HINGE_BEHIND_NASION_M - NASION_TO_HEAD_CENTRE_M]
        )
        corners = lm[list(MOUTH_CORNERS)]
        return cls(hinge, lm[CHIN].copy(), float(corners[:, 1].mean()), corners, lm[list(CHEEKS)])

    def jaw_angle_rad(self, jaw_m: float) -> float:
        """The mandible's rotation that moves the chin by ``jaw_m`` (arc length)."""
        r = float(np.hypot(*(self.chin_m - self.hinge_m)[1:]))
        return jaw_m / r

    def jaw_weight(self, points_m: np.ndarray) -> np.ndarray:
        """(N,) share of the mandible's motion each point follows (0..1)."""
        p = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
        below = _smoothstep((p[:, 1] - (self.mouth_y_m - JAW_BLEND_M)) / JAW_BLEND_M)
        width = _smoothstep((MANDIBLE_HALF_WIDTH_M - np.abs(p[:, 0])) / 0.02)
        front = _smoothstep((self.hinge_m[2] - p[:, 2]) / 0.02)
        return below * width * front

    def displacement_m(self, points_m: np.ndarray, jaw_m: float, smile_m: float) -> np.ndarray:
        """(N, 3) displacement of face-frame points by the jaw opening and the smile."""
        p = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
        out = np.zeros_like(p)
        if jaw_m:
            angle = self.jaw_angle_rad(jaw_m) * self.jaw_weight(p)
            rel = p[:, 1:] - self.hinge_m[1:]
            c, s = np.cos(angle), np.sin(angle)
            # Opening turns the chin down (+y) and back (+z): y' = c y - s z, z' = s y + c z.
            out[:, 1] = c * rel[:, 0] - s * rel[:, 1] - rel[:, 0]
            out[:, 2] = s * rel[:, 0] + c * rel[:, 1] - rel[:, 1]
        if smile_m:
            for corner, side in zip(self.corners_m, (-1.0, 1.0), strict=True):
                g = _bump(p, corner, SMILE_RADIUS_M)
                out += (g * smile_m)[:, None] * np.array([0.6 * side, -0.8, 0.0])
            for cheek in self.cheeks_m:
                out[:, 2] -= _bump(p, cheek, CHEEK_RADIUS_M) * 0.5 * smile_m
        return out

    def moving(self, points_m: np.ndarray) -> np.ndarray:
        """(N,) which points a jaw opening or a smile moves at all."""
        p = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
        near = np.zeros(len(p), bool)
        for c in self.corners_m:
            near |= _bump(p, c, SMILE_RADIUS_M) > 0
        for c in self.cheeks_m:
            near |= _bump(p, c, CHEEK_RADIUS_M) > 0
        return near | (self.jaw_weight(p) > 0)


def lower_face_motion(
    frames: int, fps: float, jaw_m: float, smile_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (jaw opening at the chin, smile at the mouth corners), metres.

    The jaw opens and closes every 3 s (as in speech or a yawn, slowed), the smile
    comes and goes every 5 s; both start at rest, so the first frames show the
    neutral face the plan was made from.
    """
    t_s = np.arange(frames) / fps
    jaw = jaw_m * 0.5 * (1.0 - np.cos(2 * np.pi * t_s / 3.0))
    smile = smile_m * 0.5 * (1.0 - np.cos(2 * np.pi * t_s / 5.0))
    return jaw, smile
