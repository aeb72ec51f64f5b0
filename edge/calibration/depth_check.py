"""Depth-to-color check: the board's plane from depth against its pose from color.

For each view, the board pose comes from the color image (solvePnP on the
ChArUco corners, with the calibrated or factory intrinsics) and the board's
plane from the aligned depth image (RANSAC plane fit over the board region,
Fischler & Bolles 1981, refined by least squares on the inliers). Along the
ray through the board centre, the depth plane's distance ``r_d`` and the color
plane's ``r_c`` are compared. With views at two or more distances,
``r_d = (1 + s) r_c + o`` separates a scale error ``s`` from an offset ``o``;
at one distance they cannot be told apart and the whole difference is
reported as scale (and the offset as the plain mean difference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.calibration.boards import BoardSpec
from edge.errors import CalibrationError
from edge.frames import Frame

MIN_DEPTH_POINTS = 200
SEPARATE_SPREAD_M = 0.1  # views must span this range of distances to separate scale and offset


def fit_plane_ransac(
    points_m: np.ndarray,
    threshold_m: float = 0.004,
    iterations: int = 200,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Plane n . p = d through Nx3 points: (unit normal n, camera side; d; inliers; rms_m).

    Raises CalibrationError with fewer than 3 points or when no plane has enough inliers.
    """
    p = np.asarray(points_m, float).reshape(-1, 3)
    if len(p) < 3:
        raise CalibrationError("too few depth points for a plane fit", "check the depth stream")
    rng = rng or np.random.default_rng(0)
    best = np.zeros(len(p), bool)
    for _ in range(iterations):
        a, b, c = p[rng.choice(len(p), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n /= norm
        inliers = np.abs((p - a) @ n) < threshold_m
        if inliers.sum() > best.sum():
            best = inliers
    if best.sum() < max(3, 0.5 * len(p)):
        raise CalibrationError(
            f"the depth over the board is not flat ({best.sum()} of {len(p)} points on a plane)",
            "keep the board flat and fully in view; check the depth stream",
        )
    q = p[best]
    centroid = q.mean(axis=0)
    n = np.linalg.svd(q - centroid)[2][2]  # least-squares plane normal: smallest singular vector
    d = float(n @ centroid)
    if d < 0:
        n, d = -n, -d
    rms = float(np.sqrt(np.mean(((q - centroid) @ n) ** 2)))
    return n, d, best, rms


@dataclass
class DepthView:
    frame_number: int
    distance_color_m: float  # along the ray through the board centre
    distance_depth_m: float
    normal_angle_deg: float
    plane_rms_mm: float
    points: int


@dataclass
class DepthCheckResult:
    views: list[DepthView]
    scale_error_pct: float
    offset_mm: float
    normal_angle_deg: float
    plane_rms_mm: float
    separated: bool  # True when scale and offset were fitted separately
    needs_on_chip_calibration: bool
    problems: list[str] = field(default_factory=list)

    def parameters(self) -> dict[str, Any]:
        return {
            "depth_scale_error_pct": self.scale_error_pct,
            "depth_to_color_offset_mm": self.offset_mm,
            "normal_angle_deg": self.normal_angle_deg,
            "scale_and_offset_separated": self.separated,
            "needs_on_chip_calibration": self.needs_on_chip_calibration,
        }

    def errors(self) -> dict[str, Any]:
        return {
            "plane_rms_mm": self.plane_rms_mm,
            "views": [vars(v) for v in self.views],
            "problems": self.problems,
        }


def check_view(
    spec: BoardSpec,
    frame: Frame,
    camera_matrix: np.ndarray,
    dist_coeffs: np.ndarray,
    detector: Any,
    rng: np.random.Generator | None = None,
) -> DepthView | None:
    """Compare depth and color for one frame; None when the board is not found or no depth."""
    import cv2

    if frame.depth is None:
        raise CalibrationError(
            "the source has no depth stream", "record or stream with depth enabled"
        )
    grey = cv2.cvtColor(np.ascontiguousarray(frame.rgb()), cv2.COLOR_RGB2GRAY)
    corners, ids, _, _ = detector.detectBoard(grey)
    if ids is None or len(ids) < 8:
        return None
    obj = spec.corners_board_m()[ids.reshape(-1)]
    ok, rvec, tvec = cv2.solvePnP(obj, corners.reshape(-1, 2), camera_matrix, dist_coeffs)
    if not ok:
        return None
    r = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    # Board region: the chessboard inset by half a square, so edges' mixed depth stays out.
    outline = spec.outline_board_m(0.5)
    poly = cv2.projectPoints(outline, rvec, tvec, camera_matrix, dist_coeffs)[0].reshape(-1, 2)
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.rint(poly).astype(np.int32), 1)
    depth_m = frame.depth_m()
    assert depth_m is not None
    vs, us = np.nonzero((mask > 0) & (depth_m > 0))
    if len(us) < MIN_DEPTH_POINTS:
        return None
    step = max(1, len(us) // 4000)  # enough points for a plane; keeps RANSAC cheap
    us, vs = us[::step], vs[::step]
    px = np.stack([us, vs], axis=1).astype(np.float64).reshape(-1, 1, 2)
    rays = cv2.undistortPoints(px, camera_matrix, dist_coeffs).reshape(-1, 2)
    z = depth_m[vs, us].astype(np.float64)
    points = np.column_stack([rays * z[:, None], z])
    n_d, d_d, _, rms = fit_plane_ransac(points, rng=rng)
    n_c = r[:, 2]
    d_c = float(n_c @ t)
    if d_c < 0:
        n_c, d_c = -n_c, -d_c
    centre = r @ np.array([spec.width_mm / 2000.0, spec.height_mm / 2000.0, 0.0]) + t
    ray = centre / np.linalg.norm(centre)
    angle = float(np.degrees(np.arccos(np.clip(abs(n_d @ n_c), -1.0, 1.0))))
    return DepthView(
        frame_number=frame.number,
        distance_color_m=d_c / float(n_c @ ray),
        distance_depth_m=d_d / float(n_d @ ray),
        normal_angle_deg=angle,
        plane_rms_mm=rms * 1000.0,
        points=len(points),
    )


def summarise(
    views: list[DepthView], max_scale_error_pct: float, max_offset_mm: float
) -> DepthCheckResult:
    """Combine per-view comparisons into scale error (%) and offset (mm), and flag the camera."""
    if not views:
        raise CalibrationError(
            "the board was not found with depth in any frame",
            "hold the board flat, 40-80 cm in front of the camera, fully in view",
        )
    r_c = np.array([v.distance_color_m for v in views])
    r_d = np.array([v.distance_depth_m for v in views])
    separated = len(views) >= 2 and float(r_c.max() - r_c.min()) >= SEPARATE_SPREAD_M
    if separated:
        slope, intercept = np.polyfit(r_c, r_d, 1)
        scale_pct, offset_mm = 100.0 * (slope - 1.0), 1000.0 * intercept
    else:
        scale_pct = 100.0 * float(np.median(r_d / r_c - 1.0))
        offset_mm = 1000.0 * float(np.median(r_d - r_c))
    angle = float(np.median([v.normal_angle_deg for v in views]))
    rms = float(np.median([v.plane_rms_mm for v in views]))
    problems = []
    if abs(scale_pct) > max_scale_error_pct:
        problems.append(
            f"depth scale error {scale_pct:+.2f} % exceeds {max_scale_error_pct:g} %: run the "
            "RealSense on-chip and tare calibration (Intel RealSense Viewer), then re-check"
        )
    if separated and abs(offset_mm) > max_offset_mm:
        problems.append(
            f"depth-to-color offset {offset_mm:+.1f} mm exceeds {max_offset_mm:g} mm: run the "
            "RealSense tare calibration, then re-check"
        )
    return DepthCheckResult(
        views=views,
        scale_error_pct=scale_pct,
        offset_mm=offset_mm,
        normal_angle_deg=angle,
        plane_rms_mm=rms,
        separated=separated,
        needs_on_chip_calibration=bool(problems),
        problems=problems,
    )
