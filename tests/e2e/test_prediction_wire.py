"""Pose prediction over real sockets: a headset extrapolates the streamed pose to its display
time with the client library, and lands on the phantom's truth at that time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edge import geometry
from edge.app import RunOptions, execute
from edge.config import EdgeConfig
from edge.plan.load import read_plan
from edge.transport.client import Subscriber
from edge.transport.protocol import TOPIC_OVERLAY
from edge.transport.security import ClientSecurity, generate_keys
from support.net import free_endpoint

HORIZON_S = 0.030


def test_a_headset_extrapolating_to_its_display_time_lands_on_the_truth(tmp_path: Path):
    keys = tmp_path / "keys"
    generate_keys(keys)
    config = EdgeConfig()
    config = dataclasses.replace(
        config, transport=dataclasses.replace(config.transport, keys_dir=str(keys))
    )
    publish = free_endpoint()
    sub = Subscriber(publish, ClientSecurity.from_keys_dir(keys), topics=(TOPIC_OVERLAY,))
    truth: dict[int, tuple[float, np.ndarray]] = {}  # frame -> (camera time, patient_to_camera)
    received = []

    def on_result(result) -> None:  # type: ignore[no-untyped-def]
        frame = result.frame
        if frame.truth is not None and frame.truth.face_visible:
            truth[frame.number] = (frame.capture_s, frame.truth.patient_to_camera)
        sub.poll(20)
        got = sub.take(TOPIC_OVERLAY)
        if got is not None:
            received.append(got)

    try:
        options = RunOptions(
            config=config,
            source="phantom:nod-shake",
            frames=60,
            publish=publish,
            service=free_endpoint(),
            workdir=tmp_path,
        )
        execute(options, on_result)
    finally:
        sub.close()
    plan = read_plan(tmp_path / "plan")  # the phantom's plan, written by the run
    names = list(plan.targets)
    targets = np.array([plan.targets[n] for n in names])
    numbers = sorted(truth)
    times = np.array([truth[n][0] for n in numbers])

    def true_targets(at_s: float) -> np.ndarray | None:
        after = int(np.searchsorted(times, at_s))
        if after == 0 or after >= len(times):
            return None
        (t0, p0), (t1, p1) = truth[numbers[after - 1]], truth[numbers[after]]
        w = (at_s - t0) / (t1 - t0)
        return (1 - w) * geometry.apply(p0, targets) + w * geometry.apply(p1, targets)

    predicted_mm, sent_mm = [], []
    for got in received:
        h = got.message.header
        if got.velocity() is None or h.frame not in truth:
            continue
        assert got.message.payload["current"]
        true = true_targets(truth[h.frame][0] + HORIZON_S)
        if true is None:
            continue
        # The display time on the edge's clock: capture + 30 ms (clocks in sync).
        moved = got.predicted_targets_camera_m(h.capture_unix_s + HORIZON_S)
        pose = got.predicted_pose(h.capture_unix_s + HORIZON_S)
        assert pose is not None
        np.testing.assert_allclose(geometry.apply(pose, targets), moved, atol=1e-9)
        predicted_mm.extend(np.linalg.norm(moved - true, axis=1) * 1000)
        sent = got.message.arrays["targets_camera_m"]
        sent_mm.extend(np.linalg.norm(sent - true, axis=1) * 1000)
    assert len(predicted_mm) >= 20 * len(names), len(received)
    # Measured: predicted median 0.27 mm (max 0.60), as sent 0.76 mm.
    assert float(np.median(predicted_mm)) < 0.5
    assert float(np.median(predicted_mm)) < 0.6 * float(np.median(sent_mm))
