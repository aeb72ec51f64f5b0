"""What the tracking stage hands to registration (the contract between the two)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """One tracked face in one frame.

    Pixel coordinates are in the full color image. ``landmarks_px[:, 2]`` is the
    model's own z (same pixel scale as x, y; relative only, never metric).
    ``landmarks_camera_m`` holds the landmarks lifted with the aligned depth, in
    metres in the camera frame; rows where ``landmarks_valid`` is False are NaN.
    """

    score: float  # detector score (sigmoid) or, when tracked from landmarks, face presence
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # (6, 2) BlazeFace keypoints in pixels (eyes, nose, mouth, ears)
    landmarks_px: np.ndarray  # (468, 3)
    presence: float  # face-presence probability from the landmark model
    landmarks_camera_m: np.ndarray | None = None  # (468, 3), NaN where invalid
    landmarks_valid: np.ndarray | None = None  # (468,) bool


@dataclass
class TrackingResult:
    """The tracking stage's output for one frame.

    ``patient`` is the face chosen as the patient's (see the tracker's rule),
    or None when no face is tracked. ``mode`` says whether the detector ran
    this frame (``detect``) or the crop came from the previous landmarks
    (``track``). ``landmark_model_ms`` is the landmark model's inference time
    for each crop it ran on this frame (usually one; two when a tracked crop
    lost the face and a fresh detection was tried).
    """

    faces: list[Face] = field(default_factory=list)
    patient: Face | None = None
    mode: str = "detect"
    landmark_model_ms: list[float] = field(default_factory=list)
