"""Pointer pivot calibration: the tool tip from poses pivoting about it.

With the tip resting in a divot and the tool rotated about it, every pose
``tool_to_tracker = (R_i, t_i)`` satisfies ``R_i p_tip + t_i = p_pivot``. The
stacked system ``[R_i  -I] [p_tip; p_pivot] = -t_i`` is solved by linear least
squares (the algebraic method, e.g. Yaniv 2015, "Which pivot calibration?",
SPIE 9415, eq. 2), optionally inside RANSAC to reject poses where the tip
slipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.calibration.handeye import _check_poses, rotation_log
from edge.errors import CalibrationError


def solve_pivot(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares: (tip in tool frame m, pivot in tracker frame m, per-pose residual m)."""
    n = len(poses)
    a = np.zeros((3 * n, 6))
    rhs = np.zeros(3 * n)
    for i, m in enumerate(poses):
        a[3 * i : 3 * i + 3, :3] = m[:3, :3]
        a[3 * i : 3 * i + 3, 3:] = -np.eye(3)
        rhs[3 * i : 3 * i + 3] = -m[:3, 3]
    x = np.linalg.lstsq(a, rhs, rcond=None)[0]
    residual = np.linalg.norm((a @ x - rhs).reshape(n, 3), axis=1)
    return x[:3], x[3:], residual


def check_rotation(poses: np.ndarray, min_rotation_deg: float) -> float:
    """Refuse too little rotation, or rotation in one plane only; returns the range in degrees."""
    ref = poses[0][:3, :3]
    logs = np.array([rotation_log(ref.T @ m[:3, :3]) for m in poses])
    centred = logs - logs.mean(axis=0)
    # Range: twice the largest deviation from the mean orientation, a robust "how far it swung".
    dev = np.degrees(np.linalg.norm(centred, axis=1))
    range_deg = float(2.0 * np.percentile(dev, 95))
    if range_deg < min_rotation_deg:
        raise CalibrationError(
            f"too little rotation: the tool swung about {range_deg:.0f} deg, need "
            f"{min_rotation_deg:g} deg",
            "pivot the tool further about its tip, in a cone (side to side and forward/back)",
        )
    s = np.linalg.svd(centred, compute_uv=False)
    if s[1] / s[0] < 0.15:
        raise CalibrationError(
            "the tool was pivoted about one axis only, which leaves the tip position along it "
            "unknown",
            "pivot in a cone: side to side and forward and back",
        )
    return range_deg


@dataclass
class PivotResult:
    tip_tool_m: np.ndarray
    pivot_tracker_m: np.ndarray
    residuals_mm: np.ndarray  # per pose (inliers and outliers)
    inliers: np.ndarray  # bool per pose
    rotation_range_deg: float
    method: str

    @property
    def rms_mm(self) -> float:
        return float(np.sqrt(np.mean(self.residuals_mm[self.inliers] ** 2)))

    def parameters(self) -> dict[str, Any]:
        return {
            "tip_tool_mm": (1000.0 * self.tip_tool_m).tolist(),
            "pivot_tracker_mm": (1000.0 * self.pivot_tracker_m).tolist(),
            "method": self.method,
        }

    def errors(self) -> dict[str, Any]:
        return {
            "rms_mm": self.rms_mm,
            "max_mm": float(self.residuals_mm[self.inliers].max()),
            "poses": len(self.residuals_mm),
            "inliers": int(self.inliers.sum()),
            "rotation_range_deg": self.rotation_range_deg,
        }


def calibrate_pivot(
    tool_to_tracker: list[np.ndarray],
    min_rotation_deg: float = 20.0,
    ransac: bool = False,
    inlier_mm: float = 1.0,
    iterations: int = 200,
    seed: int = 0,
) -> PivotResult:
    """Tip offset and pivot point from poses of a tool pivoting about its tip.

    Raises CalibrationError with fewer than 8 poses, too little or one-axis rotation,
    or (RANSAC) fewer than half the poses agreeing.
    """
    poses = _check_poses("tool_to_tracker", tool_to_tracker)
    if len(poses) < 8:
        raise CalibrationError(
            f"too few poses ({len(poses)}), need at least 8 (recommended 30+)",
            "record longer while pivoting the tool",
        )
    range_deg = check_rotation(poses, min_rotation_deg)
    inliers = np.ones(len(poses), bool)
    if ransac:
        rng = np.random.default_rng(seed)
        best = inliers & False
        for _ in range(iterations):
            pick = rng.choice(len(poses), 4, replace=False)
            tip, piv, _ = solve_pivot(poses[pick])
            res = np.linalg.norm(poses[:, :3, :3] @ tip + poses[:, :3, 3] - piv, axis=1)
            cand = res * 1000.0 < inlier_mm
            if cand.sum() > best.sum():
                best = cand
        if best.sum() < max(8, len(poses) // 2):
            raise CalibrationError(
                f"only {best.sum()} of {len(poses)} poses agree within {inlier_mm:g} mm",
                "keep the tip seated in the divot while pivoting; check the tool's marker",
            )
        inliers = best
    tip, piv, _ = solve_pivot(poses[inliers])
    residuals = np.linalg.norm(poses[:, :3, :3] @ tip + poses[:, :3, 3] - piv, axis=1)
    return PivotResult(
        tip_tool_m=tip,
        pivot_tracker_m=piv,
        residuals_mm=residuals * 1000.0,
        inliers=inliers,
        rotation_range_deg=range_deg,
        method="ransac" if ransac else "least-squares",
    )
