"""Hand-eye, SPAAM, pivot and depth check: known answers from noisy synthetic data, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from edge.calibration.boards import load_board
from edge.calibration.depth_check import check_view, fit_plane_ransac, summarise
from edge.calibration.handeye import angle_deg, calibrate_hand_eye
from edge.calibration.pivot import calibrate_pivot
from edge.calibration.spaam import calibrate_eye, eye_centre, project
from edge.calibration.synthetic import (
    SyntheticBoardSource,
    TrueCamera,
    board_poses,
    handeye_pairs,
    pivot_poses,
    rotation,
    spaam_alignments,
    transform,
)
from edge.errors import CalibrationError

# ---------------------------------------------------------------- hand-eye


def test_handeye_recovers_known_transform() -> None:
    hands, targets, truth = handeye_pairs(12, seed=0, noise_mm=0.5, noise_deg=0.2)
    res = calibrate_hand_eye(hands, targets)
    x = res.camera_to_hand
    assert angle_deg(x[:3, :3].T @ truth[:3, :3]) < 0.5
    assert 1000 * np.linalg.norm(x[:3, 3] - truth[:3, 3]) < 3.0
    assert len(res.heldout_translation_mm) == 3
    assert res.heldout_translation_mm.max() < 5.0
    assert res.rms_translation_mm < 5.0


def test_handeye_exact_without_noise() -> None:
    hands, targets, truth = handeye_pairs(8, seed=1, noise_mm=0.0, noise_deg=0.0)
    res = calibrate_hand_eye(hands, targets, refine_solution=False)
    assert np.allclose(res.camera_to_hand, truth, atol=1e-6)


def test_handeye_agrees_with_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "calibrateHandEye"):
        pytest.skip("this OpenCV has no calibrateHandEye")
    hands, targets, truth = handeye_pairs(12, seed=3)
    ours = calibrate_hand_eye(hands, targets).camera_to_hand
    r, t = cv2.calibrateHandEye(
        [h[:3, :3] for h in hands],
        [h[:3, 3] for h in hands],
        [m[:3, :3] for m in targets],
        [m[:3, 3] for m in targets],
        method=cv2.CALIB_HAND_EYE_PARK,
    )
    assert angle_deg(r.T @ ours[:3, :3]) < 0.5
    assert 1000 * np.linalg.norm(t.ravel() - ours[:3, 3]) < 3.0
    # Both near the truth; ours (refined) no worse than OpenCV's closed form by much.
    err_cv = 1000 * np.linalg.norm(t.ravel() - truth[:3, 3])
    err_ours = 1000 * np.linalg.norm(ours[:3, 3] - truth[:3, 3])
    assert err_ours < err_cv + 1.0


def test_handeye_refuses_single_axis_motion() -> None:
    hands, targets, _ = handeye_pairs(12, single_axis=True)
    with pytest.raises(CalibrationError, match="about one axis"):
        calibrate_hand_eye(hands, targets)


def test_handeye_refuses_small_motion() -> None:
    hands, targets, _ = handeye_pairs(12, max_rotation_deg=3.0)
    with pytest.raises(CalibrationError, match="too little rotation"):
        calibrate_hand_eye(hands, targets)


def test_handeye_refuses_bad_input() -> None:
    hands, targets, _ = handeye_pairs(6)
    with pytest.raises(CalibrationError, match="too few pose pairs"):
        calibrate_hand_eye(hands[:4], targets[:4])
    with pytest.raises(CalibrationError, match="6 hand poses but 5 camera poses"):
        calibrate_hand_eye(hands, targets[:5])
    bad = [h.copy() for h in hands]
    bad[0][:3, :3] *= 2.0
    with pytest.raises(CalibrationError, match="not rotations"):
        calibrate_hand_eye(bad, targets)


# ---------------------------------------------------------------- SPAAM


def test_spaam_recovers_projection() -> None:
    pts, px, p_true, _ = spaam_alignments(20, seed=0, noise_px=1.5)
    eye = calibrate_eye("left", pts, px)
    assert eye.rms_px < 3.0
    assert eye.rms_deg < 0.2
    assert 1000 * np.linalg.norm(eye.eye_centre_m - eye_centre(p_true)) < 10.0
    test_pts, test_px, _, _ = spaam_alignments(50, seed=9, noise_px=0.0)
    heldout = np.sqrt(np.mean(np.sum((project(eye.projection, test_pts) - test_px) ** 2, axis=1)))
    assert heldout < 3.0
    assert eye.warnings == []


def test_spaam_exact_without_noise() -> None:
    pts, px, p_true, _ = spaam_alignments(8, seed=2, noise_px=0.0)
    eye = calibrate_eye("right", pts, px)
    assert np.allclose(eye.projection, p_true / np.linalg.norm(p_true[2, :3]), atol=1e-6)


def test_spaam_refuses_too_few_and_coplanar() -> None:
    pts, px, _, _ = spaam_alignments(5)
    with pytest.raises(CalibrationError, match="5 alignments, need at least 6"):
        calibrate_eye("left", pts, px)
    pts, px, _, _ = spaam_alignments(12)
    flat = pts.copy()
    flat[:, 2] = 0.5
    with pytest.raises(CalibrationError, match="lie on one plane"):
        calibrate_eye("left", flat, px)


def test_spaam_warns_few_and_shallow() -> None:
    pts, px, _, _ = spaam_alignments(8, depth_range_m=(0.5, 0.55), noise_px=0.5)
    eye = calibrate_eye("left", pts, px)
    assert any("only 8 alignments" in w for w in eye.warnings)
    assert any("in depth" in w for w in eye.warnings)


# ---------------------------------------------------------------- pivot


def test_pivot_recovers_tip_and_pivot() -> None:
    poses, tip, pivot = pivot_poses(40, noise_mm=0.25)
    res = calibrate_pivot(poses)
    assert 1000 * np.linalg.norm(res.tip_tool_m - tip) < 1.0
    assert 1000 * np.linalg.norm(res.pivot_tracker_m - pivot) < 1.0
    assert res.rms_mm < 1.0


def test_pivot_ransac_rejects_slips() -> None:
    poses, tip, _ = pivot_poses(40, outliers=6)
    plain = calibrate_pivot(poses)
    robust = calibrate_pivot(poses, ransac=True)
    assert 1000 * np.linalg.norm(plain.tip_tool_m - tip) > 2.0
    assert 1000 * np.linalg.norm(robust.tip_tool_m - tip) < 1.0
    assert not robust.inliers[:6].any()


def test_pivot_refuses_little_rotation() -> None:
    poses, _, _ = pivot_poses(40, max_rotation_deg=5.0)
    with pytest.raises(CalibrationError, match="too little rotation"):
        calibrate_pivot(poses)


def test_pivot_refuses_single_axis() -> None:
    tip = np.array([0.0, 0.0, 0.15])
    poses = []
    for a in np.linspace(-30, 30, 20):
        r = rotation(a, 0.0, 0.0)
        poses.append(transform(r, np.array([0.1, 0.0, 0.8]) - r @ tip))
    with pytest.raises(CalibrationError, match="one axis"):
        calibrate_pivot(poses)


def test_pivot_refuses_too_few_poses() -> None:
    poses, _, _ = pivot_poses(5)
    with pytest.raises(CalibrationError, match="too few poses"):
        calibrate_pivot(poses)


# ---------------------------------------------------------------- depth check


@pytest.fixture(scope="module")
def board(repo_root):
    return load_board("a4-charuco-7x5", repo_root / "calibration" / "boards")


def run_depth_check(board, scale_pct: float, offset_m: float):
    import cv2

    cam = TrueCamera()
    poses = board_poses(board, cam, 3, 0, 0.45) + board_poses(board, cam, 3, 1, 0.7)
    detector = cv2.aruco.CharucoDetector(board.cv2_board())
    source = SyntheticBoardSource(
        board,
        cam,
        frames=6,
        poses=poses,
        depth_scale_error_pct=scale_pct,
        depth_offset_m=offset_m,
    )
    with source:
        views = [check_view(board, f, cam.matrix, np.array(cam.dist), detector) for f in source]
    return summarise([v for v in views if v], 1.0, 3.0)


def test_depth_check_good_camera_passes(board) -> None:
    res = run_depth_check(board, 0.0, 0.0)
    assert abs(res.scale_error_pct) < 0.3
    assert abs(res.offset_mm) < 1.5
    assert res.separated and not res.needs_on_chip_calibration
    assert res.normal_angle_deg < 0.5


def test_depth_check_finds_scale_error(board) -> None:
    res = run_depth_check(board, 2.0, 0.0)
    assert res.scale_error_pct == pytest.approx(2.0, abs=0.3)
    assert res.needs_on_chip_calibration
    assert "on-chip" in res.problems[0]


def test_depth_check_finds_offset(board) -> None:
    res = run_depth_check(board, 0.0, 0.005)
    assert res.offset_mm == pytest.approx(5.0, abs=1.5)
    assert abs(res.scale_error_pct) < 0.3
    assert res.needs_on_chip_calibration


def test_depth_check_refuses_no_board_and_no_depth(board) -> None:
    with pytest.raises(CalibrationError, match="not found with depth"):
        summarise([], 1.0, 3.0)
    with pytest.raises(CalibrationError, match="too few depth points"):
        fit_plane_ransac(np.zeros((2, 3)))
