"""The `tools` topic's codec refuses what the viewer could not draw, and the viewer draws
everything the codec accepts (nil figures as "-")."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edge.camera import Intrinsics
from edge.errors import DecodeError
from edge.overlay.project import DisplayProfile
from edge.tools.types import Navigation, ToolPose, ToolsResult, ToolState, TrajectoryFigures
from edge.tools.wire import tools_payload
from edge.transport.protocol import TOPIC_TOOLS, decode, encode, make_message
from edge.transport.viewer import draw_tools, tool_readout

CAMERA = Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5)


def _message(nav_current: bool = True, **nav_changes):
    pose = np.eye(4)
    pose[2, 3] = 0.5
    seen = ToolPose(
        "g", ToolState.VISIBLE, pose, np.array([0, 0, 0.6]), np.array([0, 0, 1.0]), quality=1.0
    )
    nav = Navigation(
        "g",
        nav_current,
        [] if nav_current else ["registration"],
        target_names=["t"],
        target_distance_mm=[12.0],
        trajectories=[TrajectoryFigures("tr", 1.0, 2.0, 3.0, 4.0)],
        nearest_structure="s",
        structure_distance_mm=3.0,
        structure_warning=True,
    )
    for k, v in nav_changes.items():
        setattr(nav, k, v)
    return tools_payload(ToolsResult([seen]), [nav], DisplayProfile(), CAMERA)


def _roundtrip(payload, arrays):
    return decode(encode(make_message(TOPIC_TOOLS, payload, arrays)))


def _nav(p):
    return p["tools"][0]["navigation"]


def _set(path, value):
    def mutate(p, a):
        *keys, last = path
        node = p["tools"][0]
        for k in keys:
            node = node[k]
        node[last] = value

    return mutate


def _delete(path):
    def mutate(p, a):
        *keys, last = path
        node = p["tools"][0]
        for k in keys:
            node = node[k]
        del node[last]

    return mutate


def _array(name, row):
    def mutate(p, a):
        a[name][0] = row

    return mutate


MALFORMED = {
    "trajectory without figures": _set(("navigation", "trajectories"), [{"name": "x"}]),
    "figure as text": _set(("navigation", "trajectories", 0, "angle_deg"), "12"),
    "figure as bool": _set(("navigation", "targets", 0, "distance_mm"), True),
    "target without distance": _set(("navigation", "targets"), [{"name": "t"}]),
    "current but missing": _set(("navigation", "missing"), ["tool"]),
    "unknown missing": _set(("navigation", "missing"), ["nothing"]),
    "missing not a list": _set(("navigation", "missing"), "tool"),
    "structure as text": _set(("navigation", "structure"), "near"),
    "structure warning as text": _set(("navigation", "structure", "warning"), "yes"),
    "structure without inside": _delete(("navigation", "structure", "inside")),
    "no trajectories": _delete(("navigation", "trajectories")),
    "trajectories not a list": _set(("navigation", "trajectories"), {"name": "x"}),
    "too many targets": _set(("navigation", "targets"), [{"name": "t", "distance_mm": 1.0}] * 65),
    "huge tool name": _set(("name",), "x" * 10_000),
    "huge target name": _set(("navigation", "targets", 0, "name"), "x" * 10_000),
    "navigation not a map": _set(("navigation",), ["current"]),
    "quality as text": _set(("quality",), "high"),
    "quality over 1": _set(("quality",), 3.0),
    "markers_used not ids": _set(("markers_used",), ["a"]),
    "frames_unseen negative": _set(("frames_unseen",), -1),
    "rms as text": _set(("reprojection_rms_px",), "0.1"),
    "infinite pixel": _array("tips_px", [np.inf, 3.0]),
    "axis not unit": _array("axes_camera", [0.0, 0.0, 5.0]),
    "pose not rigid": _array("tools_to_camera", np.eye(4) * 7),
}


@pytest.mark.parametrize("mutate", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tools_messages_are_refused(mutate) -> None:
    payload, arrays = _message()
    _roundtrip(payload, arrays)
    p, a = copy.deepcopy(payload), {k: v.copy() for k, v in arrays.items()}
    mutate(p, a)
    with pytest.raises(DecodeError):
        _roundtrip(p, a)


def test_figures_on_navigation_that_is_not_current_are_refused() -> None:
    payload, arrays = _message(nav_current=False)
    msg = _roundtrip(payload, arrays)
    assert set(_nav(msg.payload)) == {"current", "missing"}
    _nav(payload)["targets"] = [{"name": "t", "distance_mm": 1.0}]
    with pytest.raises(DecodeError, match="carries no figures"):
        _roundtrip(payload, arrays)


def test_nil_figures_are_drawn_as_a_dash() -> None:
    """The edge sends nil for a figure that is not finite; the viewer shows "-"."""
    payload, arrays = _message(
        trajectories=[TrajectoryFigures("tr", float("nan"), 2.0, float("inf"), 4.0)],
        structure_distance_mm=float("nan"),
    )
    msg = _roundtrip(payload, arrays)
    traj = _nav(msg.payload)["trajectories"][0]
    assert traj["lateral_offset_mm"] is None and traj["remaining_depth_mm"] is None
    line = tool_readout(msg.payload["tools"][0])
    assert "off line - mm" in line and "depth left - mm" in line and "NEAR s - mm" in line
    canvas = np.zeros((480, 640, 3), np.uint8)
    draw_tools(canvas, msg.payload, msg.arrays)
    assert canvas.any()


def test_inside_a_structure_is_said_so() -> None:
    payload, arrays = _message(
        structure_distance_mm=-4.0, structure_inside=True, structure_warning=True
    )
    msg = _roundtrip(payload, arrays)
    assert "INSIDE s -4.0 mm" in tool_readout(msg.payload["tools"][0])
