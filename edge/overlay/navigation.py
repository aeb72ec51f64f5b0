"""Navigation figures: where the tool's tip is relative to the plan (stage "navigation").

Runs after the overlay stage. For every tracked tool it maps the tip and axis into plan
coordinates with the registration (``camera_to_patient = inv(patient_to_camera)``) and
gives the distance from the tip to each target; for each trajectory (entry -> target)
the lateral offset of the tip from the planned line, the angle between the tool's axis
and the planned direction, and the depth remaining along it; and the distance to the
nearest structure to avoid (signed: negative inside it), with a warning under
``tools.structure_warning_mm`` and always inside.
Figures exist only when both the registration and the tool are current this frame.
"""

from __future__ import annotations

import math

import numpy as np

from edge import geometry
from edge.config import ToolsConfig
from edge.frames import FrameResult
from edge.plan.model import Mesh, Plan
from edge.registration.types import RegistrationState
from edge.tools.types import Navigation, TrajectoryFigures


def trajectory_figures(
    name: str, entry_m: np.ndarray, target_m: np.ndarray, tip_m: np.ndarray, axis: np.ndarray
) -> TrajectoryFigures:
    """The tip (plan frame, m) and unit axis against the planned line entry -> target."""
    d = (target_m - entry_m) / np.linalg.norm(target_m - entry_m)
    to_target = target_m - tip_m
    along = float(to_target @ d)
    lateral = float(np.linalg.norm(to_target - along * d))
    angle = math.degrees(math.acos(float(np.clip(axis @ d, -1.0, 1.0))))
    return TrajectoryFigures(
        name, lateral * 1000.0, angle, along * 1000.0, float(np.linalg.norm(to_target)) * 1000.0
    )


def mesh_distance_m(mesh: Mesh, point_m: np.ndarray) -> float:
    """Distance from a point to a triangle mesh's surface (metres, unsigned)."""
    from trimesh.triangles import closest_point

    v, f = mesh.vertices, mesh.faces
    vertex_d = np.linalg.norm(v - point_m, axis=1)
    tri = v[f]
    longest = float(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max())
    near = np.flatnonzero(vertex_d[f].min(axis=1) <= vertex_d.min() + longest)
    closest = closest_point(tri[near], np.repeat(point_m[None], near.size, axis=0))
    return float(np.linalg.norm(closest - point_m, axis=1).min())


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def winding_number(mesh: Mesh, point_m: np.ndarray) -> float:
    """The mesh's generalised winding number at a point: the solid angle its triangles
    subtend there over 4 pi (Jacobson et al. 2013; each triangle's solid angle by
    Van Oosterom & Strackee 1983). 1 inside a closed mesh (-1 when its faces point
    inwards), 0 outside; for a mesh with holes it falls smoothly between the two."""
    tri = mesh.vertices[mesh.faces] - point_m  # (F, 3, 3)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    det = _dot(a, np.cross(b, c))
    denominator = la * lb * lc + _dot(a, b) * lc + _dot(b, c) * la + _dot(c, a) * lb
    return float(np.sum(2.0 * np.arctan2(det, denominator)) / (4.0 * math.pi))


def signed_mesh_distance_m(mesh: Mesh, point_m: np.ndarray) -> float:
    """Distance from a point to a structure's surface (metres): negative inside it, 0 on it.

    Inside is where the winding number is at least 1/2 in size (its triangles' orientation
    does not matter), looked at only within the mesh's bounding box, so the cost is one
    pass over the triangles when the tip is near the structure and none otherwise. A mesh
    with holes (not watertight) counts as inside where it mostly encloses the point: deep
    inside it still does, near a hole the point may read as outside (its distance is then
    still the distance to the surface, and the warning under ``structure_warning_mm``
    still fires near it).
    """
    d = mesh_distance_m(mesh, point_m)
    v = mesh.vertices
    in_box = bool(((point_m >= v.min(axis=0)) & (point_m <= v.max(axis=0))).all())
    inside = in_box and abs(winding_number(mesh, point_m)) >= 0.5
    return -d if inside else d


def navigation_figures(
    plan: Plan, tool: str, tip_patient_m: np.ndarray, axis_patient: np.ndarray, warn_mm: float
) -> Navigation:
    nav = Navigation(tool, True, tip_patient_m=tip_patient_m, axis_patient=axis_patient)
    for name, target in plan.targets.items():
        nav.target_names.append(name)
        nav.target_distance_mm.append(float(np.linalg.norm(target - tip_patient_m)) * 1000.0)
    nav.trajectories = [
        trajectory_figures(t.name, t.entry, t.target, tip_patient_m, axis_patient)
        for t in plan.trajectories
    ]
    for s in plan.structures:
        d_mm = signed_mesh_distance_m(s.mesh, tip_patient_m) * 1000.0
        if not d_mm >= nav.structure_distance_mm:  # also replaces the initial NaN
            nav.nearest_structure, nav.structure_distance_mm = s.name, d_mm
    # Inside a structure (distance <= 0) always warns, whatever the threshold.
    d = nav.structure_distance_mm
    nav.structure_inside = bool(d <= 0.0)
    nav.structure_warning = bool(d <= 0.0 or d < warn_mm)
    return nav


class NavigationStage:
    """Puts each tool's :class:`~edge.tools.types.Navigation` on ``result.navigation``."""

    name = "navigation"

    def __init__(self, plan: Plan, config: ToolsConfig | None = None) -> None:
        self.plan = plan
        self.config = config or ToolsConfig()

    def process(self, result: FrameResult) -> None:
        reg = result.registration
        registered = (
            reg is not None
            and reg.state is RegistrationState.TRACKING
            and reg.patient_to_camera is not None
            and not result.failed
        )
        out = []
        for tool in result.tools.tools if result.tools is not None else []:
            missing = ([] if registered else ["registration"]) + ([] if tool.current else ["tool"])
            if missing:
                out.append(Navigation(tool.name, False, missing))
                continue
            assert reg is not None and reg.patient_to_camera is not None
            assert tool.tip_camera_m is not None and tool.axis_camera is not None
            camera_to_patient = geometry.invert(reg.patient_to_camera)
            tip = geometry.apply(camera_to_patient, tool.tip_camera_m[None])[0]
            axis = camera_to_patient[:3, :3] @ tool.axis_camera
            out.append(
                navigation_figures(
                    self.plan, tool.name, tip, axis, self.config.structure_warning_mm
                )
            )
        result.navigation = out
