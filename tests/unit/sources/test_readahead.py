"""The read-ahead source: same frames, gaps, errors and end as the inner source, one frame
ahead at most, and a clean stop wherever its reader is."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from edge.errors import FrameTimeout, StateError
from edge.frames import Frame, FrameResult, FrameSource
from edge.pipeline import Pipeline
from edge.sources.readahead import ReadAheadSource, with_read_ahead
from support.fakes import CountingSource
from support.faults import Fault, FaultKind, FaultySource, InjectedFaultError


def _events(source: FrameSource, reads: int) -> list[tuple[str, object]]:
    """What ``reads`` calls of read() give: frames (number, content), gaps, errors, ends."""
    out: list[tuple[str, object]] = []
    with source:
        for _ in range(reads):
            try:
                frame = source.read()
            except FrameTimeout as exc:
                out.append(("gap", exc.problem))
                continue
            except InjectedFaultError as exc:
                out.append(("error", str(exc)))
                continue
            if frame is None:
                out.append(("end", None))
            else:
                out.append(("frame", (frame.number, frame.color.tobytes())))
    return out


def _faulty() -> FaultySource:
    return FaultySource(
        CountingSource(12),
        [
            Fault(FaultKind.UNPLUG, 3, 2),
            Fault(FaultKind.RAISE, 6),
            Fault(FaultKind.REORDER, 8),
            Fault(FaultKind.DROP, 10),
        ],
    )


def test_frames_gaps_errors_and_end_come_out_as_from_the_inner_source():
    direct = _events(_faulty(), 18)
    ahead = _events(ReadAheadSource(_faulty()), 18)
    assert ahead == direct
    kinds = [kind for kind, _ in direct]
    assert kinds.count("gap") == 2 and kinds.count("error") == 1
    assert kinds[-3:] == ["end"] * 3


class _Slow(CountingSource):
    """Counts reads; each read takes ``read_s``; optionally blocks until released."""

    def __init__(self, n: int, read_s: float = 0.0, gate: threading.Event | None = None):
        super().__init__(n)
        self.read_s = read_s
        self.gate = gate
        self.reads = 0
        self.closed = False

    def _read(self) -> Frame | None:
        self.reads += 1
        if self.gate is not None:
            self.gate.wait(5.0)
        time.sleep(self.read_s)
        return super()._read()

    def _close(self) -> None:
        self.closed = True


def _settle(condition, timeout_s: float = 2.0) -> bool:
    end = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < end:
        time.sleep(0.005)
    return condition()


def test_never_more_than_one_frame_ahead():
    inner = _Slow(10)
    with ReadAheadSource(inner) as source:
        assert _settle(lambda: inner.reads == 1)
        for taken in range(1, 6):
            frame = source.read()
            assert frame is not None and frame.number == taken
            assert _settle(lambda taken=taken: inner.reads == taken + 1)
            time.sleep(0.02)  # the reader waits for the next take, it does not run on
            assert inner.reads == taken + 1


def test_the_next_read_happens_while_the_consumer_works():
    inner = _Slow(4, read_s=0.05)
    with ReadAheadSource(inner) as source:
        assert source.read() is not None
        # The consumer has not asked again, and the next frame is read (and ready) already.
        assert _settle(lambda: inner.reads == 2 and source._results.full())
        assert source.read() is not None
        assert source.last_read_ms >= 45.0  # the read's own time, measured in the reader


def test_close_stops_a_reader_in_the_middle_of_a_read_and_closes_the_inner_source():
    gate = threading.Event()
    inner = _Slow(5, gate=gate)
    source = ReadAheadSource(inner).open()
    assert _settle(lambda: inner.reads == 1)
    threading.Timer(0.1, gate.set).start()  # the read in flight ends a little later
    source.close()
    assert inner.closed
    assert source._thread is not None and not source._thread.is_alive()
    with pytest.raises(StateError):
        source.read()


def test_close_with_a_frame_waiting_and_close_without_open():
    inner = _Slow(5)
    source = ReadAheadSource(inner).open()
    assert _settle(lambda: inner.reads == 1)
    source.close()
    assert inner.closed and not source._thread.is_alive()
    unopened = _Slow(1)
    ReadAheadSource(unopened).close()
    assert unopened.reads == 0


def test_a_raising_stage_and_an_early_stop_do_not_stall_the_pipeline():
    class Boom:
        name = "boom"

        def process(self, result: FrameResult) -> None:
            raise RuntimeError("stage fault")

    seen: list[int] = []
    inner = _Slow(20)
    pipeline = Pipeline(ReadAheadSource(inner), [Boom()])
    count = pipeline.run(on_result=lambda r: seen.append(r.frame.number) or len(seen) < 7)
    assert count == 7 and seen == list(range(1, 8))
    assert inner.closed and not pipeline.source._thread.is_alive()


def test_the_pipeline_sees_the_same_gaps_and_frames():
    def run(source: FrameSource) -> tuple[list[int], int]:
        numbers: list[int] = []
        pipeline = Pipeline(source, [])
        pipeline.run(on_result=lambda r: numbers.append(r.frame.number))
        return numbers, pipeline.source_gaps

    faults = [Fault(FaultKind.UNPLUG, 2, 3), Fault(FaultKind.DUPLICATE, 5)]
    direct = run(FaultySource(CountingSource(9), faults))
    ahead = run(ReadAheadSource(FaultySource(CountingSource(9), faults)))
    assert ahead == direct == (list(range(1, 10)), 3)


def test_inner_attributes_and_the_switch():
    inner = CountingSource(3)
    assert with_read_ahead(inner, False) is inner
    wrapped = with_read_ahead(inner, True)
    assert isinstance(wrapped, ReadAheadSource)
    assert wrapped.n == 3 and wrapped.name == "counting"
    with wrapped:
        frames = list(wrapped)
    assert [f.number for f in frames] == [1, 2, 3]
    assert all(np.array_equal(f.color, np.zeros((4, 4, 3), np.uint8)) for f in frames)


def test_a_paced_source_is_read_when_the_loop_asks_not_ahead(caplog):
    """Its next frame is not there before it is due: a reader thread would only hand it
    over a wake-up later (docs/benchmark.md). The phantom and recordings are paced in
    real-time timing only; wrappers say what their inner source says."""
    from edge.frames import TimingMode
    from edge.sources.calibrated import CalibratedSource
    from edge.sources.phantom import PhantomSource

    realtime = PhantomSource(scenario="static", frames=2, timing=TimingMode.REALTIME)
    assert realtime.paced and not PhantomSource(scenario="static", frames=2).paced
    camera = CalibratedSource(realtime, realtime.intrinsics)
    assert camera.paced
    with caplog.at_level(logging.INFO, logger="edge.sources.readahead"):
        assert with_read_ahead(camera, True) is camera
    assert "read-ahead is off: phantom gives its frames at its own pace" in caplog.text
