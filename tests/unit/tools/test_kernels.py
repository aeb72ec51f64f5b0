"""The tool stage's compiled kernels (edge/tools/kernels.py) against known answers and
against the numpy code each one replaced (kept here, as it was, as the reference)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.camera import Intrinsics
from edge.tools import kernels
from edge.tools.definition import load_tool
from edge.tools.pose import MarkerDetector, refine_corners

EDGE_SAMPLES = kernels.EDGE_SAMPLES
EDGE_SEARCH_PX = kernels.EDGE_SEARCH_PX
EDGE_STEP_PX = kernels.EDGE_STEP_PX
MIN_EDGE_CONTRAST = kernels.MIN_EDGE_CONTRAST
DEPTH_INSET = kernels.DEPTH_INSET
DEPTH_GRID = kernels.DEPTH_GRID
MIN_DEPTH_SAMPLES = kernels.MIN_DEPTH_SAMPLES
MAX_DEPTH_OFFSET_M = kernels.MAX_DEPTH_OFFSET_M
INTR = Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5)


# ----------------------------------------------------------------- the numpy reference


def numpy_refine_corners(gray: np.ndarray, corners: np.ndarray, modules: int = 6) -> np.ndarray:
    """Markers' outer corners (N, 4, 2) refined by fitting a line to each side's edge.

    ``gray`` is uint8; pixel centres are at integer coordinates. The edge is looked for
    within half a module (``modules`` across the marker) each way, so the samples stay
    on the black border inside and on the white quiet zone outside; it is where the
    intensity crosses half-way between the two. A side whose edge cannot be found (too
    little contrast) leaves its corners as they were.
    """
    c = np.asarray(corners, np.float64).reshape(-1, 4, 2)
    n_markers = c.shape[0]
    a = c  # side i runs from corner i to corner i + 1
    b = np.roll(c, -1, axis=1)
    length = np.linalg.norm(b - a, axis=2)  # (N, 4)
    d = (b - a) / np.maximum(length, 1e-9)[..., None]
    normal = np.stack([d[..., 1], -d[..., 0]], axis=-1)
    outward = np.sign(np.sum(normal * (a - c.mean(axis=1, keepdims=True)), axis=-1))
    normal *= np.where(outward == 0, 1.0, outward)[..., None]
    reach = np.clip(0.5 * length.min(axis=1) / modules, 1.0, EDGE_SEARCH_PX)  # (N,)
    steps = 2 * round(EDGE_SEARCH_PX / EDGE_STEP_PX) + 1
    unit = np.linspace(-1.0, 1.0, steps)
    s = reach[:, None] * unit[None, :]  # (N, S) offsets across the side, px
    t = np.linspace(0.15, 0.85, EDGE_SAMPLES)
    p = a[:, :, None, :] + t[None, None, :, None] * (b - a)[:, :, None, :]  # (N, 4, T, 2)
    q = p[:, :, :, None, :] + s[:, None, None, :, None] * normal[:, :, None, None, :]
    # Sampled from float pixels (a uint8 remap would round the interpolated values), of
    # only the part of the image the markers cover.
    height, width = gray.shape
    x0, y0 = np.clip(np.floor(q.reshape(-1, 2).min(axis=0)).astype(int) - 1, 0, None)
    x1, y1 = np.ceil(q.reshape(-1, 2).max(axis=0)).astype(int) + 2
    x1, y1 = min(int(x1), width), min(int(y1), height)
    patch = gray[y0:y1, x0:x1].astype(np.float32)
    maps = (q.reshape(-1, steps, 2) - (x0, y0)).astype(np.float32)
    prof = cv2.remap(
        patch, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float64)
    prof = prof.reshape(n_markers, 4, EDGE_SAMPLES, steps)
    dark = prof[..., :3].mean(axis=-1)
    bright = prof[..., -3:].mean(axis=-1)
    level = (dark + bright) / 2.0
    above = prof >= level[..., None]
    first = np.argmax(above, axis=-1)  # first sample at or above half-way
    ok = (bright - dark > MIN_EDGE_CONTRAST) & (first > 0)
    k = np.maximum(first, 1)
    lo = np.take_along_axis(prof, (k - 1)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(prof, k[..., None], axis=-1)[..., 0]
    frac = np.clip((level - lo) / np.maximum(hi - lo, 1e-9), 0.0, 1.0)
    step = (s[:, 1] - s[:, 0])[:, None, None]
    offset = s[:, 0][:, None, None] + (k - 1 + frac) * step  # (N, 4, T)
    pts = p + offset[..., None] * normal[:, :, None, :]  # (N, 4, T, 2)
    w = ok.astype(np.float64)
    count = w.sum(axis=-1)  # (N, 4)
    mean = (pts * w[..., None]).sum(axis=2) / np.maximum(count, 1.0)[..., None]
    r = (pts - mean[:, :, None, :]) * w[..., None]
    cxx = (r[..., 0] ** 2).sum(-1)
    cyy = (r[..., 1] ** 2).sum(-1)
    cxy = (r[..., 0] * r[..., 1]).sum(-1)
    angle = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (N, 4, 2)
    good = count >= 4
    # Corner i joins side i - 1 and side i: solve m1 + u d1 = m2 + v d2.
    m1, d1, g1 = np.roll(mean, 1, axis=1), np.roll(direction, 1, axis=1), np.roll(good, 1, axis=1)
    det = d1[..., 0] * -direction[..., 1] - d1[..., 1] * -direction[..., 0]
    rhs = mean - m1
    u = (rhs[..., 0] * -direction[..., 1] - rhs[..., 1] * -direction[..., 0]) / np.where(
        np.abs(det) < 1e-6, 1.0, det
    )
    corner = m1 + u[..., None] * d1
    use = g1 & good & (np.abs(det) >= 1e-6) & (np.linalg.norm(corner - c, axis=-1) < 3.0)
    return np.where(use[..., None], corner, c)


def numpy_project(pose: np.ndarray, points_m: np.ndarray, intr: Intrinsics) -> np.ndarray:
    p = points_m @ pose[:3, :3].T + pose[:3, 3]
    px = intr.project(p)
    px[~(p[:, 2] > 1e-6)] = np.nan
    return px


def numpy_depth_offset_m(
    pose: np.ndarray,
    markers: list,
    intr: Intrinsics,
    depth: np.ndarray,
    depth_scale_m: float,
) -> float:
    """Median (measured - predicted) depth at a grid of points inside the markers, or NaN.

    Each point is looked up at its nearest pixel; the predicted depth there is where that
    pixel's ray meets the marker's plane (the pose's).
    """
    h, w = depth.shape
    g = (np.arange(DEPTH_GRID) + 0.5) / DEPTH_GRID * 2.0 - 1.0  # -1..1 across the marker
    gu, gv = np.meshgrid(g * DEPTH_INSET / 2.0, g * DEPTH_INSET / 2.0)
    R, t = pose[:3, :3], pose[:3, 3]
    points, normals, anchors = [], [], []
    for m in markers:
        c = m.corners_m
        u, v = c[1] - c[0], c[3] - c[0]
        grid = m.centre_m + gu.reshape(-1, 1) * u + gv.reshape(-1, 1) * v
        points.append(grid)
        n = R @ m.normal
        normals.append(np.repeat(n[None], len(grid), axis=0))
        anchors.append(np.full(len(grid), float(n @ (R @ m.centre_m + t))))
    px = numpy_project(pose, np.concatenate(points), intr)
    n = np.concatenate(normals)
    d = np.concatenate(anchors)
    ok = np.isfinite(px).all(axis=1)
    ui = np.floor(np.where(ok, px[:, 0], -1) + 0.5).astype(int)
    vi = np.floor(np.where(ok, px[:, 1], -1) + 0.5).astype(int)
    ok &= (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    ui, vi, n, d = ui[ok], vi[ok], n[ok], d[ok]
    z = depth[vi, ui].astype(np.float64) * depth_scale_m
    rays = np.stack([(ui - intr.ppx) / intr.fx, (vi - intr.ppy) / intr.fy, np.ones(ui.size)], 1)
    predicted = d / np.sum(rays * n, axis=1)
    r = (z - predicted)[z > 0]
    if r.size < MIN_DEPTH_SAMPLES:
        return float("nan")
    offset = float(np.median(r))
    return offset if abs(offset) < MAX_DEPTH_OFFSET_M else float("nan")


# ----------------------------------------------------------------- known answers


def _drawn_square(corners_px: np.ndarray, size: int = 200, scale: int = 16) -> np.ndarray:
    """A black quadrilateral on white, ``corners_px`` exact (pixel centres at integers):
    filled at ``scale`` times the resolution and averaged down."""
    big = np.full((size * scale, size * scale), 255, np.uint8)
    shift = 4
    pts = np.round(((corners_px + 0.5) * scale - 0.5) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(big, [pts], 0, lineType=cv2.LINE_8, shift=shift)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def test_refined_corners_are_a_drawn_squares_true_corners() -> None:
    rng = np.random.default_rng(3)
    angle = math.radians(17.0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    square = np.array([[-30.0, -30.0], [30.0, -30.0], [30.0, 30.0], [-30.0, 30.0]])
    true = square @ rot.T + (101.3, 98.6)
    image = _drawn_square(true)
    start = (true + rng.uniform(-1.0, 1.0, true.shape))[None]
    refined = refine_corners(image, start, 6)[0]
    assert np.abs(start[0] - true).max() > 0.5  # the start was off
    assert np.linalg.norm(refined - true, axis=1).max() < 0.15  # the method: 0.13 px median
    assert np.abs(refined - numpy_refine_corners(image, start, 6)[0]).max() < 0.02


def test_a_side_without_contrast_leaves_its_corners_alone() -> None:
    flat = np.full((100, 100), 128, np.uint8)
    start = np.array([[[30.2, 30.1], [70.0, 30.3], [70.1, 70.2], [30.0, 69.8]]])
    assert np.array_equal(refine_corners(flat, start, 6), start)
    assert np.array_equal(numpy_refine_corners(flat, start, 6), start)


def test_refined_corners_match_the_numpy_version_on_the_phantom(occluded_frames) -> None:
    detector = MarkerDetector({"DICT_4X4_50"})
    raw = detector._detectors["DICT_4X4_50"]
    compared = 0
    for frame in occluded_frames[::7]:
        gray = cv2.cvtColor(frame.color, cv2.COLOR_RGB2GRAY)
        found, ids, _ = raw.detectMarkers(gray)
        if ids is None:
            continue
        c = np.asarray(found, np.float64).reshape(-1, 4, 2)
        ours, reference = refine_corners(gray, c, 6), numpy_refine_corners(gray, c, 6)
        # The reference sampled through cv2.remap, whose positions step by 1/32 px.
        assert np.abs(ours - reference).max() < 0.03
        assert np.median(np.abs(ours - reference)) < 0.01
        compared += len(c)
    assert compared >= 20


def test_depth_offset_is_the_depth_bias_at_a_plane_facing_the_camera(repo_root) -> None:
    marker = load_tool("needle-guide", repo_root / "hardware/tools").marker(0)  # faces -z
    pose = np.eye(4)
    pose[:3, 3] = (0.01, -0.02, 0.5)

    def offset(depth: np.ndarray) -> float:
        return float(
            kernels.depth_offset_m(
                pose,
                marker.corners_m[None].copy(),
                marker.centre_m[None].copy(),
                marker.normal[None].copy(),
                depth,
                0.001,
                INTR.fx,
                INTR.fy,
                INTR.ppx,
                INTR.ppy,
            )
        )

    assert offset(np.full((480, 640), 504, np.uint16)) == pytest.approx(0.004, abs=1e-12)
    assert math.isnan(offset(np.full((480, 640), 460, np.uint16)))  # 40 mm: in front of it
    assert math.isnan(offset(np.zeros((480, 640), np.uint16)))  # no depth


def test_depth_offset_matches_the_numpy_version_on_the_phantom(occluded_frames, repo_root) -> None:
    spec = load_tool("needle-guide", repo_root / "hardware/tools")
    compared = 0
    for frame in occluded_frames[::5]:
        pose = frame.truth.tool_to_camera.copy()
        pose[:3, 3] += (0.001, -0.002, 0.003)  # off a little, as a PnP pose is
        markers = list(spec.markers)
        ours = kernels.depth_offset_m(
            pose,
            np.stack([m.corners_m for m in markers]),
            np.stack([m.centre_m for m in markers]),
            np.stack([m.normal for m in markers]),
            frame.depth,
            frame.depth_scale_m,
            INTR.fx,
            INTR.fy,
            INTR.ppx,
            INTR.ppy,
        )
        reference = numpy_depth_offset_m(pose, markers, INTR, frame.depth, frame.depth_scale_m)
        assert ours == pytest.approx(reference, abs=1e-12, nan_ok=True)
        compared += int(math.isfinite(reference))
    assert compared >= 10


def test_corner_errors_match_the_projection(repo_root) -> None:
    spec = load_tool("needle-guide", repo_root / "hardware/tools")
    rng = np.random.default_rng(5)
    obj = np.stack([m.corners_m for m in spec.markers])
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(np.array([0.3, -0.2, 0.1]))[0]
    pose[:3, 3] = (0.02, 0.01, 0.5)
    img = numpy_project(pose, obj.reshape(-1, 3), INTR).reshape(-1, 4, 2)
    img += rng.normal(0.0, 1.0, img.shape)
    got = kernels.corner_errors(pose, obj, img, INTR.fx, INTR.fy, INTR.ppx, INTR.ppy)
    diff = numpy_project(pose, obj.reshape(-1, 3), INTR).reshape(-1, 4, 2) - img
    assert got[:, 0] == pytest.approx(np.linalg.norm(diff, axis=2).max(axis=1), rel=1e-12)
    assert got[:, 1] == pytest.approx((diff**2).sum(axis=(1, 2)), rel=1e-12)
    behind = pose.copy()
    behind[2, 3] = 0.0  # markers 0, 3 and 4 have corners behind the camera, 1 and 2 not
    worst = kernels.corner_errors(behind, obj, img, INTR.fx, INTR.fy, INTR.ppx, INTR.ppy)[:, 0]
    reference = np.linalg.norm(
        numpy_project(behind, obj.reshape(-1, 3), INTR).reshape(-1, 4, 2) - img, axis=2
    ).max(axis=1)
    assert np.isinf(worst).tolist() == [True, False, False, True, True]
    assert np.array_equal(np.isinf(worst), ~np.isfinite(reference))
