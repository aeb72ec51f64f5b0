"""A fault-injecting frame source: wraps any source and breaks it on a schedule.

Used by the fault tests and by the soak benchmark to show what the pipeline
does with the faults a theatre produces: frames dropped, late, duplicated or
out of order, depth missing or all zero, NaN or infinite numbers where the
camera's metadata should be, a source that raises, and a camera that is
unplugged for a while and comes back.

Each :class:`Fault` applies to a run of frames of the *inner* source, counted
from 0 in the order they are read from it. Faults that change a frame copy
it first, so the inner source's frames are never modified.

Unplugging follows the live camera's contract (edge/sources/realsense.py):
while unplugged, ``read()`` raises :class:`FrameTimeout` with
``reconnecting=True`` and the state is RECONNECTING; after ``count`` such
reads the camera is "back" and frames resume (nothing is lost from the inner
source: a real camera delivers nothing while away, and the next frame is the
next capture).
"""

from __future__ import annotations

import copy
import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import DeviceLostError, FrameTimeout, InjectedFaultError
from edge.frames import Frame, FrameSource, Intrinsics, SourceState


class FaultKind(str, enum.Enum):
    """What goes wrong with a frame."""

    DROP = "drop"  # the frame never arrives
    DUPLICATE = "duplicate"  # the frame arrives twice
    REORDER = "reorder"  # the frame arrives after the one that follows it
    LATE = "late"  # arrives ``value`` seconds after its capture time
    NO_DEPTH = "no_depth"  # depth stream missing (depth is None)
    ZERO_DEPTH = "zero_depth"  # every depth pixel 0 (no measurement)
    BAD_DEPTH_SCALE = "bad_depth_scale"  # depth_scale_m set to ``value`` (NaN, inf, 0, < 0)
    BAD_INTRINSICS = "bad_intrinsics"  # ppx, ppy (and fx, fy when ``value`` > 0) set to value
    RAISE = "raise"  # reading the frame raises RuntimeError
    UNPLUG = "unplug"  # ``count`` reads raise FrameTimeout(reconnecting=True), then resume


@dataclass(frozen=True)
class Fault:
    """``kind`` applied to inner frames ``start`` .. ``start + count - 1``.

    For UNPLUG, ``start`` is the inner frame before which the camera goes
    away and ``count`` the number of reads that find it gone.
    """

    kind: FaultKind
    start: int
    count: int = 1
    value: float = math.nan

    def __post_init__(self) -> None:
        if self.start < 0 or self.count < 1:
            raise ValueError(
                f"fault needs start >= 0 and count >= 1, got {self.start}, {self.count}"
            )

    def covers(self, index: int) -> bool:
        return self.start <= index < self.start + self.count


def _with_bad_intrinsics(intr: Intrinsics, value: float) -> Intrinsics:
    # Intrinsics refuses non-positive and NaN focal lengths, so only a positive
    # infinite one can be injected there; the principal point takes anything.
    fx, fy = (value, value) if value > 0 else (intr.fx, intr.fy)
    return Intrinsics(intr.width, intr.height, fx, fy, value, value, intr.model, intr.coeffs)


class FaultySource(FrameSource):
    """Wraps ``inner`` and applies ``faults`` (see the module docstring).

    ``injected`` counts the faults applied, by kind. The wrapper owns the inner
    source: opening and closing it opens and closes the inner one.
    """

    def __init__(self, inner: FrameSource, faults: list[Fault] | tuple[Fault, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.name = f"faulty {inner.name}"
        self.faults = list(faults)
        self.injected: dict[str, int] = {}
        self._index = 0  # next inner frame to read
        self._queue: deque[Frame] = deque()  # frames ready to deliver before reading again
        self._unplugged_reads = 0
        self._unplug_done: set[int] = set()

    @property
    def frame_count(self) -> int | None:
        return None  # faults change how many frames come out

    @property
    def nominal_fps(self) -> float:
        return self.inner.nominal_fps

    def _count(self, kind: FaultKind) -> None:
        self.injected[kind.value] = self.injected.get(kind.value, 0) + 1

    def _faults_at(self, index: int) -> list[Fault]:
        return [f for f in self.faults if f.covers(index) and f.kind is not FaultKind.UNPLUG]

    def _open(self) -> None:
        self.inner.open()

    def _close(self) -> None:
        self.inner.close()

    def _read(self) -> Frame | None:
        if self._queue:
            return self._queue.popleft()
        self._unplug()
        if self._state is SourceState.RECONNECTING:
            self._state = SourceState.OPEN  # the camera is back
        while True:
            index = self._index
            faults = self._faults_at(index)
            if any(f.kind is FaultKind.RAISE for f in faults):
                self.inner.read()  # the frame is lost with the error
                self._index += 1
                self._count(FaultKind.RAISE)
                raise InjectedFaultError(f"injected failure reading frame {index}")
            frame = self.inner.read()
            self._index += 1
            if frame is None:
                return None
            if any(f.kind is FaultKind.DROP for f in faults):
                self._count(FaultKind.DROP)
                continue
            frame = self._damage(frame, faults)
            if any(f.kind is FaultKind.DUPLICATE for f in faults):
                self._count(FaultKind.DUPLICATE)
                self._queue.append(frame)
            if any(f.kind is FaultKind.REORDER for f in faults):
                following = self.inner.read()
                self._index += 1
                if following is not None:
                    self._count(FaultKind.REORDER)
                    self._queue.append(frame)
                    return following
            return frame

    def _unplug(self) -> None:
        """Raise FrameTimeout while an UNPLUG fault holds the camera away."""
        for n, f in enumerate(self.faults):
            if f.kind is not FaultKind.UNPLUG or f.start != self._index or n in self._unplug_done:
                continue
            if self._unplugged_reads == 0:
                self._count(FaultKind.UNPLUG)
            if self._unplugged_reads < f.count:
                self._unplugged_reads += 1
                self._state = SourceState.RECONNECTING
                raise FrameTimeout(
                    f"{self.inner.name} camera disconnected (injected)",
                    "reconnecting; plug it back in",
                    reconnecting=True,
                )
            self._unplug_done.add(n)
            self._unplugged_reads = 0

    def _damage(self, frame: Frame, faults: list[Fault]) -> Frame:
        kinds = {f.kind: f for f in faults}
        changes = kinds.keys() & {
            FaultKind.LATE,
            FaultKind.NO_DEPTH,
            FaultKind.ZERO_DEPTH,
            FaultKind.BAD_DEPTH_SCALE,
            FaultKind.BAD_INTRINSICS,
        }
        if not changes:
            return frame
        out = copy.copy(frame)  # shallow: arrays are replaced, never written in place
        if FaultKind.LATE in kinds:
            out.host_timestamp_s = frame.host_timestamp_s - kinds[FaultKind.LATE].value
        if FaultKind.NO_DEPTH in kinds:
            out.depth = None
        if FaultKind.ZERO_DEPTH in kinds and frame.depth is not None:
            out.depth = np.zeros_like(frame.depth)
        if FaultKind.BAD_DEPTH_SCALE in kinds:
            out.depth_scale_m = kinds[FaultKind.BAD_DEPTH_SCALE].value
        if FaultKind.BAD_INTRINSICS in kinds:
            out.intrinsics = _with_bad_intrinsics(
                frame.intrinsics, kinds[FaultKind.BAD_INTRINSICS].value
            )
        for kind in changes:
            self._count(kind)
        return out


class LoopingSource(FrameSource):
    """Replays a finite source over and over until ``should_stop()`` says so.

    ``make_inner()`` builds a fresh inner source for each pass (a recording is
    reopened). Frame numbers keep increasing across passes and device
    timestamps continue from the previous pass, so downstream the replay looks
    like one long session in which the head jumps at each pass boundary.
    ``passes`` counts completed passes. Ground truth is dropped when
    ``keep_truth`` is False (a theatre camera has none; it also keeps
    accuracy bookkeeping out of memory measurements).
    """

    name = "loop"

    def __init__(
        self,
        make_inner: Callable[[], FrameSource],
        should_stop: Callable[[], bool],
        *,
        keep_truth: bool = False,
    ) -> None:
        super().__init__()
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
        from edge.sources.realsense import RawFrame

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
