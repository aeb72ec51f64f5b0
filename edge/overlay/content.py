"""What the display draws, built from the registration result and the plan.

Fail-safe rule (docs/protocol.md, "Overlay"): primitives are *current* only
in state TRACKING. In REGISTERED and DEGRADED they are sent but marked not
current (a headset draws them as a warning, or not at all); in SEARCHING and
LOST, and whenever there is no pose, no primitives are sent at all.
"""

from __future__ import annotations

import math

import numpy as np

from edge.frames import Intrinsics
from edge.overlay.prepared import PlanPrimitives, mesh_asset_id
from edge.overlay.project import DisplayProfile, Projection
from edge.overlay.raycast import MeshRaycaster
from edge.overlay.types import Overlay
from edge.plan.model import Plan
from edge.registration.types import RegistrationResult, RegistrationState

__all__ = ["LAYERS", "build_overlay", "mesh_asset_id", "skin_distances_mm", "state_text"]

LAYERS = ("targets", "trajectories", "cut_planes", "structures", "skin")
_WITH_PRIMITIVES = (
    RegistrationState.TRACKING,
    RegistrationState.DEGRADED,
    RegistrationState.REGISTERED,
)


def state_text(registration: RegistrationResult | None) -> str:
    """The registration state in the words the surgeon sees."""
    if registration is None:
        return "SEARCHING - no registration"
    state = registration.state
    if state is RegistrationState.TRACKING:
        return state.value
    if state is RegistrationState.DEGRADED:
        reasons = "; ".join(registration.quality.reasons) or "quality gate failed"
        return f"DEGRADED: {reasons}"
    if state is RegistrationState.REGISTERED:
        return "REGISTERED: confirming"
    if state is RegistrationState.LOST:
        return "LOST — do not use"
    return "SEARCHING - no registration"


def skin_distances_mm(
    plan: Plan,
    patient_to_camera: np.ndarray,
    targets_patient_m: np.ndarray,
    raycaster: MeshRaycaster | None = None,
) -> np.ndarray:
    """Distance from each target back to the skin along the camera's view ray (mm).

    The ray runs from the camera centre through the target; the skin hit
    nearest the camera is the entry point seen by the surgeon. NaN when the
    ray misses the skin or the first hit is beyond the target. Rays are cast
    in the plan frame (camera centre transformed there with the rigid pose's
    inverse, ``-R^T t``), which avoids moving the whole mesh each frame. Pass
    ``raycaster`` (built once from ``plan.skin``) when calling per frame.
    """
    if len(targets_patient_m) == 0:
        return np.zeros(0)
    caster = raycaster or MeshRaycaster(plan.skin.vertices, plan.skin.faces)
    return caster.depths_below_first_hit_mm(patient_to_camera, targets_patient_m)


def build_overlay(
    *,
    frame_number: int,
    capture_unix_s: float,
    capture_s: float,
    registration: RegistrationResult | None,
    plan: Plan,
    profile: DisplayProfile,
    camera: Intrinsics,
    layers: frozenset[str] = frozenset(LAYERS),
    skin_distance: bool = True,
    raycaster: MeshRaycaster | None = None,
    fps: float = 0.0,
    latency_ms: float = 0.0,
    warnings: tuple[str, ...] = (),
    primitives: PlanPrimitives | None = None,
    projection: Projection | None = None,
) -> Overlay:
    """Build one frame's overlay (pure: no clocks, no I/O).

    ``capture_s`` is the frame's capture time (``Frame.capture_s``: the camera's
    clock), used with ``registration.registered_s`` (same clock) for the
    registration's age, so a replay gives the same ages however fast it runs.
    Per frame, pass ``primitives`` (``PlanPrimitives.from_plan(plan)``, built once
    per plan) and ``projection`` (``Projection(profile, camera)``, kept while the
    camera stays the same); without them they are built here, with the same result.
    """
    state = registration.state if registration is not None else RegistrationState.SEARCHING
    pose = registration.patient_to_camera if registration is not None else None
    reasons = list(registration.quality.reasons) if registration is not None else []
    regions = list(registration.quality.regions_used) if registration is not None else []
    age_ms = None
    if registration is not None and registration.registered_s is not None:
        age_ms = max(0.0, (capture_s - registration.registered_s) * 1000.0)
    if projection is None or not projection.matches(profile, camera):
        projection = Projection(profile, camera)
    overlay = Overlay(
        frame_number=frame_number,
        capture_unix_s=capture_unix_s,
        state=state,
        current=False,
        state_text=state_text(registration),
        reasons=reasons,
        regions=regions,
        case_id=plan.case_id,
        plan_digest=plan.digest,
        patient_to_camera=None,
        display_name=profile.name,
        display_intrinsics=projection.intrinsics,
        display=profile,
        registration_age_ms=age_ms,
        fps=fps,
        latency_ms=latency_ms,
        warnings=list(warnings),
    )
    if pose is None or state not in _WITH_PRIMITIVES:
        return overlay  # fail safe: nothing to draw without a trusted-enough pose
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not _all_finite(pose):
        overlay.state_text = "DEGRADED: pose is not a finite 4x4 matrix"
        overlay.state = RegistrationState.DEGRADED
        return overlay
    if not all(math.isfinite(v) for v in (camera.fx, camera.fy, camera.ppx, camera.ppy)):
        overlay.state_text = "DEGRADED: the camera's intrinsics are not finite"
        overlay.state = RegistrationState.DEGRADED
        return overlay
    prims = primitives if primitives is not None else PlanPrimitives.from_plan(plan)
    overlay.patient_to_camera = pose
    overlay.current = state is RegistrationState.TRACKING
    # The rigid pose's parts, as geometry.apply uses them: p @ R.T + t.
    rotation_t = pose[:3, :3].T
    translation_m = pose[:3, 3]
    if "skin" in layers:
        overlay.skin_asset = prims.skin_asset
    names = prims.target_names
    if "targets" in layers and names:
        pts = prims.targets_patient_m
        overlay.target_names = list(names)
        overlay.targets_camera_m = pts @ rotation_t + translation_m
        q = registration.quality if registration is not None else None
        tre = registration.shown_tre_mm if registration is not None else {}
        overlay.tre_mm = [float(tre.get(n, math.nan)) for n in names]
        landmark = q.landmark_tre_mm if q is not None else {}
        overlay.landmark_tre_mm = [float(landmark.get(n, math.nan)) for n in names]
        overlay.skin_distance_mm = (
            list(skin_distances_mm(plan, pose, pts, raycaster))
            if skin_distance
            else [math.nan] * len(names)
        )
        px, vis = projection.project(overlay.targets_camera_m)
        overlay.targets_px, overlay.targets_visible = px, vis.tolist()
    if "trajectories" in layers and prims.trajectory_names:
        overlay.trajectory_names = list(prims.trajectory_names)
        ends = prims.trajectory_ends_patient_m @ rotation_t + translation_m
        overlay.trajectories_camera_m = ends.reshape(-1, 2, 3)
        overlay.trajectories_px = projection.project(overlay.trajectories_camera_m)[0]
    if "cut_planes" in layers and prims.cut_plane_names:
        overlay.cut_plane_names = list(prims.cut_plane_names)
        planes = np.empty((len(prims.cut_plane_names), 2, 3))
        planes[:, 0] = prims.cut_points_patient_m @ rotation_t + translation_m
        planes[:, 1] = prims.cut_normals_patient @ rotation_t
        overlay.cut_planes_camera = planes
    if "structures" in layers:
        overlay.structures = prims.structures()
    return overlay


def _all_finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()``, cheaper when it holds: a sum with a NaN or an infinity is
    not finite, so a finite sum settles it (the full test only runs when the sum is not).
    The sum is of Python floats, which overflow to inf without numpy's warnings."""
    return math.isfinite(sum(a.ravel().tolist())) or bool(np.isfinite(a).all())
