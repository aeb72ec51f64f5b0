"""The surface-fit TRE estimate: covariance propagation, constraint analysis, between-frame
disagreement, and the estimator on an ICP fit of the synthetic face."""

from __future__ import annotations

import numpy as np
import pytest

from edge import geometry
from edge.registration.cloud import face_cloud
from edge.registration.icp import IcpResult, SkinModel, icp_point_to_plane
from edge.registration.quality import surface_tre_mm
from edge.registration.tre import TreEstimator
from support import synthetic_face as syn


def _normal_matrix(points_mm: np.ndarray, normals: np.ndarray) -> np.ndarray:
    J = np.concatenate([np.cross(points_mm, normals), normals], axis=1)
    return J.T @ J


def test_propagation_matches_monte_carlo_of_the_linear_fit() -> None:
    """Residual noise of sigma through the linearised point-to-plane solve moves a target by
    the RMS surface_tre_mm predicts (the formula, checked against sampling)."""
    rng = np.random.default_rng(1)
    d = rng.normal(size=(400, 3))
    normals = d / np.linalg.norm(d, axis=1, keepdims=True)  # a blob: every motion constrained
    points_mm = normals * 60.0 + rng.normal(scale=5.0, size=(400, 3))
    J = np.concatenate([np.cross(points_mm, normals), normals], axis=1)
    A = J.T @ J
    target_mm = np.array([[10.0, -20.0, 80.0], [0.0, 0.0, 0.0]])
    sigma_mm = 0.8
    predicted = surface_tre_mm(A, np.zeros(3), sigma_mm, target_mm * 1e-3)
    moves = []
    for _ in range(3000):
        delta = np.linalg.solve(A, J.T @ rng.normal(scale=sigma_mm, size=400))
        moves.append(np.cross(delta[:3], target_mm) + delta[3:])
    rms = np.sqrt((np.stack(moves) ** 2).sum(axis=2).mean(axis=0))
    np.testing.assert_allclose(predicted, rms, rtol=0.06)


def test_a_poorly_constrained_surface_gives_a_large_estimate() -> None:
    """A cylinder cannot fix sliding along its axis (Gelfand et al. 2003): the estimate at a
    target grows without bound, while a curved patch of the same size stays small."""
    rng = np.random.default_rng(2)
    angle = rng.uniform(-1.0, 1.0, 500)
    axial = rng.uniform(-40.0, 40.0, 500)
    normals = np.stack([np.sin(angle), np.zeros(500), np.cos(angle)], axis=1)
    cylinder = np.stack([80.0 * np.sin(angle), axial, 80.0 * np.cos(angle)], axis=1)
    target = np.array([[0.0, 0.0, 0.06]])
    slid = surface_tre_mm(_normal_matrix(cylinder, normals), np.zeros(3), 0.5, target)
    sphere_n = np.stack([np.sin(angle), axial / 80.0, np.cos(angle)], axis=1)
    sphere_n /= np.linalg.norm(sphere_n, axis=1, keepdims=True)
    sphere = sphere_n * 80.0
    held = surface_tre_mm(_normal_matrix(sphere, sphere_n), np.zeros(3), 0.5, target)
    assert slid[0] > 100 * held[0]


def _pose_at(t_s: float) -> np.ndarray:
    """A head nodding smoothly while it approaches the camera."""
    m = geometry.axis_angle_to_matrix(np.array([1.0, 0.0, 0.0]), 0.3 * np.sin(2.0 * t_s))
    out = np.eye(4)
    out[:3, :3] = m
    out[:3, 3] = [0.0, 0.0, 0.6 - 0.1 * t_s]
    return out


def test_between_frame_disagreement_ignores_smooth_motion_and_measures_jitter() -> None:
    targets = np.array([[0.0, 0.0, 0.08], [0.03, 0.02, 0.05]])
    still = TreEstimator(targets, 1.0, 0.08, 0.05)
    noisy = TreEstimator(targets, 1.0, 0.08, 0.05)
    rng = np.random.default_rng(3)
    sigma_m = 0.2e-3  # per axis, per frame
    smooth, jittery = [], []
    for i in range(200):
        t = i / 30.0
        pose = _pose_at(t)
        smooth.append(still._between_frame_sq(t, pose))
        still.observe(t, pose)
        shaken = pose.copy()
        shaken[:3, 3] += rng.normal(
            scale=sigma_m, size=3
        )  # a translation: the same at every target
        jittery.append(noisy._between_frame_sq(t, shaken))
        noisy.observe(t, shaken)
    assert np.sqrt(np.max(smooth[20:])) < 0.01  # mm: a nod and an approach are not jitter
    expected_mm = np.sqrt(3) * sigma_m * 1e3  # 3-D RMS of the per-frame error
    measured = np.sqrt(np.mean(jittery[20:], axis=0))
    np.testing.assert_allclose(measured, expected_mm, rtol=0.15)
    noisy.reset()
    assert np.all(noisy._between_frame_sq(0.0, _pose_at(0.0)) == 0.0)


def test_one_jump_of_the_head_does_not_inflate_the_estimate() -> None:
    """A real jump between two frames (a missed frame, a replay looping back) is one bad
    extrapolation in three: the window's median ignores it, and a new registration
    (``tracking=False``) does not use the history at all."""
    targets = np.array([[0.0, 0.0, 0.08]])
    est = TreEstimator(targets, 1.0, 0.08, 0.05)
    rng = np.random.default_rng(4)
    values = []
    for i in range(40):
        t = i / 30.0
        pose = _pose_at(t if i < 20 else t + 1.0)  # the head jumps by a second's motion
        pose[:3, 3] += rng.normal(scale=0.1e-3, size=3)
        values.append(np.sqrt(est._between_frame_sq(t, pose))[0])
        est.observe(t, pose)
    assert max(values[5:]) < 0.5  # mm; the jump itself moved the targets by ~20 mm
    jumped = _pose_at(5.0)
    assert est._between_frame_sq(40 / 30, jumped)[0] > 0  # history is used when tracking
    assert np.sqrt(est._between_frame_sq(40 / 30, jumped))[0] < 0.5
    # Time that does not increase (a replay restarting its clock) is no evidence either.
    assert np.isnan(est._disagreement_sq(0.0, jumped)).all()


def test_estimate_on_an_icp_fit_of_the_synthetic_face() -> None:
    """On a noisy frame the calibrated estimate bounds the true error at the target, is
    finite for a target deep in the head, and scales with the confidence factor."""
    skin = SkinModel.from_mesh(syn.face_mesh())
    intr = syn.default_intrinsics()
    truth = syn.pose_from(np.array([5.0, 10.0, 0.0]), np.array([0.01, 0.0, 0.0]), syn.facing_pose())
    frame = syn.make_frame(0, syn.render_depth(syn.dense_surface_m(), truth, intr), intr, 0.0005)
    tracking = syn.make_tracking(syn.all_landmarks_m(), truth, intr)
    cloud = face_cloud(frame, tracking.patient.landmarks_px, 500)
    start = syn.pose_from(np.array([2.0, 0.0, 0.0]), np.array([0.002, 0.0, 0.0]), truth)
    icp = icp_point_to_plane(skin, cloud, start)
    assert icp.normal_matrix is not None and icp.normal_matrix.shape == (6, 6)
    pituitary = np.array(syn.TARGETS["pituitary"])
    targets = np.stack([pituitary, pituitary + np.array([0.0, 0.0, 0.03])])
    one = TreEstimator(targets, 1.0, 0.08, 0.05).estimate_mm(icp, cloud, intr.fx, 0.0)
    two = TreEstimator(targets, 2.0, 0.08, 0.05).estimate_mm(icp, cloud, intr.fx, 0.0)
    np.testing.assert_allclose(two, 2.0 * one)
    true_mm = (
        np.linalg.norm(
            geometry.apply(icp.patient_to_camera, targets) - geometry.apply(truth, targets), axis=1
        )
        * 1e3
    )
    assert np.all(np.isfinite(one)) and np.all(one < 2.0)
    assert np.all(true_mm <= 3.0 * one)
    assert one[1] > one[0]  # further from the face: the rotation has a longer lever
    shaky = TreEstimator(targets, 1.0, 0.08, 0.05)
    for i, dx in enumerate([0.0, 0.002, -0.002, 0.002, -0.002]):
        moved = truth.copy()
        moved[:3, 3] += [dx, 0.0, 0.0]
        shaky.observe(i / 30.0, moved)
    tracked = shaky.estimate_mm(icp, cloud, intr.fx, 5 / 30.0)
    fresh = shaky.estimate_mm(icp, cloud, intr.fx, 5 / 30.0, tracking=False)
    np.testing.assert_allclose(fresh, one)  # a new registration: the fit's part alone
    assert np.all(tracked > fresh + 0.5)  # 2 mm frame-to-frame jitter shows while tracking


def _ellipsoid(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Point-to-plane rows (mm units) of a face-sized ellipsoid cap facing the camera, and
    six regions: three bands across, split top and bottom."""
    u = rng.uniform(-1.0, 1.0, n)
    v = rng.uniform(-0.8, 0.8, n)
    axes = np.array([75.0, 95.0, 60.0])
    points = np.stack([np.sin(u) * np.cos(v), np.sin(v), np.cos(u) * np.cos(v)], axis=1) * axes
    normals = points / axes**2
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    rows = np.concatenate([np.cross(points, normals), normals], axis=1)
    region = np.digitize(u, [-0.33, 0.33]) * 2 + (v > 0)
    return rows, region


def test_region_jackknife_is_about_the_covariance_for_independent_noise() -> None:
    """With independent residuals the delete-one-region jackknife estimates about the
    spread the covariance does (mean square over many draws; grouped jackknife with unequal
    regions is a little conservative)."""
    from edge.registration.quality import region_jackknife_tre_mm

    rng = np.random.default_rng(4)
    rows, region = _ellipsoid(rng, 600)
    target = np.array([[0.01, -0.02, -0.06]])
    sigma = 0.5
    predicted = surface_tre_mm(rows.T @ rows, np.zeros(3), sigma, target)[0]
    assert 0.05 < predicted < 1.0  # the layout constrains every motion
    jack = [
        region_jackknife_tre_mm(
            rows, rng.normal(scale=sigma, size=600), region, np.zeros(3), target
        )[0]
        for _ in range(400)
    ]
    assert 0.8 < np.sqrt(np.mean(np.square(jack))) / predicted < 1.8


def test_region_jackknife_sees_a_region_that_moved_on_its_own() -> None:
    """One region lifted by 1.5 mm (a smile under a cheekbone) with no noise: 0 for the
    exact fit, and for the lifted one several times what 0.2 mm of independent noise
    gives."""
    from edge.registration.quality import region_jackknife_tre_mm

    rng = np.random.default_rng(5)
    rows, region = _ellipsoid(rng, 600)
    target = np.array([[0.0, 0.0, -0.06]])
    exact = region_jackknife_tre_mm(rows, np.zeros(600), region, np.zeros(3), target)
    assert exact[0] == pytest.approx(0.0, abs=1e-9)
    lifted = region_jackknife_tre_mm(
        rows, np.where(region == 1, 1.5, 0.0), region, np.zeros(3), target
    )
    noise = surface_tre_mm(rows.T @ rows, np.zeros(3), 0.2, target)
    assert lifted[0] > 3 * noise[0]


def test_region_jackknife_needs_three_regions() -> None:
    from edge.registration.quality import region_jackknife_tre_mm

    rng = np.random.default_rng(6)
    rows, region = _ellipsoid(rng, 300)
    two = np.where(region < 3, 0, 1)
    out = region_jackknife_tre_mm(rows, rng.normal(size=300), two, np.zeros(3), np.zeros((2, 3)))
    assert np.isnan(out).all()


def _icp(rows: np.ndarray, residuals: np.ndarray) -> IcpResult:
    return IcpResult(
        patient_to_camera=np.eye(4), rms_mm=0.3, inlier_fraction=1.0, occluded_fraction=0.0,
        iterations=3, converged=True, points=len(rows), residuals_mm=residuals,
        normal_matrix=rows.T @ rows, centre_m=np.zeros(3), inliers=np.ones(len(rows), bool),
        rows_mm=rows,
    )  # fmt: skip


def test_estimator_takes_the_jackknife_pooled_over_kept_frames() -> None:
    """The estimate is the larger of covariance and jackknife; the jackknife's square is
    averaged over the kept frames of the window (a region that moved on one frame keeps
    the estimate up afterwards), a frame's own when larger; a pose not kept (another
    object than the one estimated) adds nothing; a reset forgets."""
    rng = np.random.default_rng(7)
    rows, region = _ellipsoid(rng, 600)
    cloud = np.tile([0.0, 0.0, 0.6], (600, 1))
    target = np.array([[0.0, 0.0, -0.06]])
    est = TreEstimator(target, 1.0, 0.08, 0.05)
    calm = _icp(rows, np.zeros(600))
    smile = _icp(rows, np.where(region == 1, 1.5, 0.0))
    base = est.rms_mm(calm, cloud, 600.0, 0.0, tracking=False)[0]
    assert est.rms_mm(calm, cloud, 600.0, 0.0, tracking=False, region=region)[0] == base
    moved = est.rms_mm(smile, cloud, 600.0, 0.0, region=region)[0]
    assert moved > 2 * base
    est.observe(0.0, smile.patient_to_camera)
    after = est.rms_mm(calm, cloud, 600.0, 1 / 30, region=region)[0]
    assert after == pytest.approx(moved / np.sqrt(2), rel=1e-6)  # mean of (moved^2, 0)
    est.observe(1 / 30, np.eye(4))  # not the pose estimated: not pooled
    assert est.rms_mm(calm, cloud, 600.0, 2 / 30, region=region)[0] == pytest.approx(after)
    est.reset()
    assert est.rms_mm(calm, cloud, 600.0, 3 / 30, region=region)[0] == pytest.approx(base)
