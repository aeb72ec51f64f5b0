"""Parts of `edge bench` about the second core and the headsets (docs/benchmark.md).

* both cores: the same recording replayed with ``[pipeline]`` read-ahead and overlapped
  stages on and with both off, in one bench run; throughput and end-to-end latency;
* publish cost per extra headset: the overlays of the bench's own run published again
  through the real publish stage, over CurveZMQ on loopback, to 1 and then 8 enrolled
  headsets (real subscriber sockets in another process), as process CPU time per frame.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.config import EdgeConfig
from edge.errors import EdgeError
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.overlay.types import Overlay
from edge.transport.protocol import TOPIC_OVERLAY, TOPIC_STATUS

Timing = Literal["deterministic", "realtime"]
HEADSET_COUNTS = (1, 8)
PUBLISH_HZ = 60.0  # twice the camera's rate: the subscribers keep up, the run stays short
MAX_PUBLISHED = 150  # overlays per headset count
FAST_ROUNDS = 6  # as-fast replays each way, in turns: the machine's speed drifts between them
PACED_ROUNDS = 2  # camera-rate replays each way, in turns (5 s each)
REALTIME_FRAMES = 150  # frames of each camera-rate replay (5 s at 30 fps)
READY_TIMEOUT_S = 30.0  # spawn start-up, CURVE handshakes and subscriptions, loaded machine


def per_model(ms: float, model_ms: float) -> float:
    """``ms`` in units of the landmark model's median time (NaN when no inference ran)."""
    return ms / model_ms if math.isfinite(model_ms) and model_ms > 0 else float("nan")


def finer_skin(face: Any, plan_dir: Path, min_triangles: int, max_triangles: int) -> int:
    """Rewrite the phantom plan in ``plan_dir`` (before it is signed) with its skin split
    until it has at least ``min_triangles``; returns the skin's triangle count (unchanged
    when ``min_triangles`` is 0).

    Each step splits every triangle in four at its edge midpoints: the surface, and so
    registration and the skin distances, stay the same; only the ray cast has more
    triangles to search. Raises EdgeError when the result would exceed ``max_triangles``
    (``[plan] max_mesh_triangles``, which the plan's loader enforces).
    """
    import trimesh

    from edge.plan.model import Mesh
    from edge.plan.write import write_plan
    from edge.sources.phantom.plan_out import phantom_plan

    plan = phantom_plan(face)
    vertices, faces = np.asarray(plan.skin.vertices), np.asarray(plan.skin.faces)
    if min_triangles <= len(faces):
        return len(faces)
    count = len(faces)
    while count < min_triangles:
        count *= 4
    if count > max_triangles:
        raise EdgeError(
            f"a skin of at least {min_triangles} triangles has {count} here (the phantom's"
            f" {len(faces)} split in four until enough), over plan.max_mesh_triangles"
            f" {max_triangles}",
            "ask for fewer --skin-triangles or raise [plan] max_mesh_triangles",
        )
    while len(faces) < min_triangles:
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    write_plan(dataclasses.replace(plan, skin=Mesh(vertices, faces)), plan_dir)
    return len(faces)


def landmark_runtime(config: EdgeConfig) -> tuple[EdgeConfig, dict[str, Any]]:
    """The runtime trial of ``[tracking] runtime = "auto"``, made once at the bench's start
    whatever the setting (so the report records what this machine would choose), and the
    configuration the bench then runs: with ``"auto"``, the chosen runtime (every replay
    of the bench uses the same one)."""
    from edge.tracking.runtime import open_landmark_runner

    t = config.tracking
    _, trial = open_landmark_runner("auto", t.models_dir, t.providers, t.intra_op_threads)
    assert trial is not None
    used = t.runtime
    if used == "auto":
        used = "litert" if trial.chosen == "litert" else "onnxruntime"
    resolved = dataclasses.replace(config, tracking=dataclasses.replace(t, runtime=used))
    return resolved, {"landmark_runtime": used, "runtime_trial": trial.as_dict()}


def _with(config: EdgeConfig, both_cores: bool, timing: Timing) -> EdgeConfig:
    pipeline = dataclasses.replace(
        config.pipeline, read_ahead=both_cores, overlap_stages=both_cores
    )
    source = dataclasses.replace(config.source, timing=timing)
    return dataclasses.replace(config, pipeline=pipeline, source=source)


def _turns(round_: int) -> tuple[bool, bool]:
    """Which way goes first in a round (False: one core): one then both, then both then one,
    and so on, so that a machine speeding up or slowing down over the rounds does not
    favour either way."""
    return (False, True) if round_ % 2 == 0 else (True, False)


def both_cores_figures(
    config: EdgeConfig,
    made: dict[str, Any],
    folder: Path,
    replay_options: Callable[..., Any],
) -> dict[str, Any]:
    """The recording replayed on one core (``[pipeline]`` read-ahead and overlapped stages
    off) and on both (on), as fast as it goes, in turns (:data:`FAST_ROUNDS` each, the
    order reversed every other round, so that load from other processes and the machine's
    drifting speed hit both alike); then at the camera's rate (``realtime`` timing, at
    most :data:`REALTIME_FRAMES`), both ways, in turns as well (:data:`PACED_ROUNDS` each;
    the median of each way's end-to-end p50s).

    ``both_cores_speedup`` = frames per second on both / on one, over all their rounds,
    as fast as it goes (where a frame waits for the ones before it: its end-to-end time
    grows by that wait); ``both_cores_speedup_rounds``, the same of each round, shows how
    far it moves with the machine. ``end_to_end_ms_p50_realtime_*``: the latency a
    camera's frame sees, both ways. ``replay_options``: :func:`edge.bench.replay_options`
    (passed in: that module imports this one).
    """
    from edge.app import execute

    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for round_ in range(FAST_ROUNDS):
        for both in _turns(round_):
            options = replay_options(_with(config, both, "deterministic"), made, folder)
            runs[both].append(execute(options).summary)
    paced: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for round_ in range(PACED_ROUNDS):
        for both in _turns(round_):
            options = replay_options(
                _with(config, both, "realtime"), made, folder, frames=REALTIME_FRAMES
            )
            paced[both].append(execute(options).summary)

    def fps(both: bool) -> float:
        seconds = sum(r["duration_s"] for r in runs[both])
        return sum(r["frames"] for r in runs[both]) / seconds if seconds > 0 else float("nan")

    def median(both: bool, key: str, of: dict[bool, list[dict[str, Any]]] = runs) -> float:
        return float(np.median([r[key]["p50"] for r in of[both]]))

    def ratio(both: float, one: float) -> float:
        return both / one if one > 0 else float("nan")

    return {
        "both_cores_fps": fps(True),
        "one_core_fps": fps(False),
        "both_cores_speedup": ratio(fps(True), fps(False)),
        "both_cores_speedup_rounds": [
            ratio(b["fps"], o["fps"]) for o, b in zip(runs[False], runs[True], strict=True)
        ],
        "end_to_end_ms_p50_both_cores": median(True, "end_to_end_ms"),
        "end_to_end_ms_p50_one_core": median(False, "end_to_end_ms"),
        "pipeline_ms_both_cores": median(True, "frame_ms"),
        "pipeline_ms_one_core": median(False, "frame_ms"),
        "end_to_end_ms_p50_realtime_both_cores": median(True, "end_to_end_ms", paced),
        "end_to_end_ms_p50_realtime_one_core": median(False, "end_to_end_ms", paced),
        "realtime_frames": paced[True][0]["frames"],
    }


def second_core_figures(
    config: EdgeConfig,
    made: dict[str, Any],
    folder: Path,
    report: dict[str, Any],
    overlays: list[Overlay | None],
    replay_options: Callable[..., Any],
) -> dict[str, Any]:
    """Everything this module measures, after the bench's own run (``report``, its
    ``overlays``): both cores and one, publish cost per extra headset."""
    figures = both_cores_figures(config, made, folder, replay_options)
    figures.update(publish_per_headset(overlays, report["landmark_model_ms"]["p50"], folder))
    return figures


def _headsets_main(endpoint: str, keys_dir: str, names: list[str], ready: Any, done: Any) -> None:
    """A process holding one subscriber per headset name; says ``ready`` once every one has
    received a status message (connected, admitted, subscribed), then receives until told
    to stop and reports the overlays each one received."""
    from edge.transport.client import Subscriber
    from edge.transport.security import ClientSecurity

    subs = [
        Subscriber(
            endpoint,
            ClientSecurity.from_keys_dir(keys_dir, n),
            topics=(TOPIC_STATUS, TOPIC_OVERLAY),
        )
        for n in names
    ]
    told_ready = False
    try:
        while True:
            for sub in subs:
                sub.poll(2)
            if not told_ready and all(s.stats.per_topic.get(TOPIC_STATUS) for s in subs):
                ready.put(True)
                told_ready = True
            try:
                done.get_nowait()
                break
            except queue.Empty:
                pass
        for sub in subs:
            sub.poll(50)
        ready.put([s.stats.per_topic.get(TOPIC_OVERLAY, 0) for s in subs])
    finally:
        for sub in subs:
            sub.close()


def _publish_to(count: int, overlays: list[Overlay], folder: Path) -> dict[str, float]:
    """Publish ``overlays`` to ``count`` headsets; CPU and wall ms per frame, overlays received."""
    from edge.config import TransportConfig
    from edge.transport.security import generate_keys
    from edge.transport.server import EdgeServer
    from edge.transport.stage import PublishStage

    names = [f"headset{i}" for i in range(count)]
    keys = folder / f"keys-{count}"
    generate_keys(keys, tuple(names))
    config = TransportConfig(
        publish_endpoint="tcp://127.0.0.1:0",
        service_endpoint="tcp://127.0.0.1:0",
        security="curve",
        keys_dir=str(keys),
        video="off",  # headsets off loopback get no video (transport.video = "auto")
    )
    ctx = mp.get_context("spawn")
    ready, done = ctx.Queue(), ctx.Queue()
    tiny = Frame(0, np.zeros((2, 2, 3), np.uint8), PixelFormat.BGR8, None, 0.001, _TINY)
    with EdgeServer(config, None) as server:
        assert server.publisher is not None
        stage = PublishStage(server.publisher)  # no heartbeat thread: only frames are timed
        proc = ctx.Process(
            target=_headsets_main,
            args=(server.publisher.endpoint, str(keys), names, ready, done),
            daemon=True,
        )
        proc.start()
        try:
            deadline_s = time.monotonic() + READY_TIMEOUT_S
            while True:  # status until every headset has one: all connected and subscribed
                stage.send_status()
                try:
                    ready.get(timeout=0.05)
                    break
                except queue.Empty:
                    if time.monotonic() > deadline_s or not proc.is_alive():
                        raise EdgeError(
                            f"the {count} bench headsets did not connect within "
                            f"{READY_TIMEOUT_S:.0f} s",
                            "run the bench again on a less loaded machine",
                        ) from None
            wall_ms: list[float] = []
            cpu_start = time.process_time()
            start_s = time.monotonic()
            for i, overlay in enumerate(overlays):
                t0 = time.perf_counter()
                stage.process(FrameResult(tiny, overlay=overlay))
                wall_ms.append((time.perf_counter() - t0) * 1000.0)
                time.sleep(max(0.0, start_s + (i + 1) / PUBLISH_HZ - time.monotonic()))
            cpu_ms = (time.process_time() - cpu_start) * 1000.0 / len(overlays)
            done.put(True)
            received = ready.get(timeout=READY_TIMEOUT_S)
        finally:
            stage.close()
            proc.join(timeout=10.0)
            if proc.is_alive():
                proc.kill()
    return {
        "cpu_ms_per_frame": cpu_ms,
        "publish_ms_p50": float(np.median(wall_ms)),
        "received_min_fraction": min(received) / len(overlays),
    }


_TINY = Intrinsics(2, 2, 1.0, 1.0, 0.5, 0.5)


def publish_per_headset(
    overlays: list[Overlay | None], model_ms: float, folder: Path
) -> dict[str, Any]:
    """The publish cost of each headset beyond the first, in units of ``model_ms``.

    ``overlays``: the bench run's own (the last :data:`MAX_PUBLISHED`). The cost is the
    process's CPU time per published frame (the pipeline thread's encoding and the
    ZeroMQ I/O threads' CurveZMQ encryption per connection), with 8 headsets less with
    1, divided by 7. Empty when the run drew no overlay.
    """
    chosen = [o for o in overlays if o is not None][-MAX_PUBLISHED:]
    if not chosen:
        return {}
    per = {n: _publish_to(n, chosen, folder) for n in HEADSET_COUNTS}
    first, last = HEADSET_COUNTS[0], HEADSET_COUNTS[-1]
    extra_ms = (per[last]["cpu_ms_per_frame"] - per[first]["cpu_ms_per_frame"]) / (last - first)
    return {
        "publish_headsets": {str(n): f for n, f in per.items()},
        "publish_per_headset_ms": extra_ms,
        "publish_per_headset_to_model": per_model(extra_ms, model_ms),
    }


def format_cores(r: dict[str, Any]) -> list[str]:
    """The lines of :func:`edge.bench.format_report` about read-ahead and headsets."""
    lines = []
    if "both_cores_speedup" in r:
        rounds = [x for x in r["both_cores_speedup_rounds"] if x is not None and math.isfinite(x)]
        spread = f"; rounds x{min(rounds):.2f} to x{max(rounds):.2f}" if rounds else ""
        lines.append(
            f"  both cores {r['both_cores_fps']:.1f} fps, one core {r['one_core_fps']:.1f} fps"
            f" (x{r['both_cores_speedup']:.2f}{spread}); end-to-end p50"
            f" {r['end_to_end_ms_p50_both_cores']:.2f} / {r['end_to_end_ms_p50_one_core']:.2f} ms;"
            f" at the camera's rate {r['end_to_end_ms_p50_realtime_both_cores']:.2f} /"
            f" {r['end_to_end_ms_p50_realtime_one_core']:.2f} ms"
        )
    if "runtime_trial" in r:
        t = r["runtime_trial"]
        lines.append(
            f"  landmark model on {r['landmark_runtime']}; at start, median ms per inference: "
            + ", ".join(f"{k} {v:.3f}" for k, v in t["median_ms"].items())
            + f" (auto chooses {t['chosen']})"
        )
    if "publish_per_headset_to_model" in r:
        lines.append(
            f"  publish: {r['publish_per_headset_ms']:.3f} ms CPU per extra headset (1 -> 8),"
            f" {r['publish_per_headset_to_model']:.3f} of the landmark model"
        )
    return lines
