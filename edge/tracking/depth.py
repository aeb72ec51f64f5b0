"""3-D landmarks from aligned depth: a robust depth per landmark, then deprojection.

The landmark model's own z is a relative cue on a pixel scale, never a depth:
metric 3-D comes from the camera's depth only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.frames import Intrinsics


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
    no measurement; only the sampled windows are converted. Returns (N,)
    depths (NaN where invalid) and (N,) bool validity. A position outside the
    image, or not finite, is invalid.
    """
    px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got {depth.shape}")
    h, w = depth.shape
    n = px.shape[0]
    finite = np.isfinite(px).all(axis=1)
    centre = np.zeros((n, 2), dtype=np.int64)
    centre[finite] = np.rint(px[finite]).astype(np.int64)
    inside = finite & (centre[:, 0] >= 0) & (centre[:, 0] < w) & (centre[:, 1] >= 0)
    inside &= centre[:, 1] < h
    r = sampling.window_px // 2
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    xs = centre[:, 0:1] + ox.reshape(1, -1)  # (N, window^2)
    ys = centre[:, 1:2] + oy.reshape(1, -1)
    in_image = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    # Window pixels beyond the border are clipped onto it; they count as holes below.
    flat = np.clip(ys, 0, h - 1) * w + np.clip(xs, 0, w - 1)
    values = np.take(depth.ravel(), flat).astype(np.float32) * np.float32(depth_scale_m)
    ok = in_image & (values > sampling.min_m) & (values < sampling.max_m) & np.isfinite(values)
    count = ok.sum(axis=1)
    # Sort with holes pushed to the end, then read percentiles among the valid entries only.
    ordered = np.sort(np.where(ok, values, np.inf), axis=1)
    rows = np.arange(n)

    def pick(q: float) -> np.ndarray:
        idx = np.clip(np.floor(q * (count - 1)).astype(np.int64), 0, values.shape[1] - 1)
        return ordered[rows, idx]

    with np.errstate(invalid="ignore"):  # rows with no valid depth give inf - inf
        lo_mid = pick(0.5)
        hi_mid = ordered[rows, np.clip(count // 2, 0, values.shape[1] - 1)]
        median = np.where(count % 2 == 1, lo_mid, (lo_mid + hi_mid) / 2)
        spread = pick(0.9) - pick(0.1)
    valid = inside & (count >= sampling.min_valid_fraction * values.shape[1])
    valid &= spread <= sampling.max_spread_m
    return np.where(valid, median, np.nan), valid


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
    cameras is close to distortion-free).
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
    z, valid = landmark_depths_m(px, depth, sampling, depth_scale_m)
    points = intrinsics.deproject(np.where(valid[:, None], px, 0.0), np.where(valid, z, 0.0))
    valid &= np.isfinite(points).all(axis=1)
    points[~valid] = np.nan
    return points, valid
