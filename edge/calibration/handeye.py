"""Hand-eye calibration AX = XB: the camera's pose on a tracked body (headset or marker).

Inputs are paired poses: ``hand_to_base`` (the tracked body in the tracker's
world, e.g. the headset from its own tracking) and ``target_to_camera`` (a
board fixed in the world, seen by the camera). The unknown is
``camera_to_hand``. For poses i, j the motions ``A = inv(H_j) H_i`` and
``B = T_j inv(T_i)`` satisfy ``A X = X B``. Rotation from Park & Martin
(1994, "Robot sensor calibration: solving AX = XB on the Euclidean group",
eq. 13-16, here via the equivalent SVD solution of the orthogonal Procrustes
problem on the rotation logarithms), translation by linear least squares
(their eq. 17), then an optional nonlinear refinement of all residuals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.errors import CalibrationError

REFINE_LENGTH_M = 0.1  # weighs rotation residuals (rad) like translation at 10 cm


def _check_poses(name: str, poses: list[np.ndarray]) -> np.ndarray:
    arr = np.asarray(poses, float)
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise CalibrationError(f"{name} must be a list of 4x4 matrices", "fix the input file")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{name} holds non-finite values", "fix the input file")
    rot = arr[:, :3, :3]
    err = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max()
    if err > 1e-3:
        raise CalibrationError(
            f"{name} holds matrices that are not rotations (orthogonality error {err:.1e})",
            "export rigid 4x4 transforms (metres)",
        )
    return arr


def rotation_log(r: np.ndarray) -> np.ndarray:
    """Axis times angle (radians) of a rotation matrix."""
    from scipy.spatial.transform import Rotation

    return np.asarray(Rotation.from_matrix(r).as_rotvec())


def rotation_exp(v: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return np.asarray(Rotation.from_rotvec(v).as_matrix())


def angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.linalg.norm(rotation_log(r))))


def motions(
    hand_to_base: np.ndarray, target_to_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All pairwise motions (A, B), each (M, 4, 4), with A X = X B."""
    a_list, b_list = [], []
    n = len(hand_to_base)
    for i in range(n):
        for j in range(i + 1, n):
            a_list.append(np.linalg.inv(hand_to_base[j]) @ hand_to_base[i])
            b_list.append(target_to_camera[j] @ np.linalg.inv(target_to_camera[i]))
    return np.array(a_list), np.array(b_list)


def check_motion(a: np.ndarray, min_rotation_deg: float) -> None:
    """Refuse motion that cannot determine X: too little rotation, or about one axis only."""
    logs = np.array([rotation_log(m[:3, :3]) for m in a])
    angles = np.degrees(np.linalg.norm(logs, axis=1))
    big = angles >= min_rotation_deg
    if big.sum() < 2:
        raise CalibrationError(
            f"too little rotation between poses (largest {angles.max():.1f} deg, need "
            f"{min_rotation_deg:g} deg)",
            "rotate the headset/marker more between captures (tilt and turn it)",
        )
    axes = logs[big] / np.linalg.norm(logs[big], axis=1, keepdims=True)
    s = np.linalg.svd(axes, compute_uv=False)
    if len(s) < 2 or s[1] / s[0] < 0.15:
        raise CalibrationError(
            "all rotations are about one axis, which leaves the translation along it unknown",
            "rotate about at least two different axes (tilt as well as turn)",
        )


def solve_park_martin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Closed-form X (4x4) from motions A, B (each (M, 4, 4))."""
    alpha = np.array([rotation_log(m[:3, :3]) for m in a])
    beta = np.array([rotation_log(m[:3, :3]) for m in b])
    # R_A = R_X R_B R_X^T, so alpha = R_X beta: orthogonal Procrustes (Park & Martin eq. 16).
    m = beta.T @ alpha
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r_x = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    # (R_A - I) t_X = R_X t_B - t_A (Park & Martin eq. 17), stacked.
    lhs = np.concatenate([m_a[:3, :3] - np.eye(3) for m_a in a])
    rhs = np.concatenate([r_x @ m_b[:3, 3] - m_a[:3, 3] for m_a, m_b in zip(a, b, strict=True)])
    t_x = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    x = np.eye(4)
    x[:3, :3] = r_x
    x[:3, 3] = t_x
    return x


def motion_residuals(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per motion: rotation error (deg) and translation error (mm) of A X against X B."""
    rot, trans = [], []
    for m_a, m_b in zip(a, b, strict=True):
        lhs, rhs = m_a @ x, x @ m_b
        rot.append(angle_deg(lhs[:3, :3].T @ rhs[:3, :3]))
        trans.append(1000.0 * float(np.linalg.norm(lhs[:3, 3] - rhs[:3, 3])))
    return np.array(rot), np.array(trans)


def refine(a: np.ndarray, b: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Nonlinear least squares on all A X - X B residuals, starting from ``x0``."""
    from scipy.optimize import least_squares

    def unpack(p: np.ndarray) -> np.ndarray:
        x = np.eye(4)
        x[:3, :3] = rotation_exp(p[:3])
        x[:3, 3] = p[3:]
        return x

    def residuals(p: np.ndarray) -> np.ndarray:
        x = unpack(p)
        out = []
        for m_a, m_b in zip(a, b, strict=True):
            lhs, rhs = m_a @ x, x @ m_b
            out.append(REFINE_LENGTH_M * rotation_log(lhs[:3, :3].T @ rhs[:3, :3]))
            out.append(lhs[:3, 3] - rhs[:3, 3])
        return np.concatenate(out)

    p0 = np.concatenate([rotation_log(x0[:3, :3]), x0[:3, 3]])
    return unpack(least_squares(residuals, p0, method="lm").x)


def _target_to_base(hand: np.ndarray, target: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mean of H_i X T_i over poses: where the fixed board is in the base frame."""
    per = np.array([h @ x @ t for h, t in zip(hand, target, strict=True)])
    from scipy.spatial.transform import Rotation

    mean = np.eye(4)
    mean[:3, :3] = Rotation.from_matrix(per[:, :3, :3]).mean().as_matrix()
    mean[:3, 3] = per[:, :3, 3].mean(axis=0)
    return mean


@dataclass
class HandEyeResult:
    camera_to_hand: np.ndarray
    rotation_residuals_deg: np.ndarray  # per motion
    translation_residuals_mm: np.ndarray
    heldout_rotation_deg: np.ndarray  # per held-out pose
    heldout_translation_mm: np.ndarray
    poses: int
    refined: bool
    heldout_indices: list[int] = field(default_factory=list)

    @property
    def rms_rotation_deg(self) -> float:
        return float(np.sqrt(np.mean(self.rotation_residuals_deg**2)))

    @property
    def rms_translation_mm(self) -> float:
        return float(np.sqrt(np.mean(self.translation_residuals_mm**2)))

    def parameters(self) -> dict[str, Any]:
        return {"camera_to_hand": self.camera_to_hand.tolist(), "refined": self.refined}

    def errors(self) -> dict[str, Any]:
        return {
            "rms_rotation_deg": self.rms_rotation_deg,
            "rms_translation_mm": self.rms_translation_mm,
            "heldout_indices": self.heldout_indices,
            "heldout_rotation_deg": [float(e) for e in self.heldout_rotation_deg],
            "heldout_translation_mm": [float(e) for e in self.heldout_translation_mm],
            "poses": self.poses,
        }


def calibrate_hand_eye(
    hand_to_base: list[np.ndarray],
    target_to_camera: list[np.ndarray],
    min_rotation_deg: float = 10.0,
    heldout_every: int = 4,
    refine_solution: bool = True,
) -> HandEyeResult:
    """Solve camera_to_hand from paired poses, with residuals and a held-out check.

    Every ``heldout_every``-th pose is kept out of a first solve and predicted
    from it (board pose in the camera, mm and deg); the returned X uses all
    poses. Raises CalibrationError on too few poses or degenerate motion.
    """
    hand = _check_poses("hand_to_base", hand_to_base)
    target = _check_poses("target_to_camera", target_to_camera)
    if len(hand) != len(target):
        raise CalibrationError(
            f"{len(hand)} hand poses but {len(target)} camera poses",
            "give one pair per capture",
        )
    if len(hand) < 5:
        raise CalibrationError(
            f"too few pose pairs ({len(hand)}), need at least 5 (recommended 10+)",
            "capture more poses, rotating about different axes between them",
        )
    a, b = motions(hand, target)
    check_motion(a, min_rotation_deg)

    def solve(h: np.ndarray, t: np.ndarray) -> np.ndarray:
        ma, mb = motions(h, t)
        x = solve_park_martin(ma, mb)
        return refine(ma, mb, x) if refine_solution else x

    held = [
        i for i in range(len(hand)) if heldout_every > 1 and i % heldout_every == heldout_every - 1
    ]
    train = [i for i in range(len(hand)) if i not in held]
    held_rot, held_trans = [], []
    if held and len(train) >= 4:
        x_train = solve(hand[train], target[train])
        board = _target_to_base(hand[train], target[train], x_train)
        for i in held:
            predicted = np.linalg.inv(x_train) @ np.linalg.inv(hand[i]) @ board
            held_rot.append(angle_deg(predicted[:3, :3].T @ target[i][:3, :3]))
            held_trans.append(1000.0 * float(np.linalg.norm(predicted[:3, 3] - target[i][:3, 3])))
    x = solve(hand, target)
    rot, trans = motion_residuals(a, b, x)
    return HandEyeResult(
        camera_to_hand=x,
        rotation_residuals_deg=rot,
        translation_residuals_mm=trans,
        heldout_rotation_deg=np.array(held_rot),
        heldout_translation_mm=np.array(held_trans),
        poses=len(hand),
        refined=refine_solution,
        heldout_indices=held if held_rot else [],
    )
