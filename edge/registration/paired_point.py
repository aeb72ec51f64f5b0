"""Paired-point rigid registration: least squares (Arun/Horn/Umeyama) and a robust variant."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from edge import geometry
from edge.errors import RegistrationError
from edge.jit import c_array, kernel
from edge.registration.kernels import weighted_rigid_fit
from edge.registration.landmarks import LANDMARK_INDEX, MOBILE_LANDMARKS


@dataclass(frozen=True)
class PairedPointResult:
    """``source_to_target`` (4x4) with its fiducial registration error.

    ``residuals_mm`` are per-point distances after the fit (all points, inliers
    or not); ``fre_mm`` is the RMS over the inliers; ``inliers`` is a bool mask.
    """

    source_to_target: np.ndarray
    fre_mm: float
    residuals_mm: np.ndarray
    inliers: np.ndarray


def _validate(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(source, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 3 or s.shape != t.shape:
        raise RegistrationError(
            f"paired points must be two Nx3 arrays of the same shape, got {s.shape} and {t.shape}",
            "pass matching source and target points",
        )
    if len(s) < 3:
        raise RegistrationError(
            f"need at least 3 point pairs, got {len(s)}", "track more landmarks"
        )
    s, t = c_array(s), c_array(t)  # as the kernels take them (no copy when they are)
    if not _all_finite(s, t):
        raise RegistrationError(
            "paired points contain NaN or infinity", "drop invalid points first"
        )
    return s, t


@kernel("boolean(float64[:, ::1], float64[:, ::1])")
def _all_finite(s: np.ndarray, t: np.ndarray) -> bool:
    """Every coordinate of both point sets finite."""
    for a in (s, t):
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                if not math.isfinite(a[i, j]):
                    return False
    return True


@kernel("boolean(float64[::1])")
def _weights_usable(w: np.ndarray) -> bool:
    """Every weight finite and non-negative, and one positive: their sum is positive then,
    in any order (a sum of non-negative numbers with a positive one cannot round to 0)."""
    positive = False
    for i in range(w.shape[0]):
        if not (math.isfinite(w[i]) and w[i] >= 0.0):
            return False
        positive = positive or w[i] > 0.0
    return positive


def _residuals_mm(T: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.linalg.norm(geometry.apply(T, s) - t, axis=1) * 1000.0


def rigid_transform(
    source_m: np.ndarray, target_m: np.ndarray, weights: np.ndarray | None = None
) -> PairedPointResult:
    """Least-squares rigid transform (no scale) mapping ``source_m`` onto ``target_m``.

    Both Nx3 in metres, N >= 3, not collinear. Raises RegistrationError.
    """
    s, t = _validate(source_m, target_m)
    return _fit(c_array(s), c_array(t), _weights(weights, len(s)))


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    w = np.ones(n) if weights is None else c_array(weights)
    if w.shape != (n,) or not _weights_usable(w):
        raise RegistrationError("weights must be N finite non-negative numbers, not all zero")
    return w


def _fit(s: np.ndarray, t: np.ndarray, w: np.ndarray) -> PairedPointResult:
    """The fit of checked C-contiguous pairs; a pair of weight 0 is left out of it (its
    distance after the fit is still given)."""
    T, res, fre_mm, spread = weighted_rigid_fit(s, t, w)
    if not spread:
        raise RegistrationError("the source points are collinear", "use points spread in 2-D")
    return PairedPointResult(T, fre_mm, res, w > 0)


def robust_rigid_transform(
    source_m: np.ndarray,
    target_m: np.ndarray,
    inlier_threshold_mm: float = 5.0,
    min_inliers: int = 4,
    weights: np.ndarray | None = None,
) -> PairedPointResult:
    """Rigid transform robust to outlier pairs: exhaustive RANSAC over all 3-point subsets.

    With the handful of landmarks a face gives (<= ~12) every minimal subset is
    tried (no randomness). Hypotheses are fitted in one batched SVD; the one with
    most inliers (then lowest inlier error) is refitted on its inliers.
    Raises RegistrationError when fewer than ``min_inliers`` pairs agree.
    """
    s, t = _validate(source_m, target_m)
    n = len(s)
    if n < min_inliers:
        raise RegistrationError(f"need at least {min_inliers} point pairs, got {n}")
    s, t, w = c_array(s), c_array(t), _weights(weights, n)
    # Common case first: when every pair agrees with the least-squares fit there
    # is nothing to reject (and RANSAC would pick the same set).
    everyone = _fit(s, t, w)
    if (everyone.residuals_mm < inlier_threshold_mm).all():
        return everyone
    trimmed = _trimmed(s, t, w, everyone, inlier_threshold_mm, min_inliers)
    if trimmed is not None:
        return trimmed
    subsets = np.array(list(itertools.combinations(range(n), 3)))
    S = s[subsets]  # (K, 3, 3)
    Tt = t[subsets]
    cs = S.mean(axis=1, keepdims=True)
    ct = Tt.mean(axis=1, keepdims=True)
    H = np.einsum("kni,knj->kij", S - cs, Tt - ct)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("kji,klj->kil", Vt, U)))
    d[d == 0] = 1.0
    Vt_fix = Vt.copy()
    Vt_fix[:, 2, :] *= d[:, None]
    R = np.einsum("kji,klj->kil", Vt_fix, U)  # V D U^T
    trans = ct[:, 0, :] - np.einsum("kij,kj->ki", R, cs[:, 0, :])
    pred = np.einsum("kij,nj->kni", R, s) + trans[:, None, :]
    res = np.linalg.norm(pred - t[None], axis=2) * 1000.0  # (K, n)
    inl = res < inlier_threshold_mm
    # Degenerate (near-collinear) subsets give arbitrary rotations: skip them.
    spread = np.linalg.svd(S - cs, compute_uv=False)[:, 1]
    counts = np.where(spread > 1e-3, (inl * (w > 0)).sum(axis=1), -1)
    best_count = counts.max()
    if best_count < min_inliers:
        raise RegistrationError(
            f"no {min_inliers} landmark pairs agree within {inlier_threshold_mm:g} mm",
            "the tracked face does not match the plan's landmarks",
        )
    cands = np.flatnonzero(counts == best_count)
    err = np.where(inl[cands], res[cands] ** 2, 0.0).sum(axis=1)
    mask = inl[cands[np.argmin(err)]] & (w > 0)
    for _ in range(3):  # refit on the consensus set until it is stable
        fit = rigid_transform(s[mask], t[mask], w[mask])
        all_res = _residuals_mm(fit.source_to_target, s, t)
        new_mask = (all_res < inlier_threshold_mm) & (w > 0)
        if new_mask.sum() < min_inliers or (new_mask == mask).all():
            break
        mask = new_mask
    fit = rigid_transform(s[mask], t[mask], w[mask])
    all_res = _residuals_mm(fit.source_to_target, s, t)
    return PairedPointResult(fit.source_to_target, fit.fre_mm, all_res, mask)


def _trimmed(
    s: np.ndarray,
    t: np.ndarray,
    w: np.ndarray,
    fit: PairedPointResult,
    threshold_mm: float,
    min_inliers: int,
) -> PairedPointResult | None:
    """Drop the worst pair and refit while any pair is off; None unless the result is a
    clear consensus (>= 60 % of the pairs, and exactly the pairs within the threshold).

    A cheap first try for the usual case of one or two bad landmarks; exhaustive
    RANSAC decides whenever this is not clear-cut.
    """
    keep = w > 0
    while True:
        res = fit.residuals_mm
        off = keep & (res >= threshold_mm)
        if not off.any():
            break
        worst = int(np.argmax(np.where(keep, res, -np.inf)))
        keep[worst] = False
        if keep.sum() < max(min_inliers, 3):
            return None
        try:
            fit = _fit(s, t, w * keep)  # the pairs left out weigh nothing
        except RegistrationError:
            return None
    agree = (fit.residuals_mm < threshold_mm) & (w > 0)
    if (agree != keep).any() or keep.sum() < max(min_inliers, int(np.ceil(0.6 * len(s)))):
        return None
    return fit


_NO_FLAGS = np.zeros(0, np.bool_)


@kernel(
    "Tuple((boolean[::1], float64[:, ::1], float64[:, ::1], int64[::1]))(float64[:, ::1],"
    " int64[::1], float64[:, ::1], boolean[::1], boolean)"
)
def _pair_rows(
    cam: np.ndarray, index: np.ndarray, plan: np.ndarray, valid: np.ndarray, use_valid: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`LandmarkPairs.rows` of a (M, C) array and (>= M,) flags (``use_valid``): which
    pairs are kept (a row of ``index`` inside ``cam``, finite, flagged valid), their plan
    rows, their ``cam`` rows and their rows' indices."""
    m, cols = cam.shape
    n = index.shape[0]
    ok = np.zeros(n, np.bool_)
    k = 0
    for i in range(n):
        r = index[i]
        if r >= m:
            continue
        keep = not use_valid or valid[r]
        for j in range(cols):
            keep = keep and math.isfinite(cam[r, j])
        ok[i] = keep
        k += keep
    plan_out = np.empty((k, plan.shape[1]))
    cam_out = np.empty((k, cols))
    rows = np.empty(k, np.int64)
    k = 0
    for i in range(n):
        if ok[i]:
            r = index[i]
            plan_out[k] = plan[i]
            cam_out[k] = cam[r]
            rows[k] = r
            k += 1
    return ok, plan_out, cam_out, rows


class LandmarkPairs:
    """Pairs plan landmarks (patient frame) with tracked ones (camera frame) by name.

    Built once per plan: the plan's landmarks that the face model tracks
    (:data:`LANDMARK_INDEX`), in that order, with ``include_mobile`` False leaving the
    mobile ones (:data:`MOBILE_LANDMARKS`) out.
    """

    def __init__(self, plan_landmarks_m: dict[str, np.ndarray], include_mobile: bool = True):
        wanted = [
            (name, index)
            for name, index in LANDMARK_INDEX.items()
            if name in plan_landmarks_m and (include_mobile or name not in MOBILE_LANDMARKS)
        ]
        self._names = [n for n, _ in wanted]
        self._index = np.array([i for _, i in wanted], dtype=np.int64)
        self._plan_m = np.array(
            [np.asarray(plan_landmarks_m[n], dtype=np.float64) for n in self._names]
        ).reshape(-1, 3)

    def __call__(
        self, camera_landmarks_m: np.ndarray | None, valid: np.ndarray | None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Names, plan points (N, 3) and camera points (N, 3), metres, of the pairs whose
        tracked point (a row of the tracker's (468, 3) array) is valid and finite."""
        names, plan, cam, _ = self.rows(camera_landmarks_m, valid)
        return names, plan, cam

    def rows(
        self, camera_landmarks_m: np.ndarray | None, valid: np.ndarray | None
    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`__call__`, and the tracker's row of each pair (N,)."""
        if camera_landmarks_m is None or not self._names:
            return [], np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64)
        cam = np.asarray(camera_landmarks_m, dtype=np.float64)
        flags = None if valid is None else np.asarray(valid, dtype=bool)
        if (
            cam.ndim == 2
            and len(cam)
            and (flags is None or (flags.ndim == 1 and len(flags) >= len(cam)))
        ):
            # The usual (468, 3) and (468,): one pass, no interpreter lock.
            ok, plan, picked, rows = _pair_rows(
                c_array(cam),
                self._index,
                self._plan_m,
                _NO_FLAGS if flags is None else c_array(flags, np.bool_),
                flags is not None,
            )
        else:  # anything else as numpy takes it (its IndexError for too few flags)
            inside = self._index < len(cam)
            idx = np.where(inside, self._index, 0)
            ok = inside & np.isfinite(cam[idx]).all(axis=1)
            if flags is not None:
                ok &= flags[idx]
            rows = idx[ok]
            plan, picked = self._plan_m[ok], cam[rows]
        names = [n for n, keep in zip(self._names, ok.tolist(), strict=True) if keep]
        return names, plan, picked, rows
