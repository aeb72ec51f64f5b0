"""Per-plan constants and per-camera projection: the same numbers, to the bit, as when
they are made each frame."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from edge import geometry
from edge.frames import Intrinsics
from edge.overlay.content import _all_finite, build_overlay
from edge.overlay.demo import demo_plan, demo_registration
from edge.overlay.prepared import PlanPrimitives, mesh_asset_id
from edge.overlay.project import DisplayProfile, Projection, project_points
from edge.registration.types import RegistrationState
from edge.transport.protocol import encode, make_message

INTR = Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
PLAN = demo_plan()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_primitives_equal_the_plan_read_per_frame():
    prims = PlanPrimitives.from_plan(PLAN)
    names = list(PLAN.targets)
    assert list(prims.target_names) == names
    assert _same(prims.targets_patient_m, np.array([PLAN.targets[n] for n in names], float))
    ends = np.array([[t.entry, t.target] for t in PLAN.trajectories], float).reshape(-1, 3)
    assert _same(prims.trajectory_ends_patient_m, ends)
    assert _same(prims.cut_points_patient_m, np.array([c.point for c in PLAN.cut_planes], float))
    assert _same(prims.cut_normals_patient, np.array([c.normal for c in PLAN.cut_planes], float))
    assert prims.skin_asset == mesh_asset_id(PLAN.skin)
    assert prims.structures() == [
        {"name": s.name, "asset": mesh_asset_id(s.mesh), "color_rgb": list(s.color_rgb)}
        for s in PLAN.structures
    ]
    assert prims.structures() is not prims.structures()  # a new list each frame
    with pytest.raises(ValueError):
        prims.targets_patient_m[0, 0] = 1.0  # shared by every frame: read-only


def _pose(rng: np.random.Generator) -> np.ndarray:
    axis = rng.normal(size=3)
    rotation = geometry.axis_angle_to_matrix(axis / np.linalg.norm(axis), rng.uniform(0, 3))
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = rng.normal(scale=0.05, size=3) + np.array([0.0, 0.0, 0.5])
    return pose


@pytest.mark.parametrize("seed", range(20))
def test_overlay_arrays_are_the_per_frame_formulas_to_the_bit(seed: int):
    pose = _pose(np.random.default_rng(seed))
    reg = demo_registration(RegistrationState.TRACKING, registered_s=10.0)
    reg.patient_to_camera = pose
    kw = dict(
        frame_number=1,
        capture_unix_s=0.0,
        capture_s=10.0,
        registration=reg,
        plan=PLAN,
        profile=DisplayProfile(),
        camera=INTR,
    )
    prepared = build_overlay(
        **kw,  # type: ignore[arg-type]
        primitives=PlanPrimitives.from_plan(PLAN),
        projection=Projection(DisplayProfile(), INTR),
    )
    plain = build_overlay(**kw)  # type: ignore[arg-type]
    # The formulas the overlay used before the plan was prepared (geometry.apply, np.stack).
    pts = np.array([PLAN.targets[n] for n in PLAN.targets], dtype=np.float64)
    ends = np.array([[t.entry, t.target] for t in PLAN.trajectories], dtype=np.float64)
    points = geometry.apply(pose, np.array([c.point for c in PLAN.cut_planes], float))
    normals = np.array([c.normal for c in PLAN.cut_planes], float) @ pose[:3, :3].T
    expected = {
        "targets_camera_m": geometry.apply(pose, pts),
        "trajectories_camera_m": geometry.apply(pose, ends.reshape(-1, 3)).reshape(-1, 2, 3),
        "cut_planes_camera": np.stack([points, normals], axis=1),
    }
    expected["targets_px"] = project_points(expected["targets_camera_m"], DisplayProfile(), INTR)[0]
    expected["trajectories_px"] = project_points(
        expected["trajectories_camera_m"], DisplayProfile(), INTR
    )[0]
    for name, want in expected.items():
        assert _same(getattr(prepared, name), want), name
        assert _same(getattr(plain, name), want), name
    assert prepared.targets_visible == plain.targets_visible
    assert all(type(v) is bool for v in prepared.targets_visible)
    assert prepared.overlay_payload()[0] == plain.overlay_payload()[0]


@pytest.mark.filterwarnings("error")  # no numpy warning on the way, whatever the pose
def test_all_finite_known_answers():
    assert _all_finite(np.eye(4))
    assert _all_finite(np.full((4, 4), 1e308))  # the sum overflows; every entry is finite
    for bad in (math.nan, math.inf, -math.inf):
        a = np.eye(4)
        a[2, 3] = bad
        assert not _all_finite(a)
    both = np.eye(4)
    both[0, 3], both[1, 3] = math.inf, -math.inf  # their sum is NaN
    assert not _all_finite(both)


def test_projection_is_project_points_and_knows_its_camera():
    profile = DisplayProfile(width=320, height=240)
    projection = Projection(profile, INTR)
    pts = np.array([[0.01, -0.02, 0.5], [0.0, 0.0, -1.0], [0.3, 0.2, 0.4]])
    px, vis = projection.project(pts)
    px_ref, vis_ref, intr = project_points(pts, profile, INTR)
    assert _same(px, px_ref) and _same(vis, vis_ref)
    d = INTR.scaled(320, 240)  # known answers: a pinhole with the display's numbers
    np.testing.assert_allclose(px[0], [d.fx * 0.02 + d.ppx, d.fy * -0.04 + d.ppy])
    assert np.isnan(px[1]).all() and vis.tolist() == [True, False, False]  # behind; outside
    assert projection.intrinsics == intr == INTR.scaled(320, 240)
    assert projection.matches(profile, Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5))
    assert not projection.matches(profile, INTR.scaled(320, 240))
    assert not projection.matches(DisplayProfile(width=320, height=240), INTR)


def test_encode_with_a_reused_packer_gives_the_same_bytes():
    packer = msgpack.Packer(use_bin_type=True)
    payload = {"a": [1, 2.5, None, "x"], "b": {"c": b"\x00"}}
    arrays = {"m": np.arange(6.0).reshape(2, 3)}
    for seq in range(3):
        message = make_message("status", payload, arrays, seq=seq, capture_unix_s=1.0)
        fresh = encode(message)
        again = encode(message, packer)
        assert again == fresh
        assert fresh[1] == msgpack.packb(message.header.to_map(), use_bin_type=True)
        assert fresh[2] == msgpack.packb(payload, use_bin_type=True)
    with pytest.raises(TypeError):
        encode(make_message("status", {"bad": object()}), packer)
    message = make_message("status", payload, capture_unix_s=1.0)
    assert encode(message, packer) == encode(message)  # a failed pack leaves nothing behind
