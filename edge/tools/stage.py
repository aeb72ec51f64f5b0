"""ToolStage: every configured tool's pose, tip, axis and state on each FrameResult.

Runs after tracking (it reads only the frame) and writes ``result.tools``
(:class:`~edge.tools.types.ToolsResult`). A tool not seen this frame is OCCLUDED at
once, LOST after ``tools.lost_after_frames``; the first frame it is seen again it is
VISIBLE (or PARTIAL) with a fresh, unsmoothed pose. Smoothing is a One Euro filter
(Casiez et al. 2012, as for the face landmarks, :mod:`edge.tracking.smoothing`) on the
tip position and the rotation, restarted whenever the tool was not seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.config import ToolsConfig
from edge.frames import FrameResult
from edge.tools.definition import ToolSpec, load_tools
from edge.tools.pose import Detections, MarkerDetector, PoseEstimate, solve_tool_pose
from edge.tools.types import ToolPose, ToolsResult, ToolState
from edge.tracking.smoothing import OneEuroFilter

MARKERS_FOR_FULL_QUALITY = 3
ROTATION_BETA_SCALE = 0.1  # a rotation entry moving 1/s ~ a point 0.1 m away at 0.1 m/s


class _Track:
    """One tool's state between frames."""

    def __init__(self, spec: ToolSpec, config: ToolsConfig) -> None:
        self.spec = spec
        self.frames_unseen = config.lost_after_frames  # LOST until first seen
        self.previous: np.ndarray | None = None
        self.last_s = float("-inf")
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

    @classmethod
    def from_config(cls, config: ToolsConfig) -> ToolStage:
        return cls(load_tools(config.names, config.dir), config)

    def source_gap(self, reason: str) -> None:
        """No frame: every tool is unseen from now on (its smoothing restarts)."""
        for t in self._tracks:
            t.forget()

    def process(self, result: FrameResult) -> None:
        import cv2

        frame = result.frame
        gray = cv2.cvtColor(frame.bgr(), cv2.COLOR_BGR2GRAY)
        found = {
            k: _undistorted(v, frame.intrinsics) for k, v in self._detector.detect(gray).items()
        }
        depth = frame.depth if self.config.depth_refine else None
        poses = []
        for track in self._tracks:
            estimate = solve_tool_pose(
                track.spec,
                found[track.spec.dictionary],
                frame.intrinsics,
                max_reprojection_px=self.config.max_reprojection_px,
                previous=track.previous,
                depth=depth,
                depth_scale_m=frame.depth_scale_m,
            )
            if estimate is not None and estimate.rms_px > self.config.max_rms_px:
                estimate = None
            poses.append(self._update(track, estimate, frame.capture_s))
        result.tools = ToolsResult(poses)

    def _update(self, track: _Track, estimate: PoseEstimate | None, t_s: float) -> ToolPose:
        spec = track.spec
        if estimate is None:
            track.frames_unseen += 1
            track.forget()
            lost = track.frames_unseen >= self.config.lost_after_frames
            return ToolPose(
                spec.name,
                ToolState.LOST if lost else ToolState.OCCLUDED,
                markers_total=len(spec.markers),
                frames_unseen=track.frames_unseen,
                tip_rms_mm=spec.tip_rms_mm,
            )
        track.frames_unseen = 0
        track.previous = estimate.tool_to_camera
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


def _undistorted(found: Detections, intr: Any) -> Detections:
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
