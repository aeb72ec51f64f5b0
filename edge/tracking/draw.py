"""Drawing of tracked faces for people to look at (never used by the tracking itself)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import SourceError
from edge.files import write_atomic
from edge.tracking.types import Face

BOX_BGR = (0, 200, 255)
KEYPOINT_BGR = (0, 0, 255)
LANDMARK_BGR = (0, 255, 0)


def draw_faces(image_bgr: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A copy of a BGR uint8 image with each face's box, 6 keypoints and 468 landmarks drawn."""
    out = np.ascontiguousarray(image_bgr).copy()
    h, w = out.shape[:2]
    for face in faces:
        x0, y0, x1, y1 = (round(float(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_BGR, 1, cv2.LINE_AA)
        cv2.putText(
            out, f"{face.score:.2f}", (x0, max(12, y0 - 4)), 0, 0.45, BOX_BGR, 1, cv2.LINE_AA
        )
        # Landmarks as 2x2 dots painted in one go (468 circles would be slower and blur them).
        xy = np.rint(face.landmarks_px[:, :2]).astype(np.int64)
        xy = xy[np.isfinite(face.landmarks_px[:, :2]).all(axis=1)]
        for dx in (0, 1):
            for dy in (0, 1):
                px, py = xy[:, 0] + dx, xy[:, 1] + dy
                keep = (px >= 0) & (px < w) & (py >= 0) & (py < h)
                out[py[keep], px[keep]] = LANDMARK_BGR
        for kx, ky in face.keypoints:
            cv2.circle(out, (round(float(kx)), round(float(ky))), 4, KEYPOINT_BGR, 1, cv2.LINE_AA)
    return out


def write_image_atomic(path: Path, image_bgr: np.ndarray) -> None:
    """Encode by the file's extension and write via a temporary file + os.replace.

    Raises SourceError when the extension is not an image format OpenCV writes.
    """
    ok, data = cv2.imencode(path.suffix or ".png", image_bgr)
    if not ok:
        raise SourceError(f"cannot encode an image as {path.suffix!r}", "use a .png or .jpg name")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data.tobytes())
