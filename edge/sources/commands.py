"""``edge record`` and ``edge info``: write and inspect recorded sessions."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130


def register(subparsers: Any) -> None:
    rec = subparsers.add_parser(
        "record",
        help="record frames from a source to a .db3 file librealsense can play",
        description="Record N frames from SOURCE to FILE.db3 (plus FILE.truth.jsonl when the "
        "source knows ground truth). Ctrl-C or SIGTERM stops early and keeps a valid file "
        f"(exit {EXIT_INTERRUPTED}).",
    )
    rec.add_argument(
        "--source",
        required=True,
        help="realsense[:SERIAL], FILE.db3, FILE.bag, synthetic, phantom[:SCENARIO]",
    )
    rec.add_argument("--frames", type=int, required=True, help="number of frames to record")
    rec.add_argument("--out", required=True, help="output file, must end in .db3")
    rec.add_argument("--seed", type=int, default=0, help="seed of synthetic/phantom sources")
    rec.add_argument("--config", help="configuration file (default: search path)")
    rec.add_argument("--quiet", action="store_true", help="no progress output")
    rec.add_argument(
        "--uncompressed",
        action="store_true",
        help="no LZ4 frame compression: ~1.7x larger files that replay ~3x faster",
    )
    rec.set_defaults(func=cmd_record)

    info = subparsers.add_parser(
        "info",
        help="describe a recording: streams, size, fps, frames, duration",
        description="Print the streams, resolution, fps, frame count and duration of a recording.",
    )
    info.add_argument("file", help="recording (.db3 or .bag)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=cmd_info)


class _StopFlag:
    """Set by SIGINT/SIGTERM; the recording loops check it between frames.

    A flag, not an exception, so that a frame is never half written (its
    image in the file but not its ground truth line).
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def _progress(done: int, total: int, quiet: bool) -> None:
    if quiet:
        return
    step = max(1, total // 10)
    if done == total or done % step == 0:
        print(f"record: {done}/{total} frames", file=sys.stderr, flush=True)


def cmd_record(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.frames import require_frames
    from edge.sources import open_source, parse_source_spec
    from edge.sources.recording import check_writable

    total = require_frames(args.frames)
    out = check_writable(args.out)
    config, _ = load_config(args.config)
    source_config = parse_source_spec(args.source)
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    start = time.perf_counter()
    try:
        if source_config.kind == "realsense":
            written = _record_live(args, config, out, total, stop, source_config.serial)
            truth = False
        else:
            source = open_source(source_config, config, frames=total, seed=args.seed)
            written, truth = _record_frames(
                source, out, total, args.quiet, stop, compress=not args.uncompressed
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    interrupted = stop.requested
    elapsed = time.perf_counter() - start
    extra = " and ground truth" if truth else ""
    state = "interrupted, " if interrupted else ""
    print(f"recorded {written} frames{extra} to {out} ({state}{elapsed:.1f} s)")
    return EXIT_INTERRUPTED if interrupted else 0


def _record_frames(
    source: Any, out: Path, total: int, quiet: bool, stop: _StopFlag, compress: bool = True
) -> tuple[int, bool]:
    """Copy up to ``total`` frames from ``source`` through the software-device recorder."""
    from edge.errors import SourceError
    from edge.sources.recording import Recorder

    truth = False
    recorder = Recorder(out, fps=source.nominal_fps, compress=compress)
    # The recorder's context finishes the file on success and deletes it on any error.
    try:
        with recorder, source:
            for frame in source:
                recorder.write(frame)
                truth = truth or frame.truth is not None
                _progress(recorder.frames_written, total, quiet)
                if recorder.frames_written >= total or stop.requested:
                    break
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise SourceError(
            f"disk full while recording {out} after {recorder.frames_written} frames: "
            "recording stopped and its partial file removed",
            "free space on that disk or record to another one (--out)",
        ) from None
    return recorder.frames_written, truth


def _record_live(
    args: argparse.Namespace, config: Any, out: Path, total: int, stop: _StopFlag, serial: str
) -> int:
    """Record the live camera's raw streams with librealsense's own recorder.

    ``serial`` picks the camera; empty: the configured one.
    """
    from edge.sources.realsense import RealSenseSource
    from edge.sources.recording import temp_path_for

    tmp = temp_path_for(out)
    source = RealSenseSource(config.realsense, serial=serial or None, record_to=tmp)
    written = 0
    try:
        with source:
            for _frame in source:
                written += 1
                _progress(written, total, args.quiet)
                if written >= total or stop.requested:
                    break
        if written == 0:
            raise _no_frames()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _no_frames() -> Exception:
    from edge.errors import SourceError

    return SourceError("no frames were recorded", "check the camera")


def cmd_info(args: argparse.Namespace) -> int:
    from edge.sources.recording import probe_recording, truth_path

    info = probe_recording(args.file)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(f"{info.path}")
    print(f"  frames:      {info.frames}")
    print(f"  duration:    {info.duration_s:.3f} s")
    print(f"  resolution:  {info.width}x{info.height} at {info.fps:g} fps")
    print(f"  depth scale: {info.depth_scale_m:.6g} m per unit")
    side = truth_path(info.path).name
    print(f"  truth:       {'yes, ' + side if info.has_truth else 'no'}")
    for s in info.streams:
        print(
            f"  stream {s['stream']:<6} {s['format']:<5} {s['width']}x{s['height']} {s['fps']} fps"
        )
    return 0
