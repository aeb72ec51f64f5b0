"""OverlayStage: the pipeline stage that puts an :class:`Overlay` on each FrameResult."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.config import OverlayConfig
from edge.errors import StateError
from edge.frames import FrameResult
from edge.overlay.content import LAYERS, build_overlay
from edge.overlay.motion import VelocityEstimator
from edge.overlay.prepared import PlanPrimitives
from edge.overlay.project import DisplayProfile, Projection
from edge.overlay.raycast import MeshRaycaster
from edge.plan.model import Plan


class OverlayStage:
    """Builds the overlay from ``result.registration`` and the plan (stage name "overlay").

    ``display_profile`` None means the camera's own intrinsics. The clocks
    (wall and monotonic) are injectable for tests. Layers can be switched
    from another thread (a headset command) with :meth:`set_layer`.
    """

    name = "overlay"

    def __init__(
        self,
        plan: Plan,
        display_profile: DisplayProfile | None = None,
        config: OverlayConfig | None = None,
        *,
        warnings: tuple[str, ...] = (),
        wall_clock: Callable[[], float] = time.time,
        mono_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = display_profile or DisplayProfile()
        self.config = config or OverlayConfig()
        if self.config.fps_window < 2:
            raise StateError("overlay fps_window must be at least 2", "set fps_window >= 2")
        self.warnings = tuple(warnings)  # shown on every frame's HUD (e.g. stale calibration)
        self._wall = wall_clock
        self._mono = mono_clock
        self._times: collections.deque[float] = collections.deque(maxlen=self.config.fps_window)
        self._layers = set(LAYERS)
        self._layers_shown = frozenset(LAYERS)  # a copy of _layers for the frames to read
        self._lock = threading.Lock()
        self._projection: Projection | None = None  # for the last frame's camera
        self.plan = plan  # fixed for the stage's life: what every frame uses of it is
        # prepared once, here: its primitives in its frame, the raycaster (the per-frame ray
        # casts then only test nearby triangles) and the point whose velocity is given.
        self._primitives = PlanPrimitives.from_plan(plan)
        self._raycaster = (
            MeshRaycaster(plan.skin.vertices, plan.skin.faces)
            if self.config.skin_distance
            else None
        )
        # The velocity is given at the targets (their centroid), where prediction matters.
        targets = list(plan.targets.values())
        self._velocity = VelocityEstimator(
            self.config.velocity_frames,
            np.mean(targets, axis=0) if targets else np.zeros(3),
        )
        # Headset commands this stage carries out (edge.app routes them here).
        self.commands: dict[str, Callable[[dict[str, Any]], None]] = {
            "toggle_layer": lambda args: self.set_layer(args["layer"], args["visible"])
        }

    def set_layer(self, layer: str, visible: bool) -> None:
        """Show or hide one layer; raises StateError for an unknown layer name."""
        if layer not in LAYERS:
            raise StateError(f"unknown layer {layer!r}", "layers are " + ", ".join(LAYERS))
        with self._lock:
            (self._layers.add if visible else self._layers.discard)(layer)
            self._layers_shown = frozenset(self._layers)

    @property
    def layers(self) -> frozenset[str]:
        """The layers shown (a frozen copy, replaced whole by :meth:`set_layer`)."""
        return self._layers_shown

    def process(self, result: FrameResult) -> None:
        frame = result.frame
        now_mono = self._mono()
        # The frame's capture time on the wall clock, for clients on other machines.
        capture_unix_s = self._wall() - (now_mono - frame.host_timestamp_s)
        self._times.append(frame.capture_s)  # the camera's rate, the same on every replay
        fps = 0.0
        if len(self._times) >= 2 and self._times[-1] > self._times[0]:
            fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])
        registration = None if result.failed else result.registration
        if self._projection is None or not self._projection.matches(self.profile, frame.intrinsics):
            self._projection = Projection(self.profile, frame.intrinsics)
        result.overlay = build_overlay(
            frame_number=frame.number,
            capture_unix_s=capture_unix_s,
            capture_s=frame.capture_s,
            registration=registration,
            plan=self.plan,
            profile=self.profile,
            camera=frame.intrinsics,
            layers=self.layers,
            skin_distance=self.config.skin_distance,
            raycaster=self._raycaster,
            fps=fps,
            latency_ms=(now_mono - frame.host_timestamp_s) * 1000.0,
            warnings=self.warnings,
            primitives=self._primitives,
            projection=self._projection,
        )
        overlay = result.overlay
        current = overlay.patient_to_camera if overlay.current else None
        overlay.velocity = self._velocity.update(frame.capture_s, current)

    def source_gap(self, reason: str) -> None:
        """Frames stopped: the motion before the gap says nothing about the motion after."""
        self._velocity.reset()
