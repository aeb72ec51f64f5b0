"""`edge bench`'s unplug figure: time from a camera's return to TRACKING, through the real
pipeline on a virtual clock (moved out of edge/bench.py, which re-exports it, to keep
that module under the size limit)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from edge.config import EdgeConfig
from edge.registration.types import RegistrationState

# One frame in the unplug bench: capture time (s), registration state, host processing (s).
_Seen = tuple[float, RegistrationState | None, float]


def measure_unplug_recovery(
    config: EdgeConfig,
    away_s: tuple[float, ...] = (0.5, 2.0, 6.0),
    scenario: str = "static",
    frames: int = 60,
    seed: int = 0,
    unplug_at_s: float = 2.0,
    settle_s: float = 3.0,
    tracker: Any = None,
) -> dict[str, Any]:
    """Time from a camera's return after an unplug to TRACKING, through the real pipeline.

    The camera is :class:`edge.sources.replay.ScriptedCamera` playing phantom
    frames behind the real :class:`~edge.sources.realsense.RealSenseSource`
    (its reconnection backoff from ``config.realsense``) on a virtual clock,
    so times are camera time: ``reconnect_s`` from the return to the session
    reopening, ``recovery_s`` from the return to the capture of the first
    TRACKING frame (assumes the pipeline keeps up with the camera, which the
    bench's fps shows). ``processing_ms`` is the host time spent on the
    frames from the return to that TRACKING frame. ``tracker`` replaces the
    face tracker (tests); the real models are used otherwise.
    """
    from edge.app import compose
    from edge.plan.load import load_plan
    from edge.plan.sign import generate_keypair, load_private_key, load_public_key, sign_plan
    from edge.sources.phantom import PhantomSource
    from edge.sources.phantom.plan_out import write_plan
    from edge.sources.realsense import RealSenseSource
    from edge.sources.replay import ScriptedCamera
    from edge.tracking.tracker import FaceTracker

    with tempfile.TemporaryDirectory(prefix="edge-unplug-") as tmp:
        phantom = PhantomSource(
            scenario=scenario,
            frames=frames,
            seed=seed,
            config=config.phantom,
            tracking=config.tracking,
        )
        with phantom:
            rendered = list(phantom)
        plan_dir = write_plan(phantom.face, Path(tmp) / "plan").parent
        keys = generate_keypair(Path(tmp) / "signer")
        sign_plan(plan_dir, load_private_key(keys.private))
        plan = load_plan(plan_dir, public_key=load_public_key(keys.public))
    rs_config = dataclasses.replace(config.realsense, preset="")
    tracker = tracker or FaceTracker.from_config(config.tracking)
    runs: list[dict[str, Any]] = []
    for away in away_s:
        tracker.reset()
        back_s = unplug_at_s + away
        camera = ScriptedCamera(rendered, [(unplug_at_s, back_s)], fps=phantom.nominal_fps)
        source = RealSenseSource(rs_config, layer=camera, clock=camera.clock, sleep=camera.sleep)
        pipeline = compose(config, source, plan=plan, tracker=tracker)
        seen: list[_Seen] = []
        end_s = back_s + settle_s

        def on_result(result: Any, seen: list[_Seen] = seen, end_s: float = end_s) -> bool:
            t = result.frame.device_timestamp_ms / 1000.0
            state = result.registration.state if result.registration else None
            seen.append((t, state, result.done_s - result.received_s))
            return t < end_s

        pipeline.run(on_result=on_result)
        after = [(t, st, p) for t, st, p in seen if t >= back_s]
        first = next(
            (i for i, (_, st, _) in enumerate(after) if st is RegistrationState.TRACKING), None
        )
        reconnected = camera.connected_at_s[-1] - back_s if len(camera.connected_at_s) > 1 else None
        runs.append(
            {
                "away_s": away,
                "tracking_before_unplug": any(
                    st is RegistrationState.TRACKING for t, st, _ in seen if t < unplug_at_s
                ),
                "frames_while_away": sum(1 for t, _, _ in seen if unplug_at_s <= t < back_s),
                "reconnect_s": reconnected if reconnected is not None else float("nan"),
                "frames_to_tracking": first + 1 if first is not None else None,
                "recovery_s": after[first][0] - back_s if first is not None else float("inf"),
                "processing_ms": (
                    sum(p for _, _, p in after[: first + 1]) * 1000.0
                    if first is not None
                    else float("nan")
                ),
                "source_gaps": pipeline.source_gaps,
            }
        )
    return {
        "runs": runs,
        "worst_recovery_s": max(float(r["recovery_s"]) for r in runs),
        "reconnect_initial_s": rs_config.reconnect_initial_s,
        "reconnect_max_s": rs_config.reconnect_max_s,
    }
