"""librealsense <-> project conversions and depth-to-color alignment.

Shared by the live camera (:mod:`edge.sources.realsense`) and recorded
sessions (:mod:`edge.sources.recording`): both read intrinsics and
extrinsics from pyrealsense2 objects, the recorder writes them back, and
playback re-projects a recording's raw depth onto its color grid.
pyrealsense2 is imported only where a function builds one of its objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge import geometry
from edge.errors import SourceError
from edge.frames import DistortionModel, Extrinsics, Intrinsics


def _model_from_rs(model: Any) -> DistortionModel:
    name = str(model).rsplit(".", 1)[-1]
    try:
        return DistortionModel(name)
    except ValueError:
        raise SourceError(
            f"unsupported lens distortion model '{name}' in the recording",
            "supported: " + ", ".join(m.value for m in DistortionModel),
        ) from None


def intrinsics_from_rs(intr: Any) -> Intrinsics:
    """Convert a ``pyrealsense2.intrinsics`` to :class:`Intrinsics`."""
    coeffs = tuple(float(c) for c in list(intr.coeffs)[:5])
    return Intrinsics(
        int(intr.width),
        int(intr.height),
        float(intr.fx),
        float(intr.fy),
        float(intr.ppx),
        float(intr.ppy),
        _model_from_rs(intr.model),
        coeffs + (0.0,) * (5 - len(coeffs)),  # type: ignore[arg-type]
    )


def intrinsics_to_rs(intr: Intrinsics) -> Any:
    """Convert :class:`Intrinsics` to a ``pyrealsense2.intrinsics`` (imports pyrealsense2)."""
    import pyrealsense2 as rs

    out = rs.intrinsics()
    out.width, out.height = intr.width, intr.height
    out.fx, out.fy, out.ppx, out.ppy = intr.fx, intr.fy, intr.ppx, intr.ppy
    out.model = getattr(rs.distortion, intr.model.value)
    out.coeffs = list(intr.coeffs)
    return out


def extrinsics_from_rs(ext: Any) -> Extrinsics:
    """Convert a ``pyrealsense2.extrinsics`` (translation in metres) to :class:`Extrinsics`.

    The nine rotation values are copied in librealsense's (column-major) order.
    """
    return Extrinsics(
        rotation=tuple(float(r) for r in ext.rotation),
        translation_m=tuple(float(t) for t in ext.translation),  # type: ignore[arg-type]
    )


def extrinsics_to_rs(ext: Extrinsics) -> Any:
    """Convert :class:`Extrinsics` to a ``pyrealsense2.extrinsics`` (imports pyrealsense2)."""
    import pyrealsense2 as rs

    out = rs.extrinsics()
    out.rotation = [float(r) for r in ext.rotation]
    out.translation = [float(t) for t in ext.translation_m]
    return out


# A depth pixel covers at most this many color pixels per side (a guard against a
# corner projected near the color camera's plane; a D4xx at 640x480 gives about 2).
_MAX_FOOTPRINT_PX = 8
# Footprints are grown by this much on each side so that neighbouring ones overlap on
# sloped surfaces; under half a pixel, so equal intrinsics with an identity transform
# give back the exact image.
_GROW_PX = 0.25
# Footprints whose depths differ by less than this fraction belong to one surface.
_SAME_SURFACE = 0.01


def align_depth_to_color(
    depth: np.ndarray,
    depth_intrinsics: Intrinsics,
    color_intrinsics: Intrinsics,
    depth_to_color: np.ndarray,
    depth_scale_m: float,
) -> np.ndarray:
    """Re-project a raw depth image (uint16, ``depth_scale_m`` metres per unit) onto the color grid.

    Each valid depth pixel is splatted onto every color pixel its footprint
    covers, as librealsense's ``rs.align`` does (align.cpp, ``align_images``):
    the pixel's corners (centre +-0.5 px) are lifted to 3-D at its depth with
    the depth intrinsics, moved by ``depth_to_color`` (4x4, metres) and
    projected with the color intrinsics; the color pixels whose centres lie
    between the projected corners (the footprint grown by a quarter pixel so
    that neighbouring footprints overlap and leave no gaps) get the point's
    depth along the color camera's axis. Where footprints overlap the nearest
    surface wins (a z-buffer), and on that surface the footprint whose centre
    is nearest the pixel. Lens distortion is ignored: D4xx
    depth streams report none and the color distortion is small at the pixel
    level. Returns uint16 in the same units, 0 = no depth.
    """
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise ValueError(f"depth must be HxW uint16, got {depth.shape} {depth.dtype}")
    if depth.shape != (depth_intrinsics.height, depth_intrinsics.width):
        raise ValueError("depth image does not match its intrinsics")
    m = np.asarray(depth_to_color, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError("depth_to_color must be a 4x4 matrix")
    if not depth_scale_m > 0:
        raise ValueError(f"depth scale must be positive, got {depth_scale_m}")
    color = color_intrinsics
    w, h = color.width, color.height
    out = np.zeros((h, w), dtype=np.uint16)
    v, u = np.nonzero(depth)
    if v.size == 0:
        return out
    z_m = depth[v, u].astype(np.float64) * depth_scale_m
    px = np.stack([u, v], axis=1).astype(np.float64)

    def to_color(offset: float) -> np.ndarray:
        return geometry.apply(m, depth_intrinsics.deproject(px + offset, z_m))

    centre = to_color(0.0)
    lo_pts, hi_pts = to_color(-0.5), to_color(0.5)
    ok = (centre[:, 2] > 0) & (lo_pts[:, 2] > 0) & (hi_pts[:, 2] > 0)
    z = centre[ok, 2]
    lo, hi = color.project(lo_pts[ok]), color.project(hi_pts[ok])
    mid = color.project(centre[ok])
    nearest = np.floor(mid + 0.5)
    # Pixel centres inside the footprint grown by _GROW_PX, and always the one nearest
    # the projected centre (a footprint under a pixel wide may hold no centre).
    first = np.minimum(np.ceil(np.minimum(lo, hi) - _GROW_PX), nearest)
    last = np.maximum(np.ceil(np.maximum(lo, hi) + _GROW_PX) - 1, nearest)
    last = np.minimum(last, first + _MAX_FOOTPRINT_PX - 1)
    inside = (last[:, 0] >= 0) & (first[:, 0] < w) & (last[:, 1] >= 0) & (first[:, 1] < h)
    first, last, z, mid = first[inside], last[inside], z[inside], mid[inside]
    first = np.maximum(first, 0).astype(np.int64)
    last = np.minimum(last, [w - 1, h - 1]).astype(np.int64)
    span = last - first  # per axis: color pixels covered minus one
    idx_parts, z_parts, d_parts = [], [], []
    for dy in range(int(span[:, 1].max()) + 1):
        for dx in range(int(span[:, 0].max()) + 1):
            sel = np.flatnonzero((span[:, 0] >= dx) & (span[:, 1] >= dy))
            cu, cv = first[sel, 0] + dx, first[sel, 1] + dy
            idx_parts.append(cv * w + cu)
            z_parts.append(z[sel])
            d_parts.append((cu - mid[sel, 0]) ** 2 + (cv - mid[sel, 1]) ** 2)
    idx = np.concatenate(idx_parts)
    cand_z = np.concatenate(z_parts)
    dist = np.concatenate(d_parts)
    # The nearest surface wins (a z-buffer); among footprints of that surface (within
    # _SAME_SURFACE of the nearest depth) the one whose centre is nearest the pixel, so
    # overlapping footprints on a slope do not bias depth towards the camera.
    zmin = np.full(h * w, np.inf)
    np.minimum.at(zmin, idx, cand_z)
    same = np.flatnonzero(cand_z <= zmin[idx] * (1.0 + _SAME_SURFACE))
    best = np.full(h * w, np.inf)
    np.minimum.at(best, idx[same], dist[same])
    win = same[dist[same] == best[idx[same]]]
    flat = out.reshape(-1)
    flat[idx[win]] = np.clip(np.rint(cand_z[win] / depth_scale_m), 1, 65535).astype(np.uint16)
    return out
