"""``edge calibrate ...``: board, intrinsics, depth-check, handeye, spaam, pivot, find.

The procedures themselves are in :mod:`edge.calibration.procedures`; this
module turns options into their inputs and prints what they say.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli.options import add_config, add_seed, config_from

if TYPE_CHECKING:
    from edge.calibration.procedures import FileInput, FrameInput, Outcome
    from edge.config import EdgeConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    cal = subparsers.add_parser(
        "calibrate", help="calibrate cameras, headsets and pointers (boards, intrinsics, ...)"
    )
    sub = cal.add_subparsers(dest="calibrate_command", metavar="PROCEDURE", required=True)

    p = sub.add_parser("board", help="render a printable ChArUco board at true scale")
    p.add_argument("name", help="board name (built in, or in calibration.boards_dir) or a .toml")
    p.add_argument("--out", required=True, help="output .png (with DPI) or .pdf")
    p.add_argument("--dpi", type=int, default=300)
    _common(p)
    p.set_defaults(func=_board)

    p = sub.add_parser("intrinsics", help="camera intrinsics from ChArUco views")
    _source_args(p, frames=40, images=True)
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
        add_seed(p)
        if name == "pivot":
            p.add_argument(
                "--ransac", action="store_true", help="reject poses where the tip slipped"
            )
            g.add_argument(
                "--source",
                help="a camera (realsense[:SERIAL]), recording (FILE.db3) or phantom:SCENARIO "
                "watching the tool pivot; needs --tool, writes the tip into its file",
            )
            p.add_argument("--tool", help="with --source: the tool (in tools.dir, or a .toml)")
            p.add_argument(
                "--frames", type=int, default=300, help="with --source: frames to read (300)"
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
    add_config(p)
    p.add_argument("--devices-dir", help="results folder (default: calibration.devices_dir)")
    p.add_argument("--report", help="PNG report path (default: next to the result)")


def _source_args(p: argparse.ArgumentParser, frames: int, images: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    # Not the shared --source: only a camera or a recording of the board makes sense here.
    g.add_argument("--source", help="realsense[:SERIAL] or FILE.db3")
    g.add_argument("--synthetic", action="store_true", help="rendered boards with known answers")
    if images:
        g.add_argument("--images", metavar="DIR", help="a folder of board photos (PNG, JPEG)")
        p.add_argument("--width", type=int, help="with --images: the camera's image width")
        p.add_argument("--height", type=int, help="with --images: the camera's image height")
    p.add_argument(
        "--board", required=True, help="board name (built in, or in calibration.boards_dir)"
    )
    p.add_argument(
        "--frames", type=int, default=frames, help="frames to read (synthetic: views; images: all)"
    )
    p.add_argument(
        "--serial",
        help="device serial (default: the camera's or recording's, 'synthetic', or for "
        "--images 'unknown')",
    )
    add_seed(p)
    _common(p)


def _devices_dir(args: argparse.Namespace, cfg: EdgeConfig) -> Path:
    return Path(args.devices_dir or cfg.calibration.devices_dir)


def _frame_input(args: argparse.Namespace) -> FrameInput:
    from edge.calibration.procedures import FrameInput

    return FrameInput(
        args.source,
        args.synthetic,
        args.frames,
        args.seed,
        args.serial,
        images=getattr(args, "images", None),
        width=getattr(args, "width", None),
        height=getattr(args, "height", None),
    )


def _file_input(args: argparse.Namespace) -> FileInput:
    from edge.calibration.procedures import FileInput

    return FileInput(args.input, args.synthetic, args.seed, args.serial)


def _finish(args: argparse.Namespace, devices_dir: Path, outcome: Outcome) -> int:
    """Report, then keep the result; exit 1 when the device itself needs attention."""
    from edge.calibration.procedures import finish

    finish(outcome, devices_dir, args.report, say=print)
    if outcome.finding is not None:
        print(outcome.finding)
        return 1
    return 0


def _board(args: argparse.Namespace) -> int:
    from edge.calibration.boards import load_board, render_board_file

    cfg = config_from(args)
    spec = load_board(args.name, cfg.calibration.boards_dir)
    out = render_board_file(spec, args.out, dpi=args.dpi)
    print(f"{spec.describe()}; board {spec.width_mm:g} x {spec.height_mm:g} mm")
    print(f"wrote {out}: print at 100 % and check the 100 mm bar and a square with a ruler")
    return 0


def _intrinsics(args: argparse.Namespace) -> int:
    from edge.calibration.procedures import intrinsics

    cfg = config_from(args)
    devices = _devices_dir(args, cfg)
    outcome = intrinsics(
        cfg, devices, args.board, _frame_input(args), say=print, report_to=args.report
    )
    return _finish(args, devices, outcome)


def _depth_check(args: argparse.Namespace) -> int:
    from edge.calibration.procedures import depth_check

    cfg = config_from(args)
    devices = _devices_dir(args, cfg)
    outcome = depth_check(
        cfg,
        devices,
        args.board,
        _frame_input(args),
        say=print,
        synthetic_scale_error_pct=args.synthetic_scale_error_pct,
    )
    return _finish(args, devices, outcome)


def _handeye(args: argparse.Namespace) -> int:
    from edge.calibration.procedures import handeye

    cfg = config_from(args)
    devices = _devices_dir(args, cfg)
    return _finish(args, devices, handeye(cfg, devices, _file_input(args), say=print))


def _spaam(args: argparse.Namespace) -> int:
    from edge.calibration.procedures import spaam

    cfg = config_from(args)
    devices = _devices_dir(args, cfg)
    return _finish(args, devices, spaam(cfg, devices, _file_input(args), say=print))


def _pivot(args: argparse.Namespace) -> int:
    from edge.calibration.procedures import pivot

    cfg = config_from(args)
    devices = _devices_dir(args, cfg)
    if args.source:
        return _pivot_from_source(args, cfg, devices)
    outcome = pivot(cfg, devices, _file_input(args), say=print, ransac=args.ransac)
    return _finish(args, devices, outcome)


def _pivot_from_source(args: argparse.Namespace, cfg: EdgeConfig, devices: Path) -> int:
    from edge.calibration.procedures import finish
    from edge.errors import CalibrationError
    from edge.frames import require_frames
    from edge.tools.pivot import pivot_from_source, write_calibrated_tip

    if not args.tool:
        raise CalibrationError("--source needs the tool that pivots", "pass --tool NAME")
    frames = require_frames(args.frames)
    outcome, _ = pivot_from_source(
        cfg, args.tool, args.source, frames, say=print, ransac=args.ransac, serial=args.serial
    )
    saved = finish(outcome, devices, args.report, say=print)
    write_calibrated_tip(cfg, args.tool, outcome, saved, say=print)
    return 0


def _find(args: argparse.Namespace) -> int:
    from edge.calibration.results import find_calibration

    cfg = config_from(args)
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
