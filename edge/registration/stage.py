"""The registration stage: plan-to-patient pose per frame, its quality and state.

Per frame: robust paired-point fit of the tracked landmarks (for quality and
(re-)initialisation), then surface ICP of the face's depth cloud, warm-started
from the previous pose moved by a constant-velocity prediction. Gates on the
quality figures decide the state (edge/registration/state.py). See
docs/registration.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge import geometry
from edge.config import RegistrationConfig
from edge.errors import RegistrationError
from edge.frames import Frame, FrameResult
from edge.jit import c_array
from edge.plan.model import Plan
from edge.registration.check_kernels import extrapolate_pose
from edge.registration.cloud import (
    REGION_NAMES,
    FaceCloud,
    correct_skin_depth,
    drape_coloured,
    region_cloud,
)
from edge.registration.icp import IcpResult, SkinModel, icp_point_to_plane
from edge.registration.landmarks import MOBILE_LANDMARKS, RIGID_FACE_HULL
from edge.registration.paired_point import LandmarkPairs, PairedPointResult, robust_rigid_transform
from edge.registration.quality import (
    LANDMARK_SURFACE_CHI2,
    REGION_MIN_POINTS,
    Gates,
    check_gates,
    fitzpatrick_from_geometry,
    fitzpatrick_geometry,
    fle_from_fre_mm,
    landmark_blind_spot_mm,
    pose_difference,
    relief_mm,
    systematic_residual_mm,
)
from edge.registration.state import Outcome, RegistrationStateMachine
from edge.registration.tre import TreEstimator
from edge.registration.types import RegistrationQuality, RegistrationResult, RegistrationState
from edge.tracking.types import Face

log = logging.getLogger(__name__)

# Landmarks a drape over the lower face hides (see _LandmarkFit.upper).
LOWER_FACE_LANDMARKS = MOBILE_LANDMARKS | {"subnasale"}

# A region of the rigid face counts as used when this share of its sampled pixels are
# skin inliers of the surface fit (and at least REGION_MIN_POINTS of them).
REGION_USED_FRACTION = 0.5

# ICP stops when an update moves less than this (mm, deg). Tracking frames stop
# earlier: depth noise moves the optimum more than that from frame to frame.
INIT_TOLERANCE = 0.01
TRACK_TOLERANCE = 0.05
FITZPATRICK_LAYOUTS = 32  # landmark sets whose geometry is kept (bounded)


@dataclass
class _Attempt:
    """One registration attempt on one frame."""

    pose: np.ndarray | None
    quality: RegistrationQuality
    passed: bool
    icp: IcpResult | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass
class _LandmarkFit:
    """Robust paired-point fit of this frame's landmarks (names in the fit's order).

    ``upper`` is the fit of the upper-face landmarks alone: drapes cover the lower
    face, and the tracker then lifts those landmarks from the drape's depth.
    """

    fit: PairedPointResult
    names: list[str]
    plan_m: np.ndarray  # (N, 3) the paired plan landmarks, in ``names``' order
    camera_m: np.ndarray  # (N, 3) the tracked ones
    weights: np.ndarray  # (N,) the fit's weights
    make_upper: Callable[[], _LandmarkFit | None] | None = None
    _upper: _LandmarkFit | None = None
    _upper_done: bool = False

    @property
    def upper(self) -> _LandmarkFit | None:
        """The upper-face fit, computed on first use (most frames never need it)."""
        if not self._upper_done:
            self._upper = self.make_upper() if self.make_upper is not None else None
            self._upper_done = True
        return self._upper


def _fits(lm: _LandmarkFit) -> Iterator[_LandmarkFit]:
    """The fit of all landmarks, then the upper face's: made only if the caller asks on."""
    yield lm
    if lm.upper is not None:
        yield lm.upper


class RegistrationStage:
    """Pipeline stage ``registration``: sets ``result.registration``.

    ``plan``: the loaded plan (metres, LPS). ``skin``: a prebuilt skin model
    (built from ``plan.skin`` when None; building takes ~0.1 s).
    """

    name = "registration"

    def __init__(
        self, plan: Plan, config: RegistrationConfig, skin: SkinModel | None = None
    ) -> None:
        self.plan = plan
        self._pairs = LandmarkPairs(plan.landmarks)
        self.config = config
        self.skin = skin or SkinModel.from_mesh(plan.skin, spacing_m=config.skin_spacing_mm * 1e-3)
        self.machine = RegistrationStateMachine(config.confirm_frames, config.lost_after_frames)
        self.gates = Gates(
            max_icp_rms_mm=config.max_icp_rms_mm,
            min_inlier_fraction=config.min_inlier_fraction,
            max_occluded_fraction=config.max_occluded_fraction,
            max_fre_mm=config.max_fre_mm,
            max_landmark_surface_mm=config.max_landmark_surface_mm,
            max_landmark_surface_deg=config.max_landmark_surface_deg,
            min_relief_mm=config.min_relief_mm,
            max_tre_mm=config.max_tre_mm,
            min_cloud_points=config.min_cloud_points,
            max_surface_shape_mm=config.max_surface_shape_mm,
            min_rigid_evidence_fraction=config.min_rigid_evidence_fraction,
            min_regions_used=config.min_regions_used,
        )
        self._target_names = list(plan.targets)
        self._targets_m = (
            np.stack([plan.targets[n] for n in self._target_names])
            if plan.targets
            else np.zeros((0, 3))
        )
        landmark_centre = np.mean(list(plan.landmarks.values()), axis=0)
        # Where the landmark and surface poses are compared: the targets, which is
        # where a disagreement would hurt.
        self._agreement_point = (
            self._targets_m.mean(axis=0) if len(self._targets_m) else landmark_centre
        )
        self._history: list[tuple[float, np.ndarray]] = []
        self._registered_s: float | None = None
        # The Fitzpatrick geometry (N and per target) of the landmark sets seen lately: a
        # landmark whose validity flickers alternates between two or three sets.
        self._fitzpatrick: dict[tuple[str, ...], tuple[int, np.ndarray]] = {}
        self._skin_bias_m = config.skin_depth_bias_mm * 1e-3
        self._drape_chroma = config.drape_chroma if config.drape_segmentation else None
        self.tre = TreEstimator(
            self._targets_m,
            config.tre_confidence_factor,
            config.depth_subpixel_px,
            config.depth_baseline_mm * 1e-3,
        )
        # Headset commands this stage carries out (edge.app routes them here).
        self.commands: dict[str, Callable[[dict[str, Any]], None]] = {
            "reregister": lambda args: self.reset()
        }

    @property
    def state(self) -> RegistrationState:
        return self.machine.state

    def reset(self) -> None:
        """Forget the pose and start again from SEARCHING (a headset's ``reregister``).

        The next frame with a face registers from its landmarks, as the first one did.
        """
        self.machine = RegistrationStateMachine(
            self.config.confirm_frames, self.config.lost_after_frames
        )
        self._history.clear()
        self.tre.reset()
        self._registered_s = None

    # ------------------------------------------------------------------ per frame

    def process(self, result: FrameResult) -> None:
        """Register one frame; sets ``result.registration``."""
        frame = result.frame
        face = result.tracking.patient if result.tracking is not None else None
        unusable = frame.depth is None or not _camera_numbers_usable(frame)
        if face is None or unusable:
            self._history.clear()
            self.tre.reset()
            state = self.machine.update(Outcome.NO_FACE)
            why = (
                "no face tracked"
                if face is None
                else "no depth in this frame"
                if frame.depth is None
                else "the frame's camera intrinsics or depth scale are not finite and positive"
            )
            result.registration = RegistrationResult(
                state, None, RegistrationQuality(reasons=[why]), self._registered_s
            )
            return

        lm = self._landmark_fit(frame, face)
        now = frame.capture_s  # the motion model's clock: the same on every replay
        if self.machine.has_pose:
            attempt = self._track(frame, face, lm, self._warm_start(now, lm))
            outcome = Outcome.TRACK_PASSED if attempt.passed else Outcome.TRACK_FAILED
            if not attempt.passed and lm is not None:
                # Diverged or degraded: try a fresh start from the landmarks.
                again = self._initialise(frame, face, lm)
                if again.passed:
                    attempt, outcome = again, Outcome.INIT_PASSED
                    self._history.clear()
                    self.tre.reset()
        else:
            attempt = self._initialise(frame, face, lm)
            outcome = Outcome.INIT_PASSED if attempt.passed else Outcome.INIT_FAILED

        state = self.machine.update(outcome)
        if state in (RegistrationState.SEARCHING, RegistrationState.LOST):
            self._history.clear()
            self.tre.reset()
            pose = None
        else:
            pose = attempt.pose
            if pose is not None and attempt.icp is not None:
                self._history = [*self._history[-1:], (now, pose)]
                self.tre.observe(now, pose)
        if state in (RegistrationState.REGISTERED, RegistrationState.TRACKING):
            self._registered_s = now
        attempt.quality.reasons = attempt.reasons
        result.registration = RegistrationResult(
            state, pose, attempt.quality, self._registered_s, candidate_to_camera=attempt.pose
        )

    # ------------------------------------------------------------------ steps

    def _landmark_fit(self, frame: Frame, face: Face) -> _LandmarkFit | None:
        """The paired-point fit of the landmarks on skin: one whose pixel is drape-coloured
        is left out, as the surface fit leaves out the drape's pixels."""
        names, plan_pts, cam_pts, rows = self._pairs.rows(
            face.landmarks_camera_m, face.landmarks_valid
        )
        if self._drape_chroma is not None and names:
            px = face.landmarks_px[rows, :2]  # the rows of LANDMARK_INDEX[n] for n in names
            skin = ~drape_coloured(frame.color, frame.color_format, px, self._drape_chroma)
            if not skin.all():
                names = [n for n, k in zip(names, skin, strict=True) if k]
                plan_pts, cam_pts = plan_pts[skin], cam_pts[skin]
        cam_pts = correct_skin_depth(cam_pts, self._skin_bias_m)
        whole = self._fit(names, plan_pts, cam_pts)
        keep = [i for i, n in enumerate(names) if n not in LOWER_FACE_LANDMARKS]
        if whole is not None and len(keep) < len(names):
            whole.make_upper = lambda: self._fit(
                [names[i] for i in keep], plan_pts[keep], cam_pts[keep]
            )
        return whole

    def _fit(
        self, names: list[str], plan_pts: np.ndarray, cam_pts: np.ndarray
    ) -> _LandmarkFit | None:
        if len(names) < 4:
            return None
        weights = np.array([0.5 if n in MOBILE_LANDMARKS else 1.0 for n in names])
        try:
            fit = robust_rigid_transform(
                plan_pts,
                cam_pts,
                inlier_threshold_mm=self.config.landmark_inlier_mm,
                weights=weights,
            )
        except RegistrationError:
            return None
        return _LandmarkFit(fit, names, plan_pts, cam_pts, weights)

    def _warm_start(self, now_s: float, lm: _LandmarkFit | None) -> np.ndarray:
        """The predicted pose, unless this frame's landmarks put the head clearly elsewhere
        (fast motion, a missed frame): then the landmark pose, which is within a few
        millimetres and well inside ICP's basin."""
        predicted = self._predict(now_s)
        c = self.config
        if lm is None:
            return predicted
        for f in _fits(lm):  # the upper face's fit is made only when all landmarks disagree
            moved_mm, turned_deg = pose_difference(
                f.fit.source_to_target, predicted, self._agreement_point
            )
            if moved_mm <= c.max_landmark_surface_mm and turned_deg <= c.max_landmark_surface_deg:
                return predicted  # the landmarks (all, or the upper face's) agree
        return lm.fit.source_to_target

    def _predict(self, now_s: float) -> np.ndarray:
        """Constant-velocity prediction of the pose at ``now_s`` from the last two."""
        if not self._history:  # pragma: no cover - a pose always comes with its history
            raise RegistrationError("no pose to warm-start from", "initialise from landmarks")
        t1, last = self._history[-1]
        if len(self._history) < 2:
            return last
        t0, before = self._history[-2]
        dt = t1 - t0
        if dt <= 0:
            return last
        return extrapolate_pose(c_array(before), c_array(last), min((now_s - t1) / dt, 3.0))

    def _initialise(self, frame: Frame, face: Face, lm: _LandmarkFit | None) -> _Attempt:
        c = self.config
        if lm is None:
            q = RegistrationQuality()
            q.failed_gates = ["landmarks"]
            return _Attempt(None, q, False, reasons=["fewer than 4 plan landmarks tracked"])
        cloud = self._cloud(frame, face, c.init_cloud_points)
        best: _Attempt | None = None
        # Start from the pose of all landmarks, then (if that fails) of the upper face's.
        for start in _fits(lm):
            attempt = self._evaluate(
                frame,
                cloud,
                start.fit.source_to_target,
                lm,
                max_iterations=c.init_max_iterations,
                gate_mm=c.init_gate_mm,
                tolerance=INIT_TOLERANCE,
                require_landmarks=True,
            )
            if (
                best is None
                or attempt.passed
                or attempt.quality.inlier_fraction > (best.quality.inlier_fraction)
            ):
                best = attempt
            if best.passed:
                break
        assert best is not None
        return best

    def _track(
        self, frame: Frame, face: Face, lm: _LandmarkFit | None, predicted: np.ndarray
    ) -> _Attempt:
        c = self.config
        cloud = self._cloud(frame, face, c.track_cloud_points)
        return self._evaluate(
            frame,
            cloud,
            predicted,
            lm,
            max_iterations=c.track_max_iterations,
            gate_mm=c.track_gate_mm,
            tolerance=TRACK_TOLERANCE,
            require_landmarks=False,
        )

    def _cloud(self, frame: Frame, face: Face, max_points: int) -> FaceCloud:
        """The depth cloud of the rigid upper face, drape-coloured pixels left out."""
        return region_cloud(
            frame,
            face.landmarks_px,
            max_points,
            self._skin_bias_m,
            RIGID_FACE_HULL,
            self._drape_chroma,
        )

    def _evaluate(
        self,
        frame: Frame,
        face_cloud: FaceCloud,
        start: np.ndarray,
        lm: _LandmarkFit | None,
        *,
        max_iterations: int,
        gate_mm: float,
        tolerance: float,
        require_landmarks: bool,
    ) -> _Attempt:
        c = self.config
        q = RegistrationQuality()
        icp: IcpResult | None = None
        pose = start
        reasons: list[str] = []
        cloud = face_cloud.points_m
        relief = relief_mm(cloud)
        if len(cloud) < c.min_cloud_points or relief < c.min_relief_mm:
            # Cheap gates first: a photograph or an empty view never costs an ICP.
            if len(cloud) < c.min_cloud_points:
                reasons.append(f"only {len(cloud)} depth points on the face")
                q.failed_gates.append("cloud_points")
            if relief < c.min_relief_mm:
                reasons.append(f"face depth is flat (relief {relief:.1f} mm)")
                q.failed_gates.append("relief")
            return _Attempt(pose, q, False, None, reasons)
        try:
            icp = icp_point_to_plane(
                self.skin,
                cloud,
                start,
                max_iterations=max_iterations,
                initial_gate_mm=gate_mm,
                min_gate_mm=c.min_gate_mm,
                inlier_mm=c.inlier_mm,
                occlusion_mm=c.occlusion_mm,
                tolerance_mm=tolerance,
                tolerance_deg=tolerance,
            )
            pose = icp.patient_to_camera
            q.icp_rms_mm = icp.rms_mm
            q.inlier_fraction = icp.inlier_fraction
            if icp.residuals_mm is not None:
                q.surface_shape_mm = systematic_residual_mm(cloud, icp.residuals_mm)
            visible = icp.points * (1.0 - icp.occluded_fraction)
            q.rigid_evidence_fraction = icp.inlier_fraction * visible / max(face_cloud.sampled, 1)
            q.regions_used = _regions_used(icp, face_cloud)
        except RegistrationError as exc:
            reasons.append(f"surface fit failed: {exc.problem}")
            q.failed_gates.append("surface_fit")

        if lm is not None:
            # Compare with the landmark fit that agrees best: all landmarks, or the upper
            # face's alone when a drape has pushed the lower ones off the skin.
            fits = [lm]
            diffs = [pose_difference(lm.fit.source_to_target, pose, self._agreement_point)]
            if (
                diffs[0][0] > c.max_landmark_surface_mm or diffs[0][1] > c.max_landmark_surface_deg
            ) and lm.upper is not None:
                fits.append(lm.upper)
                diffs.append(
                    pose_difference(lm.upper.fit.source_to_target, pose, self._agreement_point)
                )
            k = min(range(len(fits)), key=lambda i: diffs[i])
            q.fre_mm = fits[k].fit.fre_mm
            q.landmark_surface_translation_mm, q.landmark_surface_rotation_deg = diffs[k]
            # The TRE estimate uses the configuration of every landmark paired this frame.
            used = lm.names
            inliers = int(fits[k].fit.inliers.sum())
            fle_seen = fle_from_fre_mm(q.fre_mm, inliers)
            fle = max(c.fle_mm, fle_seen) if math.isfinite(fle_seen) else c.fle_mm
            if (
                q.landmark_surface_translation_mm > c.max_landmark_surface_mm
                or q.landmark_surface_rotation_deg > c.max_landmark_surface_deg
            ):
                # Only then does the gate ask the likelihood-ratio test (quality.check_gates).
                # Its FLE is configured, not taken from this frame's FRE: landmarks that fit
                # badly must not make the test loose.
                test_fle = c.landmark_check_fle_mm
                q.landmark_surface_chi2 = _landmark_excess_chi2(fits[k], pose, test_fle)
                inl = fits[k].fit.inliers
                q.landmark_blind_mm = landmark_blind_spot_mm(
                    fits[k].plan_m[inl],
                    fits[k].weights[inl],
                    self._targets_m if len(self._targets_m) else self._agreement_point[None],
                    test_fle,
                    LANDMARK_SURFACE_CHI2,
                )
        else:
            used = list(self.plan.landmarks)
            fle = c.fle_mm
        if len(self._targets_m) and len(used) >= 3:
            # The landmark-only figure: a cross-check of the landmark layout, not gated.
            key = tuple(used)
            geometry_of = self._fitzpatrick.get(key)
            if geometry_of is None:
                if len(self._fitzpatrick) >= FITZPATRICK_LAYOUTS:
                    self._fitzpatrick.clear()
                fiducials = np.stack([self.plan.landmarks[n] for n in used])
                geometry_of = fitzpatrick_geometry(fiducials, self._targets_m)
                self._fitzpatrick[key] = geometry_of
            tre = fitzpatrick_from_geometry(geometry_of, fle)
            q.landmark_tre_mm = {n: float(v) for n, v in zip(self._target_names, tre, strict=True)}
        if len(self._targets_m) and icp is not None:
            tre = self.tre.estimate_mm(
                icp,
                cloud,
                frame.intrinsics.fx,
                frame.capture_s,
                tracking=not require_landmarks,
                region=face_cloud.region,
                min_region_points=REGION_MIN_POINTS,
            )
            q.tre_mm = {n: float(v) for n, v in zip(self._target_names, tre, strict=True)}

        failed = check_gates(
            q,
            self.gates,
            occluded_fraction=icp.occluded_fraction if icp else 1.0,
            relief=relief,
            cloud_points=len(cloud),
            require_landmarks=require_landmarks,
        )
        reasons += failed.values()
        q.failed_gates += failed.keys()
        return _Attempt(pose, q, not reasons, icp, reasons)


def _camera_numbers_usable(frame: Frame) -> bool:
    """The numbers that lift and project pixels are finite, and focal lengths and the
    depth scale positive (a damaged recording or driver can give anything)."""
    intr = frame.intrinsics
    numbers = (intr.fx, intr.fy, intr.ppx, intr.ppy, frame.depth_scale_m)
    return all(math.isfinite(v) for v in numbers) and min(intr.fx, intr.fy, frame.depth_scale_m) > 0


def _landmark_excess_chi2(lm: _LandmarkFit, pose: np.ndarray, fle_mm: float) -> float:
    """How much worse the surface pose explains the paired landmarks than their own best
    fit does, in units of the landmark localisation error: 3 (SSR_surface - SSR_fit) /
    FLE^2 over the fit's inliers, with each square weighted as in the fit (a landmark of
    weight w has variance FLE^2 / w), chi-square with 6 degrees of freedom when the
    surface pose is right (a likelihood-ratio test; FLE is an RMS 3-D error, hence the 3).

    A few landmarks in a poor layout (the eyes and the nasion, under a drape) fix the
    pose loosely: their own fit may lie degrees from the surface's while both explain
    them equally well. A surface fit that slid off explains them worse, unless it slid
    where the layout is blind (:func:`~edge.registration.quality.landmark_blind_spot_mm`).
    """
    inl = lm.fit.inliers
    w = lm.weights[inl]
    surface = geometry.apply(pose, lm.plan_m[inl]) - lm.camera_m[inl]
    ssr_surface = float(w @ (surface**2).sum(axis=1)) * 1e6
    ssr_fit = float(w @ lm.fit.residuals_mm[inl] ** 2)
    return 3.0 * max(ssr_surface - ssr_fit, 0.0) / fle_mm**2


def _regions_used(icp: IcpResult, cloud: FaceCloud) -> list[str]:
    """The rigid face's regions the fit rests on: enough of their pixels are skin inliers."""
    if icp.inliers is None:
        return []
    inliers = np.bincount(cloud.region[icp.inliers], minlength=len(REGION_NAMES))
    share = inliers / np.maximum(cloud.sampled_per_region, 1)
    return [
        name
        for name, n, f in zip(REGION_NAMES, inliers.tolist(), share.tolist(), strict=True)
        if n >= REGION_MIN_POINTS and f >= REGION_USED_FRACTION
    ]


class PlanRefusedStage:
    """Stage ``registration`` when no plan could be loaded: the edge keeps running in a
    safe state, every frame SEARCHING with no pose (so nothing is overlaid) and the
    refusal as the reason."""

    name = "registration"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def process(self, result: FrameResult) -> None:
        result.registration = RegistrationResult(
            RegistrationState.SEARCHING, None, RegistrationQuality(reasons=[self.reason])
        )
