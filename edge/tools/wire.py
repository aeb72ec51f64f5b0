"""The ``tools`` topic's payload (docs/protocol.md): each tool's state, pose, tip, the
virtual extension along its axis, and its navigation figures.

Arrays hold one row per tool in the payload's order; the rows of a tool that is not
current are NaN (it was not seen this frame: nothing of it may be drawn as current).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge.camera import Intrinsics
from edge.overlay.project import DisplayProfile, project_points
from edge.tools.types import Navigation, ToolPose, ToolsResult

EXTENSION_M = 0.10  # the virtual extension drawn beyond the tip, along the axis


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _navigation(nav: Navigation | None, tool_current: bool) -> dict[str, Any]:
    if nav is None:  # no navigation stage (no plan): nothing to register against
        return {"current": False, "missing": ["registration"] + ([] if tool_current else ["tool"])}
    out: dict[str, Any] = {"current": nav.current, "missing": list(nav.missing)}
    if not nav.current:
        return out
    out["targets"] = [
        {"name": n, "distance_mm": _num(d)}
        for n, d in zip(nav.target_names, nav.target_distance_mm, strict=True)
    ]
    out["trajectories"] = [
        {
            "name": t.name,
            "lateral_offset_mm": _num(t.lateral_offset_mm),
            "angle_deg": _num(t.angle_deg),
            "remaining_depth_mm": _num(t.remaining_depth_mm),
            "distance_to_target_mm": _num(t.distance_to_target_mm),
        }
        for t in nav.trajectories
    ]
    out["structure"] = {
        "name": nav.nearest_structure,
        "distance_mm": _num(nav.structure_distance_mm),
        "inside": nav.structure_inside,
        "warning": nav.structure_warning,
    }
    return out


def _tool(t: ToolPose, nav: Navigation | None) -> dict[str, Any]:
    return {
        "name": t.name,
        "state": t.state.value,
        "current": t.current,
        "quality": float(t.quality),
        "markers_used": [int(i) for i in t.markers_used],
        "markers_total": int(t.markers_total),
        "reprojection_rms_px": _num(t.reprojection_rms_px),
        "frames_unseen": int(t.frames_unseen),
        "tip_rms_mm": float(t.tip_rms_mm),
        "reason": t.reason,
        "navigation": _navigation(nav, t.current),
    }


# What the ``hud`` topic says of each tool: these keys of its ``tools`` topic entry.
HUD_KEYS = ("name", "state", "current", "reason", "navigation")


def tool_entries(tools: ToolsResult, navigation: list[Navigation] | None) -> list[dict[str, Any]]:
    """The ``tools`` topic's map of each tool (its payload's ``tools``)."""
    navs = {n.tool: n for n in navigation or []}
    return [_tool(t, navs.get(t.name)) for t in tools.tools]


def hud_tools(entries: list[dict[str, Any]]) -> list[Any]:
    """The ``hud`` topic's ``tools`` from the tools topic's entries (:func:`tool_entries`):
    per tool what a text-only display says (its state, the navigation figures, or which
    input is ``missing``)."""
    return [{key: e[key] for key in HUD_KEYS} for e in entries]


def tools_payload(
    tools: ToolsResult,
    navigation: list[Navigation] | None,
    profile: DisplayProfile,
    camera: Intrinsics,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Payload map and arrays of the ``tools`` topic.

    Pixels are on the display of ``profile`` (its intrinsics and ``camera_to_display``,
    as the plan overlay's, :func:`edge.overlay.project.project_points`); ``camera`` is
    the frame's camera. An extension with an end behind the display has NaN pixels.
    """
    n = len(tools.tools)
    poses = np.full((n, 4, 4), np.nan)
    tips = np.full((n, 3), np.nan)
    axes = np.full((n, 3), np.nan)
    tips_px = np.full((n, 2), np.nan)
    extensions_px = np.full((n, 2, 2), np.nan)
    for i, t in enumerate(tools.tools):
        if not t.current or t.tool_to_camera is None:
            continue
        assert t.tip_camera_m is not None and t.axis_camera is not None
        poses[i], tips[i], axes[i] = t.tool_to_camera, t.tip_camera_m, t.axis_camera
        ends = np.stack([t.tip_camera_m, t.tip_camera_m + EXTENSION_M * t.axis_camera])
        px, _, _ = project_points(ends, profile, camera)
        if np.isfinite(px).all():
            tips_px[i], extensions_px[i] = px[0], px
    payload = {"tools": tool_entries(tools, navigation)}
    arrays = {
        "tools_to_camera": poses,
        "tips_camera_m": tips,
        "axes_camera": axes,
        "tips_px": tips_px,
        "extensions_px": extensions_px,
    }
    return payload, arrays
