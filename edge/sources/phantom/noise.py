"""RealSense D4xx-like depth and colour imperfections, independent per frame.

Depth noise follows Intel's stereo RMS-error model (Grunnet-Jepsen, Sweetser,
Woodfill, "Best-Known-Methods for Tuning Intel RealSense D400 Depth Cameras for
Best Performance", Intel white paper rev 1.9, 2019, section 3)::

    sigma_z = z^2 * subpixel / (focal_px * baseline_m)

with a subpixel disparity error of about 0.08 px and the D435's 50 mm
baseline. Depth is then quantised to the depth units. Stereo matching also
fails where the surface is seen at a grazing angle and next to depth
discontinuities (one view cannot see what the other sees), and randomly in
small patches; those pixels report 0 (no depth), as the camera does.

Skin reads too far: the projector's infrared light scatters under the skin
before it returns, so active-stereo and structured-light cameras place skin
behind its surface (Sensors 2022, 22(19), 7378 evaluates D415 depth on
translucent and scattering media). No published figure for a D4xx on human skin
was found; the default ``skin_bias_m`` of 1 mm is an assumption of that order,
and docs/calibration.md describes how to measure it for a camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.camera import depth_sigma_m

__all__ = [
    "DepthNoise",
    "apply_color_noise",
    "apply_depth_noise",
    "depth_sigma_m",
    "quantise_depth",
]


@dataclass(frozen=True)
class DepthNoise:
    """Parameters of the depth model (defaults: D435 at 640x480, see the module docstring)."""

    enabled: bool = True
    subpixel_px: float = 0.08
    baseline_m: float = 0.050
    focal_px: float = 0.0  # 0: use the colour camera's fx
    grazing_hole_deg: float = 80.0  # no depth where the surface is steeper than this to the ray
    edge_step_m: float = 0.02  # a depth jump this large between neighbours is an edge
    edge_hole_px: int = 2  # width of the invalid band along edges
    dropout_fraction: float = 0.002  # random missing patches, as a fraction of pixels
    min_depth_m: float = 0.2  # D4xx cameras report nothing closer (min-Z ~0.2-0.3 m for a D435)
    max_depth_m: float = 10.0
    skin_bias_m: float = 0.0  # skin (subsurface scattering) reads this much too far


def apply_depth_noise(
    depth_m: np.ndarray,
    incidence_cos: np.ndarray,
    noise: DepthNoise,
    focal_px: float,
    rng: np.random.Generator,
    skin: np.ndarray | None = None,
) -> np.ndarray:
    """Noisy depth (float32 metres, 0 = no depth) from a noise-free rendering.

    ``incidence_cos`` is the cosine between surface normal and viewing ray per
    pixel; ``skin`` (bool, optional) marks the pixels that show skin, whose depth
    reads ``noise.skin_bias_m`` too far. Does not modify its inputs.
    """
    import cv2

    z = depth_m.astype(np.float32, copy=True)
    if not noise.enabled:
        return z
    valid = z > 0
    f = noise.focal_px if noise.focal_px > 0 else focal_px
    sigma = depth_sigma_m(z, f, noise.subpixel_px, noise.baseline_m).astype(np.float32)
    z += rng.standard_normal(z.shape, dtype=np.float32) * sigma
    if skin is not None and noise.skin_bias_m:
        z[skin & valid] += np.float32(noise.skin_bias_m)

    holes = valid & (incidence_cos < np.cos(np.radians(noise.grazing_hole_deg)))
    # Depth edges: a large jump to any 4-neighbour (or between hit and nothing).
    zmax = cv2.dilate(depth_m.astype(np.float32), np.ones((3, 3), np.uint8))
    zmin = cv2.erode(
        np.where(valid, depth_m, np.float32(1e3)).astype(np.float32), np.ones((3, 3), np.uint8)
    )
    edge = valid & ((zmax - zmin) > noise.edge_step_m)
    if noise.edge_hole_px > 1 and edge.any():
        k = np.ones((noise.edge_hole_px, noise.edge_hole_px), np.uint8)
        edge = cv2.dilate(edge.astype(np.uint8), k).astype(bool)
    holes |= edge
    if noise.dropout_fraction > 0:
        # Small patches (3x3 blobs) rather than single pixels, as stereo matching fails locally.
        seeds = rng.random(z.shape, dtype=np.float32) < noise.dropout_fraction / 9.0
        holes |= cv2.dilate(seeds.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    holes |= (z < noise.min_depth_m) | (z > noise.max_depth_m)
    z[holes | ~valid] = 0.0
    return z


def quantise_depth(depth_m: np.ndarray, depth_units_m: float) -> np.ndarray:
    """Metres to the camera's uint16 depth units (0 stays 0; out of range becomes 0)."""
    raw = np.rint(depth_m / depth_units_m)
    raw[(raw < 0) | (raw > 65535)] = 0
    return raw.astype(np.uint16)


def apply_color_noise(
    color: np.ndarray, sigma: float, gain: float, rng: np.random.Generator
) -> np.ndarray:
    """Sensor noise (Gaussian, ``sigma`` in 8-bit levels) and a global lighting gain."""
    if sigma <= 0 and gain == 1.0:
        return color
    out = color.astype(np.float32) * np.float32(gain)
    if sigma > 0:
        out += rng.standard_normal(color.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
