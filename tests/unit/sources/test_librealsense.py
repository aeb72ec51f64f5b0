"""Depth-to-colour alignment (edge/sources/librealsense.py): known shifts, occlusion, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edge.frames import Intrinsics
from edge.sources.librealsense import align_depth_to_color


def test_align_identity_keeps_depth_and_a_baseline_shifts_it():
    intr = Intrinsics(40, 30, 50.0, 50.0, 19.5, 14.5)
    depth = np.zeros((30, 40), np.uint16)
    depth[10:20, 10:20] = 500  # 0.5 m at 1 mm per unit
    same = align_depth_to_color(depth, intr, intr, np.eye(4), 0.001)
    np.testing.assert_array_equal(same, depth)
    # Color camera 10 mm to the left of depth: points move +10 mm in x, i.e. fx*0.01/0.5 = 1 px.
    shift = np.eye(4)
    shift[0, 3] = 0.01
    moved = align_depth_to_color(depth, intr, intr, shift, 0.001)
    np.testing.assert_array_equal(moved[:, 1:], depth[:, :-1])


def test_align_keeps_the_nearest_surface_and_checks_input():
    intr = Intrinsics(8, 6, 10.0, 10.0, 3.5, 2.5)
    depth = np.full((6, 8), 1000, np.uint16)
    depth[:, 4] = 400  # a near column that lands on its far neighbour after the shift
    shift = np.eye(4)
    shift[0, 3] = 0.04  # 1 px at 0.4 m
    out = align_depth_to_color(depth, intr, intr, shift, 0.001)
    assert (out[:, 5] == 400).all()
    with pytest.raises(ValueError):
        align_depth_to_color(depth.astype(np.float32), intr, intr, np.eye(4), 0.001)  # type: ignore[arg-type]


def test_extrinsics_rotation_is_column_major_as_librealsense_applies_it():
    rs = pytest.importorskip("pyrealsense2")
    from edge import geometry
    from edge.frames import Extrinsics
    from edge.sources.librealsense import extrinsics_from_rs, extrinsics_to_rs

    # 90 degrees about z: x -> y. Column-major storage of [[0,-1,0],[1,0,0],[0,0,1]].
    ext = rs.extrinsics()
    ext.rotation = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    ext.translation = [0.01, 0.02, 0.03]
    point = [0.1, 0.0, 0.5]
    expected = rs.rs2_transform_point_to_point(ext, point)
    ours = geometry.apply(extrinsics_from_rs(ext).matrix, np.array([point]))[0]
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    np.testing.assert_allclose(ours, [0.01, 0.12, 0.53], atol=1e-6)
    # And back: a matrix written out is applied by librealsense the same way.
    m = extrinsics_from_rs(ext).matrix
    back = extrinsics_to_rs(Extrinsics.from_matrix(m))
    np.testing.assert_allclose(rs.rs2_transform_point_to_point(back, point), expected, atol=1e-6)


@pytest.mark.parametrize("tilt_deg", [0.0, 30.0, 60.0])
def test_raw_depth_of_a_tilted_plane_aligns_to_the_exact_color_view(tilt_deg):
    """A plane drawn exactly (ray-plane depth per pixel) by a D435-like depth imager and
    by the color camera: the aligned depth fills the color view and is unbiased, also on
    slopes where neighbouring footprints overlap."""
    from scipy.spatial.transform import Rotation

    from edge.sources.phantom import default_intrinsics
    from edge.sources.phantom.depthcam import d435_like
    from edge.sources.phantom.render import Renderer, TexturedPlane

    color = default_intrinsics()
    imager = d435_like(color)
    plane = TexturedPlane(np.full((200, 200, 3), 128, np.uint8), 0.005, (100.0, 100.0))
    plane_to_color = np.eye(4)
    plane_to_color[:3, :3] = Rotation.from_euler("y", tilt_deg, degrees=True).as_matrix()
    plane_to_color[:3, 3] = [0.0, 0.0, 0.6]
    want = Renderer(color).blank()
    Renderer(color).draw_plane(want, plane, plane_to_color)
    seen = Renderer(imager.intrinsics).blank()
    Renderer(imager.intrinsics).draw_plane(seen, plane, imager.color_to_depth @ plane_to_color)
    raw = np.rint(seen.depth_m / 1e-4).astype(np.uint16)
    got = align_depth_to_color(
        raw, imager.intrinsics, color, imager.depth_to_color.matrix, 1e-4
    ).astype(float)
    truth = want.depth_m > 0
    both = truth & (got > 0)
    assert both.sum() / truth.sum() > 0.995
    err_mm = (got[both] * 1e-4 - want.depth_m[both]) * 1000
    assert abs(float(np.median(err_mm))) < 0.02 and abs(float(err_mm.mean())) < 0.05
