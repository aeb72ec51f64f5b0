"""What the overlay stage hands to the transport (the contract between the two).

An :class:`Overlay` is one frame's overlay in the camera frame (metres) and
on the display (pixels), with the registration state it was built in, and
its wire form (the ``overlay`` and ``hud`` topics of docs/protocol.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.camera import Intrinsics
from edge.overlay.project import DisplayProfile
from edge.registration.types import RegistrationState
from edge.transport.prediction import PoseVelocity


@dataclass
class Overlay:
    """One frame's overlay; positions in the camera frame (metres), pixels on the display."""

    frame_number: int
    capture_unix_s: float
    state: RegistrationState
    current: bool
    state_text: str
    reasons: list[str]
    case_id: str
    plan_digest: str
    patient_to_camera: np.ndarray | None
    skin_asset: str = ""
    target_names: list[str] = field(default_factory=list)
    targets_camera_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    tre_mm: list[float] = field(default_factory=list)  # calibrated estimate (95 % bound)
    landmark_tre_mm: list[float] = field(default_factory=list)  # landmark-only cross-check
    skin_distance_mm: list[float] = field(default_factory=list)
    trajectory_names: list[str] = field(default_factory=list)
    trajectories_camera_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    cut_plane_names: list[str] = field(default_factory=list)
    cut_planes_camera: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    structures: list[dict[str, Any]] = field(default_factory=list)
    display_name: str = "camera"
    display_intrinsics: Intrinsics | None = None
    # The display profile it is drawn for (not on the wire: the tools topic projects with it).
    display: DisplayProfile | None = None
    targets_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    targets_visible: list[bool] = field(default_factory=list)
    trajectories_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2)))
    registration_age_ms: float | None = None
    fps: float = 0.0
    latency_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)  # device-level (e.g. stale calibration)
    # The rigid face's regions the surface fit rested on this frame (empty: no fit).
    regions: list[str] = field(default_factory=list)
    # The pose's motion at capture, for prediction to display time; only on a current overlay.
    velocity: PoseVelocity | None = None

    # ------------------------------------------------------------------ wire form

    def overlay_payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Payload map and arrays of the ``overlay`` topic (docs/protocol.md)."""
        intr = self.display_intrinsics
        payload: dict[str, Any] = {
            "state": self.state.value,
            "current": self.current,
            "state_text": self.state_text,
            "reasons": list(self.reasons),
            "regions": list(self.regions),
            "plan": {"case_id": self.case_id, "digest": self.plan_digest},
            "skin_asset": self.skin_asset,
            "targets": [
                {
                    "name": n,
                    "tre_mm": _num(self.tre_mm[i]),
                    "landmark_tre_mm": _num(self.landmark_tre_mm[i]),
                    "skin_distance_mm": _num(self.skin_distance_mm[i]),
                    "visible": bool(self.targets_visible[i]),
                }
                for i, n in enumerate(self.target_names)
            ],
            "trajectories": [{"name": n} for n in self.trajectory_names],
            "cut_planes": [{"name": n} for n in self.cut_plane_names],
            "structures": list(self.structures),
            "display": {
                "name": self.display_name,
                "width": intr.width if intr else 0,
                "height": intr.height if intr else 0,
                "fx": intr.fx if intr else 0.0,
                "fy": intr.fy if intr else 0.0,
                "ppx": intr.ppx if intr else 0.0,
                "ppy": intr.ppy if intr else 0.0,
            },
        }
        arrays: dict[str, np.ndarray] = {}
        if self.patient_to_camera is not None:
            arrays["patient_to_camera"] = self.patient_to_camera
        if self.target_names:
            arrays["targets_camera_m"] = self.targets_camera_m
            arrays["targets_px"] = self.targets_px
        if self.trajectory_names:
            arrays["trajectories_camera_m"] = self.trajectories_camera_m
            arrays["trajectories_px"] = self.trajectories_px
        if self.cut_plane_names:
            arrays["cut_planes_camera"] = self.cut_planes_camera
        if self.velocity is not None and self.current:
            arrays.update(self.velocity.to_arrays())
        return payload, arrays

    def hud_payload(self) -> dict[str, Any]:
        """Payload map of the ``hud`` topic: what a text-only display shows."""
        return {
            "state": self.state.value,
            "state_text": self.state_text,
            "current": self.current,
            "registration_age_ms": self.registration_age_ms,
            "fps": self.fps,
            "latency_ms": self.latency_ms,
            "warnings": list(self.warnings),
            "regions": list(self.regions),
            "targets": [
                {
                    "name": n,
                    "tre_mm": _num(self.tre_mm[i]),
                    "landmark_tre_mm": _num(self.landmark_tre_mm[i]),
                    "skin_distance_mm": _num(self.skin_distance_mm[i]),
                }
                for i, n in enumerate(self.target_names)
            ],
            "tools": [],  # filled by the publish stage from the frame's tools (edge.tools.wire)
        }


def _num(x: float) -> float | None:
    """NaN is sent as nil so that clients need not special-case it."""
    return None if x is None or not math.isfinite(x) else float(x)
