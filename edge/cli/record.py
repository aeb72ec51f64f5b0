"""``edge record`` and ``edge info``: write and inspect recorded sessions."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType

from edge.cli.options import add_config, add_json, add_quiet, add_seed, add_source, config_from

EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    rec = subparsers.add_parser(
        "record",
        help="record frames from a source to a .db3 file librealsense can play",
        description="Record N frames from SOURCE to FILE.db3 (plus FILE.truth.jsonl when the "
        "source knows ground truth), every file mode 0600. Ctrl-C or SIGTERM stops early and "
        f"keeps a valid file (exit {EXIT_INTERRUPTED}). With --seal-to the files are sealed to "
        "the hospital's key (FILE.db3.sealed) and the plaintext deleted.",
    )
    add_source(rec, required=True)
    rec.add_argument("--frames", type=int, required=True, help="number of frames to record")
    rec.add_argument("--out", required=True, help="output file, must end in .db3")
    add_seed(rec)
    add_config(rec)
    add_quiet(rec)
    rec.add_argument(
        "--uncompressed",
        action="store_true",
        help="no LZ4 frame compression: ~1.7x larger files that replay ~3x faster",
    )
    rec.add_argument(
        "--seal-to",
        metavar="PUBKEY",
        help="the hospital's .pub file (`edge recordings keygen`): seal the recording and its "
        "ground truth to it and delete the plaintext; open with `edge recordings open`",
    )
    rec.set_defaults(func=cmd_record)

    info = subparsers.add_parser(
        "info",
        help="describe a recording: streams, size, fps, frames, duration",
        description="Print the streams, resolution, fps, frame count and duration of a recording.",
    )
    info.add_argument("file", help="recording (.db3 or .bag)")
    add_json(info, "the description")
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


def cmd_record(args: argparse.Namespace) -> int:
    from edge.frames import require_frames
    from edge.sources import parse_source_spec
    from edge.sources.record import record
    from edge.sources.recording import check_writable

    total = require_frames(args.frames)
    out = check_writable(args.out)
    config = config_from(args)
    seal_to = None
    if args.seal_to:
        from edge.keys import load_recording_public_key

        seal_to = load_recording_public_key(args.seal_to)  # a bad key: refused before recording

    def progress(done: int, total: int) -> None:
        step = max(1, total // 10)
        if not args.quiet and (done == total or done % step == 0):
            print(f"record: {done}/{total} frames", file=sys.stderr, flush=True)

    source_config = parse_source_spec(args.source)
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    start = time.perf_counter()
    try:
        outcome = record(
            source_config,
            config,
            out,
            total,
            seed=args.seed,
            compress=not args.uncompressed,
            progress=progress,
            should_stop=lambda: stop.requested,
            seal_to=seal_to,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    elapsed = time.perf_counter() - start
    extra = " and ground truth" if outcome.truth else ""
    state = "interrupted, " if stop.requested else ""
    where = outcome.path or out
    sealed = f", sealed to {args.seal_to}, plaintext deleted" if seal_to is not None else ""
    print(f"recorded {outcome.frames} frames{extra} to {where} ({state}{elapsed:.1f} s{sealed})")
    return EXIT_INTERRUPTED if stop.requested else 0


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
