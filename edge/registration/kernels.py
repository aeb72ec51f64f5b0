"""Compiled kernels of the registration stage (edge/jit.py).

The tracking ICP loop is the one in :func:`edge.registration.icp.icp_point_to_plane`
(its docstring has the method): here each iteration is one pass over the cloud
instead of some forty numpy calls, with the interpreter lock released. The others
are the per-frame checks of :mod:`edge.registration.quality` and
:mod:`edge.registration.cloud`, each one pass where numpy took a dozen calls; their
docstrings there say what they compute.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import kernel

# Outcome codes of icp_grid_loop.
ICP_OK = 0
ICP_TOO_FEW = 1  # fewer than 6 correspondences within the gate
ICP_SINGULAR = 2  # the normal equations have no unique solution


@kernel("boolean(float64[:, ::1], float64[::1])")
def solve6(a: np.ndarray, b: np.ndarray) -> bool:
    """Solve ``a x = b`` in place (x in ``b``) by Gaussian elimination with partial
    pivoting; False when ``a`` is singular (a zero pivot). ``a`` is overwritten."""
    n = b.shape[0]
    for col in range(n):
        pivot = col
        for row in range(col + 1, n):
            if abs(a[row, col]) > abs(a[pivot, col]):
                pivot = row
        if a[pivot, col] == 0.0:
            return False
        if pivot != col:
            for k in range(n):
                a[col, k], a[pivot, k] = a[pivot, k], a[col, k]
            b[col], b[pivot] = b[pivot], b[col]
        for row in range(col + 1, n):
            f = a[row, col] / a[col, col]
            for k in range(col, n):
                a[row, k] -= f * a[col, k]
            b[row] -= f * b[col]
    for col in range(n - 1, -1, -1):
        s = b[col]
        for k in range(col + 1, n):
            s -= a[col, k] * b[k]
        b[col] = s / a[col, col]
    return True


@kernel("float64[::1](float64[:, ::1], float64[:, ::1])")
def symmetric_eigen(a: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of a small symmetric matrix by cyclic Jacobi rotations
    (Golub & Van Loan, Matrix Computations, 8.5), their unit eigenvectors into the
    columns of ``vectors`` (n, n). ``a`` is overwritten. For the 3x3 and 4x4 matrices of
    a frame: no LAPACK call, whose set-up costs more than these few rotations."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            vectors[i, j] = 1.0 if i == j else 0.0
    for _ in range(64):  # converges quadratically: a handful of sweeps
        off = 0.0
        total = 0.0
        for p in range(n):
            total += a[p, p] * a[p, p]
            for q in range(p + 1, n):
                off += a[p, q] * a[p, q]
        if off <= 1e-36 * (total + off) or off == 0.0:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                if a[p, q] == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * a[p, q])
                if abs(theta) > 1e150:
                    t = 0.5 / theta
                else:
                    t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
                    t = -t if theta < 0 else t
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):  # columns p and q, then rows p and q
                    akp, akq = a[k, p], a[k, q]
                    a[k, p], a[k, q] = c * akp - s * akq, s * akp + c * akq
                for k in range(n):
                    apk, aqk = a[p, k], a[q, k]
                    a[p, k], a[q, k] = c * apk - s * aqk, s * apk + c * aqk
                for k in range(n):
                    vkp, vkq = vectors[k, p], vectors[k, q]
                    vectors[k, p], vectors[k, q] = c * vkp - s * vkq, s * vkp + c * vkq
    order = np.argsort(np.array([a[i, i] for i in range(n)]))
    values = np.empty(n)
    sorted_vectors = vectors.copy()
    for i in range(n):
        values[i] = a[order[i], order[i]]
        for k in range(n):
            vectors[k, i] = sorted_vectors[k, order[i]]
    return values


@kernel("void(float64, float64, float64, float64, float64[:, ::1])")
def _rotation(w0: float, w1: float, w2: float, angle: float, out: np.ndarray) -> None:
    """Rodrigues' rotation of the vector (w0, w1, w2) of length ``angle`` into out[:3, :3];
    the identity below 1e-12 rad (geometry.rotation_vector_to_matrix)."""
    if angle < 1e-12:
        for i in range(3):
            for j in range(3):
                out[i, j] = 1.0 if i == j else 0.0
        return
    x, y, z = w0 / angle, w1 / angle, w2 / angle
    c, s = math.cos(angle), math.sin(angle)
    v = 1.0 - c
    out[0, 0], out[0, 1], out[0, 2] = c + x * x * v, x * y * v - z * s, x * z * v + y * s
    out[1, 0], out[1, 1], out[1, 2] = y * x * v + z * s, c + y * y * v, y * z * v - x * s
    out[2, 0], out[2, 1], out[2, 2] = z * x * v - y * s, z * y * v + x * s, c + z * z * v


@kernel("int64[::1](float64[:, ::1], int32[:, :, ::1], float64[::1], float64)")
def grid_lookup(
    points: np.ndarray, grid: np.ndarray, origin: np.ndarray, cell: float
) -> np.ndarray:
    """Nearest-sample index per point from the grid (NearestGrid.lookup); -1 outside."""
    nx, ny, nz = grid.shape
    out = np.empty(points.shape[0], np.int64)
    for i in range(points.shape[0]):
        gi = min(max(int((points[i, 0] - origin[0]) / cell), 0), nx - 1)
        gj = min(max(int((points[i, 1] - origin[1]) / cell), 0), ny - 1)
        gk = min(max(int((points[i, 2] - origin[2]) / cell), 0), nz - 1)
        out[i] = grid[gi, gj, gk]
    return out


@kernel(
    "Tuple((float64[:, ::1], int64[::1]))(float64[:, ::1], float64[:, ::1], int32[:, :, ::1],"
    " float64[::1], float64)"
)
def to_patient_lookup(
    points: np.ndarray, camera_to_patient: np.ndarray, grid: np.ndarray, origin: np.ndarray,
    cell: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The camera-frame points in the patient frame, and their grid_lookup."""
    n = points.shape[0]
    moved = np.empty((n, 3))
    T = camera_to_patient
    for i in range(n):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        for j in range(3):
            moved[i, j] = T[j, 0] * x + T[j, 1] * y + T[j, 2] * z + T[j, 3]
    return moved, grid_lookup(moved, grid, origin, cell)


@kernel(
    "Tuple((float64[::1], float64[:, ::1], boolean[::1], int64, int64, float64))"
    "(float64[:, ::1], int64[::1], float64[:, ::1], float64[:, ::1], float64[::1], float64,"
    " float64, float64)"
)
def surface_residuals(
    points: np.ndarray,
    sample: np.ndarray,
    samples: np.ndarray,
    normals: np.ndarray,
    eye: np.ndarray,
    occlusion: float,
    inlier: float,
    tangential_limit: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, float]:
    """Each point's signed distance (mm) from the plane of its skin sample (+ in front,
    towards ``eye``; NaN where occluded: in front by more than ``occlusion``), that normal
    turned towards the eye, the inlier mask (within ``inlier`` of the plane and
    ``tangential_limit`` of the sample along it, not occluded), the points not occluded,
    the inliers, and their RMS distance (inf without inliers). Metres but the distances;
    the points in the patient frame."""
    n_pts = points.shape[0]
    signed = np.empty(n_pts)
    toward = np.empty((n_pts, 3))
    occluded = np.empty(n_pts, np.bool_)
    inliers = np.empty(n_pts, np.bool_)
    for i in range(n_pts):
        s = sample[i]
        d0 = points[i, 0] - samples[s, 0]
        d1 = points[i, 1] - samples[s, 1]
        d2 = points[i, 2] - samples[s, 2]
        m0, m1, m2 = normals[s, 0], normals[s, 1], normals[s, 2]
        t = (eye[0] - samples[s, 0]) * m0 + (eye[1] - samples[s, 1]) * m1
        t += (eye[2] - samples[s, 2]) * m2
        sign = 1.0 if t > 0 else (-1.0 if t < 0 else 0.0)
        toward[i, 0], toward[i, 1], toward[i, 2] = sign * m0, sign * m1, sign * m2
        r = d0 * toward[i, 0] + d1 * toward[i, 1] + d2 * toward[i, 2]
        signed[i] = r
        tangential = math.sqrt(max(d0 * d0 + d1 * d1 + d2 * d2 - r * r, 0.0))
        occluded[i] = r > occlusion
        inliers[i] = abs(r) < inlier and tangential < tangential_limit and not occluded[i]
    visible = 0
    n_in = 0
    square_sum = 0.0
    for i in range(n_pts):
        if inliers[i]:
            n_in += 1
            square_sum += signed[i] * signed[i]
        if occluded[i]:
            signed[i] = np.nan
        else:
            visible += 1
            signed[i] *= 1e3
    rms = math.sqrt(square_sum / n_in) if n_in else np.inf
    return signed, toward, inliers, visible, n_in, rms


@kernel(
    "Tuple((float64[:, ::1], float64[::1], float64[:, ::1]))(float64[:, ::1], float64[:, ::1],"
    " boolean[::1])"
)
def inlier_rows(
    points: np.ndarray, normals: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The linearised point-to-plane problem of the points where ``mask``: rows (K, 6)
    [(a x n)^T, n^T] in mm with a = point - centre (Low 2004, eq. 8-10), the centre
    (metres) and the normal matrix rows^T rows (Gelfand et al. 2003)."""
    k = 0
    centre = np.zeros(3)
    for i in range(points.shape[0]):
        if mask[i]:
            for j in range(3):
                centre[j] += points[i, j]
            k += 1
    centre /= max(k, 1)
    rows = np.empty((k, 6))
    normal_matrix = np.zeros((6, 6))
    k = 0
    for i in range(points.shape[0]):
        if not mask[i]:
            continue
        a0 = (points[i, 0] - centre[0]) * 1e3
        a1 = (points[i, 1] - centre[1]) * 1e3
        a2 = (points[i, 2] - centre[2]) * 1e3
        n0, n1, n2 = normals[i, 0], normals[i, 1], normals[i, 2]
        rows[k, 0] = a1 * n2 - a2 * n1
        rows[k, 1] = a2 * n0 - a0 * n2
        rows[k, 2] = a0 * n1 - a1 * n0
        rows[k, 3], rows[k, 4], rows[k, 5] = n0, n1, n2
        for p in range(6):
            for q in range(p, 6):
                normal_matrix[p, q] += rows[k, p] * rows[k, q]
        k += 1
    for p in range(6):
        for q in range(p):
            normal_matrix[p, q] = normal_matrix[q, p]
    return rows, centre, normal_matrix


@kernel(
    "Tuple((int64, int64, int64, float64))(float64[:, ::1], float64[:, ::1],"
    " int32[:, :, ::1], float64[::1], float64, float64[:, ::1], float64[:, ::1], int64,"
    " float64, float64, float64, float64, float64, float64)"
)
def icp_grid_loop(
    pts: np.ndarray,
    camera_to_patient: np.ndarray,
    grid: np.ndarray,
    origin: np.ndarray,
    cell: float,
    samples: np.ndarray,
    normals: np.ndarray,
    max_iterations: int,
    gate: float,
    min_gate: float,
    occlusion: float,
    tukey_floor: float,
    tolerance_m: float,
    tolerance_rad: float,
) -> tuple[int, int, int, float]:
    """Point-to-plane ICP iterations with correspondences from the nearest-sample grid.

    ``camera_to_patient`` (4x4) is updated in place. Lengths in metres, angles in
    radians. Returns (outcome code, iterations, third, gate): ``third`` is 1 when the
    last step was below the tolerances (converged) and 0 when not, or, with
    ICP_TOO_FEW, the number of correspondences found; ``gate`` is the distance gate
    of the last iteration.
    """
    n_pts = pts.shape[0]
    nx, ny, nz = grid.shape
    Xm = np.empty((n_pts, 3))
    qs = np.empty((n_pts, 3))
    ns = np.empty((n_pts, 3))
    dist = np.empty(n_pts)
    res = np.empty(n_pts)
    absr = np.empty(n_pts)
    A = np.empty((6, 6))
    g = np.empty(6)
    row = np.empty(6)
    inc = np.empty((4, 4))
    for it in range(1, max_iterations + 1):
        T = camera_to_patient
        eye0, eye1, eye2 = T[0, 3], T[1, 3], T[2, 3]
        k = 0
        c0 = c1 = c2 = 0.0
        for i in range(n_pts):
            p0, p1, p2 = pts[i, 0], pts[i, 1], pts[i, 2]
            x0 = T[0, 0] * p0 + T[0, 1] * p1 + T[0, 2] * p2 + T[0, 3]
            x1 = T[1, 0] * p0 + T[1, 1] * p1 + T[1, 2] * p2 + T[1, 3]
            x2 = T[2, 0] * p0 + T[2, 1] * p1 + T[2, 2] * p2 + T[2, 3]
            # Cell by truncation, clipped onto the grid's border of -1 (grid_lookup).
            gi = min(max(int((x0 - origin[0]) / cell), 0), nx - 1)
            gj = min(max(int((x1 - origin[1]) / cell), 0), ny - 1)
            gk = min(max(int((x2 - origin[2]) / cell), 0), nz - 1)
            s = grid[gi, gj, gk]
            if s < 0:
                continue
            q0, q1, q2 = samples[s, 0], samples[s, 1], samples[s, 2]
            d = math.sqrt((x0 - q0) ** 2 + (x1 - q1) ** 2 + (x2 - q2) ** 2)
            if d > gate:
                continue
            m0, m1, m2 = normals[s, 0], normals[s, 1], normals[s, 2]
            # Normal towards the camera: then r > 0 means "in front of the skin".
            toward = (eye0 - q0) * m0 + (eye1 - q1) * m1 + (eye2 - q2) * m2
            sign = 1.0 if toward > 0 else (-1.0 if toward < 0 else 0.0)
            Xm[k, 0], Xm[k, 1], Xm[k, 2] = x0, x1, x2
            qs[k, 0], qs[k, 1], qs[k, 2] = q0, q1, q2
            ns[k, 0], ns[k, 1], ns[k, 2] = sign * m0, sign * m1, sign * m2
            r = (x0 - q0) * ns[k, 0] + (x1 - q1) * ns[k, 1] + (x2 - q2) * ns[k, 2]
            res[k] = r
            absr[k] = abs(r)
            dist[k] = d
            c0 += x0
            c1 += x1
            c2 += x2
            k += 1
        if k < 6:
            return ICP_TOO_FEW, it, k, gate
        c0 /= k
        c1 /= k
        c2 /= k
        front_at = max(occlusion, 0.5 * gate)
        sigma = 1.4826 * np.median(absr[:k])
        c = max(4.685 * sigma, tukey_floor)
        A[:, :] = 0.0
        g[:] = 0.0
        for i in range(k):
            r = res[i]
            u = r / c
            if not (abs(u) < 1.0) or r > front_at:
                continue
            w = (1.0 - u * u) ** 2
            a0, a1, a2 = Xm[i, 0] - c0, Xm[i, 1] - c1, Xm[i, 2] - c2
            n0, n1, n2 = ns[i, 0], ns[i, 1], ns[i, 2]
            row[0] = a1 * n2 - a2 * n1
            row[1] = a2 * n0 - a0 * n2
            row[2] = a0 * n1 - a1 * n0
            row[3], row[4], row[5] = n0, n1, n2
            for p in range(6):
                wp = w * row[p]
                g[p] += wp * r
                for q in range(p, 6):
                    A[p, q] += wp * row[q]
        for p in range(6):
            A[p, p] += 1e-12
            for q in range(p):
                A[p, q] = A[q, p]
        if not solve6(A, g):
            return ICP_SINGULAR, it, k, gate
        w0, w1, w2 = -g[0], -g[1], -g[2]
        t0, t1, t2 = -g[3], -g[4], -g[5]
        angle = math.sqrt(w0 * w0 + w1 * w1 + w2 * w2)
        _rotation(w0, w1, w2, angle, inc)
        inc[0, 3] = c0 - (inc[0, 0] * c0 + inc[0, 1] * c1 + inc[0, 2] * c2) + t0
        inc[1, 3] = c1 - (inc[1, 0] * c0 + inc[1, 1] * c1 + inc[1, 2] * c2) + t1
        inc[2, 3] = c2 - (inc[2, 0] * c0 + inc[2, 1] * c1 + inc[2, 2] * c2) + t2
        inc[3, 0] = inc[3, 1] = inc[3, 2] = 0.0
        inc[3, 3] = 1.0
        camera_to_patient[:, :] = inc @ camera_to_patient
        step = math.sqrt(t0 * t0 + t1 * t1 + t2 * t2)
        gate = max(min_gate, min(gate, 3.0 * np.median(dist[:k])))
        if step < tolerance_m and angle < tolerance_rad:
            return ICP_OK, it, 1, gate
    return ICP_OK, max_iterations, 0, gate


@kernel(
    "Tuple((float64[:, ::1], float64[::1], float64, boolean))(float64[:, ::1],"
    " float64[:, ::1], float64[::1])"
)
def weighted_rigid_fit(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """paired_point.rigid_transform's fit: (source_to_target 4x4, per-pair distances in
    mm after the fit, their RMS over the pairs of positive weight, False when the source
    points of positive weight are collinear). Scalar loops: an array expression inside
    a loop would allocate at every pair."""
    n = source.shape[0]
    # The spread of the pairs that count (positive weight): the square roots of their
    # centred scatter's eigenvalues (ascending) are its singular values.
    centre = np.zeros(3)
    counted = 0
    for i in range(n):
        if weights[i] > 0:
            for j in range(3):
                centre[j] += source[i, j]
            counted += 1
    centre /= max(counted, 1)
    scatter = np.zeros((3, 3))
    for i in range(n):
        if weights[i] > 0:
            for j in range(3):
                for k in range(3):
                    scatter[j, k] += (source[i, j] - centre[j]) * (source[i, k] - centre[k])
    ev = symmetric_eigen(scatter, np.empty((3, 3)))
    sv0 = math.sqrt(max(ev[2], 0.0))
    sv1 = math.sqrt(max(ev[1], 0.0))
    T = np.eye(4)
    residuals = np.zeros(n)
    if sv1 < 1e-6 * max(sv0, 1e-12) or sv1 < 1e-9:
        return T, residuals, 0.0, False
    # Weighted centroids and cross-covariance (Umeyama 1991, eqs. 38-41, no scale).
    w = weights / weights.sum()
    cs = np.zeros(3)
    ct = np.zeros(3)
    for i in range(n):
        for j in range(3):
            cs[j] += w[i] * source[i, j]
            ct[j] += w[i] * target[i, j]
    H = np.zeros((3, 3))
    for i in range(n):
        for j in range(3):
            for k in range(3):
                H[j, k] += (source[i, j] - cs[j]) * ((target[i, k] - ct[k]) * w[i])
    # Horn 1987: the rotation is the unit quaternion of the largest eigenvalue of N
    # (always proper, so no reflection to correct).
    sxx, sxy, sxz = H[0, 0], H[0, 1], H[0, 2]
    syx, syy, syz = H[1, 0], H[1, 1], H[1, 2]
    szx, szy, szz = H[2, 0], H[2, 1], H[2, 2]
    N = np.array(
        [
            [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
            [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
            [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
            [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
        ]
    )
    q = np.empty((4, 4))
    symmetric_eigen(N, q)
    qw, qx, qy, qz = q[0, 3], q[1, 3], q[2, 3], q[3, 3]
    R = np.empty((3, 3))
    R[0, 0] = qw * qw + qx * qx - qy * qy - qz * qz
    R[0, 1] = 2.0 * (qx * qy - qw * qz)
    R[0, 2] = 2.0 * (qx * qz + qw * qy)
    R[1, 0] = 2.0 * (qy * qx + qw * qz)
    R[1, 1] = qw * qw - qx * qx + qy * qy - qz * qz
    R[1, 2] = 2.0 * (qy * qz - qw * qx)
    R[2, 0] = 2.0 * (qz * qx - qw * qy)
    R[2, 1] = 2.0 * (qz * qy + qw * qx)
    R[2, 2] = qw * qw - qx * qx - qy * qy + qz * qz
    T[:3, :3] = R
    square_sum = 0.0
    for j in range(3):
        T[j, 3] = ct[j] - (R[j, 0] * cs[0] + R[j, 1] * cs[1] + R[j, 2] * cs[2])
    for i in range(n):
        e2 = 0.0
        for j in range(3):
            e = R[j, 0] * source[i, 0] + R[j, 1] * source[i, 1] + R[j, 2] * source[i, 2]
            e += T[j, 3] - target[i, j]
            e2 += e * e
        residuals[i] = math.sqrt(e2) * 1000.0
        if weights[i] > 0:
            square_sum += residuals[i] * residuals[i]
    return T, residuals, math.sqrt(square_sum / counted), True
