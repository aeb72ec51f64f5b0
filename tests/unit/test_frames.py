import numpy as np
import pytest

from edge.errors import StateError
from edge.frames import Frame, Intrinsics, PixelFormat, SourceState
from support.fakes import CountingSource


def _intr(w=64, h=48):
    return Intrinsics(w, h, 60.0, 61.0, 31.5, 23.5)


def test_project_deproject_round_trip():
    intr = _intr()
    pts = np.array([[0.01, -0.02, 0.5], [0.0, 0.0, 1.0], [-0.1, 0.05, 0.7]])
    px = intr.project(pts)
    back = intr.deproject(px, pts[:, 2])
    np.testing.assert_allclose(back, pts, atol=1e-12)
    np.testing.assert_allclose(px[1], [31.5, 23.5])


def test_scaled_intrinsics_keep_field_of_view():
    intr = _intr(640, 480).scaled(320, 240)
    assert intr.fx == pytest.approx(30.0)
    assert intr.ppx == pytest.approx(15.5)


def test_frame_validates_shapes():
    color = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="not aligned"):
        Frame(0, color, PixelFormat.RGB8, np.zeros((10, 10), np.uint16), 0.001, _intr())
    with pytest.raises(ValueError, match="intrinsics"):
        Frame(0, color, PixelFormat.RGB8, None, 0.001, _intr(32, 24))
    f = Frame(0, color, PixelFormat.RGB8, np.full((48, 64), 500, np.uint16), 0.001, _intr())
    assert f.depth_m() is not None and float(f.depth_m()[0, 0]) == pytest.approx(0.5)


def test_source_lifecycle_and_wrong_state_errors():
    src = CountingSource(3)
    with pytest.raises(StateError, match="open it first"):
        src.read()
    with src:
        assert [f.number for f in src] == [1, 2, 3]
        assert src.state is SourceState.EXHAUSTED
        assert src.read() is None
    assert src.state is SourceState.CLOSED
    with pytest.raises(StateError):
        src.read()
    with pytest.raises(StateError, match="opened once"):
        src.open()
