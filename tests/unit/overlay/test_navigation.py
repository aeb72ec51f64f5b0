"""Navigation figures with known answers: trajectory figures and the signed distance to a
structure (negative inside it, and inside always warns)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation
from trimesh.triangles import closest_point

from edge.config import ToolsConfig
from edge.overlay.navigation import NavigationStage, signed_mesh_distance_m, winding_number
from edge.plan.model import Mesh, Plan, Structure, Trajectory
from edge.registration.types import RegistrationResult, RegistrationState
from edge.tools.types import Navigation, ToolPose, ToolsResult, ToolState

CUBE_CENTRE = np.array([0.10, 0.0, 0.0])


def _at(dx: float, dy: float, dz: float) -> np.ndarray:
    return CUBE_CENTRE + np.array([dx, dy, dz])


def _cube(faces_inward: bool = False, drop_faces: int = 0) -> Mesh:
    box = trimesh.creation.box(extents=(0.04, 0.04, 0.04))
    box.apply_translation(CUBE_CENTRE)
    faces = np.asarray(box.faces)[drop_faces:]
    return Mesh(np.asarray(box.vertices), faces[:, ::-1] if faces_inward else faces)


PLAN = Plan(
    "c",
    _cube(),
    {},
    {"T": np.array([0.0, 0.0, 0.05])},
    trajectories=(Trajectory("tr", np.zeros(3), np.array([0.0, 0.0, 0.05])),),
    structures=(Structure("cube", _cube(), (255, 0, 0)),),
)
PATIENT_TO_CAMERA = np.eye(4)
PATIENT_TO_CAMERA[:3, :3] = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
PATIENT_TO_CAMERA[:3, 3] = [0.05, -0.02, 0.55]


def _navigate(
    tip_patient: np.ndarray, axis_patient: np.ndarray, warn_mm: float = 5.0
) -> Navigation:
    R, t = PATIENT_TO_CAMERA[:3, :3], PATIENT_TO_CAMERA[:3, 3]
    tool = ToolPose("g", ToolState.VISIBLE, np.eye(4), R @ tip_patient + t, R @ axis_patient)
    result = SimpleNamespace(
        registration=RegistrationResult(RegistrationState.TRACKING, PATIENT_TO_CAMERA),
        tools=ToolsResult([tool]),
        failed=False,
        navigation=None,
    )
    stage = NavigationStage(PLAN, ToolsConfig(structure_warning_mm=warn_mm))
    stage.process(result)  # type: ignore[arg-type]
    return result.navigation[0]


def test_trajectory_figures_have_their_known_values() -> None:
    a = math.radians(10.0)
    nav = _navigate(np.array([0.003, 0.004, 0.010]), np.array([math.sin(a), 0.0, math.cos(a)]))
    t = nav.trajectories[0]
    assert t.lateral_offset_mm == pytest.approx(5.0)
    assert t.angle_deg == pytest.approx(10.0)
    assert t.remaining_depth_mm == pytest.approx(40.0)
    assert t.distance_to_target_mm == pytest.approx(math.hypot(5.0, 40.0))


@pytest.mark.parametrize(
    ("tip", "distance_mm", "warning"),
    [
        (_at(-0.030, 0.0, 0.0), 10.0, False),  # 10 mm outside a face
        (_at(-0.023, 0.0, 0.0), 3.0, True),  # 3 mm outside: under 5 mm
        (CUBE_CENTRE, -20.0, True),  # at the centre: 20 mm inside
        (_at(0.0, 0.019, 0.0), -1.0, True),  # 1 mm inside a face
    ],
)
def test_structure_distance_is_signed_and_inside_always_warns(tip, distance_mm, warning) -> None:
    nav = _navigate(tip, np.array([0.0, 0.0, 1.0]))
    assert nav.nearest_structure == "cube"
    assert nav.structure_distance_mm == pytest.approx(distance_mm, abs=1e-6)
    assert nav.structure_warning is warning
    assert nav.structure_inside is (distance_mm <= 0)
    # Inside warns even with no warning distance at all.
    assert _navigate(tip, np.array([0.0, 0.0, 1.0]), warn_mm=0.0).structure_warning is (
        distance_mm <= 0
    )


def test_inside_does_not_depend_on_face_orientation_and_survives_a_hole() -> None:
    centre = CUBE_CENTRE
    assert winding_number(_cube(), centre) == pytest.approx(1.0)
    assert winding_number(_cube(), _at(0.05, 0.0, 0.0)) == pytest.approx(0.0, abs=1e-9)
    assert signed_mesh_distance_m(_cube(faces_inward=True), centre) == pytest.approx(-0.02)
    # A mesh with a hole (one face's two triangles missing): deep inside is still inside.
    open_cube = _cube(drop_faces=2)
    assert 0.5 < abs(winding_number(open_cube, centre)) < 1.0
    assert signed_mesh_distance_m(open_cube, centre) == pytest.approx(-0.02)
    # An icosphere (not axis-aligned faces), just under its surface.
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.006)
    mesh = Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    assert signed_mesh_distance_m(mesh, np.array([0.0, 0.0, 0.005])) < 0
    assert signed_mesh_distance_m(mesh, np.array([0.0, 0.0, 0.007])) > 0


def test_compiled_distance_and_winding_match_trimesh_and_the_numpy_formula():
    """Against trimesh's closest points (a reference implementation) and the winding
    number's numpy formula, on an irregular mesh and points inside, outside and near it."""
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.02)
    mesh.vertices *= [1.0, 0.7, 1.3]  # an ellipsoid: no symmetry to hide a wrong region
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    rng = np.random.default_rng(3)
    points = rng.uniform(-0.03, 0.03, (200, 3))
    tri = v[f]
    for p in points:
        d = np.linalg.norm(closest_point(tri, np.repeat(p[None], len(tri), 0)) - p, axis=1).min()
        a, b, c = (tri[:, i] - p for i in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        det = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = (
            la * lb * lc
            + np.einsum("ij,ij->i", a, b) * lc
            + np.einsum("ij,ij->i", b, c) * la
            + np.einsum("ij,ij->i", c, a) * lb
        )
        want_w = np.sum(2.0 * np.arctan2(det, den)) / (4.0 * math.pi)
        got = signed_mesh_distance_m(Mesh(v, f), p)
        assert abs(got) == pytest.approx(d, abs=1e-12)
        assert winding_number(Mesh(v, f), p) == pytest.approx(want_w, abs=1e-12)
        assert (got < 0) == (abs(want_w) >= 0.5)  # the ellipsoid is closed and convex
    assert 20 < sum(signed_mesh_distance_m(Mesh(v, f), p) < 0 for p in points) < 180
