"""`edge bench`: the pipeline on a phantom recording, in deterministic playback, measured.

The recording (and its plan and ground truth) is generated into a temporary
folder for each run, so every figure comes from this code on this machine in
this run. Keys of the JSON report are documented in docs/benchmark.md.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.config import EdgeConfig
from edge.errors import EdgeError

NOMINAL_FPS = 30.0


def make_phantom_recording(
    config: EdgeConfig, scenario: str, frames: int, seed: int, folder: Path
) -> dict[str, Any]:
    """Render a phantom session to ``folder/phantom.db3`` with its truth and signed plan."""
    from edge.plan.sign import generate_keypair, load_private_key, sign_plan
    from edge.sources.phantom import PhantomSource
    from edge.sources.phantom.plan_out import write_plan
    from edge.sources.recording import Recorder

    out = folder / "phantom.db3"
    source = PhantomSource(scenario=scenario, frames=frames, seed=seed, config=config.phantom)
    render_s = 0.0
    with source, Recorder(out, fps=source.nominal_fps) as recorder:
        while True:
            start = time.perf_counter()
            frame = source.read()
            render_s += time.perf_counter() - start
            if frame is None:
                break
            recorder.write(frame)
        plan_dir = write_plan(source.face, folder / "plan").parent
    keys = generate_keypair(folder / "signer")
    sign_plan(plan_dir, load_private_key(keys.private))
    return {
        "recording": out,
        "plan": plan_dir,
        "pubkey": keys.public,
        "render_ms_per_frame": render_s * 1000.0 / max(frames, 1),
    }


def run_bench(
    config: EdgeConfig,
    scenario: str = "nod-shake",
    frames: int = 300,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Generate, replay and measure; returns the report (docs/benchmark.md)."""
    from edge.metrics import resident_memory_bytes
    from edge.run import RunOptions, execute
    from edge.sources.recording import measure_playback_fps

    if frames < 1:
        raise EdgeError(f"frame count must be at least 1, got {frames}", "pass --frames N")
    if threads is not None:
        config = dataclasses.replace(
            config, tracking=dataclasses.replace(config.tracking, intra_op_threads=threads)
        )
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        folder = Path(tmp)
        made = make_phantom_recording(config, scenario, frames, seed, folder)
        playback_fps = measure_playback_fps(made["recording"])
        options = RunOptions(
            config=config,
            source=str(made["recording"]),
            plan=str(made["plan"]),
            pubkey=str(made["pubkey"]),
            publish="tcp://127.0.0.1:*",
            service="tcp://127.0.0.1:*",
            workdir=folder,
            demo_keys=True,
        )
        report = execute(options).summary
    fps = report["fps"]
    ordered: dict[str, Any] = {
        "scenario": scenario,
        "frames": report["frames"],
        "fps": fps,
        "realtime_factor": fps / NOMINAL_FPS,
        "stages": report["stages"],
        "end_to_end_ms": report["end_to_end_ms"],
        "rss_mb": resident_memory_bytes() / 2**20,
        "playback_fps": playback_fps,
        "render_ms_per_frame": made["render_ms_per_frame"],
        "intra_op_threads": config.tracking.intra_op_threads,
    }
    for key in (
        "landmark_error_px",
        "landmark_error_mm",
        "tre_mm",
        "rotation_error_deg",
        "translation_error_mm",
        "jitter_mm",
        "time_to_register_ms",
        "frames_to_lost",
        "frames_to_tracking_after_return",
        "state_fractions",
        "failed_frames",
    ):
        if key in report:
            ordered[key] = report[key]
    return ordered


def format_report(r: dict[str, Any]) -> str:
    """A human-readable table of a bench report."""
    lines = [
        f"edge bench: {r['scenario']}, {r['frames']} frames, {r['intra_op_threads']} threads",
        f"  pipeline {r['fps']:.1f} fps (realtime factor {r['realtime_factor']:.2f}),"
        f" RSS {r['rss_mb']:.0f} MB",
        f"  playback {r['playback_fps']:.0f} fps, phantom rendering"
        f" {r['render_ms_per_frame']:.1f} ms/frame",
        f"  end-to-end p50 {r['end_to_end_ms']['p50']:.2f} ms, p95 {r['end_to_end_ms']['p95']:.2f}"
        f" ms, p99 {r['end_to_end_ms']['p99']:.2f} ms",
        "  stage            p50 ms   p99 ms",
    ]
    for name, s in r["stages"].items():
        lines.append(f"    {name:<14}{s['p50_ms']:8.2f} {s['p99_ms']:8.2f}")
    for key in (
        "landmark_error_px",
        "landmark_error_mm",
        "rotation_error_deg",
        "translation_error_mm",
    ):
        if key in r:
            lines.append(f"  {key}: median {r[key]['median']:.3f}, p95 {r[key]['p95']:.3f}")
    if "tre_mm" in r:
        t = r["tre_mm"]
        lines.append(f"  tre_mm: mean {t['mean']:.3f}, p95 {t['p95']:.3f}, max {t['max']:.3f}")
    for key in (
        "jitter_mm",
        "time_to_register_ms",
        "frames_to_lost",
        "frames_to_tracking_after_return",
    ):
        if key in r:
            lines.append(f"  {key}: {r[key]:.3f}")
    if r.get("state_fractions"):
        lines.append(
            "  states: " + ", ".join(f"{k} {v:.1%}" for k, v in r["state_fractions"].items())
        )
    return "\n".join(lines)
