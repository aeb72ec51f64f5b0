"""Surface registration: robust point-to-plane ICP of a depth cloud onto the plan's skin.

The skin is sampled densely once per plan (:class:`SkinModel`, a KD-tree with
per-sample normals). Each ICP iteration matches the cloud (moved into the
patient frame by the current pose) to the nearest skin samples and solves the
linearised point-to-plane problem (Chen & Medioni 1992; Low 2004, eq. 8-10)
with Tukey biweights on the residuals, after a distance gate that shrinks as the
fit converges. Points in front of the skin by more than the occlusion gate
(drapes, hands, instruments) are reported as occluded, not as misfits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from edge import geometry
from edge.errors import RegistrationError
from edge.jit import c_array
from edge.plan.model import Mesh
from edge.registration.kernels import (
    ICP_SINGULAR,
    ICP_TOO_FEW,
    grid_lookup,
    icp_grid_loop,
    inlier_rows,
    surface_residuals,
    to_patient_lookup,
)


@dataclass(frozen=True)
class NearestGrid:
    """Precomputed nearest skin sample for every cell of a grid in a band around the skin.

    A tracking frame starts within a few millimetres of the optimum, where the
    sample nearest to the cell centre is as good as the nearest to the point
    itself for a point-to-plane fit, and looking it up is O(1) per point
    instead of a KD-tree descent.
    """

    origin_m: np.ndarray  # (3,) corner of cell (0, 0, 0)
    cell_m: float
    index: np.ndarray  # (nx, ny, nz) int32 sample index, -1 outside the band and on the border
    band_m: float

    def lookup(self, points_m: np.ndarray) -> np.ndarray:
        """Sample index per point; -1 where the point is outside the band. A point outside
        the grid is clipped onto its border, whose cells are all -1 (see _nearest_grid)."""
        pts = c_array(points_m)
        return grid_lookup(pts, self.index, self.origin_m, self.cell_m)


@dataclass(frozen=True)
class SkinModel:
    """Dense samples of the skin surface (patient frame, metres) with unit normals."""

    points_m: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3), unit, orientation arbitrary
    tree: cKDTree
    spacing_m: float
    grid: NearestGrid | None = None

    @classmethod
    def from_mesh(
        cls,
        mesh: Mesh,
        spacing_m: float = 1.5e-3,
        max_points: int = 200_000,
        seed: int = 0,
        grid_cell_m: float = 2e-3,
        grid_band_m: float = 12e-3,
    ) -> SkinModel:
        """Sample a mesh about every ``spacing_m`` (area-weighted, deterministic) and, when
        ``grid_cell_m`` > 0, precompute the nearest-sample grid within ``grid_band_m``."""
        v = np.asarray(mesh.vertices, dtype=np.float64)
        f = np.asarray(mesh.faces, dtype=np.int64)
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        cross = np.cross(b - a, c - a)
        double_area = np.linalg.norm(cross, axis=1)
        ok = double_area > 1e-14
        if not ok.any():
            raise RegistrationError("the skin mesh has no triangle with an area", "re-export it")
        a, b, c, cross, double_area = a[ok], b[ok], c[ok], cross[ok], double_area[ok]
        total = 0.5 * double_area.sum()
        n = int(np.clip(total / spacing_m**2, 1000, max_points))
        rng = np.random.default_rng(seed)
        tri = rng.choice(len(a), size=n, p=double_area / double_area.sum())
        r1 = np.sqrt(rng.random(n))
        r2 = rng.random(n)
        w_a, w_b, w_c = 1 - r1, r1 * (1 - r2), r1 * r2
        pts = a[tri] * w_a[:, None] + b[tri] * w_b[:, None] + c[tri] * w_c[:, None]
        # Include the vertices too, so small features are never missed.
        all_pts = np.concatenate([pts, v[np.unique(f[ok])]])
        tree = cKDTree(all_pts)
        normals = _vertex_normals(v, f[ok], cross)
        tri_normals = cross[tri] / double_area[tri, None]
        all_normals = np.concatenate([tri_normals, normals[np.unique(f[ok])]])
        grid = _nearest_grid(all_pts, tree, grid_cell_m, grid_band_m) if grid_cell_m > 0 else None
        return cls(all_pts, all_normals, tree, float(np.sqrt(total / n)), grid)


def _nearest_grid(pts: np.ndarray, tree: cKDTree, cell: float, band: float) -> NearestGrid:
    from scipy.ndimage import binary_dilation

    pad = band + cell
    origin = pts.min(axis=0) - pad
    shape = np.ceil((pts.max(axis=0) + pad - origin) / cell).astype(int) + 1
    occupied = np.zeros(shape, dtype=bool)
    ijk = np.floor((pts - origin) / cell).astype(np.int64)
    occupied[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    near = binary_dilation(occupied, iterations=int(np.ceil(band / cell)))
    cells = np.argwhere(near)
    centres = origin + (cells + 0.5) * cell
    d, idx = tree.query(centres, distance_upper_bound=band + cell, workers=1)
    index = np.full(shape, -1, dtype=np.int32)
    keep = np.isfinite(d)
    index[cells[keep, 0], cells[keep, 1], cells[keep, 2]] = idx[keep]
    # A border of -1 all round, so a lookup may clip points outside the grid onto it; the
    # origin moves out by one cell, so the cells inside keep their places in space.
    return NearestGrid(origin - cell, cell, np.pad(index, 1, constant_values=-1), band)


def _vertex_normals(v: np.ndarray, f: np.ndarray, cross: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], cross)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(length > 0, length, 1.0)


@dataclass(frozen=True)
class IcpResult:
    """Outcome of one ICP run.

    ``rms_mm`` is the RMS point-to-plane residual over the inliers;
    ``inlier_fraction`` is inliers / points not occluded; ``occluded_fraction``
    is the share of points in front of the skin (drapes); ``converged`` says the
    last update was below the tolerances before ``max_iterations``.
    """

    patient_to_camera: np.ndarray
    rms_mm: float
    inlier_fraction: float
    occluded_fraction: float
    iterations: int
    converged: bool
    points: int
    residuals_mm: np.ndarray | None = None  # (N,) signed, + in front of the skin; NaN: occluded
    # Point-to-plane normal matrix A^T A of the final inliers (rows [(a x n)^T, n^T], a the
    # point about ``centre_m`` in mm, patient frame): what the surface constrains (Gelfand
    # et al. 2003). With the residual variance it gives the pose covariance
    # (quality.surface_tre_mm).
    normal_matrix: np.ndarray | None = None
    centre_m: np.ndarray | None = None  # (3,) patient frame
    # The final inliers: (N,) mask over the cloud, and their rows of A (K, 6), whose
    # products make ``normal_matrix`` (the TRE estimate leaves regions out with them).
    inliers: np.ndarray | None = None
    rows_mm: np.ndarray | None = None


def icp_point_to_plane(
    model: SkinModel,
    points_camera_m: np.ndarray,
    patient_to_camera_initial: np.ndarray,
    *,
    max_iterations: int = 30,
    initial_gate_mm: float = 30.0,
    min_gate_mm: float = 4.0,
    inlier_mm: float = 2.5,
    occlusion_mm: float = 4.0,
    tukey_floor_mm: float = 1.5,
    tolerance_mm: float = 0.01,
    tolerance_deg: float = 0.01,
    use_grid: bool = True,
) -> IcpResult:
    """Refine ``patient_to_camera`` so the camera cloud lies on the skin.

    ``points_camera_m``: (N, 3) finite camera-frame points, N >= 6. Correspondences
    come from the skin's nearest-sample grid when ``use_grid`` and the initial
    gate lies within its band (tracking), otherwise from the KD-tree; the final
    figures use the grid where it answers and the exact KD-tree elsewhere.
    Raises RegistrationError on bad input or when no correspondences remain.
    """
    pts = np.asarray(points_camera_m, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 6:
        raise RegistrationError(
            f"ICP needs an (N, 3) cloud with N >= 6, got {pts.shape}", "pass more depth points"
        )
    if not np.isfinite(pts).all():
        raise RegistrationError("the ICP cloud contains NaN or infinity", "drop invalid depth")
    T0 = np.asarray(patient_to_camera_initial, dtype=np.float64)
    if T0.shape != (4, 4) or not np.isfinite(T0).all():
        raise RegistrationError("the initial pose must be a finite 4x4 matrix")
    camera_to_patient = geometry.invert(T0)
    gate = initial_gate_mm * 1e-3
    # The grid answers only within its band: use it when the gate fits inside.
    grid = model.grid if use_grid and model.grid and gate <= model.grid.band_m else None
    if grid is not None:  # tracking: the compiled loop (registration/kernels.py)
        camera_to_patient, iterations, converged = _grid_iterations(
            model,
            grid,
            pts,
            camera_to_patient,
            max_iterations=max_iterations,
            gate=gate,
            min_gate_m=min_gate_mm * 1e-3,
            occlusion_m=occlusion_mm * 1e-3,
            tukey_floor_m=tukey_floor_mm * 1e-3,
            tolerance_m=tolerance_mm * 1e-3,
            tolerance_rad=math.radians(tolerance_deg),
        )
    else:
        camera_to_patient, iterations, converged = _tree_iterations(
            model,
            pts,
            camera_to_patient,
            max_iterations=max_iterations,
            gate=gate,
            min_gate_mm=min_gate_mm,
            occlusion_mm=occlusion_mm,
            tukey_floor_mm=tukey_floor_mm,
            tolerance_mm=tolerance_mm,
            tolerance_deg=tolerance_deg,
        )

    # Final residuals at the final pose: the grid where it answers, the exact
    # KD-tree for the rest (points far from the skin: drapes, background).
    if grid is not None:
        X, idx = to_patient_lookup(
            c_array(pts), camera_to_patient, grid.index, grid.origin_m, grid.cell_m
        )
        far = np.flatnonzero(idx < 0)
        if len(far):
            idx[far] = model.tree.query(X[far], workers=1)[1]
    else:
        X = c_array(geometry.apply(camera_to_patient, pts))
        idx = c_array(model.tree.query(X, workers=1)[1], np.int64)
    eye = c_array(camera_to_patient[:3, 3])  # camera centre, patient frame
    slack = 2 * model.spacing_m + (grid.cell_m if grid is not None else 0.0)
    residuals_mm, toward_camera, inlier, visible, n_in, rms_m = surface_residuals(
        X,
        idx,
        model.points_m,
        model.normals,
        eye,
        occlusion_mm * 1e-3,
        inlier_mm * 1e-3,
        inlier_mm * 1e-3 + slack,
    )
    rows, centre, normal_matrix = (
        inlier_rows(X, toward_camera, inlier) if n_in >= 6 else (None, None, None)
    )
    return IcpResult(
        patient_to_camera=geometry.invert(camera_to_patient),
        rms_mm=rms_m * 1e3,
        inlier_fraction=n_in / visible if visible else 0.0,
        occluded_fraction=(len(pts) - visible) / len(pts),
        iterations=iterations,
        converged=converged,
        points=len(pts),
        residuals_mm=residuals_mm,
        normal_matrix=normal_matrix,
        centre_m=centre,
        inliers=inlier,
        rows_mm=rows,
    )


def _too_few(found: int, gate_m: float) -> RegistrationError:
    return RegistrationError(
        f"ICP found {found} skin correspondences within {gate_m * 1e3:.0f} mm",
        "the depth cloud is not near the skin; re-initialise from landmarks",
    )


def _grid_iterations(
    model: SkinModel,
    grid: NearestGrid,
    pts: np.ndarray,
    camera_to_patient: np.ndarray,
    *,
    max_iterations: int,
    gate: float,
    min_gate_m: float,
    occlusion_m: float,
    tukey_floor_m: float,
    tolerance_m: float,
    tolerance_rad: float,
) -> tuple[np.ndarray, int, bool]:
    """The ICP iterations with the grid's correspondences, compiled (kernels.icp_grid_loop):
    the same steps as :func:`_tree_iterations`, one pass over the cloud each."""
    pose = np.array(camera_to_patient, dtype=np.float64, order="C")  # updated in place
    code, iterations, third, gate = icp_grid_loop(
        c_array(pts),
        pose,
        grid.index,
        grid.origin_m,
        grid.cell_m,
        model.points_m,
        model.normals,
        max_iterations,
        gate,
        min_gate_m,
        occlusion_m,
        tukey_floor_m,
        tolerance_m,
        tolerance_rad,
    )
    if code == ICP_TOO_FEW:
        raise _too_few(third, gate)
    if code == ICP_SINGULAR:
        raise _singular()
    return pose, iterations, bool(third)


def _singular() -> RegistrationError:
    return RegistrationError(
        "ICP normal equations are singular", "the cloud does not constrain the pose"
    )


def _tree_iterations(
    model: SkinModel,
    pts: np.ndarray,
    camera_to_patient: np.ndarray,
    *,
    max_iterations: int,
    gate: float,
    min_gate_mm: float,
    occlusion_mm: float,
    tukey_floor_mm: float,
    tolerance_mm: float,
    tolerance_deg: float,
) -> tuple[np.ndarray, int, bool]:
    """The ICP iterations with the KD-tree's exact nearest samples (initialisation, whose
    gate is wider than the grid's band). Returns (camera_to_patient, iterations, converged)."""
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported below
        X = geometry.apply(camera_to_patient, pts)
        d, idx = model.tree.query(X, distance_upper_bound=gate, workers=1)
        keep = np.flatnonzero(np.isfinite(d))
        d_m = d[keep]
        if len(keep) < 6:
            raise _too_few(len(keep), gate)
        Xm, sample = X[keep], idx[keep]
        q, n = model.points_m[sample], model.normals[sample]
        # Orient the normals towards the camera: then r > 0 means "in front of the skin".
        n *= np.sign(np.einsum("ij,ij->i", camera_to_patient[:3, 3] - q, n))[:, None]
        r = np.einsum("ij,ij->i", Xm - q, n)
        # Drapes, hands and instruments lie in front of the skin, never behind it: a
        # point further in front than the occlusion gate (or half the distance gate
        # while far from the optimum) is not skin and gets no say.
        front = r > max(occlusion_mm * 1e-3, 0.5 * gate)
        # Tukey biweight, scale from the MAD of the residuals (c = 4.685 sigma).
        sigma = 1.4826 * float(np.median(np.abs(r)))
        c = max(4.685 * sigma, tukey_floor_mm * 1e-3)
        u = r / c
        w = np.where((np.abs(u) < 1.0) & ~front, (1.0 - u * u) ** 2, 0.0)
        centre = Xm.mean(axis=0)
        J = np.concatenate([np.cross(Xm - centre, n), n], axis=1)  # rows [(a x n), n]
        Jw = J * w[:, None]
        A = Jw.T @ J
        g = Jw.T @ r
        try:
            delta = -np.linalg.solve(A + 1e-12 * np.eye(6), g)
        except np.linalg.LinAlgError:
            raise _singular() from None
        R = geometry.rotation_vector_to_matrix(delta[:3])
        inc = np.eye(4)
        inc[:3, :3] = R
        inc[:3, 3] = centre - R @ centre + delta[3:]
        camera_to_patient = inc @ camera_to_patient
        step_mm = float(np.linalg.norm(delta[3:])) * 1e3
        step_deg = float(np.degrees(np.linalg.norm(delta[:3])))
        gate = max(min_gate_mm * 1e-3, min(gate, 3.0 * float(np.median(d_m))))
        if step_mm < tolerance_mm and step_deg < tolerance_deg:
            converged = True
            break
    return camera_to_patient, iterations, converged
