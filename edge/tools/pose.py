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
from functools import cached_property

import numpy as np

from edge.camera import Intrinsics
from edge.tools import kernels
from edge.tools.definition import Marker, ToolSpec, aruco_dictionary

THRESHOLD_WINDOW_PX = 13
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
        """The marker's corners (4, 2), or None: not found, or found twice (ambiguous)."""
        return self._by_id.get(marker_id)

    @cached_property
    def _by_id(self) -> dict[int, np.ndarray]:
        ids = self.ids.tolist()
        return {i: self.corners_px[k] for k, i in enumerate(ids) if ids.count(i) == 1}


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
        if roi is None:
            return self.detect_crop(gray, (0, 0))
        return self.detect_crop(gray[roi[1] : roi[3], roi[0] : roi[2]], roi[:2])

    def detect_crop(self, crop: np.ndarray, origin: tuple[int, int]) -> dict[str, Detections]:
        """Markers in ``crop`` (uint8), a part of the image whose top-left pixel is ``origin``
        (x, y) in it; corners in the whole image's pixels."""
        x0, y0 = origin
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
    little contrast) leaves its corners as they were. Compiled:
    :func:`edge.tools.kernels.refine_corners`.
    """
    c = np.ascontiguousarray(np.asarray(corners, np.float64).reshape(-1, 4, 2))
    return np.asarray(kernels.refine_corners(np.asarray(gray, np.uint8), c, int(modules)))


@dataclass(frozen=True)
class PoseEstimate:
    tool_to_camera: np.ndarray
    markers_used: list[int]
    rms_px: float
    depth_offset_mm: float  # the correction applied along the view ray; NaN: depth not used


def _pose(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    import cv2

    m = np.eye(4)
    m[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64))[0]
    m[:3, 3] = np.asarray(tvec, np.float64).ravel()
    return m


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
    obj = np.ascontiguousarray(np.stack([m.corners_m for m, _ in seen]), np.float64)  # (n, 4, 3)
    img = np.ascontiguousarray(np.stack([c for _, c in seen]), np.float64)  # (n, 4, 2)
    camera = (float(intr.fx), float(intr.fy), float(intr.ppx), float(intr.ppy))

    def errors(pose: np.ndarray) -> np.ndarray:
        """Per marker: its worst corner's distance (px; inf behind the camera), and the
        sum of its corners' squared distances."""
        return np.asarray(kernels.corner_errors(np.ascontiguousarray(pose), obj, img, *camera))

    hypotheses = [] if previous is None else [previous]
    scored: list[np.ndarray] = []
    # The previous frame's pose explaining every marker (within twice the threshold: the
    # tool moved) is the hypothesis; otherwise every marker proposes its two.
    if previous is not None:
        scored.append(errors(previous)[:, 0])
    if previous is None or not (scored[0] < 2 * max_reprojection_px).all():
        hypotheses += _marker_hypotheses(seen, K)

    best, best_key = None, (-1, 0.0)
    for i, pose in enumerate(hypotheses):
        err = scored[i] if i < len(scored) else errors(pose)[:, 0]
        inl = err < (2 if pose is previous else 1) * max_reprojection_px
        key = (int(inl.sum()), -float(np.minimum(err, max_reprojection_px).sum()))
        if key > best_key:
            best, best_key = pose, key
    if best is None or best_key[0] == 0:
        return None
    pose = best
    used = None
    final: np.ndarray | None = None  # the errors of ``pose`` once its inliers stopped changing
    for step in range(3):  # refine over the inliers until they stop changing
        tolerance = 2 if step == 0 and best is previous else 1
        step_err = errors(pose)
        inl = step_err[:, 0] < tolerance * max_reprojection_px
        if not inl.any():
            return None
        if used is not None and (inl == used).all():
            final = step_err
            break
        used = inl
        rvec = cv2.Rodrigues(pose[:3, :3])[0]
        tvec = pose[:3, 3].reshape(3, 1).copy()
        rvec, tvec = cv2.solvePnPRefineLM(
            obj[inl].reshape(-1, 3), img[inl].reshape(-1, 2), K, None, rvec, tvec
        )
        pose = _pose(rvec, tvec)
    err = errors(pose) if final is None else final  # None: refined on the last step
    inl = err[:, 0] < max_reprojection_px
    if not inl.any():
        return None
    rms = float(np.sqrt(err[inl, 1].sum() / (4 * int(inl.sum()))))
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
        tool_to_marker = m.tool_to_marker
        out += [_pose(rvecs[i], tvecs[i]) @ tool_to_marker for i in range(n)]
    return out


def _depth_offset_m(
    pose: np.ndarray,
    markers: list[Marker],
    intr: Intrinsics,
    depth: np.ndarray,
    depth_scale_m: float,
) -> float:
    """Median (measured - predicted) depth at a grid of points inside the markers, or NaN
    (:func:`edge.tools.kernels.depth_offset_m`)."""
    return float(
        kernels.depth_offset_m(
            np.ascontiguousarray(pose, np.float64),
            np.ascontiguousarray(np.stack([m.corners_m for m in markers]), np.float64),
            np.ascontiguousarray(np.stack([m.centre_m for m in markers]), np.float64),
            np.ascontiguousarray(np.stack([m.normal for m in markers]), np.float64),
            np.asarray(depth, np.uint16),
            float(depth_scale_m),
            float(intr.fx),
            float(intr.fy),
            float(intr.ppx),
            float(intr.ppy),
        )
    )
