"""3-D landmarks from aligned depth: a robust depth per landmark, then deprojection.

The landmark model's own z is a relative cue on a pixel scale, never a depth:
metric 3-D comes from the camera's depth only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.frames import Intrinsics
from edge.jit import kernel


@dataclass(frozen=True)
class DepthSampling:
    """How a landmark's depth is read from the depth image.

    ``window_px``: odd side of the square window around the landmark.
    ``min_valid_fraction``: share of the window that must hold a depth (not a hole).
    ``max_spread_m``: largest allowed spread (10th to 90th percentile) of the
    valid depths: more means the window straddles a depth edge (face border,
    glasses rim), where the median is not the surface under the landmark.
    ``min_m``/``max_m``: depths outside this range are treated as holes.
    """

    window_px: int = 5
    min_valid_fraction: float = 0.5
    max_spread_m: float = 0.02
    min_m: float = 0.1
    max_m: float = 3.0

    def __post_init__(self) -> None:
        if self.window_px < 1 or self.window_px % 2 == 0:
            raise ValueError(f"depth window must be a positive odd size, got {self.window_px}")
        if not 0.0 < self.min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in (0, 1], got {self.min_valid_fraction}")
        if self.max_spread_m <= 0 or not 0 <= self.min_m < self.max_m:
            raise ValueError("need max_spread_m > 0 and 0 <= min_m < max_m")


def _lift(
    px,
    depth,
    scale,
    window,
    min_count,
    max_spread,
    min_m,
    max_m,
    ppx,
    ppy,
    fx,
    fy,
    z,
    valid,
    points,
):
    """Each landmark's window: valid depths (in the float32 metres of ``depth * scale``,
    within ``(min_m, max_m)``, inside the image), their median and 10th-90th percentile
    spread; then the pinhole deprojection with ``ppx, ppy, fx, fy``. Writes ``z``
    (NaN where the window fails), ``valid`` (the window passes and the deprojection is
    finite) and ``points`` (the deprojection of valid rows, NaN elsewhere). With the
    identity camera of :func:`landmark_depths_m` a pixel inside the image always
    deprojects to finite values, so there valid means the window passes."""
    h, w = depth.shape
    r = window // 2
    buf = np.empty(window * window, dtype=np.float32)
    for i in range(px.shape[0]):
        x, y = px[i, 0], px[i, 1]
        z[i] = np.nan
        valid[i] = False
        points[i, 0] = points[i, 1] = points[i, 2] = np.nan
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        rx, ry = np.rint(x), np.rint(y)
        if not (0 <= rx < w and 0 <= ry < h):
            continue
        cx, cy = np.int64(rx), np.int64(ry)
        count = 0
        for yy in range(cy - r, cy + r + 1):
            for xx in range(cx - r, cx + r + 1):
                if not (0 <= xx < w and 0 <= yy < h):
                    continue  # beyond the border: a hole
                v = np.float32(depth[yy, xx]) * scale
                if v > min_m and v < max_m and np.isfinite(v):
                    # Insertion sort: the window's valid depths in ascending order.
                    k = count
                    while k > 0 and buf[k - 1] > v:
                        buf[k] = buf[k - 1]
                        k -= 1
                    buf[k] = v
                    count += 1
        if count == 0 or not count >= min_count:
            continue
        lo_mid = buf[np.int64(np.floor(0.5 * (count - 1)))]
        median = lo_mid if count % 2 == 1 else (lo_mid + buf[count // 2]) / np.float32(2)
        spread = (
            buf[np.int64(np.floor(0.9 * (count - 1)))] - buf[np.int64(np.floor(0.1 * (count - 1)))]
        )
        if not spread <= max_spread:
            continue
        zz = np.float64(median)
        px_x = (x - ppx) / fx * zz
        px_y = (y - ppy) / fy * zz
        z[i] = median
        if np.isfinite(px_x) and np.isfinite(px_y):  # else the lift is invalid (fx or fy 0)
            valid[i] = True
            points[i, 0], points[i, 1], points[i, 2] = px_x, px_y, zz


_SIGNATURE = (
    "void(float64[:, ::1], Array({}, 2, 'A', readonly=True), float32, int64, float64, float32,"
    " float32, float32, float64, float64, float64, float64, float32[::1], boolean[::1],"
    " float64[:, ::1])"
)
_lift_u16 = kernel(_SIGNATURE.format("uint16"))(_lift)
_lift_f32 = kernel(_SIGNATURE.format("float32"))(_lift)


def _run_lift(
    px: np.ndarray,
    depth: np.ndarray,
    sampling: DepthSampling,
    depth_scale_m: float,
    camera: tuple[float, float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got {depth.shape}")
    n = px.shape[0]
    z = np.empty(n, dtype=np.float32)
    valid = np.empty(n, dtype=np.bool_)
    points = np.empty((n, 3))
    run = _lift_u16 if depth.dtype == np.uint16 else _lift_f32
    run(
        np.ascontiguousarray(px, dtype=np.float64),
        depth if depth.dtype == np.uint16 else np.asarray(depth, dtype=np.float32),
        np.float32(depth_scale_m),
        sampling.window_px,
        sampling.min_valid_fraction * sampling.window_px**2,
        np.float32(sampling.max_spread_m),
        np.float32(sampling.min_m),
        np.float32(sampling.max_m),
        *camera,
        z,
        valid,
        points,
    )
    return z, valid, points


def landmark_depths_m(
    pixels: np.ndarray,
    depth: np.ndarray,
    sampling: DepthSampling = DepthSampling(),
    depth_scale_m: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust depth (metres) under each of N pixel positions, and whether it is valid.

    ``pixels``: (N, 2) x, y in the depth image (aligned to color; pixel centres
    at integers). ``depth``: (H, W), ``depth * depth_scale_m`` in metres (raw
    camera units with the frame's scale, or metres with 1.0), 0 where there is
    no measurement; only the sampled windows are converted (to float32). The
    depth is the median of the window's valid depths (float32); valid means
    inside the image, at least ``min_valid_fraction`` of the window valid and
    their 10th-90th percentile spread (the entries at ``floor(q (count - 1))``
    of the sorted valid depths) at most ``max_spread_m``. Returns (N,) float32
    depths (NaN where invalid) and (N,) bool validity. A position outside the
    image, or not finite, is invalid.
    """
    px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    z, valid, _ = _run_lift(px, depth, sampling, depth_scale_m, (0.0, 0.0, 1.0, 1.0))
    return z, valid


def lift_landmarks(
    landmarks_px: np.ndarray,
    depth: np.ndarray | None,
    intrinsics: Intrinsics,
    sampling: DepthSampling = DepthSampling(),
    depth_scale_m: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (N, 2+) in color pixels to (N, 3) camera-frame metres and (N,) validity.

    ``depth`` is aligned to color: metres (``frame.depth_m()``) or raw units
    with ``depth_scale_m`` (``frame.depth``, ``frame.depth_scale_m``: skips
    converting the whole image). With no depth image every landmark is
    invalid. Invalid rows are NaN; a valid row is always finite. Lens
    distortion is not undone (the aligned color stream of the supported
    cameras is close to distortion-free). One compiled pass per landmark
    (:func:`landmark_depths_m`, then the pinhole deprojection of
    :meth:`Intrinsics.deproject`).
    """
    px = np.asarray(landmarks_px, dtype=np.float64)[:, :2]
    n = px.shape[0]
    if depth is None:
        return np.full((n, 3), np.nan), np.zeros(n, dtype=bool)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(
            f"depth {depth.shape} does not match the intrinsics "
            f"{intrinsics.width}x{intrinsics.height}"
        )
    camera = (intrinsics.ppx, intrinsics.ppy, intrinsics.fx, intrinsics.fy)
    _, valid, points = _run_lift(px, depth, sampling, depth_scale_m, camera)
    return points, valid
