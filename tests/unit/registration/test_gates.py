"""The landmark/surface agreement gate: a pose difference, or the likelihood-ratio test."""

from __future__ import annotations

import math

import numpy as np

from edge import geometry
from edge.registration.paired_point import robust_rigid_transform
from edge.registration.quality import LANDMARK_SURFACE_CHI2, Gates, check_gates
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


def _fit(noise_mm: float, seed: int) -> _LandmarkFit:
    rng = np.random.default_rng(seed)
    plan = EYES_MM * 1e-3
    camera = plan + rng.normal(scale=noise_mm * 1e-3 / math.sqrt(3), size=plan.shape)
    fit = robust_rigid_transform(plan, camera, inlier_threshold_mm=6.0)
    return _LandmarkFit(fit, [str(i) for i in range(5)], plan, camera)


def test_few_landmarks_in_a_poor_layout_agree_with_the_right_surface_pose() -> None:
    """Five points along the brow: their own fit turns by degrees with 2 mm of localisation
    error, yet the true pose explains them as well as it within chi-square's bounds (0.999:
    about one frame in a thousand refused), and a pose 6 mm off does not."""
    passed = 0
    turned = []
    for seed in range(200):
        lm = _fit(2.0, seed)
        turned.append(geometry.rotation_angle_deg(lm.fit.source_to_target[:3, :3]))
        passed += _landmark_excess_chi2(lm, np.eye(4), 2.0) <= LANDMARK_SURFACE_CHI2
    assert max(turned) > 3.0
    assert passed >= 195
    off = np.eye(4)
    off[:3, 3] = [0.0, 0.006, 0.0]
    caught = sum(
        _landmark_excess_chi2(_fit(2.0, s), off, 2.0) > LANDMARK_SURFACE_CHI2 for s in range(50)
    )
    assert caught == 50


def test_gate_passes_on_agreement_or_on_the_test() -> None:
    gates = Gates(1.5, 0.85, 0.6, 5.0, 8.0, 8.0, 5.0, 5.0, 60, 0.7, 0.6)
    q = RegistrationQuality(
        icp_rms_mm=0.5, inlier_fraction=0.95, fre_mm=2.0, surface_shape_mm=0.2,
        rigid_evidence_fraction=0.9, landmark_surface_translation_mm=9.0,
        landmark_surface_rotation_deg=10.0, landmark_surface_chi2=30.0,
    )  # fmt: skip
    kw = {"occluded_fraction": 0.1, "relief": 10.0, "cloud_points": 500}
    assert "landmark_surface" in check_gates(q, gates, **kw)
    q.landmark_surface_chi2 = 5.0
    assert "landmark_surface" not in check_gates(q, gates, **kw)
    q.landmark_surface_chi2 = math.nan
    q.landmark_surface_translation_mm, q.landmark_surface_rotation_deg = 3.0, 2.0
    assert "landmark_surface" not in check_gates(q, gates, **kw)


def test_a_fit_on_two_regions_is_refused() -> None:
    gates = Gates(1.5, 0.85, 0.6, 5.0, 8.0, 8.0, 5.0, 5.0, 60, 0.7, 0.4, min_regions_used=3)
    q = RegistrationQuality(
        icp_rms_mm=0.5, inlier_fraction=0.95, fre_mm=2.0, surface_shape_mm=0.2,
        rigid_evidence_fraction=0.9, landmark_surface_translation_mm=1.0,
        landmark_surface_rotation_deg=1.0, regions_used=["forehead", "nose"],
    )  # fmt: skip
    kw = {"occluded_fraction": 0.1, "relief": 10.0, "cloud_points": 500}
    failed = check_gates(q, gates, **kw)
    assert list(failed) == ["regions"] and "forehead, nose" in failed["regions"]
    q.regions_used.append("left temple")
    assert not check_gates(q, gates, **kw)
