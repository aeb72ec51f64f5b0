"""ToolStage: every configured tool's pose, tip, axis and state on each FrameResult.

Runs after tracking (it reads only the frame) and writes ``result.tools``
(:class:`~edge.tools.types.ToolsResult`). A tool not seen this frame is OCCLUDED at
once, LOST after ``tools.lost_after_frames``; the first frame it is seen again it is
VISIBLE (or PARTIAL) with a fresh, unsmoothed pose. Smoothing is a One Euro filter
(Casiez et al. 2012, as for the face landmarks, :mod:`edge.tracking.smoothing`) on the
tip position and the rotation, restarted whenever the tool was not seen.

A tool seen lately is looked for only around where it was (its markers' box, grown by
half its size each way); the whole image is searched every ``tools.search_every_frames``
frames while a tool is LOST.
"""

from __future__ import annotations

import numpy as np

from edge.config import ToolsConfig
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.tools.definition import ToolSpec, load_tools
from edge.tools.pose import Detections, MarkerDetector, PoseEstimate, solve_tool_pose
from edge.tools.types import ToolPose, ToolsResult, ToolState
from edge.tracking.smoothing import OneEuroFilter

MARKERS_FOR_FULL_QUALITY = 3
BOX_MARGIN_PX = 24.0
ROTATION_BETA_SCALE = 0.1  # a rotation entry moving 1/s ~ a point 0.1 m away at 0.1 m/s

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 pixels (x1, y1 excluded)


class _Track:
    """One tool's state between frames."""

    def __init__(self, spec: ToolSpec, config: ToolsConfig) -> None:
        self.spec = spec
        self.frames_unseen = config.lost_after_frames  # LOST until first seen
        self.previous: np.ndarray | None = None
        self.last_s = float("-inf")
        self.box: Box | None = None  # where to look; None once LOST
        c = config
        self.tip_filter = OneEuroFilter(
            c.smoothing_min_cutoff_hz, c.smoothing_beta, c.smoothing_d_cutoff_hz
        )
        self.rotation_filter = OneEuroFilter(
            c.smoothing_min_cutoff_hz,
            c.smoothing_beta * ROTATION_BETA_SCALE,
            c.smoothing_d_cutoff_hz,
        )

    def forget(self) -> None:
        self.previous = None
        self.tip_filter.reset()
        self.rotation_filter.reset()


class ToolStage:
    """Detects the tools' markers and solves their poses (stage name "tools")."""

    name = "tools"

    def __init__(self, specs: tuple[ToolSpec, ...], config: ToolsConfig | None = None) -> None:
        self.config = config or ToolsConfig()
        self.specs = specs
        self._detector = MarkerDetector({s.dictionary for s in specs})
        self._tracks = [_Track(s, self.config) for s in specs]
        self._frames = 0

    @classmethod
    def from_config(cls, config: ToolsConfig) -> ToolStage:
        return cls(load_tools(config.names, config.dir), config)

    def source_gap(self, reason: str) -> None:
        """No frame: every tool is unseen from now on (its smoothing restarts)."""
        for t in self._tracks:
            t.forget()

    def process(self, result: FrameResult) -> None:
        frame = result.frame
        intr = frame.intrinsics
        self._frames += 1
        roi = self._search_region(intr.width, intr.height)
        found = {}
        if roi is not None:
            found = {
                k: _undistorted(v, intr)
                for k, v in self._detector.detect(_gray(frame, roi), roi).items()
            }
        depth = frame.depth if self.config.depth_refine else None
        poses = []
        for track in self._tracks:
            estimate = None
            if track.spec.dictionary in found:
                estimate = solve_tool_pose(
                    track.spec,
                    found[track.spec.dictionary],
                    intr,
                    max_reprojection_px=self.config.max_reprojection_px,
                    previous=track.previous,
                    depth=depth,
                    depth_scale_m=frame.depth_scale_m,
                )
            if estimate is not None and estimate.rms_px > self.config.max_rms_px:
                estimate = None
            poses.append(self._update(track, estimate, frame.capture_s, intr))
        result.tools = ToolsResult(poses)

    def _search_region(self, width: int, height: int) -> Box | None:
        """The whole image on a search frame while a tool is LOST, else the union of the
        boxes of the tools seen lately; None: nowhere to look this frame."""
        lost = any(t.box is None for t in self._tracks)
        if lost and (self._frames - 1) % self.config.search_every_frames == 0:
            return (0, 0, width, height)
        boxes = np.array([t.box for t in self._tracks if t.box is not None])
        if boxes.size == 0:
            return None
        x0, y0 = boxes[:, :2].min(axis=0)
        x1, y1 = boxes[:, 2:].max(axis=0)
        return (max(int(x0), 0), max(int(y0), 0), min(int(x1), width), min(int(y1), height))

    def _update(
        self, track: _Track, estimate: PoseEstimate | None, t_s: float, intr: Intrinsics
    ) -> ToolPose:
        spec = track.spec
        if estimate is None:
            track.frames_unseen += 1
            track.forget()
            lost = track.frames_unseen >= self.config.lost_after_frames
            if lost:
                track.box = None
            return ToolPose(
                spec.name,
                ToolState.LOST if lost else ToolState.OCCLUDED,
                markers_total=len(spec.markers),
                frames_unseen=track.frames_unseen,
                tip_rms_mm=spec.tip_rms_mm,
            )
        track.frames_unseen = 0
        track.previous = estimate.tool_to_camera
        track.box = _box(spec, estimate.tool_to_camera, intr)
        pose = estimate.tool_to_camera
        tip = pose[:3, :3] @ spec.tip_m + pose[:3, 3]
        if t_s < track.last_s:  # the clock went back (a looped recording): start afresh
            track.tip_filter.reset()
            track.rotation_filter.reset()
        track.last_s = t_s
        if self.config.smoothing:
            tip = track.tip_filter(tip, t_s)
            u, _, vt = np.linalg.svd(track.rotation_filter(pose[:3, :3], t_s))
            rotation = u @ vt
            pose = np.eye(4)
            pose[:3, :3] = rotation
            pose[:3, 3] = tip - rotation @ spec.tip_m
        used = len(estimate.markers_used)
        quality = min(used / min(len(spec.markers), MARKERS_FOR_FULL_QUALITY), 1.0) * max(
            0.0, 1.0 - estimate.rms_px / self.config.max_rms_px
        )
        return ToolPose(
            spec.name,
            ToolState.VISIBLE if used >= min(2, len(spec.markers)) else ToolState.PARTIAL,
            tool_to_camera=pose,
            tip_camera_m=tip,
            axis_camera=pose[:3, :3] @ spec.axis,
            quality=float(quality),
            markers_used=estimate.markers_used,
            markers_total=len(spec.markers),
            reprojection_rms_px=estimate.rms_px,
            depth_offset_mm=estimate.depth_offset_mm,
            tip_rms_mm=spec.tip_rms_mm,
        )


def _box(spec: ToolSpec, tool_to_camera: np.ndarray, intr: Intrinsics) -> Box:
    """The tool's markers' bounding box in the image, grown by half its size each way."""
    corners = np.concatenate([m.corners_m for m in spec.markers])
    px = intr.project(corners @ tool_to_camera[:3, :3].T + tool_to_camera[:3, 3])
    lo, hi = px.min(axis=0), px.max(axis=0)
    grow = np.maximum(0.5 * (hi - lo), BOX_MARGIN_PX)
    x0, y0 = np.floor(lo - grow).astype(int)
    x1, y1 = np.ceil(hi + grow).astype(int)
    return (int(x0), int(y0), int(x1), int(y1))


def _gray(frame: Frame, roi: Box) -> np.ndarray:
    """The frame's grey image at full size; only ``roi`` is converted (the rest is 0)."""
    import cv2

    x0, y0, x1, y1 = roi
    code = cv2.COLOR_RGB2GRAY if frame.color_format is PixelFormat.RGB8 else cv2.COLOR_BGR2GRAY
    if (x0, y0, x1, y1) == (0, 0, frame.intrinsics.width, frame.intrinsics.height):
        return np.asarray(cv2.cvtColor(frame.color, code))
    gray = np.zeros(frame.color.shape[:2], np.uint8)
    gray[y0:y1, x0:x1] = cv2.cvtColor(np.ascontiguousarray(frame.color[y0:y1, x0:x1]), code)
    return gray


def _undistorted(found: Detections, intr: Intrinsics) -> Detections:
    """Corners moved to where a distortion-free camera would see them (when the camera has
    distortion coefficients: OpenCV's model, which librealsense's Brown-Conrady is)."""
    if not any(intr.coeffs) or found.ids.size == 0:
        return found
    import cv2

    k = intr.matrix
    pts = cv2.undistortPoints(
        found.corners_px.reshape(-1, 1, 2), k, np.asarray(intr.coeffs), P=k
    ).reshape(-1, 4, 2)
    return Detections(found.ids, pts)
