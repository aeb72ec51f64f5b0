"""Per-stage timing and state counters in the Prometheus text format, on loopback HTTP.

:class:`Registry` holds counters, gauges and histograms (thread-safe) and
renders them in the Prometheus text exposition format 0.0.4.
:class:`PipelineMetrics` declares the edge process's own metrics (listed in
docs/deployment.md) and fills them from each frame's result.
:class:`MetricsServer` serves ``GET /metrics`` from a daemon thread using the
standard library's HTTP server, bound to a loopback address only.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge.errors import StateError
from edge.frames import FrameResult
from edge.registration.types import RegistrationState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Stage times on this hardware run from ~0.1 ms to tens of ms; seconds, as Prometheus wants.
STAGE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _labels(key: LabelKey, extra: Sequence[tuple[str, str]] = ()) -> str:
    pairs = (*key, *extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label) or label == "le":
                raise ValueError(f"invalid label name {label!r} for {name}")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, Any]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple((n, str(labels[n])) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class _Value(_Metric):
    """One number per label set (counters and gauges)."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelKey, float] = {} if labelnames else {(): 0.0}

    def value(self, **labels: Any) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(k)} {_format_value(v)}" for k, v in items]


class Counter(_Value):
    """A count that only goes up (resets when the process restarts)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down (inc by {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Value):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels: Any) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = STAGE_BUCKETS_S,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{name}: buckets must be increasing and unique")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts: dict[LabelKey, list[int]] = {}
        self._sums: dict[LabelKey, float] = {}

    def observe(self, value: float, **labels: Any) -> None:
        if math.isnan(value):
            return  # a NaN time says nothing about speed; counting it would skew the sum
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: Any) -> int:
        with self._lock:
            return sum(self._counts.get(self._key(labels), []))

    def samples(self) -> list[str]:
        lines = []
        with self._lock:
            items = sorted(self._counts.items())
            sums = dict(self._sums)
        for key, counts in items:
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = _format_value(bound)
                lines.append(f"{self.name}_bucket{_labels(key, [('le', le)])} {running}")
            lines.append(f"{self.name}_sum{_labels(key)} {_format_value(sums[key])}")
            lines.append(f"{self.name}_count{_labels(key)} {running}")
        return lines


class Registry:
    """The metrics one process exposes; names are unique."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> Any:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames))

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = STAGE_BUCKETS_S,
    ) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, buckets))

    def on_collect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` before each render (to refresh gauges such as memory)."""
        self._collectors.append(callback)

    def render(self) -> str:
        for callback in self._collectors:
            callback()
        with self._lock:
            metrics = list(self._metrics.values())
        lines: list[str] = []
        for metric in metrics:
            lines += metric.header() + metric.samples()
        return "\n".join(lines) + "\n"


def resident_memory_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PipelineMetrics:
    """The edge process's metrics; a sink of the frame loop (:mod:`edge.sinks`).

    :meth:`consume` counts each finished frame, times its stages and records the
    registration state; :meth:`source_gap` records LOST while the camera is away.
    """

    name = "metrics"

    def __init__(self, registry: Registry, states: Iterable[str] = ()) -> None:
        self.registry = registry
        self.frames = registry.counter("edge_frames_total", "Frames processed")
        self.frames_failed = registry.counter(
            "edge_frames_failed_total", "Frames on which a stage raised"
        )
        self.stage_errors = registry.counter(
            "edge_stage_errors_total", "Exceptions raised by a stage", ["stage"]
        )
        self.stage_seconds = registry.histogram(
            "edge_stage_duration_seconds", "Time spent in each stage per frame", ["stage"]
        )
        self.end_to_end = registry.histogram(
            "edge_end_to_end_seconds",
            "From the frame's host capture time to the end of the last stage",
            buckets=(0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5, 1.0),
        )
        self.state = registry.gauge(
            "edge_registration_state", "1 for the current registration state", ["state"]
        )
        self.transitions = registry.counter(
            "edge_state_transitions_total", "Registration state changes", ["from_state", "to_state"]
        )
        self.last_frame = registry.gauge(
            "edge_last_frame_timestamp_seconds", "Unix time the last frame finished"
        )
        self.memory = registry.gauge(
            "edge_process_resident_memory_bytes", "Resident memory of the edge process"
        )
        self.started = registry.gauge(
            "edge_process_start_time_seconds", "Unix time the process started"
        )
        self.started.set(time.time())
        registry.on_collect(lambda: self.memory.set(resident_memory_bytes()))
        self._states = list(states)
        self._current: str | None = None
        for s in self._states:
            self.state.set(0, state=s)

    def consume(self, result: FrameResult) -> None:
        """Count one frame, time its stages, record its registration state."""
        self.observe(result)
        if result.registration is not None:
            self.set_state(result.registration.state)

    def source_gap(self, reason: str) -> None:
        """No frame (camera away): nothing is current."""
        nothing_to_lose = (None, RegistrationState.LOST.value, RegistrationState.SEARCHING.value)
        if self._current not in nothing_to_lose:
            self.set_state(RegistrationState.LOST)

    def observe(self, result: FrameResult) -> None:
        """Count one frame and time its stages."""
        self.frames.inc()
        if result.errors:
            self.frames_failed.inc()
            for error in result.errors:
                self.stage_errors.inc(stage=error.stage)
        for stage, ms in [*result.stage_ms.items(), *result.part_ms.items()]:
            self.stage_seconds.observe(ms / 1000.0, stage=stage)
        if result.done_s and result.frame.host_timestamp_s:
            self.end_to_end.observe(result.end_to_end_ms / 1000.0)
        self.last_frame.set(time.time())

    def set_state(self, state: Any) -> None:
        """Record the registration state (an enum or its name); counts changes."""
        name = str(getattr(state, "name", state))
        if name == self._current:
            return
        if self._current is not None:
            self.state.set(0, state=self._current)
            self.transitions.inc(from_state=self._current, to_state=name)
        self.state.set(1, state=name)
        self._current = name


class MetricsServer:
    """Serves ``registry.render()`` at ``GET /metrics`` on a loopback address.

    ``port=0`` picks a free port (see :attr:`address`). Raises StateError when
    started twice, ValueError for a non-loopback host, OSError when the port is
    taken.
    """

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"metrics are served on loopback only, not {host!r}")
        self.registry = registry
        self.host, self.port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise StateError("metrics server is not running", "call start() first")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def start(self) -> MetricsServer:
        if self._server is not None:
            raise StateError("metrics server is already running")
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = registry.render().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per scrape would drown the journal

        server_class = ThreadingHTTPServer
        if ":" in self.host:
            import socket

            class V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = V6Server
        self._server = server_class((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="edge-metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
