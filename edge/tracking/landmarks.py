"""468 face landmarks from a rotated square crop (MediaPipe face mesh model, 192x192).

The crop (a :class:`Roi`) comes either from a detection (box centre, rotation
from the two eye keypoints) or from the previous frame's landmarks (their
axis-aligned bounding box, rotation from the outer eye corners 33 and 263),
made square on its long side and enlarged 1.5x: the rules of MediaPipe's
``face_detection_front_detection_to_roi`` and ``face_landmark_landmarks_to_roi``.

Pixel convention: full-image pixels have their centres at integers; the
model's crop outputs are continuous crop pixels (0..192).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge.frames import LANDMARK_COUNT
from edge.tracking.detector import Detection, sigmoid
from edge.tracking.runtime import ModelRunner

RIGHT_EYE_OUTER = 33  # subject's right eye, on the image's left
LEFT_EYE_OUTER = 263
ROI_SCALE = 1.5


@dataclass(frozen=True)
class Roi:
    """A rotated square in the full image: centre (px), side (px), angle (rad, clockwise on screen).

    The crop's x axis points along ``(cos angle, sin angle)`` in the image (y down).
    """

    centre_x: float
    centre_y: float
    size_px: float
    angle_rad: float

    def crop_to_image(self, crop_size: int) -> np.ndarray:
        """2x3 affine map from crop pixels (centres at integers) to image pixels."""
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        k = self.size_px / crop_size
        rot = np.array([[c, -s], [s, c]]) * k
        # Crop pixel u has continuous coordinate u + 0.5; the crop centre is crop_size / 2.
        t = np.array([self.centre_x, self.centre_y]) + rot @ np.full(2, 0.5 - crop_size / 2)
        return np.hstack([rot, t[:, None]])


def _angle(start_xy: np.ndarray, end_xy: np.ndarray) -> float:
    d = np.asarray(end_xy, dtype=np.float64) - np.asarray(start_xy, dtype=np.float64)
    return float(np.arctan2(d[1], d[0]))


def roi_from_detection(det: Detection, scale: float = ROI_SCALE) -> Roi:
    """The landmark crop for a fresh detection (rotation from the two eye keypoints)."""
    cx, cy = det.centre_px
    return Roi(
        float(cx), float(cy), det.size_px * scale, _angle(det.keypoints[0], det.keypoints[1])
    )


def roi_from_landmarks(landmarks_px: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """The landmark crop for the next frame from this frame's (468, 2+) landmarks."""
    xy = np.asarray(landmarks_px, dtype=np.float64)[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    centre = (lo + hi) / 2
    size = float(max(hi - lo)) * scale
    return Roi(
        float(centre[0]),
        float(centre[1]),
        size,
        _angle(xy[RIGHT_EYE_OUTER], xy[LEFT_EYE_OUTER]),
    )


@dataclass
class LandmarkOutput:
    """The landmark model's answer for one crop.

    ``landmarks_px``: (468, 3) x, y in full-image pixels and the model's z on
    the same pixel scale (relative only). ``crop_xy``: (468, 2) the same
    landmarks in continuous crop pixels, for the consistency check.
    ``inference_ms``: how long the model runner's own call took (the one cost
    of tracking that cannot be avoided; ``edge bench`` divides by it).
    """

    landmarks_px: np.ndarray
    crop_xy: np.ndarray
    presence: float
    roi: Roi
    inference_ms: float = float("nan")


@dataclass(frozen=True)
class CropCheck:
    """Whether the landmarks are consistent with the crop they came from.

    ``drift`` is the distance of the landmarks' box centre from the crop
    centre and ``extent`` the landmarks' box size, both as fractions of the
    crop side; ``outside`` the fraction of landmarks beyond the crop border.
    """

    drift: float
    extent: float
    outside: float
    ok: bool
    reason: str


def check_crop(
    crop_xy: np.ndarray,
    crop_size: int,
    max_drift: float = 0.25,
    extent_range: tuple[float, float] = (0.3, 0.95),
) -> CropCheck:
    """Consistency of landmarks with their crop: a weak presence score needs this second opinion.

    A well-placed crop (1.5x the face) holds the face centred at about 2/3 of
    its side. A face that left the crop gives landmarks piled against a
    border, squeezed or off-centre, even when the presence score stays high.
    """
    xy = np.asarray(crop_xy, dtype=np.float64) / crop_size
    if not np.isfinite(xy).all():
        return CropCheck(np.inf, 0.0, 1.0, False, "landmarks are not finite")
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    drift = float(np.hypot(*((lo + hi) / 2 - 0.5)))
    extent = float(max(hi - lo))
    outside = float(np.mean(((xy < 0) | (xy > 1)).any(axis=1)))
    reason = ""
    if outside > 0.0:
        reason = f"{outside:.0%} of landmarks outside the crop"
    elif drift > max_drift:
        reason = f"landmarks {drift:.2f} of the crop off its centre"
    elif not extent_range[0] <= extent <= extent_range[1]:
        reason = f"landmarks span {extent:.2f} of the crop"
    return CropCheck(drift, extent, outside, not reason, reason)


class LandmarkModel:
    """Runs the 468-landmark model on a rotated square crop of an image."""

    def __init__(self, model: ModelRunner) -> None:
        if model.spec.height != model.spec.width:
            raise ValueError(f"landmark input must be square, got {model.spec.shape}")
        self.model = model
        self.size = model.spec.width

    def crop(self, image: np.ndarray, roi: Roi, bgr: bool = False) -> np.ndarray:
        """The (1, size, size, 3) float32 RGB input tensor for ``roi`` (borders replicate)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
        patch = cv2.warpAffine(
            image,
            roi.crop_to_image(self.size),
            (self.size, self.size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if bgr:
            patch = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)  # a reversed view is 10x slower below
        lo, hi = self.model.spec.value_range
        return (patch.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo))[None]

    def run(self, image: np.ndarray, roi: Roi, bgr: bool = False) -> LandmarkOutput:
        """Landmarks and face presence for the crop ``roi`` of an HxWx3 uint8 image."""
        x = self.crop(image, roi, bgr=bgr)
        start = time.perf_counter()
        outputs = self.model.run(x)
        inference_ms = (time.perf_counter() - start) * 1000.0
        raw = flag = None
        for out in outputs:
            if out.size == LANDMARK_COUNT * 3:
                raw = out.reshape(LANDMARK_COUNT, 3).astype(np.float64)
            elif out.size == 1:
                flag = float(out.reshape(()))
        if raw is None or flag is None:
            raise ValueError(f"landmark outputs {[o.shape for o in outputs]} are not 468x3 + 1")
        crop_xy = raw[:, :2]
        m = roi.crop_to_image(self.size)
        # Continuous crop coordinates are crop pixels + 0.5; undo that before the affine map.
        image_xy = (crop_xy - 0.5) @ m[:, :2].T + m[:, 2]
        z = raw[:, 2:3] * (roi.size_px / self.size)
        landmarks = np.hstack([image_xy, z])
        presence = float(sigmoid(np.array(flag)))
        return LandmarkOutput(landmarks, crop_xy, presence, roi, inference_ms)
