"""A small synthetic plan and registration, for the transport benchmark and tests.

Not a patient: a 90 mm sphere ("skin") with two targets inside it, one
trajectory, one cut plane and one structure, registered 0.5 m in front of
the camera.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from edge.plan.model import CutPlane, Mesh, Plan, Structure, Trajectory
from edge.registration.types import RegistrationQuality, RegistrationResult, RegistrationState


def _sphere(radius_m: float, subdivisions: int) -> Mesh:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius_m)
    v = np.asarray(s.vertices, dtype=np.float64)
    f = np.asarray(s.faces, dtype=np.int64)
    digest = hashlib.sha256(v.tobytes() + f.tobytes()).hexdigest()
    return Mesh(vertices=v, faces=f, sha256=digest)


def demo_plan(subdivisions: int = 3) -> Plan:
    """Skin: sphere of radius 0.09 m at the plan origin; targets 40 and 20 mm inside."""
    skin = _sphere(0.09, subdivisions)
    vessel = _sphere(0.01, 1)
    offset = np.array([0.02, 0.0, -0.03])
    vessel = Mesh(vessel.vertices + offset, vessel.faces, vessel.sha256 + "-vessel")
    return Plan(
        case_id="demo-0001",
        skin=skin,
        landmarks={"nasion": np.array([0.0, -0.03, -0.088])},
        targets={
            "tumour": np.array([0.0, 0.0, -0.05]),
            "node": np.array([0.03, 0.02, -0.06]),
        },
        trajectories=(
            Trajectory("biopsy", np.array([0.0, 0.0, -0.09]), np.array([0.0, 0.0, -0.05])),
        ),
        cut_planes=(CutPlane("osteotomy", np.array([0.0, 0.04, 0.0]), np.array([0.0, 1.0, 0.0])),),
        structures=(Structure("vessel", vessel, (220, 40, 40)),),
        digest="demo",
    )


def demo_registration(
    state: RegistrationState = RegistrationState.TRACKING, registered_s: float | None = None
) -> RegistrationResult:
    """The plan 0.5 m in front of the camera, unrotated (plan axes = camera axes)."""
    pose = np.eye(4)
    pose[2, 3] = 0.5
    quality = RegistrationQuality(
        icp_rms_mm=0.6,
        fre_mm=1.1,
        tre_mm={"tumour": 1.8, "node": 2.4},
        landmark_tre_mm={"tumour": 3.5, "node": 4.0},
    )
    if state is RegistrationState.DEGRADED:
        quality.reasons = ["ICP residual 3.1 mm over 2.0 mm"]
    has_pose = state in (
        RegistrationState.TRACKING,
        RegistrationState.DEGRADED,
        RegistrationState.REGISTERED,
    )
    return RegistrationResult(
        state=state,
        patient_to_camera=pose if has_pose else None,
        quality=quality,
        registered_s=time.monotonic() if registered_s is None else registered_s,
    )
