"""Faces in a still image (``edge track IMAGE``): read the file, find the faces, report them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import TrackingConfig
from edge.errors import SourceError
from edge.tracking.types import Face


def read_image(path: str | Path) -> np.ndarray:
    """A PNG or JPEG file as a BGR uint8 image; SourceError when missing or unreadable."""
    if not Path(path).is_file():
        raise SourceError(f"image {path} does not exist", "check the path")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise SourceError(f"cannot read image {path}", "give a PNG or JPEG file")
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
