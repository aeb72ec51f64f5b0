"""The split pipeline (``[pipeline] overlap_stages``): later stages, sinks and callbacks in a
second thread, with the same results, order, gaps, failures and stops as in one thread."""

from __future__ import annotations

import threading
import time

import pytest

from edge.frames import FrameResult
from edge.pipeline import Pipeline
from support.fakes import CountingSource
from support.faults import Fault, FaultKind, FaultySource


class Recorder:
    """A stage (or sink) that logs what it saw, from which thread, and gaps."""

    def __init__(self, name: str, log: list, fail_on: int | None = None) -> None:
        self.name = name
        self.log = log
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def process(self, result: FrameResult) -> None:
        self.threads.add(threading.current_thread().name)
        self.log.append((self.name, result.frame.number))
        if result.frame.number == self.fail_on:
            raise RuntimeError("stage fault")

    def consume(self, result: FrameResult) -> None:
        self.process(result)

    def source_gap(self, reason: str) -> None:
        self.log.append((self.name, "gap"))


def _run(split: bool, source, fail_on=None, **kwargs):
    log: list = []
    head, tail = Recorder("tracking", log), Recorder("registration", log, fail_on)
    sink = Recorder("sink", log)
    pipeline = Pipeline(
        source, [head, tail], [sink], split_before="registration" if split else None
    )
    results: list = []
    count = pipeline.run(on_result=lambda r: results.append(r), **kwargs)
    return pipeline, log, results, count, (head, tail, sink)


def _per_part(log: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for name, what in log:
        out.setdefault(name, []).append(what)
    return out


def test_every_part_sees_the_same_frames_and_gaps_in_the_same_order():
    def source():
        faults = [Fault(FaultKind.UNPLUG, 3, 2), Fault(FaultKind.DUPLICATE, 6)]
        return FaultySource(CountingSource(10), faults)

    one = _run(False, source())
    two = _run(True, source())
    assert _per_part(two[1]) == _per_part(one[1])
    parts = _per_part(two[1])
    # A gap reaches the later stage after the frames before it: the tail was drained.
    assert parts["registration"][:5] == [1, 2, 3, "gap", "gap"]
    assert [r.frame.number for r in two[2]] == list(range(1, 11))
    assert two[3] == one[3] == 10 and two[0].source_gaps == 2
    head, tail, sink = two[4]
    assert head.threads == {threading.main_thread().name}
    assert tail.threads == sink.threads == {"pipeline-tail"}


def test_a_failing_later_stage_marks_the_frame_and_the_run_goes_on():
    _, _, results, count, _ = _run(True, CountingSource(6), fail_on=3)
    assert count == 6
    assert [r.failed for r in results] == [False, False, True, False, False, False]
    assert str(results[2].errors[0]) == "registration: RuntimeError: stage fault"
    assert all("registration" in r.stage_ms and r.done_s > 0 for r in results)


def test_on_result_false_stops_after_that_frame_and_max_frames_is_kept():
    log: list = []
    pipeline = Pipeline(
        CountingSource(50),
        [Recorder("tracking", log), Recorder("registration", log)],
        split_before="registration",
    )
    seen: list[int] = []
    count = pipeline.run(on_result=lambda r: seen.append(r.frame.number) or len(seen) < 5)
    assert count == 5 and seen == [1, 2, 3, 4, 5]
    _, _, results, count, _ = _run(True, CountingSource(50), max_frames=7)
    assert count == 7 and [r.frame.number for r in results] == list(range(1, 8))


def test_an_error_in_the_callback_is_raised_in_the_loop_thread():
    pipeline = Pipeline(
        CountingSource(20),
        [Recorder("tracking", []), Recorder("registration", [])],
        split_before="registration",
    )

    def boom(result: FrameResult) -> None:
        if result.frame.number == 4:
            raise KeyError("callback fault")

    with pytest.raises(KeyError, match="callback fault"):
        pipeline.run(on_result=boom)
    assert pipeline.source.state.value == "closed"


def test_split_before_must_name_a_later_stage():
    stages = [Recorder("tracking", []), Recorder("registration", [])]
    for bad in ("tracking", "overlay"):
        with pytest.raises(ValueError, match="split_before"):
            Pipeline(CountingSource(1), stages, split_before=bad)


class PacedSource(CountingSource):
    """A source whose next frame is never there yet when asked (a camera's pace)."""

    def frame_waiting(self) -> bool:
        return False


def test_with_no_frame_waiting_the_frame_finishes_in_the_loop_thread():
    """Nothing to overlap with: no hand-over, the same results and order."""
    one = _run(False, CountingSource(8))
    paced = _run(True, PacedSource(8))
    assert _per_part(paced[1]) == _per_part(one[1])
    assert paced[3] == 8 and [r.frame.number for r in paced[2]] == list(range(1, 9))
    head, tail, sink = paced[4]
    assert head.threads == tail.threads == sink.threads == {threading.main_thread().name}


class CameraPaced(CountingSource):
    """Frames at a clock's pace (a camera's), and no way to tell more (not LookAhead)."""

    @property
    def paced(self) -> bool:
        return True


def test_a_paced_source_finishes_each_frame_in_the_loop_thread_when_the_tail_is_idle():
    """Its next frame is not due when this one is tracked: no hand-over, no added latency."""
    paced = _run(True, CameraPaced(8))
    assert paced[3] == 8 and [r.frame.number for r in paced[2]] == list(range(1, 9))
    head, tail, sink = paced[4]
    assert head.threads == tail.threads == sink.threads == {threading.main_thread().name}
    # A source that is not paced and cannot tell has its next frame: handed over.
    assert _run(True, CountingSource(8))[4][1].threads == {"pipeline-tail"}


def test_read_ahead_tells_when_its_next_frame_is_waiting():
    from edge.sources.readahead import ReadAheadSource

    source = ReadAheadSource(CountingSource(3))
    with source:
        assert source.read() is not None
        for _ in range(500):  # the reader thread reads the next one now
            if source.frame_waiting():
                break
            time.sleep(0.01)
        assert source.frame_waiting()
        assert source.read() is not None and source.read() is not None
        assert source.read() is None
