"""The phantom's separate depth imager, for recordings that look like a camera's raw streams.

A RealSense D435 delivers depth from its own imager (the left infrared camera):
a wider field of view than color (about 385 px focal length at 640x480, against
about 615 px for color) and about 15 mm to the side of the color camera. The
phantom renders its depth from such an imager when asked, so a recording holds
depth at the depth intrinsics plus the depth-to-color extrinsics, as a camera's
recording does, and playback has to align it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.frames import Extrinsics, Intrinsics

# A D435's depth focal length relative to its color focal length (385 / 615 at 640x480).
DEPTH_FOCAL_RATIO = 385.0 / 615.0
# Depth imager to color camera: 15 mm along x and a small tilt, as a factory
# calibration reports (rotations of a tenth of a degree or so).
DEPTH_TO_COLOR_TRANSLATION_M = (0.0150, 0.0001, 0.0002)
DEPTH_TO_COLOR_ROTATION_DEG = (0.05, -0.07, 0.23)  # about x, y, z


@dataclass(frozen=True)
class DepthImager:
    """Intrinsics of a depth imager and its transform to the color camera."""

    intrinsics: Intrinsics
    depth_to_color: Extrinsics

    @property
    def color_to_depth(self) -> np.ndarray:
        m = self.depth_to_color.matrix
        out = np.eye(4)
        out[:3, :3] = m[:3, :3].T
        out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
        return out


def d435_like(color: Intrinsics) -> DepthImager:
    """A D435-like depth imager beside a color camera with ``color`` intrinsics."""
    from scipy.spatial.transform import Rotation

    f = color.fx * DEPTH_FOCAL_RATIO
    intr = Intrinsics(
        color.width,
        color.height,
        f,
        f,
        (color.width - 1) / 2.0 + 1.3,
        (color.height - 1) / 2.0 - 0.8,
    )
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", DEPTH_TO_COLOR_ROTATION_DEG, degrees=True).as_matrix()
    m[:3, 3] = DEPTH_TO_COLOR_TRANSLATION_M
    return DepthImager(intr, Extrinsics.from_matrix(m))
