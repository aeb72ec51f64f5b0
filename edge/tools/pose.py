"""A tool's pose from its markers in one frame: detect, hypothesise, reject, refine, depth.

1. :class:`MarkerDetector` finds the markers (OpenCV ArUco, no corner refinement) and
   refines their corners itself (:func:`refine_corners`): each side of the black border
   is located at sub-pixel precision where the intensity crosses half-way between the
   border and the white around it, a line is fitted to each side, and the corners are
   the lines' intersections (the AprilTag way; OpenCV's own AprilTag refinement is as
   accurate but took 7 ms a frame on the phantom, its corner-subpix 0.37 px median
   error against 0.07 px).
2. :func:`solve_tool_pose`: every visible marker gives two pose hypotheses (IPPE for a
   square, Collins & Bartoli 2014, ``SOLVEPNP_IPPE_SQUARE``), the previous frame's pose a
   third; each is scored over all visible markers, a marker whose worst corner is
   further than ``max_reprojection_px`` from the hypothesis is an outlier (RANSAC with
   one-marker samples), and the best one is refined over the inliers' corners together
   (Levenberg-Marquardt, ``solvePnPRefineLM``).
3. With depth, the pose is moved along the view ray through the markers by the median
   difference between the measured depth inside the markers and the depth the pose
   predicts there (the markers are planes): the distance along the ray is what a
   monocular pose knows least well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.camera import Intrinsics
from edge.tools.definition import ToolSpec, aruco_dictionary

EDGE_SAMPLES = 12  # points along each side of a marker
EDGE_SEARCH_PX = 2.5  # at most this far across the side the edge is looked for, each way
EDGE_STEP_PX = 0.25
MIN_EDGE_CONTRAST = 20.0  # grey levels between the black border and the white around it
DEPTH_INSET = 0.6  # sample depth inside the marker, this share of its size (away from edges)
MIN_DEPTH_SAMPLES = 20
MAX_DEPTH_OFFSET_M = 0.03  # larger: something is in front of the markers; keep the PnP pose


@dataclass(frozen=True)
class Detections:
    """Markers of one dictionary found in a frame: ids (N,) and corners (N, 4, 2) pixels."""

    ids: np.ndarray
    corners_px: np.ndarray

    def of(self, marker_id: int) -> np.ndarray | None:
        hit = np.flatnonzero(self.ids == marker_id)
        return self.corners_px[hit[0]] if hit.size == 1 else None  # twice: ambiguous


class MarkerDetector:
    """ArUco detection for the dictionaries the tools use (one detector each)."""

    def __init__(self, dictionaries: set[str]) -> None:
        import cv2

        self._detectors = {}
        for name in sorted(dictionaries):
            det = cv2.aruco.ArucoDetector(aruco_dictionary(name))
            params = det.getDetectorParameters()
            params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_NONE
            det.setDetectorParameters(params)
            self._detectors[name] = det

    def detect(self, gray: np.ndarray) -> dict[str, Detections]:
        out = {}
        for name, det in self._detectors.items():
            corners, ids, _ = det.detectMarkers(gray)
            if ids is None or len(ids) == 0:
                out[name] = Detections(np.zeros(0, int), np.zeros((0, 4, 2)))
                continue
            c = np.asarray(corners, np.float64).reshape(-1, 4, 2)
            g = gray.astype(np.float32)
            modules = int(aruco_dictionary(name).markerSize) + 2  # bits and the black border
            refined = np.stack([refine_corners(g, q, modules) for q in c])
            out[name] = Detections(np.asarray(ids).ravel().astype(int), refined)
        return out


def refine_corners(gray: np.ndarray, corners: np.ndarray, modules: int = 6) -> np.ndarray:
    """A marker's four outer corners (4, 2) refined by fitting a line to each side's edge.

    ``gray`` is float32; pixel centres are at integer coordinates. The edge is looked for
    within half a module (``modules`` across the marker) each way, so the samples stay
    on the black border inside and on the white quiet zone outside. A side whose edge
    cannot be found (too little contrast) leaves its corners as they were.
    """
    import cv2

    c = np.asarray(corners, np.float64)
    centre = c.mean(axis=0)
    side_px = float(np.linalg.norm(c - np.roll(c, -1, axis=0), axis=1).min())
    reach = float(np.clip(0.5 * side_px / modules, 1.0, EDGE_SEARCH_PX))
    t = np.linspace(0.15, 0.85, EDGE_SAMPLES)
    s = np.linspace(-reach, reach, 2 * round(reach / EDGE_STEP_PX) + 1)
    step = float(s[1] - s[0])
    lines: list[tuple[np.ndarray, np.ndarray] | None] = []
    for i in range(4):
        a, b = c[i], c[(i + 1) % 4]
        d = (b - a) / (np.linalg.norm(b - a) + 1e-12)
        n = np.array([d[1], -d[0]])
        if n @ (a - centre) < 0:
            n = -n  # outward, from the black border to the white around it
        p = a + t[:, None] * (b - a)  # (T, 2)
        q = p[:, None, :] + s[None, :, None] * n  # (T, S, 2)
        maps = q.astype(np.float32)
        prof = cv2.remap(gray, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR).astype(np.float64)
        dark = prof[:, :3].mean(axis=1)
        bright = prof[:, -3:].mean(axis=1)
        level = (dark + bright) / 2.0
        above = prof >= level[:, None]
        first = np.argmax(above, axis=1)  # first sample at or above half-way
        ok = (bright - dark > MIN_EDGE_CONTRAST) & (first > 0) & above.any(axis=1)
        rows = np.flatnonzero(ok)
        if rows.size < 4:
            lines.append(None)
            continue
        k = first[rows]
        lo, hi = prof[rows, k - 1], prof[rows, k]
        frac = (level[rows] - lo) / np.maximum(hi - lo, 1e-9)
        offset = s[k - 1] + frac * step
        pts = p[rows] + offset[:, None] * n
        mean = pts.mean(axis=0)
        direction = np.linalg.svd(pts - mean)[2][0]
        lines.append((mean, direction))
    out = c.copy()
    for i in range(4):
        l1, l2 = lines[(i - 1) % 4], lines[i]  # corner i joins side i-1 and side i
        if l1 is None or l2 is None:
            continue
        m = np.column_stack([l1[1], -l2[1]])
        if abs(np.linalg.det(m)) < 1e-6:
            continue
        u = np.linalg.solve(m, l2[0] - l1[0])
        out[i] = l1[0] + u[0] * l1[1]
    return out


@dataclass(frozen=True)
class PoseEstimate:
    tool_to_camera: np.ndarray
    markers_used: list[int]
    rms_px: float
    depth_offset_mm: float  # NaN when the depth was not used


def _marker_to_tool(corners_m: np.ndarray) -> np.ndarray:
    """The marker's own frame (OpenCV's square: centre, x right, y up, z out) in the tool."""
    c = corners_m
    x = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
    y = (c[0] - c[3]) / np.linalg.norm(c[0] - c[3])
    m = np.eye(4)
    m[:3, :3] = np.column_stack([x, y, np.cross(x, y)])
    m[:3, 3] = c.mean(axis=0)
    return m


def _pose(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    import cv2

    m = np.eye(4)
    m[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64))[0]
    m[:3, 3] = np.asarray(tvec, np.float64).ravel()
    return m


def _project(pose: np.ndarray, points_m: np.ndarray, intr: Intrinsics) -> np.ndarray:
    p = points_m @ pose[:3, :3].T + pose[:3, 3]
    z = np.where(p[:, 2] > 1e-6, p[:, 2], np.nan)
    return np.stack([intr.fx * p[:, 0] / z + intr.ppx, intr.fy * p[:, 1] / z + intr.ppy], axis=1)


def solve_tool_pose(
    spec: ToolSpec,
    found: Detections,
    intr: Intrinsics,
    *,
    max_reprojection_px: float,
    previous: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    depth_scale_m: float = 0.001,
) -> PoseEstimate | None:
    """The tool's pose from the markers found, or None when none of its markers agree.

    ``depth`` (H, W) uint16 aligned to colour, in ``depth_scale_m`` units, refines the
    distance along the view ray (module docstring); None skips it.
    """
    import cv2

    seen = [(m, c) for m in spec.markers if (c := found.of(m.id)) is not None]
    if not seen:
        return None
    K = intr.matrix
    obj = np.stack([m.corners_m for m, _ in seen])  # (n, 4, 3)
    img = np.stack([c for _, c in seen])  # (n, 4, 2)
    hypotheses = [] if previous is None else [previous]
    for m, c in seen:
        h = m.size_m / 2.0
        square = np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])
        n, rvecs, tvecs, _ = cv2.solvePnPGeneric(square, c, K, None, flags=cv2.SOLVEPNP_IPPE_SQUARE)
        tool_to_marker = np.linalg.inv(_marker_to_tool(m.corners_m))
        hypotheses += [_pose(rvecs[i], tvecs[i]) @ tool_to_marker for i in range(n)]

    def marker_errors(pose: np.ndarray) -> np.ndarray:
        proj = _project(pose, obj.reshape(-1, 3), intr).reshape(-1, 4, 2)
        err = np.linalg.norm(proj - img, axis=2).max(axis=1)
        return np.where(np.isfinite(err), err, np.inf)

    best, best_key = None, (-1, 0.0)
    for pose in hypotheses:
        err = marker_errors(pose)
        inl = err < max_reprojection_px
        key = (int(inl.sum()), -float(np.minimum(err, max_reprojection_px).sum()))
        if key > best_key:
            best, best_key = pose, key
    if best is None or best_key[0] == 0:
        return None
    pose = best
    for _ in range(2):
        inl = marker_errors(pose) < max_reprojection_px
        if not inl.any():
            return None
        rvec = cv2.Rodrigues(pose[:3, :3])[0]
        tvec = pose[:3, 3].reshape(3, 1).copy()
        rvec, tvec = cv2.solvePnPRefineLM(
            obj[inl].reshape(-1, 3), img[inl].reshape(-1, 2), K, None, rvec, tvec
        )
        pose = _pose(rvec, tvec)
    err = marker_errors(pose)
    inl = err < max_reprojection_px
    if not inl.any():
        return None
    proj = _project(pose, obj[inl].reshape(-1, 3), intr)
    rms = float(np.sqrt(np.mean(np.sum((proj - img[inl].reshape(-1, 2)) ** 2, axis=1))))
    offset_m = float("nan")
    if depth is not None:
        markers = [seen[i][0] for i in np.flatnonzero(inl)]
        offset_m = _depth_offset_m(pose, markers, intr, depth, depth_scale_m)
        if np.isfinite(offset_m):
            centre = (obj[inl].reshape(-1, 3) @ pose[:3, :3].T + pose[:3, 3]).mean(axis=0)
            pose = pose.copy()
            pose[:3, 3] += offset_m * centre / centre[2]
    return PoseEstimate(
        pose,
        [seen[i][0].id for i in np.flatnonzero(inl)],
        rms,
        offset_m * 1000.0 if np.isfinite(offset_m) else float("nan"),
    )


def _depth_offset_m(
    pose: np.ndarray,
    markers: list,
    intr: Intrinsics,
    depth: np.ndarray,
    depth_scale_m: float,
) -> float:
    """Median (measured - predicted) depth over the inner part of the markers, or NaN."""
    import cv2

    h, w = depth.shape
    residuals = []
    for m in markers:
        centre = m.centre_m
        inner = centre + DEPTH_INSET * (m.corners_m - centre)
        px = _project(pose, inner, intr)
        if not np.isfinite(px).all():
            continue
        x0, y0 = np.floor(px.min(axis=0)).astype(int)
        x1, y1 = np.ceil(px.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, np.round(px - (x0, y0)).astype(np.int32), 1)
        vs, us = np.nonzero(mask & (depth[y0:y1, x0:x1] > 0))
        if us.size == 0:
            continue
        z = depth[y0 + vs, x0 + us].astype(np.float64) * depth_scale_m
        # The marker's plane in the camera: n . p = n . c; along a pixel's ray p = z r.
        n = pose[:3, :3] @ m.normal
        c = pose[:3, :3] @ centre + pose[:3, 3]
        rays = np.stack(
            [(x0 + us - intr.ppx) / intr.fx, (y0 + vs - intr.ppy) / intr.fy, np.ones(us.size)],
            axis=1,
        )
        predicted = float(n @ c) / (rays @ n)
        residuals.append(z - predicted)
    if not residuals:
        return float("nan")
    r = np.concatenate(residuals)
    if r.size < MIN_DEPTH_SAMPLES:
        return float("nan")
    offset = float(np.median(r))
    return offset if abs(offset) < MAX_DEPTH_OFFSET_M else float("nan")
