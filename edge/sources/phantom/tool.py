"""A tracked tool in the phantom: its marker faces, its shaft, its motion and its truth.

The tool is rendered from its definition file (``hardware/tools/NAME.toml``): the
markers that share a plane become one white face (:class:`TexturedPlane`, drawn exactly
by a homography) with the markers printed on it, and the shaft (body to tip) a thin grey
cylinder (:class:`Surface`). Both go through the same depth noise as the head.

The tool scenarios (`needle-approach`, `tool-occluded`) move the tip towards the plan's
trajectory's entry and target: first along the planned line, then off it (lateral offset
and tilt), with a slow roll about the axis. `tool-occluded` hides it behind a gloved hand
for some frames. `tool-range` brings the guide from 0.7 m to 0.4 m from the camera beside
the head (:func:`range_poses`), so that its accuracy is measured over that range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge import geometry
from edge.errors import ToolError
from edge.frames import GroundTruth, Intrinsics
from edge.sources.phantom.face import FaceModel
from edge.sources.phantom.render import Renderer, Rendering, Surface, TexturedPlane
from edge.tools.definition import ToolSpec

TEXTURE_PX_PER_MM = (
    3.6  # >2x the image sampling at 0.4 m (1.5 px/mm); 20, 25, 30 mm markers: whole px per module
)
FACE_MARGIN_MM = 5.0  # white around the markers on a face (their quiet zone)
SHAFT_RADIUS_M = 0.0015
SHAFT_RGB = (170, 170, 175)
GLOVE_RGB = (120, 170, 210)
GLOVE_SIZE_M = 0.09
GLOVE_IN_FRONT_M = 0.06  # between the camera and the tool's body
VISIBLE_MAX_DEG = 70.0  # a marker seen more obliquely than this counts as not visible
# Frames (fractions of the run) in which `tool-occluded` covers the tool.
OCCLUDED_SPANS = ((0.30, 0.40), (0.62, 0.64), (0.80, 0.81))


@dataclass(frozen=True)
class ToolFace:
    """One flat face of the tool: its texture and its plane-to-tool transform."""

    plane: TexturedPlane
    plane_to_tool: np.ndarray
    normal_tool: np.ndarray
    centre_tool_m: np.ndarray


def tool_faces(spec: ToolSpec) -> list[ToolFace]:
    """The tool's markers grouped by plane, each group printed on one white face."""
    from edge.tools.sheet import marker_image

    groups: list[list[int]] = []
    for i, m in enumerate(spec.markers):
        for g in groups:
            ref = spec.markers[g[0]]
            same_plane = (
                float(ref.normal @ m.normal) > 0.9999
                and abs(float(ref.normal @ (m.centre_m - ref.centre_m))) < 1e-4
            )
            if same_plane:
                g.append(i)
                break
        else:
            groups.append([i])
    faces = []
    for g in groups:
        first = spec.markers[g[0]]
        c = first.corners_m
        u = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
        v = (c[3] - c[0]) / np.linalg.norm(c[3] - c[0])
        n = np.cross(u, v)  # the plane's +z: into the face (a TexturedPlane faces -z)
        corners = np.concatenate([spec.markers[i].corners_m for i in g])
        uv = np.stack([(corners - c[0]) @ u, (corners - c[0]) @ v], axis=1) * 1000.0
        # Corner 0 of the first marker on a texture pixel's edge: markers placed exactly.
        lo = -np.ceil((FACE_MARGIN_MM - uv.min(axis=0)) * TEXTURE_PX_PER_MM) / TEXTURE_PX_PER_MM
        hi = uv.max(axis=0) + FACE_MARGIN_MM
        size_px = np.ceil((hi - lo) * TEXTURE_PX_PER_MM).astype(int)
        tex = np.full((size_px[1], size_px[0], 3), 255, np.uint8)
        for i in g:
            m = spec.markers[i]
            own = (m.corners_m[1] - m.corners_m[0]) / m.size_m
            if float(own @ u) < 0.9999:
                raise ToolError(
                    f"{spec.path or spec.name}: marker {m.id} is turned against marker "
                    f"{first.id} on the same face; the phantom draws a face's markers upright",
                    "list its corners in the same order as its neighbours'",
                )
            mc = (m.corners_m[0] - c[0]) @ np.stack([u, v], axis=1) * 1000.0
            side = round(m.size_m * 1000.0 * TEXTURE_PX_PER_MM)
            x0, y0 = np.round((mc - lo) * TEXTURE_PX_PER_MM).astype(int)
            img = marker_image(spec.dictionary, m.id, side)
            tex[y0 : y0 + side, x0 : x0 + side] = img[..., None]
        m_per_px = 0.001 / TEXTURE_PX_PER_MM
        # Texture pixel (i, j) sits at plane point ((i - ox) m, (j - oy) m): origin at c[0].
        origin = (-lo[0] * TEXTURE_PX_PER_MM - 0.5, -lo[1] * TEXTURE_PX_PER_MM - 0.5)
        to_tool = np.eye(4)
        to_tool[:3, :3] = np.column_stack([u, v, n])
        to_tool[:3, 3] = c[0]
        centre = c[0] + ((lo + hi) / 2000.0) @ np.stack([u, v])
        faces.append(ToolFace(TexturedPlane(tex, m_per_px, origin), to_tool, -n, centre))
    return faces


def shaft_surface(spec: ToolSpec) -> Surface:
    """The shaft: a thin cylinder along the axis from where the markers end to the tip."""
    a = spec.axis
    corners = np.concatenate([m.corners_m for m in spec.markers])
    start_along = float((corners @ a).max())
    length = float(spec.tip_m @ a) - start_along
    base = spec.tip_m - a * length
    e1 = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    s = np.linspace(0.0, max(length, 0.0), max(int(length / 0.0005), 2))
    phi = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
    ring = np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2
    points = base + s[:, None, None] * a + SHAFT_RADIUS_M * ring[None]
    normals = np.broadcast_to(ring[None], points.shape)
    shade = (0.75 + 0.25 * np.cos(phi))[None, :, None] * np.asarray(SHAFT_RGB, np.float32)
    colors = np.broadcast_to(shade, points.shape).astype(np.uint8)
    return Surface.from_rows(points, normals, colors, 0.0005)


def glove_plane() -> TexturedPlane:
    px = 90
    tex = np.empty((px, px, 3), np.uint8)
    tex[:] = GLOVE_RGB
    return TexturedPlane(tex, GLOVE_SIZE_M / px, (px / 2.0, px / 2.0))


def draw_tool(
    renderer: Renderer,
    out: Rendering,
    faces: list[ToolFace],
    shaft: Surface,
    tool_to_view: np.ndarray,
) -> None:
    """The tool's faces that face the camera, and its shaft, into ``out`` (depth-tested)."""
    R, t = tool_to_view[:3, :3], tool_to_view[:3, 3]
    for f in faces:
        centre = R @ f.centre_tool_m + t
        if float((R @ f.normal_tool) @ centre) < 0:  # faces the camera
            renderer.draw_plane(out, f.plane, tool_to_view @ f.plane_to_tool)
    renderer.draw_surfaces(out, [(shaft, tool_to_view)])


def glove_to_camera(tool_to_camera: np.ndarray, spec: ToolSpec) -> np.ndarray:
    """A hand between the camera and the tool's markers, facing the camera."""
    centre = tool_to_camera[:3, :3] @ np.mean([m.centre_m for m in spec.markers], axis=0)
    centre = centre + tool_to_camera[:3, 3]
    pose = np.eye(4)
    pose[:3, 3] = centre * (1.0 - GLOVE_IN_FRONT_M / float(np.linalg.norm(centre)))
    return pose


def occluded(index: int, frames: int) -> bool:
    f = index / max(frames - 1, 1)
    return any(lo <= f < hi for lo, hi in OCCLUDED_SPANS)


def markers_visible(
    spec: ToolSpec, tool_to_camera: np.ndarray, clean_depth_m: np.ndarray, intrinsics: Intrinsics
) -> bool:
    """Whether at least one marker faces the camera (within VISIBLE_MAX_DEG), lies inside
    the image and is not covered (the rendered depth at its centre is the marker's)."""
    h, w = clean_depth_m.shape
    R, t = tool_to_camera[:3, :3], tool_to_camera[:3, 3]
    for m in spec.markers:
        corners = m.corners_m @ R.T + t
        centre = corners.mean(axis=0)
        n = R @ m.normal
        if float(-(n @ centre) / np.linalg.norm(centre)) < np.cos(np.radians(VISIBLE_MAX_DEG)):
            continue
        px = intrinsics.project(np.vstack([corners, centre]))
        if not ((px[:, 0] >= 0) & (px[:, 0] < w - 1) & (px[:, 1] >= 0) & (px[:, 1] < h - 1)).all():
            continue
        u, v = (round(x) for x in px[4])
        if abs(float(clean_depth_m[v, u]) - float(centre[2])) < 0.003:
            return True
    return False


def _rotation_taking(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a to unit vector b (Rodrigues)."""
    v = np.cross(a, b)
    c = float(a @ b)
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        p = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        p /= np.linalg.norm(p)
        return 2.0 * np.outer(p, p) - np.eye(3)
    k = geometry.skew(v)
    return np.eye(3) + k + k @ k / (1.0 + c)


def _sideways(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors across the unit vector ``d``: level (d x y), and d x that."""
    side = np.cross(d, [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    return side, np.cross(d, side)


def _axis_angle(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    return geometry.axis_angle_to_matrix(axis / np.linalg.norm(axis), angle_rad)


def _smooth(x: float) -> float:
    x = min(max(float(x), 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def approach_poses(
    spec: ToolSpec, entry_face_m: np.ndarray, target_face_m: np.ndarray, frames: int
) -> np.ndarray:
    """(frames, 4, 4) ``tool_to_face``: the tip from 80 mm before the entry to 10 mm past it
    along the planned line (first half), then back out to 40 mm before it while moving
    8 mm aside and tilting 8 deg, and in again to 5 mm past it (second half), rolling
    slowly about the axis. The motion is continuous (no jumps between frames)."""
    d = (target_face_m - entry_face_m) / np.linalg.norm(target_face_m - entry_face_m)
    side, up = _sideways(d)
    f = np.arange(frames) / max(frames - 1, 1)
    out = np.empty((frames, 4, 4))
    for i, fi in enumerate(f):
        if fi < 0.5:
            depth_m = -0.080 + 0.090 * _smooth(fi / 0.45)
            lateral_m, tilt_rad = 0.0, 0.0
        else:  # out again, moved aside and tilted, then in again along the tilted line
            g = (fi - 0.5) / 0.5
            depth_m = 0.010 - 0.050 * _smooth(g / 0.35) + 0.045 * _smooth((g - 0.45) / 0.5)
            lateral_m = 0.008 * _smooth(g / 0.35)
            tilt_rad = float(np.radians(8.0)) * _smooth(g / 0.35)
        direction = _axis_angle(up, tilt_rad) @ d
        roll = float(np.radians(35.0) * np.sin(2 * np.pi * fi))
        R = _axis_angle(direction, roll) @ _rotation_taking(spec.axis, direction)
        tip = entry_face_m + depth_m * d + lateral_m * side
        out[i] = np.eye(4)
        out[i, :3, :3] = R
        out[i, :3, 3] = tip - R @ spec.tip_m
    return out


class ToolScene:
    """The scenario's tool in the phantom: built on open, drawn and told per frame."""

    def __init__(self, spec: ToolSpec, motion: str = "approach") -> None:
        self.spec = spec
        self.motion = motion
        self.faces = tool_faces(spec)
        self.shaft = shaft_surface(spec)
        self.glove = glove_plane()
        self._tool_to_face = np.zeros((0, 4, 4))
        self._frames = 0

    @classmethod
    def load(cls, name: str, tools_dir: str, motion: str = "approach") -> ToolScene:
        from edge.tools.definition import load_tool

        return cls(load_tool(name, tools_dir), motion)

    def start(self, face: FaceModel, frames: int) -> None:
        """Plan the motion towards the face's planned frontal trajectory."""
        from edge.sources.phantom.plan_out import plan_geometry

        geo = plan_geometry(face)
        entry, target = geo["entry_frontal"], geo["frontal_sinus"]
        if self.motion == "pivot":
            self._tool_to_face = pivot_poses(self.spec, entry, target - entry, frames)
        elif self.motion == "touch":
            points = [face.landmarks_m[i] for i in TOUCHED_LANDMARKS]
            self._tool_to_face = touch_poses(self.spec, points, frames)
        elif self.motion == "range":
            from edge.config import PhantomConfig
            from edge.sources.phantom.scenarios import tool_head_pose

            # Planned in the camera frame for the head where the tool scenarios hold it at
            # the phantom's default distance (another distance moves the tool with it).
            camera_to_face = geometry.invert(tool_head_pose(PhantomConfig().distance_m))
            self._tool_to_face = camera_to_face @ range_poses(self.spec, frames)
        else:
            self._tool_to_face = approach_poses(self.spec, entry, target, frames)
        self._frames = frames

    def occluded(self, index: int, occluding: bool) -> bool:
        return occluding and occluded(index, self._frames)

    def draw(
        self,
        renderer: Renderer,
        out: Rendering,
        face_to_view: np.ndarray,
        index: int,
        occluding: bool,
    ) -> None:
        tool_to_view = face_to_view @ self._tool_to_face[index]
        draw_tool(renderer, out, self.faces, self.shaft, tool_to_view)
        if self.occluded(index, occluding):
            renderer.draw_plane(out, self.glove, glove_to_camera(tool_to_view, self.spec))

    def add_truth(
        self,
        truth: GroundTruth,
        face_to_camera: np.ndarray,
        clean_depth_m: np.ndarray,
        index: int,
        intrinsics: Intrinsics,
    ) -> None:
        """Fill the frame's truth with the tool's pose, tip, axis and visibility."""
        pose = face_to_camera @ self._tool_to_face[index]
        truth.tool_name = self.spec.name
        truth.tool_to_camera = pose
        truth.tool_tip_camera_m = pose[:3, :3] @ self.spec.tip_m + pose[:3, 3]
        truth.tool_axis_camera = pose[:3, :3] @ self.spec.axis
        truth.tool_visible = markers_visible(self.spec, pose, clean_depth_m, intrinsics)


def pivot_poses(
    spec: ToolSpec, tip_face_m: np.ndarray, axis_face: np.ndarray, frames: int
) -> np.ndarray:
    """(frames, 4, 4) ``tool_to_face``: the tip resting at ``tip_face_m`` (a divot) while the
    tool swings in a cone about ``axis_face`` (15 to 25 deg off it, twice round), as in a
    pivot calibration."""
    d = axis_face / np.linalg.norm(axis_face)
    side, up = _sideways(d)
    f = np.arange(frames) / max(frames - 1, 1)
    out = np.empty((frames, 4, 4))
    for i, fi in enumerate(f):
        azimuth = 4.0 * np.pi * fi
        cone = np.radians(20.0 + 5.0 * np.sin(6.0 * np.pi * fi))
        tilt_axis = np.cos(azimuth) * side + np.sin(azimuth) * up
        direction = _axis_angle(tilt_axis, float(cone)) @ d
        R = _rotation_taking(spec.axis, direction)
        out[i] = np.eye(4)
        out[i, :3, :3] = R
        out[i, :3, 3] = tip_face_m - R @ spec.tip_m
    return out


RANGE_M = (0.70, 0.40)  # the tool's origin from the camera, first and last frame
RANGE_RAY = (0.30, 0.05, 1.0)  # the line of sight it comes along: right of the head
RANGE_TILT_DEG = 25.0  # its axis off that line (two faces seen), turning round it
RANGE_ROLL_DEG = 30.0


def range_poses(spec: ToolSpec, frames: int) -> np.ndarray:
    """(frames, 4, 4) ``tool_to_camera``: the tool's origin (the guide's back face) comes at a
    steady speed along one line of sight, from RANGE_M[0] to RANGE_M[1] from the camera
    (as many frames in each 0.1 m band), beside the head; its axis points away from the
    camera, tilted RANGE_TILT_DEG off the line of sight in a direction that turns once
    round it, and it rolls +/- RANGE_ROLL_DEG about its axis."""
    ray = np.asarray(RANGE_RAY, float) / np.linalg.norm(RANGE_RAY)
    across, up = _sideways(ray)
    f = np.arange(frames) / max(frames - 1, 1)
    out = np.empty((frames, 4, 4))
    for i, fi in enumerate(f):
        turn = 2.0 * np.pi * fi
        tilt_axis = np.cos(turn) * across + np.sin(turn) * up
        direction = _axis_angle(tilt_axis, float(np.radians(RANGE_TILT_DEG))) @ ray
        roll = float(np.radians(RANGE_ROLL_DEG) * np.sin(3.0 * np.pi * fi))
        R = _axis_angle(direction, roll) @ _rotation_taking(spec.axis, direction)
        out[i] = np.eye(4)
        out[i, :3, :3] = R
        out[i, :3, 3] = (RANGE_M[0] + (RANGE_M[1] - RANGE_M[0]) * fi) * ray
    return out


TOUCHED_LANDMARKS = (151, 168, 6)  # mid-forehead, nasion, nose bridge (face landmarks)


def touch_poses(spec: ToolSpec, points_face_m: list[np.ndarray], frames: int) -> np.ndarray:
    """(frames, 4, 4) ``tool_to_face``: the tip touches each point in turn (coming in from
    40 mm out, holding, leaving), the shaft tilted 35 deg up from the face's forward
    direction and the markers turned towards the camera (in front of the face)."""
    forward = np.array([0.0, 0.0, 1.0])  # into the face (face frame z points backwards)
    direction = _axis_angle(np.array([1.0, 0.0, 0.0]), float(np.radians(-35.0))) @ forward
    # The tool frame's axis goes along ``direction``; the markers' normal (the mean of the
    # tool's marker normals) as near the camera (-forward) as that allows.
    normal = np.mean([m.normal for m in spec.markers], axis=0)
    facing = -forward - (-forward @ direction) * direction
    facing /= np.linalg.norm(facing)
    n_tool = normal - (normal @ spec.axis) * spec.axis
    n_tool /= np.linalg.norm(n_tool)
    tool_basis = np.column_stack([spec.axis, n_tool, np.cross(spec.axis, n_tool)])
    face_basis = np.column_stack([direction, facing, np.cross(direction, facing)])
    R = face_basis @ tool_basis.T
    f = np.arange(frames) / max(frames - 1, 1)
    out = np.empty((frames, 4, 4))
    share = 1.0 / len(points_face_m)
    for i, fi in enumerate(f):
        k = min(int(fi / share), len(points_face_m) - 1)
        g = (fi - k * share) / share  # 0..1 within this point's turn
        away_m = 0.040 * (1.0 - _smooth(g / 0.35) + _smooth((g - 0.7) / 0.3))
        tip = points_face_m[k] - away_m * direction
        out[i] = np.eye(4)
        out[i, :3, :3] = R
        out[i, :3, 3] = tip - R @ spec.tip_m
    return out
