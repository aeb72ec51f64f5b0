import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from edge import geometry
from edge.evaluation import (
    RunStats,
    jitter_mm,
    landmark_offsets_m,
    landmark_offsets_px,
    percentiles,
    pose_error_arrays,
    pose_errors,
)


def _pose(rot_deg, t_m):
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", rot_deg, degrees=True).as_matrix()
    m[:3, 3] = t_m
    return m


def test_pose_errors_known_answers():
    targets = {"a": np.array([0.0, 0.0, 0.05]), "b": np.array([0.02, 0.0, 0.05])}
    true = _pose([0, 0, 0], [0, 0, 0.5])
    shifted = _pose([0, 0, 0], [0.001, 0, 0.5])  # 1 mm to the right
    e = pose_errors(shifted, true, targets)
    assert e.tre_mm == pytest.approx({"a": 1.0, "b": 1.0})
    assert e.rotation_deg == pytest.approx(0.0, abs=1e-6)
    assert e.translation_mm == pytest.approx(1.0)
    rotated = _pose([0, 0, 2.0], [0, 0, 0.5])
    assert pose_errors(rotated, true, targets).rotation_deg == pytest.approx(2.0)
    # A rotation about the z axis through the origin moves target "a" (on the axis) not at all.
    assert pose_errors(rotated, true, targets).tre_mm["a"] == pytest.approx(0.0, abs=1e-9)


def test_pose_error_arrays_known_answers():
    targets = np.array([[0.0, 0.0, 0.05], [0.02, 0.0, 0.05]])
    true = np.stack([_pose([0, 0, 0], [0, 0, 0.5])] * 2)
    estimated = np.stack([_pose([0, 0, 0], [0.001, 0, 0.5]), _pose([0, 0, 2.0], [0, 0, 0.5])])
    e = pose_error_arrays(estimated, true, targets)
    assert e.tre_mm.shape == (2, 2) and e.targets_camera_m.shape == (2, 2, 3)
    np.testing.assert_allclose(e.tre_mm[0], [1.0, 1.0])
    # 2 degrees about z through the origin: "a" (on the axis) stays, "b" moves 20 mm * 2 sin 1 deg.
    np.testing.assert_allclose(e.tre_mm[1], [0.0, 40.0 * np.sin(np.radians(1.0))], atol=1e-9)
    np.testing.assert_allclose(e.rotation_deg, [0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(e.translation_mm[0], 1.0)
    np.testing.assert_allclose(e.targets_camera_m[0], targets + np.array([0.001, 0, 0.5]))
    empty = pose_error_arrays(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), targets)
    assert empty.tre_mm.shape == (0, 2) and empty.rotation_deg.shape == (0,)


@pytest.mark.parametrize("frames", [1, 2, 40])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_pose_error_arrays_equal_one_pose_at_a_time(frames, n_targets):
    """The stacked computation gives the numbers of geometry.apply, np.linalg.norm and
    rotation_angle_deg on each pose alone (the evaluator's figures did not move with it:
    to the bit on the machines measured; here within rounding, since a BLAS may sum a
    stacked product in another order on another CPU)."""
    rng = np.random.default_rng(frames * 10 + n_targets)
    targets = rng.normal(0.0, 0.05, (n_targets, 3))

    def poses():
        angles, shifts = rng.uniform(-20, 20, (frames, 3)), rng.normal(0, 0.2, (frames, 3))
        return np.stack([_pose(a, t) for a, t in zip(angles, shifts, strict=True)])

    estimated, true = poses(), poses()
    e = pose_error_arrays(estimated, true, targets)
    centroid = targets.mean(axis=0, keepdims=True)
    for i in range(frames):
        shown = geometry.apply(estimated[i], targets)
        tre = np.linalg.norm(shown - geometry.apply(true[i], targets), axis=1) * 1000.0
        moved = geometry.apply(estimated[i], centroid) - geometry.apply(true[i], centroid)
        r_err = estimated[i][:3, :3].T @ true[i][:3, :3]
        np.testing.assert_allclose(e.targets_camera_m[i], shown, rtol=0, atol=1e-15)
        np.testing.assert_allclose(e.tre_mm[i], tre, rtol=1e-12, atol=1e-12)
        assert e.rotation_deg[i] == pytest.approx(geometry.rotation_angle_deg(r_err), abs=1e-6)
        assert e.translation_mm[i] == pytest.approx(float(np.linalg.norm(moved) * 1000.0), 1e-12)


def test_landmark_offsets():
    est = np.array([[10.0, 10.0, 5.0], [0.0, 0.0, 0.0]])
    true = np.array([[13.0, 14.0], [0.0, 0.0]])
    np.testing.assert_allclose(landmark_offsets_px(est, true), [[-3.0, -4.0], [0.0, 0.0]])
    est3 = np.array([[0.0, 0.0, 0.5], [np.nan, np.nan, np.nan], [0.0, 0.0, 0.6]])
    true3 = np.array([[0.0, 0.0, 0.501], [0.0, 0.0, 0.5], [0.0, 0.0, 0.6]])
    valid = np.array([True, False, False])
    np.testing.assert_allclose(landmark_offsets_m(est3, valid, true3), [[0.0, 0.0, -0.001]])
    # Not estimated (NaN) landmarks are left out whether flagged valid or not.
    np.testing.assert_allclose(landmark_offsets_m(est3, None, true3), [[0, 0, -0.001], [0, 0, 0]])


def test_jitter_and_percentiles():
    rng = np.random.default_rng(0)
    frames = [np.array([[0, 0, 0.5]]) + rng.normal(0, 0.0001, (1, 3)) for _ in range(2000)]
    assert jitter_mm(frames) == pytest.approx(0.1 * np.sqrt(3), rel=0.05)
    assert np.isnan(jitter_mm(frames[:1]))
    p = percentiles([1, 2, 3, float("nan")], 50, 99)
    assert p["p50"] == 2.0
    assert np.isnan(percentiles([], 50)["p50"])


def test_run_stats():
    s = RunStats()
    s.add({"tracking": 2.0}, 5.0, "TRACKING")
    s.add({"tracking": 4.0}, 6.0, "LOST")
    assert s.stage_summary()["tracking"]["p50_ms"] == pytest.approx(3.0)
    assert s.state_fractions() == {"LOST": 0.5, "TRACKING": 0.5}


def test_run_stats_keep_frame_sums_and_model_inferences():
    """Per frame, the sum of its stage times; per inference, the landmark model's call."""
    s = RunStats()
    s.add({"source": 1.0, "tracking": 3.0, "registration": 2.0}, 9.0, "TRACKING", [1.5])
    s.add({"source": 1.0, "tracking": 5.0}, 9.0, "SEARCHING", [1.0, 2.0])
    s.add({"source": 1.0}, 9.0, None)
    assert list(s.frame_ms) == [6.0, 6.0, 1.0]
    assert list(s.landmark_model_ms) == [1.5, 1.0, 2.0]


def test_rss_trend_ignores_single_swings():
    from edge.bench import rss_trend_pct

    flat = [{"rss_mb": 300.0 + (15.0 if i % 7 == 3 else 0.0)} for i in range(50)]
    flat[-1] = {"rss_mb": 330.0}  # a spike at the very end
    assert rss_trend_pct(flat) == pytest.approx(0.0)
    growing = [{"rss_mb": 300.0 + i} for i in range(50)]
    assert rss_trend_pct(growing) == pytest.approx((344.5 / 304.5 - 1) * 100)
    assert np.isnan(rss_trend_pct(growing[:4]))


def test_tre_estimate_calibration_known_answers():
    from edge.evaluation import tre_estimate_calibration

    est = [1.0] * 20
    true = [0.5] * 19 + [2.0]  # one target-frame of 20 above its estimate
    c = tre_estimate_calibration(est, true)
    assert c["coverage"] == pytest.approx(0.95)
    assert c["median_ratio"] == pytest.approx(2.0)
    assert c["target_frames"] == 20
    assert c["scale_for_95"] == pytest.approx(np.percentile([0.5] * 19 + [2.0], 95))
    # Not estimated (NaN) target-frames are left out, not counted as covered.
    assert tre_estimate_calibration([float("nan")], [1.0])["target_frames"] == 0


def test_gate_confusion_counts_refusals_against_the_truth():
    from edge.evaluation import gate_confusion

    records = [
        (0.3, []),  # accurate, passed
        (0.5, ["landmark_surface"]),  # accurate, refused: a false refusal
        (1.5, ["landmark_surface"]),  # neither accurate nor inaccurate, refused
        (7.0, ["relief", "landmark_surface"]),  # inaccurate, caught by two gates
        (3.0, []),  # inaccurate, passed
    ]
    g = gate_confusion(records)
    ls = g["landmark_surface"]
    assert (ls["refused_tre_gt2"], ls["refused_tre_le2"]) == (1, 2)
    assert (ls["passed_tre_gt2"], ls["passed_tre_le2"]) == (1, 1)
    assert ls["catch_rate"] == pytest.approx(0.5)
    assert ls["false_refusal_rate"] == pytest.approx(0.5)
    assert g["relief"]["refused_tre_gt2"] == 1 and g["relief"]["false_refusal_rate"] == 0.0
    assert g["any"]["refused_tre_gt2"] + g["any"]["refused_tre_le2"] == 3
    assert np.isnan(gate_confusion([(0.2, [])])["tre"]["catch_rate"])


def test_prediction_check_against_interpolated_truth_known_answer():
    from edge.evaluation import PredictionCheck
    from edge.transport.prediction import PoseVelocity

    def pose(t_s: float) -> np.ndarray:
        p = np.eye(4)
        p[:3, 3] = [0.1 * t_s, 0.0, 0.5]  # 10 cm/s along x
        return p

    check = PredictionCheck()
    targets = np.array([[0.0, 0.0, 0.0], [0.01, 0.02, 0.0]])
    right = PoseVelocity(np.array([0.0, 0.0, 0.5]), np.array([0.1, 0.0, 0.0]), np.zeros(3))
    for i in range(10):
        t = i / 30.0
        check.add(t, pose(t), pose(t), right if i >= 1 else None)
    check.add(0.5, None, pose(0.5), right)  # no truth at 0.5 s (face away), none after it
    out = check.summary(targets)
    # Frames 1-8 have truth 30 ms on (frame 9's lies past the last truth frame); 60 ms: 1-7.
    assert out["prediction_error_mm"]["30"]["target_frames"] == 2 * 8
    assert out["prediction_error_mm"]["60"]["target_frames"] == 2 * 7
    assert out["prediction_error_mm"]["30"]["median"] == pytest.approx(0.0, abs=1e-9)
    assert out["unpredicted_error_mm"]["30"]["median"] == pytest.approx(3.0)
    assert out["unpredicted_error_mm"]["60"]["p95"] == pytest.approx(6.0)
