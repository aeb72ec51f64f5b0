"""Transport benchmark on loopback (``edge view --bench``): figures, not pass/fail.

* publish stage time per frame (overlay + hud sent, video offered), p50/p99;
* capture-to-receive latency at 1 and 8 subscribers, each its own process;
* overlay age seen by a deliberately slow subscriber (5 Hz renderer against a
  30 Hz stream) over the run: first third against last third.

Run the 10-minute soak as ``edge view --bench --bench-seconds 600``.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import numpy as np

from edge.config import TransportConfig
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.overlay.demo import demo_plan, demo_registration
from edge.overlay.stage import OverlayStage
from edge.transport.server import EdgeServer
from edge.transport.stage import PublishStage, plan_info

INTR = Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
    }


def _subscriber_main(endpoint: str, seconds: float, slow_s: float, out: Any) -> None:
    from edge.transport.client import Subscriber
    from edge.transport.security import ClientSecurity

    sub = Subscriber(endpoint, ClientSecurity.plaintext(), topics=("overlay",))
    latencies: list[tuple[float, float]] = []  # (elapsed s, ms)
    start = time.monotonic()
    last_seq = -1
    while time.monotonic() - start < seconds:
        if slow_s:
            time.sleep(slow_s)  # a renderer that takes slow_s per frame, then drains
            sub.poll(0)
        else:
            sub.poll(100)
        got = sub.latest("overlay")
        if got is not None and got.message.header.seq != last_seq:
            last_seq = got.message.header.seq
            latencies.append(
                (
                    time.monotonic() - start,
                    (got.received_unix_s - got.message.header.capture_unix_s) * 1000,
                )
            )
    out.put(
        {
            "latencies": latencies,
            "dropped": sub.stats.dropped_upstream,
            "superseded": sub.stats.superseded,
        }
    )
    sub.close()


def _stream(publish: PublishStage, seconds: float, hz: float) -> list[float]:
    """Run overlay + publish stages at ``hz``; returns publish-stage times in ms."""
    stage = OverlayStage(demo_plan())
    color = np.full((480, 640, 3), 90, np.uint8)
    times: list[float] = []
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        frame = Frame(
            i, color, PixelFormat.BGR8, None, 0.001, INTR, host_timestamp_s=time.monotonic()
        )
        r = FrameResult(frame)
        r.registration = demo_registration()
        stage.process(r)
        t0 = time.perf_counter()
        publish.process(r)
        times.append((time.perf_counter() - t0) * 1000)
        i += 1
        next_s = start + i / hz
        time.sleep(max(0.0, next_s - time.monotonic()))
    return times


def _run_subscribers(
    count: int, seconds: float, hz: float, slow_s: float = 0.0
) -> tuple[list[float], list[dict[str, Any]]]:
    cfg = TransportConfig(
        publish_endpoint="tcp://127.0.0.1:0",
        service_endpoint="tcp://127.0.0.1:0",
        security="plaintext",
        video="off",
    )
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with EdgeServer(cfg, demo_plan()) as server:
        assert server.publisher is not None
        procs = [
            ctx.Process(
                target=_subscriber_main,
                args=(server.publisher.endpoint, seconds + 1.5, slow_s, q),
            )
            for _ in range(count)
        ]
        for p in procs:
            p.start()
        time.sleep(1.5)  # spawn start-up and subscription propagation
        publish = PublishStage.from_config(server.publisher, cfg, plan_info(demo_plan())).start()
        try:
            times = _stream(publish, seconds, hz)
        finally:
            publish.close()
        results = [q.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=10)
    return times, results


def run_all(seconds: float = 10.0, hz: float = 30.0) -> dict[str, Any]:
    """All three measurements; ``seconds`` per phase."""
    figures: dict[str, Any] = {"seconds_per_phase": seconds, "rate_hz": hz}
    times, _ = _run_subscribers(1, seconds, hz)
    figures["publish_stage_ms"] = _pct(times)
    for n in (1, 8):
        _, results = _run_subscribers(n, seconds, hz)
        lat = [ms for r in results for (_, ms) in r["latencies"]]
        figures[f"capture_to_receive_ms_{n}_subscribers"] = _pct(lat)
    _, results = _run_subscribers(1, seconds, hz, slow_s=0.2)
    samples = results[0]["latencies"]
    third = seconds / 3
    figures["slow_subscriber_age_ms"] = {
        "renderer_period_ms": 200,
        "first_third": _pct([ms for t, ms in samples if t < third + 1.5]),
        "last_third": _pct([ms for t, ms in samples if t >= seconds - third + 1.5]),
        "dropped_upstream": results[0]["dropped"],
        "superseded_in_drain": results[0]["superseded"],
    }
    return figures
