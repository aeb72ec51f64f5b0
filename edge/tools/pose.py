"""A tool's pose from its markers in one frame: detect, hypothesise, reject, refine, depth.

1. :class:`MarkerDetector` finds the markers (OpenCV ArUco, no corner refinement) and
   refines their corners itself (:func:`refine_corners`): each side of the black border
   is located at sub-pixel precision where the intensity crosses half-way between the
   border and the white around it, a line is fitted to each side, and the corners are
   the lines' intersections (the AprilTag way; OpenCV's own AprilTag refinement is as
   accurate but took 7 ms a frame on the phantom, its corner-subpix 0.37 px median
   error against 0.13 px: docs/tools.md).
2. :func:`solve_tool_pose`: every visible marker gives two pose hypotheses (IPPE for a
   square, Collins & Bartoli 2014, ``SOLVEPNP_IPPE_SQUARE``), the previous frame's pose a
   third; each is scored over all visible markers, a marker whose worst corner is
   further than ``max_reprojection_px`` from the hypothesis is an outlier (RANSAC with
   one-marker samples), and the best one is refined over the inliers' corners together
   (Levenberg-Marquardt, ``solvePnPRefineLM``).
3. With depth, the median difference between the measured depth inside the markers and
   the depth the pose predicts there (the markers are planes) says how far along the
   view ray the pose may be off: the distance along the ray is what a monocular pose
   knows least well. The depth camera has its own bias (a few millimetres at 0.5 m), so
   the pose moves by that difference weighted by the two uncertainties (inverse
   variance): the pose's along the ray, from its corners' spread and reprojection
   error, against :data:`DEPTH_SIGMA_M`. Several markers on different faces pin the
   distance down and keep the PnP pose; a single small marker moves towards the depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge import geometry
from edge.camera import Intrinsics
from edge.tools.definition import ToolSpec, aruco_dictionary

THRESHOLD_WINDOW_PX = 13
EDGE_SAMPLES = 12  # points along each side of a marker
EDGE_SEARCH_PX = 2.5  # at most this far across the side the edge is looked for, each way
EDGE_STEP_PX = 0.25
MIN_EDGE_CONTRAST = 20.0  # grey levels between the black border and the white around it
DEPTH_INSET = 0.6  # sample depth inside the marker, this share of its size (away from edges)
DEPTH_GRID = 8  # an 8 x 8 grid of depth samples on each marker
MIN_DEPTH_SAMPLES = 20
MAX_DEPTH_OFFSET_M = 0.03  # larger: something is in front of the markers; keep the PnP pose
# The depth camera's error at the markers, bias included (D400: within 2 % of the range,
# about 2-4 mm at 0.5 m once a few dozen samples are averaged; the bias does not average).
DEPTH_SIGMA_M = 0.003
MIN_CORNER_SIGMA_PX = 0.1  # the corners' error is never taken as below this
# An error common to every corner (the edges found a little in or out: the marker's
# apparent size) does not average out over corners; it sets the range's error floor.
CORNER_BIAS_PX = 0.1


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
        self._modules = {}
        for name in sorted(dictionaries):
            det = cv2.aruco.ArucoDetector(aruco_dictionary(name))
            params = det.getDetectorParameters()
            params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_NONE
            # One adaptive-threshold window, 2-3 modules of a 20-30 mm marker at 0.4-0.7 m
            # (3.6-6.4 px): as many markers found on the phantom as the default three
            # windows (3..23 px), in a third of the time.
            params.adaptiveThreshWinSizeMin = THRESHOLD_WINDOW_PX
            params.adaptiveThreshWinSizeMax = THRESHOLD_WINDOW_PX
            det.setDetectorParameters(params)
            self._detectors[name] = det
            # Modules across a marker: its bits and the black border.
            self._modules[name] = int(aruco_dictionary(name).markerSize) + 2

    def detect(
        self, gray: np.ndarray, roi: tuple[int, int, int, int] | None = None
    ) -> dict[str, Detections]:
        """Markers in ``gray`` (uint8), or only in ``roi`` = (x0, y0, x1, y1) of it; corners
        are in the whole image's pixels either way."""
        x0, y0 = (0, 0) if roi is None else roi[:2]
        crop = gray if roi is None else gray[roi[1] : roi[3], roi[0] : roi[2]]
        out = {}
        for name, det in self._detectors.items():
            corners, ids, _ = det.detectMarkers(crop)
            if ids is None or len(ids) == 0:
                out[name] = Detections(np.zeros(0, int), np.zeros((0, 4, 2)))
                continue
            c = np.asarray(corners, np.float64).reshape(-1, 4, 2)
            refined = refine_corners(crop, c, self._modules[name]) + np.array([x0, y0], float)
            out[name] = Detections(np.asarray(ids).ravel().astype(int), refined)
        return out


def refine_corners(gray: np.ndarray, corners: np.ndarray, modules: int = 6) -> np.ndarray:
    """Markers' outer corners (N, 4, 2) refined by fitting a line to each side's edge.

    ``gray`` is uint8; pixel centres are at integer coordinates. The edge is looked for
    within half a module (``modules`` across the marker) each way, so the samples stay
    on the black border inside and on the white quiet zone outside; it is where the
    intensity crosses half-way between the two. A side whose edge cannot be found (too
    little contrast) leaves its corners as they were.
    """
    import cv2

    c = np.asarray(corners, np.float64).reshape(-1, 4, 2)
    n_markers = c.shape[0]
    a = c  # side i runs from corner i to corner i + 1
    b = np.roll(c, -1, axis=1)
    length = np.linalg.norm(b - a, axis=2)  # (N, 4)
    d = (b - a) / np.maximum(length, 1e-9)[..., None]
    normal = np.stack([d[..., 1], -d[..., 0]], axis=-1)
    outward = np.sign(np.sum(normal * (a - c.mean(axis=1, keepdims=True)), axis=-1))
    normal *= np.where(outward == 0, 1.0, outward)[..., None]
    reach = np.clip(0.5 * length.min(axis=1) / modules, 1.0, EDGE_SEARCH_PX)  # (N,)
    steps = 2 * round(EDGE_SEARCH_PX / EDGE_STEP_PX) + 1
    unit = np.linspace(-1.0, 1.0, steps)
    s = reach[:, None] * unit[None, :]  # (N, S) offsets across the side, px
    t = np.linspace(0.15, 0.85, EDGE_SAMPLES)
    p = a[:, :, None, :] + t[None, None, :, None] * (b - a)[:, :, None, :]  # (N, 4, T, 2)
    q = p[:, :, :, None, :] + s[:, None, None, :, None] * normal[:, :, None, None, :]
    # Sampled from float pixels (a uint8 remap would round the interpolated values), of
    # only the part of the image the markers cover.
    height, width = gray.shape
    x0, y0 = np.clip(np.floor(q.reshape(-1, 2).min(axis=0)).astype(int) - 1, 0, None)
    x1, y1 = np.ceil(q.reshape(-1, 2).max(axis=0)).astype(int) + 2
    x1, y1 = min(int(x1), width), min(int(y1), height)
    patch = gray[y0:y1, x0:x1].astype(np.float32)
    maps = (q.reshape(-1, steps, 2) - (x0, y0)).astype(np.float32)
    prof = cv2.remap(
        patch, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float64)
    prof = prof.reshape(n_markers, 4, EDGE_SAMPLES, steps)
    dark = prof[..., :3].mean(axis=-1)
    bright = prof[..., -3:].mean(axis=-1)
    level = (dark + bright) / 2.0
    above = prof >= level[..., None]
    first = np.argmax(above, axis=-1)  # first sample at or above half-way
    ok = (bright - dark > MIN_EDGE_CONTRAST) & (first > 0)
    k = np.maximum(first, 1)
    lo = np.take_along_axis(prof, (k - 1)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(prof, k[..., None], axis=-1)[..., 0]
    frac = np.clip((level - lo) / np.maximum(hi - lo, 1e-9), 0.0, 1.0)
    step = (s[:, 1] - s[:, 0])[:, None, None]
    offset = s[:, 0][:, None, None] + (k - 1 + frac) * step  # (N, 4, T)
    pts = p + offset[..., None] * normal[:, :, None, :]  # (N, 4, T, 2)
    w = ok.astype(np.float64)
    count = w.sum(axis=-1)  # (N, 4)
    mean = (pts * w[..., None]).sum(axis=2) / np.maximum(count, 1.0)[..., None]
    r = (pts - mean[:, :, None, :]) * w[..., None]
    cxx = (r[..., 0] ** 2).sum(-1)
    cyy = (r[..., 1] ** 2).sum(-1)
    cxy = (r[..., 0] * r[..., 1]).sum(-1)
    angle = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (N, 4, 2)
    good = count >= 4
    # Corner i joins side i - 1 and side i: solve m1 + u d1 = m2 + v d2.
    m1, d1, g1 = np.roll(mean, 1, axis=1), np.roll(direction, 1, axis=1), np.roll(good, 1, axis=1)
    det = d1[..., 0] * -direction[..., 1] - d1[..., 1] * -direction[..., 0]
    rhs = mean - m1
    u = (rhs[..., 0] * -direction[..., 1] - rhs[..., 1] * -direction[..., 0]) / np.where(
        np.abs(det) < 1e-6, 1.0, det
    )
    corner = m1 + u[..., None] * d1
    use = g1 & good & (np.abs(det) >= 1e-6) & (np.linalg.norm(corner - c, axis=-1) < 3.0)
    return np.where(use[..., None], corner, c)


@dataclass(frozen=True)
class PoseEstimate:
    tool_to_camera: np.ndarray
    markers_used: list[int]
    rms_px: float
    depth_offset_mm: float  # the correction applied along the view ray; NaN: depth not used


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
    """Tool-frame points through ``pose`` onto the image; NaN behind the camera."""
    p = geometry.apply(pose, points_m)
    px = intr.project(p)
    px[~(p[:, 2] > 1e-6)] = np.nan
    return px


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

    def marker_errors(pose: np.ndarray) -> np.ndarray:
        proj = _project(pose, obj.reshape(-1, 3), intr).reshape(-1, 4, 2)
        err = np.linalg.norm(proj - img, axis=2).max(axis=1)
        return np.where(np.isfinite(err), err, np.inf)

    hypotheses = [] if previous is None else [previous]
    # The previous frame's pose explaining every marker (within twice the threshold: the
    # tool moved) is the hypothesis; otherwise every marker proposes its two.
    if previous is None or not (marker_errors(previous) < 2 * max_reprojection_px).all():
        hypotheses += _marker_hypotheses(seen, K)

    best, best_key = None, (-1, 0.0)
    for pose in hypotheses:
        err = marker_errors(pose)
        inl = err < (2 if pose is previous else 1) * max_reprojection_px
        key = (int(inl.sum()), -float(np.minimum(err, max_reprojection_px).sum()))
        if key > best_key:
            best, best_key = pose, key
    if best is None or best_key[0] == 0:
        return None
    pose = best
    used = None
    for step in range(3):  # refine over the inliers until they stop changing
        tolerance = 2 if step == 0 and best is previous else 1
        inl = marker_errors(pose) < tolerance * max_reprojection_px
        if not inl.any():
            return None
        if used is not None and (inl == used).all():
            break
        used = inl
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
        measured_m = _depth_offset_m(pose, markers, intr, depth, depth_scale_m)
        if np.isfinite(measured_m):
            points = obj[inl].reshape(-1, 3) @ pose[:3, :3].T + pose[:3, 3]
            centre = points.mean(axis=0)
            sigma_pnp = pnp_range_sigma_m(points, rms, intr.fx)
            offset_m = measured_m * sigma_pnp**2 / (sigma_pnp**2 + DEPTH_SIGMA_M**2)
            pose = pose.copy()
            pose[:3, 3] += offset_m * centre / centre[2]
    return PoseEstimate(
        pose,
        [seen[i][0].id for i in np.flatnonzero(inl)],
        rms,
        offset_m * 1000.0 if np.isfinite(offset_m) else float("nan"),
    )


def pnp_range_sigma_m(points_camera_m: np.ndarray, rms_px: float, focal_px: float) -> float:
    """The PnP pose's standard error along the view ray (metres), from its corners.

    The range comes from the corners' apparent spread: z = f S / s, so an error of
    sigma px on each of N corners spread s px about their centre moves it by about
    z sigma / (s sqrt(N)); sigma is the reprojection RMS (at least
    :data:`MIN_CORNER_SIGMA_PX`), s the corners' RMS distance from their centre.
    """
    z = float(points_camera_m[:, 2].mean())
    spread_m = float(np.sqrt(np.mean(np.sum((points_camera_m - points_camera_m.mean(0)) ** 2, 1))))
    spread_px = focal_px * spread_m / z
    random_px = max(float(rms_px), MIN_CORNER_SIGMA_PX) / math.sqrt(len(points_camera_m))
    return z * math.hypot(random_px, CORNER_BIAS_PX) / max(spread_px, 1e-9)


def _marker_hypotheses(seen: list, K: np.ndarray) -> list[np.ndarray]:
    """Each marker's two IPPE poses of its square, as ``tool_to_camera``."""
    import cv2

    out = []
    for m, c in seen:
        h = m.size_m / 2.0
        square = np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])
        n, rvecs, tvecs, _ = cv2.solvePnPGeneric(square, c, K, None, flags=cv2.SOLVEPNP_IPPE_SQUARE)
        tool_to_marker = np.linalg.inv(_marker_to_tool(m.corners_m))
        out += [_pose(rvecs[i], tvecs[i]) @ tool_to_marker for i in range(n)]
    return out


def _depth_offset_m(
    pose: np.ndarray,
    markers: list,
    intr: Intrinsics,
    depth: np.ndarray,
    depth_scale_m: float,
) -> float:
    """Median (measured - predicted) depth at a grid of points inside the markers, or NaN.

    Each point is looked up at its nearest pixel; the predicted depth there is where that
    pixel's ray meets the marker's plane (the pose's).
    """
    h, w = depth.shape
    g = (np.arange(DEPTH_GRID) + 0.5) / DEPTH_GRID * 2.0 - 1.0  # -1..1 across the marker
    gu, gv = np.meshgrid(g * DEPTH_INSET / 2.0, g * DEPTH_INSET / 2.0)
    R, t = pose[:3, :3], pose[:3, 3]
    points, normals, anchors = [], [], []
    for m in markers:
        c = m.corners_m
        u, v = c[1] - c[0], c[3] - c[0]
        grid = m.centre_m + gu.reshape(-1, 1) * u + gv.reshape(-1, 1) * v
        points.append(grid)
        n = R @ m.normal
        normals.append(np.repeat(n[None], len(grid), axis=0))
        anchors.append(np.full(len(grid), float(n @ (R @ m.centre_m + t))))
    px = _project(pose, np.concatenate(points), intr)
    n = np.concatenate(normals)
    d = np.concatenate(anchors)
    ok = np.isfinite(px).all(axis=1)
    ui = np.floor(np.where(ok, px[:, 0], -1) + 0.5).astype(int)
    vi = np.floor(np.where(ok, px[:, 1], -1) + 0.5).astype(int)
    ok &= (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    ui, vi, n, d = ui[ok], vi[ok], n[ok], d[ok]
    z = depth[vi, ui].astype(np.float64) * depth_scale_m
    rays = np.stack([(ui - intr.ppx) / intr.fx, (vi - intr.ppy) / intr.fy, np.ones(ui.size)], 1)
    predicted = d / np.sum(rays * n, axis=1)
    r = (z - predicted)[z > 0]
    if r.size < MIN_DEPTH_SAMPLES:
        return float("nan")
    offset = float(np.median(r))
    return offset if abs(offset) < MAX_DEPTH_OFFSET_M else float("nan")
