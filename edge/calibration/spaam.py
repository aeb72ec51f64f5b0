"""SPAAM display calibration for optical see-through headsets (Tuceryan & Navab 2000).

The user aligns a displayed crosshair with a tracked 3-D point several times;
each alignment pairs a point in the headset frame (metres) with a screen pixel.
The 3x4 projection P (headset frame -> screen pixels) is solved per eye by the
normalised direct linear transform (Hartley & Zisserman, Multiple View
Geometry, 2nd ed., algorithm 7.1 with the normalisation of section 4.4.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.errors import CalibrationError

MIN_DEPTH_SPREAD = 0.25  # (max - min) / median of the alignment depths from the eye


def _normaliser(points: np.ndarray) -> np.ndarray:
    """Similarity moving the centroid to 0 and the mean distance to sqrt(dim) (H&Z 4.4.4)."""
    dim = points.shape[1]
    centroid = points.mean(axis=0)
    mean_dist = np.linalg.norm(points - centroid, axis=1).mean()
    s = np.sqrt(dim) / mean_dist
    t = np.eye(dim + 1)
    t[:dim, :dim] *= s
    t[:dim, dim] = -s * centroid
    return t


def solve_dlt(points_m: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Normalised DLT: the 3x4 P with pixels ~ P [X; 1], scaled so that ||P[2, :3]|| = 1."""
    x = np.asarray(points_m, float)
    u = np.asarray(pixels, float)
    t3, t2 = _normaliser(x), _normaliser(u)
    xn = (t3 @ np.column_stack([x, np.ones(len(x))]).T).T
    un = (t2 @ np.column_stack([u, np.ones(len(u))]).T).T
    rows = []
    for xi, ui in zip(xn, un, strict=True):
        rows.append(np.concatenate([np.zeros(4), -ui[2] * xi, ui[1] * xi]))
        rows.append(np.concatenate([ui[2] * xi, np.zeros(4), -ui[0] * xi]))
    p_n = np.linalg.svd(np.array(rows))[2][-1].reshape(3, 4)
    p = np.linalg.inv(t2) @ p_n @ t3
    p /= np.linalg.norm(p[2, :3])
    # Points in front of the eye have positive depth.
    if np.median(p[2] @ np.column_stack([x, np.ones(len(x))]).T) < 0:
        p = -p
    return p


def project(p: np.ndarray, points_m: np.ndarray) -> np.ndarray:
    h = p @ np.column_stack([points_m, np.ones(len(points_m))]).T
    return (h[:2] / h[2]).T


def eye_centre(p: np.ndarray) -> np.ndarray:
    """The eye's position in the headset frame: the right null vector of P."""
    c = np.linalg.svd(p)[2][-1]
    return c[:3] / c[3]


def angular_errors_deg(p: np.ndarray, points_m: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Angle at the eye between the ray to each 3-D point and the ray through its aligned pixel."""
    c = eye_centre(p)
    m_inv = np.linalg.inv(p[:, :3])
    rays_px = (m_inv @ np.column_stack([pixels, np.ones(len(pixels))]).T).T
    rays_pt = points_m - c
    cos = np.sum(rays_px * rays_pt, axis=1) / (
        np.linalg.norm(rays_px, axis=1) * np.linalg.norm(rays_pt, axis=1)
    )
    # The pixel ray may point backwards (sign of M^-1); the angle between lines is what counts.
    return np.degrees(np.arccos(np.clip(np.abs(cos), -1.0, 1.0)))


@dataclass
class EyeCalibration:
    eye: str
    projection: np.ndarray  # 3x4, headset frame (metres) -> screen pixels
    residuals_px: np.ndarray  # (N, 2) measured - projected
    angular_errors_deg: np.ndarray
    eye_centre_m: np.ndarray
    depth_spread: float
    warnings: list[str] = field(default_factory=list)

    @property
    def rms_px(self) -> float:
        return float(np.sqrt(np.mean(np.sum(self.residuals_px**2, axis=1))))

    @property
    def rms_deg(self) -> float:
        return float(np.sqrt(np.mean(self.angular_errors_deg**2)))

    def parameters(self) -> dict[str, Any]:
        return {
            "projection": self.projection.tolist(),
            "eye_centre_m": self.eye_centre_m.tolist(),
        }

    def errors(self) -> dict[str, Any]:
        return {
            "rms_px": self.rms_px,
            "rms_deg": self.rms_deg,
            "alignments": len(self.residuals_px),
            "depth_spread": self.depth_spread,
            "warnings": self.warnings,
        }


def calibrate_eye(
    eye: str,
    points_m: np.ndarray,
    pixels: np.ndarray,
    min_alignments: int = 6,
    recommended_alignments: int = 12,
) -> EyeCalibration:
    """Solve one eye's projection from N alignments (Nx3 headset-frame metres, Nx2 pixels).

    Refuses fewer than ``min_alignments`` or coplanar points; warns (in the result)
    below ``recommended_alignments`` or with too little spread in depth.
    """
    x = np.asarray(points_m, float)
    u = np.asarray(pixels, float)
    if x.ndim != 2 or x.shape[1] != 3 or u.shape != (len(x), 2):
        raise CalibrationError(
            f"{eye} eye: need N 3-D points and N pixels, got {x.shape} and {u.shape}",
            "fix the alignment file",
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(u))):
        raise CalibrationError(f"{eye} eye: alignments hold non-finite values", "fix the file")
    if len(x) < min_alignments:
        raise CalibrationError(
            f"{eye} eye: {len(x)} alignments, need at least {min_alignments} "
            f"(recommended {recommended_alignments})",
            "collect more alignments at different distances and screen positions",
        )
    sv = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    if sv[2] / sv[0] < 1e-3:
        raise CalibrationError(
            f"{eye} eye: the aligned points lie on one plane, which does not determine the "
            "projection",
            "align at several distances (near and far, e.g. 0.3 to 1 m)",
        )
    p = solve_dlt(x, u)
    residuals = u - project(p, x)
    depths = p[2] @ np.column_stack([x, np.ones(len(x))]).T
    spread = float((depths.max() - depths.min()) / np.median(depths))
    warnings = []
    if len(x) < recommended_alignments:
        warnings.append(
            f"only {len(x)} alignments: {recommended_alignments} or more give a stabler result"
        )
    if spread < MIN_DEPTH_SPREAD:
        warnings.append(
            f"alignments span only {100 * spread:.0f} % in depth "
            f"(want {100 * MIN_DEPTH_SPREAD:.0f} % or more): align near and far points"
        )
    return EyeCalibration(
        eye=eye,
        projection=p,
        residuals_px=residuals,
        angular_errors_deg=angular_errors_deg(p, x, u),
        eye_centre_m=eye_centre(p),
        depth_spread=spread,
        warnings=warnings,
    )
