"""Tracking and tools side by side (edge/tools/beside.py): the same results as in turn, to
the bit; a failing part never fails or stalls the frame; the worker is joined."""

from __future__ import annotations

import dataclasses
import enum
import struct
import threading

import numpy as np
import pytest

from edge.config import EdgeConfig, ToolsConfig, TrackingConfig
from edge.evaluation import RunStats
from edge.frames import FrameResult
from edge.pipeline import Pipeline
from edge.tools import beside as beside_module
from edge.tools.beside import SideBySide
from edge.tools.stage import ToolStage
from edge.tools.types import ToolState
from edge.tracking.tracker import FaceTracker, TrackingStage
from support.fakes import CountingSource

TIMINGS = {"landmark_model_ms"}  # measured, not computed: differ from run to run


def _same(a: object, b: object, where: str = "") -> None:
    """``a`` and ``b`` equal to the bit (arrays by their bytes, floats by their bits)."""
    assert type(a) is type(b), where
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            if f.name not in TIMINGS:
                _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), where  # type: ignore[arg-type]
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where  # type: ignore[arg-type]
        for i, (x, y) in enumerate(zip(a, b, strict=True)):  # type: ignore[call-overload]
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where  # type: ignore[attr-defined]
        for k in a:
            _same(a[k], b[k], f"{where}[{k}]")  # type: ignore[index]
    else:
        assert a == b or (isinstance(a, enum.Enum) and a is b), where


def _stages(repo_root) -> tuple[TrackingStage, ToolStage]:
    tools = ToolsConfig(enabled=True, dir=str(repo_root / "hardware/tools"))
    return TrackingStage(FaceTracker.from_config(TrackingConfig())), ToolStage.from_config(tools)


def test_side_by_side_gives_what_in_turn_gives_to_the_bit(occluded_frames, repo_root) -> None:
    frames = occluded_frames[:45]  # the guide seen, hidden (OCCLUDED, LOST) and back
    tracking, tools = _stages(repo_root)
    in_turn = []
    for frame in frames:
        result = FrameResult(frame)
        tracking.process(result)
        tools.process(result)
        in_turn.append(result)
    side = SideBySide(*_stages(repo_root))
    beside = []
    for frame in frames:
        result = FrameResult(frame)
        side.process(result)
        beside.append(result)
    side.stop_threads()
    assert side.name == "tracking+tools"
    for a, b in zip(in_turn, beside, strict=True):
        assert b.errors == [] and set(b.part_ms) == {"tracking", "tools"}
        _same(a.tracking, b.tracking, f"frame {a.frame.number} tracking")
        _same(a.tools, b.tools, f"frame {a.frame.number} tools")
    states = {t.state for r in beside for t in r.tools.tools}  # type: ignore[union-attr]
    assert {ToolState.VISIBLE, ToolState.LOST} <= states
    assert any(r.tracking.patient is not None for r in beside)  # type: ignore[union-attr]


def test_a_tool_failure_beside_tracking_reads_lost_with_the_reason(
    occluded_frames, repo_root, monkeypatch
) -> None:
    tracking, tools = _stages(repo_root)
    side = SideBySide(tracking, tools)
    real = tools._poses
    calls = {"n": 0}

    def flaky(frame):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("detector exploded")
        return real(frame)

    monkeypatch.setattr(tools, "_poses", flaky)
    results = []
    for frame in occluded_frames[:5]:
        result = FrameResult(frame)
        side.process(result)
        results.append(result)
    # Raised out of process itself (not caught inside it): handed to the stage's fail().
    monkeypatch.setattr(tools, "process", lambda result: 1 / 0)
    result = FrameResult(occluded_frames[5])
    side.process(result)
    results.append(result)
    side.stop_threads()
    for r, why in ((results[2], "RuntimeError: detector exploded"), (results[5], "ZeroDivision")):
        assert r.errors == [] and not r.failed  # the frame goes on
        assert r.tracking is not None and r.tracking.patient is not None
        assert all(t.state is ToolState.LOST and why in t.reason for t in r.tools.tools)  # type: ignore[union-attr]
    assert results[1].tools.get("needle-guide").current  # type: ignore[union-attr]
    assert results[3].tools.get("needle-guide").current  # type: ignore[union-attr]


class _Note:
    def __init__(self, name: str, fail_on: int = 0, commands: dict | None = None) -> None:
        self.name = name
        self.fail_on = fail_on
        self.gaps: list[str] = []
        if commands is not None:
            self.commands = commands

    def process(self, result: FrameResult) -> None:
        if result.frame.number == self.fail_on or self.fail_on < 0:
            raise ValueError(f"{self.name} broke")
        setattr(result, "tracking" if self.name == "main" else "tools", result.frame.number)

    def source_gap(self, reason: str) -> None:
        self.gaps.append(reason)


def test_a_part_that_raises_fails_only_its_own_part_and_never_stalls() -> None:
    main, beside = _Note("main", fail_on=2), _Note("beside", fail_on=-1)  # beside: every frame
    side = SideBySide(main, beside)
    seen: list[FrameResult] = []
    assert Pipeline(CountingSource(4), [side]).run(on_result=seen.append) == 4
    assert [r.tracking for r in seen] == [1, None, 3, 4]
    assert [[e.stage for e in r.errors] for r in seen] == [
        ["beside"],
        ["main", "beside"],
        ["beside"],
        ["beside"],
    ]
    assert all(set(r.part_ms) == {"main", "beside"} for r in seen)
    assert all(set(r.stage_ms) == {"source", "main+beside"} for r in seen)


def test_the_worker_is_joined_when_the_loop_ends_and_restarts_on_the_next_frame() -> None:
    side = SideBySide(_Note("main"), _Note("beside"))

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "main+beside"]

    pipeline = Pipeline(CountingSource(3), [side])
    assert pipeline.run(on_result=lambda r: None if workers() else pytest.fail("no worker")) == 3
    assert workers() == []
    with CountingSource(1) as source:
        result = FrameResult(source.read())  # type: ignore[arg-type]
    side.process(result)  # a new worker for a new frame
    assert result.tools == 1 and len(workers()) == 1
    side.stop_threads()
    assert workers() == []


def test_gaps_and_commands_reach_both_parts() -> None:
    main = _Note("main", commands={"recentre": lambda args: None})
    beside = _Note("beside", commands={"zero": lambda args: None})
    side = SideBySide(main, beside)
    side.source_gap("camera unplugged")
    assert main.gaps == beside.gaps == ["camera unplugged"]
    assert set(side.commands) == {"recentre", "zero"}


def test_parts_are_listed_but_only_their_stage_counts_towards_the_frame() -> None:
    stats = RunStats()
    stats.add(
        {"source": 1.0, "tracking+tools": 3.0}, 10.0, None, (), {"tracking": 2.5, "tools": 2.0}
    )
    assert list(stats.frame_ms) == [4.0]
    assert stats.stage_summary()["tools"]["p50_ms"] == 2.0


def test_compose_runs_tracking_and_tools_side_by_side_only_with_tools(repo_root) -> None:
    from edge.app import compose

    tools = ToolsConfig(enabled=True, dir=str(repo_root / "hardware/tools"))
    with_tools = compose(EdgeConfig(tools=tools), CountingSource(1))
    assert [s.name for s in with_tools.stages] == ["tracking+tools"]
    assert [s.name for s in compose(EdgeConfig(), CountingSource(1)).stages] == ["tracking"]


class _Hangs:
    """A ``beside`` part that hangs on frame 2 until released, then writes its frame."""

    name = "beside"

    def __init__(self) -> None:
        self.release = threading.Event()

    def process(self, result: FrameResult) -> None:
        if result.frame.number == 2:
            self.release.wait(30)
        result.tools = result.frame.number  # type: ignore[assignment]


def test_a_hung_part_is_left_out_and_its_late_answer_reaches_no_frame(monkeypatch) -> None:
    monkeypatch.setattr(beside_module, "BESIDE_TIMEOUT_S", 0.2)
    hangs = _Hangs()
    side = SideBySide(_Note("main"), hangs)
    seen: list[FrameResult] = []
    assert Pipeline(CountingSource(5), [side]).run(on_result=seen.append) == 5
    hangs.release.set()  # the hung call now returns and writes into its own copy only
    side.stop_threads()
    assert [r.tracking for r in seen] == [1, 2, 3, 4, 5]  # the face part never waited long
    assert [r.tools for r in seen] == [1, None, None, None, None]
    for r in seen[1:]:
        (error,) = r.errors
        assert error.stage == "beside" and "stopped answering" in error.message


def test_an_answer_left_from_an_interrupted_frame_is_not_taken_for_the_next() -> None:
    side = SideBySide(_Note("main"), _Note("beside"))
    with CountingSource(2) as source:
        first, second = FrameResult(source.read()), FrameResult(source.read())  # type: ignore[arg-type]
    side.process(first)
    # As if a frame had been interrupted while waiting: its answer is still queued.
    stale = dataclasses.replace(first, errors=[], stage_ms={}, part_ms={})
    side._done.put((stale, 1.0, ValueError("stale")))
    side.process(second)
    side.stop_threads()
    assert second.tools == 2 and second.errors == []
