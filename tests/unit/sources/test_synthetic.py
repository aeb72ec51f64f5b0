"""Synthetic scene and the --source factory."""

from __future__ import annotations

import numpy as np
import pytest

from edge.config import EdgeConfig, RealSenseConfig
from edge.errors import SourceError
from edge.frames import TimingMode
from edge.sources import open_source, parse_source_spec
from edge.sources.realsense import RealSenseSource
from edge.sources.recording import RecordingSource
from edge.sources.synthetic import SPHERE_RADIUS_M, SyntheticSource, sphere_centre_m


def frames(**kw: object) -> list:
    with SyntheticSource(**kw) as src:  # type: ignore[arg-type]
        return list(src)


def test_same_seed_same_frames_other_seed_other_frames():
    a = frames(frames=3, seed=5, width=80, height=60)
    b = frames(frames=3, seed=5, width=80, height=60)
    c = frames(frames=3, seed=6, width=80, height=60)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.color, y.color)
        np.testing.assert_array_equal(x.depth, y.depth)
    assert not np.array_equal(a[0].color, c[0].color)
    assert [f.number for f in a] == [0, 1, 2] and len(a) == 3


def test_depth_is_consistent_with_the_sphere_pose():
    f = frames(frames=1, seed=2)[0]
    centre = f.truth.patient_to_camera[:3, 3]
    u, v = f.intrinsics.project(centre[None])[0]
    # The pixel under the sphere centre sees its front surface: z_c - r (millimetre units).
    z_m = f.depth[round(v), round(u)] * f.depth_scale_m
    assert z_m == pytest.approx(centre[2] - SPHERE_RADIUS_M, abs=0.002)
    # Pixels at the corners see the plane, which is behind the sphere.
    assert f.depth[0, 0] * f.depth_scale_m > centre[2]


def test_the_scene_moves():
    a, b = frames(frames=2, seed=0, width=80, height=60)
    assert not np.array_equal(a.depth, b.depth)
    assert not np.allclose(sphere_centre_m(0, 30.0, 0.0), sphere_centre_m(15, 30.0, 0.0))


def test_realtime_pacing_asks_to_wait_one_frame_interval():
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    got = frames(
        frames=4,
        width=40,
        height=30,
        fps=20.0,
        timing=TimingMode.REALTIME,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert [f.number for f in got] == [0, 1, 2, 3]
    np.testing.assert_allclose(sleeps, [0.05, 0.05, 0.05])


def test_frames_must_be_positive():
    with pytest.raises(SourceError, match="at least 1"):
        SyntheticSource(0)


def test_open_source_forms(tmp_path):
    cfg = EdgeConfig(realsense=RealSenseConfig(width=80, height=60, fps=15))
    syn = open_source(parse_source_spec("synthetic"), cfg, frames=7, seed=3)
    assert isinstance(syn, SyntheticSource) and syn.frame_count == 7 and syn.nominal_fps == 15
    assert syn.intrinsics.width == 80
    rec = open_source(parse_source_spec(str(tmp_path / "x.db3")), cfg, timing=TimingMode.REALTIME)
    assert isinstance(rec, RecordingSource)
    assert isinstance(open_source(parse_source_spec(str(tmp_path / "x.bag")), cfg), RecordingSource)
    live = open_source(parse_source_spec("realsense:0123"), cfg)
    assert isinstance(live, RealSenseSource) and live.serial == "0123"
    assert isinstance(open_source(parse_source_spec("realsense"), cfg), RealSenseSource)


def test_unknown_source_lists_the_valid_forms():
    with pytest.raises(SourceError, match=r"realsense:SERIAL.*FILE\.db3.*phantom:SCENARIO"):
        parse_source_spec("webcam")


def test_phantom_is_built_or_clearly_refused():
    try:
        src = open_source(parse_source_spec("phantom"), EdgeConfig(), frames=2, seed=1)
    except SourceError as exc:
        assert "phantom" in str(exc)
    else:
        assert src.frame_count in (2, None)
