"""The tracked tools against ground truth (a sink; the phantom's tool scenarios).

Per frame with a tool in its truth: the tip's and the axis's error when the tool is
shown as current, whether it was shown while not visible (never allowed), how many
frames its state took to follow an occlusion and a return, and, with a plan, the
navigation figures against the same figures computed from the true poses.
Keys are documented in docs/benchmark.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from edge.evaluation import percentiles
from edge.frames import FrameResult
from edge.overlay.navigation import PlanNavigation
from edge.plan.model import Plan
from edge.registration.types import RegistrationState
from edge.tools.types import Navigation

NAV_KEYS = ("distance_to_target_mm", "lateral_offset_mm", "angle_deg", "remaining_depth_mm")


# Distance bands (m) of the tool from the camera for the tip error (issue 16: 0.4-0.7 m).
RANGE_BANDS_M = ((0.4, 0.5), (0.5, 0.6), (0.6, 0.7))


def _median_p95(values: list[float]) -> dict[str, float]:
    p = percentiles(values, 50, 95)
    return {"median": p["p50"], "p95": p["p95"]}


def tip_error_by_range(tip_mm: list[float], range_m: list[float]) -> dict[str, dict[str, float]]:
    """Median and p95 tip error and frame count per :data:`RANGE_BANDS_M` band of the tool's
    distance from the camera (a band's lower bound is in it, its upper one is not)."""
    out: dict[str, dict[str, float]] = {}
    for lo, hi in RANGE_BANDS_M:
        errors = [e for e, r in zip(tip_mm, range_m, strict=True) if lo <= r < hi]
        out[f"{lo:.1f}-{hi:.1f}"] = {**_median_p95(errors), "frames": len(errors)}
    return out


@dataclass
class ToolEvaluator:
    """Collects the tool figures of a run; read them with :meth:`summary`."""

    plan: Plan | None = None
    tip_mm: list[float] = field(default_factory=list)
    # The true distance from the camera to the tool's origin (its marker body), per tip_mm.
    range_m: list[float] = field(default_factory=list)
    axis_deg: list[float] = field(default_factory=list)
    visible: list[bool] = field(default_factory=list)
    current: list[bool] = field(default_factory=list)
    shown_not_visible: int = 0
    nav_errors: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in NAV_KEYS})
    nav_current: int = 0
    nav_current_without_inputs: int = 0
    states: dict[str, int] = field(default_factory=dict)

    name: ClassVar[str] = "tool-evaluation"

    @cached_property
    def _plan_navigation(self) -> PlanNavigation:
        """The plan prepared for the true figures (once a run)."""
        assert self.plan is not None
        return PlanNavigation(self.plan)

    def consume(self, result: FrameResult) -> None:
        truth = result.frame.truth
        if truth is None or truth.tool_to_camera is None or result.tools is None:
            return
        tool = result.tools.get(truth.tool_name)
        if tool is None:
            return
        self.states[tool.state.value] = self.states.get(tool.state.value, 0) + 1
        self.visible.append(bool(truth.tool_visible))
        self.current.append(tool.current)
        if tool.current and not truth.tool_visible:
            self.shown_not_visible += 1
        if tool.current and truth.tool_visible:
            assert tool.tip_camera_m is not None and tool.axis_camera is not None
            assert truth.tool_tip_camera_m is not None and truth.tool_axis_camera is not None
            tip_m = float(np.linalg.norm(tool.tip_camera_m - truth.tool_tip_camera_m))
            self.tip_mm.append(tip_m * 1000.0)
            cos = float(np.clip(tool.axis_camera @ truth.tool_axis_camera, -1.0, 1.0))
            self.axis_deg.append(math.degrees(math.acos(cos)))
            self.range_m.append(float(np.linalg.norm(truth.tool_to_camera[:3, 3])))
        nav = next((n for n in result.navigation or [] if n.tool == tool.name), None)
        if nav is not None and nav.current:
            self.nav_current += 1
            reg = result.registration
            if not tool.current or reg is None or reg.state is not RegistrationState.TRACKING:
                self.nav_current_without_inputs += 1
            if self.plan is not None:
                self._navigation_errors(nav, truth)

    def _navigation_errors(self, nav: Navigation, truth: Any) -> None:
        assert self.plan is not None
        camera_to_patient = np.linalg.inv(truth.patient_to_camera)
        tip = camera_to_patient[:3, :3] @ truth.tool_tip_camera_m + camera_to_patient[:3, 3]
        axis = camera_to_patient[:3, :3] @ truth.tool_axis_camera
        true = self._plan_navigation.figures(nav.tool, tip, axis, 0.0)
        for est, ref in zip(nav.target_distance_mm, true.target_distance_mm, strict=True):
            self.nav_errors["distance_to_target_mm"].append(abs(est - ref))
        for e, r in zip(nav.trajectories, true.trajectories, strict=True):
            self.nav_errors["lateral_offset_mm"].append(
                abs(e.lateral_offset_mm - r.lateral_offset_mm)
            )
            self.nav_errors["angle_deg"].append(abs(e.angle_deg - r.angle_deg))
            self.nav_errors["remaining_depth_mm"].append(
                abs(e.remaining_depth_mm - r.remaining_depth_mm)
            )

    def _latencies(self) -> dict[str, float]:
        """Worst frames from the tool's disappearance to not current, and from its return
        to current (0: that very frame)."""
        gone: list[float] = []
        back: list[float] = []
        for i in range(1, len(self.visible)):
            if self.visible[i - 1] == self.visible[i]:
                continue
            want = self.visible[i]
            later = [j for j in range(i, len(self.current)) if self.current[j] == want]
            (back if want else gone).append(float(later[0] - i) if later else float("inf"))
        return {
            "tool_frames_to_unseen": max(gone) if gone else float("nan"),
            "tool_frames_to_current_after_return": max(back) if back else float("nan"),
        }

    def summary(self) -> dict[str, Any]:
        if not self.visible:
            return {}
        total = len(self.visible)
        out: dict[str, Any] = {
            "tool_tip_error_mm": _median_p95(self.tip_mm),
            "tool_tip_error_mm_by_range": tip_error_by_range(self.tip_mm, self.range_m),
            "tool_distance_m": {
                "min": min(self.range_m, default=float("nan")),
                "max": max(self.range_m, default=float("nan")),
            },
            "tool_axis_error_deg": _median_p95(self.axis_deg),
            "tool_frames": total,
            "tool_visible_fraction": sum(self.visible) / total,
            "tool_current_fraction": sum(self.current) / total,
            "tool_shown_not_visible": self.shown_not_visible,
            "tool_state_fractions": {k: n / total for k, n in sorted(self.states.items())},
            **self._latencies(),
        }
        if self.plan is not None:
            out["navigation_current_fraction"] = self.nav_current / total
            out["navigation_current_without_inputs"] = self.nav_current_without_inputs
            out["navigation_error"] = {k: _median_p95(v) for k, v in self.nav_errors.items()}
        return out
