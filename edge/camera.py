"""Camera geometry: intrinsics, lens distortion models and sensor-to-sensor extrinsics.

Pixel coordinates have their origin at the centre of the top-left pixel;
3-D positions are in metres in the camera's optical frame (x right, y down,
z forward). Nothing here knows about frames or stages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DistortionModel(str, enum.Enum):
    """Lens distortion models (names as librealsense uses them)."""

    NONE = "none"
    BROWN_CONRADY = "brown_conrady"  # OpenCV's k1 k2 p1 p2 k3
    INVERSE_BROWN_CONRADY = "inverse_brown_conrady"
    MODIFIED_BROWN_CONRADY = "modified_brown_conrady"
    KANNALA_BRANDT4 = "kannala_brandt4"


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one stream, in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: DistortionModel = DistortionModel.NONE
    coeffs: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if len(self.coeffs) != 5:
            raise ValueError(f"need 5 distortion coefficients, got {len(self.coeffs)}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array(
            [[self.fx, 0.0, self.ppx], [0.0, self.fy, self.ppy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    def project(self, points_m: np.ndarray) -> np.ndarray:
        """Project Nx3 camera-frame points (metres, z > 0) to Nx2 pixels (no distortion)."""
        p = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * p[:, 0] / z + self.ppx
            v = self.fy * p[:, 1] / z + self.ppy
        return np.stack([u, v], axis=1)

    def deproject(self, pixels: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """Lift Nx2 pixels with N depths (metres) to Nx3 camera-frame points."""
        px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        z = np.asarray(depth_m, dtype=np.float64).reshape(-1)
        x = (px[:, 0] - self.ppx) / self.fx * z
        y = (px[:, 1] - self.ppy) / self.fy * z
        return np.stack([x, y, z], axis=1)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution (same field of view)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            width,
            height,
            self.fx * sx,
            self.fy * sy,
            (self.ppx + 0.5) * sx - 0.5,
            (self.ppy + 0.5) * sy - 0.5,
            self.model,
            self.coeffs,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "ppx": self.ppx,
            "ppy": self.ppy,
            "model": self.model.value,
            "coeffs": list(self.coeffs),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Intrinsics:
        coeffs = tuple(float(c) for c in d.get("coeffs", (0.0,) * 5))  # type: ignore[attr-defined]
        return cls(
            int(d["width"]),  # type: ignore[call-overload]
            int(d["height"]),  # type: ignore[call-overload]
            float(d["fx"]),  # type: ignore[arg-type]
            float(d["fy"]),  # type: ignore[arg-type]
            float(d["ppx"]),  # type: ignore[arg-type]
            float(d["ppy"]),  # type: ignore[arg-type]
            DistortionModel(d.get("model", "none")),
            coeffs,  # type: ignore[arg-type]
        )


def depth_sigma_m(
    z_m: np.ndarray | float, focal_px: float, subpixel_px: float, baseline_m: float
) -> np.ndarray:
    """Standard deviation of active-stereo depth at distance z, metres.

    Intel's RMS-error model for D4xx cameras: sigma_z = z^2 * subpixel / (focal_px *
    baseline_m) (Grunnet-Jepsen, Sweetser, Woodfill, "Best-Known-Methods for Tuning Intel
    RealSense D400 Depth Cameras for Best Performance", rev 1.9, 2019, section 3).
    """
    z = np.asarray(z_m, dtype=np.float64)
    return z * z * subpixel_px / (focal_px * baseline_m)


@dataclass(frozen=True)
class Extrinsics:
    """A rigid transform between two sensors: rotation (3x3) and translation (metres)."""

    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix (row-major rotation as given)."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        m[:3, 3] = self.translation_m
        return m
