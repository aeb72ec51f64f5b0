"""The depth cloud of the face region that the surface registration fits.

Pixels inside the convex hull of the tracked landmarks (all of them, or the
rigid upper face's, :data:`~edge.registration.landmarks.RIGID_FACE_HULL`),
minus the eyes and the mouth (they move on their own), sampled on a regular
grid whose stride is chosen so that about ``max_points`` pixels remain, lifted
with the aligned depth into the camera frame. Pixels coloured like a surgical
drape (:func:`drape_coloured`) are left out, and each point is labelled with the
anatomical region it lies in (:data:`~edge.registration.landmarks.RIGID_REGIONS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.frames import Frame, PixelFormat
from edge.jit import c_array, kernel
from edge.registration.landmarks import (
    EYE_LEFT_CONTOUR,
    EYE_RIGHT_CONTOUR,
    LIPS_OUTER_CONTOUR,
    RIGID_REGIONS,
)

REGION_NAMES = tuple(RIGID_REGIONS)
# The landmark row of each region's centre, in REGION_NAMES order.
REGION_CENTRE_ROWS = [RIGID_REGIONS[n] for n in REGION_NAMES]

# Enlargement of the eye and mouth contours about their centroids: lids and lips
# move beyond the contour line itself.
EYE_MARGIN = 1.5
MOUTH_MARGIN = 1.3


# The contours left out of the region, with their enlargement (landmark rows).
_HOLES = (
    (np.array(EYE_RIGHT_CONTOUR), EYE_MARGIN),
    (np.array(EYE_LEFT_CONTOUR), EYE_MARGIN),
    (np.array(LIPS_OUTER_CONTOUR), MOUTH_MARGIN),
)
_HOLES_MAX_ROW = max(int(rows.max()) for rows, _ in _HOLES)
# The holes' rows end to end, where each hole ends in them, and their enlargements.
_HOLE_ROWS = np.concatenate([rows for rows, _ in _HOLES]).astype(np.int64)
_HOLE_ENDS = np.cumsum([len(rows) for rows, _ in _HOLES]).astype(np.int64)
_HOLE_GROWN = np.array([grown for _, grown in _HOLES], np.float64)


def _hull_rows(hull_indices: Sequence[int]) -> tuple[np.ndarray, int, int]:
    """The rows of a hull (as :func:`face_pixels` takes them) as an array, their largest
    and their smallest. Raises IndexError for a row that is not an integer, as numpy's
    indexing would."""
    given = np.asarray(hull_indices)
    if not len(given):
        raise ValueError("hull_indices is empty: name the landmark rows of the region")
    if given.dtype.kind not in "iu":
        raise IndexError(f"hull rows must be integers, got {given.dtype} {hull_indices!r:.80}")
    rows = given.astype(np.int64)
    return rows, int(rows.max()), int(rows.min())


_NO_ROWS = np.zeros(0, np.int64)
# :func:`_hull_rows` of the tuples seen lately, by identity (a tuple cannot change; an
# equal tuple of floats must not find the ints' rows): made once per hull, not per frame.
_ROWS_SEEN: dict[int, tuple[tuple[int, ...], tuple[np.ndarray, int, int]]] = {}


def _rows_of(hull_indices: Sequence[int]) -> tuple[np.ndarray, int, int]:
    """:func:`_hull_rows`, kept for a tuple (the stage passes the same one every frame)."""
    if type(hull_indices) is not tuple:
        return _hull_rows(hull_indices)
    seen = _ROWS_SEEN.get(id(hull_indices))
    if seen is not None and seen[0] is hull_indices:
        return seen[1]
    rows = _hull_rows(hull_indices)
    if len(_ROWS_SEEN) >= 8:
        _ROWS_SEEN.clear()
    _ROWS_SEEN[id(hull_indices)] = (hull_indices, rows)
    return rows


@kernel("float32[:, ::1](float64[:, ::1], int64[::1], boolean)")
def _hull_points(full: np.ndarray, rows: np.ndarray, every: bool) -> np.ndarray:
    """The (u, v) of ``rows`` of ``full`` (N, >=2) that are finite as float32, in that order
    (of every row when ``every``), for cv2.convexHull; a negative row counts from the end.
    A coordinate beyond float32's range is left out as a NaN would be: the grid's
    integer cells could not hold it."""
    n = full.shape[0]
    k = n if every else rows.shape[0]
    out = np.empty((k, 2), np.float32)
    m = 0
    for i in range(k):
        r = i if every else rows[i]
        if r < 0:
            r += n
        u, v = np.float32(full[r, 0]), np.float32(full[r, 1])
        if math.isfinite(u) and math.isfinite(v):
            out[m, 0] = u
            out[m, 1] = v
            m += 1
    return out[:m].copy()


@kernel(
    "int64(float64[:, ::1], int64, float64, float64, float64, float64, int32[:, :, ::1], int64)"
)
def _cells_into(
    poly: np.ndarray,
    k: int,
    grown: float,
    u0: float,
    v0: float,
    stride: float,
    out: np.ndarray,
    at: int,
) -> int:
    """The first ``k`` vertices of ``poly`` in mask cells, into ``out[at:at + k]`` as
    cv2.fillPoly takes them: enlarged ``grown`` times about their centroid first (when
    ``grown`` > 0). Returns where they end: ``at`` (nothing written) when a vertex is not
    finite."""
    for i in range(k):
        if not (math.isfinite(poly[i, 0]) and math.isfinite(poly[i, 1])):
            return at
    c0 = c1 = 0.0
    for i in range(k):  # the centroid, summed in order as numpy does along axis 0
        c0 += poly[i, 0]
        c1 += poly[i, 1]
    c0 /= k
    c1 /= k
    for i in range(k):
        u, v = poly[i, 0], poly[i, 1]
        if grown > 0:
            u = c0 + (u - c0) * grown
            v = c1 + (v - c1) * grown
        out[at + i, 0, 0] = np.int32(np.rint((u - u0) / stride))
        out[at + i, 0, 1] = np.int32(np.rint((v - v0) / stride))
    return at + k


@kernel(
    "Tuple((int64[::1], int32[:, :, ::1], uint8[:, ::1]))(float32[:, :, ::1], float64, int64,"
    " float64[:, ::1], boolean, int64[::1], int64[::1], float64[::1])"
)
def _face_grid(
    hull32: np.ndarray,
    area: float,
    max_points: int,
    full: np.ndarray,
    holes: bool,
    hole_rows: np.ndarray,
    hole_ends: np.ndarray,
    hole_grown: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sampling grid of :func:`face_pixels` for the hull (H, 1, 2) of ``area``: (u0, v0,
    stride, then where the hull's cells end and each hole's, in ``cells``), the cells of
    the hull and of the holes (rows of ``full``, when ``holes``) end to end, and the empty
    mask. A hole with a vertex not finite has no cells (it ends where the one before does)."""
    h = hull32.shape[0]
    hull = np.empty((h, 2))
    for i in range(h):
        hull[i, 0] = np.float64(hull32[i, 0, 0])
        hull[i, 1] = np.float64(hull32[i, 0, 1])
    lo0, lo1, hi0, hi1 = hull[0, 0], hull[0, 1], hull[0, 0], hull[0, 1]
    for i in range(1, h):
        lo0, hi0 = min(lo0, hull[i, 0]), max(hi0, hull[i, 0])
        lo1, hi1 = min(lo1, hull[i, 1]), max(hi1, hull[i, 1])
    u0, v0 = int(np.floor(lo0)), int(np.floor(lo1))
    u1, v1 = int(np.ceil(hi0)), int(np.ceil(hi1))
    stride = max(1, int(math.sqrt(area / max(max_points, 1) * 1.25)))
    mask = np.zeros(((v1 - v0) // stride + 1, (u1 - u0) // stride + 1), np.uint8)
    n_holes = hole_ends.shape[0]
    info = np.empty(4 + n_holes, np.int64)
    info[0], info[1], info[2] = u0, v0, stride
    cells = np.empty((h + hole_rows.shape[0], 1, 2), np.int32)
    at = _cells_into(hull, h, 0.0, u0, v0, stride, cells, 0)
    info[3] = at
    poly = np.empty((hole_rows.shape[0], 2))
    start = 0
    for j in range(n_holes):
        if holes:
            k = hole_ends[j] - start
            for i in range(k):
                r = hole_rows[start + i]
                poly[i, 0], poly[i, 1] = full[r, 0], full[r, 1]
            at = _cells_into(poly, k, hole_grown[j], u0, v0, stride, cells, at)
            start = hole_ends[j]
        info[4 + j] = at
    return info, cells, mask


def face_pixels(
    landmarks_px: np.ndarray,
    width: int,
    height: int,
    max_points: int,
    hull_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """(K, 2) integer pixel coordinates (u, v) of the face region to sample.

    ``landmarks_px``: (468, >=2) pixel coordinates of the face model landmarks;
    the region is their convex hull, or that of ``hull_indices`` alone. It is
    rasterised on a grid of one cell per sampled pixel, so the cost does not
    grow with the face's size in the image.
    """
    import cv2

    given = np.asarray(landmarks_px, dtype=np.float64)
    full = given[:, :2]
    if full.ndim != 2 or full.shape[1] != 2:
        raise ValueError(f"landmarks_px must be (N, >=2) pixel coordinates, got {given.shape}")
    table = c_array(given)  # the kernels read its columns 0 and 1: no copy of those
    n = len(full)
    rows, every = _NO_ROWS, True
    if hull_indices is not None:
        rows, largest, smallest = _rows_of(hull_indices)
        every = not n > largest
        if not every and smallest < -n:
            raise IndexError(f"index {smallest} is out of bounds for axis 0 with size {n}")
    lm = _hull_points(table, rows, every)
    if len(lm) < 3:
        return np.zeros((0, 2), np.int64)
    hull = cv2.convexHull(lm)
    hull_area = float(cv2.contourArea(hull))  # float32 points: the area is in float64
    if hull_area < 1.0:
        return np.zeros((0, 2), np.int64)
    info, cells, mask = _face_grid(
        hull, hull_area, max_points, table, n > _HOLES_MAX_ROW, _HOLE_ROWS, _HOLE_ENDS,
        _HOLE_GROWN,
    )  # fmt: skip
    u0, v0, stride, end, *hole_ends = info.tolist()
    cv2.fillPoly(mask, [cells[:end]], 1)
    for hole_end in hole_ends:
        if hole_end > end:
            cv2.fillPoly(mask, [cells[end:hole_end]], 0)
        end = hole_end
    return _mask_pixels(mask, u0, v0, stride, width, height)


@kernel("int64[:, ::1](uint8[:, ::1], int64, int64, int64, int64, int64)")
def _mask_pixels(
    mask: np.ndarray, u0: int, v0: int, stride: int, width: int, height: int
) -> np.ndarray:
    """The image pixels (u, v) of the mask's set cells, row by row; those off the image
    left out."""
    rows, cols = mask.shape
    out = np.empty((rows * cols, 2), np.int64)
    k = 0
    for r in range(rows):
        v = v0 + r * stride
        if v < 0 or v >= height:
            continue
        for c in range(cols):
            u = u0 + c * stride
            if mask[r, c] and 0 <= u < width:
                out[k, 0] = u
                out[k, 1] = v
                k += 1
    return out[:k].copy()


def correct_skin_depth(points_camera_m: np.ndarray, skin_depth_bias_m: float) -> np.ndarray:
    """Points on skin moved ``skin_depth_bias_m`` nearer in depth (z), as measured too far.

    Along each point's viewing ray, so the pixel it came from stays the same:
    the depth ``z`` becomes ``z - bias`` and x, y scale with it.
    """
    p = np.asarray(points_camera_m, dtype=np.float64)
    if not skin_depth_bias_m or p.size == 0:
        return p
    if p.ndim == 2 and p.shape[1] >= 3:
        return _nearer(c_array(p), float(skin_depth_bias_m))
    z = p[:, 2:3]
    return np.asarray(p * ((z - skin_depth_bias_m) / np.where(z > 0, z, 1.0)))


@kernel("float64[:, ::1](float64[:, ::1], float64)")
def _nearer(p: np.ndarray, bias: float) -> np.ndarray:
    """:func:`correct_skin_depth` of (N, >=3) points, the same operations as numpy's."""
    out = np.empty_like(p)
    for i in range(p.shape[0]):
        z = p[i, 2]
        scale = (z - bias) / (z if z > 0 else 1.0)
        for j in range(p.shape[1]):
            out[i, j] = p[i, j] * scale
    return out


def drape_coloured(
    color: np.ndarray, color_format: PixelFormat, points_px: np.ndarray, chroma: float
) -> np.ndarray:
    """(K,) True where the pixel nearest to the image point (u, v) is coloured like a
    surgical drape: blue or green. Points are clipped onto the image; one that is not
    finite is not a drape's.

    Drapes are blue or green so that they stand apart from tissue; skin, lit white,
    is red-orange at any pigmentation (its Cr exceeds its Cb in YCbCr, ITU-R BT.601;
    Chai & Ngan 1999, "Face segmentation using skin-color map in videophone
    applications"). A pixel is a drape's when Cb - Cr exceeds ``chroma`` (8-bit units);
    grey, black and white pixels (Cb = Cr) are not: the ICP occlusion gate handles
    white gauze and instruments.
    """
    return _drape_at_points(
        c_array(points_px), color, color_format is PixelFormat.BGR8, np.float32(chroma)
    )


@kernel("boolean(Array(uint8, 3, 'A', readonly=True), int64, int64, boolean, float32)")
def _is_drape(color: np.ndarray, u: int, v: int, bgr: bool, chroma: float) -> bool:
    """:func:`drape_coloured` at one pixel, in float32 as numpy computed it."""
    red = np.float32(color[v, u, 2 if bgr else 0])
    green = np.float32(color[v, u, 1])
    blue = np.float32(color[v, u, 0 if bgr else 2])
    # BT.601: Cb - Cr = 0.564 (B - Y) - 0.713 (R - Y), Y = 0.299 R + 0.587 G + 0.114 B
    y = np.float32(0.299) * red + np.float32(0.587) * green + np.float32(0.114) * blue
    return bool(np.float32(0.564) * (blue - y) - np.float32(0.713) * (red - y) > chroma)


@kernel("boolean[::1](float64[:, ::1], Array(uint8, 3, 'A', readonly=True), boolean, float32)")
def _drape_at_points(points: np.ndarray, color: np.ndarray, bgr: bool, chroma: float) -> np.ndarray:
    height, width = color.shape[0], color.shape[1]
    out = np.zeros(points.shape[0], np.bool_)
    for i in range(points.shape[0]):
        u, v = points[i, 0], points[i, 1]
        if math.isfinite(u) and math.isfinite(v):
            col = int(min(max(np.rint(u), 0.0), width - 1.0))
            row = int(min(max(np.rint(v), 0.0), height - 1.0))
            out[i] = _is_drape(color, col, row, bgr, chroma)
    return out


@dataclass(frozen=True)
class FaceCloud:
    """The sampled face region: its depth points and how much of each region they cover.

    ``points_m``: (N, 3) camera frame, metres, corrected for the skin depth bias;
    ``region``: (N,) index into :data:`REGION_NAMES` per point; ``sampled``: pixels
    sampled in the region, with depth or without, drape-coloured ones included (what
    the rigid face would have given uncovered); ``sampled_per_region``: the same per
    region; ``drape_pixels``: sampled pixels left out as drape-coloured.
    """

    points_m: np.ndarray
    region: np.ndarray
    sampled: int
    sampled_per_region: np.ndarray
    drape_pixels: int = 0

    @classmethod
    def empty(cls) -> FaceCloud:
        zero = np.zeros(len(REGION_NAMES), np.int64)
        return cls(np.zeros((0, 3)), np.zeros(0, np.int64), 0, zero)


def region_centres(landmarks_px: np.ndarray) -> np.ndarray:
    """(R, 2) pixel centre of each region (:data:`RIGID_REGIONS`), in REGION_NAMES order."""
    return c_array(np.asarray(landmarks_px, dtype=np.float64)[REGION_CENTRE_ROWS, :2])


@kernel(
    "Tuple((float64[:, ::1], int64[::1], int64[::1], int64))(int64[:, ::1],"
    " Array(uint16, 2, 'A', readonly=True), Array(uint8, 3, 'A', readonly=True), boolean,"
    " float64, float64, float64, float64, float64, float64, float64, float64[:, ::1])"
)
def _lift_face(
    pix: np.ndarray,
    depth: np.ndarray,
    color: np.ndarray,
    bgr: bool,
    chroma: float,
    depth_scale_m: float,
    bias_m: float,
    fx: float,
    fy: float,
    ppx: float,
    ppy: float,
    centres: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`region_cloud` after sampling, one pass: (points (N, 3), region (N,) of the
    points, pixels per region (R,), drape-coloured pixels). ``chroma`` NaN: no drape test.

    Each pixel's region is its nearest finite centre (0 when none is finite); the drape
    test is :func:`drape_coloured`'s."""
    n = pix.shape[0]
    points = np.empty((n, 3))
    region = np.empty(n, np.int64)
    per_region = np.zeros(centres.shape[0], np.int64)
    test_drape = not math.isnan(chroma)
    limit = np.float32(chroma)
    drape = 0
    k = 0
    for i in range(n):
        u, v = pix[i, 0], pix[i, 1]
        best = np.inf
        label = 0
        for c in range(centres.shape[0]):
            d = (u - centres[c, 0]) ** 2 + (v - centres[c, 1]) ** 2
            if d < best:  # NaN centres never win
                best = d
                label = c
        per_region[label] += 1
        raw = depth[v, u]
        if test_drape and _is_drape(color, u, v, bgr, limit):
            drape += 1
            continue
        if raw == 0:
            continue
        z = raw * depth_scale_m - bias_m
        points[k, 0] = (u - ppx) / fx * z
        points[k, 1] = (v - ppy) / fy * z
        points[k, 2] = z
        region[k] = label
        k += 1
    return points[:k].copy(), region[:k].copy(), per_region, drape


def region_cloud(
    frame: Frame,
    landmarks_px: np.ndarray,
    max_points: int = 600,
    skin_depth_bias_m: float = 0.0,
    hull_indices: Sequence[int] | None = None,
    drape_chroma: float | None = None,
) -> FaceCloud:
    """The face region's cloud (:func:`face_pixels`): points with valid depth, corrected
    for the camera's skin depth bias (:func:`correct_skin_depth`), drape-coloured pixels
    left out when ``drape_chroma`` is given (:func:`drape_coloured`)."""
    if frame.depth is None:
        return FaceCloud.empty()
    intr = frame.intrinsics
    pix = face_pixels(landmarks_px, intr.width, intr.height, max_points, hull_indices)
    if len(pix) == 0:
        return FaceCloud.empty()
    points, region, per_region, drape = _lift_face(
        pix,
        frame.depth,
        frame.color,
        frame.color_format is PixelFormat.BGR8,
        math.nan if drape_chroma is None else drape_chroma,
        frame.depth_scale_m,
        skin_depth_bias_m,
        intr.fx,
        intr.fy,
        intr.ppx,
        intr.ppy,
        region_centres(landmarks_px),
    )
    return FaceCloud(points, region, len(pix), per_region, int(drape))


def face_cloud(
    frame: Frame, landmarks_px: np.ndarray, max_points: int = 600, skin_depth_bias_m: float = 0.0
) -> np.ndarray:
    """(N, 3) camera-frame points (metres) of the whole face region (:func:`region_cloud`)."""
    return region_cloud(frame, landmarks_px, max_points, skin_depth_bias_m).points_m
