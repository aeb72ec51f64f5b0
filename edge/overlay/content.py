"""What the display draws, built from the registration result and the plan.

Fail-safe rule (docs/protocol.md, "Overlay"): primitives are *current* only
in state TRACKING. In REGISTERED and DEGRADED they are sent but marked not
current (a headset draws them as a warning, or not at all); in SEARCHING and
LOST, and whenever there is no pose, no primitives are sent at all.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from edge import geometry
from edge.frames import Intrinsics
from edge.overlay.project import DisplayProfile, project_points
from edge.overlay.raycast import MeshRaycaster
from edge.overlay.types import Overlay
from edge.plan.model import Mesh, Plan
from edge.registration.types import RegistrationResult, RegistrationState

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


def mesh_asset_id(mesh: Mesh) -> str:
    """A mesh's asset id on the wire: its file's SHA-256, or one of its arrays when unset."""
    if mesh.sha256:
        return mesh.sha256
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mesh.vertices, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype="<i8").tobytes())
    return h.hexdigest()


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
) -> Overlay:
    """Build one frame's overlay (pure: no clocks, no I/O).

    ``capture_s`` is the frame's capture time (``Frame.capture_s``: the camera's
    clock), used with ``registration.registered_s`` (same clock) for the
    registration's age, so a replay gives the same ages however fast it runs.
    """
    state = registration.state if registration is not None else RegistrationState.SEARCHING
    pose = registration.patient_to_camera if registration is not None else None
    reasons = list(registration.quality.reasons) if registration is not None else []
    regions = list(registration.quality.regions_used) if registration is not None else []
    age_ms = None
    if registration is not None and registration.registered_s is not None:
        age_ms = max(0.0, (capture_s - registration.registered_s) * 1000.0)
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
        display_intrinsics=profile.intrinsics_for(camera),
        display=profile,
        registration_age_ms=age_ms,
        fps=fps,
        latency_ms=latency_ms,
        warnings=list(warnings),
    )
    if pose is None or state not in _WITH_PRIMITIVES:
        return overlay  # fail safe: nothing to draw without a trusted-enough pose
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        overlay.state_text = "DEGRADED: pose is not a finite 4x4 matrix"
        overlay.state = RegistrationState.DEGRADED
        return overlay
    if not all(math.isfinite(v) for v in (camera.fx, camera.fy, camera.ppx, camera.ppy)):
        overlay.state_text = "DEGRADED: the camera's intrinsics are not finite"
        overlay.state = RegistrationState.DEGRADED
        return overlay
    overlay.patient_to_camera = pose
    overlay.current = state is RegistrationState.TRACKING
    if "skin" in layers:
        overlay.skin_asset = mesh_asset_id(plan.skin)
    if "targets" in layers and plan.targets:
        names = list(plan.targets)
        pts = np.array([plan.targets[n] for n in names], dtype=np.float64).reshape(-1, 3)
        overlay.target_names = names
        overlay.targets_camera_m = geometry.apply(pose, pts)
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
        px, vis, _ = project_points(overlay.targets_camera_m, profile, camera)
        overlay.targets_px, overlay.targets_visible = px, [bool(v) for v in vis]
    if "trajectories" in layers and plan.trajectories:
        overlay.trajectory_names = [t.name for t in plan.trajectories]
        ends = np.array([[t.entry, t.target] for t in plan.trajectories], dtype=np.float64)
        overlay.trajectories_camera_m = geometry.apply(pose, ends.reshape(-1, 3)).reshape(-1, 2, 3)
        overlay.trajectories_px = project_points(overlay.trajectories_camera_m, profile, camera)[0]
    if "cut_planes" in layers and plan.cut_planes:
        overlay.cut_plane_names = [c.name for c in plan.cut_planes]
        points = geometry.apply(
            pose, np.array([c.point for c in plan.cut_planes], dtype=np.float64)
        )
        normals = np.array([c.normal for c in plan.cut_planes], dtype=np.float64) @ pose[:3, :3].T
        overlay.cut_planes_camera = np.stack([points, normals], axis=1)
    if "structures" in layers:
        overlay.structures = [
            {"name": s.name, "asset": mesh_asset_id(s.mesh), "color_rgb": list(s.color_rgb)}
            for s in plan.structures
        ]
    return overlay
