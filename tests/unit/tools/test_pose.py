"""The pose's depth refinement: weighted against the PnP pose's own uncertainty, so that a
biased depth camera does not move a well-determined multi-marker pose."""

from __future__ import annotations

import numpy as np
import pytest

from edge.tools.definition import load_tool
from edge.tools.pose import (
    CORNER_BIAS_PX,
    DEPTH_SIGMA_M,
    MarkerDetector,
    pnp_range_sigma_m,
    solve_tool_pose,
)

BIAS_M = 0.004


def _biased(depth: np.ndarray, scale_m: float, bias_m: float) -> np.ndarray:
    out = depth.astype(np.int64)
    out[depth > 0] += round(bias_m / scale_m)
    return out.astype(np.uint16)


def _tip(spec, frame, found, depth):
    est = solve_tool_pose(
        spec,
        found,
        frame.intrinsics,
        max_reprojection_px=2.0,
        depth=depth,
        depth_scale_m=frame.depth_scale_m,
    )
    assert est is not None
    return est.tool_to_camera[:3, :3] @ spec.tip_m + est.tool_to_camera[:3, 3], est


def test_a_depth_bias_does_not_pass_into_a_multi_marker_tip(occluded_frames, repo_root) -> None:
    spec = load_tool("needle-guide", repo_root / "hardware/tools")
    detector = MarkerDetector({spec.dictionary})
    shifts_mm, errors_mm = [], []
    for frame in occluded_frames[:40:4]:
        if not frame.truth.tool_visible:
            continue
        found = detector.detect(frame.bgr()[..., 1].copy())[spec.dictionary]
        biased = _biased(frame.depth, frame.depth_scale_m, BIAS_M)
        tip, _ = _tip(spec, frame, found, frame.depth)
        tip_biased, est = _tip(spec, frame, found, biased)
        assert len(est.markers_used) >= 2
        shifts_mm.append(np.linalg.norm(tip_biased - tip) * 1000.0)
        errors_mm.append(np.linalg.norm(tip_biased - frame.truth.tool_tip_camera_m) * 1000.0)
    assert len(shifts_mm) >= 5
    # Trusting the depth moved the tip by the whole 4 mm bias along the view ray; weighted
    # against the pose's own range error (about 1 mm here) it moves it a quarter of that.
    assert max(shifts_mm) < BIAS_M * 1000.0 / 3.0
    assert np.median(errors_mm) < 1.0


def test_a_single_marker_pose_leans_on_the_depth_more() -> None:
    """The weight of the depth grows as the PnP pose's range gets less certain."""
    h = 0.0125
    square = np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])
    one = square + np.array([0.0, 0.0, 0.5])
    five = np.concatenate(
        [one + np.array([dx, 0.0, 0.0]) for dx in (-0.04, -0.02, 0.0, 0.02, 0.04)]
    )
    sigma_one = pnp_range_sigma_m(one, 0.15, 615.0)
    sigma_five = pnp_range_sigma_m(five, 0.15, 615.0)
    # z hypot(sigma / sqrt(N), bias) / spread_px: 0.5 m x 0.125 px / 21.7 px = 2.9 mm.
    spread_px = 615.0 * h * np.sqrt(2) / 0.5
    expected = 0.5 * np.hypot(0.15 / 2.0, CORNER_BIAS_PX) / spread_px
    assert sigma_one == pytest.approx(expected, rel=1e-9)
    assert sigma_five < sigma_one / 2
    w_one, w_five = (s**2 / (s**2 + DEPTH_SIGMA_M**2) for s in (sigma_one, sigma_five))
    assert w_five < 0.2 < 0.4 < w_one
