"""The `tools` topic's wire form: tips and extensions on the headset's display."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge.camera import Intrinsics
from edge.errors import DecodeError
from edge.frames import Frame, FrameResult, PixelFormat, StageFailure
from edge.overlay.project import DisplayProfile
from edge.overlay.types import Overlay
from edge.registration.types import RegistrationState
from edge.tools.types import Navigation, ToolPose, ToolsResult, ToolState, TrajectoryFigures
from edge.tools.wire import EXTENSION_M, HUD_KEYS, tools_payload
from edge.transport.protocol import TOPIC_HUD, TOPIC_TOOLS, decode, encode, make_message
from edge.transport.stage import PublishStage

CAMERA = Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5)
TIP = np.array([0.02, -0.01, 0.5])
AXIS = np.array([0.0, 0.6, 0.8])


def _seen() -> ToolsResult:
    pose = np.eye(4)
    pose[:3, 3] = TIP - 0.1 * AXIS
    return ToolsResult([ToolPose("g", ToolState.VISIBLE, pose, TIP, AXIS, quality=1.0)])


def _expected_px(profile: DisplayProfile) -> np.ndarray:
    """The tip and the extension's end in the display's own frame, by the pinhole model."""
    ends = np.stack([TIP, TIP + EXTENSION_M * AXIS])
    m = profile.camera_to_display
    in_display = ends @ m[:3, :3].T + m[:3, 3]
    intr = profile.intrinsics_for(CAMERA)
    return np.stack(
        [
            intr.fx * in_display[:, 0] / in_display[:, 2] + intr.ppx,
            intr.fy * in_display[:, 1] / in_display[:, 2] + intr.ppy,
        ],
        axis=1,
    )


def test_tool_pixels_apply_the_display_profiles_camera_to_display(repo_root) -> None:
    """An optical see-through headset sits 25 mm beside the camera: the tip is drawn where
    the display sees it, not where the camera does (about 55 px apart at 0.5 m)."""
    profile = DisplayProfile.from_file(
        repo_root / "hardware/displays/optical-see-through-example.toml"
    )
    assert not np.allclose(profile.camera_to_display, np.eye(4))
    _, arrays = tools_payload(_seen(), None, profile, CAMERA)
    expected = _expected_px(profile)
    assert arrays["tips_px"][0] == pytest.approx(expected[0], abs=1e-6)
    assert arrays["extensions_px"][0] == pytest.approx(expected, abs=1e-6)
    without_offset = profile.intrinsics_for(CAMERA).project(TIP[None])[0]
    assert np.linalg.norm(arrays["tips_px"][0] - without_offset) > 40.0


def test_a_tool_behind_the_display_has_no_pixels() -> None:
    behind = DisplayProfile(camera_to_display=np.diag([-1.0, 1.0, -1.0, 1.0]))  # turned round
    _, arrays = tools_payload(_seen(), None, behind, CAMERA)
    assert np.isnan(arrays["tips_px"]).all() and np.isnan(arrays["extensions_px"]).all()
    assert np.isfinite(arrays["tips_camera_m"]).all()  # the pose itself is still sent


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], dict[str, np.ndarray]]] = []

    def send(self, topic, payload, arrays=None, *, frame=None, capture_unix_s=None) -> None:
        self.sent.append((topic, payload, arrays or {}))


def test_the_publish_stage_projects_tools_on_the_overlays_display(repo_root) -> None:
    profile = DisplayProfile.from_file(
        repo_root / "hardware/displays/optical-see-through-example.toml"
    )
    frame = Frame(1, np.zeros((480, 640, 3), np.uint8), PixelFormat.RGB8, None, 0.0, CAMERA)
    result = FrameResult(frame)
    result.tools = _seen()
    result.overlay = Overlay(
        1, 0.0, RegistrationState.SEARCHING, False, "SEARCHING", [], "c", "d", None,
        display_intrinsics=profile.intrinsics_for(CAMERA),
        display=profile,
    )  # fmt: skip
    publisher = _Publisher()
    PublishStage(publisher).process(result)  # type: ignore[arg-type]
    (arrays,) = [a for topic, _, a in publisher.sent if topic == TOPIC_TOOLS]
    assert arrays["tips_px"][0] == pytest.approx(_expected_px(profile)[0], abs=1e-6)


def _hud(tools: ToolsResult, navigation) -> dict[str, Any]:
    frame = Frame(1, np.zeros((480, 640, 3), np.uint8), PixelFormat.RGB8, None, 0.0, CAMERA)
    result = FrameResult(frame)
    result.tools, result.navigation = tools, navigation
    result.overlay = Overlay(
        1, 0.0, RegistrationState.TRACKING, True, "TRACKING", [], "c", "d", np.eye(4)
    )
    publisher = _Publisher()
    PublishStage(publisher).process(result)  # type: ignore[arg-type]
    (payload,) = [p for topic, p, _ in publisher.sent if topic == TOPIC_HUD]
    return decode(encode(make_message(TOPIC_HUD, payload))).payload


def test_the_hud_says_each_tools_figures_or_what_is_missing() -> None:
    seen = _seen().tools[0]
    hidden = ToolPose("p", ToolState.LOST, markers_total=3, frames_unseen=40)
    nav = Navigation(
        "g",
        True,
        target_names=["t"],
        target_distance_mm=[12.5],
        trajectories=[TrajectoryFigures("tr", 1.5, 2.0, float("nan"), 4.0)],
        nearest_structure="s",
        structure_distance_mm=-1.0,
        structure_inside=True,
        structure_warning=True,
    )
    hud = _hud(ToolsResult([seen, hidden]), [nav, Navigation("p", False, ["tool"])])
    g, p = hud["tools"]
    assert (g["name"], g["state"], g["current"]) == ("g", "VISIBLE", True)
    assert g["navigation"]["missing"] == [] and g["navigation"]["current"]
    assert g["navigation"]["targets"] == [{"name": "t", "distance_mm": 12.5}]
    traj = g["navigation"]["trajectories"][0]
    assert traj["lateral_offset_mm"] == 1.5 and traj["remaining_depth_mm"] is None
    assert g["navigation"]["structure"]["inside"] and g["navigation"]["structure"]["warning"]
    assert (p["state"], p["current"], p["navigation"]) == (
        "LOST",
        False,
        {"current": False, "missing": ["tool"]},
    )
    # Without navigation (no plan): the registration is missing, and the tool if unseen.
    hud = _hud(ToolsResult([seen, hidden]), None)
    assert [t["navigation"]["missing"] for t in hud["tools"]] == [
        ["registration"],
        ["registration", "tool"],
    ]
    assert _hud(None, None)["tools"] == []  # type: ignore[arg-type]


def _published(failed: bool) -> dict[str, Any]:
    """What the publish stage sends per topic for one frame with a seen and a lost tool."""
    frame = Frame(1, np.zeros((480, 640, 3), np.uint8), PixelFormat.RGB8, None, 0.0, CAMERA)
    result = FrameResult(frame)
    hidden = ToolPose("p", ToolState.LOST, markers_total=3, frames_unseen=40)
    result.tools = ToolsResult([_seen().tools[0], hidden])
    result.navigation = [Navigation("g", False, ["registration"])]
    result.overlay = Overlay(
        1, 0.0, RegistrationState.TRACKING, True, "TRACKING", [], "c", "d", np.eye(4)
    )
    if failed:
        result.errors.append(StageFailure("navigation", "ValueError", "x"))
    publisher = _Publisher()
    PublishStage(publisher).process(result)  # type: ignore[arg-type]
    return {topic: payload for topic, payload, _ in publisher.sent}


def test_the_hud_repeats_each_tools_entry_of_the_tools_topic() -> None:
    sent = _published(failed=False)
    entries = sent[TOPIC_TOOLS]["tools"]
    assert sent[TOPIC_HUD]["tools"] == [{k: e[k] for k in HUD_KEYS} for e in entries]
    assert [t["navigation"]["missing"] for t in sent[TOPIC_HUD]["tools"]] == [
        ["registration"],
        ["registration", "tool"],
    ]
    # A frame a stage failed on sends no tools topic; the hud still says each tool's state.
    sent = _published(failed=True)
    assert TOPIC_TOOLS not in sent
    assert sent[TOPIC_HUD]["tools"] == [{k: e[k] for k in HUD_KEYS} for e in entries]


def test_a_malformed_hud_tools_list_is_refused() -> None:
    hud = _hud(_seen(), None)
    hud["tools"][0]["navigation"]["missing"] = []  # not current, yet nothing missing
    with pytest.raises(DecodeError, match="nothing is missing"):
        decode(encode(make_message(TOPIC_HUD, hud)))
    hud["tools"] = "g"
    with pytest.raises(DecodeError, match="tools"):
        decode(encode(make_message(TOPIC_HUD, hud)))
