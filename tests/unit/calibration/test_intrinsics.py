"""Camera intrinsics from rendered ChArUco views with known intrinsics and distortion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.calibration.boards import BoardSpec, load_board
from edge.calibration.intrinsics import (
    Verdict,
    ViewCollector,
    calibrate_views,
    quality_problems,
)
from edge.calibration.synthetic import (
    BoardRenderer,
    SyntheticBoardSource,
    TrueCamera,
    board_poses,
    rotation,
    transform,
)
from edge.config import CalibrationConfig
from edge.errors import CalibrationError, StateError
from edge.frames import Frame, PixelFormat


@pytest.fixture(scope="module")
def board(repo_root) -> BoardSpec:
    return load_board("a4-charuco-7x5", repo_root / "calibration" / "boards")


@pytest.fixture(scope="module")
def frames(board) -> list[Frame]:
    with SyntheticBoardSource(board, TrueCamera(), frames=20, seed=2, noise_grey=2.0) as src:
        return list(src)


def collect(board, frames, config=None) -> ViewCollector:
    collector = ViewCollector(board, config or CalibrationConfig())
    for f in frames:
        collector.add(f)
    return collector


def grey_frame(image: np.ndarray, number: int = 0) -> Frame:
    cam = TrueCamera()
    return Frame(
        number=number,
        color=np.repeat(image[:, :, None], 3, axis=2),
        color_format=PixelFormat.RGB8,
        depth=None,
        depth_scale_m=0.001,
        intrinsics=cam.factory_intrinsics(),
    )


def test_intrinsics_recovered_within_tolerance(board, frames) -> None:
    cam = TrueCamera()
    sol = calibrate_views(board, collect(board, frames), "brown5")
    assert abs(sol.fx - cam.fx) / cam.fx < 0.005
    assert abs(sol.fy - cam.fy) / cam.fy < 0.005
    assert abs(sol.cx - cam.cx) < 1.0
    assert abs(sol.cy - cam.cy) < 1.0
    assert sol.rms_px < 0.3
    assert len(sol.per_view_rms_px) == len(sol.views) == 20
    # The reported uncertainty must be honest: the true value within 4 sigma.
    for name, true in (("fx", cam.fx), ("fy", cam.fy), ("cx", cam.cx), ("cy", cam.cy)):
        assert abs(getattr(sol, name) - true) < 4 * sol.std_devs[name] + 0.05
    assert quality_problems(board, sol, CalibrationConfig()) == []


def test_factory_comparison_and_board_size_check(board, frames) -> None:
    cam = TrueCamera()
    sol = calibrate_views(board, collect(board, frames), "brown5")
    fc = sol.factory_comparison
    # The synthetic factory intrinsics are 0.8 % long in focal and have no distortion.
    assert fc["fx_diff_pct"] == pytest.approx(0.8 + 100 * (cam.fx - sol.fx) / sol.fx, abs=0.05)
    assert fc["rms_px_factory"] > sol.rms_px
    assert sol.board_size_ratio == pytest.approx(1.0, abs=0.02)


def test_wrong_square_size_is_refused(board, frames) -> None:
    wrong = dataclasses.replace(board, square_mm=30.0, marker_mm=22.0)
    sol = calibrate_views(wrong, collect(wrong, frames), "brown5")
    problems = quality_problems(wrong, sol, CalibrationConfig())
    assert any("square size" in p and "ruler" in p for p in problems)


def test_other_board_declared_is_refused(repo_root, frames) -> None:
    other = load_board("a3-charuco-11x8", repo_root / "calibration" / "boards")
    collector = collect(other, frames[:4])
    assert collector.views == []
    with pytest.raises(CalibrationError, match="do not form board a3-charuco-11x8"):
        collector.finish()


def test_no_board_found(board) -> None:
    collector = collect(board, [grey_frame(np.full((480, 640), 128, np.uint8))])
    with pytest.raises(CalibrationError, match="no board found in 1 frames"):
        collector.finish()


def test_too_few_views(board, frames) -> None:
    with pytest.raises(CalibrationError, match="too few views: 3 accepted, need 8"):
        collect(board, frames[:3]).finish()


def test_views_in_one_part_of_the_image_refused(board) -> None:
    cam = TrueCamera()
    # Ten views, all with the board near the image centre and far away.
    rng = np.random.default_rng(3)
    centre = np.array([board.width_mm / 2000, board.height_mm / 2000, 0.0])
    poses = []
    for _ in range(10):
        r = rotation(rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-10, 10))
        poses.append(transform(r, np.array([0.0, 0.0, 0.9]) - r @ centre))
    with SyntheticBoardSource(board, cam, frames=10, poses=poses) as src:
        collector = collect(board, list(src), CalibrationConfig(min_views=3))
    assert len(collector.views) >= 3
    with pytest.raises(CalibrationError, match=r"views cover \d+\.\d % of the image, need 60 %"):
        collector.finish()


def test_blurred_and_duplicate_views_rejected(board) -> None:
    cam = TrueCamera()
    renderer = BoardRenderer(board, cam)
    pose = board_poses(board, cam, 1, seed=5)[0]
    sharp, _ = renderer.render(pose, 1.0)
    blurred, _ = renderer.render(pose, 1.0, blur_px=2.0)
    collector = ViewCollector(board, CalibrationConfig())
    assert collector.add(grey_frame(blurred, 0)).verdict is Verdict.BLURRED
    assert collector.add(grey_frame(sharp, 1)).accepted
    assert collector.add(grey_frame(sharp, 2)).verdict is Verdict.DUPLICATE
    assert "1 blurred" in collector.progress()
    assert "coverage" in collector.progress()


def test_collector_refuses_use_after_finish(board, frames) -> None:
    collector = collect(board, frames)
    collector.finish()
    with pytest.raises(StateError):
        collector.add(frames[0])


def test_distortion_model_none_fits_worse(board, frames) -> None:
    sol = calibrate_views(board, collect(board, frames), "none")
    full = calibrate_views(board, collect(board, frames), "brown5")
    assert sol.coefficients() == {}
    assert sol.rms_px > 1.3 * full.rms_px  # the true camera is distorted


def test_unknown_distortion_model(board, frames) -> None:
    with pytest.raises(CalibrationError, match="unknown distortion model"):
        calibrate_views(board, collect(board, frames), "fisheye")
