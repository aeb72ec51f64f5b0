"""``edge view`` (reference headset viewer, transport benchmark) and ``edge keys generate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    view = subparsers.add_parser(
        "view",
        help="reference video see-through headset: draw the streamed overlay",
        description="Subscribe to an edge stream and draw the overlay on its preview video "
        "(or a blank canvas of the display's size). Overlays older than --stale-ms are hidden "
        "behind a STALE warning. With --bench, measure the transport instead.",
    )
    view.add_argument("--connect", default="tcp://127.0.0.1:5555", help="edge PUB endpoint")
    out = view.add_mutually_exclusive_group()
    out.add_argument("--out", metavar="FILE.mp4", help="write the rendered view to an mp4 file")
    out.add_argument("--window", action="store_true", help="show a window (needs GUI OpenCV)")
    view.add_argument("--frames", type=int, default=None, help="stop after N rendered frames")
    view.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    view.add_argument(
        "--idle-s",
        type=float,
        default=5.0,
        help="without --frames or --duration: stop when the edge has sent nothing for S "
        "seconds (it stopped); default 5. Ctrl-C also stops and keeps the mp4",
    )
    view.add_argument("--fps", type=float, default=30.0, help="render rate (default 30)")
    view.add_argument("--stale-ms", type=float, default=100.0, help="hide older overlays")
    view.add_argument(
        "--keys", metavar="DIR", help="folder with this headset's .key_secret and edge.key"
    )
    view.add_argument("--key-name", default="headset", help="headset key name in --keys")
    view.add_argument("--bench", action="store_true", help="measure the transport (loopback)")
    view.add_argument("--bench-seconds", type=float, default=10.0, help="per benchmark phase")
    view.add_argument("--bench-json", metavar="FILE", help="also write the figures as JSON")
    view.set_defaults(func=_view)

    keys = subparsers.add_parser("keys", help="CurveZMQ keys for the edge and headsets")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser(
        "generate",
        help="make the edge's and headsets' key pairs and enrol the headsets",
        description="Writes DIR/edge.key(_secret), DIR/NAME.key(_secret) per headset, and "
        "DIR/enrolled/NAME.key (the public keys the edge accepts). Secret files are mode 0600.",
    )
    gen.add_argument("--out", required=True, metavar="DIR")
    gen.add_argument(
        "--headset", action="append", metavar="NAME", help="repeatable; default 'headset'"
    )
    gen.add_argument("--force", action="store_true", help="replace existing keys")
    gen.set_defaults(func=_keys_generate)


def _keys_generate(args: argparse.Namespace) -> int:
    from edge.transport.security import generate_keys

    written = generate_keys(args.out, tuple(args.headset or ["headset"]), overwrite=args.force)
    for p in written:
        print(p)
    print("give each headset its NAME.key_secret and edge.key; keep edge.key_secret on the edge")
    return 0


def _view(args: argparse.Namespace) -> int:
    from edge.errors import TransportError
    from edge.frames import require_frames
    from edge.transport.client import Subscriber
    from edge.transport.security import ClientSecurity

    if args.bench:
        from edge.transport.bench import run_all

        figures = run_all(seconds=args.bench_seconds)
        text = json.dumps(figures, indent=2)
        print(text)
        if args.bench_json:
            Path(args.bench_json).write_text(text + "\n", encoding="utf-8")
        return 0
    if args.frames is not None:
        require_frames(args.frames)
    if args.fps <= 0:
        raise TransportError(f"--fps must be positive, got {args.fps}", "pass --fps 30")
    if not args.out and not args.window:
        raise TransportError("nothing to show the view on", "pass --out FILE.mp4 or --window")
    if args.idle_s <= 0:
        raise TransportError(f"--idle-s must be positive, got {args.idle_s}", "pass --idle-s 5")
    security = (
        ClientSecurity.from_keys_dir(args.keys, args.key_name)
        if args.keys
        else ClientSecurity.plaintext()
    )
    if args.window:
        from edge.transport.viewer import check_window_support

        check_window_support()
    sub = Subscriber(args.connect, security)
    try:
        return _render(sub, args)
    finally:
        sub.close()


def _render(sub: Any, args: argparse.Namespace) -> int:
    from edge.service import GracefulStop
    from edge.transport.viewer import Mp4Sink, run_view

    # Open-ended (no --frames/--duration): the view ends when the edge goes quiet.
    idle_end_s = args.idle_s if args.frames is None and args.duration is None else None
    stop = GracefulStop()
    if args.out:
        sink = Mp4Sink(args.out, args.fps)
        try:
            with stop:  # Ctrl-C or SIGTERM: finish the mp4, then exit 130
                viewer = run_view(
                    sub,
                    frames=args.frames,
                    fps=args.fps,
                    stale_after_ms=args.stale_ms,
                    sink=sink.write,
                    duration_s=args.duration,
                    idle_end_s=idle_end_s,
                    should_stop=lambda: stop.requested,
                )
        finally:
            sink.close()
        where = f"{sink.path} ({sink.frames} frames)"
    else:
        import cv2

        def show(image: Any) -> None:
            cv2.imshow("edge view", image)
            if cv2.waitKey(1) in (27, ord("q")):
                raise KeyboardInterrupt

        viewer = run_view(
            sub,
            frames=args.frames,
            fps=args.fps,
            stale_after_ms=args.stale_ms,
            sink=show,
            duration_s=args.duration,
        )
        where = "window"
    s = sub.stats
    print(
        f"view: {where}; drawn {viewer.drawn_frames}, stale {viewer.stale_frames}; received "
        f"{s.received} ({s.per_topic}), superseded {s.superseded}, dropped upstream "
        f"{s.dropped_upstream}, rejected {s.rejected}",
        file=sys.stderr,
    )
    if stop.requested:
        print(f"view: stopped by {stop.signal_name}", file=sys.stderr)
        return 130
    return 0
