"""The one pacing component and the typed choice of source (no real time passes)."""

from __future__ import annotations

import pytest

from edge.config import EdgeConfig, RealSenseConfig, SourceConfig
from edge.errors import SourceError
from edge.frames import TimingMode
from edge.sources import format_source_spec, open_source, parse_source_spec
from edge.sources.pacing import Pacer
from edge.sources.synthetic import SyntheticSource


class FakeTime:
    def __init__(self, now: float = 10.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_deterministic_never_reads_the_clock_or_sleeps():
    def fail() -> float:
        raise AssertionError("clock read")

    pacer = Pacer(TimingMode.DETERMINISTIC, clock=fail, sleep=lambda s: fail())
    pacer.start()
    for ms in (0.0, 500.0, 1000.0):
        pacer.wait(ms)


def test_realtime_from_start_waits_for_each_device_time():
    t = FakeTime()
    pacer = Pacer(TimingMode.REALTIME, clock=t.clock, sleep=t.sleep)
    pacer.start(0.0)
    t.now += 0.02  # the consumer took 20 ms before the first frame
    for ms in (0.0, 50.0, 100.0):
        pacer.wait(ms)
    assert t.sleeps == pytest.approx([0.03, 0.05])


def test_realtime_after_reset_anchors_at_the_next_frame():
    t = FakeTime()
    pacer = Pacer(TimingMode.REALTIME, clock=t.clock, sleep=t.sleep)
    pacer.wait(1000.0)
    pacer.wait(1040.0)
    pacer.reset()
    t.now += 5.0
    pacer.wait(3000.0)  # a seek: delivered at once, the new origin
    pacer.wait(3040.0)
    assert t.sleeps == pytest.approx([0.04, 0.04])


def test_a_late_consumer_gets_every_frame_without_waiting():
    t = FakeTime()
    pacer = Pacer(TimingMode.REALTIME, clock=t.clock, sleep=t.sleep)
    pacer.start()
    t.now += 1.0
    for ms in (0.0, 100.0, 900.0):
        pacer.wait(ms)
    assert t.sleeps == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("realsense", SourceConfig(kind="realsense")),
        ("realsense:0123", SourceConfig(kind="realsense", serial="0123")),
        (" case.DB3 ", SourceConfig(kind="recording", path="case.DB3")),
        ("old.bag", SourceConfig(kind="recording", path="old.bag")),
        ("phantom:drape.db3", SourceConfig(kind="recording", path="phantom:drape.db3")),
        ("synthetic", SourceConfig(kind="synthetic")),
        ("phantom", SourceConfig(kind="phantom")),
        ("phantom:drape", SourceConfig(kind="phantom", scenario="drape")),
    ],
)
def test_source_text_parses_once_into_the_typed_form(text, expected):
    assert parse_source_spec(text) == expected
    assert parse_source_spec(format_source_spec(expected)) == expected


@pytest.mark.parametrize("text", ["webcam", "synthetic:3", "", "case.mp4"])
def test_unknown_source_text_is_refused(text):
    with pytest.raises(SourceError, match="unknown source"):
        parse_source_spec(text)


def test_a_configured_source_is_built_from_its_section():
    cfg = EdgeConfig(
        source=SourceConfig(kind="synthetic"), realsense=RealSenseConfig(width=32, height=24)
    )
    src = open_source(cfg.source, cfg, frames=3, seed=2)
    assert isinstance(src, SyntheticSource) and src.frame_count == 3
    with pytest.raises(SourceError, match=r"unknown source 'notes\.txt'"):
        open_source(SourceConfig(kind="recording", path="notes.txt"), cfg)
