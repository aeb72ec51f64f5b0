"""Faces in a still image (``edge track IMAGE``): read the file, find the faces, report them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import TrackingConfig
from edge.errors import SourceError
from edge.files import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_SIDE_PX, check_image_size
from edge.tracking.types import Face


def read_image(path: str | Path, max_side_px: int = MAX_IMAGE_SIDE_PX) -> np.ndarray:
    """A PNG or JPEG file as a BGR uint8 image.

    The size in its header is checked before decoding (a 69-byte PNG can claim
    60000 x 60000 pixels). Raises SourceError when the file is missing, larger
    than MAX_IMAGE_FILE_BYTES, not a PNG or JPEG, over ``max_side_px`` on a side,
    or does not decode.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"image {p} does not exist", "check the path")
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_IMAGE_FILE_BYTES + 1)
        if len(data) > MAX_IMAGE_FILE_BYTES:
            raise ValueError(f"it is larger than {MAX_IMAGE_FILE_BYTES} bytes, the limit")
        check_image_size(data, max_side_px)
    except OSError as exc:
        raise SourceError(
            f"cannot read image {p}: {exc.strerror}", "check its permissions"
        ) from None
    except ValueError as exc:
        raise SourceError(f"cannot read image {p}: {exc}", "give a PNG or JPEG file") from None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise SourceError(f"cannot read image {p}: it does not decode", "give a PNG or JPEG file")
    return image


def find_faces(image_bgr: np.ndarray, config: TrackingConfig) -> list[Face]:
    """Every face in a BGR image with its 468 landmarks, best score first (no depth)."""
    from edge.tracking.tracker import FaceTracker

    tracker = FaceTracker.from_config(config)
    return tracker.detect_image(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))


def face_to_json(face: Face) -> dict[str, Any]:
    """A face as plain JSON numbers (pixels; z is the model's relative z)."""
    return {
        "score": round(float(face.score), 4),
        "presence": round(float(face.presence), 4),
        "box": [round(float(v), 2) for v in face.box],
        "keypoints": [[round(float(v), 2) for v in kp] for kp in face.keypoints],
        "landmarks": [[round(float(v), 2) for v in row] for row in face.landmarks_px],
    }
