"""Compiled kernels of the registration stage's per-frame checks (edge/jit.py).

The checks of :mod:`edge.registration.quality`, the TRE estimate's region jackknife
and covariance, and the warm start's motion model: each one pass where numpy took a
dozen calls; the docstrings of their callers say what they compute.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import kernel
from edge.registration.kernels import solve6, symmetric_eigen


@kernel("float64(float64[:, ::1], float64[::1], int64, int64, float64, float64)")
def cell_mean_rms(
    points: np.ndarray,
    residuals: np.ndarray,
    points_per_cell: int,
    min_count: int,
    clip: float,
    ignore_beyond: float,
) -> float:
    """quality.systematic_residual_mm (same units and rules)."""
    n = points.shape[0]
    ok = np.zeros(n, np.bool_)
    count_ok = 0
    x0 = y0 = np.inf
    x1 = y1 = -np.inf
    for i in range(n):
        r = residuals[i]
        if np.isfinite(r) and abs(r) <= ignore_beyond:
            ok[i] = True
            count_ok += 1
            x0, x1 = min(x0, points[i, 0]), max(x1, points[i, 0])
            y0, y1 = min(y0, points[i, 1]), max(y1, points[i, 1])
    if count_ok < min_count * 5:
        return np.nan
    area = (x1 - x0) * (y1 - y0)
    cell = min(max(math.sqrt(area * points_per_cell / count_ok), 0.01), 0.03)
    cx0 = math.floor(x0 / cell)
    cy0 = math.floor(y0 / cell)
    nx = int(math.floor(x1 / cell) - cx0) + 1
    ny = int(math.floor(y1 / cell) - cy0) + 1
    count = np.zeros((nx, ny), np.int64)
    total = np.zeros((nx, ny))
    for i in range(n):
        if ok[i]:
            cx = int(math.floor(points[i, 0] / cell) - cx0)
            cy = int(math.floor(points[i, 1] / cell) - cy0)
            count[cx, cy] += 1
            total[cx, cy] += min(max(residuals[i], -clip), clip)
    full = 0
    sum_sq = 0.0
    for cx in range(nx):  # x, then y: the order of np.unique over the cells
        for cy in range(ny):
            if count[cx, cy] >= min_count:
                mean = total[cx, cy] / count[cx, cy]
                sum_sq += mean * mean
                full += 1
    if full < 5:
        return np.nan
    return math.sqrt(sum_sq / full)


@kernel(
    "float64[::1](float64[:, ::1], float64[::1], int64[::1], float64[::1], float64[:, ::1], int64)"
)
def region_jackknife(
    rows: np.ndarray,
    residuals: np.ndarray,
    region: np.ndarray,
    centre: np.ndarray,
    targets: np.ndarray,
    min_points: int,
) -> np.ndarray:
    """quality.region_jackknife_tre_mm (rows and residuals in mm, centre and targets in
    metres): NaN per target with fewer than 3 regions to leave out, inf when leaving
    one out leaves the pose unconstrained."""
    n_targets = targets.shape[0]
    n_regions = 0
    for i in range(region.shape[0]):
        n_regions = max(n_regions, region[i] + 1)
    A_k = np.zeros((n_regions, 6, 6))
    g_k = np.zeros((n_regions, 6))
    counts = np.zeros(n_regions, np.int64)
    for i in range(rows.shape[0]):
        k = region[i]
        counts[k] += 1
        for p in range(6):
            g_k[k, p] += rows[i, p] * residuals[i]
            for q in range(p, 6):
                A_k[k, p, q] += rows[i, p] * rows[i, q]
    blocks = np.flatnonzero(counts >= min_points)
    out = np.empty(n_targets)
    if len(blocks) < 3:
        out[:] = np.nan
        return out
    A = A_k.sum(axis=0)
    g = g_k.sum(axis=0)
    moves = np.empty((len(blocks), 6))
    a = np.empty((6, 6))
    b = np.empty(6)
    for j in range(len(blocks)):
        k = blocks[j]
        for p in range(6):
            b[p] = g[p] - g_k[k, p]
            for q in range(p, 6):
                a[p, q] = A[p, q] - A_k[k, p, q]
                a[q, p] = a[p, q]
        if not solve6(a, b):
            out[:] = np.inf
            return out
        moves[j, :] = -b
    mean = np.zeros(6)
    for j in range(len(blocks)):
        mean += moves[j]
    mean /= len(blocks)
    scale = (len(blocks) - 1) / len(blocks)
    for t in range(n_targets):
        p0 = (targets[t, 0] - centre[0]) * 1e3
        p1 = (targets[t, 1] - centre[1]) * 1e3
        p2 = (targets[t, 2] - centre[2]) * 1e3
        total = 0.0
        for j in range(len(blocks)):
            w0, w1, w2 = moves[j, 0] - mean[0], moves[j, 1] - mean[1], moves[j, 2] - mean[2]
            v0, v1, v2 = moves[j, 3] - mean[3], moves[j, 4] - mean[4], moves[j, 5] - mean[5]
            # The target's displacement under the small motion: omega x p + v.
            s0 = w1 * p2 - w2 * p1 + v0
            s1 = w2 * p0 - w0 * p2 + v1
            s2 = w0 * p1 - w1 * p0 + v2
            total += s0 * s0 + s1 * s1 + s2 * s2
        out[t] = math.sqrt(scale * total)
    return out


@kernel("float64[::1](float64[:, ::1], float64[::1], float64, float64[:, ::1])")
def covariance_rms(
    normal_matrix: np.ndarray, centre: np.ndarray, sigma: float, targets: np.ndarray
) -> np.ndarray:
    """quality.surface_tre_mm: sqrt(tr(J Cov J^T)) per target, Cov = sigma^2 A^-1 (inf
    for every target when A is singular)."""
    n_targets = targets.shape[0]
    out = np.empty(n_targets)
    cov = np.empty((6, 6))
    a = np.empty((6, 6))
    col = np.empty(6)
    for j in range(6):  # A^-1 column by column
        a[:, :] = normal_matrix
        col[:] = 0.0
        col[j] = 1.0
        if not solve6(a, col):
            out[:] = np.inf
            return out
        cov[:, j] = col * sigma * sigma
    for t in range(n_targets):
        p0 = (targets[t, 0] - centre[0]) * 1e3
        p1 = (targets[t, 1] - centre[1]) * 1e3
        p2 = (targets[t, 2] - centre[2]) * 1e3
        # J = [-[p]x, I]: rows of a target's displacement under (omega, v).
        J = np.array(
            [
                [0.0, p2, -p1, 1.0, 0.0, 0.0],
                [-p2, 0.0, p0, 0.0, 1.0, 0.0],
                [p1, -p0, 0.0, 0.0, 0.0, 1.0],
            ]
        )
        variance = 0.0
        for r in range(3):
            for i in range(6):
                for k in range(6):
                    variance += J[r, i] * cov[i, k] * J[r, k]
        out[t] = math.sqrt(max(variance, 0.0))
    return out


@kernel("UniTuple(float64, 2)(float64[:, ::1], float64[:, ::1], float64[::1])")
def pose_difference(a_to_b: np.ndarray, c_to_b: np.ndarray, at: np.ndarray) -> tuple[float, float]:
    """quality.pose_difference: (translation mm at ``at``, rotation deg)."""
    d2 = 0.0
    trace = 0.0
    for i in range(3):
        d = a_to_b[i, 3] - c_to_b[i, 3]
        for j in range(3):
            d += (a_to_b[i, j] - c_to_b[i, j]) * at[j]
            trace += a_to_b[i, j] * c_to_b[i, j]  # the trace of a^T c
        d2 += d * d
    cos = min(max((trace - 1.0) / 2.0, -1.0), 1.0)
    return math.sqrt(d2) * 1000.0, math.degrees(math.acos(cos))


@kernel("float64(float64[:, ::1])")
def plane_rms(points: np.ndarray) -> float:
    """quality.relief_mm in metres: the RMS distance from the best-fit plane, from the
    smallest eigenvalue of the centred cloud's 3x3 scatter matrix."""
    n = points.shape[0]
    mean = np.zeros(3)
    for i in range(n):
        for j in range(3):
            mean[j] += points[i, j]
    mean /= n
    scatter = np.zeros((3, 3))
    for i in range(n):
        for j in range(3):
            dj = points[i, j] - mean[j]
            for k in range(j, 3):
                scatter[j, k] += dj * (points[i, k] - mean[k])
    for j in range(3):
        for k in range(j):
            scatter[j, k] = scatter[k, j]
    smallest = max(symmetric_eigen(scatter, np.empty((3, 3)))[0], 0.0)
    return math.sqrt(smallest / n)


@kernel("float64[:, ::1](float64[:, ::1], float64[:, ::1], float64)")
def extrapolate_pose(before: np.ndarray, last: np.ndarray, alpha: float) -> np.ndarray:
    """The stage's constant-velocity warm start: the camera-frame motion from ``before``
    to ``last``, raised to the real power ``alpha`` (its rotation angle scaled about its
    axis, its translation scaled), applied to ``last``."""
    delta = np.zeros((4, 4))  # last @ inverse(before)
    for i in range(3):
        for j in range(3):
            for k in range(3):
                delta[i, j] += last[i, k] * before[j, k]
        delta[i, 3] = last[i, 3]
        for j in range(3):
            delta[i, 3] -= delta[i, j] * before[j, 3]
    cos = min(max((delta[0, 0] + delta[1, 1] + delta[2, 2] - 1.0) / 2.0, -1.0), 1.0)
    angle = math.acos(cos)
    motion = np.eye(4)
    if angle > 1e-9:
        # Rodrigues' formula about the axis of the skew part (ill-conditioned near pi).
        half = 2.0 * math.sin(angle)
        k0 = (delta[2, 1] - delta[1, 2]) / half
        k1 = (delta[0, 2] - delta[2, 0]) / half
        k2 = (delta[1, 0] - delta[0, 1]) / half
        skew = np.array([[0.0, -k2, k1], [k2, 0.0, -k0], [-k1, k0, 0.0]])
        motion[:3, :3] += math.sin(angle * alpha) * skew
        motion[:3, :3] += (1.0 - math.cos(angle * alpha)) * (skew @ skew)
    for i in range(3):
        motion[i, 3] = delta[i, 3] * alpha
    return motion @ last


@kernel("float64[::1](float64[::1], float64[:, ::1], float64[::1])")
def pooled_fit(fit: np.ndarray, jackknife_rows: np.ndarray, jackknife_sq: np.ndarray) -> np.ndarray:
    """tre.TreEstimator.rms_mm's surface part: per target, the larger of ``fit`` and the
    root of the jackknife's mean square over the rows and this frame's (NaN: not
    measured; inf counts), or of this frame's alone when larger (numpy's fmax: the
    other operand where one is NaN). With nothing measured at all, ``fit``."""
    n_targets = fit.shape[0]
    rows = jackknife_rows.shape[0]
    out = fit.copy()
    mean_sq = np.zeros(n_targets)
    seen_any = False
    for t in range(n_targets):
        total = 0.0
        seen = 0
        for r in range(rows + 1):
            value = jackknife_rows[r, t] if r < rows else jackknife_sq[t]
            if not math.isnan(value):
                total += value
                seen += 1
        mean_sq[t] = total / max(seen, 1)
        seen_any = seen_any or seen > 0
    if seen_any:
        for t in range(n_targets):
            own = jackknife_sq[t]
            root = math.sqrt(mean_sq[t] if math.isnan(own) else max(mean_sq[t], own))
            out[t] = root if math.isnan(out[t]) else max(out[t], root)
    return out


@kernel("float64[::1](float64[:, ::1], float64[::1])")
def finite_rows_median(rows: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Per column, the median over ``rows`` and ``last`` of those whose every value is
    finite; zeros when none is."""
    n_rows, n_cols = rows.shape[0] + 1, rows.shape[1]
    kept = np.empty(n_rows, np.int64)
    k = 0
    for r in range(n_rows):
        finite = True
        for c in range(n_cols):
            finite = finite and math.isfinite(rows[r, c] if r < n_rows - 1 else last[c])
        if finite:
            kept[k] = r
            k += 1
    out = np.zeros(n_cols)
    if k:
        column = np.empty(k)
        for c in range(n_cols):
            for i in range(k):
                r = kept[i]
                column[i] = rows[r, c] if r < n_rows - 1 else last[c]
            out[c] = np.median(column)
    return out


@kernel("float64(float64[:, ::1])")
def median_depth(points: np.ndarray) -> float:
    """The median z of (N, 3) points (N >= 1)."""
    return np.median(points[:, 2].copy())


@kernel(
    "float64[::1](float64[::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], float64,"
    " float64[:, ::1], float64[:, ::1])"
)
def extrapolation_disagreement(
    times: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    now: float,
    pose: np.ndarray,
    targets: np.ndarray,
) -> np.ndarray:
    """tre.TreEstimator._disagreement_sq with its three earlier positions (T, 3), m, at
    ``times`` (increasing, before ``now``): per target, the squared distance (mm^2) of
    ``pose`` applied to it from their quadratic (Lagrange) extrapolation to ``now``,
    over 1 + the sum of the squared weights."""
    weights = np.ones(3)
    for i in range(3):
        for j in range(3):
            if j != i:
                weights[i] *= (now - times[j]) / (times[i] - times[j])
    out = np.empty(targets.shape[0])
    for t in range(targets.shape[0]):
        d2 = 0.0
        for j in range(3):
            fitted = pose[j, 0] * targets[t, 0] + pose[j, 1] * targets[t, 1]
            fitted += pose[j, 2] * targets[t, 2] + pose[j, 3]
            predicted = weights[0] * p0[t, j] + weights[1] * p1[t, j] + weights[2] * p2[t, j]
            d2 += (fitted - predicted) ** 2
        out[t] = d2 * 1e6
    return out / (1.0 + weights[0] ** 2 + weights[1] ** 2 + weights[2] ** 2)
