"""The landmark/surface agreement gate: a pose difference, or the likelihood-ratio test
where the landmark layout can see the difference, and the regions gate."""

from __future__ import annotations

import math

import numpy as np

from edge import geometry
from edge.registration.paired_point import robust_rigid_transform
from edge.registration.quality import (
    LANDMARK_SURFACE_CHI2,
    Gates,
    check_gates,
    landmark_blind_spot_mm,
)
from edge.registration.stage import _landmark_excess_chi2, _LandmarkFit
from edge.registration.types import RegistrationQuality

# The eyes and the nasion (mm, plan frame): what a drape over the nose and below leaves.
EYES_MM = np.array(
    [
        [0.0, 0.0, 0.0],
        [-14.0, 2.0, -8.0],
        [14.0, 2.0, -8.0],
        [-45.0, 4.0, -25.0],
        [45.0, 4.0, -25.0],
    ]
)
# Those and the nose tip, a mouth corner and the chin: the whole face's layout.
FACE_MM = np.vstack([EYES_MM, [[0.0, -45.0, 20.0], [-25.0, -70.0, 0.0], [0.0, -110.0, 0.0]]])
TARGETS_M = np.array([[0.0, -20.0, -70.0], [15.0, 0.0, -50.0]]) * 1e-3
GATES = Gates(1.5, 0.85, 0.6, 5.0, 8.0, 8.0, 5.0, 5.0, 60, 0.7, 0.4, min_regions_used=3)
FIGURES = {"occluded_fraction": 0.1, "relief": 10.0, "cloud_points": 500}


def _fit(layout_mm: np.ndarray, noise_mm: float, seed: int, weights=None) -> _LandmarkFit:
    rng = np.random.default_rng(seed)
    plan = layout_mm * 1e-3
    camera = plan + rng.normal(scale=noise_mm * 1e-3 / math.sqrt(3), size=plan.shape)
    w = np.ones(len(plan)) if weights is None else np.asarray(weights, float)
    fit = robust_rigid_transform(plan, camera, inlier_threshold_mm=6.0, weights=w)
    return _LandmarkFit(fit, [str(i) for i in range(len(plan))], plan, camera, w)


def _turned(deg: float, axis: tuple[float, float, float]) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = geometry.axis_angle_to_matrix(np.array(axis), math.radians(deg))
    return pose


def test_the_true_pose_passes_the_likelihood_ratio_test() -> None:
    """With 2 mm of localisation error (weights as the fit's), the true pose's statistic
    stays within chi-square's 0.999 bound on at least 195 of 200 draws, though the five
    brow landmarks' own fit turns by degrees."""
    turned, passed = [], 0
    for seed in range(200):
        lm = _fit(EYES_MM, 2.0, seed)
        turned.append(geometry.rotation_angle_deg(lm.fit.source_to_target[:3, :3]))
        passed += _landmark_excess_chi2(lm, np.eye(4), 2.0) <= LANDMARK_SURFACE_CHI2
        face = _fit(FACE_MM, 2.0, seed, weights=[1, 1, 1, 1, 1, 1, 0.5, 0.5])
        passed += _landmark_excess_chi2(face, np.eye(4), 2.0) <= LANDMARK_SURFACE_CHI2
    assert max(turned) > 3.0
    assert passed >= 390


def test_the_brow_alone_is_blind_to_a_turn_about_itself_and_the_face_is_not() -> None:
    """Five landmarks along the brow cannot see the head turned about the line through
    them: the test passes a pose whose targets are over 8 mm off, and the blind spot says
    so (over 8 mm), so the gate asks the surface to hold the pose alone. With the whole
    face's landmarks the same turn is refused and the blind spot is small."""
    pitch = _turned(8.0, (1.0, 0.0, 0.0))
    off_mm = np.linalg.norm(geometry.apply(pitch, TARGETS_M) - TARGETS_M, axis=1).max() * 1e3
    assert off_mm > 8.0
    brow = _fit(EYES_MM, 0.0, 0)
    assert _landmark_excess_chi2(brow, pitch, 3.0) <= LANDMARK_SURFACE_CHI2
    assert landmark_blind_spot_mm(brow.plan_m, brow.weights, TARGETS_M, 3.0, 22.46) > 8.0
    face = _fit(FACE_MM, 0.0, 0)
    assert _landmark_excess_chi2(face, pitch, 3.0) > LANDMARK_SURFACE_CHI2
    assert landmark_blind_spot_mm(face.plan_m, face.weights, TARGETS_M, 3.0, 22.46) < 8.0


def test_a_shifted_surface_pose_is_refused_by_any_layout() -> None:
    off = np.eye(4)
    off[:3, 3] = [0.0, 0.006, 0.004]
    for seed in range(50):
        assert _landmark_excess_chi2(_fit(EYES_MM, 2.0, seed), off, 3.0) > LANDMARK_SURFACE_CHI2


def _quality(**kw) -> RegistrationQuality:
    q = RegistrationQuality(
        icp_rms_mm=0.5, inlier_fraction=0.95, fre_mm=2.0, surface_shape_mm=0.2,
        rigid_evidence_fraction=0.9, landmark_surface_translation_mm=9.0,
        landmark_surface_rotation_deg=10.0, landmark_surface_chi2=30.0, landmark_blind_mm=3.0,
        regions_used=["forehead", "right temple", "left temple"],
    )  # fmt: skip
    for k, v in kw.items():
        setattr(q, k, v)
    return q


def test_gate_passes_on_agreement_or_on_a_test_that_can_see() -> None:
    assert "landmark_surface" in check_gates(_quality(), GATES, **FIGURES)
    assert "landmark_surface" not in check_gates(
        _quality(landmark_surface_chi2=5.0), GATES, **FIGURES
    )
    # Poses that agree pass whatever the test says.
    agree = _quality(landmark_surface_translation_mm=3.0, landmark_surface_rotation_deg=2.0)
    agree.landmark_surface_chi2 = math.nan
    assert "landmark_surface" not in check_gates(agree, GATES, **FIGURES)


def test_a_blind_test_passes_only_when_the_surface_holds_the_pose_alone() -> None:
    """Where the landmarks cannot see, most of the rigid face must be on the skin."""
    blind = _quality(landmark_surface_chi2=5.0, landmark_blind_mm=20.0, rigid_evidence_fraction=0.5)
    failed = check_gates(blind, GATES, **FIGURES)
    assert list(failed) == ["landmark_surface"] and "blind to 20.0 mm" in failed["landmark_surface"]
    blind.rigid_evidence_fraction = 0.65
    assert not check_gates(blind, GATES, **FIGURES)


def test_a_fit_on_two_regions_is_refused() -> None:
    q = _quality(
        landmark_surface_translation_mm=1.0, landmark_surface_rotation_deg=1.0,
        regions_used=["forehead", "nose"],
    )  # fmt: skip
    failed = check_gates(q, GATES, **FIGURES)
    assert list(failed) == ["regions"] and "forehead, nose" in failed["regions"]
    q.regions_used.append("left temple")
    assert not check_gates(q, GATES, **FIGURES)


def test_worst_tre_is_numpys_max() -> None:
    from edge.registration.quality import _worst

    rng = np.random.default_rng(2)
    for trial in range(200):
        values = rng.uniform(0, 20, int(rng.integers(1, 6)))
        if trial % 3 == 0:
            values[int(rng.integers(len(values)))] = np.nan if trial % 2 else np.inf
        got = _worst({f"t{i}": float(v) for i, v in enumerate(values)}.values())
        want = float(np.max(list(values)))
        assert got == want or (math.isnan(got) and math.isnan(want))
