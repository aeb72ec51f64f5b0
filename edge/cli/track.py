"""``edge track IMAGE``: faces and their 468 landmarks in a still image; ``--bench``: speed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli.options import add_config, add_json, add_threads, config_from

if TYPE_CHECKING:
    from edge.config import TrackingConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "track",
        help="find faces and 468 landmarks in an image (or --bench the tracking step)",
        description="Run the face detector and the landmark model on a still image, print the "
        "faces (with --json: {'faces': [{score, box, keypoints, landmarks}]}, 468 [x, y, z] "
        "rows per face, pixels; z is relative, not metric) and optionally draw them. No face: "
        "an empty list, exit 0. --bench times the whole tracking step on 640x480 frames.",
    )
    p.add_argument("image", nargs="?", help="PNG or JPEG image")
    p.add_argument("--out", help="write the image with the faces drawn to this PNG/JPEG file")
    add_json(p, "the faces")
    add_config(p)
    p.add_argument("--models-dir", help="folder of the ONNX models (default: tracking.models_dir)")
    add_threads(p)
    p.add_argument(
        "--bench",
        action="store_true",
        help="time detector, landmarks and the whole tracking step with 1 and 2 threads "
        "(or only --threads T)",
    )
    p.add_argument("--frames", type=int, default=300, help="frames per --bench run (300)")
    p.set_defaults(func=cmd_track)


def _tracking_config(args: argparse.Namespace) -> TrackingConfig:
    from edge.config import with_overrides

    tracking = config_from(args).tracking
    if args.models_dir:
        tracking = with_overrides(tracking, models_dir=args.models_dir)
    if args.threads is not None:
        tracking = with_overrides(tracking, intra_op_threads=args.threads)
    return tracking


def cmd_track(args: argparse.Namespace) -> int:
    from edge.errors import SourceError
    from edge.tracking.draw import draw_faces, write_image_atomic
    from edge.tracking.still import face_to_json, find_faces, read_image

    if args.bench:
        from edge.tracking.bench import format_bench, run_bench

        threads = (1, 2) if args.threads is None else (args.threads,)
        config = _tracking_config(args)
        print(format_bench(run_bench(config, args.image, frames=args.frames, threads=threads)))
        return 0
    if not args.image:
        raise SourceError("no image given", "pass an image file: edge track IMAGE")
    image_bgr = read_image(args.image)
    faces = find_faces(image_bgr, _tracking_config(args))
    if args.out:
        write_image_atomic(Path(args.out), draw_faces(image_bgr, faces))
    if args.json:
        json.dump({"faces": [face_to_json(f) for f in faces]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        if not faces:
            print("no face found")
        for i, f in enumerate(faces):
            x0, y0, x1, y1 = f.box
            print(
                f"face {i}: score {f.score:.3f} presence {f.presence:.3f} "
                f"box {x0:.0f},{y0:.0f} to {x1:.0f},{y1:.0f} px, 468 landmarks"
            )
    return 0
