"""What the registration stage hands to the overlay (the contract between the two)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class RegistrationState(str, enum.Enum):
    """Registration state shown to the surgeon.

    Only TRACKING means the overlay is current and within every quality gate.
    """

    SEARCHING = "SEARCHING"  # no registration yet
    REGISTERED = "REGISTERED"  # registered this frame from landmarks + ICP, not yet confirmed
    TRACKING = "TRACKING"  # registered and passing every gate
    DEGRADED = "DEGRADED"  # pose available but a quality gate failed: do not trust
    LOST = "LOST"  # the face or the registration was lost


@dataclass
class RegistrationQuality:
    """Per-frame quality figures; NaN where not measured this frame."""

    icp_rms_mm: float = float("nan")
    inlier_fraction: float = float("nan")
    fre_mm: float = float("nan")  # landmark fiducial registration error
    landmark_surface_translation_mm: float = float("nan")  # landmark pose vs surface pose
    landmark_surface_rotation_deg: float = float("nan")
    # How much worse the surface pose explains the paired landmarks than their own fit,
    # in units of the landmark localisation error (chi-square, 6 degrees of freedom), and
    # the largest displacement at a target that test cannot see with this frame's landmark
    # layout (quality.landmark_blind_spot_mm): NaN when the two poses agree (not asked).
    landmark_surface_chi2: float = float("nan")
    landmark_blind_mm: float = float("nan")
    # Estimated TRE per plan target: the surface fit's error estimate, calibrated so that
    # the true TRE exceeds it in at most 5 % of target-frames (docs/registration.md).
    tre_mm: dict[str, float] = field(default_factory=dict)
    # Fitzpatrick's landmark-only TRE per target: a cross-check of the landmark layout.
    landmark_tre_mm: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # gates that failed, in words
    failed_gates: list[str] = field(default_factory=list)  # the same, by gate name
    # Surface residual averaged over patches of the face: noise averages out, the
    # residual of a differently shaped surface (another face) does not.
    surface_shape_mm: float = float("nan")
    # Share of the rigid upper face's sampled pixels that are skin inliers of the surface
    # fit: what is left of the rigid face once drapes, holes and misfits are taken out.
    rigid_evidence_fraction: float = float("nan")
    # The rigid face's regions (edge/registration/landmarks.py RIGID_REGIONS) the surface
    # fit rested on this frame: at least half their sampled pixels were skin inliers.
    regions_used: list[str] = field(default_factory=list)


@dataclass
class RegistrationResult:
    """Pose of the plan in the camera frame and how far to trust it.

    ``patient_to_camera`` maps plan coordinates (metres) to the camera frame
    (metres); None in SEARCHING and LOST. ``registered_s`` is the capture time
    (``Frame.capture_s``) of the frame on which the pose was last confirmed.
    """

    state: RegistrationState
    patient_to_camera: np.ndarray | None
    quality: RegistrationQuality = field(default_factory=RegistrationQuality)
    registered_s: float | None = None
    # The pose this frame's fit produced, shown or not (refused frames too): for the
    # evaluation of the gates against ground truth. Never drawn.
    candidate_to_camera: np.ndarray | None = None

    @property
    def shown_tre_mm(self) -> dict[str, float]:
        """The TRE estimate to show with the pose: in REGISTERED and TRACKING only.

        A DEGRADED pose failed a gate, possibly a fit in a wrong minimum, whose
        covariance says nothing about its error (measured: 1.0 mm shown for 19 mm).
        """
        if self.state in (RegistrationState.REGISTERED, RegistrationState.TRACKING):
            return self.quality.tre_mm
        return {}
