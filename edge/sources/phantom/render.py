"""Z-buffer rendering of colour and aligned depth at any pinhole intrinsics.

Two primitives, both vectorised (no per-pixel Python):

* :class:`Surface`: a dense oriented point set (the head, the drape), splatted
  into a z-buffer with ``np.minimum.at``; back-facing points are culled and
  pinholes left between samples are filled from their neighbours.
* :class:`TexturedPlane`: a flat textured rectangle (the printed photo, the
  operating table), rendered exactly: depth by ray-plane intersection, colour
  by a homography warp of its texture.

Depth is the z coordinate in the camera frame (what a depth camera reports),
metres, 0 where nothing was hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.frames import Intrinsics

# What a pixel shows, in ``Rendering.material``: the depth noise model treats skin
# (subsurface scattering) differently from cloth, paper and the table.
MATERIAL_OTHER = 0
MATERIAL_SKIN = 1
MATERIAL_CLOTH = 2


@dataclass(frozen=True)
class Surface:
    """Oriented points in their own frame, stored coordinate-major for speed.

    ``points_m`` and ``normals`` are (3, N) float32 (rows x, y, z), ``colors``
    (N, 3) uint8 RGB. ``spacing_m`` is the largest distance between
    neighbouring samples; the renderer uses it to choose the splat size.
    """

    points_m: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    spacing_m: float
    material: int = 0  # what the pixels it wins are labelled (MATERIAL_*)

    @classmethod
    def from_rows(
        cls,
        points_m: np.ndarray,
        normals: np.ndarray,
        colors: np.ndarray,
        spacing_m: float,
        material: int = 0,
    ) -> Surface:
        """Build from (..., 3) arrays (any leading shape)."""
        return cls(
            np.ascontiguousarray(points_m.reshape(-1, 3).T, dtype=np.float32),
            np.ascontiguousarray(normals.reshape(-1, 3).T, dtype=np.float32),
            np.ascontiguousarray(colors.reshape(-1, 3), dtype=np.uint8),
            float(spacing_m),
            int(material),
        )


@dataclass(frozen=True)
class TexturedPlane:
    """A textured rectangle in the plane z = 0 of its own frame, facing -z.

    Texture pixel (i, j) (column, row; pixel centres at integers) sits at plane
    point ((i - origin_px[0]) * m_per_px, (j - origin_px[1]) * m_per_px, 0).
    """

    texture: np.ndarray  # (H, W, 3) uint8 RGB
    m_per_px: float
    origin_px: tuple[float, float]


@dataclass
class Rendering:
    """One rendered view: colour (H, W, 3) uint8 RGB, depth_m (H, W) float32 (0 = none),
    incidence_cos (H, W) float32: cosine between the surface normal and the viewing ray,
    material (H, W) uint8: MATERIAL_* of the surface seen."""

    color: np.ndarray
    depth_m: np.ndarray
    incidence_cos: np.ndarray
    material: np.ndarray

    def copy(self) -> Rendering:
        return Rendering(
            self.color.copy(), self.depth_m.copy(), self.incidence_cos.copy(), self.material.copy()
        )


class Renderer:
    """Renders surfaces and planes for one camera (intrinsics fixed at construction)."""

    def __init__(self, intrinsics: Intrinsics) -> None:
        self.intrinsics = intrinsics
        w, h = intrinsics.width, intrinsics.height
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        # Viewing ray of every pixel centre, with z = 1.
        self._rays = np.stack(
            [
                (u - intrinsics.ppx) / intrinsics.fx,
                (v - intrinsics.ppy) / intrinsics.fy,
                np.ones_like(u),
            ],
            axis=-1,
        )
        self._ray_norm = np.linalg.norm(self._rays, axis=-1)

    def blank(self, rgb: tuple[int, int, int] = (0, 0, 0)) -> Rendering:
        h, w = self.intrinsics.height, self.intrinsics.width
        color = np.empty((h, w, 3), np.uint8)
        color[:] = rgb
        zero = np.zeros((h, w), np.float32)
        return Rendering(color, zero, zero.copy(), np.zeros((h, w), np.uint8))

    def draw_plane(
        self, into: Rendering, plane: TexturedPlane, plane_to_camera: np.ndarray
    ) -> None:
        """Draw a textured plane into a rendering, in place, with a depth test."""
        import cv2

        intr = self.intrinsics
        R = plane_to_camera[:3, :3]
        t = plane_to_camera[:3, 3]
        n = R[:, 2]
        denom = self._rays @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (n @ t) / denom  # ray parameter = depth, because the rays have z = 1
        # Homography texture pixel -> image pixel: K [r1 r2 t] * S, S = texture px -> plane metres.
        S = np.array(
            [
                [plane.m_per_px, 0.0, -plane.origin_px[0] * plane.m_per_px],
                [0.0, plane.m_per_px, -plane.origin_px[1] * plane.m_per_px],
                [0.0, 0.0, 1.0],
            ]
        )
        H = intr.matrix @ np.column_stack([R[:, 0], R[:, 1], t]) @ S
        size = (intr.width, intr.height)
        # Replicated border: pixels on the rim take the texture's edge colour, not black.
        color = cv2.warpPerspective(
            plane.texture, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        th, tw = plane.texture.shape[:2]
        cover = cv2.warpPerspective(
            np.full((th, tw), 255, np.uint8), H, size, flags=cv2.INTER_NEAREST, borderValue=0
        )
        old = into.depth_m
        hit = (cover > 0) & np.isfinite(z) & (z > 1e-3) & ((old == 0) | (z < old))
        into.color[hit] = color[hit]
        into.depth_m[hit] = z[hit]
        into.incidence_cos[hit] = np.abs(denom[hit]) / self._ray_norm[hit]
        into.material[hit] = MATERIAL_OTHER

    def draw_surfaces(
        self,
        into: Rendering,
        surfaces: list[tuple[Surface, np.ndarray]],
    ) -> None:
        """Splat oriented point sets (each with its 4x4 ``surface_to_camera``) into a
        rendering, in place, with a depth test against what is already there."""
        intr = self.intrinsics
        w, h = intr.width, intr.height
        zs, idxs, cols, coss, mats = [], [], [], [], []
        passes = 1
        for surface, to_camera in surfaces:
            # Coordinate-major arithmetic: numpy's (N,3)@(3,3) float32 matmul is
            # far slower than six fused multiply-adds over contiguous rows.
            R = to_camera[:3, :3].astype(np.float32)
            t = to_camera[:3, 3].astype(np.float32)
            P, N = surface.points_m, surface.normals
            x = R[0, 0] * P[0] + R[0, 1] * P[1] + R[0, 2] * P[2] + t[0]
            y = R[1, 0] * P[0] + R[1, 1] * P[1] + R[1, 2] * P[2] + t[1]
            z = R[2, 0] * P[0] + R[2, 1] * P[1] + R[2, 2] * P[2] + t[2]
            # n . p < 0: the surface faces the camera (back faces are culled).
            facing = -(
                (R[0, 0] * N[0] + R[0, 1] * N[1] + R[0, 2] * N[2]) * x
                + (R[1, 0] * N[0] + R[1, 1] * N[1] + R[1, 2] * N[2]) * y
                + (R[2, 0] * N[0] + R[2, 1] * N[1] + R[2, 2] * N[2]) * z
            )
            keep = np.flatnonzero((facing > 0.0) & (z > 0.05))
            if keep.size == 0:
                continue
            x, y, z, facing = x[keep], y[keep], z[keep], facing[keep]
            cos = facing / np.sqrt(x * x + y * y + z * z)
            u = intr.fx * x / z + intr.ppx
            v = intr.fy * y / z + intr.ppy
            ui = np.floor(u + 0.5).astype(np.int32)
            vi = np.floor(v + 0.5).astype(np.int32)
            inside = np.flatnonzero((ui >= 0) & (ui < w) & (vi >= 0) & (vi < h))
            keep, z, cos, ui, vi = keep[inside], z[inside], cos[inside], ui[inside], vi[inside]
            if inside.size == 0:
                continue
            col = surface.colors[keep]
            zs.append(z)
            idxs.append(vi * w + ui)
            cols.append(col)
            coss.append(cos)
            mats.append(np.full(z.shape, surface.material, np.uint8))
            # Samples further apart than a pixel leave a lattice of pinholes; more
            # fill passes close them (a splat footprint of 2x2 costs 4x the scatter).
            spacing_px = intr.fx * surface.spacing_m / float(z.min())
            passes = max(passes, 1 if spacing_px < 0.9 else 1 + int(np.ceil(spacing_px)))
        if not zs:
            return
        z = np.concatenate(zs).astype(np.float32)
        idx = np.concatenate(idxs)
        col = np.concatenate(cols)
        cos = np.concatenate(coss).astype(np.float32)
        mat = np.concatenate(mats)
        # Work in the bounding box of what was hit (plus a margin for the fill):
        # the head covers a fraction of the image, and the fill passes cost per pixel.
        rows, cols_ = np.divmod(idx, w)
        r0, r1 = max(int(rows.min()) - 1, 0), min(int(rows.max()) + 2, h)
        c0, c1 = max(int(cols_.min()) - 1, 0), min(int(cols_.max()) + 2, w)
        rw, rh = c1 - c0, r1 - r0
        ridx = (rows - r0) * rw + (cols_ - c0)

        zbuf = np.full(rw * rh, np.inf, np.float32)
        np.minimum.at(zbuf, ridx, z)
        win = np.flatnonzero(zbuf[ridx] == z)
        cbuf = np.zeros((rw * rh, 3), np.uint8)
        cosbuf = np.zeros(rw * rh, np.float32)
        mbuf = np.zeros(rw * rh, np.uint8)
        cbuf[ridx[win]] = col[win]
        cosbuf[ridx[win]] = cos[win]
        mbuf[ridx[win]] = mat[win]
        zimg = zbuf.reshape(rh, rw)
        cimg = cbuf.reshape(rh, rw, 3)
        cosimg = cosbuf.reshape(rh, rw)
        mimg = mbuf.reshape(rh, rw)
        for _ in range(passes):
            _fill_pinholes(zimg, cimg, cosimg, mimg)

        old = into.depth_m[r0:r1, c0:c1]
        hit = np.isfinite(zimg) & ((old == 0) | (zimg < old))
        into.color[r0:r1, c0:c1][hit] = cimg[hit]
        old[hit] = zimg[hit]
        into.incidence_cos[r0:r1, c0:c1][hit] = cosimg[hit]
        into.material[r0:r1, c0:c1][hit] = mimg[hit]


def _fill_pinholes(z: np.ndarray, color: np.ndarray, cos: np.ndarray, material: np.ndarray) -> None:
    """Fill empty pixels that have at least 5 of 8 filled neighbours with their mean (the
    material: the largest of theirs), in place.

    Pinholes come from the sampling of the surface, not from the scene, so a
    pixel mostly surrounded by surface belongs to that surface.
    """
    import cv2

    valid = np.isfinite(z)
    vf = valid.astype(np.float32)
    count = cv2.boxFilter(vf, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    holes = ~valid & (count >= 5.0)
    if not holes.any():
        return
    z0 = np.where(valid, z, 0.0).astype(np.float32)

    def mean(a: np.ndarray) -> np.ndarray:
        s = cv2.boxFilter(a, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        return s / np.maximum(count if a.ndim == 2 else count[..., None], 1.0)

    z[holes] = mean(z0)[holes]
    cos[holes] = mean(np.where(valid, cos, 0.0).astype(np.float32))[holes]
    color[holes] = mean(color.astype(np.float32) * vf[..., None])[holes].astype(np.uint8)
    material[holes] = cv2.dilate(material, np.ones((3, 3), np.uint8))[holes]
