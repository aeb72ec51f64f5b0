"""A simple synthetic RGB-D scene: a textured sphere moving over a tilted plane.

Enough to exercise recording, playback and the pipeline without a camera. The
scene is ray-cast per pixel, so color and depth are consistent: every pixel's
depth is the distance along z to the surface whose color it shows. Everything
is a pure function of ``(seed, frame index)``: the same seed gives the same
frames bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from edge.frames import (
    Frame,
    FrameSource,
    GroundTruth,
    Intrinsics,
    PixelFormat,
    TimingMode,
    require_frames,
)
from edge.sources.pacing import Pacer

DEPTH_SCALE_M = 0.001  # depth stored in millimetres, as a RealSense D4xx does by default
SPHERE_RADIUS_M = 0.08
PLANE_DISTANCE_M = 0.9


def default_intrinsics(width: int = 640, height: int = 480) -> Intrinsics:
    """A D435-like color camera (about 69 x 42 degrees) at the given size."""
    return Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5).scaled(width, height)


def sphere_centre_m(index: int, fps: float, phase: float) -> np.ndarray:
    """Sphere centre in the camera frame (metres) at frame ``index``: a slow ellipse."""
    t = index / fps
    a = 2.0 * np.pi * 0.25 * t + phase
    return np.array([0.12 * np.cos(a), 0.07 * np.sin(a), 0.62 + 0.05 * np.sin(0.5 * a)])


def render(
    intrinsics: Intrinsics, index: int, *, seed: int, fps: float = 30.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render frame ``index``: (RGB uint8 HxWx3, depth uint16 HxW in mm, sphere centre m)."""
    rng = np.random.default_rng(seed)
    phase = float(rng.uniform(0.0, 2.0 * np.pi))
    plane_rgb = rng.integers(40, 216, size=(2, 3)).astype(np.float32)
    sphere_rgb = rng.integers(40, 216, size=(2, 3)).astype(np.float32)
    tilt = float(rng.uniform(-0.25, 0.25))  # plane normal tilt about x, radians

    w, h = intrinsics.width, intrinsics.height
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    # Ray direction per pixel, with z = 1 so the ray parameter is the depth.
    dx = (u - intrinsics.ppx) / intrinsics.fx
    dy = (v - intrinsics.ppy) / intrinsics.fy

    # Plane through (0, 0, D) with normal n = (0, sin tilt, cos tilt): n . (t d) = D cos tilt.
    s, c = np.sin(tilt), np.cos(tilt)
    z_plane = (PLANE_DISTANCE_M * c) / (dy * s + c)
    x_p, y_p = dx * z_plane, dy * z_plane
    checker = ((np.floor(x_p / 0.05) + np.floor(y_p / 0.05)) % 2).astype(np.int64)
    color = plane_rgb[checker]

    # Ray-sphere intersection, nearest root: |t d - C|^2 = r^2.
    centre = sphere_centre_m(index, fps, phase).astype(np.float32)
    a = dx * dx + dy * dy + 1.0
    b = -2.0 * (dx * centre[0] + dy * centre[1] + centre[2])
    cc = float(centre @ centre) - SPHERE_RADIUS_M**2
    disc = b * b - 4.0 * a * cc
    hit = (disc >= 0.0) & (b < 0.0)
    z_sphere = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a), np.inf)
    hit &= z_sphere < z_plane
    # Stripes in longitude on the sphere so motion is visible in the color image.
    px = dx * z_sphere - centre[0]
    pz = z_sphere - centre[2]
    stripe = ((np.arctan2(px, -pz) + index * 0.05) * 4.0 / np.pi).astype(np.int64) % 2
    color = np.where(hit[..., None], sphere_rgb[np.where(hit, stripe, 0)], color)

    z = np.where(hit, z_sphere, z_plane)
    depth = np.clip(np.round(z / DEPTH_SCALE_M), 0, 65535).astype(np.uint16)
    return color.astype(np.uint8), depth, centre.astype(np.float64)


class SyntheticSource(FrameSource):
    """A finite, seeded synthetic scene (``frames`` frames at ``fps``).

    In REALTIME timing the frames are paced at ``fps`` with the injected
    ``clock``/``sleep``; DETERMINISTIC delivers them as fast as they are read.
    Each frame carries :class:`GroundTruth` with the sphere's pose as
    ``patient_to_camera`` (no face: ``face_visible`` is False).
    """

    name = "synthetic"

    def __init__(
        self,
        frames: int = 60,
        *,
        seed: int = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        timing: TimingMode = TimingMode.DETERMINISTIC,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self._frames = require_frames(frames)
        self._seed = seed
        self._intrinsics = default_intrinsics(width, height)
        self._fps = float(fps)
        self._pacer = Pacer(timing, clock=clock, sleep=sleep)
        self._index = 0

    @property
    def frame_count(self) -> int:
        return self._frames

    @property
    def nominal_fps(self) -> float:
        return self._fps

    @property
    def paced(self) -> bool:
        return self._pacer.paced

    @property
    def intrinsics(self) -> Intrinsics:
        return self._intrinsics

    def _open(self) -> None:
        self._index = 0
        self._pacer.start()  # frame 0 is due at open

    def _read(self) -> Frame | None:
        if self._index >= self._frames:
            return None
        i = self._index
        device_ms = i * 1000.0 / self._fps
        self._pacer.wait(device_ms)
        color, depth, centre = render(self._intrinsics, i, seed=self._seed, fps=self._fps)
        pose = np.eye(4)
        pose[:3, 3] = centre
        self._index += 1
        return Frame(
            number=i,
            color=color,
            color_format=PixelFormat.RGB8,
            depth=depth,
            depth_scale_m=DEPTH_SCALE_M,
            intrinsics=self._intrinsics,
            device_timestamp_ms=device_ms,
            truth=GroundTruth(patient_to_camera=pose, face_visible=False, scenario="sphere"),
        )

    def _close(self) -> None:
        pass
