"""Phantom rendering: depth against the true geometry, the noise model, every scenario's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from edge import geometry
from edge.config import PhantomConfig
from edge.frames import Intrinsics
from edge.plan.load import read_plan
from edge.registration.landmarks import LANDMARK_INDEX, MOBILE_LANDMARKS
from edge.sources.phantom import PhantomSource
from edge.sources.phantom.face import FaceModel
from edge.sources.phantom.noise import (
    DepthNoise,
    apply_depth_noise,
    depth_sigma_m,
    quantise_depth,
)
from edge.sources.phantom.plan_out import write_plan
from edge.sources.phantom.render import Renderer, TexturedPlane
from edge.sources.phantom.scenarios import SCENARIOS
from edge.sources.phantom.scene import covered_by_drape

INTR = Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5)
QUIET = PhantomConfig(depth_noise=False, color_noise_sigma=0.0, cache_dir="")


def _source(
    face: FaceModel, scenario: str, frames: int, config: PhantomConfig = QUIET
) -> PhantomSource:
    return PhantomSource(scenario, frames=frames, seed=3, config=config, face_model=face)


def _surface_error_m(
    face: FaceModel, depth_m: np.ndarray, face_to_camera: np.ndarray
) -> np.ndarray:
    """Distance of every rendered head pixel's 3-D point to the face surface (point-to-plane)."""
    v, u = np.nonzero((depth_m > 0) & (depth_m < 1.0))  # the head, not the table at 1.25 m
    cam = INTR.deproject(np.stack([u, v], 1).astype(float), depth_m[v, u])
    pts = geometry.apply(geometry.invert(face_to_camera), cam)
    surf, normals, _ = face.surface_rows()
    _, idx = cKDTree(surf).query(pts)
    return np.abs(((pts - surf[idx]) * normals[idx]).sum(axis=1))


@pytest.mark.parametrize("scenario, frame", [("static", 0), ("nod-shake", 30), ("approach", 59)])
def test_noise_free_depth_matches_the_geometry_sub_mm(face, scenario, frame):
    src = _source(face, scenario, 60)
    with src:
        clean, _ = src.render(frame)
        err = _surface_error_m(face, clean.depth_m, src.poses()[frame])
    assert err.size > 5000
    assert np.median(err) < 0.2e-3
    assert np.percentile(err, 95) < 1.0e-3


def test_plane_depth_is_exact():
    r = Renderer(INTR)
    out = r.blank()
    pose = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    pose[:3, 3] = (0.02, -0.01, 0.9)
    r.draw_plane(out, TexturedPlane(np.full((400, 400, 3), 99, np.uint8), 0.002, (200, 200)), pose)
    v, u = np.nonzero(out.depth_m > 0)
    pts = INTR.deproject(np.stack([u, v], 1).astype(float), out.depth_m[v, u])
    n = pose[:3, 2]
    assert np.abs((pts - pose[:3, 3]) @ n).max() < 1e-6
    assert (out.color[v, u] == 99).all()


@pytest.mark.parametrize("z_m", [0.5, 1.0])
def test_depth_noise_has_the_stated_standard_deviation(z_m):
    depth = np.full((240, 320), z_m, np.float32)
    cos = np.ones_like(depth)
    noise = DepthNoise(dropout_fraction=0.0, edge_hole_px=1)
    noisy = apply_depth_noise(depth, cos, noise, 615.0, np.random.default_rng(5))
    expected = float(depth_sigma_m(z_m, 615.0, 0.08, 0.05))
    assert expected == pytest.approx(z_m**2 * 0.08 / (615.0 * 0.05))
    inner = noisy[2:-2, 2:-2]
    assert (inner > 0).all()
    # 76k samples: the sample std is within ~0.5 % of sigma; allow 3 %.
    assert np.std(inner - z_m) == pytest.approx(expected, rel=0.03)
    assert abs(np.mean(inner - z_m)) < expected * 0.02


def test_noise_is_independent_per_frame_and_reproducible(face):
    cfg = PhantomConfig(cache_dir="")
    with _source(face, "static", 2, cfg) as a, _source(face, "static", 2, cfg) as b:
        fa0, fa1 = a.read(), a.read()
        fb0 = b.read()
    assert np.array_equal(fa0.depth, fb0.depth) and np.array_equal(fa0.color, fb0.color)
    both = (fa0.depth > 0) & (fa1.depth > 0)
    assert (fa0.depth[both] != fa1.depth[both]).mean() > 0.5


def test_holes_at_grazing_angles_edges_and_dropouts():
    depth = np.full((100, 100), 0.6, np.float32)
    depth[:, 50:] = 0.9  # a depth edge down the middle
    cos = np.ones_like(depth)
    cos[:10] = 0.05  # seen almost edge-on
    noisy = apply_depth_noise(
        depth, cos, DepthNoise(dropout_fraction=0.05), 615.0, np.random.default_rng(0)
    )
    assert (noisy[:10] == 0).all()
    assert (noisy[20:, 49:51] == 0).all()
    holes = (noisy[20:80, 5:45] == 0).mean()
    assert 0.02 < holes < 0.1


def test_quantisation_to_depth_units():
    raw = quantise_depth(np.array([[0.0, 0.50004, 0.50006, 7.0]]), 0.0001)
    assert raw.dtype == np.uint16
    assert raw.tolist() == [[0, 5000, 5001, 0]]  # 7 m is beyond 16 bits of 100 um


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "motion"])
def test_every_scenario_renders_with_consistent_truth(face, scenario, tmp_path):
    frames = 30
    src = _source(face, scenario, frames, PhantomConfig(cache_dir=""))
    plan = read_plan(write_plan(face, tmp_path / "plan").parent)
    visible_flags = []
    with src:
        for frame in src:
            t = frame.truth
            assert t is not None and t.scenario == scenario
            assert frame.depth is not None and frame.depth_scale_m <= 0.001
            visible_flags.append(t.face_visible)
            if not t.face_visible:
                assert t.landmarks_px is None
                continue
            cam = t.landmarks_camera_m
            seen = t.landmarks_visible
            assert cam.shape == (468, 3) and t.landmarks_px.shape == (468, 2)
            # Projected truth landmarks fall on the rendered depth (noisy, so a few mm).
            uv = np.floor(t.landmarks_px[seen] + 0.5).astype(int)
            d = frame.depth_m()[uv[:, 1], uv[:, 0]]
            ok = d > 0
            assert ok.mean() > 0.8
            assert np.median(np.abs(d[ok] - cam[seen, 2][ok])) < 0.003
            if scenario != "photo-spoof":
                # The plan's landmarks, moved by the true pose, are the truth landmarks;
                # with the jaw and a smile the mouth, chin and outer eye corners move on
                # the rigid skull (by at most the jaw's 12 mm), the rest does not.
                skin_moves = src.scenario.jaw or src.scenario.smile
                for name, i in LANDMARK_INDEX.items():
                    p = (
                        t.patient_to_camera[:3, :3] @ plan.landmarks[name]
                        + t.patient_to_camera[:3, 3]
                    )
                    mobile = name in MOBILE_LANDMARKS or name.startswith("exocanthion")
                    limit = 0.0125 if skin_moves and mobile else 1e-6
                    assert np.linalg.norm(p - cam[i]) < limit
    if scenario == "leave-return":
        assert visible_flags[0] and visible_flags[-1] and not all(visible_flags)
    else:
        assert all(visible_flags)


def test_scenario_specifics(face):
    with _source(face, "drape", 1) as src:
        f = src.read()
    covered = covered_by_drape(face, face.landmarks_m)
    assert 0.2 < covered.mean() < 0.6
    assert not f.truth.landmarks_visible[covered].any()
    chin = np.floor(f.truth.landmarks_px[152] + 0.5).astype(int)
    r, _, b = f.color[chin[1], chin[0]].astype(int)
    assert b > r + 40  # the blue drape, not skin
    assert f.depth_m()[chin[1], chin[0]] < f.truth.landmarks_camera_m[152, 2] - 0.003

    with _source(face, "photo-spoof", 1) as src:
        cam = src.read().truth.landmarks_camera_m
    assert np.ptp(cam[:, 2]) < 0.05  # flat print, tilted a little at most
    with _source(face, "static", 1) as src:
        assert np.ptp(src.read().truth.landmarks_camera_m[:, 2]) > 0.05

    poses = _source(face, "approach", 30).poses()
    nasion_z = [(p[:3, :3] @ face.landmarks_m[168] + p[:3, 3])[2] for p in poses]
    assert nasion_z[0] == pytest.approx(0.8, abs=1e-3) and nasion_z[-1] == pytest.approx(
        0.4, abs=1e-3
    )
    yaw = [
        np.degrees(np.arctan2(p[0, 2], p[2, 2])) for p in _source(face, "nod-shake", 300).poses()
    ]
    assert max(yaw) == pytest.approx(25.0, abs=0.5) and min(yaw) == pytest.approx(-25.0, abs=0.5)


def test_plan_targets_below_skin_and_transform_not_identity(face, tmp_path):
    plan = read_plan(write_plan(face, tmp_path / "plan").parent)
    tree = cKDTree(plan.skin.vertices)
    for name, p in plan.targets.items():
        depth_mm = tree.query(p)[0] * 1000.0
        assert 30.0 <= depth_mm <= 80.0, name
    truth = Path(tmp_path / "plan.truth.json").read_text()  # beside the folder, not in it
    assert "face_to_patient_m" in truth
    with _source(face, "static", 1) as src:
        pose = src.read().truth.patient_to_camera
    assert not np.allclose(pose[:3, :3], np.eye(3), atol=0.05)
