"""Accuracy of the pipeline against ground truth (phantom or other synthetic input).

Pure functions over per-frame records; ``edge bench`` and the end-to-end tests
use them. Every error is reported in the units its name says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


def percentiles(values: Iterable[float], *qs: float) -> dict[str, float]:
    """Named percentiles (``p50`` ...) of the finite values; NaN when there are none."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    out = {}
    for q in qs:
        key = f"p{q:g}"
        out[key] = float(np.percentile(arr, q)) if arr.size else float("nan")
    return out


def rotation_angle_deg(r: np.ndarray) -> float:
    """Angle of a rotation matrix, in degrees."""
    c = (np.trace(r) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def transform_points(a_to_b: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to Nx3 points."""
    p = np.asarray(points_a, dtype=np.float64).reshape(-1, 3)
    return p @ a_to_b[:3, :3].T + a_to_b[:3, 3]


def landmark_errors_px(estimated_px: np.ndarray, true_px: np.ndarray) -> np.ndarray:
    """Per-landmark 2-D distance in pixels (estimated may carry a third column)."""
    return np.linalg.norm(np.asarray(estimated_px)[:, :2] - np.asarray(true_px)[:, :2], axis=1)


def landmark_errors_mm(
    estimated_m: np.ndarray, valid: np.ndarray | None, true_m: np.ndarray
) -> np.ndarray:
    """Per-landmark 3-D distance in millimetres, for the landmarks flagged valid."""
    est = np.asarray(estimated_m, dtype=np.float64)
    mask = np.isfinite(est).all(axis=1)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    return np.linalg.norm(est[mask] - np.asarray(true_m)[mask], axis=1) * 1000.0


@dataclass
class PoseErrors:
    """Errors of one estimated pose against the true one."""

    tre_mm: dict[str, float]  # per target: distance between where the target is shown and is
    rotation_deg: float
    translation_mm: float


def pose_errors(
    estimated_patient_to_camera: np.ndarray,
    true_patient_to_camera: np.ndarray,
    targets_m: dict[str, np.ndarray],
) -> PoseErrors:
    """Target registration error at each plan target, and the pose's rotation/translation error.

    The translation error is measured at the centroid of the targets (not at the
    plan's origin, which may lie far from the anatomy).
    """
    names = list(targets_m)
    pts = np.array([targets_m[n] for n in names], dtype=np.float64).reshape(-1, 3)
    est = transform_points(estimated_patient_to_camera, pts)
    true = transform_points(true_patient_to_camera, pts)
    tre = np.linalg.norm(est - true, axis=1) * 1000.0
    r_err = estimated_patient_to_camera[:3, :3].T @ true_patient_to_camera[:3, :3]
    centroid = pts.mean(axis=0, keepdims=True) if len(pts) else np.zeros((1, 3))
    t_err = np.linalg.norm(
        transform_points(estimated_patient_to_camera, centroid)
        - transform_points(true_patient_to_camera, centroid)
    )
    return PoseErrors(
        tre_mm=dict(zip(names, tre.tolist(), strict=True)),
        rotation_deg=rotation_angle_deg(r_err),
        translation_mm=float(t_err * 1000.0),
    )


def jitter_mm(target_positions_camera_m: Sequence[np.ndarray]) -> float:
    """Standard deviation (3-D, millimetres) of target positions over frames of a static scene.

    ``target_positions_camera_m`` holds one (T, 3) array per frame. The result is
    the largest over the targets of sqrt(trace(covariance)).
    """
    if len(target_positions_camera_m) < 2:
        return float("nan")
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in target_positions_camera_m])
    per_target = np.sqrt(stack.var(axis=0).sum(axis=1)) * 1000.0
    return float(per_target.max())


@dataclass
class RunStats:
    """Accumulates per-frame figures for a summary."""

    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    end_to_end_ms: list[float] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    failed_frames: int = 0

    def add(self, stage_ms: dict[str, float], end_to_end_ms: float, state: str | None) -> None:
        for name, ms in stage_ms.items():
            self.stage_ms.setdefault(name, []).append(ms)
        self.end_to_end_ms.append(end_to_end_ms)
        if state is not None:
            self.states[state] = self.states.get(state, 0) + 1

    def stage_summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {k + "_ms": v for k, v in percentiles(ms, 50, 99).items()}
            for name, ms in self.stage_ms.items()
        }

    def state_fractions(self) -> dict[str, float]:
        total = sum(self.states.values())
        return {s: n / total for s, n in sorted(self.states.items())} if total else {}
