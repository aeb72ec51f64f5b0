"""Metrics: Prometheus text from a real loopback HTTP endpoint, fed by the real pipeline."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

from edge.errors import StateError
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.metrics import CONTENT_TYPE, MetricsServer, PipelineMetrics, Registry
from edge.pipeline import Pipeline

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """A strict reader for the text format: every line a comment or a valid sample."""
    samples: dict[tuple[str, frozenset], float] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, _, labels, value = m.groups()
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"{name} has no TYPE line"
        key = (name, frozenset(LABEL.findall(labels or "")))
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(value.replace("+Inf", "inf"))
    return samples


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return parse(response.read().decode())


class Ok:
    name = "tracking"

    def process(self, result: FrameResult) -> None:
        result.tracking = "face"


class Fails:
    name = "registration"

    def process(self, result: FrameResult) -> None:
        if result.frame.number % 2:
            raise RuntimeError("model runtime error")


def frame(number: int) -> Frame:
    return Frame(
        number=number,
        color=np.zeros((4, 4, 3), np.uint8),
        color_format=PixelFormat.RGB8,
        depth=None,
        depth_scale_m=0.001,
        intrinsics=Intrinsics(4, 4, 2.0, 2.0, 1.5, 1.5),
    )


def test_scrape_shows_counters_stage_times_and_state_changes():
    registry = Registry()
    metrics = PipelineMetrics(registry, states=["SEARCHING", "TRACKING", "LOST"])
    pipeline = Pipeline(source=None, stages=[Ok(), Fails()])  # type: ignore[arg-type]
    with MetricsServer(registry, "127.0.0.1", 0) as server:
        assert server.address[0] == "127.0.0.1" and server.address[1] > 0
        before = scrape(server.url)
        assert before[("edge_frames_total", frozenset())] == 0
        assert before[("edge_process_resident_memory_bytes", frozenset())] > 1e6
        for n in range(4):
            metrics.observe(pipeline.process(frame(n), source_ms=1.0))
        metrics.set_state("SEARCHING")
        metrics.set_state("TRACKING")
        metrics.set_state("TRACKING")
        after = scrape(server.url)
    assert after[("edge_frames_total", frozenset())] == 4
    assert after[("edge_frames_failed_total", frozenset())] == 2
    assert after[("edge_stage_errors_total", frozenset({("stage", "registration")}))] == 2
    for stage in ("source", "tracking", "registration"):
        labels = frozenset({("stage", stage)})
        assert after[("edge_stage_duration_seconds_count", labels)] == 4
        inf = frozenset({("stage", stage), ("le", "+Inf")})
        assert after[("edge_stage_duration_seconds_bucket", inf)] == 4
    assert after[("edge_registration_state", frozenset({("state", "TRACKING")}))] == 1
    assert after[("edge_registration_state", frozenset({("state", "SEARCHING")}))] == 0
    assert after[("edge_registration_state", frozenset({("state", "LOST")}))] == 0
    moved = frozenset({("from_state", "SEARCHING"), ("to_state", "TRACKING")})
    assert after[("edge_state_transitions_total", moved)] == 1


def test_histogram_buckets_are_cumulative_and_labels_escaped():
    registry = Registry()
    h = registry.histogram("t_seconds", "times", ["stage"], buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 3.0, math.nan):
        h.observe(v, stage='a"b\\c')
    samples = parse(registry.render())
    lab = ("stage", 'a\\"b\\\\c')
    assert samples[("t_seconds_bucket", frozenset({lab, ("le", "0.1")}))] == 1
    assert samples[("t_seconds_bucket", frozenset({lab, ("le", "1")}))] == 3
    assert samples[("t_seconds_bucket", frozenset({lab, ("le", "+Inf")}))] == 4
    assert samples[("t_seconds_count", frozenset({lab}))] == 4
    assert samples[("t_seconds_sum", frozenset({lab}))] == pytest.approx(4.05)


def test_misuse_is_refused():
    registry = Registry()
    c = registry.counter("x_total", "x", ["stage"])
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("x_total", "again")
    with pytest.raises(ValueError, match="takes labels"):
        c.inc(state="a")
    with pytest.raises(ValueError, match="cannot go down"):
        c.inc(-1, stage="a")
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.gauge("bad-name", "x")
    with pytest.raises(ValueError, match="loopback only"):
        MetricsServer(registry, "0.0.0.0", 0)
    server = MetricsServer(registry)
    with pytest.raises(StateError):
        _ = server.address
    with server, pytest.raises(StateError):
        server.start()


def test_other_paths_are_404():
    with MetricsServer(Registry()) as server:
        host, port = server.address
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{host}:{port}/", timeout=10)
    assert info.value.code == 404
