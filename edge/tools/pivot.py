"""`edge calibrate pivot --source ... --tool NAME`: a tool's tip from frames of it pivoting.

The tool rests with its tip in a divot and is swung about it in a cone while the camera
(live, or a recording) watches its markers. Each frame where the tool is seen (VISIBLE,
from two or more markers, unsmoothed) gives a ``tool_to_camera`` pose; the pivot
calibration of :mod:`edge.calibration.pivot` solves the tip in the tool frame with its
RMS, and :func:`write_calibrated_tip` puts both into the tool file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edge.calibration.procedures import Outcome, Say
from edge.config import EdgeConfig
from edge.errors import CalibrationError
from edge.frames import FrameResult
from edge.tools.definition import ToolSpec, load_tool, tool_path, write_tip
from edge.tools.types import ToolState

MAX_RMS_MM = 1.0  # the pivot's RMS over this: refused (the tip slipped, or bad poses)


def tool_poses(cfg: EdgeConfig, spec: ToolSpec, source: str, frames: int) -> list[np.ndarray]:
    """``tool_to_camera`` of every frame of ``source`` where the tool is VISIBLE."""
    from edge.sources import open_source, parse_source_spec
    from edge.tools.stage import ToolStage

    tools_cfg = dataclasses.replace(cfg.tools, smoothing=False)
    stage = ToolStage((spec,), tools_cfg)
    poses = []
    with open_source(parse_source_spec(source), cfg, frames=frames) as src:
        for i, frame in enumerate(src):
            if i >= frames:
                break
            result = FrameResult(frame)
            stage.process(result)
            assert result.tools is not None
            pose = result.tools.tools[0]
            if pose.state is ToolState.VISIBLE and pose.tool_to_camera is not None:
                poses.append(pose.tool_to_camera)
    return poses


def pivot_from_source(
    cfg: EdgeConfig,
    tool: str,
    source: str,
    frames: int,
    say: Say,
    ransac: bool = False,
    serial: str | None = None,
) -> tuple[Outcome, ToolSpec]:
    """The pivot calibration of ``tool`` from ``source`` (not yet saved); raises
    CalibrationError when the tool is seen in fewer than 8 frames."""
    from edge.calibration import report
    from edge.calibration.pivot import calibrate_pivot
    from edge.calibration.results import CalibrationResult, check_serial, input_record

    spec = load_tool(tool, cfg.tools.dir)
    poses = tool_poses(cfg, spec, source, frames)
    say(f"{spec.name}: seen from two or more markers in {len(poses)} of up to {frames} frames")
    if len(poses) < 8:
        raise CalibrationError(
            f"the tool {spec.name} was seen in only {len(poses)} frames",
            "keep its markers in view of the camera while pivoting (or record longer)",
        )
    res = calibrate_pivot(poses, cfg.calibration.min_pivot_rotation_deg, ransac=ransac)
    problems = []
    if res.rms_mm > MAX_RMS_MM:
        problems.append(
            f"RMS {res.rms_mm:.2f} mm exceeds {MAX_RMS_MM:g} mm: keep the tip seated in the "
            "divot (or use --ransac to drop slips)"
        )
    inputs = (
        [input_record(source, "recording")]
        if Path(source).is_file()
        else [{"path": source, "role": "live camera or phantom", "sha256": ""}]
    )
    inputs.append(input_record(tool_path(tool, cfg.tools.dir), "tool definition"))
    result = CalibrationResult(
        kind="pivot",
        serial=check_serial(serial or spec.name),
        width=None,
        height=None,
        parameters=res.parameters(),
        errors=res.errors(),
        inputs=inputs,
    )
    summary = report.pivot_summary(res, problems)
    was = 1000.0 * np.linalg.norm(res.tip_tool_m - spec.tip_m)
    summary += f"\n  tip moved {was:.2f} mm from the tool file's ({spec.tip_source})"
    pose_array = np.asarray(poses)
    outcome = Outcome(
        result,
        summary,
        lambda out: report.pivot_report(res, pose_array, problems, out),
        problems,
    )
    return outcome, spec


def write_calibrated_tip(
    cfg: EdgeConfig, tool: str, outcome: Outcome, saved: Path, say: Say
) -> ToolSpec:
    """Write the calibrated tip and its RMS into the tool file (after the result is kept)."""
    tip_mm = np.asarray(outcome.result.parameters["tip_tool_mm"], dtype=np.float64)
    rms = float(outcome.result.errors["rms_mm"])
    path = tool_path(tool, cfg.tools.dir)
    spec = write_tip(path, tip_mm / 1000.0, rms, f"pivot calibration {saved.name}")
    tip = ", ".join(f"{v:.2f}" for v in tip_mm)
    say(f"tool file {path}: tip_mm = [{tip}], tip_rms_mm = {rms:.3f}")
    return spec
