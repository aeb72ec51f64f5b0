"""Paired-point registration and the quality formulas: known answers and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from edge import geometry
from edge.errors import RegistrationError
from edge.registration.landmarks import LANDMARK_INDEX
from edge.registration.paired_point import LandmarkPairs, rigid_transform, robust_rigid_transform
from edge.registration.quality import (
    fitzpatrick_tre_mm,
    fle_from_fre_mm,
    pose_difference,
    relief_mm,
)
from support.synthetic_face import TARGETS, face_landmarks_m

LANDMARKS = np.stack(list(face_landmarks_m().values()))


def _transform(rotvec: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


@settings(max_examples=40, deadline=None)
@given(
    rotvec=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    t=st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3),
)
def test_known_transform_recovered_exactly(rotvec, t) -> None:
    T = _transform(np.array(rotvec), np.array(t))
    fit = rigid_transform(LANDMARKS, geometry.apply(T, LANDMARKS))
    np.testing.assert_allclose(fit.source_to_target, T, atol=1e-9)
    assert fit.fre_mm < 1e-6
    robust = robust_rigid_transform(LANDMARKS, geometry.apply(T, LANDMARKS))
    np.testing.assert_allclose(robust.source_to_target, T, atol=1e-9)


def test_noise_within_bounds() -> None:
    rng = np.random.default_rng(3)
    T = _transform(np.array([0.3, -0.2, 0.5]), np.array([0.01, 0.02, 0.5]))
    targets = np.array(list(TARGETS.values()))
    errors, fres = [], []
    for _ in range(300):
        noisy = geometry.apply(T, LANDMARKS) + rng.normal(0, 1e-3 / np.sqrt(3), LANDMARKS.shape)
        fit = rigid_transform(LANDMARKS, noisy)
        errors.append(
            np.linalg.norm(
                geometry.apply(fit.source_to_target, targets) - geometry.apply(T, targets), axis=1
            )
        )
        fres.append(fit.fre_mm)
    # FLE 1 mm RMS (3-D): expected FRE = sqrt(1 - 2/N) mm (Fitzpatrick 1998, eq. 10).
    n = len(LANDMARKS)
    assert np.sqrt(np.mean(np.square(fres))) == pytest.approx(np.sqrt(1 - 2 / n), rel=0.05)
    # The RMS TRE over trials matches the Fitzpatrick prediction within 10 %.
    predicted = fitzpatrick_tre_mm(LANDMARKS, targets, 1.0)
    measured = np.sqrt(np.mean(np.square(np.array(errors) * 1000), axis=0))
    np.testing.assert_allclose(measured, predicted, rtol=0.1)


def test_robust_fit_rejects_outliers() -> None:
    T = _transform(np.array([0.1, 0.2, -0.3]), np.array([0.0, 0.05, 0.45]))
    moved = geometry.apply(T, LANDMARKS)
    moved[2] += [0.02, 0.0, 0.0]  # a landmark 20 mm off (a misdetected chin, say)
    moved[7] += [0.0, -0.015, 0.01]
    plain = rigid_transform(LANDMARKS, moved)
    assert plain.fre_mm > 5.0
    robust = robust_rigid_transform(LANDMARKS, moved, inlier_threshold_mm=5.0)
    np.testing.assert_allclose(robust.source_to_target, T, atol=1e-9)
    assert robust.fre_mm < 1e-6
    assert list(np.flatnonzero(~robust.inliers)) == [2, 7]
    assert robust.residuals_mm[2] == pytest.approx(20.0, abs=1e-6)


def test_robust_fit_refuses_when_nothing_agrees() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(RegistrationError, match="agree"):
        robust_rigid_transform(LANDMARKS, rng.normal(0, 0.05, LANDMARKS.shape), 2.0)


@pytest.mark.parametrize(
    "source, target, message",
    [
        (np.zeros((4, 2)), np.zeros((4, 2)), "Nx3"),
        (np.zeros((4, 3)), np.zeros((5, 3)), "same shape"),
        (np.zeros((2, 3)), np.zeros((2, 3)), "at least 3"),
        (np.full((4, 3), np.nan), np.zeros((4, 3)), "NaN"),
        (np.outer(np.arange(5.0), [1, 2, 3]), np.zeros((5, 3)), "collinear"),
    ],
)
def test_bad_input(source, target, message) -> None:
    with pytest.raises(RegistrationError, match=message):
        rigid_transform(source, target)


def test_bad_weights() -> None:
    with pytest.raises(RegistrationError, match="weights"):
        rigid_transform(LANDMARKS, LANDMARKS, weights=np.zeros(len(LANDMARKS)))


def test_landmark_pairs_follow_the_documented_mapping() -> None:
    plan = face_landmarks_m()
    cam = np.full((468, 3), np.nan)
    valid = np.zeros(468, bool)
    for name, index in LANDMARK_INDEX.items():
        cam[index] = plan[name] + 1.0
        valid[index] = True
    valid[LANDMARK_INDEX["pogonion"]] = False
    cam[LANDMARK_INDEX["nasion"]] = np.nan
    names, p, c = LandmarkPairs(plan)(cam, valid)
    assert set(names) == set(LANDMARK_INDEX) - {"pogonion", "nasion"}
    np.testing.assert_allclose(c - p, 1.0)
    names, _, _ = LandmarkPairs(plan, include_mobile=False)(cam, valid)
    assert "cheilion_left" not in names
    assert LandmarkPairs(plan)(None, None)[0] == []


def test_fitzpatrick_formula_known_answer() -> None:
    # Four fiducials on a square of side 2 around the origin (z = 0): at the centroid the
    # TRE is FLE / sqrt(N); on the z-axis at distance d it grows by (1 + d^2/3 (1/f1^2 + 1/f2^2)).
    F = np.array([[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]])
    tre = fitzpatrick_tre_mm(F, np.array([[0.0, 0, 0], [0, 0, 2.0]]), 2.0)
    assert tre[0] == pytest.approx(1.0)
    # axes x and y: f^2 = 1 each (distance of fiducials from the axis in the plane, squared
    # mean = 1); axis z: f^2 = 2. Target (0,0,2): d_x^2 = d_y^2 = 4, d_z^2 = 0.
    assert tre[1] == pytest.approx(np.sqrt(4.0 / 4 * (1 + (4 + 4) / 3)))
    assert fle_from_fre_mm(1.0, 10) == pytest.approx(np.sqrt(10 / 8))
    assert np.isnan(fle_from_fre_mm(1.0, 2))


def test_pose_difference_and_relief() -> None:
    A = _transform(np.zeros(3), np.zeros(3))
    B = _transform(np.array([0.0, 0.0, np.radians(10.0)]), np.array([0.001, 0, 0]))
    mm, deg = pose_difference(A, B, np.zeros(3))
    assert mm == pytest.approx(1.0) and deg == pytest.approx(10.0)
    rng = np.random.default_rng(1)
    flat = np.c_[rng.uniform(-0.1, 0.1, (500, 2)), np.full(500, 0.5)]
    assert relief_mm(flat) < 1e-6
    assert relief_mm(LANDMARKS) > 5.0


def reference_pairs(pairs: LandmarkPairs, cam, valid):
    """LandmarkPairs.__call__ in numpy, as it was before its kernel (rows added)."""
    cam = np.asarray(cam, dtype=np.float64)
    inside = pairs._index < len(cam)
    idx = np.where(inside, pairs._index, 0)
    ok = inside & np.isfinite(cam[idx]).all(axis=1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)[idx]
    names = [n for n, keep in zip(pairs._names, ok, strict=True) if keep]
    return names, pairs._plan_m[ok], cam[idx[ok]], idx[ok]


def test_landmark_pairs_kernel_matches_numpy() -> None:
    plan = face_landmarks_m()
    rng = np.random.default_rng(3)
    pairs = LandmarkPairs(plan)
    for trial in range(60):
        cam = rng.normal(0, 0.1, (468, 3))
        cam[rng.choice(468, int(rng.integers(0, 200)), replace=False), rng.integers(0, 3)] = (
            np.inf if trial % 3 else np.nan
        )
        valid = rng.random(468) < 0.8 if trial % 4 else None
        cases = [(cam, valid), (np.asfortranarray(cam), valid), (cam[:300], valid)]
        cases.append((cam[:, :2].copy(), None))  # other widths are taken as they are
        cases.append((cam, None if valid is None else valid.astype(np.uint8)))
        for c, v in cases:
            want = reference_pairs(pairs, c, v)
            got = pairs.rows(c, v)
            assert got[0] == want[0]
            for g, w in zip(got[1:], want[1:], strict=True):
                np.testing.assert_array_equal(g, w)
                assert g.dtype == w.dtype
            assert pairs(c, v)[0] == want[0]
    with pytest.raises(IndexError):
        pairs(np.zeros((0, 3)), None)  # as numpy indexed it
    with pytest.raises(IndexError):
        pairs(np.zeros((468, 3)), np.ones(100, bool))  # too few flags
    assert pairs.rows(None, None)[3].shape == (0,)


def test_pair_checks_match_numpy() -> None:
    rng = np.random.default_rng(4)
    good = rng.normal(0, 0.05, (6, 3))
    for bad in (np.nan, np.inf, -np.inf):
        for i in range(6):
            s = good.copy()
            s[i, i % 3] = bad
            with pytest.raises(RegistrationError, match="NaN"):
                rigid_transform(s, good)
            with pytest.raises(RegistrationError, match="NaN"):
                rigid_transform(good, s)
    for w in ([1, 1, 1, 1, 1, -1e-300], [0, 0, 0, 0, 0, -0.0], [1, 1, np.nan, 1, 1, 1]):
        with pytest.raises(RegistrationError, match="weights"):
            rigid_transform(good, good, weights=np.array(w, float))
    fit = rigid_transform(good, good, weights=np.array([0, 0, 0, 1e-300, 1, 1.0]))
    assert fit.inliers.tolist() == [False, False, False, True, True, True]
    fit = rigid_transform(np.asfortranarray(good), good[::-1][::-1])  # strided input
    np.testing.assert_allclose(fit.source_to_target, np.eye(4), atol=1e-12)
