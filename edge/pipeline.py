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

With ``split_before`` (``[pipeline] overlap_stages``) the stages from that one on, the
sinks and ``on_result`` run in a second thread, one frame at a time in order, while
this one runs the earlier stages on the next frame; at most one frame waits between
the two, and a gap waits until the second thread is idle. An earlier stage must not
read what a later one sets. Within one frame, two stages that do not read each other's
results can run side by side as one stage (edge/tools/beside.py: tracking and tools);
a stage with a worker thread of its own (:class:`ThreadedStage`) has it joined when the
loop ends.
"""

from __future__ import annotations

import logging
import queue
import threading
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
class ThreadedStage(Protocol):
    """A stage with a worker thread of its own (edge/tools/beside.py, the tracker's
    detector thread): joined when the loop ends (:meth:`Pipeline.run`); it starts one
    again on its next frame."""

    def stop_threads(self) -> None: ...


@runtime_checkable
class LookAhead(Protocol):
    """A source that can tell whether its next frame is already waiting (read ahead)."""

    def frame_waiting(self) -> bool: ...


@runtime_checkable
class CommandHandler(Protocol):
    """A stage that carries out headset commands: name -> handler of the validated args."""

    commands: Mapping[str, Callable[[dict[str, Any]], None]]


def record_failure(result: FrameResult, stage: str, exc: BaseException) -> None:
    """``stage`` failed on this frame: logged with its traceback, and listed on the result
    (the frame goes on; later stages see ``result.failed``)."""
    frame = result.frame.number
    log.error(
        "stage %s failed on frame %d",
        stage,
        frame,
        exc_info=exc,
        extra={"stage": stage, "frame": frame},
    )
    result.errors.append(StageFailure(stage, type(exc).__name__, str(exc)))


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
        split_before: str | None = None,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        self.sinks = list(sinks)
        names = [stage.name for stage in self.stages]
        if split_before is not None and split_before not in names[1:]:
            raise ValueError(f"split_before must name a stage after the first of {names}")
        self.split_before = split_before
        self._clock = clock
        self.late_after_s = late_after_s
        self.stale_frames = 0
        self.late_frames = 0
        self.source_gaps = 0
        self._last_number: int | None = None

    def process(self, frame: Frame, source_ms: float | None = None) -> FrameResult:
        """Run one frame through every stage, then every sink; ``source_ms`` is how long
        reading it took."""
        result = self._begin(frame, source_ms)
        self._run_stages(result, self.stages)
        self._finish(result)
        return result

    def _begin(self, frame: Frame, source_ms: float | None) -> FrameResult:
        result = FrameResult(frame=frame, received_s=time.monotonic())
        result.late = result.received_s - frame.host_timestamp_s > self.late_after_s
        if result.late:
            self.late_frames += 1
        if source_ms is not None:
            result.stage_ms["source"] = source_ms
        return result

    def _run_stages(self, result: FrameResult, stages: list[Stage]) -> None:
        for stage in stages:
            start = self._clock()
            try:
                stage.process(result)
            except Exception as exc:  # one bad frame must not stop the edge process
                record_failure(result, stage.name, exc)
            finally:
                result.stage_ms[stage.name] = (self._clock() - start) * 1000.0

    def _finish(self, result: FrameResult) -> None:
        frame = result.frame
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
        processed. The source is opened and closed here, and stages' own threads
        (:class:`ThreadedStage`) are joined when the loop ends.
        """
        try:
            if self.split_before is not None:
                return self._run_split(max_frames, on_result, on_gap, should_stop)
            return self._run_plain(max_frames, on_result, on_gap, should_stop)
        finally:
            for stage in self.stages:
                if isinstance(stage, ThreadedStage):
                    stage.stop_threads()

    def _run_plain(
        self,
        max_frames: int | None,
        on_result: Callable[[FrameResult], bool | None] | None,
        on_gap: Callable[[str], bool | None] | None,
        should_stop: Callable[[], bool],
    ) -> int:
        count = 0
        with self.source:
            while (max_frames is None or count < max_frames) and not should_stop():
                got = self._next_frame(on_gap)
                if isinstance(got, bool):
                    if got:
                        continue
                    break
                result = self.process(*got)
                count += 1
                if on_result is not None and on_result(result) is False:
                    break
        return count

    def _next_frame(
        self,
        on_gap: Callable[[str], bool | None] | None,
        before_gap: Callable[[], None] | None = None,
    ) -> tuple[Frame, float] | bool:
        """One read of the source: the frame and how long it took (ms) when it is in order;
        True to read on (a gap, told to the stages and ``on_gap`` after ``before_gap``, or a
        frame not newer than the last); False to stop (the end, or ``on_gap`` said so)."""
        start = self._clock()
        try:
            frame = self.source.read()
        except FrameTimeout as exc:
            if before_gap is not None:
                before_gap()
            self.source_gap(exc.problem)
            return not (on_gap is not None and on_gap(exc.problem) is False)
        if frame is None:
            return False
        if not self.in_order(frame):
            return True
        return frame, (self._clock() - start) * 1000.0

    def _run_split(
        self,
        max_frames: int | None,
        on_result: Callable[[FrameResult], bool | None] | None,
        on_gap: Callable[[str], bool | None] | None,
        should_stop: Callable[[], bool],
    ) -> int:
        """:meth:`run` with the stages from ``split_before`` on, the sinks and ``on_result``
        in a second thread (:class:`_Tail`), overlapped with the earlier stages on the next
        frame. When the tail is idle and the source says its next frame is not there yet
        (a camera's pace), the frame finishes in this thread instead: there is nothing to
        overlap with, and a hand-over would only add to its latency. A gap waits until the
        tail is idle, so every stage hears of it after the frames before it and before the
        frames after it."""
        names = [stage.name for stage in self.stages]
        split = names.index(str(self.split_before))
        head, tail = self.stages[:split], _Tail(self, self.stages[split:], on_result)
        # Whether the next frame is already there; a source that cannot tell has it unless
        # it is paced (a camera's, a real-time replay's next frame is not due yet).
        frame_waiting = (
            self.source.frame_waiting
            if isinstance(self.source, LookAhead)
            else lambda: not self.source.paced
        )
        handed = 0
        with self.source:
            try:
                while (
                    (max_frames is None or handed < max_frames)
                    and not should_stop()
                    and not tail.stopped
                ):
                    got = self._next_frame(on_gap, before_gap=tail.wait_idle)
                    if isinstance(got, bool):
                        if got:
                            continue
                        break
                    result = self._begin(*got)
                    self._run_stages(result, head)
                    if tail.idle() and not frame_waiting():
                        tail.run_here(result)  # nothing to overlap with: no hand-over
                    else:
                        tail.put(result)
                    handed += 1
            finally:
                tail.close()
        if tail.error is not None:
            raise tail.error
        return tail.done


class _Tail:
    """The second thread of a split pipeline: the later stages, the sinks and ``on_result``,
    one frame at a time in the order handed over; at most one frame waits for it.

    ``done`` counts the frames it finished; ``stopped`` is set when ``on_result`` returned
    False or raised (``error``): frames handed over after that are dropped.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        stages: list[Stage],
        on_result: Callable[[FrameResult], bool | None] | None,
    ) -> None:
        self._pipeline = pipeline
        self._stages = stages
        self._on_result = on_result
        self._queue: queue.Queue[FrameResult | None] = queue.Queue(maxsize=1)
        self.done = 0
        self.stopped = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="pipeline-tail", daemon=True)
        self._thread.start()

    def put(self, result: FrameResult) -> None:
        """Hand ``result`` over; waits while a frame is already waiting."""
        while not self.stopped:
            try:
                self._queue.put(result, timeout=0.1)
                return
            except queue.Full:
                continue

    def wait_idle(self) -> None:
        """Return when every frame handed over is finished (or dropped)."""
        self._queue.join()

    def idle(self) -> bool:
        """No frame handed over is waiting or being worked on."""
        return self._queue.unfinished_tasks == 0

    def run_here(self, result: FrameResult) -> None:
        """Finish ``result`` in the caller's thread, as the tail thread would (only while
        :meth:`idle`, so the order of frames is kept)."""
        if not self.stopped:
            self._finish(result)

    def close(self) -> None:
        """Finish what was handed over, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            result = self._queue.get()
            try:
                if result is None:
                    return
                if not self.stopped:
                    self._finish(result)
            finally:
                self._queue.task_done()

    def _finish(self, result: FrameResult) -> None:
        try:
            self._pipeline._run_stages(result, self._stages)
            self._pipeline._finish(result)
            self.done += 1
            if self._on_result is not None and self._on_result(result) is False:
                self.stopped = True
        except BaseException as exc:  # raised again by run() in the loop's thread
            self.error = exc
            self.stopped = True
