"""Accuracy of the pipeline against ground truth (phantom or other synthetic input).

Pure functions over per-frame records; ``edge bench`` and the end-to-end tests
use them. Every error is reported in the units its name says.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from edge import geometry
from edge.frames import FrameResult
from edge.registration.quality import GATE_NAMES
from edge.registration.types import RegistrationState
from edge.transport.prediction import PoseVelocity, predict_points

# The truth's line between an acceptable and an inaccurate pose for the gate tables, and
# the error below which a refusal is a false refusal of an accurate frame.
INACCURATE_TRE_MM = 2.0
ACCURATE_TRE_MM = 1.0
CURRENT_TRE_LINES_MM = (2, 3, 5)  # edge bench counts TRACKING frames past each line
# Horizons past capture at which the published pose, extrapolated with its velocity, is
# compared with the truth then (a headset's display time); and the longest gap between two
# truth frames that the truth is interpolated over.
PREDICTION_HORIZONS_MS = (30, 60)
MAX_TRUTH_GAP_S = 0.1


def percentiles(values: Iterable[float], *qs: float) -> dict[str, float]:
    """Named percentiles (``p50`` ...) of the finite values; NaN when there are none."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    out = {}
    for q in qs:
        key = f"p{q:g}"
        out[key] = float(np.percentile(arr, q)) if arr.size else float("nan")
    return out


def landmark_offsets_px(estimated_px: np.ndarray, true_px: np.ndarray) -> np.ndarray:
    """Per-landmark 2-D offset, estimated minus true, in pixels: (N, 2) float64 (estimated may
    carry a third column). Its rows' norms are the landmark errors."""
    est = np.asarray(estimated_px, dtype=np.float64)
    return est[:, :2] - np.asarray(true_px, dtype=np.float64)[:, :2]


def landmark_offsets_m(
    estimated_m: np.ndarray, valid: np.ndarray | None, true_m: np.ndarray
) -> np.ndarray:
    """Per-landmark 3-D offset, estimated minus true, in metres: (K, 3) float64, for the
    landmarks flagged valid and estimated (finite). Its rows' norms are the landmark errors."""
    est = np.asarray(estimated_m, dtype=np.float64)
    mask = np.isfinite(est).all(axis=1)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    return est[mask] - np.asarray(true_m, dtype=np.float64)[mask]


@dataclass
class PoseErrors:
    """Errors of one estimated pose against the true one."""

    tre_mm: dict[str, float]  # per target: distance between where the target is shown and is
    rotation_deg: float
    translation_mm: float


def pose_errors(
    estimated_patient_to_camera: np.ndarray,
    true_patient_to_camera: np.ndarray,
    targets_m: dict[str, np.ndarray],
) -> PoseErrors:
    """Target registration error at each plan target, and the pose's rotation/translation error.

    The translation error is measured at the centroid of the targets (not at the
    plan's origin, which may lie far from the anatomy). One pose of :func:`pose_error_arrays`.
    """
    names = list(targets_m)
    pts = np.array([targets_m[n] for n in names], dtype=np.float64).reshape(-1, 3)
    e = pose_error_arrays(
        np.asarray(estimated_patient_to_camera)[None], np.asarray(true_patient_to_camera)[None], pts
    )
    return PoseErrors(
        tre_mm=dict(zip(names, e.tre_mm[0].tolist(), strict=True)),
        rotation_deg=float(e.rotation_deg[0]),
        translation_mm=float(e.translation_mm[0]),
    )


@dataclass
class PoseErrorArrays:
    """:class:`PoseErrors` of F poses: ``tre_mm`` (F, T), ``rotation_deg`` and
    ``translation_mm`` (F,); ``targets_camera_m`` (F, T, 3): where each estimated pose puts
    the targets."""

    tre_mm: np.ndarray
    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    targets_camera_m: np.ndarray


def pose_error_arrays(
    estimated_patient_to_camera: np.ndarray,
    true_patient_to_camera: np.ndarray,
    targets_m: np.ndarray,
) -> PoseErrorArrays:
    """The errors of F estimated poses (F, 4, 4) against the true ones at targets (T, 3) (plan
    frame, metres), as :func:`pose_errors` defines them.

    Each figure is the one computed from that pose alone with :func:`edge.geometry.apply`,
    ``np.linalg.norm`` and :func:`edge.geometry.rotation_angle_deg` (the translation's norm
    is a dot product per pose, as ``np.linalg.norm`` of one vector is): the same to the bit
    on the machines measured, within rounding wherever a BLAS sums a stacked product in
    another order.
    """
    est_pose = np.asarray(estimated_patient_to_camera, dtype=np.float64).reshape(-1, 4, 4)
    true_pose = np.asarray(true_patient_to_camera, dtype=np.float64).reshape(-1, 4, 4)
    pts = np.asarray(targets_m, dtype=np.float64).reshape(-1, 3)

    def apply(poses: np.ndarray, points: np.ndarray) -> np.ndarray:
        # geometry.apply, one pose per leading index: points @ R.T + t.
        return points @ poses[:, :3, :3].transpose(0, 2, 1) + poses[:, None, :3, 3]

    est = apply(est_pose, pts)
    tre = np.linalg.norm(est - apply(true_pose, pts), axis=-1) * 1000.0
    r_err = est_pose[:, :3, :3].transpose(0, 2, 1) @ true_pose[:, :3, :3]
    centroid = pts.mean(axis=0, keepdims=True) if len(pts) else np.zeros((1, 3))
    t_err = apply(est_pose, centroid)[:, 0] - apply(true_pose, centroid)[:, 0]
    return PoseErrorArrays(
        tre_mm=tre,
        rotation_deg=np.array([geometry.rotation_angle_deg(r) for r in r_err], dtype=np.float64),
        translation_mm=np.array([math.sqrt(d.dot(d)) * 1000.0 for d in t_err], dtype=np.float64),
        targets_camera_m=est,
    )


def tre_estimate_calibration(estimate_mm: Sequence[float], true_mm: Sequence[float]) -> dict:
    """How the displayed TRE estimate compares with the true TRE over target-frames.

    ``coverage``: fraction of target-frames whose true TRE is at most the estimate;
    ``median_ratio``: median of estimate / true (how pessimistic it is);
    ``scale_for_95``: the factor the estimate would need for 95 % coverage (the 95th
    percentile of true / estimate; below 1 means it is more than needed).
    """
    est = np.asarray(estimate_mm, dtype=np.float64)
    true = np.asarray(true_mm, dtype=np.float64)
    ok = np.isfinite(est) & np.isfinite(true) & (true > 0)
    est, true = est[ok], true[ok]
    if not est.size:
        nan = float("nan")
        return {"coverage": nan, "median_ratio": nan, "scale_for_95": nan, "target_frames": 0}
    return {
        "coverage": float(np.mean(true <= est)),
        "median_ratio": float(np.median(est / true)),
        "scale_for_95": float(np.percentile(true / np.maximum(est, 1e-12), 95)),
        "target_frames": int(est.size),
    }


def gate_confusion(records: Sequence[tuple[float, Sequence[str]]]) -> dict[str, dict]:
    """Per gate, its refusals against the truth, over frames with a fitted pose.

    ``records``: per frame (true TRE of the fitted pose, worst target, mm; the gates it
    failed). Counts ``refused_tre_gt2``, ``refused_tre_le2``, ``passed_tre_gt2``,
    ``passed_tre_le2`` (the truth's 2 mm line); ``catch_rate``: refused among frames
    with TRE > 2 mm; ``false_refusal_rate``: refused among frames with TRE < 1 mm (NaN
    without such frames). ``any`` is the frame refused by at least one gate.
    """
    out: dict[str, dict] = {}
    bad = [tre > INACCURATE_TRE_MM for tre, _ in records]
    good = [tre < ACCURATE_TRE_MM for tre, _ in records]
    for gate in (*GATE_NAMES, "any"):
        refused = [bool(g) if gate == "any" else gate in g for _, g in records]
        pairs = list(zip(refused, bad, good, strict=True))
        n_bad, n_good = sum(bad), sum(good)
        caught = sum(1 for r, b, _ in pairs if r and b)
        false = sum(1 for r, _, a in pairs if r and a)
        out[gate] = {
            "refused_tre_gt2": caught,
            "refused_tre_le2": sum(1 for r, b, _ in pairs if r and not b),
            "passed_tre_gt2": sum(1 for r, b, _ in pairs if not r and b),
            "passed_tre_le2": sum(1 for r, b, _ in pairs if not r and not b),
            "catch_rate": caught / n_bad if n_bad else float("nan"),
            "false_refusal_rate": false / n_good if n_good else float("nan"),
        }
    return out


def jitter_mm(target_positions_camera_m: Sequence[np.ndarray]) -> float:
    """Standard deviation (3-D, millimetres) of target positions over frames of a static scene.

    ``target_positions_camera_m`` holds one (T, 3) array per frame. The result is
    the largest over the targets of sqrt(trace(covariance)).
    """
    if len(target_positions_camera_m) < 2:
        return float("nan")
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in target_positions_camera_m])
    per_target = np.sqrt(stack.var(axis=0).sum(axis=1)) * 1000.0
    return float(per_target.max())


# Timing percentiles cover the latest 5 minutes at 30 fps (about 2 MB at most): `edge run`
# lasts a whole theatre day, and keeping every frame's timings grew its memory without
# bound (the soak showed ~270 bytes per frame); the metrics endpoint has the long view.
TIMING_WINDOW = 9_000


@dataclass
class PredictionCheck:
    """Error at the targets of current poses extrapolated to a display time, against the truth.

    For each current pose with a velocity: the targets where the pose puts
    them, moved by the velocity over each horizon (docs/protocol.md, the
    client's extrapolation), against the true targets at capture + horizon,
    linearly interpolated between the two truth frames around that time
    (on nod-shake, at most ~0.01 mm from the true arc at 30 fps). The same
    without moving them is the error of not predicting.
    """

    shown: list[tuple[float, np.ndarray, PoseVelocity]] = field(default_factory=list)
    truth: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def add(
        self,
        capture_s: float,
        true_patient_to_camera: np.ndarray | None,
        shown_patient_to_camera: np.ndarray | None,
        velocity: PoseVelocity | None,
    ) -> None:
        if true_patient_to_camera is not None:
            self.truth.append((capture_s, np.asarray(true_patient_to_camera, dtype=np.float64)))
        if shown_patient_to_camera is not None and velocity is not None:
            self.shown.append((capture_s, shown_patient_to_camera, velocity))

    def _true_points(
        self, times: np.ndarray, at_s: float, targets: np.ndarray
    ) -> np.ndarray | None:
        """The targets where the truth has them at ``at_s``; ``times``: the sorted truth's."""
        after = int(np.searchsorted(times, at_s))
        if after == 0 or after >= len(times) or times[after] - times[after - 1] > MAX_TRUTH_GAP_S:
            return None
        (t0, p0), (t1, p1) = self.truth[after - 1], self.truth[after]
        w = (at_s - t0) / (t1 - t0)
        return (1.0 - w) * geometry.apply(p0, targets) + w * geometry.apply(p1, targets)

    def summary(self, targets_m: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
        """``prediction_error_mm`` and ``unpredicted_error_mm``: per horizon (ms, as a string)
        ``median``, ``p95`` over target-frames and ``target_frames``."""
        self.truth.sort(key=lambda item: item[0])
        times = np.array([t for t, _ in self.truth])
        out: dict[str, dict[str, dict[str, float]]] = {
            "prediction_error_mm": {},
            "unpredicted_error_mm": {},
        }
        for horizon_ms in PREDICTION_HORIZONS_MS:
            dt = horizon_ms / 1000.0
            predicted: list[float] = []
            still: list[float] = []
            for capture_s, pose, velocity in self.shown:
                true = self._true_points(times, capture_s + dt, targets_m)
                if true is None:
                    continue
                shown = geometry.apply(pose, targets_m)
                moved = predict_points(shown, velocity, dt)
                predicted.extend(np.linalg.norm(moved - true, axis=1) * 1000.0)
                still.extend(np.linalg.norm(shown - true, axis=1) * 1000.0)
            for key, errors in (
                ("prediction_error_mm", predicted),
                ("unpredicted_error_mm", still),
            ):
                p = percentiles(errors, 50, 95)
                out[key][str(horizon_ms)] = {
                    "median": p["p50"],
                    "p95": p["p95"],
                    "target_frames": len(errors),
                }
        return out


@dataclass
class RunStats:
    """Accumulates per-frame figures for a summary (timings: the latest ``window`` frames)."""

    window: int = TIMING_WINDOW
    stage_ms: dict[str, deque[float]] = field(default_factory=dict)
    end_to_end_ms: deque[float] = field(default_factory=deque)
    # Per frame, the sum of its stage times (source read included): the host's work on it.
    frame_ms: deque[float] = field(default_factory=deque)
    # Per landmark-model inference, the runner's own call (TrackingResult.landmark_model_ms).
    landmark_model_ms: deque[float] = field(default_factory=deque)
    states: dict[str, int] = field(default_factory=dict)
    failed_frames: int = 0

    def __post_init__(self) -> None:
        self.end_to_end_ms = deque(self.end_to_end_ms, maxlen=self.window)
        self.frame_ms = deque(self.frame_ms, maxlen=self.window)
        self.landmark_model_ms = deque(self.landmark_model_ms, maxlen=self.window)

    def add(
        self,
        stage_ms: dict[str, float],
        end_to_end_ms: float,
        state: str | None,
        landmark_model_ms: Iterable[float] = (),
        part_ms: dict[str, float] | None = None,
    ) -> None:
        # A part of a stage run side by side (FrameResult.part_ms) is listed under its own
        # name too, but only the stage holding it counts towards the frame's time.
        for name, ms in [*stage_ms.items(), *(part_ms or {}).items()]:
            self.stage_ms.setdefault(name, deque(maxlen=self.window)).append(ms)
        self.end_to_end_ms.append(end_to_end_ms)
        self.frame_ms.append(sum(stage_ms.values()))
        self.landmark_model_ms.extend(landmark_model_ms)
        if state is not None:
            self.states[state] = self.states.get(state, 0) + 1

    def stage_summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {k + "_ms": v for k, v in percentiles(ms, 50, 99).items()}
            for name, ms in self.stage_ms.items()
        }

    def state_fractions(self) -> dict[str, float]:
        total = sum(self.states.values())
        return {s: n / total for s, n in sorted(self.states.items())} if total else {}


class FittedFrame(NamedTuple):
    """A frame with a fitted pose and the face in view, as the TRE estimate and gate tables
    need it."""

    pose: np.ndarray  # the fitted pose (candidate_to_camera), refused or not
    true_pose: np.ndarray
    tracking: bool  # the frame ended TRACKING
    failed_gates: list[str]
    estimate_mm: list[float] | None  # the TRE estimate shown, per target; None: none shown


@dataclass
class Evaluator:
    """Collects per-frame timing, states and (with ground truth) accuracy of a run.

    Feed it every :class:`~edge.frames.FrameResult` with :meth:`consume` (it is a sink); read the
    figures with :meth:`summary`. ``targets_m`` are the plan's targets (plan
    frame, metres); without them no registration accuracy is computed.

    A frame with ground truth leaves its landmark offsets and references to its poses (4x4
    arrays no stage changes after the frame); :meth:`summary` computes the errors of all
    frames together (:func:`pose_error_arrays`). A frame without truth (live)
    leaves nothing but its timings.
    """

    targets_m: dict[str, np.ndarray] = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)
    frames: int = 0
    # Per frame with the face tracked: its landmark offsets (px, of the landmarks seen; m, of
    # those also valid).
    lm_offsets_px: list[np.ndarray] = field(default_factory=list)
    lm_offsets_m: list[np.ndarray] = field(default_factory=list)
    # Per TRACKING frame, face in view: (its pose, the true pose).
    tracked: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    visible: list[bool] = field(default_factory=list)
    states: list[RegistrationState | None] = field(default_factory=list)
    first_visible_s: float | None = None
    time_to_register_ms: float = float("nan")
    fitted: list[FittedFrame] = field(default_factory=list)
    prediction: PredictionCheck = field(default_factory=PredictionCheck)

    name: ClassVar[str] = "evaluation"

    def consume(self, result: FrameResult) -> None:
        """Account for one processed frame."""
        self.frames += 1
        reg = result.registration
        state = reg.state if reg is not None else None
        state_name = state.value if state is not None else None
        model_ms = result.tracking.landmark_model_ms if result.tracking is not None else ()
        self.stats.add(result.stage_ms, result.end_to_end_ms, state_name, model_ms, result.part_ms)
        if result.failed:
            self.stats.failed_frames += 1
        truth = result.frame.truth
        if truth is None:
            return  # live frames: nothing per frame is kept (memory stays flat)
        self.states.append(state)
        visible = bool(truth.face_visible)
        self.visible.append(visible)
        face = result.tracking.patient if result.tracking is not None else None
        if visible and self.first_visible_s is None:
            self.first_visible_s = result.received_s
        if face is not None and visible and truth.landmarks_px is not None:
            visible_lm = truth.landmarks_visible
            seen = None if visible_lm is None else np.asarray(visible_lm, dtype=bool)
            offsets = landmark_offsets_px(face.landmarks_px, truth.landmarks_px)
            self.lm_offsets_px.append(offsets if seen is None else offsets[seen])
            if face.landmarks_camera_m is not None and truth.landmarks_camera_m is not None:
                valid = face.landmarks_valid
                if seen is not None:
                    valid = seen if valid is None else seen & valid
                self.lm_offsets_m.append(
                    landmark_offsets_m(face.landmarks_camera_m, valid, truth.landmarks_camera_m)
                )
        if not self.targets_m:
            return
        tracking = state is RegistrationState.TRACKING
        if reg is not None and visible and reg.candidate_to_camera is not None:
            shown = reg.shown_tre_mm
            estimate = (
                [shown.get(name, math.nan) for name in self.targets_m]
                if shown and reg.patient_to_camera is not None
                else None
            )
            self.fitted.append(
                FittedFrame(
                    reg.candidate_to_camera,
                    truth.patient_to_camera,
                    tracking,
                    list(reg.quality.failed_gates),
                    estimate,
                )
            )
        overlay = result.overlay
        self.prediction.add(
            result.frame.capture_s,
            truth.patient_to_camera if visible else None,
            overlay.patient_to_camera if overlay is not None else None,
            overlay.velocity if overlay is not None else None,
        )
        if tracking and reg is not None and reg.patient_to_camera is not None and visible:
            self.tracked.append((reg.patient_to_camera, truth.patient_to_camera))
            if math.isnan(self.time_to_register_ms) and self.first_visible_s is not None:
                self.time_to_register_ms = (result.done_s - self.first_visible_s) * 1000.0

    def _targets_array(self) -> np.ndarray:
        """The plan's targets (T, 3), in the order of ``targets_m``."""
        return np.array(list(self.targets_m.values()), dtype=np.float64).reshape(-1, 3)

    def _estimate_and_gates(self) -> dict[str, Any]:
        """The TRE estimate against the truth (poses shown) and each gate's decision against
        the truth (every fitted pose, refused or not), from the fitted poses."""
        true = pose_error_arrays(
            _stacked([f.pose for f in self.fitted]),
            _stacked([f.true_pose for f in self.fitted]),
            self._targets_array(),
        ).tre_mm.tolist()
        worst = [max(row, default=0.0) for row in true]  # per fitted frame, its worst target
        current = [w for w, f in zip(worst, self.fitted, strict=True) if f.tracking]
        estimates = [
            (e, t)
            for row, f in zip(true, self.fitted, strict=True)
            if f.estimate_mm is not None
            for e, t in zip(f.estimate_mm, row, strict=True)
        ]
        calibration = tre_estimate_calibration([e for e, _ in estimates], [t for _, t in estimates])
        return {
            "tre_estimate_calibration": calibration,
            "gates": gate_confusion(
                [(w, f.failed_gates) for w, f in zip(worst, self.fitted, strict=True)]
            ),
            "current_frames_tre_over_2mm": sum(1 for w in current if w > INACCURATE_TRE_MM),
            "current_frames_tre_over_mm": {
                str(line): sum(1 for w in current if w > line) for line in CURRENT_TRE_LINES_MM
            },
            "tre_above_estimate_fraction": (
                1.0 - calibration["coverage"] if calibration["target_frames"] else float("nan")
            ),
        }

    def _transition_latencies(self) -> dict[str, float]:
        """Frames from the face leaving to LOST, and from its return to TRACKING (worst case)."""
        lost: list[float] = []
        back: list[float] = []
        for i in range(1, len(self.visible)):
            if self.visible[i - 1] == self.visible[i]:
                continue
            wanted = (
                (RegistrationState.LOST, RegistrationState.SEARCHING)
                if not self.visible[i]
                else (RegistrationState.TRACKING,)
            )
            later = [j for j in range(i, len(self.states)) if self.states[j] in wanted]
            latency = float(later[0] - i) if later else float("inf")
            (lost if not self.visible[i] else back).append(latency)
        return {
            "frames_to_lost": max(lost) if lost else float("nan"),
            "frames_to_tracking_after_return": max(back) if back else float("nan"),
        }

    def summary(self) -> dict[str, Any]:
        """The figures ``edge run`` and ``edge bench`` report (documented in docs/benchmark.md)."""
        e2e = percentiles(self.stats.end_to_end_ms, 50, 95, 99)
        out: dict[str, Any] = {
            "frames": self.frames,
            "failed_frames": self.stats.failed_frames,
            "stages": self.stats.stage_summary(),
            "end_to_end_ms": e2e,
            "frame_ms": percentiles(self.stats.frame_ms, 50, 99),
            "landmark_model_ms": percentiles(self.stats.landmark_model_ms, 50, 99),
            "state_fractions": self.stats.state_fractions(),
        }
        if self.visible:
            px = percentiles(np.linalg.norm(_joined(self.lm_offsets_px, 2), axis=1), 50, 95)
            m = np.linalg.norm(_joined(self.lm_offsets_m, 3), axis=1)
            mm = percentiles(m * 1000.0, 50, 95)
            out["landmark_error_px"] = {"median": px["p50"], "p95": px["p95"]}
            out["landmark_error_mm"] = {"median": mm["p50"], "p95": mm["p95"]}
        if self.visible and self.targets_m:
            e = pose_error_arrays(
                _stacked([p for p, _ in self.tracked]),
                _stacked([t for _, t in self.tracked]),
                self._targets_array(),
            )
            tre = e.tre_mm.ravel()
            rot = percentiles(e.rotation_deg, 50, 95)
            trans = percentiles(e.translation_mm, 50, 95)
            out["tre_mm"] = {
                "mean": float(tre.mean()) if tre.size else float("nan"),
                "p95": percentiles(tre, 95)["p95"],
                "max": float(tre.max()) if tre.size else float("nan"),
            }
            out["rotation_error_deg"] = {"median": rot["p50"], "p95": rot["p95"]}
            out["translation_error_mm"] = {"median": trans["p50"], "p95": trans["p95"]}
            out["jitter_mm"] = jitter_mm(list(e.targets_camera_m))
            out["time_to_register_ms"] = self.time_to_register_ms
            out.update(self._estimate_and_gates())
            out.update(self._transition_latencies())
            out.update(self.prediction.summary(self._targets_array()))
        return out


def _joined(arrays: list[np.ndarray], columns: int) -> np.ndarray:
    """Per-frame (K, columns) arrays, one after another (none: empty)."""
    return np.concatenate(arrays) if arrays else np.empty((0, columns))


def _stacked(poses: list[np.ndarray]) -> np.ndarray:
    """4x4 poses as one (F, 4, 4) float64 array (F may be 0)."""
    return np.array(poses, dtype=np.float64).reshape(-1, 4, 4)


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable end-of-run summary."""
    lines = [
        f"edge run: {summary['frames']} frames from {summary['source']}"
        f" in {summary['duration_s']:.1f} s ({summary['fps']:.1f} fps),"
        f" stopped by {summary['stopped_by']}",
    ]
    if summary.get("plan"):
        signed = "signed" if summary["plan_signed"] else "UNSIGNED override"
        lines.append(f"plan: {summary['plan']} ({signed})")
    else:
        lines.append("plan: none (tracking only, no overlay)")
    e2e = summary["end_to_end_ms"]
    lines.append(
        f"end-to-end latency: p50 {e2e['p50']:.1f} ms, p95 {e2e['p95']:.1f} ms,"
        f" p99 {e2e['p99']:.1f} ms"
    )
    lines.append("stage            p50 ms   p99 ms")
    for name, s in summary["stages"].items():
        lines.append(f"  {name:<14}{s['p50_ms']:8.2f} {s['p99_ms']:8.2f}")
    if summary["state_fractions"]:
        states = ", ".join(f"{k} {v:.0%}" for k, v in summary["state_fractions"].items())
        lines.append(f"registration states: {states}")
    if "landmark_error_px" in summary:
        lp, lm = summary["landmark_error_px"], summary["landmark_error_mm"]
        lines.append(
            f"landmark error vs ground truth: median {lp['median']:.2f} px / {lm['median']:.2f} mm,"
            f" p95 {lp['p95']:.2f} px / {lm['p95']:.2f} mm"
        )
    if "tre_mm" in summary:
        t, r = summary["tre_mm"], summary["rotation_error_deg"]
        lines.append(
            f"target registration error vs ground truth: mean {t['mean']:.2f} mm,"
            f" p95 {t['p95']:.2f} mm, max {t['max']:.2f} mm;"
            f" rotation median {r['median']:.2f} deg"
        )
    calibration = summary.get("tre_estimate_calibration")
    if calibration and calibration["target_frames"]:
        lines.append(
            f"TRE estimate vs ground truth: true <= estimate in {calibration['coverage']:.1%}"
            f" of {calibration['target_frames']} target-frames, median estimate/true"
            f" {calibration['median_ratio']:.2f}"
        )
    if summary["failed_frames"]:
        lines.append(f"frames on which a stage failed: {summary['failed_frames']}")
    if "recording" in summary:
        rec = summary["recording"]
        if rec["path"]:
            lines.append(f"recording: {rec['frames']} frames sealed to {rec['path']}")
        else:
            lines.append(f"recording: none kept ({rec['stopped']})")
    if summary.get("publish_endpoint"):
        sent = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("published", {}).items()))
        lines.append(f"streamed on {summary['publish_endpoint']}: {sent}")
    return "\n".join(lines)
