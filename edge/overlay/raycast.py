"""Ray-mesh intersection for the HUD's "distance to skin along the view ray"."""

from __future__ import annotations

import numpy as np


def ray_mesh_first_hit(
    origins: np.ndarray,
    directions: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    eps: float = 1e-12,
) -> np.ndarray:
    """Distance along each ray to the nearest triangle it hits (NaN where none).

    Möller & Trumbore, "Fast, minimum storage ray-triangle intersection",
    J. Graphics Tools 2(1), 1997, vectorised over rays x triangles. Both faces
    of a triangle count. ``origins`` and ``directions`` are (R, 3) in the
    mesh's frame; directions need not be unit length: the returned ``t`` is in
    units of the direction's length (``origin + t * direction`` is the hit).
    Only hits with ``t > 0`` count. Raises ValueError on malformed input.
    """
    o = np.asarray(origins, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if o.ndim != 2 or o.shape[1] != 3 or d.shape != o.shape:
        raise ValueError(f"origins and directions must both be (R, 3), got {o.shape}, {d.shape}")
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"need (N, 3) vertices and (M, 3) faces, got {v.shape}, {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("face indices out of range of the vertices")
    result = np.full(len(o), np.nan)
    if len(o) == 0 or len(f) == 0:
        return result
    p0 = v[f[:, 0]]
    e1 = v[f[:, 1]] - p0  # (M, 3)
    e2 = v[f[:, 2]] - p0
    for i in range(len(o)):  # rays are few (one per target); triangles are many
        pvec = np.cross(d[i], e2)  # (M, 3)
        det = np.einsum("ij,ij->i", e1, pvec)
        ok = np.abs(det) > eps
        inv = np.zeros_like(det)
        inv[ok] = 1.0 / det[ok]
        tvec = o[i] - p0
        u = np.einsum("ij,ij->i", tvec, pvec) * inv
        qvec = np.cross(tvec, e1)
        w = (qvec @ d[i]) * inv
        t = np.einsum("ij,ij->i", e2, qvec) * inv
        hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > eps)
        if hit.any():
            result[i] = t[hit].min()
    return result
