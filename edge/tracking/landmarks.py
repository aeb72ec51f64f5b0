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

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge.frames import LANDMARK_COUNT
from edge.jit import kernel
from edge.tracking.detector import Detection, sigmoid_of
from edge.tracking.runtime import ModelRunner

RIGHT_EYE_OUTER = 33  # subject's right eye, on the image's left
LEFT_EYE_OUTER = 263
ROI_SCALE = 1.5


@kernel(
    "Tuple((float64, float64, float64, float64, int64, boolean))"
    "(Array(float64, 2, 'A', readonly=True), float64)"
)
def _bounds(xy, divisor):
    """Box of ``xy[:, :2] / divisor``: x and y minima, maxima (NaN propagates, as numpy's
    min and max), the rows with a coordinate outside [0, 1], whether all are finite."""
    lo0 = lo1 = np.inf
    hi0 = hi1 = -np.inf
    outside = 0
    finite = True
    for i in range(xy.shape[0]):
        x, y = xy[i, 0] / divisor, xy[i, 1] / divisor
        finite = finite and np.isfinite(x) and np.isfinite(y)
        lo0 = x if x < lo0 or np.isnan(x) else lo0
        hi0 = x if x > hi0 or np.isnan(x) else hi0
        lo1 = y if y < lo1 or np.isnan(y) else lo1
        hi1 = y if y > hi1 or np.isnan(y) else hi1
        if x < 0 or x > 1 or y < 0 or y > 1:
            outside += 1
    return lo0, lo1, hi0, hi1, outside, finite


@kernel("void(uint8[:, :, ::1], boolean, float32, float32, float32[:, :, ::1])")
def _normalise(patch, bgr, scale, offset, out):
    """``out = patch * scale + offset`` in float32, RGB (channels reversed when ``bgr``)."""
    src, dst = patch.reshape(-1), out.reshape(-1)
    if bgr:
        for pixel in range(src.shape[0] // 3):
            i = 3 * pixel
            dst[i] = np.float32(src[i + 2]) * scale + offset
            dst[i + 1] = np.float32(src[i + 1]) * scale + offset
            dst[i + 2] = np.float32(src[i]) * scale + offset
    else:
        for i in range(src.shape[0]):  # one flat loop: the compiler vectorises it
            dst[i] = np.float32(src[i]) * scale + offset


@kernel(
    "void(Array(float32, 1, 'C', readonly=True), float64[:, ::1], float64, float64[:, ::1],"
    " float64[:, ::1])"
)
def _decode(raw, m, z_scale, landmarks, crop_xy):
    """The model's (468 x 3) crop-pixel output to image pixels through the crop's affine
    ``m`` (continuous crop coordinates are crop pixels + 0.5); z scaled to image pixels."""
    for i in range(crop_xy.shape[0]):
        cx, cy = np.float64(raw[3 * i]), np.float64(raw[3 * i + 1])
        crop_xy[i, 0], crop_xy[i, 1] = cx, cy
        u, v = cx - 0.5, cy - 0.5
        landmarks[i, 0] = u * m[0, 0] + v * m[0, 1] + m[0, 2]
        landmarks[i, 1] = u * m[1, 0] + v * m[1, 1] + m[1, 2]
        landmarks[i, 2] = np.float64(raw[3 * i + 2]) * z_scale


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
        # Scalar arithmetic: numpy's calls on 2-vectors cost more than the sums (once a frame).
        k = self.size_px / crop_size
        a, b = math.cos(self.angle_rad) * k, math.sin(self.angle_rad) * k
        # Crop pixel u has continuous coordinate u + 0.5; the crop centre is crop_size / 2.
        h = 0.5 - crop_size / 2
        return np.array(
            [[a, -b, self.centre_x + (a * h - b * h)], [b, a, self.centre_y + (b * h + a * h)]]
        )


def _angle(start_xy: np.ndarray, end_xy: np.ndarray) -> float:
    # Float arithmetic, not 2-vectors (the same differences); numpy's arctan2, not
    # math.atan2, which differs in the last bit.
    dx = float(end_xy[0]) - float(start_xy[0])
    dy = float(end_xy[1]) - float(start_xy[1])
    return float(np.arctan2(dy, dx))


def roi_from_detection(det: Detection, scale: float = ROI_SCALE) -> Roi:
    """The landmark crop for a fresh detection (rotation from the two eye keypoints)."""
    cx, cy = det.centre_px
    return Roi(
        float(cx), float(cy), det.size_px * scale, _angle(det.keypoints[0], det.keypoints[1])
    )


def roi_from_landmarks(landmarks_px: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """The landmark crop for the next frame from this frame's (468, 2+) landmarks."""
    xy = np.asarray(landmarks_px, dtype=np.float64)
    lo0, lo1, hi0, hi1, _, _ = _bounds(xy, 1.0)
    return Roi(
        (lo0 + hi0) / 2,
        (lo1 + hi1) / 2,
        max(hi0 - lo0, hi1 - lo1) * scale,
        _angle(xy[RIGHT_EYE_OUTER, :2], xy[LEFT_EYE_OUTER, :2]),
    )


def landmark_box(landmarks_px: np.ndarray) -> np.ndarray:
    """The axis-aligned box (x0, y0, x1, y1) of (N, 2+) landmarks."""
    lo0, lo1, hi0, hi1, _, _ = _bounds(np.asarray(landmarks_px, dtype=np.float64), 1.0)
    return np.array([lo0, lo1, hi0, hi1])


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
    xy = np.asarray(crop_xy, dtype=np.float64)
    lo0, lo1, hi0, hi1, outside_rows, finite = _bounds(xy, float(crop_size))
    if not finite:
        return CropCheck(np.inf, 0.0, 1.0, False, "landmarks are not finite")
    drift = float(np.hypot((lo0 + hi0) / 2 - 0.5, (lo1 + hi1) / 2 - 0.5))
    extent = max(hi0 - lo0, hi1 - lo1)
    outside = outside_rows / len(xy)
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
        # Reused by every crop: the warped patch and the model's input tensor.
        self._patch = np.empty((self.size, self.size, 3), dtype=np.uint8)
        self._input = np.empty((1, self.size, self.size, 3), dtype=np.float32)

    def crop(self, image: np.ndarray, roi: Roi, bgr: bool = False) -> np.ndarray:
        """The (1, size, size, 3) float32 RGB input tensor for ``roi`` (borders replicate).

        The tensor is this model's buffer, overwritten by the next crop.
        """
        return self._crop(image, roi.crop_to_image(self.size), bgr)

    def _crop(self, image: np.ndarray, crop_to_image: np.ndarray, bgr: bool) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
        patch = cv2.warpAffine(
            image,
            crop_to_image,
            (self.size, self.size),
            dst=self._patch,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        lo, hi = self.model.spec.value_range
        _normalise(patch, bgr, np.float32((hi - lo) / 255.0), np.float32(lo), self._input[0])
        return self._input

    def run(self, image: np.ndarray, roi: Roi, bgr: bool = False) -> LandmarkOutput:
        """Landmarks and face presence for the crop ``roi`` of an HxWx3 uint8 image."""
        m = roi.crop_to_image(self.size)
        x = self._crop(image, m, bgr)
        start = time.perf_counter()
        outputs = self.model.run(x)
        inference_ms = (time.perf_counter() - start) * 1000.0
        raw = flag = None
        for out in outputs:
            if out.size == LANDMARK_COUNT * 3:
                raw = np.ascontiguousarray(out, dtype=np.float32).reshape(-1)
            elif out.size == 1:
                flag = float(out.reshape(()))
        if raw is None or flag is None:
            raise ValueError(f"landmark outputs {[o.shape for o in outputs]} are not 468x3 + 1")
        landmarks = np.empty((LANDMARK_COUNT, 3))
        crop_xy = np.empty((LANDMARK_COUNT, 2))
        _decode(raw, m, roi.size_px / self.size, landmarks, crop_xy)
        presence = sigmoid_of(flag)
        return LandmarkOutput(landmarks, crop_xy, presence, roi, inference_ms)
