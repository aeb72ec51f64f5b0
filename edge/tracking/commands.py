"""``edge track IMAGE``: find faces and their 468 landmarks in a still image; ``--bench``: speed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.errors import SourceError


def _tracking_config(args: argparse.Namespace) -> Any:
    from edge.config import load_config, with_overrides

    cfg, _ = load_config(args.config)
    tracking = cfg.tracking
    if args.models_dir:
        tracking = with_overrides(tracking, models_dir=args.models_dir)
    if args.threads is not None:
        tracking = with_overrides(tracking, intra_op_threads=args.threads)
    return tracking


def _read_image(path: str) -> Any:
    import cv2

    if not Path(path).is_file():
        raise SourceError(f"image {path} does not exist", "check the path")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise SourceError(f"cannot read image {path}", "give a PNG or JPEG file")
    return image


def face_to_json(face: Any) -> dict[str, Any]:
    """A face as plain JSON numbers (pixels; z is the model's relative z)."""
    return {
        "score": round(float(face.score), 4),
        "presence": round(float(face.presence), 4),
        "box": [round(float(v), 2) for v in face.box],
        "keypoints": [[round(float(v), 2) for v in kp] for kp in face.keypoints],
        "landmarks": [[round(float(v), 2) for v in row] for row in face.landmarks_px],
    }


def cmd_track(args: argparse.Namespace) -> int:
    import cv2

    from edge.tracking.draw import draw_faces
    from edge.tracking.tracker import FaceTracker

    if args.bench:
        from edge.tracking.bench import format_bench, run_bench

        threads = (1, 2) if args.threads is None else (args.threads,)
        config = _tracking_config(args)
        print(format_bench(run_bench(config, args.image, frames=args.frames, threads=threads)))
        return 0
    if not args.image:
        raise SourceError("no image given", "pass an image file: edge track IMAGE")
    image_bgr = _read_image(args.image)
    tracker = FaceTracker.from_config(_tracking_config(args))
    faces = tracker.detect_image(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    if args.out:
        from edge.tracking.draw import write_image_atomic

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
    p.add_argument("--json", action="store_true", help="print the faces as JSON")
    p.add_argument("--config", help="configuration file (default: the usual search path)")
    p.add_argument("--models-dir", help="folder of the ONNX models (default: tracking.models_dir)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: from configuration)")
    p.add_argument(
        "--bench",
        action="store_true",
        help="time detector, landmarks and the whole tracking step with 1 and 2 threads "
        "(or only --threads T)",
    )
    p.add_argument("--frames", type=int, default=300, help="frames per --bench run (300)")
    p.set_defaults(func=cmd_track)
