"""``edge view``: the reference video see-through headset, or a benchmark of the transport."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
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
        "--predict",
        action="store_true",
        help="draw a current overlay where the patient is when drawn, extrapolated with the "
        "pose's velocity (clocks of edge and viewer in sync; docs/protocol.md)",
    )
    view.add_argument(
        "--keys", metavar="DIR", help="folder with this headset's .key_secret and edge.key"
    )
    view.add_argument("--key-name", default="headset", help="headset key name in --keys")
    view.add_argument("--bench", action="store_true", help="measure the transport (loopback)")
    view.add_argument("--bench-seconds", type=float, default=10.0, help="per benchmark phase")
    view.add_argument("--bench-json", metavar="FILE", help="also write the figures as JSON")
    view.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    if args.bench:
        from edge.transport.bench import run_all

        figures = run_all(seconds=args.bench_seconds)
        text = json.dumps(figures, indent=2)
        print(text)
        if args.bench_json:
            Path(args.bench_json).write_text(text + "\n", encoding="utf-8")
        return 0
    from edge.transport.viewer import view_stream

    summary = view_stream(
        args.connect,
        out=args.out,
        window=args.window,
        frames=args.frames,
        duration_s=args.duration,
        idle_end_s=args.idle_s,
        fps=args.fps,
        stale_after_ms=args.stale_ms,
        keys_dir=args.keys,
        key_name=args.key_name,
        predict=args.predict,
    )
    s = summary.stats
    print(
        f"view: {summary.where}; drawn {summary.viewer.drawn_frames} (predicted "
        f"{summary.viewer.predicted_frames}), stale "
        f"{summary.viewer.stale_frames}; received {s.received} ({s.per_topic}), superseded "
        f"{s.superseded}, dropped upstream {s.dropped_upstream}, rejected {s.rejected}",
        file=sys.stderr,
    )
    if summary.stopped_by is not None:
        print(f"view: stopped by {summary.stopped_by}", file=sys.stderr)
        return 130
    return 0
