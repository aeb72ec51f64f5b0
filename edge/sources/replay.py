"""Replaying frames for the benchmarks: a source looped for as long as a run lasts, and a
scripted camera on a virtual clock.

``edge bench`` uses both: :class:`LoopingSource` replays a phantom recording
for a soak run of any length, :class:`ScriptedCamera` plays rendered frames
through the live camera's source (edge/sources/realsense.py) and unplugs it
for a while, to time how fast tracking recovers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.frames import Frame, FrameSource


class LoopingSource(FrameSource):
    """Replays a finite source over and over until ``should_stop()`` says so.

    ``make_inner()`` builds a fresh inner source for each pass (a recording is
    reopened). Frame numbers keep increasing across passes and device
    timestamps continue from the previous pass, so downstream the replay looks
    like one long session in which the head jumps at each pass boundary.
    ``passes`` counts completed passes. Ground truth is dropped when
    ``keep_truth`` is False (a theatre camera has none; it also keeps
    accuracy bookkeeping out of memory measurements). ``paced``: whether the passes are
    (real-time timing).
    """

    name = "loop"

    def __init__(
        self,
        make_inner: Callable[[], FrameSource],
        should_stop: Callable[[], bool],
        *,
        keep_truth: bool = False,
        paced: bool = False,
    ) -> None:
        super().__init__()
        self._paced = paced
        self._make_inner = make_inner
        self._should_stop = should_stop
        self._keep_truth = keep_truth
        self._inner: FrameSource | None = None
        self._number = 0
        self._offset_ms = 0.0
        self._last_ms = 0.0
        self._period_ms = 1000.0 / 30.0
        self.passes = 0

    @property
    def nominal_fps(self) -> float:
        return self._inner.nominal_fps if self._inner is not None else 30.0

    @property
    def paced(self) -> bool:
        return self._paced

    def _open(self) -> None:
        self._inner = self._make_inner()
        self._inner.open()
        self._period_ms = 1000.0 / self._inner.nominal_fps

    def _close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def _read(self) -> Frame | None:
        if self._should_stop():
            return None
        assert self._inner is not None
        frame = self._inner.read()
        if frame is None:
            self.passes += 1
            self._inner.close()
            self._offset_ms = self._last_ms + self._period_ms
            self._inner = self._make_inner()
            self._inner.open()
            frame = self._inner.read()
            if frame is None:
                return None  # an empty inner source: nothing to loop
        out = copy.copy(frame)
        out.number = self._number
        self._number += 1
        out.device_timestamp_ms = frame.device_timestamp_ms + self._offset_ms
        self._last_ms = out.device_timestamp_ms
        if not self._keep_truth:
            out.truth = None
        return out


class ScriptedCamera:
    """A camera layer (:class:`edge.sources.realsense.CameraLayer`) on a virtual clock.

    Plays ``frames`` as a live camera would at ``fps``: the frame shown at
    virtual time t is ``frames[int(t * fps) % len(frames)]`` (frames keep
    coming while nobody reads). During each ``(start_s, end_s)`` of ``away``
    the camera is unplugged: a running session raises DeviceLostError and
    ``find_serials`` finds nothing. Pass :meth:`clock` and :meth:`sleep` to
    :class:`~edge.sources.realsense.RealSenseSource` so its backoff runs on
    the same virtual time. ``connected_at_s`` lists when sessions were opened.
    """

    serial = "scripted-0"

    def __init__(
        self, frames: list[Frame], away: list[tuple[float, float]], fps: float = 30.0
    ) -> None:
        if not frames:
            raise ValueError("a scripted camera needs at least one frame")
        self.frames = frames
        self.away = list(away)
        self.fps = fps
        self.now_s = 0.0
        self.connected_at_s: list[float] = []
        first = frames[0]
        from edge.sources.realsense import StreamSetup

        self.setup = StreamSetup(
            serial=self.serial,
            intrinsics=first.intrinsics,
            depth_scale_m=first.depth_scale_m,
            depth_to_color=first.depth_to_color,
        )

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += max(seconds, 0.0)

    def present(self) -> bool:
        return not any(a <= self.now_s < b for a, b in self.away)

    def find_serials(self) -> list[str]:
        return [self.serial] if self.present() else []

    def open(self, serial: str, config: Any, preset_json: Any, record_to: Any) -> Any:
        from edge.errors import SourceError

        if not self.present():
            raise SourceError(f"camera {serial} not found", "plug it in")
        self.connected_at_s.append(self.now_s)
        return _ScriptedSession(self)


class _ScriptedSession:
    def __init__(self, camera: ScriptedCamera) -> None:
        self.camera = camera
        self.setup = camera.setup

    def wait(self, timeout_ms: int) -> Any:
        from edge.sources.realsense import DeviceLostError, RawFrame

        cam = self.camera
        if not cam.present():
            raise DeviceLostError(cam.serial)
        # The next frame is captured one period from now (a camera streams on its own clock).
        cam.now_s = (math.floor(cam.now_s * cam.fps + 1e-9) + 1) / cam.fps
        if not cam.present():
            raise DeviceLostError(cam.serial)
        frame = cam.frames[round(cam.now_s * cam.fps) % len(cam.frames)]
        depth = frame.depth if frame.depth is not None else np.zeros(frame.color.shape[:2], "u2")
        return RawFrame(color=frame.rgb(), depth=depth, timestamp_ms=cam.now_s * 1000.0)

    def stop(self) -> None:
        pass
