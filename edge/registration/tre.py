"""The per-target TRE estimate shown to the surgeon: from the surface fit actually used.

Parts combined per target as an RMS 3-D error, then scaled by a confidence factor
calibrated against the phantom's ground truth (docs/registration.md):

1. the surface fit's own error, the larger of
   a. its covariance propagated to the target (``quality.surface_tre_mm``), with the
      residual noise level taken as at least the sensor's depth noise at the measured
      distance (``edge.camera.depth_sigma_m``), and
   b. the delete-one-region jackknife (``quality.region_jackknife_tre_mm``): how far
      the target moves when any one region of the rigid face is left out, which sees
      correlated noise and a region that moved on its own (a smile), as (a) cannot;
      its square averaged over this frame and the window's (a jackknife over a few
      regions is a noisy variance estimate, and the face deforms slowly);
2. the between-frame disagreement at the target: how far each fitted target position
   lies from the quadratic extrapolation of the previous three, normalised to the
   per-frame error it implies; the median over the last ``WINDOW_FRAMES`` frames.
   A new registration has no history: then this part is 0.

Cost per frame: one 6x6 inverse and a few 3x3 products per target.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from edge import geometry
from edge.camera import depth_sigma_m
from edge.jit import c_array
from edge.registration.check_kernels import (
    extrapolation_disagreement,
    finite_rows_median,
    median_depth,
    pooled_fit,
)
from edge.registration.icp import IcpResult
from edge.registration.quality import (
    REGION_MIN_POINTS,
    region_jackknife_tre_mm,
    surface_tre_mm,
)

WINDOW_FRAMES = 15  # frames of between-frame disagreement kept (half a second at 30 fps)
PREDICTION_POINTS = 3  # earlier positions the between-frame prediction extrapolates
# Median of a chi-square variable with 3 degrees of freedom, over its mean (3): the window's
# median squared disagreement, divided by this, estimates the mean square, and one real
# jump of the head (a missed frame, a replay looping) cannot move it.
CHI2_3_MEDIAN_OVER_MEAN = 2.366 / 3.0


class _Window:
    """The last ``size`` rows of per-target values, kept as a set: only their mean and
    median are taken."""

    def __init__(self, size: int, targets: int) -> None:
        self._rows = np.zeros((size, targets))
        self._count = 0
        self._next = 0

    def append(self, row: np.ndarray) -> None:
        self._rows[self._next] = row
        self._next = (self._next + 1) % len(self._rows)
        self._count = min(self._count + 1, len(self._rows))

    def clear(self) -> None:
        self._count = self._next = 0

    def rows(self) -> np.ndarray:
        """The rows kept, C-contiguous (a view, valid until the next append)."""
        return self._rows[: self._count]


class TreEstimator:
    """Calibrated per-target TRE (mm) of the registration stage's pose.

    ``targets_m``: (T, 3) plan targets (plan frame, metres). ``confidence_factor``: the
    calibrated multiplier of the RMS estimate. ``subpixel_px``, ``baseline_m``: the depth
    sensor's noise model (the focal length is the frame's).
    """

    def __init__(
        self,
        targets_m: np.ndarray,
        confidence_factor: float,
        subpixel_px: float,
        baseline_m: float,
    ) -> None:
        self.targets_m = c_array(np.reshape(targets_m, (-1, 3)))
        self.confidence_factor = confidence_factor
        self.subpixel_px = subpixel_px
        self.baseline_m = baseline_m
        self._positions: deque[tuple[float, np.ndarray]] = deque(maxlen=PREDICTION_POINTS)
        self._disagreement = _Window(WINDOW_FRAMES, len(self.targets_m))
        self._jackknife = _Window(WINDOW_FRAMES, len(self.targets_m))
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None  # now, pose, value
        # This frame's squared jackknife per target, with the pose it belongs to.
        self._last_jackknife: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the pose history (a new registration, a lost face)."""
        self._positions.clear()
        self._disagreement.clear()
        self._jackknife.clear()
        self._last = None
        self._last_jackknife = None

    def rms_mm(
        self,
        icp: IcpResult,
        cloud_camera_m: np.ndarray,
        focal_px: float,
        now_s: float,
        tracking: bool = True,
        region: np.ndarray | None = None,
        min_region_points: int = REGION_MIN_POINTS,
    ) -> np.ndarray:
        """(T,) uncalibrated RMS error estimate at each target for this frame's fit, mm
        (inf when the fit does not constrain the pose). ``tracking`` False: a new
        registration, to which the earlier frames' disagreement does not belong.
        ``region``: (N,) region index per cloud point, for the jackknife (part 1b), which
        leaves out regions with ``min_region_points`` inliers or more."""
        if icp.normal_matrix is None or icp.centre_m is None:
            return np.full(len(self.targets_m), math.inf)
        z_m = median_depth(c_array(cloud_camera_m))
        sensor_mm = float(depth_sigma_m(z_m, focal_px, self.subpixel_px, self.baseline_m)) * 1e3
        sigma_mm = max(icp.rms_mm, sensor_mm)
        fit = surface_tre_mm(icp.normal_matrix, icp.centre_m, sigma_mm, self.targets_m)
        jack_sq = np.full(len(self.targets_m), math.nan)
        if region is not None and icp.inliers is not None and icp.residuals_mm is not None:
            inl = icp.inliers
            assert icp.rows_mm is not None
            jack_sq = (
                region_jackknife_tre_mm(
                    icp.rows_mm,
                    icp.residuals_mm[inl],
                    region[inl],
                    icp.centre_m,
                    self.targets_m,
                    min_region_points,
                )
                ** 2
            )
        self._last_jackknife = (icp.patient_to_camera, jack_sq)
        jack_rows = self._jackknife.rows() if tracking else np.zeros((0, len(self.targets_m)))
        fit = pooled_fit(c_array(fit), jack_rows, jack_sq)
        between = self._between_frame_sq(now_s, icp.patient_to_camera) if tracking else 0.0
        return np.sqrt(fit**2 + between)

    def estimate_mm(
        self,
        icp: IcpResult,
        cloud_camera_m: np.ndarray,
        focal_px: float,
        now_s: float,
        tracking: bool = True,
        region: np.ndarray | None = None,
        min_region_points: int = REGION_MIN_POINTS,
    ) -> np.ndarray:
        """(T,) displayed estimate: the calibrated confidence factor times :meth:`rms_mm`."""
        rms = self.rms_mm(icp, cloud_camera_m, focal_px, now_s, tracking, region, min_region_points)
        return self.confidence_factor * rms

    def observe(self, now_s: float, patient_to_camera: np.ndarray) -> None:
        """Record the pose kept for this frame (the stage's motion history)."""
        last = self._last
        if last is not None and last[0] == now_s and last[1] is patient_to_camera:
            value = last[2]  # computed for this frame's estimate already
        else:
            value = self._disagreement_sq(now_s, patient_to_camera)
        self._disagreement.append(value)
        jack = self._last_jackknife
        if jack is not None and jack[0] is patient_to_camera:
            self._jackknife.append(jack[1])
        self._last_jackknife = None
        self._last = None
        self._positions.append((now_s, geometry.apply(patient_to_camera, self.targets_m)))

    def _disagreement_sq(self, now_s: float, pose: np.ndarray) -> np.ndarray:
        """Per target: squared distance (mm^2) of the fitted position from the quadratic
        (constant-acceleration) extrapolation of the previous three, divided by the factor
        1 + sum(w_i^2) that independent per-frame errors of variance s^2 give it (w_i the
        Lagrange extrapolation weights), so it estimates s^2. A head's smooth motion
        (nodding, approaching, leaving the view) hardly shows in the third difference;
        frame-to-frame noise of the fit does. NaN without three earlier positions."""
        times = [t for t, _ in self._positions]
        if len(times) < PREDICTION_POINTS or not all(
            a < b for a, b in zip(times, [*times[1:], now_s], strict=True)
        ):
            return np.full(len(self.targets_m), math.nan)  # too few, or time not increasing
        (_, p0), (_, p1), (_, p2) = self._positions
        return extrapolation_disagreement(
            np.array(times), p0, p1, p2, now_s, c_array(pose), self.targets_m
        )

    def _between_frame_sq(self, now_s: float, pose: np.ndarray) -> np.ndarray:
        """Per target, the mean square per-frame error (mm^2) the between-frame
        disagreement implies over the window and this frame (the median, made consistent
        for a 3-D Gaussian error); 0 when no frame has three predecessors yet."""
        now = self._disagreement_sq(now_s, pose)
        self._last = (now_s, pose, now)
        return finite_rows_median(self._disagreement.rows(), now) / CHI2_3_MEDIAN_OVER_MEAN
