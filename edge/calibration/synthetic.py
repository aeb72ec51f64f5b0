"""Synthetic calibration data with known answers, for tests and hardware-free runs.

Boards are ray-cast through a camera with known intrinsics and OpenCV
distortion: each output pixel's distorted position is undistorted to a ray,
the ray meets the board plane, and the board texture is sampled there
(``cv2.remap``), supersampled 2x for smooth edges. The same ray grid gives an
aligned depth image, so the depth check has consistent color and depth. Poses,
hand-eye motions, SPAAM alignments and pivot motions are generated from a
seed, so every run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.calibration.boards import BoardSpec, board_texture
from edge.frames import (
    CameraInfo,
    Frame,
    FrameSource,
    GroundTruth,
    Intrinsics,
    PixelFormat,
    require_frames,
)

BACKGROUND_DISTANCE_M = 1.5
TEXTURE_PX_PER_MM = 5.0
TEXTURE_MARGIN_MM = 15.0


@dataclass(frozen=True)
class TrueCamera:
    """The camera a synthetic view is rendered through (OpenCV model, pixels)."""

    width: int = 640
    height: int = 480
    fx: float = 612.0
    fy: float = 611.0
    cx: float = 322.5
    cy: float = 236.8
    dist: tuple[float, ...] = (0.09, -0.21, 0.0012, -0.0008, 0.1)  # k1 k2 p1 p2 k3

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], float)

    def factory_intrinsics(self, error_pct: float = 0.8) -> Intrinsics:
        """What a camera might claim: focal off by ``error_pct`` and no distortion."""
        f = 1.0 + error_pct / 100.0
        return Intrinsics(
            self.width, self.height, self.fx * f, self.fy * f, self.cx - 2.0, self.cy + 1.5
        )


def rotation(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx (degrees)."""
    import cv2

    rx, ry, rz = (np.radians(a) for a in (rx_deg, ry_deg, rz_deg))
    r_x = cv2.Rodrigues(np.array([rx, 0.0, 0.0]))[0]
    r_y = cv2.Rodrigues(np.array([0.0, ry, 0.0]))[0]
    r_z = cv2.Rodrigues(np.array([0.0, 0.0, rz]))[0]
    return np.asarray(r_z @ r_y @ r_x)


def transform(r: np.ndarray, t: Any) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.asarray(t, float).reshape(3)
    return m


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    import cv2

    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(-max_deg, max_deg))
    return np.asarray(cv2.Rodrigues(axis * angle)[0])


def board_poses(
    spec: BoardSpec, camera: TrueCamera, count: int, seed: int = 0, distance_m: float = 0.42
) -> list[np.ndarray]:
    """``count`` board_to_camera transforms spread over the image, tilted up to ~35 degrees.

    Board centres cycle through a 3x3 grid of image positions so the views
    together cover the image, as a careful operator would hold the board.
    """
    rng = np.random.default_rng(seed)
    centre_board = np.array([spec.width_mm / 2000.0, spec.height_mm / 2000.0, 0.0])
    grid = [(gx, gy) for gy in (0.22, 0.5, 0.78) for gx in (0.18, 0.4, 0.6, 0.82)]
    poses = []
    for i in range(count):
        gx, gy = grid[(i * 5) % len(grid)]
        z = distance_m * rng.uniform(0.85, 1.2)
        tilt = 35.0
        r = rotation(
            rng.uniform(-tilt, tilt) + (gy - 0.5) * 40.0,
            rng.uniform(-tilt, tilt) - (gx - 0.5) * 40.0,
            rng.uniform(-15.0, 15.0),
        )
        # Put the board centre on the ray through image point (gx, gy).
        ray = np.array(
            [
                (gx * camera.width - camera.cx) / camera.fx,
                (gy * camera.height - camera.cy) / camera.fy,
                1.0,
            ]
        )
        t = ray * z - r @ centre_board
        poses.append(transform(r, t))
    return poses


class BoardRenderer:
    """Renders views of one board through one camera (the ray grid is computed once)."""

    def __init__(self, spec: BoardSpec, camera: TrueCamera, supersample: int = 2) -> None:
        import cv2

        self.spec = spec
        self.camera = camera
        self._ss = supersample
        w, h = camera.width * supersample, camera.height * supersample
        # Sub-pixel sample centres of each output pixel, in output pixel coordinates.
        us = (np.arange(w, dtype=np.float64) + 0.5) / supersample - 0.5
        vs = (np.arange(h, dtype=np.float64) + 0.5) / supersample - 0.5
        uu, vv = np.meshgrid(us, vs)
        pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-12)
        und = cv2.undistortPointsIter(  # type: ignore[call-overload]
            pts, camera.matrix, np.asarray(camera.dist, float), None, None, criteria
        ).reshape(h, w, 2)
        self._rays = np.dstack([und, np.ones((h, w))])  # normalised rays, z = 1
        self._texture = board_texture(spec, TEXTURE_PX_PER_MM, TEXTURE_MARGIN_MM)

    def render(
        self,
        board_to_camera: np.ndarray,
        noise_grey: float = 0.0,
        rng: np.random.Generator | None = None,
        blur_px: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render one view: (grey uint8 HxW image, HxW z-depth in metres; background far)."""
        import cv2

        r, t = board_to_camera[:3, :3], board_to_camera[:3, 3]
        h_mat = np.column_stack([r[:, 0], r[:, 1], t])  # board (x, y, 1) -> ray * depth
        h_inv = np.linalg.inv(h_mat)
        q = self._rays @ h_inv.T
        with np.errstate(divide="ignore", invalid="ignore"):
            x_m = q[..., 0] / q[..., 2]
            y_m = q[..., 1] / q[..., 2]
            depth = 1.0 / q[..., 2]  # z of the plane point on the ray with z = 1
        behind = ~(depth > 0)
        ppm = TEXTURE_PX_PER_MM * 1000.0
        margin = round(TEXTURE_MARGIN_MM * TEXTURE_PX_PER_MM)
        map_x = (x_m * ppm + margin - 0.5).astype(np.float32)
        map_y = (y_m * ppm + margin - 0.5).astype(np.float32)
        map_x[behind] = -1e6
        map_y[behind] = -1e6
        tex_h, tex_w = self._texture.shape
        on_board = (map_x >= 0) & (map_y >= 0) & (map_x <= tex_w - 1) & (map_y <= tex_h - 1)
        image = cv2.remap(
            self._texture,
            map_x,
            map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=110,  # a grey wall behind the board
        ).astype(np.float32)
        depth = np.where(on_board & ~behind, depth, BACKGROUND_DISTANCE_M)
        ss = self._ss
        cam = self.camera
        image = image.reshape(cam.height, ss, cam.width, ss).mean(axis=(1, 3))
        depth = depth.reshape(cam.height, ss, cam.width, ss).mean(axis=(1, 3))
        if blur_px > 0:
            image = cv2.GaussianBlur(image, (0, 0), blur_px)
        if noise_grey > 0:
            rng = rng or np.random.default_rng(0)
            image = image + rng.normal(0.0, noise_grey, image.shape)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), depth


class SyntheticBoardSource(FrameSource):
    """Frames of a ChArUco board at known poses, as a camera with known intrinsics sees it.

    ``frame.intrinsics`` holds the (deliberately imperfect) factory intrinsics;
    ``frame.truth.patient_to_camera`` holds the true board_to_camera. Depth is
    aligned to color, in millimetres, optionally with a scale error (percent)
    and offset (metres) to exercise the depth check.
    """

    name = "synthetic-board"
    serial = "synthetic"

    @property
    def camera_info(self) -> CameraInfo:
        from edge import __version__

        return CameraInfo("synthetic board camera", self.serial, f"edge {__version__}", "synthetic")

    def __init__(
        self,
        spec: BoardSpec,
        camera: TrueCamera | None = None,
        frames: int = 12,
        seed: int = 0,
        noise_grey: float = 1.5,
        depth_scale_error_pct: float = 0.0,
        depth_offset_m: float = 0.0,
        depth_noise_m: float = 0.0005,
        poses: list[np.ndarray] | None = None,
        distance_m: float = 0.42,
    ) -> None:
        super().__init__()
        self.camera = camera or TrueCamera()
        self.spec = spec
        self._count = require_frames(frames)
        self._seed = seed
        self._noise = noise_grey
        self._depth_scale = 1.0 + depth_scale_error_pct / 100.0
        self._depth_offset_m = depth_offset_m
        self._depth_noise_m = depth_noise_m
        self.poses = poses or board_poses(spec, self.camera, frames, seed, distance_m)
        self._count = min(self._count, len(self.poses))
        self._index = 0
        self._renderer: BoardRenderer | None = None

    @property
    def frame_count(self) -> int | None:
        return self._count

    def _open(self) -> None:
        self._renderer = BoardRenderer(self.spec, self.camera)
        self._rng = np.random.default_rng(self._seed + 1)

    def _read(self) -> Frame | None:
        assert self._renderer is not None
        if self._index >= self._count:
            return None
        pose = self.poses[self._index]
        grey, z = self._renderer.render(pose, self._noise, self._rng)
        z_meas = z * self._depth_scale + self._depth_offset_m
        z_meas = z_meas + self._rng.normal(0.0, self._depth_noise_m, z.shape)
        depth = np.clip(np.rint(z_meas / 0.001), 0, 65535).astype(np.uint16)
        frame = Frame(
            number=self._index,
            color=np.repeat(grey[:, :, None], 3, axis=2),
            color_format=PixelFormat.RGB8,
            depth=depth,
            depth_scale_m=0.001,
            intrinsics=self.camera.factory_intrinsics(),
            device_timestamp_ms=self._index * 1000.0 / 30.0,
            truth=GroundTruth(patient_to_camera=pose, face_visible=False, scenario="charuco"),
        )
        self._index += 1
        return frame

    def _close(self) -> None:
        self._renderer = None


# --------------------------------------------------------------------------- pose data


def handeye_pairs(
    count: int = 12,
    seed: int = 0,
    noise_mm: float = 0.5,
    noise_deg: float = 0.2,
    max_rotation_deg: float = 40.0,
    single_axis: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Eye-in-hand data: (hand_to_base list, target_to_camera list, true camera_to_hand).

    The target (board) is fixed in the base frame; camera measurements get
    Gaussian noise in position (mm) and orientation (deg).
    """
    rng = np.random.default_rng(seed)
    camera_to_hand = transform(rotation(12.0, -25.0, 95.0), [0.031, -0.052, 0.083])
    target_to_base = transform(rotation(180.0, 0.0, 10.0), [0.05, 0.02, 0.0])
    hands, targets = [], []
    for _ in range(count):
        if single_axis:
            r = rotation(0.0, 0.0, rng.uniform(-max_rotation_deg, max_rotation_deg))
        else:
            r = random_rotation(rng, max_rotation_deg)
        hand_to_base = transform(r, rng.uniform([-0.1, -0.1, 0.45], [0.1, 0.1, 0.6]))
        target_to_camera = (
            np.linalg.inv(camera_to_hand) @ np.linalg.inv(hand_to_base) @ target_to_base
        )
        noisy = transform(
            random_rotation(rng, noise_deg) @ target_to_camera[:3, :3],
            target_to_camera[:3, 3] + rng.normal(0.0, noise_mm / 1000.0, 3),
        )
        hands.append(hand_to_base)
        targets.append(noisy)
    return hands, targets, camera_to_hand


def spaam_alignments(
    count: int = 20,
    seed: int = 0,
    noise_px: float = 1.5,
    depth_range_m: tuple[float, float] = (0.35, 1.0),
    eye_offset_m: float = -0.032,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """One eye's SPAAM data: (points_headset_m Nx3, screen_px Nx2, true 3x4 P, (w, h)).

    The eye sits ``eye_offset_m`` along x from the headset origin, looking down +z.
    """
    rng = np.random.default_rng(seed)
    w, h = 1280, 720
    k = np.array([[1100.0, 0.0, 652.0], [0.0, 1095.0, 371.0], [0.0, 0.0, 1.0]])
    headset_to_eye = transform(rotation(1.5, -2.0, 0.5), [-eye_offset_m, 0.004, 0.012])
    p_true = k @ headset_to_eye[:3, :]
    pts: list[np.ndarray] = []
    px: list[np.ndarray] = []
    while len(pts) < count:
        z = rng.uniform(*depth_range_m)
        u, v = rng.uniform(0.08 * w, 0.92 * w), rng.uniform(0.08 * h, 0.92 * h)
        eye = np.linalg.inv(k) @ np.array([u, v, 1.0]) * z
        p = (np.linalg.inv(headset_to_eye) @ np.append(eye, 1.0))[:3]
        pts.append(p)
        px.append(np.array([u, v]) + rng.normal(0.0, noise_px, 2))
    return np.array(pts), np.array(px), p_true, (w, h)


def pivot_poses(
    count: int = 40,
    seed: int = 0,
    noise_mm: float = 0.25,
    max_rotation_deg: float = 35.0,
    outliers: int = 0,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Tool poses pivoting about a point: (tool_to_tracker list, tip_tool_m, pivot_tracker_m)."""
    rng = np.random.default_rng(seed)
    tip_tool = np.array([0.002, -0.004, 0.162])
    pivot = np.array([0.11, -0.05, 0.9])
    base = rotation(180.0, 0.0, 0.0)  # tool pointing down at the divot
    poses = []
    for i in range(count):
        r = random_rotation(rng, max_rotation_deg) @ base
        t = pivot - r @ tip_tool + rng.normal(0.0, noise_mm / 1000.0, 3)
        if i < outliers:
            t = t + rng.normal(0.0, 0.02, 3)
        poses.append(transform(r, t))
    return poses, tip_tool, pivot
