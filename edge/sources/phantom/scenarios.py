"""The phantom's scenarios: per-frame head poses and what is in the scene.

Distances are camera-to-nasion (the head centre is 90 mm further). Every
scenario's motion is deterministic given its frame count; noise and, in the
theatre scenarios, the drape's shape and the jaw's and smile's amplitudes are
drawn from the seed (:func:`theatre_draw`).
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
    drape: bool = False  # a cloth covers part of the face
    spoof: bool = False  # a flat printed photo instead of the head
    # Where the drape comes from ("below", "side") and its coverage range (fraction of
    # the face's height from the chin, or of its width from one side); one value each
    # is drawn from the seed. The `drape` scenario's is fixed: 40 % from below.
    drape_from: tuple[str, ...] = ("below",)
    drape_coverage: tuple[float, float] = (0.40, 0.40)
    drape_randomised: bool = False
    jaw: bool = False  # the jaw opens and closes (up to JAW_OPENING_M at the chin)
    smile: bool = False  # the mouth corners and cheeks move (up to SMILE_M)
    tool: str = ""  # a tracked tool (hardware/tools/NAME.toml), moving as tool_motion says
    tool_occluded: bool = False  # a hand hides the tool for some frames (phantom/tool.py)
    # "approach" (the frontal trajectory), "pivot" (about its tip at the entry, for the
    # calibration), "touch" (landmarks in turn) or "range" (0.7 m to 0.4 m from the camera)
    tool_motion: str = "approach"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("static", "the head still, facing the camera"),
        Scenario("nod-shake", "the head shakes (yaw +/-25 deg) and nods (pitch +/-15 deg)"),
        Scenario("approach", "the head comes from 0.8 m to 0.4 m"),
        Scenario("drape", "a surgical drape covers the lower 40 % of the face", drape=True),
        Scenario(
            "drape-half",
            "a drape with folds covers the lower 45-65 % of the face, 2-30 mm off the skin",
            drape=True,
            drape_coverage=(0.45, 0.65),
            drape_randomised=True,
        ),
        Scenario(
            "drape-side",
            "a drape with folds covers 30-50 % of the face from one side",
            drape=True,
            drape_from=("side",),
            drape_coverage=(0.30, 0.50),
            drape_randomised=True,
        ),
        Scenario(
            "jaw",
            "the jaw opens up to ~12 mm at the chin and the patient smiles (skull rigid)",
            jaw=True,
            smile=True,
        ),
        Scenario(
            "theatre",
            "jaw and smile under a drape over 25-35 % of the face, from below or one side",
            drape=True,
            drape_from=("below", "side"),
            drape_coverage=(0.25, 0.35),
            drape_randomised=True,
            jaw=True,
            smile=True,
        ),
        Scenario("leave-return", "the head moves out of view sideways and comes back"),
        Scenario(
            "photo-spoof",
            "a flat printed photograph of the face at the same distance, no patient",
            spoof=True,
        ),
        Scenario(
            "needle-approach",
            "a needle guide approaches the frontal trajectory's entry along the plan, then off it",
            tool="needle-guide",
        ),
        Scenario(
            "tool-occluded",
            "needle-approach with a hand hiding the guide for some frames",
            tool="needle-guide",
            tool_occluded=True,
        ),
        Scenario(
            "tool-pivot",
            "the needle guide pivots about its tip at the frontal entry (pivot calibration)",
            tool="needle-guide",
            tool_motion="pivot",
        ),
        Scenario(
            "tool-range",
            "the needle guide comes from 0.7 m to 0.4 m from the camera, beside the head",
            tool="needle-guide",
            tool_motion="range",
        ),
        Scenario(
            "pointer-touch",
            "the pointer touches the mid-forehead, the nasion and the nose bridge in turn",
            tool="pointer",
            tool_motion="touch",
        ),
        Scenario("motion", "poses from a motion file (--motion)"),
    )
}

YAW_AMPLITUDE_DEG = 25.0
PITCH_AMPLITUDE_DEG = 15.0
YAW_PERIOD_S = 4.0
PITCH_PERIOD_S = 3.0
APPROACH_M = (0.8, 0.4)
LEAVE_OFFSET_M = 0.5  # sideways: well outside a 640 px wide, fx=615 view at 0.6 m
TOOL_HEAD_DEG = (20.0, -12.0)  # yaw, pitch of the head in the tool scenarios
JAW_OPENING_M = (0.009, 0.012)  # at the chin, drawn per seed
SMILE_M = (0.003, 0.005)  # at the mouth corners, drawn per seed
DRAPE_OFFSET_M = (0.002, 0.010)  # the cloth's smallest gap to the skin, drawn per seed
DRAPE_FOLD_M = (0.004, 0.020)  # fold depth on top of the gap, drawn per seed
DRAPE_COLOURS = (
    (62, 104, 158),  # surgical-drape blue
    (70, 128, 112),  # surgical green
)


@dataclass(frozen=True)
class TheatreDraw:
    """What the seed chose for one run of a scenario (all metres)."""

    drape_from: str
    drape_side: int  # +1: from the subject's left (face-frame +x), -1: from the right
    drape_coverage: float
    drape_offset_m: float
    drape_fold_m: float
    drape_phase: float
    drape_rgb: tuple[int, int, int]
    jaw_m: float
    smile_m: float


def theatre_draw(scenario: Scenario, seed: int) -> TheatreDraw:
    """The seed's drape, jaw and smile for ``scenario`` (fixed ones for `drape`)."""
    rng = np.random.default_rng([int(seed), 18])
    u = rng.random(9)

    def within(lo_hi: tuple[float, float], x: float) -> float:
        return float(lo_hi[0] + (lo_hi[1] - lo_hi[0]) * x)

    jaw_m = within(JAW_OPENING_M, u[7]) if scenario.jaw else 0.0
    smile_m = within(SMILE_M, u[8]) if scenario.smile else 0.0
    if not scenario.drape_randomised:
        return TheatreDraw(
            "below", 1, scenario.drape_coverage[0], 0.008, 0.0, 0.0, DRAPE_COLOURS[0],
            jaw_m, smile_m,
        )  # fmt: skip
    return TheatreDraw(
        drape_from=scenario.drape_from[int(u[0] * len(scenario.drape_from))],
        drape_side=1 if u[1] < 0.5 else -1,
        drape_coverage=within(scenario.drape_coverage, u[2]),
        drape_offset_m=within(DRAPE_OFFSET_M, u[3]),
        drape_fold_m=within(DRAPE_FOLD_M, u[4]),
        drape_phase=float(u[5] * 2 * np.pi),
        drape_rgb=DRAPE_COLOURS[int(u[6] * len(DRAPE_COLOURS))],
        jaw_m=jaw_m,
        smile_m=smile_m,
    )


def get_scenario(name: str) -> Scenario:
    """The scenario of that name; raises SourceError listing the valid names."""
    try:
        return SCENARIOS[name]
    except KeyError:
        valid = ", ".join(n for n in SCENARIOS if n != "motion")
        raise SourceError(
            f"unknown phantom scenario '{name}'", f"choose one of {valid} (or pass --motion FILE)"
        ) from None


TOOL_SCENARIOS = ("needle-approach", "tool-occluded", "tool-pivot", "tool-range", "pointer-touch")


def tool_head_pose(distance_m: float) -> np.ndarray:
    """``face_to_camera`` of the tool scenarios: turned and tilted back (TOOL_HEAD_DEG), so
    that the frontal trajectory runs obliquely away from the camera and the guide's body
    stays clear of the face."""
    return pose_matrix(
        (0.0, 0.0, distance_m + NASION_TO_HEAD_CENTRE_M), (TOOL_HEAD_DEG[1], TOOL_HEAD_DEG[0], 0.0)
    )


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
    elif name in TOOL_SCENARIOS:
        return np.repeat(tool_head_pose(distance_m)[None], frames, axis=0)
    elif name in ("drape", "drape-half", "drape-side", "jaw", "theatre"):
        yaw = 8.0 * np.sin(2 * np.pi * t_s / 5.0)  # a little motion under the drape
    return np.stack(
        [
            pose_matrix((x[i], 0.0, dist[i] + NASION_TO_HEAD_CENTRE_M), (pitch[i], yaw[i], 0.0))
            for i in range(frames)
        ]
    )
