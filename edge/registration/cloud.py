"""The depth cloud of the face region that the surface registration fits.

Pixels inside the convex hull of the tracked landmarks (all of them, or the
rigid upper face's, :data:`~edge.registration.landmarks.RIGID_FACE_HULL`),
minus the eyes and the mouth (they move on their own), sampled on a regular
grid whose stride is chosen so that about ``max_points`` pixels remain, lifted
with the aligned depth into the camera frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.frames import Frame
from edge.registration.landmarks import EYE_LEFT_CONTOUR, EYE_RIGHT_CONTOUR, LIPS_OUTER_CONTOUR

# Enlargement of the eye and mouth contours about their centroids: lids and lips
# move beyond the contour line itself.
EYE_MARGIN = 1.5
MOUTH_MARGIN = 1.3


def _grown(points: np.ndarray, factor: float) -> np.ndarray:
    c = points.mean(axis=0)
    return c + (points - c) * factor


def face_pixels(
    landmarks_px: np.ndarray,
    width: int,
    height: int,
    max_points: int,
    hull_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """(K, 2) integer pixel coordinates (u, v) of the face region to sample.

    ``landmarks_px``: (468, >=2) pixel coordinates of the face model landmarks;
    the region is their convex hull, or that of ``hull_indices`` alone. It is
    rasterised on a grid of one cell per sampled pixel, so the cost does not
    grow with the face's size in the image.
    """
    import cv2

    full = np.asarray(landmarks_px, dtype=np.float64)[:, :2]
    if hull_indices is not None and len(full) > max(hull_indices):
        lm = full[list(hull_indices)]
    else:
        lm = full
    lm = lm[np.isfinite(lm).all(axis=1)]
    if len(lm) < 3:
        return np.zeros((0, 2), np.int64)
    hull = cv2.convexHull(lm.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    hull_area = float(cv2.contourArea(hull.astype(np.float32)))
    if hull_area < 1.0:
        return np.zeros((0, 2), np.int64)
    u0, v0 = np.floor(hull.min(axis=0)).astype(int)
    u1, v1 = np.ceil(hull.max(axis=0)).astype(int)
    stride = max(1, int(np.sqrt(hull_area / max(max_points, 1) * 1.25)))
    cols = (u1 - u0) // stride + 1
    rows = (v1 - v0) // stride + 1
    mask = np.zeros((rows, cols), np.uint8)

    def cells(poly: np.ndarray) -> np.ndarray:
        return np.rint((poly - [u0, v0]) / stride).astype(np.int32).reshape(-1, 1, 2)

    cv2.fillPoly(mask, [cells(hull)], 1)
    if len(full) > max(*EYE_LEFT_CONTOUR, *EYE_RIGHT_CONTOUR, *LIPS_OUTER_CONTOUR):
        for contour, factor in (
            (EYE_RIGHT_CONTOUR, EYE_MARGIN),
            (EYE_LEFT_CONTOUR, EYE_MARGIN),
            (LIPS_OUTER_CONTOUR, MOUTH_MARGIN),
        ):
            poly = full[list(contour)]
            if np.isfinite(poly).all():
                cv2.fillPoly(mask, [cells(_grown(poly, factor))], 0)
    r, c = np.nonzero(mask)
    u = u0 + c * stride
    v = v0 + r * stride
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return np.stack([u[inside], v[inside]], axis=1).astype(np.int64)


def correct_skin_depth(points_camera_m: np.ndarray, skin_depth_bias_m: float) -> np.ndarray:
    """Points on skin moved ``skin_depth_bias_m`` nearer in depth (z), as measured too far.

    Along each point's viewing ray, so the pixel it came from stays the same:
    the depth ``z`` becomes ``z - bias`` and x, y scale with it.
    """
    p = np.asarray(points_camera_m, dtype=np.float64)
    if not skin_depth_bias_m or p.size == 0:
        return p
    z = p[:, 2:3]
    return np.asarray(p * ((z - skin_depth_bias_m) / np.where(z > 0, z, 1.0)))


def region_cloud(
    frame: Frame,
    landmarks_px: np.ndarray,
    max_points: int = 600,
    skin_depth_bias_m: float = 0.0,
    hull_indices: Sequence[int] | None = None,
) -> tuple[np.ndarray, int]:
    """(N, 3) camera-frame points (metres) of the face region (:func:`face_pixels`) with
    valid depth, corrected for the camera's skin depth bias (:func:`correct_skin_depth`),
    and the number of pixels sampled in the region, with depth or without."""
    if frame.depth is None:
        return np.zeros((0, 3)), 0
    intr = frame.intrinsics
    pix = face_pixels(landmarks_px, intr.width, intr.height, max_points, hull_indices)
    if len(pix) == 0:
        return np.zeros((0, 3)), 0
    raw = frame.depth[pix[:, 1], pix[:, 0]]
    ok = raw > 0
    z = raw[ok].astype(np.float64) * frame.depth_scale_m - skin_depth_bias_m
    return intr.deproject(pix[ok].astype(np.float64), z), len(pix)


def face_cloud(
    frame: Frame, landmarks_px: np.ndarray, max_points: int = 600, skin_depth_bias_m: float = 0.0
) -> np.ndarray:
    """(N, 3) camera-frame points (metres) of the whole face region (:func:`region_cloud`)."""
    return region_cloud(frame, landmarks_px, max_points, skin_depth_bias_m)[0]
