"""The frame loop: source -> stages -> sinks, one frame at a time.

A *stage* is a small object with a ``name`` and one ``process(result)`` method
that reads what earlier stages put on the :class:`~edge.frames.FrameResult`
and adds its own part (tracking, registration, overlay, publish). A *sink*
consumes each finished result (audit, metrics, preview, status line,
evaluation) and never changes it. The pipeline times every stage; stages
never time themselves. Which stages and sinks run is decided in one place,
:mod:`edge.app`; this module imports none of them.

A stage that raises on one frame does not stop the process: the frame gets
a :class:`~edge.frames.StageFailure` (so nothing downstream can pass it off
as current) and the next frame is processed. A sink that raises is logged
and the loop goes on.

Source faults the loop survives: a live source that has no frame right now
(:class:`~edge.frames.FrameTimeout`, e.g. the camera was unplugged and is
reconnecting) is a *gap*: stages and sinks with a ``source_gap(reason)``
method are told (stages forget what they were tracking; sinks record that
nothing is current) and the loop keeps going. A frame whose number is not
above the last one processed (out of order, duplicate) is dropped before any
stage sees it, so filters never see time run backwards; a frame older than
``late_after_s`` when it arrives is processed and marked ``late``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from edge.frames import Frame, FrameResult, FrameSource, FrameTimeout, StageFailure

log = logging.getLogger(__name__)


class Stage(Protocol):
    """One step of the frame flow: reads and extends ``result`` in place."""

    name: str

    def process(self, result: FrameResult) -> None: ...


class Sink(Protocol):
    """Consumes a finished result (after every stage); never changes it."""

    @property
    def name(self) -> str: ...

    def consume(self, result: FrameResult) -> None: ...


@runtime_checkable
class GapAware(Protocol):
    """A stage or sink that must know when the source had no frame."""

    def source_gap(self, reason: str) -> None: ...


@runtime_checkable
class CommandHandler(Protocol):
    """A stage that carries out headset commands: name -> handler of the validated args."""

    commands: Mapping[str, Callable[[dict[str, Any]], None]]


class Pipeline:
    """Runs frames from one source through a fixed list of stages, then the sinks.

    ``late_after_s``: a frame older than this (host capture time to arrival)
    is marked late (default 0.1 s, the headsets' reference staleness limit).
    Counters: ``stale_frames`` (dropped as out of order or duplicate),
    ``late_frames``, ``source_gaps`` (reads that found no frame).
    """

    def __init__(
        self,
        source: FrameSource,
        stages: Iterable[Stage],
        sinks: Iterable[Sink] = (),
        clock: Callable[[], float] = time.perf_counter,
        late_after_s: float = 0.1,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        self.sinks = list(sinks)
        self._clock = clock
        self.late_after_s = late_after_s
        self.stale_frames = 0
        self.late_frames = 0
        self.source_gaps = 0
        self._last_number: int | None = None

    def process(self, frame: Frame, source_ms: float | None = None) -> FrameResult:
        """Run one frame through every stage, then every sink; ``source_ms`` is how long
        reading it took."""
        result = FrameResult(frame=frame, received_s=time.monotonic())
        result.late = result.received_s - frame.host_timestamp_s > self.late_after_s
        if result.late:
            self.late_frames += 1
        if source_ms is not None:
            result.stage_ms["source"] = source_ms
        for stage in self.stages:
            start = self._clock()
            try:
                stage.process(result)
            except Exception as exc:  # one bad frame must not stop the edge process
                log.exception(
                    "stage %s failed on frame %d",
                    stage.name,
                    frame.number,
                    extra={"stage": stage.name, "frame": frame.number},
                )
                result.errors.append(StageFailure(stage.name, type(exc).__name__, str(exc)))
            finally:
                result.stage_ms[stage.name] = (self._clock() - start) * 1000.0
        result.done_s = time.monotonic()
        for sink in self.sinks:
            try:
                sink.consume(result)
            except Exception:  # a report must not stop the edge process either
                log.exception(
                    "sink %s failed on frame %d",
                    sink.name,
                    frame.number,
                    extra={"sink": sink.name, "frame": frame.number},
                )
        return result

    def in_order(self, frame: Frame) -> bool:
        """False (and counted) for a frame not newer than the last one accepted."""
        if self._last_number is not None and frame.number <= self._last_number:
            self.stale_frames += 1
            log.debug("frame %d dropped: not after frame %d", frame.number, self._last_number)
            return False
        self._last_number = frame.number
        return True

    def source_gap(self, reason: str) -> None:
        """Tell the stages, then the sinks, that frames stopped (each forgets what it was
        tracking, or records that nothing is current)."""
        self.source_gaps += 1
        for part in [*self.stages, *self.sinks]:
            if not isinstance(part, GapAware):
                continue
            name = getattr(part, "name", type(part).__name__)
            try:
                part.source_gap(reason)
            except Exception:  # a gap handler must not stop the edge process either
                log.exception("%s failed handling a source gap", name, extra={"stage": name})

    def run(
        self,
        max_frames: int | None = None,
        on_result: Callable[[FrameResult], bool | None] | None = None,
        on_gap: Callable[[str], bool | None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> int:
        """Process frames until the source ends, ``max_frames``, ``should_stop()`` (asked
        after every frame and every gap) or a callback returns False.

        ``on_result`` sees each result after the sinks, ``on_gap(reason)`` each gap
        (callers that need no sink object, such as tests). Returns the number of frames
        processed. The source is opened and closed here.
        """
        count = 0
        with self.source:
            while (max_frames is None or count < max_frames) and not should_stop():
                start = self._clock()
                try:
                    frame = self.source.read()
                except FrameTimeout as exc:
                    self.source_gap(exc.problem)
                    if on_gap is not None and on_gap(exc.problem) is False:
                        break
                    continue
                if frame is None:
                    break
                if not self.in_order(frame):
                    continue
                result = self.process(frame, (self._clock() - start) * 1000.0)
                count += 1
                if on_result is not None and on_result(result) is False:
                    break
        return count
