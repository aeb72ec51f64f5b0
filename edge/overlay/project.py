"""Display profiles and 2-D projection of overlay primitives for displays that only draw 2-D.

A display profile (``hardware/displays/NAME.toml``) says how a headset's
image relates to the camera: its size in pixels, its pinhole intrinsics
(or "the camera's own", scaled to the display size) and ``camera_to_display``,
the rigid transform from the camera frame to the display's virtual camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.camera import Intrinsics
from edge.errors import ConfigError
from edge.files import read_toml
from edge.jit import kernel

DISPLAY_KINDS = ("video_see_through", "optical_see_through", "hud")
_KEYS = {"name", "kind", "width", "height", "fx", "fy", "ppx", "ppy", "camera_to_display"}


@dataclass(frozen=True)
class DisplayProfile:
    """How to project camera-frame points onto one kind of display.

    ``width``/``height`` 0 means "the camera image's size"; ``fx`` 0 means
    "the camera's intrinsics scaled to the display size".
    """

    name: str = "camera"
    kind: str = "video_see_through"
    width: int = 0
    height: int = 0
    fx: float = 0.0
    fy: float = 0.0
    ppx: float = 0.0
    ppy: float = 0.0
    camera_to_display: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        if self.kind not in DISPLAY_KINDS:
            raise ValueError(f"kind must be one of {DISPLAY_KINDS}, got {self.kind!r}")
        if self.width < 0 or self.height < 0 or (self.width == 0) != (self.height == 0):
            raise ValueError("width and height must both be positive, or both 0 (camera size)")
        if self.fx < 0 or self.fy < 0 or (self.fx == 0) != (self.fy == 0):
            raise ValueError("fx and fy must both be positive, or both 0 (camera intrinsics)")
        if self.fx > 0 and self.width == 0:
            raise ValueError("explicit intrinsics need an explicit width and height")
        m = np.asarray(self.camera_to_display, dtype=np.float64)
        if m.shape != (4, 4) or not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError("camera_to_display must be a 4x4 homogeneous transform")
        if not np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-6):
            raise ValueError("camera_to_display must be rigid (orthonormal rotation)")

    def intrinsics_for(self, camera: Intrinsics) -> Intrinsics:
        """The display's pinhole intrinsics given the camera the overlay comes from."""
        if self.fx > 0:
            return Intrinsics(self.width, self.height, self.fx, self.fy, self.ppx, self.ppy)
        if self.width == 0:
            return camera
        return camera.scaled(self.width, self.height)

    @classmethod
    def from_file(cls, path: str | Path) -> DisplayProfile:
        """Load and validate a profile; raises ConfigError naming the file and key."""
        p = Path(path)
        try:
            data: dict[str, Any] = read_toml(p)
        except FileNotFoundError:
            raise ConfigError(
                f"display profile {p} does not exist", "see hardware/displays/ for profiles"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read display profile {p}: {exc}", "fix the file") from None
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(
                f"{p}: unknown key(s) {', '.join(sorted(unknown))}",
                "valid keys are " + ", ".join(sorted(_KEYS)),
            )
        try:
            kwargs: dict[str, Any] = {}
            for key in ("name", "kind"):
                if key in data:
                    if not isinstance(data[key], str):
                        raise ValueError(f"'{key}' must be a string")
                    kwargs[key] = data[key]
            for key in ("width", "height"):
                if key in data:
                    if not isinstance(data[key], int) or isinstance(data[key], bool):
                        raise ValueError(f"'{key}' must be an integer")
                    kwargs[key] = data[key]
            for key in ("fx", "fy", "ppx", "ppy"):
                if key in data:
                    if not isinstance(data[key], int | float) or isinstance(data[key], bool):
                        raise ValueError(f"'{key}' must be a number")
                    kwargs[key] = float(data[key])
            if "camera_to_display" in data:
                m = np.asarray(data["camera_to_display"], dtype=np.float64)
                kwargs["camera_to_display"] = m.reshape(4, 4)
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{p}: invalid display profile: {exc}", "fix the value") from None


@kernel(
    "void(Array(float64, 2, 'C', readonly=True), float64[:, ::1], float64[::1], float64[:, ::1],"
    " boolean[::1])"
)
def _project(points, camera_to_display, display, px, visible):
    """Each point into the display's frame, then through its pinhole ``display`` =
    (fx, fy, ppx, ppy, width, height): NaN pixels behind it (z <= 0), ``visible``
    where in front and inside the image."""
    m = camera_to_display
    fx, fy, ppx, ppy, width, height = (
        display[0],
        display[1],
        display[2],
        display[3],
        display[4],
        display[5],
    )
    for i in range(points.shape[0]):
        p0, p1, p2 = points[i, 0], points[i, 1], points[i, 2]
        x = p0 * m[0, 0] + p1 * m[0, 1] + p2 * m[0, 2] + m[0, 3]
        y = p0 * m[1, 0] + p1 * m[1, 1] + p2 * m[1, 2] + m[1, 3]
        z = p0 * m[2, 0] + p1 * m[2, 1] + p2 * m[2, 2] + m[2, 3]
        if not z > 0:
            px[i, 0] = px[i, 1] = np.nan
            visible[i] = False
            continue
        u = fx * x / z + ppx
        v = fy * y / z + ppy
        px[i, 0], px[i, 1] = u, v
        visible[i] = u >= -0.5 and u <= width - 0.5 and v >= -0.5 and v <= height - 0.5


class Projection:
    """Projection onto one display for one camera: :func:`project_points` with the
    display's numbers gathered once (a stage keeps one while the camera stays the same).

    ``camera`` is the camera it was made for; ``intrinsics`` the display's.
    """

    def __init__(self, profile: DisplayProfile, camera: Intrinsics) -> None:
        self.profile = profile
        self.camera = camera
        self.intrinsics = intr = profile.intrinsics_for(camera)
        self._display = np.array(
            [intr.fx, intr.fy, intr.ppx, intr.ppy, intr.width, intr.height], float
        )
        self._camera_to_display = np.ascontiguousarray(profile.camera_to_display, dtype=np.float64)

    def matches(self, profile: DisplayProfile, camera: Intrinsics) -> bool:
        """Whether this projection is the one for ``profile`` and ``camera``."""
        return profile is self.profile and (camera is self.camera or camera == self.camera)

    def project(self, points_camera_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (..., 2), visible (...) bool) of (..., 3) camera-frame points (metres),
        as :func:`project_points`."""
        pts = np.asarray(points_camera_m, dtype=np.float64)
        if pts.shape[-1:] != (3,):
            raise ValueError(f"points must have 3 coordinates in the last axis, got {pts.shape}")
        flat = np.ascontiguousarray(pts.reshape(-1, 3))
        px = np.empty((len(flat), 2))
        visible = np.empty(len(flat), dtype=np.bool_)
        _project(flat, self._camera_to_display, self._display, px, visible)
        return px.reshape(*pts.shape[:-1], 2), visible.reshape(pts.shape[:-1])


def project_points(
    points_camera_m: np.ndarray, profile: DisplayProfile, camera: Intrinsics
) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
    """Project (..., 3) camera-frame points (metres) onto the display.

    Returns (pixels (..., 2), visible (...) bool, display intrinsics). Points
    behind the display's virtual camera (z <= 0) get NaN pixels; ``visible``
    is True for points in front that land inside the display. (Per frame, keep a
    :class:`Projection`.)
    """
    projection = Projection(profile, camera)
    px, visible = projection.project(points_camera_m)
    return px, visible, projection.intrinsics
