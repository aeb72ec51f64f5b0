"""Overlay content: known answers, fail-safe states, projection and display profiles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError, StateError
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.overlay.content import build_overlay, skin_distances_mm
from edge.overlay.demo import demo_plan, demo_registration
from edge.overlay.project import DisplayProfile, project_points
from edge.overlay.raycast import ray_mesh_first_hit
from edge.overlay.stage import OverlayStage
from edge.registration.types import RegistrationState
from edge.transport.protocol import decode, encode, make_message

INTR = Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
PLAN = demo_plan()


def _build(state: RegistrationState | None, **kw: object):
    reg = None if state is None else demo_registration(state, registered_s=10.0)
    return build_overlay(
        frame_number=7,
        capture_unix_s=1000.0,
        capture_s=10.25,
        registration=reg,
        plan=PLAN,
        profile=DisplayProfile(),
        camera=INTR,
        **kw,  # type: ignore[arg-type]
    )


def test_ray_hits_square_at_known_distance():
    v = np.array([[-1, -1, 2], [1, -1, 2], [1, 1, 2], [-1, 1, 2]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    o = np.zeros((3, 3))
    d = np.array([[0, 0, 1], [0.2, 0.1, 1], [0, 0, -1]], float)
    t = ray_mesh_first_hit(o, d, v, f)
    assert t[0] == pytest.approx(2.0)
    assert t[1] == pytest.approx(2.0)
    assert math.isnan(t[2])  # pointing away


def test_ray_rejects_malformed_input():
    with pytest.raises(ValueError):
        ray_mesh_first_hit(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((3, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError):
        ray_mesh_first_hit(
            np.zeros((1, 3)), np.ones((1, 3)), np.zeros((3, 3)), np.array([[0, 1, 5]])
        )


def test_skin_distance_on_sphere_known_answer():
    # Sphere radius 90 mm centred 0.5 m ahead; target on the axis 50 mm behind the centre's
    # front... i.e. at z = 0.45: the skin along the view ray is at z = 0.41 (a mesh vertex).
    pose = demo_registration().patient_to_camera
    assert pose is not None
    d = skin_distances_mm(PLAN, pose, np.array([[0.0, 0.0, -0.05]]))
    assert d[0] == pytest.approx(40.0, abs=1e-6)


def test_tracking_overlay_is_current_with_primitives_in_camera_frame():
    ov = _build(RegistrationState.TRACKING)
    assert ov.current and ov.state_text == "TRACKING"
    assert ov.target_names == ["tumour", "node"]
    np.testing.assert_allclose(ov.targets_camera_m[0], [0.0, 0.0, 0.45])
    np.testing.assert_allclose(ov.targets_px[1], INTR.project(ov.targets_camera_m[1:2])[0])
    assert ov.tre_mm == [1.8, 2.4]
    assert ov.landmark_tre_mm == [3.5, 4.0]  # the landmark-only cross-check, kept apart
    hud = ov.hud_payload()["targets"][0]
    assert (hud["tre_mm"], hud["landmark_tre_mm"]) == (1.8, 3.5)
    assert ov.registration_age_ms == pytest.approx(250.0)
    np.testing.assert_allclose(ov.trajectories_camera_m[0], [[0, 0, 0.41], [0, 0, 0.45]])
    np.testing.assert_allclose(ov.cut_planes_camera[0], [[0, 0.04, 0.5], [0, 1, 0]])
    assert ov.structures[0]["asset"] == PLAN.structures[0].mesh.sha256
    assert ov.skin_asset == PLAN.skin.sha256


def test_degraded_is_marked_not_current():
    ov = _build(RegistrationState.DEGRADED)
    assert not ov.current
    assert ov.state_text.startswith("DEGRADED: ICP residual")
    assert ov.target_names  # shown, but marked
    # No accuracy figure for a pose the gates refused: its fit may sit in a wrong minimum.
    assert all(math.isnan(v) for v in ov.tre_mm)
    assert ov.hud_payload()["targets"][0]["tre_mm"] is None
    assert ov.landmark_tre_mm == [3.5, 4.0]


@pytest.mark.parametrize("state", [RegistrationState.SEARCHING, RegistrationState.LOST, None])
def test_searching_and_lost_carry_no_primitives(state):
    ov = _build(state)
    payload, arrays = ov.overlay_payload()
    assert not ov.current and ov.patient_to_camera is None
    assert (
        payload["targets"] == [] and payload["trajectories"] == [] and payload["structures"] == []
    )
    assert set(arrays) == set()
    if state is RegistrationState.LOST:
        assert ov.state_text == "LOST — do not use"


def test_non_finite_pose_is_refused():
    reg = demo_registration()
    assert reg.patient_to_camera is not None
    reg.patient_to_camera[0, 0] = np.nan
    ov = build_overlay(
        frame_number=1,
        capture_unix_s=0.0,
        capture_s=0.0,
        registration=reg,
        plan=PLAN,
        profile=DisplayProfile(),
        camera=INTR,
    )
    assert not ov.current and ov.state is RegistrationState.DEGRADED and not ov.target_names


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_camera_intrinsics_draw_nothing(bad):
    """A damaged recording or driver: nothing is projected with such numbers."""
    camera = Intrinsics(640, 480, 600.0, 600.0, bad, bad)
    ov = build_overlay(
        frame_number=1,
        capture_unix_s=0.0,
        capture_s=0.0,
        registration=demo_registration(),
        plan=PLAN,
        profile=DisplayProfile(),
        camera=camera,
    )
    assert not ov.current and ov.state is RegistrationState.DEGRADED
    assert not ov.target_names and "intrinsics" in ov.state_text
    assert all(np.isfinite(a).all() for a in ov.overlay_payload()[1].values())


def test_payload_round_trips_through_the_strict_decoder():
    ov = _build(RegistrationState.TRACKING)
    payload, arrays = ov.overlay_payload()
    msg = decode(encode(make_message("overlay", payload, arrays, frame=7)))
    assert msg.payload["targets"][0]["skin_distance_mm"] == pytest.approx(40.0)
    np.testing.assert_allclose(msg.arrays["targets_camera_m"], ov.targets_camera_m)
    hud = decode(encode(make_message("hud", ov.hud_payload())))
    assert hud.payload["state_text"] == "TRACKING"


def test_projection_behind_camera_is_nan_and_invisible():
    px, vis, _ = project_points(
        np.array([[0, 0, 1.0], [0, 0, -1.0], [5, 0, 1.0]]), DisplayProfile(), INTR
    )
    assert vis.tolist() == [True, False, False]
    assert np.isnan(px[1]).all()


def test_projection_kernel_equals_the_numpy_projection(repo_root: Path):
    """Issue 15: the compiled projection against the numpy code it replaced, through every
    display profile in the repository (1e-12: numpy's matrix product rounds differently)."""
    from edge import geometry

    rng = np.random.default_rng(4)
    pts = rng.normal([0, 0, 0.4], [0.3, 0.3, 0.3], (2, 200, 3))  # some behind, some outside
    pts[0, 0] = [0.0, 0.0, np.nan]
    for f in sorted((repo_root / "hardware" / "displays").glob("*.toml")):
        prof = DisplayProfile.from_file(f)
        px, vis, intr = project_points(pts, prof, INTR)
        in_display = geometry.apply(np.asarray(prof.camera_to_display, np.float64), pts)
        ref = intr.project(in_display)
        behind = ~(in_display[:, 2] > 0)
        ref[behind] = np.nan
        with np.errstate(invalid="ignore"):
            ref_vis = ~behind & (ref[:, 0] >= -0.5) & (ref[:, 0] <= intr.width - 0.5)
            ref_vis &= (ref[:, 1] >= -0.5) & (ref[:, 1] <= intr.height - 0.5)
        assert px.shape == (2, 200, 2) and vis.shape == (2, 200)
        np.testing.assert_allclose(px.reshape(-1, 2), ref, rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(vis.reshape(-1), ref_vis)
        assert 0 < vis.sum() < vis.size and behind.any()


def test_display_profiles_in_repo_load(repo_root: Path):
    files = sorted((repo_root / "hardware" / "displays").glob("*.toml"))
    assert len(files) >= 3
    for f in files:
        prof = DisplayProfile.from_file(f)
        intr = prof.intrinsics_for(INTR)
        assert intr.width > 0 and intr.height > 0


def test_scaled_profile_projects_to_its_own_size():
    prof = DisplayProfile(name="x", width=1280, height=960)
    px, _, intr = project_points(np.array([[0.0, 0.0, 1.0]]), prof, INTR)
    assert (intr.width, intr.height) == (1280, 960)
    np.testing.assert_allclose(px[0], [639.5, 479.5])


def test_bad_display_profiles_are_refused(tmp_path: Path):
    bad = {
        "unknown.toml": 'name = "a"\nbogus = 1\n',
        "kind.toml": 'kind = "holo"\n',
        "size.toml": "width = 100\n",
        "rigid.toml": "camera_to_display = [2,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1]\n",
        "syntax.toml": "width = \n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError):
            DisplayProfile.from_file(tmp_path / name)
    with pytest.raises(ConfigError):
        DisplayProfile.from_file(tmp_path / "missing.toml")


def _frame(n: int, t: float) -> Frame:
    return Frame(
        n,
        np.zeros((480, 640, 3), np.uint8),
        PixelFormat.BGR8,
        None,
        0.001,
        INTR,
        host_timestamp_s=t,
    )


def test_stage_layers_fps_and_failed_frames():
    clock = iter(np.arange(100.0, 200.0, 0.001))
    stage = OverlayStage(PLAN, mono_clock=lambda: float(next(clock)), wall_clock=lambda: 5000.0)
    for i in range(5):
        r = FrameResult(_frame(i, 100.0 + i / 30.0))
        r.registration = demo_registration(registered_s=100.0)
        stage.process(r)
    assert r.overlay.fps == pytest.approx(30.0)
    stage.set_layer("targets", False)
    stage.process(r)
    assert r.overlay.target_names == [] and r.overlay.trajectory_names == ["biopsy"]
    with pytest.raises(StateError):
        stage.set_layer("nonsense", True)
    failed = FrameResult(_frame(9, 101.0))
    failed.registration = demo_registration()
    failed.errors.append("registration: boom")
    stage.process(failed)
    assert failed.overlay.state is RegistrationState.SEARCHING and not failed.overlay.current
