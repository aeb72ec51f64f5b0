"""What the tool stage writes on each FrameResult: every configured tool's pose and state.

States (one enum, :class:`ToolState`; its names are written as strings only here and
in the wire codec):

* VISIBLE: seen this frame, pose from two or more markers that agree;
* PARTIAL: seen this frame, pose from one marker only (less accurate, lower quality);
* OCCLUDED: not seen this frame, seen within ``tools.lost_after_frames`` frames;
* LOST: not seen for longer (or never).

Only VISIBLE and PARTIAL are *current*: a tool not seen this frame has no pose, tip or
axis here, so nothing downstream can show it as if it were.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class ToolState(str, enum.Enum):
    VISIBLE = "VISIBLE"
    PARTIAL = "PARTIAL"
    OCCLUDED = "OCCLUDED"
    LOST = "LOST"


@dataclass
class ToolPose:
    """One tool in one frame; positions in the camera frame (metres), axis a unit vector."""

    name: str
    state: ToolState
    tool_to_camera: np.ndarray | None = None  # None unless current
    tip_camera_m: np.ndarray | None = None
    axis_camera: np.ndarray | None = None
    quality: float = 0.0  # 0..1: share of markers used (of up to 3) x reprojection headroom
    markers_used: list[int] = field(default_factory=list)
    markers_total: int = 0
    reprojection_rms_px: float = float("nan")
    depth_offset_mm: float = float("nan")  # the depth image's correction along the view ray
    frames_unseen: int = 0
    tip_rms_mm: float = 0.0  # the tip's calibration RMS (tool file)
    reason: str = ""  # why it is LOST when that is not "out of view" (the stage failed)

    @property
    def current(self) -> bool:
        return self.state in (ToolState.VISIBLE, ToolState.PARTIAL)


@dataclass
class ToolsResult:
    """Every configured tool in one frame, in the configured order."""

    tools: list[ToolPose] = field(default_factory=list)

    def get(self, name: str) -> ToolPose | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None


@dataclass
class TrajectoryFigures:
    """The tip and axis against one planned trajectory (entry -> target)."""

    name: str
    lateral_offset_mm: float  # tip's distance from the planned line
    angle_deg: float  # between the tool's axis and the planned direction
    remaining_depth_mm: float  # along the planned direction, tip to target (< 0: past it)
    distance_to_target_mm: float


@dataclass
class Navigation:
    """One tool's navigation figures in plan coordinates for one frame.

    ``current`` only when both the registration (TRACKING) and the tool (VISIBLE or
    PARTIAL) are current this frame; otherwise ``missing`` says which one is not and
    every figure is absent (no stale value is carried over).
    """

    tool: str
    current: bool
    missing: list[str] = field(default_factory=list)  # "registration", "tool"
    tip_patient_m: np.ndarray | None = None
    axis_patient: np.ndarray | None = None
    target_names: list[str] = field(default_factory=list)
    target_distance_mm: list[float] = field(default_factory=list)
    trajectories: list[TrajectoryFigures] = field(default_factory=list)
    nearest_structure: str = ""
    structure_distance_mm: float = float("nan")  # to its surface; <= 0 inside it
    structure_inside: bool = False  # the tip is inside the nearest structure
    structure_warning: bool = False  # inside it, or closer than tools.structure_warning_mm
