"""``edge calibrate ...``: board, intrinsics, depth-check, handeye, spaam, pivot, find.

Each procedure reads its data (a frame source, or a JSON file of poses or
alignments; ``--synthetic`` generates known-answer data instead), solves,
prints a one-screen summary, writes a PNG report, and, when the result meets
its quality bar, a result file under ``calibration/devices/<serial>/``. A
refused calibration still writes its report (to see why) but no result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import CalibrationError

SYNTHETIC_SERIAL = "synthetic"


def register(subparsers: argparse._SubParsersAction) -> None:
    cal = subparsers.add_parser(
        "calibrate", help="calibrate cameras, headsets and pointers (boards, intrinsics, ...)"
    )
    sub = cal.add_subparsers(dest="calibrate_command", metavar="PROCEDURE", required=True)

    p = sub.add_parser("board", help="render a printable ChArUco board at true scale")
    p.add_argument("name", help="board name in calibration/boards (or a .toml path)")
    p.add_argument("--out", required=True, help="output .png (with DPI) or .pdf")
    p.add_argument("--dpi", type=int, default=300)
    _common(p)
    p.set_defaults(func=_board)

    p = sub.add_parser("intrinsics", help="camera intrinsics from ChArUco views")
    _source_args(p, frames=40)
    p.set_defaults(func=_intrinsics)

    p = sub.add_parser("depth-check", help="compare the board's depth plane with its color pose")
    _source_args(p, frames=6)
    p.add_argument(
        "--synthetic-scale-error-pct",
        type=float,
        default=0.0,
        help="with --synthetic: depth scale error to simulate",
    )
    p.set_defaults(func=_depth_check)

    for name, helptext, func in (
        ("handeye", "camera-to-headset/marker transform from paired poses (AX = XB)", _handeye),
        ("spaam", "optical see-through display projection per eye (SPAAM)", _spaam),
        ("pivot", "pointer tip offset from poses pivoting about the tip", _pivot),
    ):
        p = sub.add_parser(name, help=helptext)
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--input", help="JSON file of poses/alignments (see docs/calibration.md)")
        g.add_argument("--synthetic", action="store_true", help="generate known-answer data")
        p.add_argument("--serial", help="device serial (default: from the input file)")
        p.add_argument("--seed", type=int, default=0, help="seed for --synthetic")
        if name == "pivot":
            p.add_argument(
                "--ransac", action="store_true", help="reject poses where the tip slipped"
            )
        _common(p)
        p.set_defaults(func=func)

    p = sub.add_parser("find", help="which calibration the edge process would use, and why")
    p.add_argument("--serial", required=True)
    p.add_argument("--kind", required=True, help="intrinsics, depth-check, handeye, spaam, pivot")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    _common(p)
    p.set_defaults(func=_find)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="configuration file (default: search path)")
    p.add_argument("--devices-dir", help="results folder (default: calibration.devices_dir)")
    p.add_argument("--report", help="PNG report path (default: next to the result)")


def _source_args(p: argparse.ArgumentParser, frames: int) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--source", help="realsense[:SERIAL] or FILE.db3")
    g.add_argument("--synthetic", action="store_true", help="rendered boards with known answers")
    p.add_argument("--board", required=True, help="board name in calibration/boards")
    p.add_argument("--frames", type=int, default=frames, help="frames to read (synthetic: views)")
    p.add_argument("--serial", help="device serial (default: the camera's, or 'synthetic')")
    p.add_argument("--seed", type=int, default=0, help="seed for --synthetic")
    _common(p)


# --------------------------------------------------------------------------- helpers


def _config(args: argparse.Namespace) -> Any:
    from edge.config import load_config

    cfg, _ = load_config(args.config)
    return cfg


def _devices_dir(args: argparse.Namespace, cfg: Any) -> Path:
    return Path(args.devices_dir or cfg.calibration.devices_dir)


def _finish(
    args: argparse.Namespace,
    cfg: Any,
    result: Any,
    summary: str,
    draw: Any,
    problems: list[str],
) -> int:
    """Print the summary, write the report, and the result when there are no problems."""
    from edge.calibration.results import result_path, save_result

    devices = _devices_dir(args, cfg)
    target = result_path(devices, result)
    report = Path(args.report) if args.report else target.with_suffix(".png")
    draw(report)
    print(summary)
    print(f"report: {report}")
    if problems:
        raise CalibrationError(
            f"{result.kind} calibration refused ({len(problems)} problem(s)): {problems[0]}",
            f"see {report}",
        )
    print(f"result: {save_result(result, devices)}")
    return 0


def _open_frames(args: argparse.Namespace, cfg: Any, spec: Any, **synthetic: Any) -> Any:
    if args.synthetic:
        from edge.calibration.synthetic import SyntheticBoardSource

        return SyntheticBoardSource(spec, frames=args.frames, seed=args.seed, **synthetic)
    from edge.sources import open_source, parse_source_spec

    return open_source(parse_source_spec(args.source), cfg, frames=args.frames)


def _serial(args: argparse.Namespace, source: Any) -> str:
    from edge.calibration.results import check_serial

    serial = args.serial or getattr(source, "serial", None)
    if not serial:
        raise CalibrationError(
            "the device serial is unknown for this source",
            "pass --serial (printed on the camera, or `edge info`)",
        )
    return check_serial(str(serial))


def _source_inputs(args: argparse.Namespace) -> list[dict[str, str]]:
    from edge.calibration.results import input_record

    if args.synthetic:
        return [{"path": f"synthetic:seed={args.seed}", "role": "source", "sha256": ""}]
    if Path(args.source).is_file():
        return [input_record(args.source, "recording")]
    return [{"path": args.source, "role": "live camera", "sha256": ""}]


# --------------------------------------------------------------------------- board


def _board(args: argparse.Namespace) -> int:
    from edge.calibration.boards import load_board, render_board_file

    cfg = _config(args)
    spec = load_board(args.name, cfg.calibration.boards_dir)
    out = render_board_file(spec, args.out, dpi=args.dpi)
    print(f"{spec.describe()}; board {spec.width_mm:g} x {spec.height_mm:g} mm")
    print(f"wrote {out}: print at 100 % and check the 100 mm bar and a square with a ruler")
    return 0


# --------------------------------------------------------------------------- intrinsics


def _intrinsics(args: argparse.Namespace) -> int:
    from edge.calibration import report
    from edge.calibration.boards import load_board
    from edge.calibration.intrinsics import ViewCollector, calibrate_views, quality_problems
    from edge.calibration.results import CalibrationResult, input_record, write_json_atomic

    cfg = _config(args)
    cal = cfg.calibration
    spec = load_board(args.board, cal.boards_dir)
    collector = ViewCollector(spec, cal)
    with _open_frames(args, cfg, spec) as source:
        serial = _serial(args, source)
        for i, frame in enumerate(source):
            decision = collector.add(frame)
            print(f"frame {frame.number:4d}: {decision.verdict.value:28s} | {collector.progress()}")
            if i + 1 >= args.frames:
                break
    solution = calibrate_views(spec, collector, cal.distortion_model)
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
        _devices_dir(args, cfg)
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
    result.inputs = [*_source_inputs(args), input_record(views_file, "detected corners")]
    return _finish(
        args,
        cfg,
        result,
        report.intrinsics_summary(solution, problems),
        lambda out: report.intrinsics_report(solution, problems, out),
        problems,
    )


# --------------------------------------------------------------------------- depth check


def _depth_check(args: argparse.Namespace) -> int:
    import cv2

    from edge.calibration import report
    from edge.calibration.boards import load_board
    from edge.calibration.depth_check import check_view, summarise
    from edge.calibration.intrinsics import opencv_dist
    from edge.calibration.results import CalibrationResult, find_calibration

    cfg = _config(args)
    cal = cfg.calibration
    spec = load_board(args.board, cal.boards_dir)
    detector = cv2.aruco.CharucoDetector(spec.cv2_board())
    views = []
    extra: dict[str, Any] = {}
    if args.synthetic:
        # Two distances, so scale and offset can be told apart.
        from edge.calibration.synthetic import TrueCamera, board_poses

        cam = TrueCamera()
        n = max(2, args.frames)
        poses = board_poses(spec, cam, n // 2, args.seed, 0.45) + board_poses(
            spec, cam, n - n // 2, args.seed + 1, 0.7
        )
        extra = {"poses": poses, "depth_scale_error_pct": args.synthetic_scale_error_pct}
    note = ""
    with _open_frames(args, cfg, spec, **extra) as source:
        serial = _serial(args, source)
        rng = np.random.default_rng(0)
        for i, frame in enumerate(source):
            w, h = frame.intrinsics.width, frame.intrinsics.height
            lookup = find_calibration(
                serial, w, h, "intrinsics", _devices_dir(args, cfg), cal.max_age_days
            )
            if lookup.result is not None:
                k = np.asarray(lookup.result.parameters["camera_matrix"], float)
                d = np.asarray(lookup.result.parameters["dist_coeffs_opencv"], float)
            elif args.synthetic:
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
                        if args.synthetic
                        else f"factory (frame) ones; {lookup.warning}"
                    )
                )
                print(note)
            view = check_view(spec, frame, k, d, detector, rng)
            print(
                f"frame {frame.number:4d}: "
                + (
                    f"color {view.distance_color_m:.4f} m, depth {view.distance_depth_m:.4f} m"
                    if view
                    else "board not found"
                )
            )
            if view:
                views.append(view)
            if i + 1 >= args.frames:
                break
    res = summarise(views, cal.max_depth_scale_error_pct, cal.max_depth_offset_mm)
    result = CalibrationResult(
        kind="depth-check",
        serial=serial,
        width=w,
        height=h,
        parameters=res.parameters(),
        errors=res.errors(),
        inputs=_source_inputs(args),
        warnings=[note],
    )
    # A failed check is a finding about the camera, not a bad calibration: keep the record.
    code = _finish(
        args,
        cfg,
        result,
        report.depth_summary(res),
        lambda out: report.depth_report(res, out),
        [],
    )
    if res.needs_on_chip_calibration:
        print("CAMERA NEEDS ON-CHIP CALIBRATION: " + "; ".join(res.problems))
        return 1
    return code


# --------------------------------------------------------------------------- pose files


def _read_input(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"input file {path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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


def _write_synthetic_input(args: argparse.Namespace, cfg: Any, kind: str, data: Any) -> str:
    from edge.calibration.results import write_json_atomic

    path = _devices_dir(args, cfg) / SYNTHETIC_SERIAL / "inputs" / f"{kind}-seed{args.seed}.json"
    write_json_atomic(path, data)
    print(f"synthetic input written to {path}")
    return str(path)


def _handeye(args: argparse.Namespace) -> int:
    from edge.calibration import report
    from edge.calibration.handeye import angle_deg, calibrate_hand_eye
    from edge.calibration.results import CalibrationResult, input_record

    cfg = _config(args)
    truth = None
    if args.synthetic:
        from edge.calibration.synthetic import handeye_pairs

        hands, targets, truth = handeye_pairs(12, seed=args.seed)
        args.input = _write_synthetic_input(
            args,
            cfg,
            "handeye",
            {
                "serial": SYNTHETIC_SERIAL,
                "width": 640,
                "height": 480,
                "hand_to_base": [h.tolist() for h in hands],
                "target_to_camera": [t.tolist() for t in targets],
            },
        )
    data = _read_input(args.input)
    res = calibrate_hand_eye(
        _field(data, "hand_to_base", args.input),
        _field(data, "target_to_camera", args.input),
        cfg.calibration.min_handeye_rotation_deg,
    )
    problems = []
    if len(res.heldout_translation_mm) and res.heldout_translation_mm.max() > 5.0:
        problems.append(
            f"held-out poses are predicted {res.heldout_translation_mm.max():.1f} mm off (> 5 mm): "
            "check the time sync of the paired poses and capture more, varied poses"
        )
    serial = args.serial or str(data.get("serial", ""))
    result = CalibrationResult(
        kind="handeye",
        serial=serial or _serial(args, None),
        width=data.get("width"),
        height=data.get("height"),
        parameters=res.parameters(),
        errors=res.errors(),
        inputs=[input_record(args.input)],
    )
    summary = report.handeye_summary(res, problems)
    if truth is not None:
        x = res.camera_to_hand
        summary += (
            f"\n  vs truth: {angle_deg(x[:3, :3].T @ truth[:3, :3]):.3f} deg, "
            f"{1000 * np.linalg.norm(x[:3, 3] - truth[:3, 3]):.2f} mm"
        )
    return _finish(
        args, cfg, result, summary, lambda out: report.handeye_report(res, problems, out), problems
    )


def _spaam(args: argparse.Namespace) -> int:
    from edge.calibration import report
    from edge.calibration.results import CalibrationResult, input_record
    from edge.calibration.spaam import calibrate_eye, eye_centre

    cfg = _config(args)
    cal = cfg.calibration
    truths: dict[str, np.ndarray] = {}
    if args.synthetic:
        from edge.calibration.synthetic import spaam_alignments

        eyes_data: dict[str, Any] = {}
        for i, (eye, offset) in enumerate((("left", -0.032), ("right", 0.032))):
            pts, px, p_true, (w, h) = spaam_alignments(16, args.seed + i, eye_offset_m=offset)
            truths[eye] = p_true
            eyes_data[eye] = [
                {"point_m": a.tolist(), "screen_px": b.tolist()}
                for a, b in zip(pts, px, strict=True)
            ]
        args.input = _write_synthetic_input(
            args,
            cfg,
            "spaam",
            {
                "serial": "synthetic-hmd",
                "screen": {"width": w, "height": h},
                "eyes": eyes_data,
            },
        )
    data = _read_input(args.input)
    screen = _field(data, "screen", args.input)
    w, h = int(screen["width"]), int(screen["height"])
    eyes, pixels = [], []
    for eye, rows in dict(_field(data, "eyes", args.input)).items():
        try:
            pts = np.array([r["point_m"] for r in rows], float)
            px = np.array([r["screen_px"] for r in rows], float)
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(
                f"{args.input}: eye {eye!r} needs a list of {{point_m, screen_px}}", "fix the file"
            ) from None
        eyes.append(
            calibrate_eye(eye, pts, px, cal.spaam_min_alignments, cal.spaam_recommended_alignments)
        )
        pixels.append(px)
    if not eyes:
        raise CalibrationError(f"{args.input} holds no eyes", "add 'left' and/or 'right'")
    problems = [
        f"{e.eye} eye: RMS {e.rms_px:.1f} px (> 10 px): redo the alignments, holding still"
        for e in eyes
        if e.rms_px > 10.0
    ]
    serial = args.serial or str(data.get("serial", ""))
    result = CalibrationResult(
        kind="spaam",
        serial=serial or _serial(args, None),
        width=w,
        height=h,
        parameters={e.eye: e.parameters() for e in eyes},
        errors={e.eye: e.errors() for e in eyes},
        inputs=[input_record(args.input)],
        warnings=[f"{e.eye}: {warn}" for e in eyes for warn in e.warnings],
    )
    summary = report.spaam_summary(eyes, problems)
    for e in eyes:
        if e.eye in truths:
            err = 1000 * np.linalg.norm(e.eye_centre_m - eye_centre(truths[e.eye]))
            summary += f"\n  {e.eye} vs truth: eye centre {err:.1f} mm off"
    return _finish(
        args,
        cfg,
        result,
        summary,
        lambda out: report.spaam_report(eyes, [(w, h)] * len(eyes), pixels, problems, out),
        problems,
    )


def _pivot(args: argparse.Namespace) -> int:
    from edge.calibration import report
    from edge.calibration.pivot import calibrate_pivot
    from edge.calibration.results import CalibrationResult, input_record

    cfg = _config(args)
    truth = None
    if args.synthetic:
        from edge.calibration.synthetic import pivot_poses

        poses, tip, piv = pivot_poses(40, seed=args.seed, outliers=4 if args.ransac else 0)
        truth = (tip, piv)
        args.input = _write_synthetic_input(
            args,
            cfg,
            "pivot",
            {
                "serial": "synthetic-pointer",
                "tool_to_tracker": [p.tolist() for p in poses],
            },
        )
    data = _read_input(args.input)
    poses_list = _field(data, "tool_to_tracker", args.input)
    res = calibrate_pivot(poses_list, cfg.calibration.min_pivot_rotation_deg, ransac=args.ransac)
    problems = []
    if res.rms_mm > 1.0:
        problems.append(
            f"RMS {res.rms_mm:.2f} mm exceeds 1 mm: keep the tip seated in the divot "
            "(or use --ransac to drop slips)"
        )
    serial = args.serial or str(data.get("serial", ""))
    result = CalibrationResult(
        kind="pivot",
        serial=serial or _serial(args, None),
        width=None,
        height=None,
        parameters=res.parameters(),
        errors=res.errors(),
        inputs=[input_record(args.input)],
    )
    summary = report.pivot_summary(res, problems)
    if truth is not None:
        summary += (
            f"\n  vs truth: tip {1000 * np.linalg.norm(res.tip_tool_m - truth[0]):.2f} mm, "
            f"pivot {1000 * np.linalg.norm(res.pivot_tracker_m - truth[1]):.2f} mm"
        )
    pose_array = np.asarray(poses_list, float)
    return _finish(
        args,
        cfg,
        result,
        summary,
        lambda out: report.pivot_report(res, pose_array, problems, out),
        problems,
    )


def _find(args: argparse.Namespace) -> int:
    from edge.calibration.results import find_calibration

    cfg = _config(args)
    lookup = find_calibration(
        args.serial,
        args.width,
        args.height,
        args.kind,
        _devices_dir(args, cfg),
        cfg.calibration.max_age_days,
    )
    print(lookup.message)
    return 0 if lookup.warning is None else 1
