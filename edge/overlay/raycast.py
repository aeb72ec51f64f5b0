"""Ray-mesh intersection for the HUD's "distance to skin along the view ray"."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.jit import kernel

# Triangles per leaf and leaves per group of the culling hierarchy: a ray tests every
# group's sphere, the leaves of the groups it passes near, then the triangles of the
# leaves it passes near. 16 and 8 cast the phantom's three target rays fastest of leaves
# of 16 or 32 and groups of 8 or 16 (issue 15: 8.9 us, 15.8 with 32 and no groups).
LEAF_TRIANGLES = 16
GROUP_LEAVES = 8


def _morton_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Indices that sort ``points`` (N, 3) along a Z-order curve (nearby points stay near)."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    scale = (2**bits - 1) / np.maximum(hi - lo, 1e-300)
    q = ((points - lo) * scale).astype(np.uint64)
    code = np.zeros(len(points), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


_MESH = (
    "float64[:, ::1], float64[::1], float64[:, ::1], float64[::1], float64[:, ::1], float64[::1],"
    " float64[:, ::1], float64[:, ::1], float64[:, ::1], float64"
)


@kernel(
    "boolean(float64[:, ::1], float64[::1], int64, float64, float64, float64, float64, float64,"
    " float64, float64)"
)
def _misses(centres, radii_sq, i, ox, oy, oz, ux, uy, uz, eps):
    """Whether the line through ``o`` along unit ``u`` passes sphere ``i`` farther than its
    radius (with a relative margin of 1e-9 and ``eps``)."""
    rx, ry, rz = centres[i, 0] - ox, centres[i, 1] - oy, centres[i, 2] - oz
    along = rx * ux + ry * uy + rz * uz
    return rx * rx + ry * ry + rz * rz - along * along > radii_sq[i] * (1 + 1e-9) + eps


@kernel(f"float64(float64, float64, float64, float64, float64, float64, {_MESH})")
def _first_hit(
    ox, oy, oz, dx, dy, dz, groups, groups_sq, leaves, leaves_sq, centres, radii_sq, p0, e1, e2, eps
):
    """The ray's nearest hit ``t`` (NaN where none): group spheres, leaf spheres, triangle
    spheres, then Möller-Trumbore on the triangles the ray passes near (see
    :class:`MeshRaycaster`). A sphere is passed near when the line's distance from its
    centre is at most its radius, with a relative margin: culling must never lose a hit."""
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    if not np.isfinite(norm) or norm <= eps:
        return np.nan
    if not (np.isfinite(ox) and np.isfinite(oy) and np.isfinite(oz)):
        return np.nan
    count = p0.shape[0]
    ux, uy, uz = dx / norm, dy / norm, dz / norm
    best = np.inf
    for group in range(groups.shape[0]):
        if _misses(groups, groups_sq, group, ox, oy, oz, ux, uy, uz, eps):
            continue
        for leaf in range(group * GROUP_LEAVES, min((group + 1) * GROUP_LEAVES, leaves.shape[0])):
            if _misses(leaves, leaves_sq, leaf, ox, oy, oz, ux, uy, uz, eps):
                continue
            for k in range(leaf * LEAF_TRIANGLES, min((leaf + 1) * LEAF_TRIANGLES, count)):
                if _misses(centres, radii_sq, k, ox, oy, oz, ux, uy, uz, eps):
                    continue
                ax, ay, az = e1[k, 0], e1[k, 1], e1[k, 2]
                bx, by, bz = e2[k, 0], e2[k, 1], e2[k, 2]
                px, py, pz = dy * bz - dz * by, dz * bx - dx * bz, dx * by - dy * bx
                det = ax * px + ay * py + az * pz
                if not abs(det) > eps:
                    continue
                inv = 1.0 / det
                tx, ty, tz = ox - p0[k, 0], oy - p0[k, 1], oz - p0[k, 2]
                u = (tx * px + ty * py + tz * pz) * inv
                qx, qy, qz = ty * az - tz * ay, tz * ax - tx * az, tx * ay - ty * ax
                w = (qx * dx + qy * dy + qz * dz) * inv
                t = (bx * qx + by * qy + bz * qz) * inv
                if u >= 0 and w >= 0 and u + w <= 1 and t > eps and t < best:
                    best = t
    return best if best < np.inf else np.nan


_READONLY_ROWS = "Array(float64, 2, 'C', readonly=True)"


@kernel(f"float64[::1]({_READONLY_ROWS}, {_READONLY_ROWS}, {_MESH})")
def _first_hits(o, d, groups, groups_sq, leaves, leaves_sq, centres, radii_sq, p0, e1, e2, eps):
    """:func:`_first_hit` of each ray (origins ``o``, directions ``d``)."""
    out = np.empty(o.shape[0])
    for i in range(o.shape[0]):
        out[i] = _first_hit(
            o[i, 0], o[i, 1], o[i, 2], d[i, 0], d[i, 1], d[i, 2],
            groups, groups_sq, leaves, leaves_sq, centres, radii_sq, p0, e1, e2, eps,
        )  # fmt: skip
    return out


@kernel(f"float64[::1]({_READONLY_ROWS}, {_READONLY_ROWS}, {_MESH})")
def _depths_mm(
    pose, points, groups, groups_sq, leaves, leaves_sq, centres, radii_sq, p0, e1, e2, eps
):
    """For each point, how far (mm) it lies beyond the first hit on the ray to it from the
    camera centre (``pose``: rigid mesh-to-camera); NaN on a miss or a hit beyond it."""
    # The camera centre in the mesh's frame: -R^T t.
    eye = np.empty(3)
    for j in range(3):
        eye[j] = -(pose[0, j] * pose[0, 3] + pose[1, j] * pose[1, 3] + pose[2, j] * pose[2, 3])
    out = np.full(points.shape[0], np.nan)
    for i in range(points.shape[0]):
        dx, dy, dz = points[i, 0] - eye[0], points[i, 1] - eye[1], points[i, 2] - eye[2]
        t = _first_hit(
            eye[0], eye[1], eye[2], dx, dy, dz,
            groups, groups_sq, leaves, leaves_sq, centres, radii_sq, p0, e1, e2, eps,
        )  # fmt: skip
        if t <= 1.0:  # t = 1 at the point
            out[i] = (1.0 - t) * np.sqrt(dx * dx + dy * dy + dz * dz) * 1000.0
    return out


def _enclosing(
    centres: np.ndarray, radii_sq: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Spheres holding each run of ``size`` consecutive spheres (the last run may be
    short): centred on their centres' mean, inflated by a part per million and a
    nanometre (rounding must never cull a hit). Returns (centres, squared radii)."""
    count = len(centres)
    if count == 0:
        return np.zeros((0, 3)), np.zeros(0)
    start = np.arange(0, count, size)
    run_of = np.arange(count) // size
    sizes = np.bincount(run_of, minlength=len(start))
    outer = np.add.reduceat(centres, start, axis=0) / sizes[:, None]
    reach = np.linalg.norm(centres - outer[run_of], axis=1) + np.sqrt(radii_sq)
    return outer, (np.maximum.reduceat(reach, start) * (1 + 1e-6) + 1e-9) ** 2


class MeshRaycaster:
    """First hits of rays on one triangle mesh, with the per-mesh work done once.

    Möller & Trumbore, "Fast, minimum storage ray-triangle intersection",
    J. Graphics Tools 2(1), 1997. Culling is a three-level sphere hierarchy
    built once per mesh: triangles sorted along a Z-order curve fall into
    leaves of :data:`LEAF_TRIANGLES`, each with a sphere holding its
    triangles' bounding spheres, and runs of :data:`GROUP_LEAVES` leaves into
    groups with a sphere holding theirs. A ray tests every group's sphere, the
    spheres of the leaves in the groups it passes near, then the bounding
    sphere of every triangle in the leaves it passes near, and only the
    triangles it passes near get the full test. A triangle a ray can hit is
    never culled (each sphere contains those below it), so the hits are the
    brute-force ones. The traversal is a compiled kernel. Raises ValueError on
    a malformed mesh.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        v = np.asarray(vertices, dtype=np.float64)
        f = np.asarray(faces)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"need (N, 3) vertices and (M, 3) faces, got {v.shape}, {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError("face indices out of range of the vertices")
        tri = v[f] if f.size else np.zeros((0, 3, 3))
        tri = tri[_morton_order(tri.mean(axis=1))]
        self.p0 = np.ascontiguousarray(tri[:, 0])
        self.e1 = tri[:, 1] - self.p0
        self.e2 = tri[:, 2] - self.p0
        self.centres = np.ascontiguousarray(tri.mean(axis=1))
        self.radii_sq = ((tri - self.centres[:, None, :]) ** 2).sum(axis=2).max(axis=1)
        # Leaves: consecutive runs of the Z-ordered triangles (the last may be short);
        # groups: consecutive runs of leaves.
        self.leaf_centres, self.leaf_radii_sq = _enclosing(
            self.centres, self.radii_sq, LEAF_TRIANGLES
        )
        self.group_centres, self.group_radii_sq = _enclosing(
            self.leaf_centres, self.leaf_radii_sq, GROUP_LEAVES
        )

    def first_hit(
        self, origins: np.ndarray, directions: np.ndarray, eps: float = 1e-12
    ) -> np.ndarray:
        """Distance along each ray to the nearest triangle it hits (NaN where none).

        ``origins`` and ``directions`` are (R, 3) in the mesh's frame; the
        returned ``t`` is in units of the direction's length (``origin + t *
        direction`` is the hit); only ``t > 0`` counts; both triangle sides count.
        """
        o = np.asarray(origins, dtype=np.float64)
        d = np.asarray(directions, dtype=np.float64)
        if o.ndim != 2 or o.shape[1] != 3 or d.shape != o.shape:
            raise ValueError(
                f"origins and directions must both be (R, 3), got {o.shape}, {d.shape}"
            )
        return _first_hits(np.ascontiguousarray(o), np.ascontiguousarray(d), *self._mesh(eps))

    def depths_below_first_hit_mm(
        self, mesh_to_camera: np.ndarray, points: np.ndarray, eps: float = 1e-12
    ) -> np.ndarray:
        """How far (mm) each of the (N, 3) ``points`` (mesh frame) lies beyond the first
        hit on the ray to it from the camera centre; NaN where the ray misses or the first
        hit is beyond the point. ``mesh_to_camera`` is a rigid 4x4 transform (its camera
        centre in the mesh frame is ``-R^T t``)."""
        pose = np.ascontiguousarray(mesh_to_camera, dtype=np.float64)
        pts = np.ascontiguousarray(points, dtype=np.float64)
        if pose.shape != (4, 4) or pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"need a 4x4 pose and (N, 3) points, got {pose.shape}, {pts.shape}")
        return _depths_mm(pose, pts, *self._mesh(eps))

    def _mesh(self, eps: float) -> tuple[Any, ...]:
        return (
            self.group_centres,
            self.group_radii_sq,
            self.leaf_centres,
            self.leaf_radii_sq,
            self.centres,
            self.radii_sq,
            self.p0,
            self.e1,
            self.e2,
            float(eps),
        )


def ray_mesh_first_hit(
    origins: np.ndarray,
    directions: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    eps: float = 1e-12,
) -> np.ndarray:
    """One-off :meth:`MeshRaycaster.first_hit` (build a MeshRaycaster to cast every frame)."""
    o = np.asarray(origins, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    if o.ndim != 2 or o.shape[1] != 3 or d.shape != o.shape:
        raise ValueError(f"origins and directions must both be (R, 3), got {o.shape}, {d.shape}")
    return MeshRaycaster(vertices, faces).first_hit(o, d, eps)
