"""Ray-mesh intersection for the HUD's "distance to skin along the view ray"."""

from __future__ import annotations

import numpy as np

# Triangles per leaf of the culling hierarchy: a ray tests every leaf's sphere, then
# every triangle of the few leaves it passes near (32-64 balance the two on 70k-300k
# triangle skins).
LEAF_TRIANGLES = 32


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


def _near_line(
    rel: np.ndarray, rel_sq: np.ndarray, direction: np.ndarray, radii_sq: np.ndarray, eps: float
) -> np.ndarray:
    """Which spheres (centres at ``rel`` from the origin) the line along unit ``direction``
    passes within their radius of (with a relative margin, so culling never loses a hit)."""
    along = rel @ direction
    return rel_sq - along * along <= radii_sq * (1 + 1e-9) + eps


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (N, 3) arrays (or one (3,) with (N, 3)): ``np.cross``'s
    arithmetic without its per-call overhead, which dominated a cast of a few rays."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


class MeshRaycaster:
    """First hits of rays on one triangle mesh, with the per-mesh work done once.

    Möller & Trumbore, "Fast, minimum storage ray-triangle intersection",
    J. Graphics Tools 2(1), 1997. Culling is a two-level sphere hierarchy
    built once per mesh: triangles sorted along a Z-order curve fall into
    leaves of :data:`LEAF_TRIANGLES`, each with a sphere holding its
    triangles' bounding spheres. A ray tests every leaf's sphere, then the
    bounding sphere of every triangle in the leaves it passes near, and only
    the triangles it passes near get the full test. A triangle a ray can hit
    is never culled (its leaf's sphere contains its own), so the hits are the
    brute-force ones. Raises ValueError on a malformed mesh.
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
        self.p0 = tri[:, 0]
        self.e1 = tri[:, 1] - self.p0
        self.e2 = tri[:, 2] - self.p0
        self.centres = tri.mean(axis=1)
        self.radii_sq = ((tri - self.centres[:, None, :]) ** 2).sum(axis=2).max(axis=1)
        # Leaves: consecutive runs of the Z-ordered triangles (the last may be short).
        count = len(tri)
        self._leaf_start = np.arange(0, count, LEAF_TRIANGLES)
        leaf_of = np.arange(count) // LEAF_TRIANGLES
        sizes = np.bincount(leaf_of, minlength=len(self._leaf_start)) if count else np.zeros(0)
        self.leaf_centres = (
            np.add.reduceat(self.centres, self._leaf_start, axis=0) / sizes[:, None]
            if count
            else np.zeros((0, 3))
        )
        reach = np.linalg.norm(self.centres - self.leaf_centres[leaf_of], axis=1) + np.sqrt(
            self.radii_sq
        )
        # Inflated by a part per million and a nanometre: rounding must never cull a hit.
        self.leaf_radii_sq = (
            (np.maximum.reduceat(reach, self._leaf_start) * (1 + 1e-6) + 1e-9) ** 2
            if count
            else np.zeros(0)
        )

    def _candidates(self, leaves: np.ndarray) -> np.ndarray:
        """The triangle indices of the given leaves."""
        idx = (self._leaf_start[leaves][:, None] + np.arange(LEAF_TRIANGLES)).ravel()
        return idx[idx < len(self.p0)]

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
        result = np.full(len(o), np.nan)
        last_origin: np.ndarray | None = None
        leaf_rel = leaf_rel_sq = np.zeros(0)
        for i in range(len(o)):  # rays are few (one per target); triangles are many
            norm = np.linalg.norm(d[i])
            if not np.isfinite(norm) or norm <= eps or not np.all(np.isfinite(o[i])):
                continue
            unit = d[i] / norm
            if last_origin is None or not np.array_equal(o[i], last_origin):
                # Rays usually share one origin (the camera centre): do this once.
                last_origin = o[i]
                leaf_rel = self.leaf_centres - o[i]
                leaf_rel_sq = np.einsum("ij,ij->i", leaf_rel, leaf_rel)
            near = _near_line(leaf_rel, leaf_rel_sq, unit, self.leaf_radii_sq, eps)
            leaves = np.flatnonzero(near)
            if leaves.size == 0:
                continue
            idx = self._candidates(leaves)
            rel = self.centres[idx] - o[i]
            rel_sq = np.einsum("ij,ij->i", rel, rel)
            idx = idx[_near_line(rel, rel_sq, unit, self.radii_sq[idx], eps)]
            if idx.size == 0:
                continue
            p0, e1, e2 = self.p0[idx], self.e1[idx], self.e2[idx]
            pvec = _cross(d[i], e2)
            det = np.einsum("ij,ij->i", e1, pvec)
            ok = np.abs(det) > eps
            inv = np.zeros_like(det)
            inv[ok] = 1.0 / det[ok]
            tvec = o[i] - p0
            u = np.einsum("ij,ij->i", tvec, pvec) * inv
            qvec = _cross(tvec, e1)
            w = (qvec @ d[i]) * inv
            t = np.einsum("ij,ij->i", e2, qvec) * inv
            hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > eps)
            if hit.any():
                result[i] = t[hit].min()
        return result


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
