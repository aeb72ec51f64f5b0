"""The registration's compiled kernels against the numpy code they replaced (kept here as
the reference), on the synthetic face and on random input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge import geometry
from edge.camera import Intrinsics
from edge.errors import RegistrationError
from edge.frames import Frame, PixelFormat
from edge.registration import check_kernels, kernels
from edge.registration.cloud import REGION_NAMES, drape_coloured, face_pixels, region_cloud
from edge.registration.icp import SkinModel, icp_point_to_plane
from edge.registration.landmarks import RIGID_REGIONS
from edge.registration.paired_point import rigid_transform
from edge.registration.quality import (
    pose_difference,
    region_jackknife_tre_mm,
    relief_mm,
    surface_tre_mm,
    systematic_residual_mm,
)
from support import synthetic_face as syn

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def skin() -> SkinModel:
    return SkinModel.from_mesh(syn.face_mesh())


@pytest.fixture(scope="module")
def cloud_and_truth(skin):
    """Skin samples seen by a camera at the true pose, with 0.5 mm noise along z."""
    truth = syn.pose_from(np.array([5.0, 10.0, 0.0]), np.array([0.01, 0.0, 0.0]), syn.facing_pose())
    pick = RNG.choice(len(skin.points_m), 600, replace=False)
    cloud = geometry.apply(truth, skin.points_m[pick])
    cloud[:, 2] += RNG.normal(0.0, 0.0005, len(cloud))
    return np.ascontiguousarray(cloud), truth


def reference_grid_iterations(model, pts, camera_to_patient, gate, max_iterations=6):
    """The numpy ICP loop with the grid's correspondences, as it was before the kernel."""
    grid = model.grid
    for iterations in range(1, max_iterations + 1):
        X = geometry.apply(camera_to_patient, pts)
        ijk = ((X - grid.origin_m) / grid.cell_m).astype(np.int64)
        flat = np.ravel_multi_index(ijk.T, grid.index.shape, mode="clip")
        idx = grid.index.ravel()[flat].astype(np.int64)
        found = np.flatnonzero(idx >= 0)
        dist = np.linalg.norm(X[found] - model.points_m[idx[found]], axis=1)
        near = dist <= gate
        keep, d_m = found[near], dist[near]
        Xm, sample = X[keep], idx[keep]
        q, n = model.points_m[sample], model.normals[sample]
        n *= np.sign(np.einsum("ij,ij->i", camera_to_patient[:3, 3] - q, n))[:, None]
        r = np.einsum("ij,ij->i", Xm - q, n)
        front = r > max(4e-3, 0.5 * gate)
        sigma = 1.4826 * float(np.median(np.abs(r)))
        c = max(4.685 * sigma, 1.5e-3)
        u = r / c
        w = np.where((np.abs(u) < 1.0) & ~front, (1.0 - u * u) ** 2, 0.0)
        centre = Xm.mean(axis=0)
        J = np.concatenate([np.cross(Xm - centre, n), n], axis=1)
        Jw = J * w[:, None]
        delta = -np.linalg.solve(Jw.T @ J + 1e-12 * np.eye(6), Jw.T @ r)
        R = geometry.rotation_vector_to_matrix(delta[:3])
        inc = np.eye(4)
        inc[:3, :3] = R
        inc[:3, 3] = centre - R @ centre + delta[3:]
        camera_to_patient = inc @ camera_to_patient
        gate = max(4e-3, min(gate, 3.0 * float(np.median(d_m))))
        if np.linalg.norm(delta[3:]) < 1e-5 and np.linalg.norm(delta[:3]) < math.radians(0.01):
            return camera_to_patient, iterations
    return camera_to_patient, max_iterations


def test_icp_loop_moves_as_the_numpy_loop_did(skin, cloud_and_truth):
    cloud, truth = cloud_and_truth
    start = syn.pose_from(np.array([2.0, -3.0, 1.0]), np.array([0.002, -0.001, 0.001]), truth)
    want, want_iterations = reference_grid_iterations(skin, cloud, geometry.invert(start), 10e-3)
    got = np.array(geometry.invert(start), order="C")
    code, iterations, converged, _ = kernels.icp_grid_loop(
        cloud,
        got,
        skin.grid.index,
        skin.grid.origin_m,
        skin.grid.cell_m,
        skin.points_m,
        skin.normals,
        6,
        10e-3,
        4e-3,
        4e-3,
        1.5e-3,
        1e-5,
        math.radians(0.01),
    )
    assert code == kernels.ICP_OK and iterations == want_iterations and converged == 1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # And the whole fit lands on the truth.
    fit = icp_point_to_plane(skin, cloud, start, initial_gate_mm=10.0)
    assert np.linalg.norm(fit.patient_to_camera[:3, 3] - truth[:3, 3]) < 0.3e-3


def test_icp_loop_reports_too_few_correspondences(skin, cloud_and_truth):
    cloud, truth = cloud_and_truth
    far = np.array(geometry.invert(truth), order="C")
    far[:3, 3] += 1.0  # a metre off: no grid cell answers
    code, _, found, _ = kernels.icp_grid_loop(
        cloud, far, skin.grid.index, skin.grid.origin_m, skin.grid.cell_m, skin.points_m,
        skin.normals, 6, 10e-3, 4e-3, 4e-3, 1.5e-3, 1e-5, 1e-4,
    )  # fmt: skip
    assert code == kernels.ICP_TOO_FEW and found == 0


def test_grid_lookup_and_final_residuals_match_numpy(skin, cloud_and_truth):
    cloud, truth = cloud_and_truth
    X = np.ascontiguousarray(geometry.apply(geometry.invert(truth), cloud))
    X[:5] += 0.2  # outside the grid: clipped onto its -1 border
    grid = skin.grid
    ijk = ((X - grid.origin_m) / grid.cell_m).astype(np.int64)
    want_idx = grid.index.ravel()[np.ravel_multi_index(ijk.T, grid.index.shape, mode="clip")]
    idx = grid.lookup(X)
    np.testing.assert_array_equal(idx, want_idx)
    assert (idx[:5] == -1).all()
    idx[idx < 0] = skin.tree.query(X[idx < 0])[1]
    eye = np.ascontiguousarray(geometry.invert(truth)[:3, 3])
    s_mm, toward, inlier, visible, n_in, rms = kernels.surface_residuals(
        X, idx, skin.points_m, skin.normals, eye, 4e-3, 2.5e-3, 2.5e-3 + 0.004
    )
    q, n = skin.points_m[idx], skin.normals[idx]
    want_toward = np.sign(np.einsum("ij,ij->i", eye - q, n))[:, None] * n
    want_s = np.einsum("ij,ij->i", X - q, want_toward)
    d = np.linalg.norm(X - q, axis=1)
    tangential = np.sqrt(np.maximum(d * d - want_s * want_s, 0.0))
    want_occ = want_s > 4e-3
    want_in = (np.abs(want_s) < 2.5e-3) & (tangential < 2.5e-3 + 0.004) & ~want_occ
    np.testing.assert_allclose(s_mm, np.where(want_occ, np.nan, want_s * 1e3), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(toward, want_toward)
    np.testing.assert_array_equal(inlier, want_in)
    assert (visible, n_in) == ((~want_occ).sum(), want_in.sum())
    assert rms == pytest.approx(np.sqrt(np.mean(want_s[want_in] ** 2)), rel=1e-12)
    moved, looked_up = kernels.to_patient_lookup(
        np.ascontiguousarray(cloud), geometry.invert(truth), grid.index, grid.origin_m, grid.cell_m
    )
    np.testing.assert_allclose(moved[5:], X[5:], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(looked_up[5:], grid.lookup(moved)[5:])
    assert want_in.sum() > 500 and want_occ[:5].any()
    rows, centre, normal_matrix = kernels.inlier_rows(X, toward, inlier)
    want_centre = X[inlier].mean(axis=0)
    a_mm = (X[inlier] - want_centre) * 1e3
    want_rows = np.concatenate([np.cross(a_mm, toward[inlier]), toward[inlier]], axis=1)
    np.testing.assert_allclose(centre, want_centre, rtol=0, atol=1e-15)
    np.testing.assert_allclose(rows, want_rows, rtol=0, atol=1e-12)
    np.testing.assert_allclose(normal_matrix, want_rows.T @ want_rows, rtol=1e-12, atol=1e-9)


def test_solve6_solves_and_refuses_a_singular_matrix():
    a = RNG.normal(size=(6, 6))
    b = RNG.normal(size=6)
    x = b.copy()
    assert kernels.solve6(a.copy(), x)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)
    singular = a.copy()
    singular[5] = 0.0
    assert not kernels.solve6(singular, b.copy())


def reference_systematic(P, r, points_per_cell=8, min_count=4, clip=5.0, beyond=8.0):
    ok = np.isfinite(r) & (np.abs(r) <= beyond)
    if ok.sum() < min_count * 5:
        return math.nan
    xy = P[ok, :2]
    cell = float(
        np.clip(np.sqrt(np.prod(np.ptp(xy, axis=0)) * points_per_cell / ok.sum()), 0.01, 0.03)
    )
    cells = np.floor(xy / cell).astype(np.int64)
    _, label = np.unique(cells, axis=0, return_inverse=True)
    count = np.bincount(label)
    total = np.bincount(label, weights=np.clip(r[ok], -clip, clip))
    full = count >= min_count
    if full.sum() < 5:
        return math.nan
    return float(np.sqrt(np.mean((total[full] / count[full]) ** 2)))


@pytest.mark.parametrize("seed", range(4))
def test_surface_shape_cells_match_numpy(seed):
    rng = np.random.default_rng(seed)
    P = np.column_stack(
        [
            rng.uniform(-0.08, 0.07, 500),
            rng.uniform(-0.1, 0.09, 500),
            0.5 + rng.normal(0, 0.01, 500),
        ]
    )
    r = rng.normal(0.0, 1.5, 500) + 0.8 * np.sin(P[:, 0] * 60)
    r[rng.choice(500, 40, replace=False)] = np.nan
    r[:10] = 20.0  # beyond: ignored
    want = reference_systematic(P, r)
    assert math.isfinite(want)
    assert systematic_residual_mm(P, r) == pytest.approx(want, rel=1e-12)
    assert math.isnan(systematic_residual_mm(P[:15], r[:15]))  # too few points
    with pytest.raises(ValueError, match="do not pair"):
        systematic_residual_mm(P, r[:200])


def reference_jackknife(R, r, labels, centre, targets, min_points=20):
    counts = np.bincount(labels)
    blocks = [k for k in range(len(counts)) if counts[k] >= min_points]
    if len(blocks) < 3:
        return np.full(len(targets), math.nan)
    A, g = R.T @ R, R.T @ r
    D = np.stack(
        [
            -np.linalg.solve(
                A - R[labels == k].T @ R[labels == k], g - R[labels == k].T @ r[labels == k]
            )
            for k in blocks
        ]
    )
    D -= D.mean(axis=0)
    P = (targets - centre) * 1e3
    shifts = np.cross(D[None, :, :3], P[:, None, :]) + D[None, :, 3:]  # omega x p + v
    return np.sqrt((len(blocks) - 1) / len(blocks) * (shifts**2).sum(axis=(1, 2)))


def test_region_jackknife_and_covariance_match_numpy():
    n = 400
    a = RNG.normal(0, 30, (n, 3))
    normals = RNG.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    R = np.concatenate([np.cross(a, normals), normals], axis=1)
    r = RNG.normal(0, 0.4, n)
    labels = RNG.integers(0, 6, n)
    labels[labels == 3] = 4  # a gap in the labels: region 3 empty
    labels[:300][labels[:300] == 0] = 1  # region 0 below min_points: never left out
    centre = np.array([0.01, -0.02, 0.5])
    targets = centre + RNG.normal(0, 0.05, (3, 3))
    got = region_jackknife_tre_mm(R, r, labels, centre, targets, 20)
    np.testing.assert_allclose(got, reference_jackknife(R, r, labels, centre, targets), rtol=1e-9)
    assert np.isnan(region_jackknife_tre_mm(R, r, np.minimum(labels, 1), centre, targets)).all()
    # Leaving out the only region with normals along z leaves the pose unconstrained: inf.
    flat = R.copy()
    flat[labels != 4, 5] = 0.0  # no other region constrains z
    flat[labels != 4, 0:2] = 0.0  # nor the tilts that move points along z
    assert np.isinf(region_jackknife_tre_mm(flat, r, labels, centre, targets, 20)).all()
    with pytest.raises(ValueError, match="must be"):
        region_jackknife_tre_mm(R, r[:-1], labels, centre, targets)
    with pytest.raises(ValueError, match="negative"):
        region_jackknife_tre_mm(R, r, labels - 1, centre, targets)

    A = R.T @ R
    cov = 0.3**2 * np.linalg.inv(A)
    P = (targets - centre) * 1e3
    want = []
    for p in P:
        J = np.hstack([-geometry.skew(p), np.eye(3)])
        want.append(math.sqrt(np.trace(J @ cov @ J.T)))
    np.testing.assert_allclose(surface_tre_mm(A, centre, 0.3, targets), want, rtol=1e-9)
    singular = A.copy()
    singular[:, 0] = singular[0, :] = 0.0
    assert np.isinf(surface_tre_mm(singular, centre, 0.3, targets)).all()


def reference_region_cloud(frame, lm, pix, bias_m, chroma):
    """region_cloud after sampling, in numpy: nearest centre, depth, drape test, lift."""
    centres = lm[[RIGID_REGIONS[name] for name in REGION_NAMES]]
    d2 = ((pix[:, None, :] - centres[None]) ** 2).sum(axis=2)
    region = np.argmin(np.where(np.isnan(d2), np.inf, d2), axis=1)
    depth = frame.depth[pix[:, 1], pix[:, 0]]
    rgb = frame.color[pix[:, 1], pix[:, 0]].astype(np.float32)
    if frame.color_format is PixelFormat.BGR8:
        rgb = rgb[:, ::-1]
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b  # float32, as the kernel computes it
    covered = 0.564 * (b - y) - 0.713 * (r - y) > chroma
    assert covered.dtype == np.bool_ and y.dtype == np.float32
    np.testing.assert_array_equal(
        drape_coloured(frame.color, frame.color_format, pix, chroma), covered
    )
    ok = (depth > 0) & ~covered
    z = depth[ok].astype(np.float64) * frame.depth_scale_m - bias_m
    points = frame.intrinsics.deproject(pix[ok].astype(np.float64), z)
    per_region = np.bincount(region, minlength=len(REGION_NAMES))
    return points, region[ok], per_region, int(covered.sum())


@pytest.mark.parametrize("fmt", [PixelFormat.RGB8, PixelFormat.BGR8])
def test_region_cloud_lifts_labels_and_leaves_drapes_out_as_numpy_does(fmt):
    rng = np.random.default_rng(3)
    color = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = rng.integers(300, 900, (480, 640), dtype=np.uint16)
    depth[rng.random((480, 640)) < 0.2] = 0  # holes
    depth.flags.writeable = False  # as a recording's frame is
    intr = Intrinsics(640, 480, 610.0, 612.0, 318.5, 241.5)
    frame = Frame(0, color, fmt, depth, 0.001, intr)
    lm = rng.uniform(-40, 680, (468, 2))  # some landmarks off the image
    lm[RIGID_REGIONS["forehead"]] = np.nan  # a centre not tracked never wins
    pix = face_pixels(lm, 640, 480, 900)
    assert len(pix) > 50 and (pix >= 0).all() and (pix[:, 0] < 640).all()
    got = region_cloud(frame, lm, 900, 0.004, None, 8.0)
    want = reference_region_cloud(frame, lm, pix, 0.004, 8.0)
    np.testing.assert_array_equal(got.points_m, want[0])
    np.testing.assert_array_equal(got.region, want[1])
    np.testing.assert_array_equal(got.sampled_per_region, want[2])
    assert (got.drape_pixels, got.sampled) == (want[3], len(pix))
    assert 0 < got.drape_pixels < len(pix)
    assert (got.region != list(REGION_NAMES).index("forehead")).all()
    bare = region_cloud(frame, lm, 900)  # no drape test: only the holes are left out
    assert bare.drape_pixels == 0
    assert len(bare.points_m) == int((depth[pix[:, 1], pix[:, 0]] > 0).sum())


def test_weighted_rigid_fit_matches_the_svd_solution():
    source = RNG.normal(0, 0.05, (10, 3))
    truth = syn.pose_from(np.array([3.0, -2.0, 500.0]), np.array([0.2, -0.1, 0.3]), np.eye(4))
    target = geometry.apply(truth, source) + RNG.normal(0, 0.001, (10, 3))
    w = RNG.uniform(0.5, 1.0, 10)
    fit = rigid_transform(source, target, w)
    # Umeyama with weights, by numpy.
    wn = w / w.sum()
    cs, ct = wn @ source, wn @ target
    U, _, Vt = np.linalg.svd((source - cs).T @ ((target - ct) * wn[:, None]))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    np.testing.assert_allclose(fit.source_to_target[:3, :3], R, atol=1e-12)
    np.testing.assert_allclose(fit.source_to_target[:3, 3], ct - R @ cs, atol=1e-12)
    want_res = np.linalg.norm(source @ R.T + (ct - R @ cs) - target, axis=1) * 1e3
    np.testing.assert_allclose(fit.residuals_mm, want_res, atol=1e-9)


def test_weighted_rigid_fit_never_reflects_and_refuses_collinear_counted_pairs():
    # Nearly flat pairs whose least-squares orthogonal map is a reflection (det < 0).
    source = np.array([[0, 0, 0], [0.05, 0, 0], [0, 0.05, 0], [0.05, 0.05, 0.0001]], float)
    target = source * [1.0, 1.0, -1.0]
    fit = rigid_transform(source, target)
    assert np.linalg.det(fit.source_to_target[:3, :3]) == pytest.approx(1.0)
    # Three collinear pairs count; a fourth, off the line, has weight 0.
    line = np.array([[0, 0, 0], [0.01, 0, 0], [0.02, 0, 0], [0, 0.03, 0.01]], float)
    with pytest.raises(RegistrationError, match="collinear"):
        rigid_transform(line, line, np.array([1.0, 1.0, 1.0, 0.0]))


def test_the_grid_path_converts_degrees_and_names_too_few_correspondences(skin, cloud_and_truth):
    cloud, truth = cloud_and_truth
    start = syn.pose_from(np.array([2.0, -3.0, 1.0]), np.array([0.002, -0.001, 0.001]), truth)
    # tolerance_deg 0.01 (1.7e-4 rad): the kernel must stop where the numpy loop did.
    want, want_iterations = reference_grid_iterations(skin, cloud, geometry.invert(start), 10e-3)
    fit = icp_point_to_plane(skin, cloud, start, initial_gate_mm=10.0, max_iterations=6,
                             tolerance_mm=0.01, tolerance_deg=0.01)  # fmt: skip
    assert fit.iterations == want_iterations
    np.testing.assert_allclose(fit.patient_to_camera, geometry.invert(want), atol=1e-12)
    far = truth.copy()
    far[:3, 3] += 1.0
    with pytest.raises(RegistrationError, match="found 0 skin correspondences within 10 mm"):
        icp_point_to_plane(skin, cloud, far, initial_gate_mm=10.0)


def test_kernel_inputs_may_be_read_only(skin, cloud_and_truth):
    cloud, truth = cloud_and_truth
    frozen = cloud.copy()
    frozen.flags.writeable = False
    fit = icp_point_to_plane(skin, frozen, truth, initial_gate_mm=10.0)
    assert fit.inlier_fraction > 0.9


def test_pose_difference_relief_and_extrapolation_match_numpy():
    a = syn.pose_from(np.array([3.0, -2.0, 500.0]), np.array([0.2, -0.1, 0.3]), np.eye(4))
    c = syn.pose_from(np.array([1.0, 4.0, 2.0]), np.array([0.01, 0.02, -0.03]), a)
    at = np.array([0.01, 0.05, 0.5])
    moved = np.linalg.norm((a[:3, :3] - c[:3, :3]) @ at + a[:3, 3] - c[:3, 3]) * 1e3
    turned = geometry.rotation_angle_deg(a[:3, :3].T @ c[:3, :3])
    assert pose_difference(a, c, at) == pytest.approx((moved, turned), rel=1e-12)
    assert pose_difference(a, a, at) == (0.0, 0.0)
    cloud = RNG.normal(0, 1, (400, 3)) * [0.05, 0.04, 0.006] + [0.0, 0.0, 0.5]
    centred = cloud - cloud.mean(axis=0)
    want = np.sqrt(np.linalg.eigvalsh(centred.T @ centred)[0] / len(cloud)) * 1e3
    assert relief_mm(cloud) == pytest.approx(want, rel=1e-9)
    assert relief_mm(cloud[:, [0, 1, 1]]) == pytest.approx(0.0, abs=1e-6)  # a plane
    assert relief_mm(cloud[:2]) == 0.0
    # The warm start: the motion from before to last, scaled, applied to last.
    for alpha in (0.0, 0.5, 1.0, 2.5):
        delta = c @ geometry.invert(a)
        axis, angle = geometry.matrix_to_axis_angle(delta[:3, :3])
        step = np.eye(4)
        step[:3, :3] = geometry.axis_angle_to_matrix(axis, angle * alpha)
        step[:3, 3] = delta[:3, 3] * alpha
        got = check_kernels.extrapolate_pose(a, c, alpha)
        np.testing.assert_allclose(got, step @ c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(check_kernels.extrapolate_pose(c, c, 2.0), c, rtol=0, atol=1e-15)


def test_tre_window_kernels_match_numpy():
    """The jackknife's pooled mean square and the between-frame median, with rows not
    measured (NaN) and unconstrained (inf), as the numpy of tre.py had them."""
    rows = RNG.uniform(0.0, 2.0, (15, 3))
    rows[2, 1] = rows[7, 0] = np.nan
    rows[4, 2] = np.inf
    now = np.array([0.5, np.nan, 1.5])
    fit = np.array([0.2, 3.0, np.nan])
    pooled = np.vstack([rows, now])
    seen = ~np.isnan(pooled)
    mean_sq = np.where(seen, pooled, 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
    want = np.fmax(fit, np.sqrt(np.fmax(mean_sq, now)))
    np.testing.assert_allclose(check_kernels.pooled_fit(fit, rows, now), want, rtol=1e-14)
    unseen = np.full(3, np.nan)
    got = check_kernels.pooled_fit(fit, np.full((2, 3), np.nan), unseen)
    np.testing.assert_array_equal(got, fit)  # nothing measured: the fit as it is
    finite = np.isfinite(pooled).all(axis=1)
    np.testing.assert_allclose(
        check_kernels.finite_rows_median(rows, np.array([0.5, 0.7, 1.5])),
        np.median(np.vstack([rows, [0.5, 0.7, 1.5]])[np.append(finite[:-1], True)], axis=0),
        rtol=1e-15,
    )
    none = check_kernels.finite_rows_median(np.full((3, 2), np.nan), np.array([np.inf, 1.0]))
    np.testing.assert_array_equal(none, [0.0, 0.0])


def test_extrapolation_disagreement_and_median_depth_match_numpy():
    targets = np.ascontiguousarray(RNG.normal(0, 0.05, (3, 3)))
    times = np.array([0.0, 0.04, 0.07])
    earlier = [np.ascontiguousarray(RNG.normal(0, 0.05, (3, 3))) for _ in times]
    pose = syn.pose_from(np.array([3.0, -2.0, 500.0]), np.array([0.2, -0.1, 0.3]), np.eye(4))
    now = 0.1
    w = [
        np.prod([(now - tj) / (ti - tj) for j, tj in enumerate(times) if j != i])
        for i, ti in enumerate(times)
    ]
    predicted = sum(wi * p for wi, p in zip(w, earlier, strict=True))
    d2 = ((geometry.apply(pose, targets) - predicted) ** 2).sum(axis=1) * 1e6
    got = check_kernels.extrapolation_disagreement(times, *earlier, now, pose, targets)
    np.testing.assert_allclose(got, d2 / (1 + sum(wi * wi for wi in w)), rtol=1e-12)
    cloud = RNG.normal(0, 1, (8, 3))
    assert check_kernels.median_depth(cloud) == np.median(cloud[:, 2])
    assert check_kernels.median_depth(cloud[:7].copy()) == np.median(cloud[:7, 2])


def reference_face_pixels(lm, width, height, max_points, hull_rows):
    """face_pixels in numpy and OpenCV, as it was written before its kernels."""
    import cv2

    from edge.registration.landmarks import (
        EYE_LEFT_CONTOUR,
        EYE_RIGHT_CONTOUR,
        LIPS_OUTER_CONTOUR,
    )

    full = lm[:, :2]
    pts = full[list(hull_rows)]
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    area = float(cv2.contourArea(hull.astype(np.float32)))
    u0, v0 = np.floor(hull.min(axis=0)).astype(int)
    u1, v1 = np.ceil(hull.max(axis=0)).astype(int)
    stride = max(1, int(np.sqrt(area / max_points * 1.25)))
    mask = np.zeros(((v1 - v0) // stride + 1, (u1 - u0) // stride + 1), np.uint8)

    def cells(poly):
        return np.rint((poly - [u0, v0]) / stride).astype(np.int32).reshape(-1, 1, 2)

    cv2.fillPoly(mask, [cells(hull)], 1)
    for contour, grown in (
        (EYE_RIGHT_CONTOUR, 1.5),
        (EYE_LEFT_CONTOUR, 1.5),
        (LIPS_OUTER_CONTOUR, 1.3),
    ):
        poly = full[list(contour)]
        c = poly.mean(axis=0)
        cv2.fillPoly(mask, [cells(c + (poly - c) * grown)], 0)
    r, c = np.nonzero(mask)
    u, v = u0 + c * stride, v0 + r * stride
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return np.stack([u[inside], v[inside]], axis=1)


def face_like_landmarks(rng):
    """468 landmarks in a face's box, the eye and lip contours ellipses where a face has
    them (so that their holes are cut)."""
    from edge.registration.landmarks import (
        EYE_LEFT_CONTOUR,
        EYE_RIGHT_CONTOUR,
        LIPS_OUTER_CONTOUR,
    )

    lm = np.column_stack([rng.uniform(200, 440, 468), rng.uniform(120, 400, 468)])
    for rows, (cu, cv, ru, rv) in (
        (EYE_RIGHT_CONTOUR, (270.3, 220.6, 25.0, 9.0)),
        (EYE_LEFT_CONTOUR, (370.1, 221.2, 24.0, 10.0)),
        (LIPS_OUTER_CONTOUR, (320.4, 330.7, 40.0, 15.0)),
    ):
        angle = np.linspace(0, 2 * np.pi, len(rows), endpoint=False)
        lm[list(rows)] = np.column_stack([cu + ru * np.cos(angle), cv + rv * np.sin(angle)])
    return lm


@pytest.mark.parametrize("shift", [(0.0, 0.0), (-250.0, 37.3), (180.5, -200.25)])
def test_face_pixels_match_the_numpy_rasterisation(shift):
    from edge.registration.landmarks import EYE_LEFT_CONTOUR, RIGID_FACE_HULL

    lm = face_like_landmarks(np.random.default_rng(5)) + shift  # partly off the image
    for hull in (RIGID_FACE_HULL, range(len(lm))):
        for points in (300, 700, 5000):
            want = reference_face_pixels(lm, 640, 480, points, hull)
            np.testing.assert_array_equal(face_pixels(lm, 640, 480, points, list(hull)), want)
    whole = face_pixels(lm, 640, 480, 2000)
    lm[EYE_LEFT_CONTOUR[0]] = np.nan  # an eye not tracked: no hole is cut for it
    holed = face_pixels(lm, 640, 480, 2000)
    assert set(map(tuple, whole.tolist())) < set(map(tuple, holed.tolist()))


@pytest.mark.parametrize("n", [3, 4])
def test_symmetric_eigen_matches_numpy(n):
    for trial in range(50):
        m = RNG.normal(0, 10.0 ** RNG.integers(-6, 4), (n, n))
        a = m + m.T
        if trial % 10 == 0:
            a = np.diag(RNG.normal(size=n))  # already diagonal
        if trial % 10 == 1:
            a = np.eye(n) * 2.0  # repeated eigenvalues
        want_values = np.linalg.eigvalsh(a)
        vectors = np.empty((n, n))
        values = kernels.symmetric_eigen(a.copy(), vectors)
        scale = max(np.abs(want_values).max(), 1e-300)
        np.testing.assert_allclose(values, want_values, rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(vectors.T @ vectors, np.eye(n), atol=1e-13)
        np.testing.assert_allclose(a @ vectors, vectors * values, atol=1e-12 * scale)


def test_drape_test_at_image_points_rounds_and_clips_as_numpy():
    color = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    points = RNG.uniform(-10, 80, (200, 2))
    points[:4] = [[10.5, 3.5], [11.5, 4.5], [63.4, 47.6], [-0.5, 0.49]]  # halves to even
    pix = np.clip(np.rint(points), 0, [63, 47]).astype(np.int64)
    for fmt in (PixelFormat.RGB8, PixelFormat.BGR8):
        want = drape_coloured(color, fmt, pix, 4.0)
        np.testing.assert_array_equal(drape_coloured(color, fmt, points, 4.0), want)
    points[5] = np.nan
    assert not drape_coloured(color, PixelFormat.RGB8, points, -1e9)[5]


def reference_face_pixels_checked(lm, width, height, max_points, hull_rows=None):
    """face_pixels as it was before its grid kernel: the finite filter, the hull's area
    gate, and a hole skipped when one of its vertices is not finite."""
    import cv2

    from edge.registration.landmarks import (
        EYE_LEFT_CONTOUR,
        EYE_RIGHT_CONTOUR,
        LIPS_OUTER_CONTOUR,
    )

    full = np.asarray(lm, dtype=np.float64)[:, :2]
    pts = full[list(hull_rows)] if hull_rows is not None and len(full) > max(hull_rows) else full
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 3:
        return np.zeros((0, 2), np.int64)
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    area = float(cv2.contourArea(hull.astype(np.float32)))
    if area < 1.0:
        return np.zeros((0, 2), np.int64)
    u0, v0 = np.floor(hull.min(axis=0)).astype(int)
    u1, v1 = np.ceil(hull.max(axis=0)).astype(int)
    stride = max(1, int(np.sqrt(area / max(max_points, 1) * 1.25)))
    mask = np.zeros(((v1 - v0) // stride + 1, (u1 - u0) // stride + 1), np.uint8)

    def cells(poly):
        return np.rint((poly - [u0, v0]) / stride).astype(np.int32).reshape(-1, 1, 2)

    cv2.fillPoly(mask, [cells(hull)], 1)
    if len(full) > max(max(EYE_RIGHT_CONTOUR), max(EYE_LEFT_CONTOUR), max(LIPS_OUTER_CONTOUR)):
        for contour, grown in (
            (EYE_RIGHT_CONTOUR, 1.5),
            (EYE_LEFT_CONTOUR, 1.5),
            (LIPS_OUTER_CONTOUR, 1.3),
        ):
            poly = full[list(contour)]
            if np.isfinite(poly).all():
                c = poly.mean(axis=0)
                cv2.fillPoly(mask, [cells(c + (poly - c) * grown)], 0)
    r, c = np.nonzero(mask)
    u, v = u0 + c * stride, v0 + r * stride
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return np.stack([u[inside], v[inside]], axis=1).astype(np.int64)


def test_face_pixels_kernels_match_numpy_on_edge_cases():
    from edge.registration.landmarks import EYE_RIGHT_CONTOUR, LIPS_OUTER_CONTOUR, RIGID_FACE_HULL

    rng = np.random.default_rng(11)
    base = np.column_stack([face_like_landmarks(rng), rng.uniform(0.3, 0.5, 468)])  # (468, 3)
    hull = list(RIGID_FACE_HULL)
    cases = []
    for trial in range(40):
        lm = base.copy()
        lm[:, :2] += rng.normal(0, 30, 2)
        nan_rows = rng.choice(468, int(rng.integers(0, 60)), replace=False)
        lm[nan_rows, int(rng.integers(0, 2))] = np.nan if trial % 2 else np.inf
        cases.append((lm, RIGID_FACE_HULL if trial % 3 else None))
    nan_hull = base.copy()
    nan_hull[hull[:5]] = np.nan  # some hull landmarks not tracked
    nan_hull[EYE_RIGHT_CONTOUR[3]] = np.nan  # and an eye: no hole for it
    cases.append((nan_hull, RIGID_FACE_HULL))
    few = base.copy()
    few[hull[2:]] = np.nan  # two finite hull points: no region
    cases.append((few, RIGID_FACE_HULL))
    flat = base.copy()
    flat[hull, 1] = 250.0  # a hull of no area
    cases.append((flat, RIGID_FACE_HULL))
    away = base + np.array([2000.0, -3000.0, 0.0])  # the face off the image
    cases.append((away, RIGID_FACE_HULL))
    cases.append((base + np.array([-180.25, 0.5, 0.0]), RIGID_FACE_HULL))  # partly off it
    cases.append((np.asfortranarray(base), hull))  # not C-contiguous, and a list of rows
    cases.append((base[:, :2].copy(), tuple(range(-10, 400))))  # (N, 2), negative rows
    cases.append((base[:300], RIGID_FACE_HULL))  # rows beyond the landmarks: the whole hull
    lips = base.copy()
    lips[list(LIPS_OUTER_CONTOUR)] = lips[LIPS_OUTER_CONTOUR[0]]  # a hole of one point
    cases.append((lips, RIGID_FACE_HULL))
    read_only = base.copy()
    read_only.flags.writeable = False
    cases.append((read_only, RIGID_FACE_HULL))
    for lm, rows in cases:
        for points in (1, 600, 5000):
            want = reference_face_pixels_checked(lm, 640, 480, points, rows)
            got = face_pixels(lm, 640, 480, points, rows)
            assert got.dtype == np.int64 and got.shape[1] == 2
            np.testing.assert_array_equal(got, want)
    assert len(face_pixels(few, 640, 480, 600, RIGID_FACE_HULL)) == 0
    assert len(face_pixels(away, 640, 480, 600, RIGID_FACE_HULL)) == 0
    with pytest.raises(IndexError):
        face_pixels(base, 640, 480, 600, (0, 1, -469))
    with pytest.raises(ValueError):
        face_pixels(base[:, :1], 640, 480, 600)
    with pytest.raises(IndexError, match="integers"):  # numpy refused float rows too
        face_pixels(base, 640, 480, 600, tuple(float(r) for r in RIGID_FACE_HULL))
    huge = base.copy()
    huge[hull[3], 0] = 1e39  # finite, but not as float32: left out as a NaN would be
    untracked = base.copy()
    untracked[hull[3], 0] = np.nan
    np.testing.assert_array_equal(
        face_pixels(huge, 640, 480, 600, RIGID_FACE_HULL),
        face_pixels(untracked, 640, 480, 600, RIGID_FACE_HULL),
    )


def test_skin_depth_correction_matches_numpy():
    from edge.registration.cloud import correct_skin_depth

    p = RNG.normal(0, 0.3, (200, 3))
    p[:5, 2] = [0.0, -0.2, np.nan, np.inf, 1e-300]
    for points in (p, np.asfortranarray(p), np.column_stack([p, p[:, :1]]), p[:, [0, 1, 2, 0]]):
        for bias in (0.004, -0.002, np.float32(0.003)):
            z = points[:, 2:3]
            with np.errstate(invalid="ignore"):  # inf / inf is NaN, in the kernel too
                want = points * ((z - bias) / np.where(z > 0, z, 1.0))
            np.testing.assert_array_equal(correct_skin_depth(points, bias), want)
    assert correct_skin_depth(p, 0.0) is p
    assert correct_skin_depth(np.zeros((0, 3)), 0.01).shape == (0, 3)
