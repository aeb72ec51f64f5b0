"""The state machine, and the registration stage on synthetic sequences: static, motion,
leave and return, drape, a photograph and a different face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge import geometry
from edge.config import RegistrationConfig
from edge.errors import StateError
from edge.frames import FrameResult
from edge.plan.load import load_plan
from edge.registration.icp import SkinModel
from edge.registration.quality import pose_difference
from edge.registration.stage import RegistrationStage
from edge.registration.state import Outcome, RegistrationStateMachine
from edge.registration.types import RegistrationState
from edge.tracking.types import TrackingResult
from support import synthetic_face as syn

SEARCHING, REGISTERED, TRACKING, DEGRADED, LOST = (
    RegistrationState.SEARCHING,
    RegistrationState.REGISTERED,
    RegistrationState.TRACKING,
    RegistrationState.DEGRADED,
    RegistrationState.LOST,
)

# --------------------------------------------------------------------------- state machine


@pytest.mark.parametrize(
    "outcomes, states",
    [
        (["init_failed", "init_failed"], [SEARCHING, SEARCHING]),
        (["no_face"], [SEARCHING]),
        (["init_passed", "track_passed", "track_passed"], [REGISTERED, TRACKING, TRACKING]),
        (["init_passed", "track_failed", "track_passed"], [REGISTERED, DEGRADED, TRACKING]),
        (["init_passed", "track_passed", "no_face"], [REGISTERED, TRACKING, LOST]),
        (["init_passed", "no_face", "no_face", "init_failed"], [REGISTERED, LOST, LOST, LOST]),
        (
            ["init_passed", "no_face", "init_passed", "track_passed"],
            [REGISTERED, LOST, REGISTERED, TRACKING],
        ),
        (
            ["init_passed", "track_failed", "track_failed", "track_failed"],
            [REGISTERED, DEGRADED, DEGRADED, LOST],
        ),
        (["init_passed", "track_failed", "init_passed"], [REGISTERED, DEGRADED, REGISTERED]),
        (
            ["init_passed", "track_failed", "init_failed", "init_failed"],
            [REGISTERED, DEGRADED, DEGRADED, LOST],
        ),
    ],
)
def test_transitions(outcomes, states) -> None:
    machine = RegistrationStateMachine(confirm_frames=1, lost_after_frames=3)
    assert [machine.update(Outcome(o)) for o in outcomes] == states


def test_confirmation_frames() -> None:
    machine = RegistrationStateMachine(confirm_frames=2)
    got = [
        machine.update(o) for o in (Outcome.INIT_PASSED, Outcome.TRACK_PASSED, Outcome.TRACK_PASSED)
    ]
    assert got == [REGISTERED, REGISTERED, TRACKING]


def test_tracking_without_a_pose_is_a_state_error() -> None:
    machine = RegistrationStateMachine()
    with pytest.raises(StateError, match="initialise"):
        machine.update(Outcome.TRACK_PASSED)


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    folder = syn.write_plan(Path(tmp_path_factory.mktemp("plan")) / "plan")
    return load_plan(folder, allow_unsigned=True)


@pytest.fixture(scope="module")
def skin(plan) -> SkinModel:
    return SkinModel.from_mesh(plan.skin)


@pytest.fixture
def stage(plan, skin) -> RegistrationStage:
    # The synthetic face's depth is exact: no skin depth bias to correct.
    return RegistrationStage(plan, RegistrationConfig(skin_depth_bias_mm=0.0), skin=skin)


INTR = syn.default_intrinsics()
DENSE = syn.dense_surface_m(step_m=5e-4)
LANDMARKS = syn.all_landmarks_m()
BASE = syn.facing_pose(0.5)


def _frame(i: int, pose, surface=DENSE, landmarks=LANDMARKS, extra=None, present=True, depth=None):
    rng = np.random.default_rng(i)
    if depth is None:
        depth = syn.render_depth(surface, pose, INTR, extra)
    frame = syn.make_frame(i, depth, INTR, noise_m=0.0008, rng=rng)
    result = FrameResult(frame=frame)
    if present:
        result.tracking = syn.make_tracking(landmarks, pose, INTR, noise_m=0.0015, rng=rng)
    else:
        result.tracking = TrackingResult()
    return result


def _tre_mm(plan, estimate, truth) -> float:
    targets = np.stack(list(plan.targets.values()))
    a = geometry.apply(estimate, targets)
    b = geometry.apply(truth, targets)
    return float(np.linalg.norm(a - b, axis=1).max() * 1000)


def test_static_registers_then_tracks_accurately(stage, plan) -> None:
    states, tre, positions, covered = [], [], [], []
    for i in range(8):
        result = _frame(i, BASE)
        stage.process(result)
        reg = result.registration
        states.append(reg.state)
        if reg.patient_to_camera is not None:
            tre.append(_tre_mm(plan, reg.patient_to_camera, BASE))
            positions.append(reg.patient_to_camera[:3, :3] @ plan.targets["pituitary"])
            for name, target in plan.targets.items():
                shown = geometry.apply(reg.patient_to_camera, target)
                true = np.linalg.norm(shown - geometry.apply(BASE, target)) * 1000
                covered.append(true <= reg.quality.tre_mm[name])
    assert states[0] is REGISTERED and set(states[1:]) == {TRACKING}
    assert max(tre) < 1.0
    assert reg.quality.reasons == [] and reg.registered_s == pytest.approx(7 / 30)
    assert set(reg.quality.tre_mm) == set(plan.targets) == set(reg.quality.landmark_tre_mm)
    assert np.isfinite([reg.quality.icp_rms_mm, reg.quality.fre_mm]).all()
    # The shown estimate is the surface fit's: it bounds the true error here and is well
    # below the landmark-only figure, which stays as a separate cross-check.
    for name in plan.targets:
        assert 0.0 < reg.quality.tre_mm[name] < reg.quality.landmark_tre_mm[name]
    assert all(covered)  # measured: true 0.07-0.34 mm, estimate 0.30-0.48 mm
    assert reg.quality.failed_gates == [] and reg.candidate_to_camera is reg.patient_to_camera


def test_motion_is_tracked_with_warm_starts(stage, plan) -> None:
    states, tre = [], []
    for i in range(12):
        pose = syn.pose_from(np.array([0.0, 0.0, 2.5 * i]), np.array([0.004 * i, 0, 0]), BASE)
        result = _frame(i, pose)
        stage.process(result)
        states.append(result.registration.state)
        tre.append(_tre_mm(plan, result.registration.patient_to_camera, pose))
    assert states[0] is REGISTERED and set(states[1:]) == {TRACKING}
    assert max(tre) < 1.0


def test_leave_and_return(stage) -> None:
    present = [True] * 4 + [False] * 3 + [True] * 6
    states = []
    for i, here in enumerate(present):
        result = _frame(i, BASE, present=here)
        stage.process(result)
        states.append(result.registration.state)
        if not here:
            assert result.registration.patient_to_camera is None
    assert states[4] is LOST  # within one frame of leaving
    assert states[7] is REGISTERED
    back = states[7:]
    assert TRACKING in back[:5] and set(back[back.index(TRACKING) :]) == {TRACKING}


def test_frame_without_depth_is_lost_not_tracking(stage) -> None:
    stage.process(_frame(0, BASE))
    result = _frame(1, BASE)
    result.frame.depth = None
    stage.process(result)
    assert result.registration.state is LOST
    assert result.registration.quality.reasons == ["no depth in this frame"]


def test_drape_over_the_lower_face_still_tracks(stage, plan) -> None:
    lower = DENSE[:, 2] < -0.025  # the lower ~40 % of the face
    # A cloth 8 mm off the skin (the phantom's drape is an envelope 4-12 mm off).
    cloth = DENSE[lower] + [0.0, -0.008, 0.0]
    surface = np.concatenate([DENSE[~lower], cloth])
    landmarks = LANDMARKS.copy()
    covered = landmarks[:, 2] < -0.025
    landmarks[covered, 1] -= 0.008  # the tracker lifts them from the drape's depth
    states, tre = [], []
    for i in range(8):
        pose = syn.pose_from(np.array([0.0, 0.0, 3.0 * np.sin(i / 3)]), np.zeros(3), BASE)
        result = _frame(i, pose, surface=surface, landmarks=landmarks)
        stage.process(result)
        states.append(result.registration.state)
        if states[-1] in (REGISTERED, TRACKING):
            tre.append(_tre_mm(plan, result.registration.patient_to_camera, pose))
    # The landmarks under the drape mislead the first start; the upper face's then register.
    first = states.index(REGISTERED)
    assert first <= 2 and set(states[first + 1 :]) == {TRACKING}, states
    assert max(tre) < 1.0


def test_photograph_never_registers(stage) -> None:
    # A printed face held where the face would be: the landmarks are found (the
    # photo shows a face) but the depth is a plane.
    xs = np.arange(-0.12, 0.12, 5e-4)
    X, Y = np.meshgrid(xs, xs)
    plane = np.stack([X.ravel(), Y.ravel(), np.full(X.size, 0.42)], axis=1)
    depth = syn.render_depth(np.zeros((0, 3)), BASE, INTR, plane)
    for i in range(6):
        tilt = syn.pose_from(np.array([0.0, 0.0, 2.0 * i]), np.zeros(3), BASE)
        result = _frame(i, tilt, depth=depth)
        face = result.tracking.patient
        px = face.landmarks_px[:, :2]
        face.landmarks_camera_m = INTR.deproject(px, np.full(len(px), 0.42))
        stage.process(result)
        assert result.registration.state is SEARCHING
        assert result.registration.patient_to_camera is None
        assert any("flat" in r for r in result.registration.quality.reasons)
        assert result.registration.quality.failed_gates == ["relief"]


@pytest.mark.parametrize("scale", [(1.12, 1.0, 0.9), (0.9, 1.1, 1.1), (1.15, 1.15, 1.0)])
def test_a_different_face_never_registers(stage, scale) -> None:
    surface = syn.dense_surface_m(step_m=5e-4, scale=scale)
    landmarks = LANDMARKS * np.asarray(scale)
    for i in range(4):
        result = _frame(i, BASE, surface=surface, landmarks=landmarks)
        stage.process(result)
        assert result.registration.state in (SEARCHING, LOST), result.registration.quality
        assert result.registration.quality.reasons


def test_drifting_pose_is_degraded_then_reinitialised(stage, plan) -> None:
    """A pose knocked 12 mm off between frames (a bad warm start) is never shown as TRACKING
    with a wrong pose: the landmark check re-initialises or the gates fail."""
    for i in range(3):
        stage.process(_frame(i, BASE))
    assert stage.state is TRACKING
    knocked = BASE.copy()
    knocked[:3, 3] += [0.012, 0.0, 0.0]
    stage._history = [(2 / 30, knocked), (3 / 30, knocked)]
    result = _frame(3, BASE)
    stage.process(result)
    reg = result.registration
    if reg.state in (TRACKING, REGISTERED):
        assert _tre_mm(plan, reg.patient_to_camera, BASE) < 1.0
    mm, _ = pose_difference(reg.patient_to_camera, BASE, plan.targets["pituitary"])
    assert reg.state is not TRACKING or mm < 1.0


def test_refused_plan_keeps_a_safe_state() -> None:
    from edge.registration.stage import PlanRefusedStage

    stage = PlanRefusedStage("plan refused: signature not valid")
    result = _frame(0, BASE)
    stage.process(result)
    assert stage.name == "registration"
    assert result.registration.state is SEARCHING and result.registration.patient_to_camera is None
    assert result.registration.quality.reasons == ["plan refused: signature not valid"]


def test_reset_reregisters_from_landmarks(stage) -> None:
    """A headset's `reregister`: back to SEARCHING, then REGISTERED on the next face."""
    for i in range(3):
        stage.process(_frame(i, BASE))
    assert stage.state is TRACKING
    stage.reset()
    assert stage.state is SEARCHING
    result = _frame(3, BASE)
    stage.process(result)
    assert result.registration.state is REGISTERED


@pytest.mark.parametrize("correction_mm, worst_mm", [(1.0, 0.5), (0.0, None)])
def test_skin_depth_bias_is_corrected_before_the_fit(plan, skin, correction_mm, worst_mm) -> None:
    """Skin measured 1 mm too far (subsurface scattering) moves the whole pose back by about
    the bias unless ``skin_depth_bias_mm`` removes it from the depth before the fits."""
    stage = RegistrationStage(plan, RegistrationConfig(skin_depth_bias_mm=correction_mm), skin=skin)
    depth = syn.render_depth(DENSE, BASE, INTR)
    biased = np.where(depth > 0, depth + 0.001, 0.0)
    shifts, tre = [], []
    for i in range(6):
        result = _frame(i, BASE, depth=biased)
        stage.process(result)
        pose = result.registration.patient_to_camera
        assert pose is not None
        tre.append(_tre_mm(plan, pose, BASE))
        shifts.append((pose[2, 3] - BASE[2, 3]) * 1000)
    if worst_mm is not None:
        assert max(tre) < worst_mm and abs(np.mean(shifts)) < 0.3
    else:
        assert np.mean(shifts) == pytest.approx(1.0, abs=0.3)  # the whole pose moved back
