"""The face tracker: detector + landmark model + depth + smoothing, and its pipeline stage.

Tracking loop (as MediaPipe's face mesh runs it): the detector runs only while
no face is tracked; otherwise the landmark crop comes from the previous
frame's landmarks. A tracked face is declared lost when the landmark model's
face presence drops below ``presence_threshold`` *or* the landmarks are not
consistent with their crop (:func:`edge.tracking.landmarks.check_crop`):
presence alone stays high on an off-centre crop. Neither catches a crop that
slipped far off the face (the model then draws a confident face where there
is none), so every ``redetect_interval_frames`` frames the detector runs as a
cross-check (:func:`cross_check`) and the crop is re-anchored when it
disagrees. The cross-check's detector runs in its own thread on that frame's
image while the frame goes on through the pipeline; its verdict on that frame
is taken when the next frame is tracked (a failed one loses the face there),
so no frame waits for the detector. On loss the detector runs again on the
same frame.

Patient rule: the tracker follows one face, the patient's. Among the
detections it picks the one whose box centre is nearest to the last tracked
patient face, if that is closer than one face size; otherwise the largest
face (the patient lies nearest the camera).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import TrackingConfig
from edge.errors import StateError
from edge.frames import LANDMARK_COUNT, Frame, FrameResult, PixelFormat
from edge.jit import kernel
from edge.tracking.depth import DepthSampling, lift_landmarks
from edge.tracking.detector import Detection, DetectorOutput, FaceDetector
from edge.tracking.landmarks import (
    LandmarkModel,
    LandmarkOutput,
    check_crop,
    landmark_box,
    roi_from_detection,
    roi_from_landmarks,
)
from edge.tracking.runtime import RuntimeTrial
from edge.tracking.smoothing import OneEuroFilter
from edge.tracking.types import Face, TrackingResult

log = logging.getLogger(__name__)

# Landmarks standing in for BlazeFace's 6 keypoints when the face is tracked, not detected:
# eye centres (mean of the two corners), nose tip, mouth centre (lip midpoints), ear tragions.
KEYPOINT_LANDMARKS = ((33, 133), (362, 263), (1, 1), (13, 14), (234, 234), (454, 454))
_KEYPOINT_ROWS = np.array(KEYPOINT_LANDMARKS, dtype=np.int64)
_KEYPOINT_MAX = int(_KEYPOINT_ROWS.max())
DETECTOR_MODEL = "face_detector"
LANDMARK_MODEL = "face_landmarks"


class TrackerState(str, enum.Enum):
    """The face tracker's own lifecycle (not the registration state shown to the surgeon)."""

    SEARCHING = "searching"  # no face: the next frame runs the detector
    FOLLOWING = "following"  # a face: the next frame crops from its landmarks
    CLOSED = "closed"  # models released; no more frames


@dataclass
class _Patient:
    """What the tracker remembers of the patient's face between frames."""

    centre_px: np.ndarray
    size_px: float


def choose_patient(
    detections: list[Detection], previous: _Patient | None
) -> tuple[Detection | None, bool]:
    """The patient's face among detections (see the module rule) and whether it is the same face.

    Returns (None, False) when there are no detections.
    """
    if not detections:
        return None, False
    if previous is not None:
        dist = [float(np.hypot(*(d.centre_px - previous.centre_px))) for d in detections]
        best = int(np.argmin(dist))
        if dist[best] <= previous.size_px:
            return detections[best], True
    areas = [(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in detections]
    return detections[int(np.argmax(areas))], False


def cross_check(detections: list[Detection], tracked_box: np.ndarray) -> str:
    """Why the detector disagrees with the tracked landmarks, or "" when it does not.

    A landmark crop that slipped off the face still yields a centred, confident
    face (the model fills the crop with one): only an independent detection
    shows the slip. Disagreement means a detection within one face size of the
    tracked face whose centre is more than a quarter face size away. No
    detection near the face (a detector miss, or other people) is no evidence.
    """
    if not detections:
        return ""
    centre = (tracked_box[:2] + tracked_box[2:]) / 2
    size = float(max(tracked_box[2:] - tracked_box[:2]))
    dist = min(float(np.hypot(*(d.centre_px - centre))) for d in detections)
    if 0.25 * size < dist <= size:
        return f"the detector sees the face {dist:.0f} px from the tracked landmarks"
    return ""


def keypoints_from_landmarks(landmarks_px: np.ndarray) -> np.ndarray:
    """BlazeFace-style (6, 2) keypoints computed from 468 landmarks."""
    xy = np.asarray(landmarks_px)
    if xy.dtype == np.float64 and xy.ndim == 2 and xy.shape[1] >= 2 and len(xy) > _KEYPOINT_MAX:
        out = np.empty((len(_KEYPOINT_ROWS), 2))
        _keypoints(xy, _KEYPOINT_ROWS, out)
        return out
    xy = xy[:, :2]  # other dtypes, and shapes the indexing refuses, as numpy does
    return (xy[_KEYPOINT_ROWS[:, 0]] + xy[_KEYPOINT_ROWS[:, 1]]) / 2


@kernel("void(Array(float64, 2, 'A', readonly=True), int64[:, ::1], float64[:, ::1])")
def _keypoints(xy, pairs, out):
    """``out[k] = (xy[a, :2] + xy[b, :2]) / 2`` for each row pair (a, b) of ``pairs``."""
    for k in range(pairs.shape[0]):
        a, b = pairs[k, 0], pairs[k, 1]
        out[k, 0] = (xy[a, 0] + xy[b, 0]) / 2
        out[k, 1] = (xy[a, 1] + xy[b, 1]) / 2


class FaceTracker:
    """Finds and follows the patient's face; see the module docstring for the loop and rule.

    Dependencies come in through the constructor (the two model wrappers and
    the configuration); :meth:`from_config` opens the ONNX models.
    ``detector_runs`` counts detector invocations (for tests and statistics).
    """

    def __init__(
        self, detector: FaceDetector, landmarks: LandmarkModel, config: TrackingConfig
    ) -> None:
        self.detector = detector
        self.landmarks = landmarks
        self.config = config
        self.sampling = DepthSampling(
            window_px=config.depth_window_px,
            min_valid_fraction=config.depth_min_valid_fraction,
            max_spread_m=config.depth_max_spread_m,
            min_m=config.depth_min_m,
            max_m=config.depth_max_m,
        )
        self._filter_2d = OneEuroFilter(
            config.smoothing_min_cutoff_hz, config.smoothing_beta, config.smoothing_d_cutoff_hz
        )
        self._filter_3d = OneEuroFilter(
            config.smoothing_min_cutoff_hz, config.smoothing_beta_3d, config.smoothing_d_cutoff_hz
        )
        self.detector_runs = 0
        self.runtime_trial: RuntimeTrial | None = None
        self.lost_reason = ""
        self._lifted: np.ndarray | None = None  # landmark rows lifted to 3-D; None: all
        self._state = TrackerState.SEARCHING
        self._last: LandmarkOutput | None = None
        self._patient: _Patient | None = None
        self._since_detect = 0
        self._last_t_s: float | None = None
        self._beside: futures.ThreadPoolExecutor | None = None  # the detector's thread
        self._check: _CrossCheck | None = None  # started on the previous frame

    @classmethod
    def from_config(
        cls, config: TrackingConfig, models_dir: str | Path | None = None
    ) -> FaceTracker:
        """Open both models (checksum-verified by the models API) with the configured providers.

        Raises :class:`edge.errors.ModelError` when a model is missing, tampered
        with or does not match the manifest.
        """
        from edge.tracking.runtime import open_landmark_runner, open_model

        folder = Path(models_dir) if models_dir is not None else Path(config.models_dir)
        det = open_model(DETECTOR_MODEL, folder, config.providers, config.intra_op_threads)
        lm, trial = open_landmark_runner(
            config.runtime, folder, config.providers, config.intra_op_threads, name=LANDMARK_MODEL
        )
        detector = FaceDetector(det, config.detector_score, config.detector_iou)
        tracker = cls(detector, LandmarkModel(lm), config)
        tracker.runtime_trial = trial  # what runtime = "auto" measured, or None
        return tracker

    @property
    def state(self) -> TrackerState:
        return self._state

    @property
    def lifted(self) -> np.ndarray | None:
        """The landmark rows lifted to 3-D and smoothed there; None means all of them."""
        return None if self._lifted is None else self._lifted.copy()

    def lift_only(self, indices: Sequence[int] | None) -> None:
        """Lift and smooth only these landmark rows in 3-D (None: all 468).

        The registration pairs a few named landmarks with the plan; lifting
        the other rows costs time and changes nothing it reads. Rows left out
        are NaN and invalid in ``Face.landmarks_camera_m``. Each row is lifted
        and filtered on its own, so the rows kept have the values they would
        have had with all lifted. Restarts the 3-D filter (its shape changes).
        """
        if indices is None:
            self._lifted = None
        else:
            rows = np.unique(np.asarray(list(indices), dtype=np.int64))
            if rows.size and (rows[0] < 0 or rows[-1] >= LANDMARK_COUNT):
                raise ValueError(f"landmark rows must be in [0, {LANDMARK_COUNT}), got {rows}")
            self._lifted = rows
        self._filter_3d.reset()

    @property
    def providers(self) -> dict[str, str]:
        """The execution provider running each model (e.g. for the status display)."""
        return {
            m.name: str(getattr(m, "provider", "unknown"))
            for m in (self.detector.model, self.landmarks.model)
        }

    def close(self) -> None:
        """Release the tracker; later calls to :meth:`track` raise StateError."""
        self._state = TrackerState.CLOSED
        self._last = None
        self._check = None
        self.stop_threads()

    def stop_threads(self) -> None:
        """Join the detector's thread (idle between frames); the next cross-check starts
        it again."""
        beside, self._beside = self._beside, None
        if beside is not None:
            beside.shutdown(wait=True)

    def reset(self) -> None:
        """Forget the tracked face (e.g. when the source restarts)."""
        self._require_open()
        self._state = TrackerState.SEARCHING
        self._last = None
        self._patient = None
        self._check = None
        self._filter_2d.reset()
        self._filter_3d.reset()
        self._last_t_s = None

    def _require_open(self) -> None:
        if self._state is TrackerState.CLOSED:
            raise StateError("the face tracker is closed", "create a new FaceTracker")

    # ------------------------------------------------------------------ stills

    def detect_image(self, image_rgb: np.ndarray) -> list[Face]:
        """Every face in a still RGB image with its 468 landmarks, best score first. Stateless.

        Faces whose landmark crop does not hold a face (presence below the
        threshold) are left out. No depth, so no 3-D landmarks.
        """
        self._require_open()
        faces = []
        for det in self._detect(image_rgb, bgr=False):
            out = self.landmarks.run(image_rgb, roi_from_detection(det, self.config.roi_scale))
            if out.presence < self.config.presence_threshold:
                continue
            faces.append(
                Face(
                    score=det.score,
                    box=det.box,
                    keypoints=det.keypoints,
                    landmarks_px=out.landmarks_px,
                    presence=out.presence,
                )
            )
        return faces

    def _detect(self, image: np.ndarray, bgr: bool) -> list[Detection]:
        self.detector_runs += 1
        return self.detector.detect(image, bgr=bgr)

    def _detect_beside(self, image: np.ndarray, bgr: bool) -> futures.Future[DetectorOutput]:
        """The detector's model on ``image`` in the tracker's detector thread (ONNX Runtime
        releases the interpreter lock while it infers); its outputs are decoded by the
        caller (:meth:`_checked`), so the thread holds the lock only to letterbox."""
        if self._beside is None:
            self._beside = futures.ThreadPoolExecutor(1, thread_name_prefix="face-detector")
        self.detector_runs += 1
        return self._beside.submit(self.detector.infer, image, bgr)

    # ------------------------------------------------------------------ video

    def track(self, frame: Frame) -> TrackingResult:
        """One step of the tracking loop on a frame; the patient's face or none.

        ``faces`` holds at most the patient's face. Landmarks are smoothed
        (One Euro) when ``config.smoothing``; 3-D landmarks come from the
        frame's aligned depth (all invalid without depth).
        """
        self._require_open()
        image = frame.color
        bgr = frame.color_format is PixelFormat.BGR8
        out: LandmarkOutput | None = None
        detection: Detection | None = None
        detections: list[Detection] | None = None
        continuous = True
        mode = "track"
        model_ms: list[float] = []
        if self._state is TrackerState.FOLLOWING and self._last is not None:
            roi = roi_from_landmarks(self._last.landmarks_px, self.config.roi_scale)
            interval = self.config.redetect_interval_frames
            # On a cross-check frame the detector starts on the second core, on this
            # frame's image; its verdict on this frame is taken on the next one.
            pending = (
                self._detect_beside(image, bgr)
                if interval > 0 and self._since_detect >= interval
                else None
            )
            out = self.landmarks.run(image, roi, bgr=bgr)
            model_ms.append(out.inference_ms)
            reason = self._loss_reason(out)
            if not reason and self._check is not None:
                reason = self._checked()
                continuous = not reason  # a re-anchored crop jumps: restart the filters
            if pending is not None:
                if reason:  # lost on this frame: its detections find the face again
                    detections = self.detector.decode(pending.result())
                else:
                    mode = "detect"
                    self._since_detect = 0
                    self._check = _CrossCheck(pending, landmark_box(out.landmarks_px))
            if reason:
                log.debug("frame %d: face lost (%s); detecting again", frame.number, reason)
                self.lost_reason = reason
                out = None
        if out is None:
            mode = "detect"
            self._since_detect = 0
            self._check = None  # this frame's detection supersedes an earlier frame's
            if detections is None:
                detections = self._detect(image, bgr)
            detection, same = choose_patient(detections, self._patient)
            continuous = continuous and same
            if detection is not None:
                out = self.landmarks.run(
                    image, roi_from_detection(detection, self.config.roi_scale), bgr=bgr
                )
                model_ms.append(out.inference_ms)
                if out.presence < self.config.presence_threshold:
                    self.lost_reason = f"presence {out.presence:.2f} on a fresh detection"
                    out = None
        if out is None:
            self._state = TrackerState.SEARCHING
            self._last = None
            self._filter_2d.reset()
            self._filter_3d.reset()
            return TrackingResult(faces=[], patient=None, mode=mode, landmark_model_ms=model_ms)

        self._since_detect += 1
        self._state = TrackerState.FOLLOWING
        self._last = out
        box = detection.box if detection is not None else landmark_box(out.landmarks_px)
        self._patient = _Patient(
            np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]),
            float(max(box[2] - box[0], box[3] - box[1])),
        )
        rows = self._lifted
        # The rows' x, y in one step: a C-contiguous copy the lift reads as it is.
        lift_px = out.landmarks_px if rows is None else out.landmarks_px[rows, :2]
        points_m, valid = lift_landmarks(
            lift_px, frame.depth, frame.intrinsics, self.sampling, frame.depth_scale_m
        )
        landmarks_px = out.landmarks_px
        if self.config.smoothing:
            landmarks_px, points_m = self._smooth(landmarks_px, points_m, frame, continuous)
            if rows is None:  # else _scatter leaves the invalid rows NaN
                points_m[~valid] = np.nan
        if rows is not None:
            points_m, valid = _scatter(points_m, valid, rows, len(out.landmarks_px))
        face = Face(
            score=detection.score if detection is not None else out.presence,
            box=box,
            keypoints=(
                detection.keypoints
                if detection is not None
                else keypoints_from_landmarks(landmarks_px)
            ),
            landmarks_px=landmarks_px,
            presence=out.presence,
            landmarks_camera_m=points_m,
            landmarks_valid=valid,
        )
        return TrackingResult(faces=[face], patient=face, mode=mode, landmark_model_ms=model_ms)

    def _checked(self) -> str:
        """The verdict of the cross-check started on the previous frame (waiting for its
        detector if need be): why its detections disagree with that frame's landmarks,
        or "". A detector that failed raises here, on this frame."""
        check, self._check = self._check, None
        assert check is not None
        return cross_check(self.detector.decode(check.detections.result()), check.landmark_box)

    def _loss_reason(self, out: LandmarkOutput) -> str:
        if out.presence < self.config.presence_threshold:
            return f"presence {out.presence:.2f} below {self.config.presence_threshold}"
        check = check_crop(out.crop_xy, self.landmarks.size, self.config.max_crop_drift)
        return check.reason

    def _smooth(
        self, landmarks_px: np.ndarray, points_m: np.ndarray, frame: Frame, continuous: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        t_s = frame.capture_s
        if not continuous or (self._last_t_s is not None and t_s < self._last_t_s):
            # Another face, or a source that restarted: old history would drag the new one.
            self._filter_2d.reset()
            self._filter_3d.reset()
        self._last_t_s = t_s
        return self._filter_2d(landmarks_px, t_s), self._filter_3d(points_m, t_s)


@dataclass(frozen=True)
class _CrossCheck:
    """A cross-check under way: the detector on a frame's image, and the box of the
    landmarks tracked on that frame, which its detections must agree with."""

    detections: futures.Future[DetectorOutput]
    landmark_box: np.ndarray


def _scatter(
    points_m: np.ndarray, valid: np.ndarray, rows: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The lifted rows placed in (count, 3) points and (count,) validity: NaN and False
    elsewhere, and NaN in the rows that are not valid. ``rows`` are distinct; one out of
    range raises IndexError."""
    all_points = np.empty((count, 3))
    all_valid = np.empty(count, dtype=bool)
    points = np.ascontiguousarray(points_m, dtype=np.float64)
    if points.shape != (len(rows), 3) or np.shape(valid) != (len(rows),):
        raise ValueError(f"{len(rows)} lifted rows, {points.shape} points, {np.shape(valid)} flags")
    if not _place(points, np.ascontiguousarray(valid, dtype=bool), rows, all_points, all_valid):
        raise IndexError(f"a lifted row is outside the {count} landmarks")
    return all_points, all_valid


@kernel("boolean(float64[:, ::1], boolean[::1], int64[::1], float64[:, ::1], boolean[::1])")
def _place(points, valid, rows, all_points, all_valid):
    """:func:`_scatter`'s one pass: fill, then each row ``rows[j]`` from row ``j``; False
    (nothing written) when a row is outside ``all_points`` (kernels check no bounds)."""
    count = all_points.shape[0]
    for j in range(rows.shape[0]):
        if rows[j] < 0 or rows[j] >= count:
            return False
    all_points[:] = np.nan
    all_valid[:] = False
    for j in range(rows.shape[0]):
        r = rows[j]
        all_valid[r] = valid[j]
        for c in range(3):
            all_points[r, c] = points[j, c] if valid[j] else np.nan
    return True


class TrackingStage:
    """Pipeline stage: sets ``result.tracking`` to the tracker's :class:`TrackingResult`.

    ``lift_indices``: the landmark rows to lift to 3-D (those the registration
    reads); None lifts all 468 (see :meth:`FaceTracker.lift_only`).
    """

    name = "tracking"

    def __init__(self, tracker: FaceTracker, lift_indices: Sequence[int] | None = None) -> None:
        self.tracker = tracker
        tracker.lift_only(lift_indices)

    def process(self, result: FrameResult) -> None:
        result.tracking = self.tracker.track(result.frame)

    def source_gap(self, reason: str) -> None:
        """Frames stopped (camera away): the face must be found again, filters restart."""
        self.tracker.reset()

    def stop_threads(self) -> None:
        """The loop ended: join the tracker's detector thread."""
        self.tracker.stop_threads()
