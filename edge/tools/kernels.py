"""The tool stage's per-frame arithmetic as compiled kernels (:func:`edge.jit.kernel`).

Each was a few dozen small numpy operations (about 0.7 ms a frame for the corners, 0.2 ms
for the depth, 20-30 us per reprojection check); here each is one loop, compiled once at
import, that holds no interpreter lock, so it runs while the face tracking stage runs
beside it (edge/tools/beside.py). tests/unit/tools/test_kernels.py checks each against
the numpy code it replaced.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import kernel

EDGE_SAMPLES = 12  # points along each side of a marker
EDGE_SEARCH_PX = 2.5  # at most this far across the side the edge is looked for, each way
EDGE_STEP_PX = 0.25
EDGE_STEPS = 2 * round(EDGE_SEARCH_PX / EDGE_STEP_PX) + 1  # samples across the side
MIN_EDGE_CONTRAST = 20.0  # grey levels between the black border and the white around it
MAX_CORNER_MOVE_PX = 3.0  # a refined corner further from the detector's is not used
DEPTH_INSET = 0.6  # sample depth inside the marker, this share of its size (away from edges)
DEPTH_GRID = 8  # an 8 x 8 grid of depth samples on each marker
MIN_DEPTH_SAMPLES = 20
MAX_DEPTH_OFFSET_M = 0.03  # larger: something is in front of the markers; keep the PnP pose


# Images may be read-only (a recording's frames are views of its buffer): accepted as such.
GRAY = "Array(uint8, 2, 'A', readonly=True)"
DEPTH = "Array(uint16, 2, 'A', readonly=True)"


@kernel(f"float64({GRAY}, float64, float64)")
def _bilinear(gray, x, y):
    """``gray`` at (x, y), bilinear, the border replicated (OpenCV's BORDER_REPLICATE)."""
    h, w = gray.shape
    fx, fy = math.floor(x), math.floor(y)
    ax, ay = x - fx, y - fy
    x0 = min(max(int(fx), 0), w - 1)
    x1 = min(max(int(fx) + 1, 0), w - 1)
    y0 = min(max(int(fy), 0), h - 1)
    y1 = min(max(int(fy) + 1, 0), h - 1)
    top = (1.0 - ax) * gray[y0, x0] + ax * gray[y0, x1]
    bottom = (1.0 - ax) * gray[y1, x0] + ax * gray[y1, x1]
    return (1.0 - ay) * top + ay * bottom


@kernel(f"float64[:, :, ::1]({GRAY}, float64[:, :, ::1], int64)")
def refine_corners(gray, corners, modules):
    """Markers' outer corners (N, 4, 2) refined by fitting a line to each side's edge.

    ``gray`` is uint8; pixel centres are at integer coordinates. Along each side
    (corner i to corner i + 1), at :data:`EDGE_SAMPLES` points, the intensity is sampled
    across the side (bilinear) within half a module (``modules`` across the marker) each
    way, so the samples stay on the black border inside and on the white quiet zone
    outside; the edge is where it first crosses half-way between the two ends. A line is
    fitted to each side's edge points (principal direction), and each corner is where
    its two sides' lines meet. A side whose edge cannot be found (too little contrast,
    fewer than 4 points) leaves its corners as they were, as does a corner that would
    move :data:`MAX_CORNER_MOVE_PX` or more.
    """
    n = corners.shape[0]
    out = corners.copy()
    means = np.empty((4, 2))
    dirs = np.empty((4, 2))
    good = np.empty(4, np.bool_)
    prof = np.empty(EDGE_STEPS)
    pts = np.empty((EDGE_SAMPLES, 2))
    ok = np.empty(EDGE_SAMPLES, np.bool_)
    for m in range(n):
        cx = 0.25 * (corners[m, 0, 0] + corners[m, 1, 0] + corners[m, 2, 0] + corners[m, 3, 0])
        cy = 0.25 * (corners[m, 0, 1] + corners[m, 1, 1] + corners[m, 2, 1] + corners[m, 3, 1])
        shortest = np.inf
        for i in range(4):
            j = (i + 1) % 4
            ex = corners[m, j, 0] - corners[m, i, 0]
            ey = corners[m, j, 1] - corners[m, i, 1]
            shortest = min(shortest, math.sqrt(ex * ex + ey * ey))
        reach = min(max(0.5 * shortest / modules, 1.0), EDGE_SEARCH_PX)
        first_s = -reach
        step_s = 2.0 * reach / (EDGE_STEPS - 1)
        for i in range(4):
            j = (i + 1) % 4
            ax, ay = corners[m, i, 0], corners[m, i, 1]
            ex, ey = corners[m, j, 0] - ax, corners[m, j, 1] - ay
            length = max(math.sqrt(ex * ex + ey * ey), 1e-9)
            dx, dy = ex / length, ey / length
            nx, ny = dy, -dx
            side = nx * (ax - cx) + ny * (ay - cy)
            if side < 0:  # the normal points out of the marker
                nx, ny = -nx, -ny
            count = 0
            sx, sy = 0.0, 0.0
            for k in range(EDGE_SAMPLES):
                t = 0.15 + 0.7 * k / (EDGE_SAMPLES - 1)
                px, py = ax + t * ex, ay + t * ey
                for s in range(EDGE_STEPS):
                    off = first_s + s * step_s
                    prof[s] = _bilinear(gray, px + off * nx, py + off * ny)
                dark = (prof[0] + prof[1] + prof[2]) / 3.0
                bright = (prof[EDGE_STEPS - 3] + prof[EDGE_STEPS - 2] + prof[EDGE_STEPS - 1]) / 3.0
                level = (dark + bright) / 2.0
                first = 0
                for s in range(EDGE_STEPS):
                    if prof[s] >= level:
                        first = s
                        break
                ok[k] = bright - dark > MIN_EDGE_CONTRAST and first > 0
                if not ok[k]:
                    continue
                lo, hi = prof[first - 1], prof[first]
                frac = min(max((level - lo) / max(hi - lo, 1e-9), 0.0), 1.0)
                off = first_s + (first - 1 + frac) * step_s
                pts[k, 0] = px + off * nx
                pts[k, 1] = py + off * ny
                sx += pts[k, 0]
                sy += pts[k, 1]
                count += 1
            good[i] = count >= 4
            mx, my = sx / max(count, 1), sy / max(count, 1)
            cxx, cyy, cxy = 0.0, 0.0, 0.0
            for k in range(EDGE_SAMPLES):
                if ok[k]:
                    rx, ry = pts[k, 0] - mx, pts[k, 1] - my
                    cxx += rx * rx
                    cyy += ry * ry
                    cxy += rx * ry
            angle = 0.5 * math.atan2(2.0 * cxy, cxx - cyy)
            means[i, 0], means[i, 1] = mx, my
            dirs[i, 0], dirs[i, 1] = math.cos(angle), math.sin(angle)
        for i in range(4):  # corner i joins side i - 1 and side i
            h = (i + 3) % 4
            if not (good[h] and good[i]):
                continue
            det = dirs[h, 0] * -dirs[i, 1] - dirs[h, 1] * -dirs[i, 0]
            if abs(det) < 1e-6:
                continue
            rx, ry = means[i, 0] - means[h, 0], means[i, 1] - means[h, 1]
            u = (rx * -dirs[i, 1] - ry * -dirs[i, 0]) / det
            x, y = means[h, 0] + u * dirs[h, 0], means[h, 1] + u * dirs[h, 1]
            if math.hypot(x - corners[m, i, 0], y - corners[m, i, 1]) < MAX_CORNER_MOVE_PX:
                out[m, i, 0], out[m, i, 1] = x, y
    return out


@kernel(
    "float64[:, ::1](float64[:, ::1], float64[:, :, ::1], float64[:, :, ::1], "
    "float64, float64, float64, float64)"
)
def corner_errors(pose, obj, img, fx, fy, ppx, ppy):
    """Per marker (n, 2): the largest distance (px) of its 4 corners ``obj`` (n, 4, 3, tool
    frame, m) through ``pose`` from the found ``img`` (n, 4, 2), and the sum of their
    squares; inf for a marker with a corner not in front of the camera."""
    n = obj.shape[0]
    out = np.empty((n, 2))
    for m in range(n):
        worst, total = 0.0, 0.0
        for c in range(4):
            x, y, z = obj[m, c, 0], obj[m, c, 1], obj[m, c, 2]
            X = pose[0, 0] * x + pose[0, 1] * y + pose[0, 2] * z + pose[0, 3]
            Y = pose[1, 0] * x + pose[1, 1] * y + pose[1, 2] * z + pose[1, 3]
            Z = pose[2, 0] * x + pose[2, 1] * y + pose[2, 2] * z + pose[2, 3]
            if not Z > 1e-6:
                worst, total = np.inf, np.inf
                break
            du = fx * X / Z + ppx - img[m, c, 0]
            dv = fy * Y / Z + ppy - img[m, c, 1]
            sq = du * du + dv * dv
            total += sq
            worst = max(worst, math.sqrt(sq))
        if not math.isfinite(worst):
            worst, total = np.inf, np.inf
        out[m, 0], out[m, 1] = worst, total
    return out


@kernel(
    "float64(float64[:, ::1], float64[:, :, ::1], float64[:, ::1], float64[:, ::1], "
    f"{DEPTH}, float64, float64, float64, float64, float64)"
)
def depth_offset_m(pose, corners, centres, normals, depth, scale_m, fx, fy, ppx, ppy):
    """Median (measured - predicted) depth at a grid of points inside the markers, or NaN.

    ``corners`` (n, 4, 3), ``centres`` and ``normals`` (n, 3) are the markers' in the tool
    frame (m), ``pose`` tool to camera, ``depth`` (H, W) in ``scale_m`` units aligned to
    colour. A :data:`DEPTH_GRID` square grid over the middle :data:`DEPTH_INSET` of each
    marker is projected; each point is looked up at its nearest pixel, where the predicted
    depth is where that pixel's ray meets the marker's plane. NaN: fewer than
    :data:`MIN_DEPTH_SAMPLES` valid pixels, or a median :data:`MAX_DEPTH_OFFSET_M` or more
    (something in front of the markers).
    """
    h, w = depth.shape
    n = corners.shape[0]
    r = np.empty(n * DEPTH_GRID * DEPTH_GRID)
    count = 0
    for m in range(n):
        nx = pose[0, 0] * normals[m, 0] + pose[0, 1] * normals[m, 1] + pose[0, 2] * normals[m, 2]
        ny = pose[1, 0] * normals[m, 0] + pose[1, 1] * normals[m, 1] + pose[1, 2] * normals[m, 2]
        nz = pose[2, 0] * normals[m, 0] + pose[2, 1] * normals[m, 1] + pose[2, 2] * normals[m, 2]
        x, y, z = centres[m, 0], centres[m, 1], centres[m, 2]
        X = pose[0, 0] * x + pose[0, 1] * y + pose[0, 2] * z + pose[0, 3]
        Y = pose[1, 0] * x + pose[1, 1] * y + pose[1, 2] * z + pose[1, 3]
        Z = pose[2, 0] * x + pose[2, 1] * y + pose[2, 2] * z + pose[2, 3]
        anchor = nx * X + ny * Y + nz * Z  # the plane: n . p = anchor, camera frame
        edge_u = corners[m, 1] - corners[m, 0]  # the marker's sides, tool frame
        edge_v = corners[m, 3] - corners[m, 0]
        for gv in range(DEPTH_GRID):
            fv = ((gv + 0.5) / DEPTH_GRID * 2.0 - 1.0) * DEPTH_INSET / 2.0
            for gu in range(DEPTH_GRID):
                fu = ((gu + 0.5) / DEPTH_GRID * 2.0 - 1.0) * DEPTH_INSET / 2.0
                x = centres[m, 0] + fu * edge_u[0] + fv * edge_v[0]
                y = centres[m, 1] + fu * edge_u[1] + fv * edge_v[1]
                z = centres[m, 2] + fu * edge_u[2] + fv * edge_v[2]
                X = pose[0, 0] * x + pose[0, 1] * y + pose[0, 2] * z + pose[0, 3]
                Y = pose[1, 0] * x + pose[1, 1] * y + pose[1, 2] * z + pose[1, 3]
                Z = pose[2, 0] * x + pose[2, 1] * y + pose[2, 2] * z + pose[2, 3]
                if not Z > 1e-6:
                    continue
                u, v = fx * X / Z + ppx, fy * Y / Z + ppy
                if not (math.isfinite(u) and math.isfinite(v)):
                    continue
                ui, vi = math.floor(u + 0.5), math.floor(v + 0.5)
                if ui < 0 or ui >= w or vi < 0 or vi >= h:
                    continue
                measured = depth[int(vi), int(ui)] * scale_m
                if not measured > 0:
                    continue
                along = (ui - ppx) / fx * nx + (vi - ppy) / fy * ny + nz
                r[count] = measured - anchor / along
                count += 1
    if count < MIN_DEPTH_SAMPLES:
        return np.nan
    offset = np.median(r[:count])
    return offset if abs(offset) < MAX_DEPTH_OFFSET_M else np.nan
