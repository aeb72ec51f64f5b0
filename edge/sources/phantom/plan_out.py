"""The phantom's preoperative plan, written as a planning tool would export it.

The plan lives in "CT" coordinates: LPS, millimetres on disk (metres once
loaded). The head sits in the scanner with a small tilt and an offset, so the
CT-to-face transform is known exactly but is not the identity:
``patient_to_face = inv(FACE_TO_PATIENT)``. Ground truth for every frame is
``patient_to_camera = face_to_camera @ patient_to_face``.

Folder contents (format: docs/plan-format.md, written by edge/plan/write.py):
plan.json, skin.stl, landmarks.mrk.json, optic_chiasm.stl. Beside the folder,
``<folder>.truth.json`` holds the face-to-patient transform, for tests (a plan
folder holds only what its manifest names, so the truth cannot live inside).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge import geometry
from edge.errors import SourceError
from edge.files import write_atomic
from edge.plan.model import CutPlane, Mesh, Plan, Structure, Trajectory
from edge.plan.write import write_plan as write_plan_folder
from edge.registration.landmarks import LANDMARK_INDEX
from edge.sources.phantom.face import NASION, FaceModel
from edge.sources.phantom.motion import pose_matrix

CASE_ID = "PHANTOM-0001"
MESH_STRIDE = 2  # skin mesh from every 2nd surface sample (~1.7 mm edges)

# Face axes in LPS: face x (subject's left) = L, face y (down) = -S, face z (back) = P.
_FACE_AXES_TO_LPS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# The head in the scanner: rolled 3 deg, flexed 6 deg, yawed 2 deg, head centre
# at (2.5, 18.0, -135.0) mm in the CT's LPS coordinates.
_TILT = pose_matrix((0.0, 0.0, 0.0), (-6.0, 2.0, 3.0))[:3, :3]


def face_to_patient() -> np.ndarray:
    """4x4, face frame (metres) to plan/CT frame (LPS, metres)."""
    m = np.eye(4)
    m[:3, :3] = _FACE_AXES_TO_LPS @ _TILT
    m[:3, 3] = (0.0025, 0.018, -0.135)
    return m


def patient_to_face() -> np.ndarray:
    """4x4, plan/CT frame (LPS, metres) to face frame (metres)."""
    return np.linalg.inv(face_to_patient())


def _to_patient_m(points_face_m: np.ndarray) -> np.ndarray:
    return geometry.apply(face_to_patient(), points_face_m)


def plan_geometry(face: FaceModel) -> dict[str, np.ndarray]:
    """Targets, trajectory, cut plane and structure centre, in the face frame (metres)."""
    lm = face.landmarks_m
    forehead = lm[151]  # mid-forehead, above the glabella
    cheek_r = lm[50]  # right cheek, below the eye
    return {
        "frontal_sinus": forehead + np.array([0.0, 0.0, 0.045]),
        "sphenoid_sinus": lm[NASION] + np.array([0.0, 0.012, 0.060]),
        "maxillary_sinus_right": cheek_r + np.array([0.020, 0.0, 0.050]),
        "entry_frontal": forehead,
        "optic_chiasm": lm[NASION] + np.array([0.0, 0.010, 0.078]),
    }


def skin_mesh_face(face: FaceModel) -> tuple[np.ndarray, np.ndarray]:
    """The skin surface as a triangle mesh in the face frame: (V, 3) metres, (F, 3) indices."""
    grid = face.points_m[::MESH_STRIDE, ::MESH_STRIDE].astype(np.float64)
    rows, cols = grid.shape[:2]
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    verts = grid.reshape(-1, 3)
    # Wind the triangles so that their normals point out of the head.
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if float((n * tri.mean(axis=1)).sum()) < 0:
        faces = faces[:, ::-1]
    return verts, faces


def phantom_plan(face: FaceModel) -> Plan:
    """The phantom's plan in CT coordinates (LPS, metres), as a planner would make it."""
    import trimesh

    geo = {k: _to_patient_m(v)[0] for k, v in plan_geometry(face).items()}
    landmarks = {name: _to_patient_m(face.landmarks_m[i])[0] for name, i in LANDMARK_INDEX.items()}
    verts, faces = skin_mesh_face(face)
    chiasm = trimesh.creation.icosphere(subdivisions=2, radius=6.0)  # millimetres
    chiasm_m = (np.asarray(chiasm.vertices) + geo["optic_chiasm"] * 1000.0) / 1000.0
    return Plan(
        case_id=CASE_ID,
        skin=Mesh(vertices=_to_patient_m(verts), faces=faces),
        landmarks=landmarks,
        targets={n: geo[n] for n in ("frontal_sinus", "sphenoid_sinus", "maxillary_sinus_right")},
        trajectories=(
            Trajectory("frontal_approach", entry=geo["entry_frontal"], target=geo["frontal_sinus"]),
        ),
        cut_planes=(
            # The face's left-right axis: the midsagittal plane.
            CutPlane("midsagittal", point=landmarks["nasion"], normal=face_to_patient()[:3, 0]),
        ),
        structures=(
            Structure(
                "optic_chiasm",
                Mesh(vertices=chiasm_m, faces=np.asarray(chiasm.faces)),
                color_rgb=(255, 200, 0),
            ),
        ),
    )


def truth_path(plan_dir: str | Path) -> Path:
    """The phantom plan's ground truth beside its folder: ``plan/`` -> ``plan.truth.json``."""
    folder = Path(plan_dir).resolve()
    return folder.with_name(folder.name + ".truth.json")


def write_plan(face: FaceModel, out_dir: str | Path) -> Path:
    """Write the phantom's plan folder and its truth file beside it; returns the path of plan.json.

    Raises SourceError when the folder cannot be created or written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(
            f"cannot create plan folder {out}: {exc.strerror}",
            "choose a writable --plan-out folder",
        ) from None
    truth = {
        "note": "phantom only: the exact CT-to-face transform; real plans have none",
        "face_to_patient_m": face_to_patient().tolist(),
        "photo_sha256": face.photo_sha256,
    }
    try:
        write_atomic(truth_path(out), json.dumps(truth, indent=2).encode())
        return write_plan_folder(phantom_plan(face), out)  # plan.json last
    except OSError as exc:
        raise SourceError(
            f"cannot write the plan into {out}: {exc.strerror}",
            "choose a writable --plan-out folder",
        ) from None
