"""The calibration procedures ``edge calibrate`` runs: read the data, solve, judge, keep.

Each procedure reads its data (a frame source, or a JSON file of poses or
alignments; ``synthetic`` generates known-answer data instead, and writes it
to an input file first), solves, and returns an :class:`Outcome`: the result,
a one-screen summary, the PNG report to draw and the problems that refuse it.
:func:`finish` draws the report and, when the result meets its quality bar,
saves it under ``<devices_dir>/<serial>/``. A refused calibration still gets
its report (to see why) but no result file.

Progress lines (one per frame, where an input file went) go to ``say``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.calibration.boards import BoardSpec
from edge.calibration.results import CalibrationResult
from edge.config import EdgeConfig
from edge.errors import CalibrationError
from edge.files import read_json
from edge.frames import FrameSource

SYNTHETIC_SERIAL = "synthetic"

Say = Callable[[str], object]


@dataclass(frozen=True)
class FrameInput:
    """Frames of a board: a source (``realsense[:SERIAL]`` or ``FILE.db3``), a folder of
    images, or synthetic ones."""

    source: str | None  # None when synthetic or images
    synthetic: bool
    frames: int  # frames to read (synthetic: views to render)
    seed: int = 0  # of the synthetic views
    serial: str | None = None  # device serial (default: the camera's, or 'synthetic')
    images: str | None = None  # folder of board photos
    width: int | None = None  # the camera's resolution, for images (default: the images')
    height: int | None = None


UNKNOWN_SERIAL = "unknown"  # where results from images of an unnamed camera are filed


@dataclass(frozen=True)
class FileInput:
    """A JSON file of poses or alignments (docs/calibration.md), or synthetic data."""

    path: str | None  # None when synthetic
    synthetic: bool
    seed: int = 0  # of the synthetic data
    serial: str | None = None  # device serial (default: from the file)


@dataclass
class Outcome:
    """A solved calibration, not yet saved."""

    result: CalibrationResult
    summary: str  # one screen of text
    draw_report: Callable[[Path], object]  # writes the PNG report to the path given
    problems: list[str]  # why the result is refused; empty: it meets its quality bar
    finding: str | None = None  # about the device itself, reported after the result is kept


def report_path(result: CalibrationResult, devices_dir: Path, report: str | None = None) -> Path:
    """``report``, else the PNG beside where the result file goes."""
    from edge.calibration.results import result_path

    return Path(report) if report else result_path(devices_dir, result).with_suffix(".png")


def finish(outcome: Outcome, devices_dir: Path, report: str | None, say: Say) -> Path:
    """Draw the report, say the summary, then save the result; the saved file's path.

    Raises CalibrationError (after the report is written) when there are problems.
    """
    from edge.calibration.results import save_result

    result = outcome.result
    out = report_path(result, devices_dir, report)
    outcome.draw_report(out)
    say(outcome.summary)
    say(f"report: {out}")
    if outcome.problems:
        raise CalibrationError(
            f"{result.kind} calibration refused ({len(outcome.problems)} problem(s)): "
            f"{outcome.problems[0]}",
            f"see {out}",
        )
    saved = save_result(result, devices_dir)
    say(f"result: {saved}")
    return saved


# --------------------------------------------------------------------------- frame inputs


def _open_frames(
    inp: FrameInput, cfg: EdgeConfig, spec: BoardSpec, **synthetic: Any
) -> FrameSource:
    if inp.synthetic:
        from edge.calibration.synthetic import SyntheticBoardSource

        return SyntheticBoardSource(spec, frames=inp.frames, seed=inp.seed, **synthetic)
    if inp.images is not None:
        from edge.calibration.images import ImageFolderSource

        return ImageFolderSource(inp.images, inp.width, inp.height, inp.serial or "")
    from edge.sources import open_source, parse_source_spec

    assert inp.source is not None  # the command line asks for --source or --synthetic
    return open_source(parse_source_spec(inp.source), cfg, frames=inp.frames)


def _serial(serial: str | None, source: Any) -> str:
    from edge.calibration.results import check_serial

    serial = serial or getattr(source, "serial", None)
    if not serial and getattr(source, "name", "") == "images":
        return UNKNOWN_SERIAL
    if not serial:
        raise CalibrationError(
            "the device serial is unknown for this source",
            "pass --serial (printed on the camera, or `edge info`)",
        )
    return check_serial(str(serial))


def _source_inputs(inp: FrameInput) -> list[dict[str, str]]:
    from edge.calibration.results import input_record

    if inp.synthetic:
        return [{"path": f"synthetic:seed={inp.seed}", "role": "source", "sha256": ""}]
    if inp.images is not None:
        from edge.calibration.images import IMAGE_SUFFIXES

        files = sorted(p for p in Path(inp.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return [input_record(p, "image") for p in files]
    assert inp.source is not None
    if Path(inp.source).is_file():
        return [input_record(inp.source, "recording")]
    return [{"path": inp.source, "role": "live camera", "sha256": ""}]


# --------------------------------------------------------------------------- intrinsics


def intrinsics(
    cfg: EdgeConfig,
    devices_dir: Path,
    board: str,
    inp: FrameInput,
    say: Say,
    report_to: str | None = None,
) -> Outcome:
    """Camera intrinsics from ChArUco views; keeps the detected corners as an input file.

    When the views cannot be solved (no board, too few views, too little coverage)
    the collection's report is still written (``report_to``, else beside where the
    result would go) before the CalibrationError is raised.
    """
    from edge.calibration import report
    from edge.calibration.boards import load_board
    from edge.calibration.intrinsics import ViewCollector, calibrate_views, quality_problems
    from edge.calibration.results import input_record, write_json_atomic

    cal = cfg.calibration
    spec = load_board(board, cal.boards_dir)
    collector = ViewCollector(spec, cal)
    with _open_frames(inp, cfg, spec) as source:
        serial = _serial(inp.serial, source)
        factory = getattr(source, "has_factory_intrinsics", True)
        if serial == UNKNOWN_SERIAL:
            say(f"device serial unknown: the result is filed under {serial!r} (pass --serial)")
        for i, frame in enumerate(source):
            decision = collector.add(frame, factory=factory)
            say(f"frame {frame.number:4d}: {decision.verdict.value:28s} | {collector.progress()}")
            if i + 1 >= inp.frames and inp.images is None:
                break
    try:
        solution = calibrate_views(spec, collector, cal.distortion_model)
    except CalibrationError as exc:
        w, h = collector.image_size or (0, 0)
        out = Path(report_to) if report_to else devices_dir / serial / f"intrinsics-{w}x{h}.png"
        report.collection_report(spec, collector, exc.problem, out)
        say(f"report: {out}")
        raise CalibrationError(exc.problem, f"{exc.fix}; see {out}") from None
    problems = quality_problems(spec, solution, cal)
    result = CalibrationResult(
        kind="intrinsics",
        serial=serial,
        width=solution.width,
        height=solution.height,
        parameters={**solution.parameters(), "board": spec.describe()},
        errors=solution.errors(),
    )
    # Keep the detected corners: the data this result was computed from.
    views_file = (
        devices_dir
        / serial
        / "inputs"
        / f"intrinsics-{result.size}-{result.created.strftime('%Y%m%dT%H%M%SZ')}.json"
    )
    write_json_atomic(
        views_file,
        {
            "board": spec.describe(),
            "views": [
                {
                    "frame": v.frame_number,
                    "ids": v.ids.tolist(),
                    "corners_px": v.corners_px.tolist(),
                }
                for v in solution.views
            ],
        },
    )
    result.inputs = [*_source_inputs(inp), input_record(views_file, "detected corners")]
    summary = report.intrinsics_summary(solution, problems)
    if inp.synthetic:
        from edge.calibration.synthetic import TrueCamera

        cam = TrueCamera()
        summary += (
            f"\n  vs truth: fx {100 * (solution.fx - cam.fx) / cam.fx:+.3f} %  "
            f"fy {100 * (solution.fy - cam.fy) / cam.fy:+.3f} %  "
            f"cx {solution.cx - cam.cx:+.2f} px  cy {solution.cy - cam.cy:+.2f} px"
        )
    return Outcome(
        result,
        summary,
        lambda out: report.intrinsics_report(solution, problems, out),
        problems,
    )


# --------------------------------------------------------------------------- depth check


def depth_check(
    cfg: EdgeConfig,
    devices_dir: Path,
    board: str,
    inp: FrameInput,
    say: Say,
    synthetic_scale_error_pct: float = 0.0,
) -> Outcome:
    """The board's depth plane against its color pose.

    A failed check is a finding about the camera (``Outcome.finding``), not a
    bad calibration: the result is kept either way.
    """
    import cv2

    from edge.calibration import report
    from edge.calibration.boards import load_board
    from edge.calibration.depth_check import check_view, summarise
    from edge.calibration.intrinsics import opencv_dist
    from edge.calibration.results import find_calibration

    cal = cfg.calibration
    spec = load_board(board, cal.boards_dir)
    detector = cv2.aruco.CharucoDetector(spec.cv2_board())
    views = []
    extra: dict[str, Any] = {}
    if inp.synthetic:
        # Two distances, so scale and offset can be told apart.
        from edge.calibration.synthetic import TrueCamera, board_poses

        cam = TrueCamera()
        n = max(2, inp.frames)
        poses = board_poses(spec, cam, n // 2, inp.seed, 0.45) + board_poses(
            spec, cam, n - n // 2, inp.seed + 1, 0.7
        )
        extra = {"poses": poses, "depth_scale_error_pct": synthetic_scale_error_pct}
    note = ""
    with _open_frames(inp, cfg, spec, **extra) as source:
        serial = _serial(inp.serial, source)
        rng = np.random.default_rng(0)
        for i, frame in enumerate(source):
            w, h = frame.intrinsics.width, frame.intrinsics.height
            lookup = find_calibration(serial, w, h, "intrinsics", devices_dir, cal.max_age_days)
            if lookup.result is not None:
                k = np.asarray(lookup.result.parameters["camera_matrix"], float)
                d = np.asarray(lookup.result.parameters["dist_coeffs_opencv"], float)
            elif inp.synthetic:
                k, d = cam.matrix, np.asarray(cam.dist, float)  # the known true camera
            else:
                k, d = frame.intrinsics.matrix, opencv_dist(frame.intrinsics)
            if i == 0:
                note = (
                    lookup.message
                    if lookup.result
                    else "intrinsics: "
                    + (
                        "the synthetic camera's true ones"
                        if inp.synthetic
                        else f"factory (frame) ones; {lookup.warning}"
                    )
                )
                say(note)
            view = check_view(spec, frame, k, d, detector, rng)
            say(
                f"frame {frame.number:4d}: "
                + (
                    f"color {view.distance_color_m:.4f} m, depth {view.distance_depth_m:.4f} m"
                    if view
                    else "board not found"
                )
            )
            if view:
                views.append(view)
            if i + 1 >= inp.frames:
                break
    res = summarise(views, cal.max_depth_scale_error_pct, cal.max_depth_offset_mm)
    result = CalibrationResult(
        kind="depth-check",
        serial=serial,
        width=w,
        height=h,
        parameters=res.parameters(),
        errors=res.errors(),
        inputs=_source_inputs(inp),
        warnings=[note],
    )
    finding = None
    if res.needs_on_chip_calibration:
        finding = "CAMERA NEEDS ON-CHIP CALIBRATION: " + "; ".join(res.problems)
    return Outcome(
        result,
        report.depth_summary(res),
        lambda out: report.depth_report(res, out),
        [],
        finding,
    )


# --------------------------------------------------------------------------- pose files


def _read_input(path: str) -> dict[str, Any]:
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise CalibrationError(f"input file {path} does not exist", "check the path") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"input file {path} is not valid JSON: {exc}", "fix it") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"input file {path} must hold a JSON object", "see the docs")
    return data


def _field(data: dict[str, Any], key: str, path: str) -> Any:
    if key not in data:
        raise CalibrationError(
            f"input file {path} lacks {key!r}", "see docs/calibration.md for the format"
        )
    return data[key]


def _write_synthetic_input(devices_dir: Path, kind: str, seed: int, data: Any, say: Say) -> str:
    from edge.calibration.results import write_json_atomic

    path = devices_dir / SYNTHETIC_SERIAL / "inputs" / f"{kind}-seed{seed}.json"
    write_json_atomic(path, data)
    say(f"synthetic input written to {path}")
    return str(path)


def handeye(cfg: EdgeConfig, devices_dir: Path, inp: FileInput, say: Say) -> Outcome:
    """Camera-to-headset/marker transform from paired poses (AX = XB)."""
    from edge.calibration import report
    from edge.calibration.handeye import angle_deg, calibrate_hand_eye
    from edge.calibration.results import input_record

    truth = None
    path = inp.path
    if inp.synthetic:
        from edge.calibration.synthetic import handeye_pairs

        hands, targets, truth = handeye_pairs(12, seed=inp.seed)
        path = _write_synthetic_input(
            devices_dir,
            "handeye",
            inp.seed,
            {
                "serial": SYNTHETIC_SERIAL,
                "width": 640,
                "height": 480,
                "hand_to_base": [h.tolist() for h in hands],
                "target_to_camera": [t.tolist() for t in targets],
            },
            say,
        )
    assert path is not None  # the command line asks for --input or --synthetic
    data = _read_input(path)
    res = calibrate_hand_eye(
        _field(data, "hand_to_base", path),
        _field(data, "target_to_camera", path),
        cfg.calibration.min_handeye_rotation_deg,
    )
    problems = []
    if len(res.heldout_translation_mm) and res.heldout_translation_mm.max() > 5.0:
        problems.append(
            f"held-out poses are predicted {res.heldout_translation_mm.max():.1f} mm off (> 5 mm): "
            "check the time sync of the paired poses and capture more, varied poses"
        )
    serial = inp.serial or str(data.get("serial", ""))
    result = CalibrationResult(
        kind="handeye",
        serial=serial or _serial(inp.serial, None),
        width=data.get("width"),
        height=data.get("height"),
        parameters=res.parameters(),
        errors=res.errors(),
        inputs=[input_record(path)],
    )
    summary = report.handeye_summary(res, problems)
    if truth is not None:
        x = res.camera_to_hand
        summary += (
            f"\n  vs truth: {angle_deg(x[:3, :3].T @ truth[:3, :3]):.3f} deg, "
            f"{1000 * np.linalg.norm(x[:3, 3] - truth[:3, 3]):.2f} mm"
        )
    return Outcome(result, summary, lambda out: report.handeye_report(res, problems, out), problems)


def spaam(cfg: EdgeConfig, devices_dir: Path, inp: FileInput, say: Say) -> Outcome:
    """Optical see-through display projection per eye (SPAAM)."""
    from edge.calibration import report
    from edge.calibration.results import input_record
    from edge.calibration.spaam import calibrate_eye, eye_centre

    cal = cfg.calibration
    truths: dict[str, np.ndarray] = {}
    path = inp.path
    if inp.synthetic:
        from edge.calibration.synthetic import spaam_alignments

        eyes_data: dict[str, Any] = {}
        for i, (eye, offset) in enumerate((("left", -0.032), ("right", 0.032))):
            pts, px, p_true, (w, h) = spaam_alignments(16, inp.seed + i, eye_offset_m=offset)
            truths[eye] = p_true
            eyes_data[eye] = [
                {"point_m": a.tolist(), "screen_px": b.tolist()}
                for a, b in zip(pts, px, strict=True)
            ]
        path = _write_synthetic_input(
            devices_dir,
            "spaam",
            inp.seed,
            {
                "serial": "synthetic-hmd",
                "screen": {"width": w, "height": h},
                "eyes": eyes_data,
            },
            say,
        )
    assert path is not None  # the command line asks for --input or --synthetic
    data = _read_input(path)
    screen = _field(data, "screen", path)
    w, h = int(screen["width"]), int(screen["height"])
    eyes, pixels = [], []
    for eye, rows in dict(_field(data, "eyes", path)).items():
        try:
            pts = np.array([r["point_m"] for r in rows], float)
            px = np.array([r["screen_px"] for r in rows], float)
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(
                f"{path}: eye {eye!r} needs a list of {{point_m, screen_px}}", "fix the file"
            ) from None
        eyes.append(
            calibrate_eye(eye, pts, px, cal.spaam_min_alignments, cal.spaam_recommended_alignments)
        )
        pixels.append(px)
    if not eyes:
        raise CalibrationError(f"{path} holds no eyes", "add 'left' and/or 'right'")
    problems = [
        f"{e.eye} eye: RMS {e.rms_px:.1f} px (> 10 px): redo the alignments, holding still"
        for e in eyes
        if e.rms_px > 10.0
    ]
    serial = inp.serial or str(data.get("serial", ""))
    result = CalibrationResult(
        kind="spaam",
        serial=serial or _serial(inp.serial, None),
        width=w,
        height=h,
        parameters={e.eye: e.parameters() for e in eyes},
        errors={e.eye: e.errors() for e in eyes},
        inputs=[input_record(path)],
        warnings=[f"{e.eye}: {warn}" for e in eyes for warn in e.warnings],
    )
    summary = report.spaam_summary(eyes, problems)
    for e in eyes:
        if e.eye in truths:
            err = 1000 * np.linalg.norm(e.eye_centre_m - eye_centre(truths[e.eye]))
            summary += f"\n  {e.eye} vs truth: eye centre {err:.1f} mm off"
    return Outcome(
        result,
        summary,
        lambda out: report.spaam_report(eyes, [(w, h)] * len(eyes), pixels, problems, out),
        problems,
    )


def pivot(
    cfg: EdgeConfig, devices_dir: Path, inp: FileInput, say: Say, ransac: bool = False
) -> Outcome:
    """Pointer tip offset from poses pivoting about the tip; ``ransac`` drops slipped poses."""
    from edge.calibration import report
    from edge.calibration.pivot import calibrate_pivot
    from edge.calibration.results import input_record

    truth = None
    path = inp.path
    if inp.synthetic:
        from edge.calibration.synthetic import pivot_poses

        poses, tip, piv = pivot_poses(40, seed=inp.seed, outliers=4 if ransac else 0)
        truth = (tip, piv)
        path = _write_synthetic_input(
            devices_dir,
            "pivot",
            inp.seed,
            {
                "serial": "synthetic-pointer",
                "tool_to_tracker": [p.tolist() for p in poses],
            },
            say,
        )
    assert path is not None  # the command line asks for --input or --synthetic
    data = _read_input(path)
    poses_list = _field(data, "tool_to_tracker", path)
    res = calibrate_pivot(poses_list, cfg.calibration.min_pivot_rotation_deg, ransac=ransac)
    problems = []
    if res.rms_mm > 1.0:
        problems.append(
            f"RMS {res.rms_mm:.2f} mm exceeds 1 mm: keep the tip seated in the divot "
            "(or use --ransac to drop slips)"
        )
    serial = inp.serial or str(data.get("serial", ""))
    result = CalibrationResult(
        kind="pivot",
        serial=serial or _serial(inp.serial, None),
        width=None,
        height=None,
        parameters=res.parameters(),
        errors=res.errors(),
        inputs=[input_record(path)],
    )
    summary = report.pivot_summary(res, problems)
    if truth is not None:
        summary += (
            f"\n  vs truth: tip {1000 * np.linalg.norm(res.tip_tool_m - truth[0]):.2f} mm, "
            f"pivot {1000 * np.linalg.norm(res.pivot_tracker_m - truth[1]):.2f} mm"
        )
    pose_array = np.asarray(poses_list, float)
    return Outcome(
        result,
        summary,
        lambda out: report.pivot_report(res, pose_array, problems, out),
        problems,
    )
