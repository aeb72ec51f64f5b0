"""The phantom's scenarios: per-frame head poses and what is in the scene.

Distances are camera-to-nasion (the head centre is 90 mm further). Every
scenario is deterministic given its frame count; noise is seeded separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import SourceError
from edge.sources.phantom.face import NASION_TO_HEAD_CENTRE_M
from edge.sources.phantom.motion import pose_matrix


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    drape: bool = False  # a cloth covers the lower 40 % of the face
    spoof: bool = False  # a flat printed photo instead of the head


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("static", "the head still, facing the camera"),
        Scenario("nod-shake", "the head shakes (yaw +/-25 deg) and nods (pitch +/-15 deg)"),
        Scenario("approach", "the head comes from 0.8 m to 0.4 m"),
        Scenario("drape", "a surgical drape covers the lower 40 % of the face", drape=True),
        Scenario("leave-return", "the head moves out of view sideways and comes back"),
        Scenario(
            "photo-spoof",
            "a flat printed photograph of the face at the same distance, no patient",
            spoof=True,
        ),
        Scenario("motion", "poses from a motion file (--motion)"),
    )
}

DRAPE_FRACTION = 0.40  # of the forehead-to-chin height, from the chin up
YAW_AMPLITUDE_DEG = 25.0
PITCH_AMPLITUDE_DEG = 15.0
YAW_PERIOD_S = 4.0
PITCH_PERIOD_S = 3.0
APPROACH_M = (0.8, 0.4)
LEAVE_OFFSET_M = 0.5  # sideways: well outside a 640 px wide, fx=615 view at 0.6 m


def get_scenario(name: str) -> Scenario:
    """The scenario of that name; raises SourceError listing the valid names."""
    try:
        return SCENARIOS[name]
    except KeyError:
        valid = ", ".join(n for n in SCENARIOS if n != "motion")
        raise SourceError(
            f"unknown phantom scenario '{name}'", f"choose one of {valid} (or pass --motion FILE)"
        ) from None


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def scenario_poses(name: str, frames: int, distance_m: float, fps: float) -> np.ndarray:
    """(frames, 4, 4) ``face_to_camera`` for a built-in scenario."""
    get_scenario(name)
    n = np.arange(frames)
    t_s = n / fps
    yaw = np.zeros(frames)
    pitch = np.zeros(frames)
    x = np.zeros(frames)
    dist = np.full(frames, distance_m)
    if name == "nod-shake":
        yaw = YAW_AMPLITUDE_DEG * np.sin(2 * np.pi * t_s / YAW_PERIOD_S)
        pitch = PITCH_AMPLITUDE_DEG * np.sin(2 * np.pi * t_s / PITCH_PERIOD_S)
    elif name == "approach":
        f = n / max(frames - 1, 1)
        dist = APPROACH_M[0] + (APPROACH_M[1] - APPROACH_M[0]) * _smoothstep(f)
    elif name == "leave-return":
        # centre 20 %, out 20 %, away 20 %, back 20 %, centre 20 %
        f = n / max(frames - 1, 1)
        out = _smoothstep((f - 0.2) / 0.2) - _smoothstep((f - 0.6) / 0.2)
        x = LEAVE_OFFSET_M * out
    elif name == "drape":
        yaw = 8.0 * np.sin(2 * np.pi * t_s / 5.0)  # a little motion under the drape
    return np.stack(
        [
            pose_matrix((x[i], 0.0, dist[i] + NASION_TO_HEAD_CENTRE_M), (pitch[i], yaw[i], 0.0))
            for i in range(frames)
        ]
    )
