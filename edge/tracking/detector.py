"""BlazeFace (short range) face detector: letterbox, run, decode, weighted NMS.

Decoding follows MediaPipe's TensorsToDetectionsCalculator with the options of
``face_detection_short_range``: 16 values per anchor (box centre offset, box
size, 6 keypoints x/y), all in input pixels (scale 128) relative to the
anchor; scores are sigmoid(logit) with the logit clipped to +-100; then
MediaPipe's weighted non-maximum suppression (IoU > 0.3 joins a cluster whose
box and keypoints are the score-weighted mean; the cluster keeps its best score).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.tracking.anchors import ssd_anchors
from edge.tracking.runtime import ModelRunner

NUM_KEYPOINTS = 6
# BlazeFace keypoint order. "right"/"left" are the subject's: the right eye is on the image's left.
KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth",
    "right_ear_tragion",
    "left_ear_tragion",
)
SCORE_CLIP = 100.0


@dataclass
class Detection:
    """One face found by the detector, in full-image pixels (pixel centres at integers)."""

    score: float
    box: np.ndarray  # (4,) x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2) x, y

    @property
    def size_px(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def centre_px(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square input: ``tensor = image * scale + offset``.

    Both in continuous pixel coordinates (a pixel's centre at i + 0.5).
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_image_px(self, xy_tensor: np.ndarray) -> np.ndarray:
        """Continuous tensor pixels (..., 2) to full-image pixels (pixel centres at integers)."""
        xy = np.asarray(xy_tensor, dtype=np.float64)
        x = (xy[..., 0] - self.offset_x) / self.scale_x - 0.5
        y = (xy[..., 1] - self.offset_y) / self.scale_y - 0.5
        return np.stack([x, y], axis=-1)


def letterbox(
    image: np.ndarray, size: int, value_range: tuple[float, float], bgr: bool = False
) -> tuple[np.ndarray, Letterbox]:
    """Fit an HxWx3 uint8 image into a (1, size, size, 3) float32 RGB tensor, keeping its aspect.

    The image is shrunk with area averaging (no aliasing) and centred on a
    black border (as MediaPipe pads); pixel values are mapped linearly from
    [0, 255] to ``value_range``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    scale = size / max(w, h)
    new_w = min(size, max(1, round(w * scale)))
    new_h = min(size, max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(image, (new_w, new_h), interpolation=interp)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    if bgr:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = small
    lo, hi = value_range
    tensor = canvas.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    return tensor[None], Letterbox(new_w / w, new_h / h, float(pad_x), float(pad_y))


def sigmoid(logits: np.ndarray, clip: float = SCORE_CLIP) -> np.ndarray:
    """Logistic function with the logit clipped to +-``clip`` (no overflow warnings)."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -clip, clip)))


def sigmoid_of(logit: float, clip: float = SCORE_CLIP) -> float:
    """:func:`sigmoid` of one logit, the same value as a float.

    Without numpy's array calls (np.clip alone costs more than the rest); numpy's exp,
    not math.exp, which differs in the last bit.
    """
    return 1.0 / (1.0 + float(np.exp(-min(max(logit, -clip), clip))))


def decode_boxes(
    raw: np.ndarray, anchors: np.ndarray, input_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Decode (N, 16) regressors into boxes (N, 4: x0, y0, x1, y1) and keypoints (N, 6, 2).

    Output is in continuous tensor pixels (0..input_size). ``anchors`` are (N, 2)
    normalised centres of fixed-size (1x1) anchors.
    """
    raw = np.asarray(raw, dtype=np.float32).reshape(-1, 4 + 2 * NUM_KEYPOINTS)
    if raw.shape[0] != anchors.shape[0]:
        raise ValueError(f"{raw.shape[0]} regressors for {anchors.shape[0]} anchors")
    centre = anchors * input_size
    cx = raw[:, 0] + centre[:, 0]
    cy = raw[:, 1] + centre[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + centre[:, None, :]
    return boxes, keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (4,) box with (N, 4) boxes (x0, y0, x1, y1)."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression (NonMaxSuppressionCalculator, WEIGHTED).

    Candidates in descending score; each cluster (the best remaining candidate
    and all with IoU above the threshold) becomes one detection whose box and
    keypoints are the score-weighted mean and whose score is the best one.
    Returns (score, box, keypoints) tuples, best first.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        overlap = iou(boxes[order[0]], boxes[order])
        members = order[overlap > iou_threshold]
        if members.size == 0:  # a degenerate (zero-area) box overlaps nothing, not even itself
            members = order[:1]
        w = scores[members] / scores[members].sum()
        box = (boxes[members] * w[:, None]).sum(axis=0)
        kps = (keypoints[members] * w[:, None, None]).sum(axis=0)
        out.append((float(scores[order[0]]), box, kps))
        order = order[~np.isin(order, members)]
    return out


@dataclass(frozen=True)
class DetectorOutput:
    """The detector model's raw outputs for one image, with the letterbox they are in."""

    outputs: list[np.ndarray]
    letterbox: Letterbox


class FaceDetector:
    """Finds faces in an image with BlazeFace (short range). Stateless."""

    def __init__(
        self, model: ModelRunner, score_threshold: float = 0.5, iou_threshold: float = 0.3
    ) -> None:
        if model.spec.height != model.spec.width:
            raise ValueError(f"detector input must be square, got {model.spec.shape}")
        self.model = model
        self.size = model.spec.width
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.anchors = ssd_anchors(self.size)

    def detect(self, image: np.ndarray, bgr: bool = False) -> list[Detection]:
        """Faces in an HxWx3 uint8 image (RGB, or BGR when ``bgr``), best first.

        Boxes and keypoints are in full-image pixels; they may extend past the
        image border for faces cut by it.
        """
        return self.decode(self.infer(image, bgr))

    def infer(self, image: np.ndarray, bgr: bool = False) -> DetectorOutput:
        """The first half of :meth:`detect`: the image letterboxed and through the model
        (mostly without the interpreter lock, so a thread of its own can run it)."""
        tensor, lb = letterbox(image, self.size, self.model.spec.value_range, bgr=bgr)
        return DetectorOutput(self.model.run(tensor), lb)

    def decode(self, inferred: DetectorOutput) -> list[Detection]:
        """The second half of :meth:`detect`: scores, boxes and weighted NMS."""
        lb = inferred.letterbox
        regressors, logits = _split_outputs(inferred.outputs, self.anchors.shape[0])
        scores = sigmoid(logits)
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        boxes, kps = decode_boxes(regressors[keep], self.anchors[keep], self.size)
        detections = []
        for score, box, kp in weighted_nms(boxes, kps, scores[keep], self.iou_threshold):
            corners = lb.to_image_px(box.reshape(2, 2)).reshape(4)
            detections.append(Detection(score, corners, lb.to_image_px(kp)))
        return detections


def _split_outputs(outputs: list[np.ndarray], n_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Find the (N, 16) regressors and (N,) score logits among the outputs, whatever their order."""
    regressors = logits = None
    for out in outputs:
        if out.size == n_anchors * (4 + 2 * NUM_KEYPOINTS):
            regressors = out.reshape(n_anchors, -1)
        elif out.size == n_anchors:
            logits = out.reshape(n_anchors).astype(np.float64)
    if regressors is None or logits is None:
        shapes = [o.shape for o in outputs]
        raise ValueError(f"detector outputs {shapes} are not BlazeFace's ({n_anchors} anchors)")
    return regressors, logits
