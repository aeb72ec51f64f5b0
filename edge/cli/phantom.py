"""``edge phantom``: write a phantom recording (with ground truth) and/or its plan."""

from __future__ import annotations

import argparse
import sys
import time

from edge.cli.options import add_config, add_seed, config_from


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic RGB-D head recording with ground truth, and its plan",
        description="Render the synthetic head phantom (docs/phantom.md) into a recording "
        "(FILE.db3 plus the FILE.truth.jsonl ground-truth sidecar) and/or write its "
        "preoperative plan folder.",
    )
    p.add_argument("--scenario", default="nod-shake", help="static, nod-shake, approach, drape, "
                   "drape-half, drape-side, jaw, theatre, leave-return or photo-spoof "
                   "(default: nod-shake)")  # fmt: skip
    p.add_argument("--frames", type=int, default=300, help="number of frames (default 300)")
    p.add_argument("--out", metavar="FILE.db3", help="recording to write")
    p.add_argument("--plan-out", metavar="DIR", help="write the phantom's plan into this folder")
    add_seed(p)
    p.add_argument("--face-image", metavar="PHOTO", help="frontal face photograph to build from")
    p.add_argument("--motion", metavar="FILE", help="per-frame head poses (CSV or JSON)")
    p.add_argument("--no-noise", action="store_true", help="noise-free depth and colour")
    p.add_argument(
        "--raw-depth",
        action="store_true",
        help="record depth as a D435's depth imager sees it (its own intrinsics, 15 mm "
        "from color) with the depth-to-color extrinsics, like a camera's raw recording",
    )
    add_config(p)
    p.set_defaults(func=cmd_phantom)


def cmd_phantom(args: argparse.Namespace) -> int:
    from edge.config import with_overrides
    from edge.errors import SourceError
    from edge.frames import require_frames
    from edge.sources.phantom import PhantomSource
    from edge.sources.phantom.plan_out import write_plan
    from edge.sources.record import record_frames
    from edge.sources.recording import truth_path

    if not args.out and not args.plan_out:
        raise SourceError("nothing to write", "pass --out FILE.db3 and/or --plan-out DIR")
    config = config_from(args)
    phantom_cfg = config.phantom
    if args.no_noise:
        phantom_cfg = with_overrides(phantom_cfg, depth_noise=False, color_noise_sigma=0.0)
    if args.out:
        require_frames(args.frames)
    source = PhantomSource(
        scenario=args.scenario,
        frames=max(args.frames, 1),
        seed=args.seed,
        config=phantom_cfg,
        face_image=args.face_image,
        motion=args.motion,
        tracking=config.tracking,
        raw_depth=args.raw_depth,
        tools_dir=config.tools.dir,
    )
    if args.out:
        start = time.perf_counter()
        written = record_frames(source, args.out, source.frame_count).frames
        seconds = time.perf_counter() - start
        print(
            f"wrote {written} frames of '{source.scenario.name}' to {args.out} "
            f"and ground truth to {truth_path(args.out)} ({seconds:.1f} s)"
        )
    if args.plan_out:
        plan = write_plan(source.load_face(), args.plan_out)
        print(f"wrote the phantom's plan to {plan.parent}")
    sys.stdout.flush()
    return 0
