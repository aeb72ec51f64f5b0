"""The fault-injecting source and the pipeline's frame-loop defences, with stub stages.

Known answers: each fault does exactly what it says to the frames that come
out; the pipeline drops out-of-order and duplicate frames before any stage,
marks late ones, survives a camera gap and tells the stages about it.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

from edge.config import RealSenseConfig
from edge.errors import FrameTimeout
from edge.frames import Frame, FrameResult, FrameSource, Intrinsics, PixelFormat, SourceState
from edge.pipeline import Pipeline
from edge.sources.realsense import RealSenseSource
from edge.sources.replay import LoopingSource, ScriptedCamera
from edge.tracking.smoothing import OneEuroFilter
from support.faults import Fault, FaultKind, FaultySource, InjectedFaultError

W, H = 8, 6
INTR = Intrinsics(W, H, 10.0, 10.0, 3.5, 2.5)


class ListSource(FrameSource):
    """Frames 0..n-1 with depth n*10 mm, device time 33 ms apart, stamped when read."""

    name = "list"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.i = n, 0

    def _open(self) -> None:
        pass

    def _read(self) -> Frame | None:
        if self.i >= self.n:
            return None
        i = self.i
        self.i += 1
        return Frame(
            i,
            np.full((H, W, 3), i % 256, np.uint8),
            PixelFormat.RGB8,
            np.full((H, W), 500 + i, np.uint16),
            0.001,
            INTR,
            device_timestamp_ms=(i + 1) * 33.0,
        )

    def _close(self) -> None:
        pass


def read_all(source: FrameSource) -> list[Frame]:
    out = []
    with source:
        while True:
            try:
                frame = source.read()
            except FrameTimeout:
                continue
            if frame is None:
                return out
            out.append(frame)


def numbers(frames: list[Frame]) -> list[int]:
    return [f.number for f in frames]


# --------------------------------------------------------------------------- the source


def test_no_fault_passes_every_frame_unchanged():
    inner = ListSource(5)
    frames = read_all(FaultySource(inner, []))
    assert numbers(frames) == [0, 1, 2, 3, 4]
    assert inner.state is SourceState.CLOSED


def test_drop_duplicate_and_reorder_change_the_order_frames_arrive_in():
    faults = [
        Fault(FaultKind.DROP, 1),
        Fault(FaultKind.DUPLICATE, 3),
        Fault(FaultKind.REORDER, 5),
    ]
    src = FaultySource(ListSource(9), faults)
    frames = read_all(src)
    assert numbers(frames) == [0, 2, 3, 3, 4, 6, 5, 7, 8]
    assert src.injected == {"drop": 1, "duplicate": 1, "reorder": 1}


def test_late_frames_keep_their_number_but_carry_an_old_capture_time():
    src = FaultySource(ListSource(3), [Fault(FaultKind.LATE, 1, value=0.5)])
    with src:
        a = src.read()
        b = src.read()
    assert a is not None and b is not None
    assert b.number == 1
    assert time.monotonic() - b.host_timestamp_s >= 0.5


def test_depth_faults_copy_the_frame_and_leave_the_inner_one_alone():
    inner = ListSource(4)
    faults = [
        Fault(FaultKind.NO_DEPTH, 0),
        Fault(FaultKind.ZERO_DEPTH, 1),
        Fault(FaultKind.BAD_DEPTH_SCALE, 2, value=math.nan),
        Fault(FaultKind.BAD_INTRINSICS, 3, value=math.inf),
    ]
    frames = read_all(FaultySource(inner, faults))
    assert frames[0].depth is None
    assert frames[1].depth is not None and not frames[1].depth.any()
    assert math.isnan(frames[2].depth_scale_m)
    assert frames[3].intrinsics.fx == math.inf and frames[3].intrinsics.ppx == math.inf
    # The originals were not written to: depth of frame 1 is still there.
    assert ListSource(4).open().read() is not None


def test_nan_intrinsics_keep_the_focal_length_valid():
    src = FaultySource(ListSource(1), [Fault(FaultKind.BAD_INTRINSICS, 0, value=math.nan)])
    (frame,) = read_all(src)
    assert frame.intrinsics.fx == INTR.fx and math.isnan(frame.intrinsics.ppx)


def test_raise_fault_raises_once_and_the_source_goes_on():
    src = FaultySource(ListSource(3), [Fault(FaultKind.RAISE, 1)])
    with src:
        assert src.read().number == 0  # type: ignore[union-attr]
        with pytest.raises(InjectedFaultError, match="frame 1"):
            src.read()
        assert src.read().number == 2  # type: ignore[union-attr]


def test_unplug_raises_reconnecting_timeouts_then_resumes():
    src = FaultySource(ListSource(4), [Fault(FaultKind.UNPLUG, 2, count=3)])
    with src:
        got = [src.read().number, src.read().number]  # type: ignore[union-attr]
        for _ in range(3):
            with pytest.raises(FrameTimeout) as info:
                src.read()
            assert info.value.reconnecting
            assert src.state is SourceState.RECONNECTING
        got += [src.read().number, src.read().number]  # type: ignore[union-attr]
        assert src.state is SourceState.OPEN
        assert src.read() is None
    assert got == [0, 1, 2, 3]


def test_bad_fault_arguments_are_refused():
    with pytest.raises(ValueError, match="count"):
        Fault(FaultKind.DROP, 0, count=0)
    with pytest.raises(ValueError, match="start"):
        Fault(FaultKind.DROP, -1)


def test_looping_source_numbers_and_times_keep_increasing_and_truth_is_dropped():
    stop_after = [7]

    def should_stop() -> bool:
        stop_after[0] -= 1
        return stop_after[0] < 0

    loop = LoopingSource(lambda: ListSource(3), should_stop)
    frames = read_all(loop)
    assert numbers(frames) == list(range(7))
    stamps = [f.device_timestamp_ms for f in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert loop.passes == 2
    assert all(f.truth is None for f in frames)


def test_scripted_camera_is_away_for_its_interval_and_the_real_source_reconnects():
    frames = read_all(ListSource(30))
    camera = ScriptedCamera(frames, [(0.2, 0.6)], fps=30.0)
    config = RealSenseConfig(preset="", reconnect_initial_s=0.1, reconnect_max_s=0.2)
    src = RealSenseSource(config, layer=camera, clock=camera.clock, sleep=camera.sleep)
    times, timeouts = [], 0
    with src:
        while camera.now_s < 1.0:
            try:
                frame = src.read()
            except FrameTimeout as exc:
                assert exc.reconnecting
                timeouts += 1
                continue
            assert frame is not None
            times.append(frame.device_timestamp_ms / 1000.0)
    assert timeouts >= 1 and src.reconnects == 1
    assert not [t for t in times if 0.2 <= t < 0.6]  # nothing captured while unplugged
    assert len(camera.connected_at_s) == 2 and 0.6 <= camera.connected_at_s[1] <= 0.6 + 0.2


# --------------------------------------------------------------------------- the frame loop


class Record:
    """Stage that records what it sees and runs a One Euro filter on the frame's time."""

    name = "record"

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.gaps: list[str] = []
        self.filter = OneEuroFilter(1.0, 0.01, 1.0)

    def process(self, result: FrameResult) -> None:
        self.seen.append(result.frame.number)
        # Raises StateError if time ever ran backwards, which would fail the frame.
        self.filter(np.array([float(result.frame.number)]), result.frame.device_timestamp_ms)

    def source_gap(self, reason: str) -> None:
        self.gaps.append(reason)
        self.filter.reset()


def test_out_of_order_and_duplicate_frames_are_dropped_before_any_stage():
    faults = [
        Fault(FaultKind.REORDER, 2),
        Fault(FaultKind.DUPLICATE, 5),
        Fault(FaultKind.REORDER, 7),
    ]
    stage = Record()
    pipeline = Pipeline(FaultySource(ListSource(10), faults), [stage])
    results: list[FrameResult] = []
    # Arrival order: 0 1 3 2 4 5 5 6 8 7 9; the late 2 and 7 and the second 5 are dropped.
    assert pipeline.run(on_result=results.append) == 8
    assert stage.seen == [0, 1, 3, 4, 5, 6, 8, 9]
    assert pipeline.stale_frames == 3
    assert not any(r.failed for r in results)


def test_late_frames_are_marked_and_processed():
    pipeline = Pipeline(
        FaultySource(ListSource(5), [Fault(FaultKind.LATE, 2, value=0.4)]), [Record()]
    )
    results: list[FrameResult] = []
    pipeline.run(on_result=results.append)
    assert [r.late for r in results] == [False, False, True, False, False]
    assert pipeline.late_frames == 1
    assert results[2].end_to_end_ms >= 400.0


def test_a_camera_gap_keeps_the_loop_alive_and_tells_the_stages():
    stage = Record()
    source = FaultySource(ListSource(6), [Fault(FaultKind.UNPLUG, 3, count=4)])
    pipeline = Pipeline(source, [stage])
    gaps: list[str] = []
    count = pipeline.run(on_result=lambda r: None, on_gap=gaps.append)
    assert count == 6 and stage.seen == [0, 1, 2, 3, 4, 5]
    assert len(gaps) == 4 and len(stage.gaps) == 4 and pipeline.source_gaps == 4
    assert "disconnected" in gaps[0]


def test_a_stop_request_during_a_gap_ends_the_loop():
    source = FaultySource(ListSource(6), [Fault(FaultKind.UNPLUG, 2, count=1000)])
    pipeline = Pipeline(source, [Record()])
    calls: list[str] = []

    def on_gap(reason: str) -> bool:
        calls.append(reason)
        return len(calls) < 3  # SIGTERM arrived while the camera was away

    assert pipeline.run(on_gap=on_gap) == 2
    assert len(calls) == 3
    assert source.state is SourceState.CLOSED


def test_a_failing_gap_handler_does_not_stop_the_loop():
    class Broken(Record):
        def source_gap(self, reason: str) -> None:
            raise RuntimeError("bug in a stage")

    source = FaultySource(ListSource(3), [Fault(FaultKind.UNPLUG, 1, count=2)])
    assert Pipeline(source, [Broken()]).run() == 3


def test_an_unexpected_source_error_ends_the_run_and_closes_the_source():
    inner = ListSource(5)
    pipeline = Pipeline(FaultySource(inner, [Fault(FaultKind.RAISE, 2)]), [Record()])
    with pytest.raises(InjectedFaultError):
        pipeline.run()
    assert pipeline.source.state is SourceState.CLOSED and inner.state is SourceState.CLOSED


def test_a_long_live_run_keeps_bounded_bookkeeping():
    """The soak found `edge run` keeping every frame's timings: now a window, nothing else."""
    from edge.evaluation import Evaluator, RunStats

    evaluator = Evaluator(stats=RunStats(window=50))
    source = ListSource(400)
    Pipeline(source, [Record()]).run(on_result=evaluator.consume)
    assert evaluator.frames == 400
    assert len(evaluator.stats.end_to_end_ms) == 50
    assert all(len(v) == 50 for v in evaluator.stats.stage_ms.values())
    assert evaluator.states == [] and evaluator.visible == []  # frames without ground truth
    assert evaluator.summary()["frames"] == 400
