"""The pose's velocity (overlay) and a client's extrapolation with it: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge import geometry
from edge.errors import DecodeError, StateError
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.overlay.demo import demo_plan, demo_registration
from edge.overlay.motion import VelocityEstimator
from edge.overlay.stage import OverlayStage
from edge.overlay.types import Overlay
from edge.registration.types import RegistrationState
from edge.transport.prediction import (
    VELOCITY_ARRAYS,
    PoseVelocity,
    predict_points,
    predict_pose,
)
from edge.transport.protocol import decode, encode, make_message
from support.fakes import overlay_payload

INTR = Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
CENTRE_PATIENT_M = np.array([0.01, -0.02, 0.03])
OMEGA_RAD_S = np.array([0.3, -0.8, 0.1])
V_M_S = np.array([0.02, -0.01, 0.05])
START = geometry.rotation_vector_to_matrix(np.array([0.1, 0.2, -0.1]))


def true_pose(t_s: float) -> np.ndarray:
    """The patient turning at OMEGA about CENTRE while CENTRE moves at V (camera frame)."""
    pose = np.eye(4)
    pose[:3, :3] = geometry.rotation_vector_to_matrix(OMEGA_RAD_S * t_s) @ START
    centre_0 = START @ CENTRE_PATIENT_M + np.array([0.0, 0.0, 0.5])
    pose[:3, 3] = centre_0 + V_M_S * t_s - pose[:3, :3] @ CENTRE_PATIENT_M
    return pose


def test_motion_is_identity_at_zero_and_turns_about_the_point():
    c = np.array([0.0, 0.0, 0.5])
    v = PoseVelocity(c, np.zeros(3), np.array([0.0, math.pi / 2, 0.0]))
    np.testing.assert_allclose(v.motion(0.0), np.eye(4), atol=1e-15)
    # A quarter turn about the y axis through c, in one second.
    moved = predict_points(np.array([c, c + np.array([0.1, 0.0, 0.0])]), v, 1.0)
    np.testing.assert_allclose(moved, [c, c + np.array([0.0, 0.0, -0.1])], atol=1e-12)
    pose = np.eye(4)
    pose[:3, 3] = c + np.array([0.1, 0, 0])
    np.testing.assert_allclose(
        predict_pose(pose, v, 1.0)[:3, 3], c + np.array([0.0, 0.0, -0.1]), atol=1e-12
    )
    back = PoseVelocity.from_arrays(v.to_arrays())
    assert back is not None and np.array_equal(back.angular_rad_s, v.angular_rad_s)
    assert PoseVelocity.from_arrays({}) is None


@pytest.mark.parametrize("frames", [2, 4, 8])
def test_constant_motion_is_recovered_and_extrapolates_exactly(frames):
    estimator = VelocityEstimator(frames, CENTRE_PATIENT_M)
    times = [10.0 + i / 30.0 for i in range(frames + 2)]
    velocities = [estimator.update(t, true_pose(t - 10.0)) for t in times]
    assert velocities[0] is None  # one pose: no motion yet
    v = velocities[-1]
    assert v is not None
    np.testing.assert_allclose(v.angular_rad_s, OMEGA_RAD_S, atol=1e-9)
    np.testing.assert_allclose(v.linear_m_s, V_M_S, atol=1e-9)
    last = true_pose(times[-1] - 10.0)
    np.testing.assert_allclose(v.point_camera_m, geometry.apply(last, CENTRE_PATIENT_M)[0])
    ahead = predict_pose(last, v, 0.06)
    np.testing.assert_allclose(ahead, true_pose(times[-1] - 10.0 + 0.06), atol=1e-9)


def test_history_restarts_on_a_pose_that_is_not_current_a_gap_or_time_going_back():
    estimator = VelocityEstimator(3, CENTRE_PATIENT_M)
    assert estimator.update(0.0, true_pose(0.0)) is None
    assert estimator.update(1 / 30, true_pose(1 / 30)) is not None
    assert estimator.update(2 / 30, None) is None  # not current: forgotten
    assert estimator.update(3 / 30, true_pose(3 / 30)) is None
    assert estimator.update(4 / 30, true_pose(4 / 30)) is not None
    assert estimator.update(0.5, true_pose(0.5)) is None  # a 0.37 s gap
    assert estimator.update(0.4, true_pose(0.4)) is None  # time went back (a loop)
    jumped = true_pose(0.45)
    jumped[:3, 3] += [0.08, 0.0, 0.0]  # 8 cm in 50 ms: 1.6 m/s, a re-initialisation
    assert estimator.update(0.45, jumped) is None
    with pytest.raises(StateError):
        VelocityEstimator(1, CENTRE_PATIENT_M)


def _frame(n: int) -> Frame:
    frame = Frame(n, np.zeros((480, 640, 3), np.uint8), PixelFormat.BGR8, None, 0.001, INTR)
    frame.device_timestamp_ms = 1000.0 + n * 1000.0 / 30.0
    frame.host_timestamp_s = 100.0
    return frame


def _overlays(stage: OverlayStage, states: list[RegistrationState]) -> list[Overlay]:
    """The stage's overlays of one frame per state, the pose moving 3 mm along x a frame
    (9 cm/s at 30 fps)."""
    overlays = []
    for n, state in enumerate(states):
        reg = demo_registration(state, registered_s=1.0)
        assert reg.patient_to_camera is not None
        reg.patient_to_camera[0, 3] = 0.003 * n
        result = FrameResult(_frame(n))
        result.registration = reg
        stage.process(result)
        assert result.overlay is not None
        overlays.append(result.overlay)
    return overlays


def test_the_stage_publishes_a_velocity_with_current_overlays_only():
    plan = demo_plan()
    stage = OverlayStage(plan, mono_clock=lambda: 100.0, wall_clock=lambda: 5000.0)
    centroid = np.mean(list(plan.targets.values()), axis=0)
    states = [RegistrationState.TRACKING] * 3 + [RegistrationState.DEGRADED]
    states += [RegistrationState.TRACKING] * 2
    sent = [
        decode(encode(make_message("overlay", *overlay.overlay_payload())))
        for overlay in _overlays(stage, states)
    ]
    with_velocity = [PoseVelocity.from_arrays(m.arrays) is not None for m in sent]
    assert with_velocity == [False, True, True, False, False, True]
    v = PoseVelocity.from_arrays(sent[2].arrays)
    assert v is not None
    np.testing.assert_allclose(v.linear_m_s, [0.09, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(v.angular_rad_s, 0.0, atol=1e-12)
    np.testing.assert_allclose(v.point_camera_m, centroid + np.array([0.006, 0.0, 0.5]), atol=1e-12)


def test_the_decoder_refuses_partial_stale_or_non_finite_velocities():
    payload = overlay_payload("TRACKING", True)
    velocity = PoseVelocity(np.zeros(3), np.ones(3), np.ones(3)).to_arrays()
    ok = {"patient_to_camera": np.eye(4), **velocity}
    assert set(VELOCITY_ARRAYS) <= set(decode(encode(make_message("overlay", payload, ok))).arrays)
    partial = {k: v for k, v in ok.items() if k != VELOCITY_ARRAYS[1]}
    with pytest.raises(DecodeError, match="velocity is incomplete"):
        decode(encode(make_message("overlay", payload, partial)))
    bad = {**ok, VELOCITY_ARRAYS[2]: np.array([0.0, math.nan, 0.0])}
    with pytest.raises(DecodeError, match="3 finite floats"):
        decode(encode(make_message("overlay", payload, bad)))
    wrong_shape = {**ok, VELOCITY_ARRAYS[0]: np.zeros(4)}
    with pytest.raises(DecodeError, match="3 finite floats"):
        decode(encode(make_message("overlay", payload, wrong_shape)))
    stale = dict(payload, state="DEGRADED", current=False)
    with pytest.raises(DecodeError, match="not current must not carry a velocity"):
        decode(encode(make_message("overlay", stale, ok)))


def _received_overlay(capture_unix_s: float, publish_unix_s: float, received_unix_s: float):
    from edge.transport.client import Received

    stage = OverlayStage(demo_plan(), mono_clock=lambda: 100.0, wall_clock=lambda: 5000.0)
    overlay = _overlays(stage, [RegistrationState.TRACKING] * 2)[-1]
    payload, arrays = overlay.overlay_payload()
    message = make_message("overlay", payload, arrays, capture_unix_s=capture_unix_s)
    message.header.publish_unix_s = publish_unix_s
    return Received(decode(encode(message)), received_unix_s), arrays


def test_a_client_extrapolates_to_its_display_time_on_either_clock():
    got, arrays = _received_overlay(1000.0, 1000.010, 2000.0)
    pose = arrays["patient_to_camera"]
    targets = arrays["targets_camera_m"]
    # Clocks in sync: 30 ms after capture moves the targets 2.7 mm along x.
    moved = got.predicted_targets_camera_m(1000.030)
    np.testing.assert_allclose(moved - targets, [[0.0027, 0, 0]] * len(targets), atol=1e-12)
    p = got.predicted_pose(1000.030)
    assert p is not None
    np.testing.assert_allclose(p[:3, 3] - pose[:3, 3], [0.0027, 0, 0], atol=1e-12)
    # Not in sync: 20 ms after receipt on the local clock is 30 ms after capture (published
    # 10 ms after it).
    unsynced = got.predicted_targets_camera_m(2000.020, clocks_synced=False)
    np.testing.assert_allclose(unsynced, moved, atol=1e-12)
    # Never back in time, never past the staleness limit.
    assert got.prediction_horizon_s(999.0) == 0.0
    assert got.prediction_horizon_s(1005.0) == pytest.approx(0.1)


def test_the_reference_viewer_moves_the_drawn_targets_by_the_prediction():
    from edge.transport.viewer import predicted_arrays

    got, arrays = _received_overlay(1000.0, 1000.0, 1000.0)
    moved = predicted_arrays(got, 1000.030)
    z = arrays["targets_camera_m"][:, 2]
    shift = moved["targets_px"] - arrays["targets_px"]
    np.testing.assert_allclose(shift[:, 0], 600.0 * 0.0027 / z, atol=1e-9)
    np.testing.assert_allclose(shift[:, 1], 0.0, atol=1e-9)
    assert not np.array_equal(moved["trajectories_px"], arrays["trajectories_px"])


def _fit_numpy(history):
    """The numpy velocity fit before its kernel: (capture_s, pose, point) per pose."""
    t_last, last, _ = history[-1]
    tau = np.array([t for t, _, _ in history]) - t_last
    points = np.stack([x for _, _, x in history])
    turns = np.zeros((len(tau), 3))
    for i, (_, pose, _) in enumerate(history[:-1]):
        axis, angle = geometry.matrix_to_axis_angle(pose[:3, :3] @ last[:3, :3].T)
        turns[i] = axis * angle
    centred = tau - tau.mean()
    spread = float(centred @ centred)
    linear = centred @ (points - points.mean(axis=0)) / spread
    angular = centred @ (turns - turns.mean(axis=0)) / spread
    return points[-1], linear, angular


@pytest.mark.parametrize("frames", [2, 4, 12])
def test_velocity_kernel_equals_the_numpy_fit(frames):
    """Issue 15: the compiled fit against the numpy one it replaced, on noisy poses with
    uneven frame times (1e-12: numpy's matrix products round differently)."""
    rng = np.random.default_rng(frames)
    estimator = VelocityEstimator(frames, CENTRE_PATIENT_M)
    history = []
    t = 2.0
    for step in range(30):
        t += rng.uniform(0.02, 0.05)
        pose = true_pose(t)
        pose[:3, :3] = geometry.rotation_vector_to_matrix(rng.normal(0, 2e-3, 3)) @ pose[:3, :3]
        pose[:3, 3] += rng.normal(0, 2e-4, 3)
        if step == 20:
            pose[:3, :3] = history[-1][1][:3, :3]  # no turn from the last pose: angle 0
        history = [*history, (t, pose, pose[:3, :3] @ CENTRE_PATIENT_M + pose[:3, 3])][-frames:]
        got = estimator.update(t, pose)
        if len(history) < 2:
            assert got is None
            continue
        point, linear, angular = _fit_numpy(history)
        np.testing.assert_array_equal(got.point_camera_m, point)
        np.testing.assert_allclose(got.linear_m_s, linear, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got.angular_rad_s, angular, rtol=1e-12, atol=1e-15)
