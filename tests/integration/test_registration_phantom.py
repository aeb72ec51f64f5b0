"""End to end on the phantom: its exported plan, the project's face tracker, registration,
checked against the phantom's ground truth (issue 5's acceptance figures, on short runs).

Needs the tracker's models (built by ``ensure_models``); skipped when they cannot be built.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edge import geometry
from edge.config import RegistrationConfig, TrackingConfig
from edge.errors import EdgeError
from edge.evaluation import jitter_mm, pose_errors
from edge.frames import FrameResult
from edge.plan.load import load_plan
from edge.plan.sign import generate_keypair, load_private_key, load_public_key, sign_plan
from edge.registration.icp import SkinModel
from edge.registration.stage import RegistrationStage
from edge.registration.types import RegistrationState

phantom = pytest.importorskip("edge.sources.phantom")


@pytest.fixture(scope="module")
def tracker():
    from edge.models import ensure_models
    from edge.models.manifest import repo_models_dir
    from edge.tracking.tracker import FaceTracker

    build = repo_models_dir() / "build"
    try:
        ensure_models(build)
    except EdgeError as exc:  # no models and no way to build them here
        pytest.skip(f"tracker models unavailable: {exc}")
    return FaceTracker.from_config(TrackingConfig(models_dir=str(build), intra_op_threads=1))


@pytest.fixture(scope="module")
def signed_plan(tmp_path_factory, tracker):
    """The phantom's plan as `edge phantom --plan-out` writes it, signed and verified."""
    from edge.sources.phantom.plan_out import write_plan

    root = Path(tmp_path_factory.mktemp("phantom-plan"))
    with phantom.PhantomSource(scenario="static", frames=1) as source:
        write_plan(source.face, root / "plan")
    keys = generate_keypair(root / "signer")
    sign_plan(root / "plan", load_private_key(keys.private))
    plan = load_plan(root / "plan", public_key=load_public_key(keys.public))
    assert plan.signed
    return plan


@pytest.fixture(scope="module")
def skin(signed_plan) -> SkinModel:
    return SkinModel.from_mesh(signed_plan.skin)


def run(scenario: str, frames: int, tracker, plan, skin, clock=None):
    """(states, registration results, frames) of a phantom run through tracking + registration.

    ``clock`` is the host clock the source stamps frames with (default: the real one)."""
    tracker.reset()
    stage = RegistrationStage(plan, RegistrationConfig(), skin=skin)
    states, results, truths = [], [], []
    kw = {} if clock is None else {"clock": clock}
    with phantom.PhantomSource(scenario=scenario, frames=frames, **kw) as source:
        for frame in source:
            result = FrameResult(frame=frame)
            result.tracking = tracker.track(frame)
            stage.process(result)
            states.append(result.registration.state)
            results.append(result.registration)
            truths.append(frame.truth)
    return states, results, truths


def tracked_errors(results, truths, plan):
    return [
        pose_errors(r.patient_to_camera, t.patient_to_camera, plan.targets)
        for r, t in zip(results, truths, strict=True)
        if r.state is RegistrationState.TRACKING
    ]


def test_nod_shake_accuracy(tracker, signed_plan, skin) -> None:
    states, results, truths = run("nod-shake", 30, tracker, signed_plan, skin)
    errors = tracked_errors(results, truths, signed_plan)
    assert states[0] is RegistrationState.REGISTERED and len(errors) >= 27
    tre = np.array([v for e in errors for v in e.tre_mm.values()])
    rotation = np.array([e.rotation_deg for e in errors])
    # Issue 5: TRE mean <= 1.0 mm, p95 <= 2.0 mm, rotation median <= 0.5 deg.
    # Measured (30 frames, depth noise on): mean 0.3, p95 0.5 mm, rotation median 0.25 deg.
    assert tre.mean() <= 1.0 and np.percentile(tre, 95) <= 2.0
    assert np.median(rotation) <= 0.5


def test_static_jitter(tracker, signed_plan, skin) -> None:
    _, results, _ = run("static", 20, tracker, signed_plan, skin)
    targets = np.stack(list(signed_plan.targets.values()))
    positions = [
        geometry.apply(r.patient_to_camera, targets)
        for r in results
        if r.state is RegistrationState.TRACKING
    ]
    assert len(positions) >= 18
    assert jitter_mm(positions) <= 0.2  # issue 5; measured about 0.1 mm


def test_drape_still_tracks(tracker, signed_plan, skin) -> None:
    _, results, truths = run("drape", 16, tracker, signed_plan, skin)
    errors = tracked_errors(results, truths, signed_plan)
    assert len(errors) >= 14
    tre = np.array([v for e in errors for v in e.tre_mm.values()])
    assert np.percentile(tre, 95) <= 2.5  # issue 5; measured about 0.5 mm


def test_photo_spoof_never_registers(tracker, signed_plan, skin) -> None:
    states, results, truths = run("photo-spoof", 6, tracker, signed_plan, skin)
    assert all(t.face_visible for t in truths)  # the photo shows a face...
    assert set(states) == {RegistrationState.SEARCHING}  # ...that never registers
    assert all(r.patient_to_camera is None for r in results)


def test_leave_and_return(tracker, signed_plan, skin) -> None:
    states, _, truths = run("leave-return", 60, tracker, signed_plan, skin)
    visible = [t.face_visible for t in truths]
    gone = visible.index(False)
    back = gone + visible[gone:].index(True)
    assert states[gone - 1] is not RegistrationState.LOST
    assert RegistrationState.LOST in states[gone : gone + 2]  # within one frame of leaving
    assert RegistrationState.TRACKING in states[back : back + 6]  # within 5 frames of returning
    # Never TRACKING while the face is out of view.
    assert all(
        s is not RegistrationState.TRACKING for s, v in zip(states, visible, strict=True) if not v
    )


def test_replay_does_not_depend_on_how_fast_the_host_reads(tracker, signed_plan, skin) -> None:
    """The same frames give the same states and poses whether the host reads them evenly
    1 ms apart or unevenly (a busy machine): the motion model runs on the camera's clock."""
    fast = itertools.count(1000.0, 0.001)
    steps = itertools.cycle([0.001, 0.3, 0.02, 0.15, 0.001, 0.001, 0.5])
    slow = itertools.accumulate(steps, initial=1000.0)
    states_a, results_a, _ = run("leave-return", 24, tracker, signed_plan, skin, lambda: next(fast))
    states_b, results_b, _ = run("leave-return", 24, tracker, signed_plan, skin, lambda: next(slow))
    assert states_a == states_b
    assert RegistrationState.TRACKING in states_a
    for a, b in zip(results_a, results_b, strict=True):
        if a.patient_to_camera is None:
            assert b.patient_to_camera is None
        else:
            np.testing.assert_array_equal(a.patient_to_camera, b.patient_to_camera)


def test_a_target_deep_behind_the_face_costs_no_availability(tracker, signed_plan, skin) -> None:
    """Issue 17: a plan with an extra target 85 mm behind the nasion (near the head's centre)
    tracks as often as the plan without it, with an estimate there that covers its true
    error (the landmark-only figure used to refuse such frames for a high estimated TRE)."""
    import dataclasses

    from edge.sources.phantom.plan_out import face_to_patient

    deep = signed_plan.landmarks["nasion"] + 0.085 * face_to_patient()[:3, 2]
    with_deep = dataclasses.replace(signed_plan, targets={**signed_plan.targets, "deep": deep})
    states, _, _ = run("nod-shake", 30, tracker, signed_plan, skin)
    states_deep, results, truths = run("nod-shake", 30, tracker, with_deep, skin)
    tracking = states.count(RegistrationState.TRACKING)
    assert states_deep.count(RegistrationState.TRACKING) >= tracking >= 28
    errors = tracked_errors(results, truths, with_deep)
    shown = [r.quality.tre_mm["deep"] for r in results if r.state is RegistrationState.TRACKING]
    true = [e.tre_mm["deep"] for e in errors]
    assert max(true) <= 2.0 and max(shown) < RegistrationConfig().max_tre_mm
    assert np.mean(np.array(true) <= np.array(shown)) >= 0.9  # 30 frames: a loose check
    assert all(r.quality.landmark_tre_mm["deep"] > 0 for r in results)  # the cross-check


def test_a_covered_upper_face_is_degraded_for_too_little_rigid_evidence(
    tracker, signed_plan, skin
) -> None:
    """Issue 18: with more than half the forehead, orbits and zygomas behind a flat sheet in
    front of the face, the pose is DEGRADED by the ``rigid_evidence`` gate."""
    import dataclasses

    tracker.reset()
    stage = RegistrationStage(signed_plan, RegistrationConfig(), skin=skin)
    with phantom.PhantomSource(scenario="static", frames=12) as source:
        frames = list(source)
    for frame in frames[:8]:
        result = FrameResult(frame=frame)
        result.tracking = tracker.track(frame)
        stage.process(result)
    assert result.registration.state is RegistrationState.TRACKING
    assert result.registration.quality.rigid_evidence_fraction > 0.9
    frame = frames[8]
    result = FrameResult(frame=frame)
    result.tracking = tracker.track(frame)
    lm = result.tracking.patient.landmarks_px
    # A flat sheet 15 mm in front of the nose tip over the image's left half of the face
    # and a little more (a drape from the side).
    depth = frame.depth.copy()
    u, v = np.rint(lm[1, :2]).astype(int)
    tip = int(np.median(depth[v - 2 : v + 3, u - 2 : u + 3]))
    depth[:, : u + 8] = tip - round(0.015 / frame.depth_scale_m)
    result = FrameResult(frame=dataclasses.replace(frame, depth=depth))
    result.tracking = tracker.track(frame)
    stage.process(result)
    q = result.registration.quality
    assert result.registration.state is RegistrationState.DEGRADED
    assert "rigid_evidence" in q.failed_gates
    assert q.rigid_evidence_fraction < RegistrationConfig().min_rigid_evidence_fraction


def test_half_draped_face_is_never_current_with_a_large_error(tracker, signed_plan, skin) -> None:
    """Issue 18: a folded drape over the lower half of the face (drape-half, seed 0). The
    surface fit uses the rigid upper face only, so no current pose is more than 2 mm off
    (before: 9 of 150 frames, up to 3.7 mm)."""
    _, results, truths = run("drape-half", 60, tracker, signed_plan, skin)
    errors = tracked_errors(results, truths, signed_plan)
    assert len(errors) >= 10
    assert max(v for e in errors for v in e.tre_mm.values()) <= 2.0


def test_rigid_face_region_leaves_out_lips_jaw_and_lower_cheeks(tracker) -> None:
    """The region the surface fit samples, on the tracked phantom face (face-model indices)."""
    from edge.registration.cloud import face_pixels
    from edge.registration.landmarks import RIGID_FACE_HULL

    tracker.reset()
    with phantom.PhantomSource(scenario="static", frames=1) as source:
        frame = next(iter(source))
    lm = tracker.track(frame).patient.landmarks_px
    pix = face_pixels(lm, frame.intrinsics.width, frame.intrinsics.height, 2000, RIGID_FACE_HULL)
    assert len(pix) > 500

    def nearest(index: int) -> float:
        return float(np.min(np.linalg.norm(pix - lm[index, :2], axis=1)))

    # Lips (upper 0, lower 17), mouth corners, chin (152, 175), jaw angles (172, 397).
    for mobile in (0, 17, 61, 291, 152, 175, 172, 397):
        assert nearest(mobile) > 5.0
    # Forehead, nasion, nose tip and the zygomas are sampled.
    for rigid in (151, 168, 1, 116, 345):
        assert nearest(rigid) < 10.0


@pytest.mark.parametrize("seed", [1, 3])
def test_where_the_landmarks_are_blind_the_surface_refuses_a_turned_pose(
    tracker, signed_plan, skin, seed
) -> None:
    """Issue 18: a drape from the chin to below the eyes (drape-half, seed 1; seed 3 also
    hides the nose and cheekbones: forehead and temples are the regions used) leaves the
    nasion and the eye corners, which cannot see the head turned about the line through
    them (the landmark check's blind spot is over 8 mm): the surface must hold the pose
    alone. A surface pose turned 5 or 10 deg about any axis through the nasion fails the
    surface gates (inliers or shape), and the surface fit started there returns to within
    0.5 mm of the truth at the targets."""
    from edge.registration.icp import icp_point_to_plane
    from edge.registration.quality import systematic_residual_mm

    config = RegistrationConfig()
    tracker.reset()
    stage = RegistrationStage(signed_plan, config, skin=skin)
    with phantom.PhantomSource(scenario="drape-half", frames=31, seed=seed) as source:
        frames = list(source)
    for frame in frames:
        result = FrameResult(frame=frame)
        result.tracking = tracker.track(frame)
        stage.process(result)
    assert result.registration.state is RegistrationState.TRACKING
    assert result.registration.quality.landmark_blind_mm > config.max_landmark_surface_mm
    truth = frame.truth.patient_to_camera
    targets = np.stack(list(signed_plan.targets.values()))
    nasion = signed_plan.landmarks["nasion"]
    cloud = stage._cloud(frame, result.tracking.patient, config.track_cloud_points).points_m
    icp = {
        "initial_gate_mm": config.track_gate_mm,
        "min_gate_mm": config.min_gate_mm,
        "inlier_mm": config.inlier_mm,
        "occlusion_mm": config.occlusion_mm,
    }
    for axis, deg in itertools.product(np.eye(3), (5.0, -5.0, 10.0, -10.0)):
        turn = np.eye(4)
        turn[:3, :3] = geometry.axis_angle_to_matrix(axis, np.radians(deg))
        turn[:3, 3] = nasion - turn[:3, :3] @ nasion
        start = truth @ turn
        at = icp_point_to_plane(skin, cloud, start, max_iterations=0, **icp)
        shape = systematic_residual_mm(cloud, at.residuals_mm)
        assert (
            at.inlier_fraction < config.min_inlier_fraction or shape > config.max_surface_shape_mm
        ), (axis, deg)
        back = icp_point_to_plane(skin, cloud, start, max_iterations=30, **icp)
        moved = geometry.apply(back.patient_to_camera, targets) - geometry.apply(truth, targets)
        assert np.linalg.norm(moved, axis=1).max() < 0.5e-3, (axis, deg)
