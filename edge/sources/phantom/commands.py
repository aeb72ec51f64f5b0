"""``edge phantom``: write a phantom recording (with ground truth) and/or its plan."""

from __future__ import annotations

import argparse
import sys
import time


def cmd_phantom(args: argparse.Namespace) -> int:
    from edge.config import load_config, with_overrides
    from edge.errors import SourceError
    from edge.frames import require_frames
    from edge.sources.phantom import PhantomSource, tracker_landmarks
    from edge.sources.phantom.face import load_face_model
    from edge.sources.phantom.plan_out import write_plan

    if not args.out and not args.plan_out:
        raise SourceError("nothing to write", "pass --out FILE.db3 and/or --plan-out DIR")
    config, _ = load_config(args.config)
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
    )
    if args.out:
        from edge.sources.recording import Recorder, truth_path

        start = time.perf_counter()
        with source, Recorder(args.out, fps=phantom_cfg.fps) as recorder:
            for frame in source:
                recorder.write(frame)
        seconds = time.perf_counter() - start
        print(
            f"wrote {recorder.frames_written} frames of '{source.scenario.name}' to {args.out} "
            f"and ground truth to {truth_path(args.out)} ({seconds:.1f} s)"
        )
        face = source.face
    else:
        image = args.face_image or phantom_cfg.face_image or None
        face = load_face_model(
            image, lambda: tracker_landmarks(config.tracking), phantom_cfg.cache_dir or None
        )
    if args.plan_out:
        plan = write_plan(face, args.plan_out)
        print(f"wrote the phantom's plan to {plan.parent}")
    sys.stdout.flush()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic RGB-D head recording with ground truth, and its plan",
        description="Render the synthetic head phantom (docs/phantom.md) into a recording "
        "(FILE.db3 plus the FILE.truth.jsonl ground-truth sidecar) and/or write its "
        "preoperative plan folder.",
    )
    p.add_argument("--scenario", default="nod-shake", help="static, nod-shake, approach, drape, "
                   "leave-return or photo-spoof (default: nod-shake)")  # fmt: skip
    p.add_argument("--frames", type=int, default=300, help="number of frames (default 300)")
    p.add_argument("--out", metavar="FILE.db3", help="recording to write")
    p.add_argument("--plan-out", metavar="DIR", help="write the phantom's plan into this folder")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--face-image", metavar="PHOTO", help="frontal face photograph to build from")
    p.add_argument("--motion", metavar="FILE", help="per-frame head poses (CSV or JSON)")
    p.add_argument("--no-noise", action="store_true", help="noise-free depth and colour")
    p.add_argument("--config", metavar="FILE", help="configuration file (default: search path)")
    p.set_defaults(func=cmd_phantom)
