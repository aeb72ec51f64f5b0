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
from edge.jit import c_array, kernel
from edge.plan.model import Mesh, Plan
from edge.registration.types import RegistrationState
from edge.tools.types import Navigation, TrajectoryFigures


def _length(v: np.ndarray) -> float:
    """A 3-vector's length (as ``np.linalg.norm``, without its checks)."""
    return math.sqrt(float(v.dot(v)))


def trajectory_figures(
    name: str, target_m: np.ndarray, direction: np.ndarray, tip_m: np.ndarray, axis: np.ndarray
) -> TrajectoryFigures:
    """The tip (plan frame, m) and unit axis against the planned line through ``target_m``
    along the unit ``direction`` (entry -> target)."""
    to_target = target_m - tip_m
    along = float(to_target @ direction)
    lateral = _length(to_target - along * direction)
    angle = math.degrees(math.acos(min(max(float(axis @ direction), -1.0), 1.0)))
    return TrajectoryFigures(
        name, lateral * 1000.0, angle, along * 1000.0, _length(to_target) * 1000.0
    )


@kernel("float64(float64[:, ::1], int64[:, ::1], float64[::1])")
def mesh_distance_m(vertices: np.ndarray, faces: np.ndarray, p: np.ndarray) -> float:
    """Distance from ``p`` to a triangle mesh's surface (metres, unsigned): the nearest of
    the closest points on each triangle (Ericson 2005, Real-Time Collision Detection,
    5.1.5, by the point's Voronoi region of the triangle)."""
    best = np.inf
    for f in range(faces.shape[0]):
        i, j, k = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay, az = vertices[i, 0], vertices[i, 1], vertices[i, 2]
        abx, aby, abz = vertices[j, 0] - ax, vertices[j, 1] - ay, vertices[j, 2] - az
        acx, acy, acz = vertices[k, 0] - ax, vertices[k, 1] - ay, vertices[k, 2] - az
        apx, apy, apz = p[0] - ax, p[1] - ay, p[2] - az
        d1 = abx * apx + aby * apy + abz * apz
        d2 = acx * apx + acy * apy + acz * apz
        # p - b and p - c, from p - a.
        d3 = d1 - (abx * abx + aby * aby + abz * abz)
        d4 = d2 - (acx * abx + acy * aby + acz * abz)
        d5 = d1 - (abx * acx + aby * acy + abz * acz)
        d6 = d2 - (acx * acx + acy * acy + acz * acz)
        vc = d1 * d4 - d3 * d2
        vb = d5 * d2 - d1 * d6
        va = d3 * d6 - d5 * d4
        # The closest point as a + s ab + t ac.
        if d1 <= 0.0 and d2 <= 0.0:
            s, t = 0.0, 0.0  # vertex a
        elif d3 >= 0.0 and d4 <= d3:
            s, t = 1.0, 0.0  # vertex b
        elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
            s, t = d1 / (d1 - d3), 0.0  # edge ab
        elif d6 >= 0.0 and d5 <= d6:
            s, t = 0.0, 1.0  # vertex c
        elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
            s, t = 0.0, d2 / (d2 - d6)  # edge ac
        elif va <= 0.0 and d4 - d3 >= 0.0 and d5 - d6 >= 0.0:
            u = (d4 - d3) / ((d4 - d3) + (d5 - d6))  # edge bc
            s, t = 1.0 - u, u
        else:
            denom = va + vb + vc  # inside the face; 0 only for a degenerate triangle
            s, t = (vb / denom, vc / denom) if denom != 0.0 else (0.0, 0.0)
        ex = apx - s * abx - t * acx
        ey = apy - s * aby - t * acy
        ez = apz - s * abz - t * acz
        best = min(best, math.sqrt(ex * ex + ey * ey + ez * ez))
    return best


@kernel("float64(float64[:, ::1], int64[:, ::1], float64[::1])")
def winding_number_at(vertices: np.ndarray, faces: np.ndarray, p: np.ndarray) -> float:
    """The mesh's generalised winding number at ``p``: the solid angle its triangles
    subtend there over 4 pi (Jacobson et al. 2013; each triangle's solid angle by
    Van Oosterom & Strackee 1983). 1 inside a closed mesh (-1 when its faces point
    inwards), 0 outside; for a mesh with holes it falls smoothly between the two."""
    total = 0.0
    for f in range(faces.shape[0]):
        i, j, k = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay, az = vertices[i, 0] - p[0], vertices[i, 1] - p[1], vertices[i, 2] - p[2]
        bx, by, bz = vertices[j, 0] - p[0], vertices[j, 1] - p[1], vertices[j, 2] - p[2]
        cx, cy, cz = vertices[k, 0] - p[0], vertices[k, 1] - p[1], vertices[k, 2] - p[2]
        la = math.sqrt(ax * ax + ay * ay + az * az)
        lb = math.sqrt(bx * bx + by * by + bz * bz)
        lc = math.sqrt(cx * cx + cy * cy + cz * cz)
        det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
        ab = ax * bx + ay * by + az * bz
        bc = bx * cx + by * cy + bz * cz
        ca = cx * ax + cy * ay + cz * az
        total += 2.0 * math.atan2(det, la * lb * lc + ab * lc + bc * la + ca * lb)
    return total / (4.0 * math.pi)


class _Surface:
    """A structure's mesh as the kernels take it, with its bounding box."""

    def __init__(self, mesh: Mesh) -> None:
        self.vertices = c_array(mesh.vertices)
        self.faces = c_array(mesh.faces, np.int64)
        self.low = tuple(float(x) for x in self.vertices.min(axis=0))
        self.high = tuple(float(x) for x in self.vertices.max(axis=0))

    def signed_distance_m(self, point_m: np.ndarray) -> float:
        """:func:`signed_mesh_distance_m` of this mesh."""
        p = c_array(point_m)
        d = float(mesh_distance_m(self.vertices, self.faces, p))
        in_box = all(
            lo <= c <= hi for lo, c, hi in zip(self.low, p.tolist(), self.high, strict=True)
        )
        inside = in_box and abs(winding_number_at(self.vertices, self.faces, p)) >= 0.5
        return -d if inside else d


def winding_number(mesh: Mesh, point_m: np.ndarray) -> float:
    """:func:`winding_number_at` for a plan mesh."""
    surface = _Surface(mesh)
    return float(winding_number_at(surface.vertices, surface.faces, c_array(point_m)))


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
    return _Surface(mesh).signed_distance_m(point_m)


class PlanNavigation:
    """A plan's targets, trajectories and structures, prepared once for the figures of
    every frame (the planned directions, the meshes as the kernels take them)."""

    def __init__(self, plan: Plan) -> None:
        self.targets = list(plan.targets.items())
        self.trajectories = [
            (t.name, t.target, (t.target - t.entry) / _length(t.target - t.entry))
            for t in plan.trajectories
        ]
        self.structures = [(s.name, _Surface(s.mesh)) for s in plan.structures]

    def figures(
        self, tool: str, tip_patient_m: np.ndarray, axis_patient: np.ndarray, warn_mm: float
    ) -> Navigation:
        """The tool's figures from its tip (plan frame, m) and unit axis."""
        nav = Navigation(tool, True, tip_patient_m=tip_patient_m, axis_patient=axis_patient)
        for name, target in self.targets:
            nav.target_names.append(name)
            nav.target_distance_mm.append(_length(target - tip_patient_m) * 1000.0)
        nav.trajectories = [
            trajectory_figures(name, target, direction, tip_patient_m, axis_patient)
            for name, target, direction in self.trajectories
        ]
        for name, surface in self.structures:
            d_mm = surface.signed_distance_m(tip_patient_m) * 1000.0
            if not d_mm >= nav.structure_distance_mm:  # also replaces the initial NaN
                nav.nearest_structure, nav.structure_distance_mm = name, d_mm
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
        self._navigation = PlanNavigation(plan)

    def process(self, result: FrameResult) -> None:
        reg = result.registration
        registered = (
            reg is not None
            and reg.state is RegistrationState.TRACKING
            and reg.patient_to_camera is not None
            and not result.failed
        )
        camera_to_patient = None
        out = []
        for tool in result.tools.tools if result.tools is not None else []:
            missing = ([] if registered else ["registration"]) + ([] if tool.current else ["tool"])
            if missing:
                out.append(Navigation(tool.name, False, missing))
                continue
            assert reg is not None and reg.patient_to_camera is not None
            assert tool.tip_camera_m is not None and tool.axis_camera is not None
            if camera_to_patient is None:  # once a frame, for every tool
                camera_to_patient = geometry.invert(reg.patient_to_camera)
            tip = geometry.apply(camera_to_patient, tool.tip_camera_m[None])[0]
            axis = camera_to_patient[:3, :3] @ tool.axis_camera
            out.append(
                self._navigation.figures(tool.name, tip, axis, self.config.structure_warning_mm)
            )
        result.navigation = out
