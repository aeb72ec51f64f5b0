"""ToolStage: every configured tool's pose, tip, axis and state on each FrameResult.

Runs beside tracking (it reads only the frame: edge/tools/beside.py) and writes ``result.tools``
(:class:`~edge.tools.types.ToolsResult`). A tool not seen this frame is OCCLUDED at
once, LOST after ``tools.lost_after_frames``; the first frame it is found again it is
VISIBLE (or PARTIAL) with a fresh, unsmoothed pose. Smoothing is a One Euro filter
(Casiez et al. 2012, as for the face landmarks, :mod:`edge.tracking.smoothing`) on the
tip position and the rotation, restarted whenever the tool was not seen.

A tool seen lately is looked for first around where it was (its markers' box, grown by
half its size each way); a tool missed there (it jumped out of its box, or it is hidden)
is looked for in the whole image in the same frame, so a tool in view is never reported
unseen, and one back from an occlusion shorter than ``tools.lost_after_frames`` is current
on the first frame it is back. A LOST tool is looked for in
its last box every frame and in the whole image every ``tools.search_every_frames``
frames, counted from when it went LOST (default 3: current within 3 frames of its
return; 1: on the first; the whole-image search costs as much again as the rest of the
stage, so a configured tool left out of view costs a third of that at 3).
"""

from __future__ import annotations

import logging

import numpy as np

from edge.config import ToolsConfig
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.tools.definition import ToolSpec, load_tools
from edge.tools.pose import Detections, MarkerDetector, PoseEstimate, solve_tool_pose
from edge.tools.types import ToolPose, ToolsResult, ToolState
from edge.tracking.smoothing import OneEuroFilter
from edge.transport.tools_codec import MAX_REASON_CHARS

log = logging.getLogger(__name__)

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
        self.box: Box | None = None  # where it was last seen; None: never (or before a gap)
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
        self._failure = ""  # the last failure's reason, logged once

    @classmethod
    def from_config(cls, config: ToolsConfig) -> ToolStage:
        return cls(load_tools(config.names, config.dir), config)

    def source_gap(self, reason: str) -> None:
        """No frame: every tool is LOST from now on, looked for in the whole image (its
        smoothing restarts; where it was before the gap says nothing about after)."""
        for t in self._tracks:
            t.forget()
            t.box = None
            t.frames_unseen = max(t.frames_unseen, self.config.lost_after_frames)

    def process(self, result: FrameResult) -> None:
        """``result.tools`` for this frame. A failure here (a detector or solver error)
        must not fail the frame: the plan overlay does not depend on the tools. The tools
        are then LOST with the reason, logged once each time the reason changes."""
        try:
            poses = self._poses(result.frame)
        except Exception as exc:  # a tool failure must not blank the plan overlay
            self.fail(result, exc)
            return
        if self._failure:
            log.info("tool tracking works again")
        self._failure = ""
        result.tools = ToolsResult(poses)

    def fail(self, result: FrameResult, exc: BaseException) -> None:
        """This frame's tools after the stage failed with ``exc``: every tool LOST with the
        reason (logged once while it lasts); the frame goes on."""
        reason = f"tool tracking failed: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
        if reason != self._failure:
            log.warning("%s; the tools are LOST until it works again", reason, exc_info=exc)
        self._failure = reason
        result.tools = ToolsResult([self._lost(t, reason) for t in self._tracks])

    def _lost(self, track: _Track, reason: str) -> ToolPose:
        """The tool as LOST after a failure: forgotten, looked for everywhere next time."""
        track.forget()
        track.box = None
        track.frames_unseen = max(track.frames_unseen + 1, self.config.lost_after_frames)
        return ToolPose(
            track.spec.name,
            ToolState.LOST,
            markers_total=len(track.spec.markers),
            frames_unseen=track.frames_unseen,
            tip_rms_mm=track.spec.tip_rms_mm,
            reason=reason,
        )

    def _poses(self, frame: Frame) -> list[ToolPose]:
        intr = frame.intrinsics
        whole = (0, 0, intr.width, intr.height)
        depth = frame.depth if self.config.depth_refine else None

        def solve(track: _Track, found: dict[str, Detections]) -> PoseEstimate | None:
            if track.spec.dictionary not in found:
                return None
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
                return None
            return estimate

        roi = self._boxes_region(intr.width, intr.height)
        found = self._detect(frame, roi) if roi is not None else {}
        estimates = [solve(t, found) for t in self._tracks]
        # Missed where it was, or only one of its markers there (the rest may have left
        # the box): the whole image, in this same frame.
        missed = [
            i
            for i, (t, e) in enumerate(zip(self._tracks, estimates, strict=True))
            if (e is None and self._search_whole(t))
            or (e is not None and len(e.markers_used) < min(2, len(t.spec.markers)))
        ]
        if roi != whole and missed:
            found = self._detect(frame, whole)
            for i in missed:
                again = solve(self._tracks[i], found)
                before = estimates[i]
                if again is not None and (
                    before is None or len(again.markers_used) > len(before.markers_used)
                ):
                    estimates[i] = again
        return [
            self._update(t, e, frame.capture_s, intr)
            for t, e in zip(self._tracks, estimates, strict=True)
        ]

    def _detect(self, frame: Frame, roi: Box) -> dict[str, Detections]:
        return {
            k: _undistorted(v, frame.intrinsics)
            for k, v in self._detector.detect_crop(_gray(frame, roi), roi[:2]).items()
        }

    def _search_whole(self, track: _Track) -> bool:
        """Whether a tool missed in its box is looked for in the whole image this frame:
        always while it was seen lately, every ``search_every_frames`` frames once LOST
        (counted from the frame it went LOST, so the search cycle is the same for every
        occlusion)."""
        since_lost = track.frames_unseen - self.config.lost_after_frames
        return since_lost < 0 or since_lost % self.config.search_every_frames == 0

    def _boxes_region(self, width: int, height: int) -> Box | None:
        """The union of the tools' boxes (where each was last seen), clipped to the image;
        None: no tool has one."""
        boxes = [t.box for t in self._tracks if t.box is not None]
        if not boxes:
            return None
        x0, y0 = max(min(b[0] for b in boxes), 0), max(min(b[1] for b in boxes), 0)
        x1, y1 = min(max(b[2] for b in boxes), width), min(max(b[3] for b in boxes), height)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def _update(
        self, track: _Track, estimate: PoseEstimate | None, t_s: float, intr: Intrinsics
    ) -> ToolPose:
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
    corners = spec.all_corners_m
    px = intr.project(corners @ tool_to_camera[:3, :3].T + tool_to_camera[:3, 3])
    lo, hi = px.min(axis=0), px.max(axis=0)
    grow = np.maximum(0.5 * (hi - lo), BOX_MARGIN_PX)
    x0, y0 = np.floor(lo - grow).astype(int)
    x1, y1 = np.ceil(hi + grow).astype(int)
    return (int(x0), int(y0), int(x1), int(y1))


def _gray(frame: Frame, roi: Box) -> np.ndarray:
    """The grey image of the frame's ``roi`` (only that part is converted)."""
    import cv2

    x0, y0, x1, y1 = roi
    code = cv2.COLOR_RGB2GRAY if frame.color_format is PixelFormat.RGB8 else cv2.COLOR_BGR2GRAY
    if (x0, y0, x1, y1) == (0, 0, frame.intrinsics.width, frame.intrinsics.height):
        return np.asarray(cv2.cvtColor(frame.color, code))
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(frame.color[y0:y1, x0:x1]), code))


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
