"""A synthetic face for registration and plan tests: mesh, landmarks, plan, rendered depth.

The face is an analytic height field in the patient frame (LPS, metres; the
face looks towards -y). It is deliberately simple (ellipsoid, nose, eye
sockets, brows, lips, chin) but has the relief that constrains a surface fit.
Test support, not part of the edge package; its plan folder is written by the
product's writer (edge/plan/write.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge import geometry
from edge.frames import LANDMARK_COUNT, Frame, Intrinsics, PixelFormat
from edge.plan.model import CutPlane, Mesh, Plan, Trajectory
from edge.plan.write import write_plan as write_plan_folder
from edge.registration.landmarks import (
    EYE_LEFT_CONTOUR,
    EYE_RIGHT_CONTOUR,
    LANDMARK_INDEX,
    LIPS_OUTER_CONTOUR,
    RIGID_FACE_HULL,
)
from edge.tracking.types import Face, TrackingResult

# (x, z) in metres on the face of the named landmarks; +x is the patient's left.
LANDMARK_XZ: dict[str, tuple[float, float]] = {
    "nasion": (0.0, 0.036),
    "pronasale": (0.0, -0.012),
    "subnasale": (0.0, -0.030),
    "endocanthion_right": (-0.016, 0.030),
    "endocanthion_left": (0.016, 0.030),
    "exocanthion_right": (-0.046, 0.030),
    "exocanthion_left": (0.046, 0.030),
    "cheilion_right": (-0.025, -0.050),
    "cheilion_left": (0.025, -0.050),
    "pogonion": (0.0, -0.088),
}
TARGETS: dict[str, tuple[float, float, float]] = {
    "pituitary": (0.0, 0.040, 0.010),
    "left_orbit_floor": (0.030, -0.040, 0.015),
}
HALF_WIDTH_M = 0.075
Z_RANGE_M = (-0.115, 0.095)


def _g(x: np.ndarray, z: np.ndarray, x0: float, z0: float, sx: float, sz: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((z - z0) / sz) ** 2))


def face_depth_m(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """How far forward (-y) the skin is at (x, z), metres."""
    base = 0.080 * np.sqrt(np.clip(1 - (x / 0.105) ** 2 - (z / 0.15) ** 2, 0.05, None))
    nose = 0.022 * _g(x, z, 0.0, -0.012, 0.009, 0.016) + 0.010 * _g(x, z, 0.0, 0.012, 0.006, 0.018)
    sockets = -0.009 * (
        _g(x, z, -0.031, 0.030, 0.012, 0.009) + _g(x, z, 0.031, 0.030, 0.012, 0.009)
    )
    brows = 0.005 * _g(x, z, 0.0, 0.052, 0.045, 0.007)
    lips = 0.005 * _g(x, z, 0.0, -0.046, 0.018, 0.008)
    chin = 0.009 * _g(x, z, 0.0, -0.088, 0.016, 0.012)
    cheeks = 0.006 * (_g(x, z, -0.045, -0.010, 0.015, 0.02) + _g(x, z, 0.045, -0.010, 0.015, 0.02))
    return base + nose + sockets + brows + lips + chin + cheeks


def face_point(x: float | np.ndarray, z: float | np.ndarray) -> np.ndarray:
    """Skin point(s) at (x, z) in the patient frame, metres."""
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return np.stack([x, -face_depth_m(x, z), z], axis=-1)


def face_mesh(step_m: float = 1.5e-3, scale: tuple[float, float, float] = (1, 1, 1)) -> Mesh:
    """The face as a triangle grid; ``scale`` stretches it (a different face)."""
    xs = np.arange(-HALF_WIDTH_M, HALF_WIDTH_M + 1e-9, step_m)
    zs = np.arange(Z_RANGE_M[0], Z_RANGE_M[1] + 1e-9, step_m)
    X, Z = np.meshgrid(xs, zs)
    v = face_point(X.ravel(), Z.ravel()) * np.asarray(scale, dtype=np.float64)
    nx = len(xs)
    i = np.arange(len(zs) - 1)[:, None] * nx + np.arange(nx - 1)[None, :]
    i = i.ravel()
    faces = np.concatenate(
        [np.stack([i, i + nx, i + 1], 1), np.stack([i + 1, i + nx, i + nx + 1], 1)]
    )
    return Mesh(vertices=v, faces=faces.astype(np.int64))


def face_landmarks_m() -> dict[str, np.ndarray]:
    return {k: face_point(x, z) for k, (x, z) in LANDMARK_XZ.items()}


def all_landmarks_m(seed: int = 7) -> np.ndarray:
    """(468, 3) patient-frame points standing in for the face model's landmarks.

    Named landmarks, the eye and lip contours and the rigid upper face's outline
    sit where the face model puts them; the other indices are scattered over the
    face so their hull covers it.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.062, 0.062, LANDMARK_COUNT)
    z = rng.uniform(-0.095, 0.075, LANDMARK_COUNT)
    inside = (x / 0.065) ** 2 + ((z + 0.01) / 0.09) ** 2 <= 1
    x, z = np.where(inside, x, x * 0.7), np.where(inside, z, z * 0.7)
    for contour, (cx, cz), (ax, az) in (
        (EYE_RIGHT_CONTOUR, (-0.031, 0.030), (0.015, 0.006)),
        (EYE_LEFT_CONTOUR, (0.031, 0.030), (0.015, 0.006)),
        (LIPS_OUTER_CONTOUR, (0.0, -0.050), (0.025, 0.009)),
    ):
        t = np.linspace(0, 2 * np.pi, len(contour), endpoint=False)
        x[list(contour)] = cx + ax * np.cos(t)
        z[list(contour)] = cz + az * np.sin(t)
    # The rigid upper face's hull: forehead to zygomas, above the nose's base.
    outline = list(RIGID_FACE_HULL)
    t = np.linspace(-0.08 * np.pi, 1.08 * np.pi, len(outline))
    x[outline], z[outline] = 0.06 * np.cos(t), -0.02 + 0.09 * np.sin(t)
    for name, (lx, lz) in LANDMARK_XZ.items():
        x[LANDMARK_INDEX[name]], z[LANDMARK_INDEX[name]] = lx, lz
    # The outline indices of an eye or lip contour include the named corners; put
    # those corners back on the contour ellipses' ends consistently.
    return face_point(x, z)


def face_plan(mesh: Mesh | None = None, landmarks: dict[str, np.ndarray] | None = None) -> Plan:
    """The synthetic face's plan (metres, LPS): skin, landmarks, targets, a trajectory, a plane."""
    return Plan(
        case_id="SYNTH-0001",
        skin=mesh or face_mesh(),
        landmarks=landmarks or face_landmarks_m(),
        targets={k: np.array(v) for k, v in TARGETS.items()},
        trajectories=(
            Trajectory(
                "biopsy", entry=np.array([0.0, -0.08, 0.04]), target=np.array(TARGETS["pituitary"])
            ),
        ),
        cut_planes=(CutPlane("midline", point=np.zeros(3), normal=np.array([1.0, 0.0, 0.0])),),
    )


def write_plan(
    folder: Path, mesh: Mesh | None = None, landmarks: dict[str, np.ndarray] | None = None
) -> Path:
    """Write the synthetic face's edge-plan/1 folder (mm, LPS; skin as binary STL); returns it."""
    return write_plan_folder(face_plan(mesh, landmarks), folder).parent


Doc = dict[str, Any]  # a JSON document of a plan folder, as parsed


def edit_json(path: Path, change: Callable[[Doc], object]) -> None:
    """Rewrite the JSON file ``path`` (plan.json, the markups) with ``change`` applied."""
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def default_intrinsics() -> Intrinsics:
    return Intrinsics(640, 480, 610.0, 610.0, 319.5, 239.5)


def facing_pose(distance_m: float = 0.5) -> np.ndarray:
    """patient_to_camera with the face looking straight into the camera."""
    T = np.eye(4)
    T[:3, :3] = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    T[:3, 3] = [0.0, 0.0, distance_m]
    return T


def pose_from(rotvec_deg: np.ndarray, translation_m: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``base`` moved by a rotation about the patient origin then a camera-frame translation."""
    from scipy.spatial.transform import Rotation

    D = np.eye(4)
    D[:3, :3] = Rotation.from_rotvec(np.radians(rotvec_deg)).as_matrix()
    T = base @ D
    T[:3, 3] += translation_m
    return T


def dense_surface_m(
    step_m: float = 4e-4, scale: tuple[float, float, float] = (1, 1, 1)
) -> np.ndarray:
    xs = np.arange(-HALF_WIDTH_M, HALF_WIDTH_M, step_m)
    zs = np.arange(Z_RANGE_M[0], Z_RANGE_M[1], step_m)
    X, Z = np.meshgrid(xs, zs)
    return face_point(X.ravel(), Z.ravel()) * np.asarray(scale, dtype=np.float64)


def render_depth(
    surface_patient_m: np.ndarray,
    patient_to_camera: np.ndarray,
    intrinsics: Intrinsics,
    extra_camera_m: np.ndarray | None = None,
) -> np.ndarray:
    """Z-buffer depth (metres, 0 = none) of dense points splatted into the image."""
    P = geometry.apply(patient_to_camera, surface_patient_m)
    if extra_camera_m is not None:
        P = np.concatenate([P, extra_camera_m])
    uv = np.rint(intrinsics.project(P)).astype(np.int64)
    ok = (
        (P[:, 2] > 0)
        & (uv[:, 0] >= 0)
        & (uv[:, 0] < intrinsics.width)
        & (uv[:, 1] >= 0)
        & (uv[:, 1] < intrinsics.height)
    )
    flat = uv[ok, 1] * intrinsics.width + uv[ok, 0]
    depth = np.full(intrinsics.width * intrinsics.height, np.inf)
    np.minimum.at(depth, flat, P[ok, 2])
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(intrinsics.height, intrinsics.width)


def make_frame(
    number: int,
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    noise_m: float = 0.0,
    rng: np.random.Generator | None = None,
    depth_scale_m: float = 1e-4,
    timestamp_s: float | None = None,
) -> Frame:
    d = depth_m.copy()
    if noise_m > 0:
        rng = rng or np.random.default_rng(number)
        d = np.where(d > 0, d + rng.normal(0, noise_m, d.shape), 0.0)
    raw = np.clip(np.rint(d / depth_scale_m), 0, 65535).astype(np.uint16)
    color = np.zeros((intrinsics.height, intrinsics.width, 3), np.uint8)
    return Frame(
        number=number,
        color=color,
        color_format=PixelFormat.RGB8,
        depth=raw,
        depth_scale_m=depth_scale_m,
        intrinsics=intrinsics,
        host_timestamp_s=number / 30.0 if timestamp_s is None else timestamp_s,
    )


def make_tracking(
    landmarks_patient_m: np.ndarray,
    patient_to_camera: np.ndarray,
    intrinsics: Intrinsics,
    noise_m: float = 0.0,
    rng: np.random.Generator | None = None,
) -> TrackingResult:
    """A tracking result whose patient face has these landmarks (camera frame + pixels)."""
    cam = geometry.apply(patient_to_camera, landmarks_patient_m)
    if noise_m > 0:
        rng = rng or np.random.default_rng(0)
        cam = cam + rng.normal(0, noise_m, cam.shape)
    px = intrinsics.project(cam)
    lm_px = np.concatenate([px, np.zeros((len(px), 1))], axis=1)
    box = np.array([px[:, 0].min(), px[:, 1].min(), px[:, 0].max(), px[:, 1].max()])
    face = Face(
        score=1.0,
        box=box,
        keypoints=np.zeros((6, 2)),
        landmarks_px=lm_px,
        presence=1.0,
        landmarks_camera_m=cam,
        landmarks_valid=np.ones(len(cam), dtype=bool),
    )
    return TrackingResult(faces=[face], patient=face, mode="track")
