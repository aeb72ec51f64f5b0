"""Per-frame registration quality: error estimates and the gates that decide the state."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from edge.jit import c_array
from edge.registration import check_kernels
from edge.registration.check_kernels import cell_mean_rms, covariance_rms, region_jackknife
from edge.registration.types import RegistrationQuality

# Fewest skin inliers a region of the rigid face needs to count (the region jackknife
# leaves it out, the regions gate counts it as used).
REGION_MIN_POINTS = 20


def fitzpatrick_tre_mm(fiducials_m: np.ndarray, targets_m: np.ndarray, fle_mm: float) -> np.ndarray:
    """Expected RMS target registration error at each target, mm.

    Fitzpatrick, West & Maurer 1998 (IEEE TMI 17(5), eq. 46):
    TRE^2(r) = FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2), with d_k the target's
    distance from the k-th principal axis of the fiducial configuration and f_k
    the RMS distance of the fiducials from that axis. ``fiducials_m`` (N, 3),
    N >= 3 and not collinear; ``targets_m`` (M, 3); both in the same frame.
    """
    return fitzpatrick_from_geometry(fitzpatrick_geometry(fiducials_m, targets_m), fle_mm)


def fitzpatrick_geometry(fiducials_m: np.ndarray, targets_m: np.ndarray) -> tuple[int, np.ndarray]:
    """The part of :func:`fitzpatrick_tre_mm` that depends on the layout alone: N and, per
    target, 1 + 1/3 * sum_k d_k^2 / f_k^2 (inf for a collinear layout). Cache it per
    landmark set; :func:`fitzpatrick_from_geometry` adds the FLE."""
    F = np.asarray(fiducials_m, dtype=np.float64)
    P = np.asarray(targets_m, dtype=np.float64).reshape(-1, 3)
    if F.ndim != 2 or F.shape[1] != 3 or len(F) < 3:
        raise ValueError(f"need (N>=3, 3) fiducials, got {F.shape}")
    c = F.mean(axis=0)
    X = F - c
    _, _, Vt = np.linalg.svd(X)
    R = P - c
    x2 = (X**2).sum(axis=1)
    r2 = (R**2).sum(axis=1)
    ratio = np.zeros(len(P))
    for axis in Vt:
        f2 = float(np.mean(x2 - (X @ axis) ** 2))
        if f2 <= 1e-18:
            return len(F), np.full(len(P), math.inf)
        ratio += (r2 - (R @ axis) ** 2) / f2
    return len(F), 1.0 + ratio / 3.0


def fitzpatrick_from_geometry(geometry_: tuple[int, np.ndarray], fle_mm: float) -> np.ndarray:
    """:func:`fitzpatrick_tre_mm` from a cached :func:`fitzpatrick_geometry`."""
    count, shape = geometry_
    if not np.isfinite(shape).all():
        return np.full(len(shape), math.inf)
    return np.sqrt(fle_mm**2 / count * shape)


def surface_tre_mm(
    normal_matrix: np.ndarray,
    centre_m: np.ndarray,
    sigma_mm: float,
    targets_m: np.ndarray,
) -> np.ndarray:
    """RMS 3-D error at each target (mm) implied by the surface fit's covariance.

    Linearised least squares: Cov(omega, v) = sigma^2 (A^T A)^-1, A the point-to-plane
    rows [(a x n)^T, n^T] (``normal_matrix``, mm units, about ``centre_m``; the Hessian
    approximation of Censi 2007, "An accurate closed-form estimate of ICP's covariance",
    whose poorly constrained directions are those of Gelfand et al. 2003, "Geometrically
    stable sampling for the ICP algorithm"), propagated to a target t by the Jacobian
    J = [-[t - c]x, I] of the small motion omega x (t - c) + v: RMS = sqrt(tr(J Cov J^T)).
    It assumes independent residuals, which neighbouring depth pixels are not, so it is
    optimistic: the stage scales it by a factor calibrated against truth.
    ``targets_m`` (M, 3) and ``centre_m`` in the frame of the fit (the plan's).
    """
    return covariance_rms(
        c_array(normal_matrix),
        c_array(centre_m),
        float(sigma_mm),
        c_array(np.reshape(targets_m, (-1, 3))),
    )


def _target_jacobians(targets_m: np.ndarray, centre_m: np.ndarray) -> np.ndarray:
    """(T, 3, 6) J = [-[t - c]x, I] per target (mm): a target's displacement (mm) under
    the small motion (omega rad, v mm) about ``centre_m``."""
    P = (np.asarray(targets_m, dtype=np.float64).reshape(-1, 3) - centre_m) * 1e3
    J = np.zeros((len(P), 3, 6))
    J[:, 0, 1], J[:, 0, 2] = P[:, 2], -P[:, 1]  # -[p]x, row by row
    J[:, 1, 0], J[:, 1, 2] = -P[:, 2], P[:, 0]
    J[:, 2, 0], J[:, 2, 1] = P[:, 1], -P[:, 0]
    J[:, :, 3:] = np.eye(3)
    return J


def region_jackknife_tre_mm(
    rows_mm: np.ndarray,
    residuals_mm: np.ndarray,
    region: np.ndarray,
    centre_m: np.ndarray,
    targets_m: np.ndarray,
    min_points: int = REGION_MIN_POINTS,
) -> np.ndarray:
    """RMS error at each target (mm) by the delete-one-region jackknife of the surface fit.

    The fit is linearised at its optimum (point-to-plane rows ``rows_mm``, residuals in
    mm, both of the inliers); leaving region k out moves the pose by
    d_k = -(A - A_k)^-1 (g - g_k), A = sum of r r^T and g = sum of r * residual. The
    jackknife variance (K - 1)/K * sum |J (d_k - mean d)|^2 (Efron & Stein 1981; regions
    as blocks, as for spatially correlated data, Kunsch 1989) counts what the covariance
    of independent residuals does not: residuals correlated over a patch of skin, and a
    region that moved on its own (a smile reaching the cheekbones). Regions with fewer
    than ``min_points`` inliers are never left out; with fewer than 3 regions to leave
    out, NaN (the layout cannot say).
    """
    rows, residuals, labels = c_array(rows_mm), c_array(residuals_mm), c_array(region, np.int64)
    if rows.ndim != 2 or rows.shape[1] != 6 or {residuals.shape, labels.shape} != {(len(rows),)}:
        raise ValueError(
            f"jackknife rows {rows.shape}, residuals {residuals.shape} and regions "
            f"{labels.shape} must be (K, 6), (K,) and (K,)"
        )
    if len(labels) and labels.min() < 0:
        raise ValueError("region labels must not be negative")
    return region_jackknife(
        rows,
        residuals,
        labels,
        c_array(centre_m),
        c_array(np.reshape(targets_m, (-1, 3))),
        min_points,
    )


def landmark_blind_spot_mm(
    fiducials_m: np.ndarray,
    weights: np.ndarray,
    targets_m: np.ndarray,
    fle_mm: float,
    chi2: float,
) -> float:
    """The largest displacement (mm) at any target of a pose the landmark likelihood-ratio
    test cannot tell from the landmarks' own fit: max over targets and motions d with
    3 d^T H d / FLE^2 <= ``chi2`` of |J_t d|, i.e. sqrt(chi2 FLE^2 / 3 * lambda_max(J_t
    H^-1 J_t^T)), H = sum of w_i B_i^T B_i the fit's normal matrix (B_i the small-motion
    Jacobian at landmark i). Five landmarks along the brow cannot see a turn about the
    line through them: then this is large, and the test says little (inf: no layout).
    """
    F = np.asarray(fiducials_m, dtype=np.float64).reshape(-1, 3)
    if len(F) < 3:
        return math.inf
    c = F.mean(axis=0)
    B = _target_jacobians(F, c)
    H = np.einsum("n,nij,nik->jk", np.asarray(weights, dtype=np.float64), B, B)
    try:
        cov = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return math.inf
    J = _target_jacobians(targets_m, c)
    spread = np.linalg.eigvalsh(np.einsum("tij,jk,tlk->til", J, cov, J))[:, -1]
    return float(np.sqrt(chi2 * fle_mm**2 / 3.0 * max(float(spread.max()), 0.0)))


def fle_from_fre_mm(fre_mm: float, n: int) -> float:
    """FLE estimate from an observed FRE: <FRE^2> = (1 - 2/N) <FLE^2> (Fitzpatrick 1998, eq. 10)."""
    if n <= 2 or not math.isfinite(fre_mm):
        return math.nan
    return fre_mm * math.sqrt(n / (n - 2.0))


def pose_difference(
    a_to_b: np.ndarray, c_to_b: np.ndarray, at_point_m: np.ndarray
) -> tuple[float, float]:
    """(translation mm at a point, rotation deg) between two poses of the same frame."""
    return check_kernels.pose_difference(c_array(a_to_b), c_array(c_to_b), c_array(at_point_m))


def relief_mm(points_m: np.ndarray) -> float:
    """RMS distance (mm) of a cloud from its best-fit plane: ~0 for a photograph or a screen."""
    P = c_array(points_m)
    if len(P) < 3:
        return 0.0
    if P.ndim != 2 or P.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {P.shape}")
    return float(check_kernels.plane_rms(P)) * 1000.0


def systematic_residual_mm(
    points_camera_m: np.ndarray,
    residuals_mm: np.ndarray,
    points_per_cell: int = 8,
    min_count: int = 4,
    clip_mm: float = 5.0,
    ignore_beyond_mm: float = 8.0,
) -> float:
    """RMS of the surface residuals averaged over cells across the face, mm.

    Cells are squares in the camera's x-y plane sized to hold about
    ``points_per_cell`` points (10-30 mm).
    Sensor noise is independent from point to point and averages out in a cell;
    a surface of another shape (another face) leaves a residual that is the same
    for neighbouring points and survives. NaN residuals (occluded)
    and those beyond ``ignore_beyond_mm`` are skipped; the rest are clipped to
    +/- ``clip_mm`` so a few stray points cannot dominate.
    Returns NaN when fewer than 5 cells have ``min_count`` points.
    """
    # Points far off the skin are background or hair seen past the face's edge (the
    # inlier gate counts them), not a surface of another shape. Cells are summed x, then
    # y (compiled: registration/kernels.py).
    points, residuals = c_array(points_camera_m), c_array(residuals_mm)
    if points.ndim != 2 or points.shape[1] != 3 or residuals.shape != (len(points),):
        raise ValueError(f"points {points.shape} and residuals {residuals.shape} do not pair")
    return float(
        cell_mean_rms(
            points,
            residuals,
            points_per_cell,
            min_count,
            clip_mm,
            ignore_beyond_mm,
        )
    )


# Every gate by the name RegistrationQuality.failed_gates uses (docs/registration.md):
# "landmarks" (fewer than 4 paired) and "surface_fit" (ICP failed) are refusals before any
# figure; "cloud_points" and "relief" are checked before the fit.
GATE_NAMES = (
    "landmarks",
    "cloud_points",
    "relief",
    "surface_fit",
    "icp_rms",
    "surface_shape",
    "inlier_fraction",
    "rigid_evidence",
    "regions",
    "occluded_fraction",
    "tre",
    "fre",
    "landmark_surface",
)


# The landmark/surface agreement also passes when the surface pose explains the paired
# landmarks about as well as their own fit (edge/registration/stage.py,
# _landmark_excess_chi2): the 0.999 quantile of chi-square with 6 degrees of freedom.
LANDMARK_SURFACE_CHI2 = 22.46
# Where that test is blind beyond max_landmark_surface_mm (landmark_blind_spot_mm), the
# surface must hold the pose alone: at least this share of the rigid face on the skin
# (with every surface gate and the TRE estimate's; docs/registration.md, Gates).
SURFACE_ALONE_EVIDENCE = 0.6


@dataclass(frozen=True)
class Gates:
    """Thresholds every TRACKING frame must pass (see docs/registration.md)."""

    max_icp_rms_mm: float
    min_inlier_fraction: float
    max_occluded_fraction: float
    max_fre_mm: float
    max_landmark_surface_mm: float
    max_landmark_surface_deg: float
    min_relief_mm: float
    max_tre_mm: float
    min_cloud_points: int
    max_surface_shape_mm: float
    min_rigid_evidence_fraction: float = 0.0
    min_regions_used: int = 0


def _worst(values: Iterable[float]) -> float:
    """The largest of ``values``, NaN when one is NaN: np.max's answer without an array."""
    listed = [float(v) for v in values]
    return math.nan if any(math.isnan(v) for v in listed) else max(listed)


def check_gates(
    q: RegistrationQuality,
    gates: Gates,
    *,
    occluded_fraction: float,
    relief: float,
    cloud_points: int,
    require_landmarks: bool = True,
) -> dict[str, str]:
    """The gates ``q`` fails: gate name -> reason in words (empty when all pass). NaN fails.

    With ``require_landmarks`` False (tracking an established pose) landmark
    figures that were not measured this frame (NaN) are skipped; measured ones
    must still pass.
    """
    reasons: dict[str, str] = {}

    def need(gate: str, ok: bool, text: Callable[[], str]) -> None:
        if not ok:  # the words only for a gate that fails
            reasons[gate] = text()

    need(
        "cloud_points",
        cloud_points >= gates.min_cloud_points,
        lambda: f"only {cloud_points} depth points on the face",
    )
    need(
        "relief",
        relief >= gates.min_relief_mm,
        lambda: f"face depth is flat (relief {relief:.1f} mm)",
    )
    need(
        "icp_rms",
        q.icp_rms_mm <= gates.max_icp_rms_mm,
        lambda: f"surface RMS {q.icp_rms_mm:.2f} mm too high",
    )
    need(
        "surface_shape",
        q.surface_shape_mm <= gates.max_surface_shape_mm,
        lambda: f"the surface has another shape ({q.surface_shape_mm:.2f} mm systematic residual)",
    )
    need(
        "inlier_fraction",
        q.inlier_fraction >= gates.min_inlier_fraction,
        lambda: f"surface inliers {q.inlier_fraction:.0%} too few",
    )
    need(
        "rigid_evidence",
        q.rigid_evidence_fraction >= gates.min_rigid_evidence_fraction,
        lambda: f"only {q.rigid_evidence_fraction:.0%} of the rigid upper face fits the skin",
    )
    need(
        "regions",
        len(q.regions_used) >= gates.min_regions_used,
        lambda: (
            f"the fit rests on {len(q.regions_used)} regions of the rigid face"
            f" ({', '.join(q.regions_used) or 'none'})"
        ),
    )
    need(
        "occluded_fraction",
        occluded_fraction <= gates.max_occluded_fraction,
        lambda: f"{occluded_fraction:.0%} of the face is covered",
    )
    # The calibrated surface estimate; NaN or inf (an unconstrained fit) fails.
    worst_tre = _worst(q.tre_mm.values()) if q.tre_mm else 0.0
    need("tre", worst_tre <= gates.max_tre_mm, lambda: f"estimated TRE {worst_tre:.1f} mm too high")
    if not require_landmarks and math.isnan(q.fre_mm):
        return reasons
    need("fre", q.fre_mm <= gates.max_fre_mm, lambda: f"landmark FRE {q.fre_mm:.1f} mm too high")
    need(
        "landmark_surface",
        (
            q.landmark_surface_translation_mm <= gates.max_landmark_surface_mm
            and q.landmark_surface_rotation_deg <= gates.max_landmark_surface_deg
        )
        or (
            q.landmark_surface_chi2 <= LANDMARK_SURFACE_CHI2
            and (
                q.landmark_blind_mm <= gates.max_landmark_surface_mm
                or q.rigid_evidence_fraction >= SURFACE_ALONE_EVIDENCE
            )
        ),
        lambda: (
            f"landmark and surface poses disagree ({q.landmark_surface_translation_mm:.1f} mm, "
            f"{q.landmark_surface_rotation_deg:.1f} deg; likelihood ratio "
            f"{q.landmark_surface_chi2:.1f}, blind to {q.landmark_blind_mm:.1f} mm)"
        ),
    )
    return reasons
