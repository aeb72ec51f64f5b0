"""PublishStage: the pipeline's last stage, streaming each frame's overlay and HUD.

It also runs the 1 Hz ``status`` heartbeat from its own timer thread, so a
headset hears from the edge even when no face is seen or no frames arrive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.config import TransportConfig
from edge.errors import StateError
from edge.frames import FrameResult
from edge.plan.model import Plan
from edge.registration.types import RegistrationState
from edge.transport.protocol import TOPIC_HUD, TOPIC_OVERLAY, TOPIC_STATUS, TOPIC_TOOLS
from edge.transport.publisher import Publisher, VideoPreview
from edge.transport.security import is_loopback

log = logging.getLogger(__name__)


def plan_info(plan: Plan | None, problem: str = "") -> dict[str, str]:
    """What the heartbeat says about the plan: its case and digest, or why there is none
    (without a plan the heartbeat still runs and says why there is no overlay)."""
    if plan is not None:
        return {"case_id": plan.case_id, "digest": plan.digest}
    return {"refused": problem or "no plan loaded"}


class PublishStage:
    """Sends ``result.overlay`` on ``overlay`` and ``hud``; offers the frame to the video preview.

    Lifecycle: created -> ``start()`` (starts the status timer) -> ``close()``.
    ``process`` works without ``start`` (no heartbeat then), and raises
    StateError after ``close``.
    """

    name = "publish"

    def __init__(
        self,
        publisher: Publisher,
        *,
        video: VideoPreview | None = None,
        status_hz: float = 1.0,
        plan_info: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if status_hz <= 0:
            raise StateError(f"status_hz must be positive, got {status_hz}", "fix the config")
        self.publisher = publisher
        self.video = video
        self._status_interval = 1.0 / status_hz
        self._plan_info = dict(plan_info or {})
        self._clock = clock
        self._started_s = clock()
        self._lock = threading.Lock()
        self._state = RegistrationState.SEARCHING
        self._frames = 0
        self._last_frame_s: float | None = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._camera_display: Any = None  # the tools topic's display without an overlay
        self._closed = False

    @classmethod
    def from_config(
        cls, publisher: Publisher, config: TransportConfig, plan: dict[str, str]
    ) -> PublishStage:
        """The stage the configuration asks for: its heartbeat rate, and the video preview
        when ``video`` is on, or ``auto`` on a loopback endpoint. ``plan``: :func:`plan_info`."""
        video_on = config.video == "on" or (
            config.video == "auto" and is_loopback(publisher.endpoint)
        )
        video = (
            VideoPreview(
                publisher,
                max_fps=config.video_max_fps,
                max_width=config.video_max_width,
                jpeg_quality=config.video_jpeg_quality,
            )
            if video_on
            else None
        )
        log.info("video preview on %s: %s", publisher.endpoint, "on" if video_on else "off")
        return cls(publisher, video=video, status_hz=config.status_hz, plan_info=plan)

    def start(self) -> PublishStage:
        if self._timer is not None:
            raise StateError("publish stage already started", "start it once")
        self._timer = threading.Thread(target=self._status_loop, name="status-1hz", daemon=True)
        self._timer.start()
        return self

    def process(self, result: FrameResult) -> None:
        if self._closed:
            raise StateError("publish stage is closed", "create a new one")
        overlay = result.overlay
        frame = result.frame
        with self._lock:
            self._frames += 1
            self._last_frame_s = self._clock()
        # Each tool's map once a frame: the tools topic's entries, which the hud repeats.
        entries = None
        if result.tools is not None and not result.failed:
            entries = self._send_tools(result, overlay)
        if overlay is None:
            return  # an earlier stage failed: the status heartbeat still says we are alive
        with self._lock:
            self._state = overlay.state
        payload, arrays = overlay.overlay_payload()
        self.publisher.send(
            TOPIC_OVERLAY,
            payload,
            arrays,
            frame=overlay.frame_number,
            capture_unix_s=overlay.capture_unix_s,
        )
        hud = overlay.hud_payload()
        if result.tools is not None:
            from edge.tools.wire import hud_tools, tool_entries

            if entries is None:
                entries = tool_entries(result.tools, result.navigation)
            hud["tools"] = hud_tools(entries)
        self.publisher.send(
            TOPIC_HUD,
            hud,
            frame=overlay.frame_number,
            capture_unix_s=overlay.capture_unix_s,
        )
        if self.video is not None:
            self.video.offer(frame.bgr(), frame.number, overlay.capture_unix_s)
        result.published = True

    def _send_tools(self, result: FrameResult, overlay: Any) -> list[dict[str, Any]]:
        """The ``tools`` topic: tracked instruments and their navigation figures; returns
        its entries (:func:`edge.tools.wire.tool_entries`)."""
        from edge.overlay.project import DisplayProfile
        from edge.tools.wire import tools_payload

        assert result.tools is not None
        frame = result.frame
        # The overlay's display, so that the tool and the plan are drawn on the same one;
        # without an overlay (no plan), the camera's (its profile built once).
        profile = overlay.display if overlay is not None else None
        if profile is None:
            self._camera_display = self._camera_display or DisplayProfile()
            profile = self._camera_display
        payload, arrays = tools_payload(result.tools, result.navigation, profile, frame.intrinsics)
        self.publisher.send(
            TOPIC_TOOLS,
            payload,
            arrays,
            frame=frame.number,
            capture_unix_s=overlay.capture_unix_s if overlay is not None else None,
        )
        entries: list[dict[str, Any]] = payload["tools"]
        return entries

    def source_gap(self, reason: str) -> None:
        """Frames stopped: the heartbeat says LOST until an overlay says otherwise."""
        with self._lock:
            self._state = RegistrationState.LOST

    def status_payload(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            since = None if self._last_frame_s is None else (now - self._last_frame_s) * 1000.0
            return {
                "state": self._state.value,
                "uptime_s": now - self._started_s,
                "frames": self._frames,
                "last_frame_age_ms": since,
                "plan": dict(self._plan_info),
                "video": self.video is not None,
            }

    def send_status(self) -> None:
        self.publisher.send(TOPIC_STATUS, self.status_payload())

    def _status_loop(self) -> None:
        next_s = self._clock()
        while not self._stop.is_set():
            try:
                self.send_status()
            except StateError:
                return
            except Exception:
                log.exception("status heartbeat failed")
            next_s += self._status_interval
            self._stop.wait(max(0.0, next_s - self._clock()))

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=2.0)
        if self.video is not None:
            self.video.close()
