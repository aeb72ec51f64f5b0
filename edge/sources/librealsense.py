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

    The nine rotation values are copied in librealsense's order.
    """
    return Extrinsics(
        rotation=tuple(float(r) for r in ext.rotation),
        translation_m=tuple(float(t) for t in ext.translation),  # type: ignore[arg-type]
    )


def align_depth_to_color(
    depth: np.ndarray,
    depth_intrinsics: Intrinsics,
    color_intrinsics: Intrinsics,
    depth_to_color: np.ndarray,
    depth_scale_m: float,
) -> np.ndarray:
    """Re-project a raw depth image (uint16, ``depth_scale_m`` metres per unit) onto the color grid.

    Each valid depth pixel is lifted to 3-D (metres) with the depth
    intrinsics, moved by ``depth_to_color`` (4x4, metres), projected with
    the color intrinsics and written to the nearest color pixel, keeping the
    nearest surface where several land (a z-buffer). Lens distortion is
    ignored: D4xx depth streams report zero distortion and the color
    distortion is small at the pixel level. Returns uint16, 0 = no depth.
    """
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise ValueError(f"depth must be HxW uint16, got {depth.shape} {depth.dtype}")
    if depth.shape != (depth_intrinsics.height, depth_intrinsics.width):
        raise ValueError("depth image does not match its intrinsics")
    m = np.asarray(depth_to_color, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError("depth_to_color must be a 4x4 matrix")
    v, u = np.nonzero(depth)
    if not depth_scale_m > 0:
        raise ValueError(f"depth scale must be positive, got {depth_scale_m}")
    color = color_intrinsics
    out = np.zeros((color.height, color.width), dtype=np.uint16)
    if v.size == 0:
        return out
    z_m = depth[v, u].astype(np.float64) * depth_scale_m
    pts_m = depth_intrinsics.deproject(np.stack([u, v], axis=1).astype(np.float64), z_m)
    moved = geometry.apply(m, pts_m)
    ok = moved[:, 2] > 0
    uv = np.rint(color.project(moved[ok])).astype(np.int64)
    z = np.clip(np.rint(moved[ok, 2] / depth_scale_m), 1, 65535).astype(np.uint16)
    inside = (
        (uv[:, 0] >= 0) & (uv[:, 0] < color.width) & (uv[:, 1] >= 0) & (uv[:, 1] < color.height)
    )
    uv, z = uv[inside], z[inside]
    # Write far to near so the nearest surface wins where pixels collide.
    order = np.argsort(-z.astype(np.int64), kind="stable")
    out[uv[order, 1], uv[order, 0]] = z[order]
    return out
