"""A fault-injecting frame source: wraps any source and breaks it on a schedule.

Test support, not part of the edge package: the fault tests use it to show
what the pipeline does with the faults a theatre produces: frames dropped,
late, duplicated or out of order, depth missing or all zero, NaN or infinite
numbers where the camera's metadata should be, a source that raises, and a
camera that is unplugged for a while and comes back.

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
from dataclasses import dataclass

import numpy as np

from edge.errors import FrameTimeout
from edge.frames import Frame, FrameSource, Intrinsics, SourceState


class InjectedFaultError(RuntimeError):
    """What a RAISE fault raises (a driver or decoder bug, not an expected EdgeError)."""


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
