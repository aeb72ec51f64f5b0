"""`edge bench`: the pipeline on a phantom recording, in deterministic playback, measured.

The recording (and its plan and ground truth) is generated into a temporary
folder for each run, so every figure comes from this code on this machine in
this run. Keys of the JSON report are documented in docs/benchmark.md.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Re-exported: the unplug figure lived here first (moved to keep this module small).
from edge.bench_cores import per_model
from edge.bench_unplug import measure_unplug_recovery as measure_unplug_recovery
from edge.config import EdgeConfig
from edge.errors import EdgeError

NOMINAL_FPS = 30.0


def make_phantom_recording(
    config: EdgeConfig,
    scenario: str,
    frames: int,
    seed: int,
    folder: Path,
    skin_triangles: int = 0,
) -> dict[str, Any]:
    """Render a phantom session to ``folder/phantom.db3`` with its truth and signed plan;
    ``skin_triangles``: the plan's skin split to at least this many (bench_cores.finer_skin).
    """
    from edge.bench_cores import finer_skin
    from edge.plan.sign import generate_keypair, load_private_key, sign_plan
    from edge.sources.phantom import PhantomSource
    from edge.sources.phantom.plan_out import write_plan
    from edge.sources.recording import Recorder

    out = folder / "phantom.db3"
    source = PhantomSource(
        scenario=scenario,
        frames=frames,
        seed=seed,
        config=config.phantom,
        tracking=config.tracking,
        tools_dir=config.tools.dir,
    )
    render_s = 0.0
    # Uncompressed, so that replay measures the pipeline rather than LZ4 decoding.
    with (
        source,
        Recorder(
            out, fps=source.nominal_fps, compress=False, camera=source.camera_info
        ) as recorder,
    ):
        while True:
            start = time.perf_counter()
            frame = source.read()
            render_s += time.perf_counter() - start
            if frame is None:
                break
            recorder.write(frame)
        plan_dir = write_plan(source.face, folder / "plan").parent
        limit = config.plan.max_mesh_triangles
        triangles = finer_skin(source.face, plan_dir, skin_triangles, limit)
    keys = generate_keypair(folder / "signer")
    sign_plan(plan_dir, load_private_key(keys.private))
    return {
        "recording": out,
        "plan": plan_dir,
        "pubkey": keys.public,
        "render_ms_per_frame": render_s * 1000.0 / max(frames, 1),
        "skin_triangles": triangles,
    }


def replay_options(config: EdgeConfig, made: dict[str, Any], folder: Path, **extra: Any) -> Any:
    """The `edge run` options that replay a phantom recording through the whole pipeline.

    Publishing is on (CurveZMQ, throw-away keys, free loopback ports), as in theatre.
    """
    from edge.app import RunOptions

    return RunOptions(
        config=config,
        source=str(made["recording"]),
        plan=str(made["plan"]),
        pubkey=str(made["pubkey"]),
        publish="tcp://127.0.0.1:*",
        service="tcp://127.0.0.1:*",
        workdir=folder,
        demo_keys=True,
        **extra,
    )


def rss_trend_pct(samples: list[dict[str, float]]) -> float:
    """Growth from the median RSS of the first fifth of samples to that of the last fifth.

    Resident memory swings by several percent from one sample to the next (frame
    buffers come and go); medians of a fifth compare levels, not two moments.
    """
    if len(samples) < 5:
        return float("nan")
    fifth = len(samples) // 5
    start = float(np.median([s["rss_mb"] for s in samples[:fifth]]))
    end = float(np.median([s["rss_mb"] for s in samples[-fifth:]]))
    return (end / start - 1.0) * 100.0


def model_ratios(frame_ms: dict[str, float], model_ms: dict[str, float]) -> dict[str, float]:
    """The pipeline's time per frame in units of the landmark model's, both from one run.

    ``frame_ms``: percentiles (p50, p99) of the per-frame sum of stage times;
    ``model_ms``: the same of the landmark model's inference calls. Both
    ratios divide by the model's *median* (its p99 is reported, not divided
    by): ``pipeline_to_model_p99`` is the slow frames' cost in typical
    inferences. NaN when no inference ran (no face).
    """
    model = model_ms["p50"]
    return {
        "pipeline_ms": frame_ms["p50"],
        "pipeline_ms_p99": frame_ms["p99"],
        "model_ms": model,
        "model_ms_p99": model_ms["p99"],
        "pipeline_to_model": per_model(frame_ms["p50"], model),
        "pipeline_to_model_p99": per_model(frame_ms["p99"], model),
    }


def run_bench(
    config: EdgeConfig,
    scenario: str = "nod-shake",
    frames: int = 300,
    seed: int = 0,
    threads: int | None = None,
    compare: bool = True,
    skin_triangles: int = 0,
) -> dict[str, Any]:
    """Generate, replay and measure; returns the report (docs/benchmark.md).

    ``compare``: also replay with read-ahead switched and publish to 1 and 8 headsets
    (:func:`edge.bench_cores.second_core_figures`).
    """
    from edge.app import execute
    from edge.bench_cores import landmark_runtime, second_core_figures
    from edge.metrics import resident_memory_bytes
    from edge.sources.recording import measure_playback_fps

    if frames < 1:
        raise EdgeError(f"frame count must be at least 1, got {frames}", "pass --frames N")
    if threads is not None:
        config = dataclasses.replace(
            config, tracking=dataclasses.replace(config.tracking, intra_op_threads=threads)
        )
    config, runtime = landmark_runtime(config)  # "auto" resolved once, for every replay
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        folder = Path(tmp)
        made = make_phantom_recording(config, scenario, frames, seed, folder, skin_triangles)
        playback_fps = measure_playback_fps(made["recording"])
        overlays: list[Any] = []
        config = with_scenario_tool(config, scenario)
        options = replay_options(config, made, folder)
        report = execute(options, on_result=lambda r: overlays.append(r.overlay)).summary
        # What the tools add: the same recording replayed without them and with them in
        # turns, TOOL_PAIRS pairs, the bench's own run the first "with" (docs/benchmark.md).
        pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if "tool_tip_error_mm" in report:
            with_tools = report
            for i in range(TOOL_PAIRS):
                if i:
                    with_tools = execute(replay_options(config, made, folder)).summary
                off = execute(replay_options(without_tool(config), made, folder)).summary
                pairs.append((with_tools, off))
        cores = (
            second_core_figures(config, made, folder, report, overlays, replay_options)
            if compare
            else {}
        )
    fps = report["fps"]
    ordered: dict[str, Any] = {
        "scenario": scenario,
        "frames": report["frames"],
        "fps": fps,
        "realtime_factor": fps / NOMINAL_FPS,
        **model_ratios(report["frame_ms"], report["landmark_model_ms"]),
        "stages": report["stages"],
        "end_to_end_ms": report["end_to_end_ms"],
        "rss_mb": resident_memory_bytes() / 2**20,
        "playback_fps": playback_fps,
        "render_ms_per_frame": made["render_ms_per_frame"],
        "skin_triangles": made["skin_triangles"],
        "intra_op_threads": config.tracking.intra_op_threads,
        "read_ahead": config.pipeline.read_ahead,
        "overlap_stages": config.pipeline.overlap_stages,
        **runtime,
        **cores,
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
        "current_frames_tre_over_2mm",
        "current_frames_tre_over_mm",
        "tre_estimate_calibration",
        "tre_above_estimate_fraction",
        "gates",
        "prediction_error_mm",
        "unpredicted_error_mm",
        *TOOL_KEYS,
    ):
        if key in report:
            ordered[key] = report[key]
    if pairs:
        ordered.update(tool_ratios(report["stages"], report["landmark_model_ms"]))
        ordered.update(tool_added(pairs, report["landmark_model_ms"]))
        ordered["stages_without_tools"] = pairs[0][1]["stages"]
    return ordered


# What the tool figures of a tool scenario are reported as (docs/benchmark.md).
TOOL_KEYS = (
    "tool_tip_error_mm",
    "tool_tip_error_mm_by_range",
    "tool_distance_m",
    "tool_axis_error_deg",
    "tool_frames_to_unseen",
    "tool_frames_to_current_after_return",
    "tool_shown_not_visible",
    "tool_visible_fraction",
    "tool_current_fraction",
    "tool_state_fractions",
    "navigation_error",
    "navigation_current_fraction",
    "navigation_current_without_inputs",
)


def with_scenario_tool(config: EdgeConfig, scenario: str) -> EdgeConfig:
    """The configuration with the scenario's tool tracked (a tool scenario measures it)."""
    from edge.sources.phantom.scenarios import get_scenario

    tool = get_scenario(scenario).tool
    if not tool:
        return config
    names = config.tools.names if tool in config.tools.names else (*config.tools.names, tool)
    tools = dataclasses.replace(config.tools, enabled=True, names=names)
    return dataclasses.replace(config, tools=tools)


def without_tool(config: EdgeConfig) -> EdgeConfig:
    """The configuration with no tool tracked (the replay that :func:`tool_added` compares)."""
    return dataclasses.replace(config, tools=dataclasses.replace(config.tools, enabled=False))


def tool_ratios(stages: dict[str, Any], model_ms: dict[str, float]) -> dict[str, float]:
    """The tool stage's own median time per frame (beside tracking, in its own thread), and
    in units of the landmark model's."""
    tool = float(stages.get("tools", {}).get("p50_ms", float("nan")))
    return {"tool_ms": tool, "tool_to_model": per_model(tool, model_ms["p50"])}


TOOL_PAIRS = 3  # replays with and without tools, in turns: the median of three pairs


def tool_added(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]], model_ms: dict[str, float]
) -> dict[str, Any]:
    """What tracking the tools adds to the frame. Each pair is the summary of a replay with
    the tools and of the same recording replayed next without them; per pair, the per-frame
    time (sum of stage times; p50 and p99) with them less without them (the tool stage,
    its navigation and its publishing, less whatever ran beside tracking); the figures
    are the median over the pairs (each pair's are listed), also in units of the
    landmark model's median (of the bench's own run)."""
    p50 = [w["frame_ms"]["p50"] - o["frame_ms"]["p50"] for w, o in pairs]
    p99 = [w["frame_ms"]["p99"] - o["frame_ms"]["p99"] for w, o in pairs]
    added, added_p99 = float(np.median(p50)), float(np.median(p99))
    return {
        "pipeline_ms_without_tools": float(np.median([o["frame_ms"]["p50"] for _, o in pairs])),
        "pipeline_ms_p99_without_tools": float(np.median([o["frame_ms"]["p99"] for _, o in pairs])),
        "tool_added_ms": added,
        "tool_added_ms_p99": added_p99,
        "tool_added_ms_pairs": p50,
        "tool_added_to_model": per_model(added, model_ms["p50"]),
        "tool_added_to_model_p99": per_model(added_p99, model_ms["p50"]),
    }


# The phantom scenarios the TRE estimate is calibrated on (photo-spoof: never a pose), the
# theatre ones (drapes, jaw and smile) among them: the estimate must hold there too.
CALIBRATION_SCENARIOS = (
    "static",
    "nod-shake",
    "approach",
    "drape",
    "leave-return",
    "photo-spoof",
    "drape-half",
    "drape-side",
    "jaw",
    "theatre",
)


def calibrate_tre(
    config: EdgeConfig,
    scenarios: tuple[str, ...] = CALIBRATION_SCENARIOS,
    frames: int = 300,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run ``edge bench`` on each scenario and propose the TRE estimate's confidence factor.

    The proposal is the configured ``registration.tre_confidence_factor`` times the largest
    ``scale_for_95`` over the scenarios where a pose was shown, rounded up to 0.05: with
    it the true TRE exceeds the displayed estimate in at most 5 % of target-frames on each.
    """
    factor = config.registration.tre_confidence_factor
    per: dict[str, Any] = {}
    for name in scenarios:
        report = run_bench(config, name, frames, seed, threads, compare=False)
        per[name] = {
            "tre_estimate_calibration": report.get("tre_estimate_calibration"),
            "state_fractions": report.get("state_fractions", {}),
            "current_frames_tre_over_2mm": report.get("current_frames_tre_over_2mm"),
            "current_frames_tre_over_mm": report.get("current_frames_tre_over_mm"),
            "tre_above_estimate_fraction": report.get("tre_above_estimate_fraction"),
            "gates": report.get("gates"),
        }
    scales = [
        r["tre_estimate_calibration"]["scale_for_95"]
        for r in per.values()
        if r["tre_estimate_calibration"] and r["tre_estimate_calibration"]["target_frames"]
    ]
    proposed = math.ceil(factor * max(scales) * 20.0) / 20.0 if scales else float("nan")
    for r in per.values():
        cal = r["tre_estimate_calibration"]
        if cal and cal["target_frames"]:
            cal["median_ratio_at_proposed"] = cal["median_ratio"] * proposed / factor
    return {
        "frames": frames,
        "seed": seed,
        "confidence_factor": factor,
        "proposed_confidence_factor": proposed,
        "scenarios": per,
    }


def format_calibration(r: dict[str, Any]) -> str:
    """A human-readable table of a TRE calibration report."""
    lines = [
        f"edge bench --calibrate-tre: {r['frames']} frames per scenario, seed {r['seed']}",
        f"  confidence factor {r['confidence_factor']:.2f}, proposed"
        f" {r['proposed_confidence_factor']:.2f}",
        "  scenario        target-frames  coverage  median est/true  scale for 95 %",
    ]
    for name, s in r["scenarios"].items():
        c = s["tre_estimate_calibration"]
        if not c or not c["target_frames"]:
            lines.append(f"    {name:<14} no pose shown")
            continue
        lines.append(
            f"    {name:<14}{c['target_frames']:>14}  {c['coverage']:8.1%}"
            f"  {c['median_ratio']:15.2f}  {c['scale_for_95']:14.2f}"
        )
    return "\n".join(lines)


def run_soak(
    config: EdgeConfig,
    seconds: float,
    scenario: str = "nod-shake",
    frames: int = 300,
    seed: int = 0,
    threads: int | None = None,
    sample_every_s: float = 10.0,
) -> dict[str, Any]:
    """Replay the phantom recording in a loop for ``seconds`` through ``edge run``'s job.

    As fast as possible, with the frames stripped of ground truth (as in
    theatre). Resident memory is sampled when the warm-up ends (the first
    pass through the recording and a tenth of the time, at most 60 s: the
    allocators were measured still growing for ~40 s), every
    ``sample_every_s`` and at the end. ``restarts`` is always 0: the
    pipeline runs in this process and any restart would have ended the soak.
    """
    from edge.app import execute
    from edge.metrics import resident_memory_bytes
    from edge.sources.recording import RecordingSource
    from edge.sources.replay import LoopingSource

    if seconds <= 0:
        raise EdgeError(f"soak time must be positive, got {seconds}", "pass --soak SECONDS > 0")
    if frames < 1:
        raise EdgeError(f"frame count must be at least 1, got {frames}", "pass --frames N")
    if threads is not None:
        config = dataclasses.replace(
            config, tracking=dataclasses.replace(config.tracking, intra_op_threads=threads)
        )
    samples: list[dict[str, float]] = []
    counts = {"frames": 0, "failed": 0}
    clock = time.monotonic
    start_s = clock()
    deadline_s = start_s + seconds
    warm: dict[str, float] = {}
    warmup_s = min(60.0, 0.1 * seconds)
    looping: list[LoopingSource] = []

    def sample(now: float) -> None:
        samples.append(
            {
                "t_s": now - start_s,
                "rss_mb": resident_memory_bytes() / 2**20,
                "frames": counts["frames"],
            }
        )

    def should_stop() -> bool:
        now = clock()
        if now < deadline_s:
            return False
        if not samples or samples[-1]["frames"] != counts["frames"]:
            sample(now)  # the end sample, with every stage still alive
        return True

    def on_result(result: Any) -> None:
        counts["frames"] += 1
        counts["failed"] += int(result.failed)
        now = clock()
        if not warm:
            if looping[0].passes < 1 or now - start_s < warmup_s:
                return
            warm["t_s"] = now
            sample(now)
        elif now - samples[-1]["t_s"] - start_s >= sample_every_s or now >= deadline_s:
            # Past the deadline: a frame that was read ahead before the source stopped
            # finishes after the end sample; the end sample is taken again with it.
            sample(now)

    with tempfile.TemporaryDirectory(prefix="edge-soak-") as tmp:
        folder = Path(tmp)
        made = make_phantom_recording(config, scenario, frames, seed, folder)
        recording = str(made["recording"])

        def wrap(_: Any) -> LoopingSource:
            looping.append(LoopingSource(lambda: RecordingSource(recording), should_stop))
            return looping[0]

        options = replay_options(config, made, folder, wrap_source=wrap)
        start_s = clock()
        deadline_s = start_s + seconds
        report = execute(options, on_result=on_result).summary
    # Too short a soak to finish warming up has no start sample: its growth is unknown.
    first = samples[0] if warm else {"rss_mb": float("nan"), "frames": 0}
    last = samples[-1] if samples else first
    return {
        "scenario": scenario,
        "soak_s": seconds,
        "duration_s": report["duration_s"],
        "frames": report["frames"],
        "fps": report["fps"],
        "failed_frames": counts["failed"],
        "restarts": 0,
        "passes": looping[0].passes if looping else 0,
        "rss_start_mb": first["rss_mb"],
        "rss_end_mb": last["rss_mb"],
        "rss_growth_pct": (last["rss_mb"] / first["rss_mb"] - 1.0) * 100.0,
        "rss_trend_pct": rss_trend_pct(samples) if warm else float("nan"),
        "warmup_frames": first["frames"],
        "rss_samples": samples,
        "stale_frames": report.get("stale_frames", 0),
        "late_frames": report.get("late_frames", 0),
        "state_fractions": report["state_fractions"],
        "end_to_end_ms": report["end_to_end_ms"],
        "stages": report["stages"],
        "intra_op_threads": config.tracking.intra_op_threads,
    }


def format_soak(r: dict[str, Any]) -> str:
    """A human-readable summary of a soak report."""
    lines = [
        f"edge bench --soak: {r['scenario']}, {r['duration_s']:.0f} s, {r['frames']} frames"
        f" ({r['fps']:.1f} fps, {r['passes']} passes), failed frames {r['failed_frames']},"
        f" restarts {r['restarts']}",
        f"  RSS after warm-up {r['rss_start_mb']:.1f} MB, at the end {r['rss_end_mb']:.1f} MB,"
        f" growth {r['rss_growth_pct']:+.2f} % (medians of the first and last fifth:"
        f" {r['rss_trend_pct']:+.2f} %)",
    ]
    if r.get("state_fractions"):
        lines.append(
            "  states: " + ", ".join(f"{k} {v:.1%}" for k, v in r["state_fractions"].items())
        )
    return "\n".join(lines)


def format_report(r: dict[str, Any]) -> str:
    """A human-readable table of a bench report."""
    from edge.bench_cores import format_cores

    lines = [
        f"edge bench: {r['scenario']}, {r['frames']} frames, {r['intra_op_threads']} threads",
        f"  pipeline {r['fps']:.1f} fps (realtime factor {r['realtime_factor']:.2f}),"
        f" RSS {r['rss_mb']:.0f} MB",
        f"  playback {r['playback_fps']:.0f} fps, phantom rendering"
        f" {r['render_ms_per_frame']:.1f} ms/frame",
        f"  end-to-end p50 {r['end_to_end_ms']['p50']:.2f} ms, p95 {r['end_to_end_ms']['p95']:.2f}"
        f" ms, p99 {r['end_to_end_ms']['p99']:.2f} ms",
        f"  per frame p50 {r['pipeline_ms']:.2f} ms, p99 {r['pipeline_ms_p99']:.2f} ms;"
        f" landmark model p50 {r['model_ms']:.2f} ms, p99 {r['model_ms_p99']:.2f} ms",
        f"  pipeline/model: p50 {r['pipeline_to_model']:.2f}, p99 {r['pipeline_to_model_p99']:.2f}",
        *format_cores(r),
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
    if r.get("tre_estimate_calibration"):
        c = r["tre_estimate_calibration"]
        lines.append(
            f"  TRE estimate: true <= estimate in {c['coverage']:.1%} of {c['target_frames']}"
            f" target-frames, median estimate/true {c['median_ratio']:.2f}"
        )
    for horizon, e in (r.get("prediction_error_mm") or {}).items():
        still = r["unpredicted_error_mm"][horizon]
        lines.append(
            f"  at {horizon} ms past capture: predicted median {e['median']:.3f} mm,"
            f" p95 {e['p95']:.3f} mm (not predicted: {still['median']:.3f}, {still['p95']:.3f})"
        )
    if r.get("current_frames_tre_over_mm"):
        over = r["current_frames_tre_over_mm"]
        lines.append(
            "  current (TRACKING) frames with true TRE over "
            + ", ".join(f"{mm} mm: {n}" for mm, n in over.items())
        )
    for gate, g in (r.get("gates") or {}).items():
        if g["refused_tre_gt2"] or g["refused_tre_le2"]:
            lines.append(
                f"  gate {gate}: refused {g['refused_tre_gt2']} with TRE > 2 mm,"
                f" {g['refused_tre_le2']} with TRE <= 2 mm; passed {g['passed_tre_gt2']}"
                f" with TRE > 2 mm"
            )
    if "tool_tip_error_mm" in r:
        tip, axis = r["tool_tip_error_mm"], r["tool_axis_error_deg"]
        lines.append(
            f"  tool: tip median {tip['median']:.2f} mm, p95 {tip['p95']:.2f} mm; axis median"
            f" {axis['median']:.2f} deg; {r['tool_ms']:.2f} ms, tool/model {r['tool_to_model']:.2f}"
        )
        lines.append(
            f"  tools add {r['tool_added_ms']:.2f} ms a frame (p99 {r['tool_added_ms_p99']:.2f}),"
            f" added/model {r['tool_added_to_model']:.2f} (p99 {r['tool_added_to_model_p99']:.2f})"
        )
        for band, b in r["tool_tip_error_mm_by_range"].items():
            if b["frames"]:
                lines.append(
                    f"    tool at {band} m: tip median {b['median']:.2f} mm,"
                    f" p95 {b['p95']:.2f} mm ({b['frames']} frames)"
                )
    return "\n".join(lines)
