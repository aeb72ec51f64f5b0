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
    tre_mm: dict[str, float] = field(default_factory=dict)  # estimated TRE per plan target
    reasons: list[str] = field(default_factory=list)  # gates that failed, in words
    # Surface residual averaged over patches of the face: noise averages out, the
    # residual of a differently shaped surface (another face) does not.
    surface_shape_mm: float = float("nan")


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
