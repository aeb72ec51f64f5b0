"""Known-answer tests of the tracking cores that need no model: anchors, decoding, NMS,
letterbox, crops, patient rule, depth lift, One Euro filter, provider choice."""

from __future__ import annotations

import numpy as np
import pytest

from edge.config import ConfigError, parse_config
from edge.errors import StateError
from edge.frames import Intrinsics
from edge.tracking.anchors import ssd_anchors
from edge.tracking.depth import DepthSampling, landmark_depths_m, lift_landmarks
from edge.tracking.detector import (
    Detection,
    decode_boxes,
    iou,
    letterbox,
    sigmoid,
    sigmoid_of,
    weighted_nms,
)
from edge.tracking.landmarks import Roi, check_crop, roi_from_detection, roi_from_landmarks
from edge.tracking.runtime import choose_providers
from edge.tracking.smoothing import OneEuroFilter
from edge.tracking.tracker import _Patient, choose_patient, cross_check

K = Intrinsics(640, 480, 600.0, 600.0, 320.0, 240.0)


# ----------------------------------------------------------------------------- anchors, decoding


def test_anchors_match_blazeface_short_range():
    a = ssd_anchors()
    assert a.shape == (896, 2)
    # 16x16 grid, 2 anchors per cell, then 8x8 grid, 6 anchors per cell.
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(a[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_decode_box_and_keypoints_relative_to_anchor():
    anchors = np.array([[0.25, 0.5]], np.float32)  # centre (32, 64) px of a 128 input
    raw = np.zeros((1, 16), np.float32)
    raw[0, :4] = [4.0, -2.0, 20.0, 10.0]
    raw[0, 4:6] = [-5.0, 3.0]
    boxes, kps = decode_boxes(raw, anchors, 128)
    np.testing.assert_allclose(boxes[0], [36 - 10, 62 - 5, 36 + 10, 62 + 5])
    np.testing.assert_allclose(kps[0, 0], [27.0, 67.0])
    np.testing.assert_allclose(kps[0, 1], [32.0, 64.0])
    with pytest.raises(ValueError):
        decode_boxes(raw, np.zeros((2, 2), np.float32))


def test_sigmoid_clips_huge_logits_without_overflow():
    with np.errstate(over="raise"):
        s = sigmoid(np.array([-1e6, 0.0, 1e6]))
    np.testing.assert_allclose(s, [1 / (1 + np.exp(100)), 0.5, 1 / (1 + np.exp(-100))])


def test_sigmoid_of_one_logit_is_the_arrays_value():
    logits = [-1e6, -100.0, -3.7, -1e-9, 0.0, 0.3, 2.5, 17.0, 1e6]
    logits += list(np.random.default_rng(0).normal(0.0, 8.0, 1000))
    with np.errstate(over="raise"):
        for x in logits:
            assert sigmoid_of(float(x)) == float(sigmoid(np.array(x)))
    assert sigmoid_of(0.0) == 0.5 and np.isnan(sigmoid_of(float("nan")))


def test_weighted_nms_blends_overlapping_boxes_and_keeps_separate_ones():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    kps = np.zeros((3, 6, 2))
    kps[1] += 3.0
    scores = np.array([0.9, 0.6, 0.8])
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert len(out) == 2
    score, box, kp = out[0]
    assert score == 0.9  # the cluster keeps its best score
    np.testing.assert_allclose(box, [0.4, 0, 10.4, 10])  # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(kp, np.full((6, 2), 1.2))
    assert out[1][0] == 0.8
    np.testing.assert_allclose(out[1][1], boxes[2])


def test_weighted_nms_survives_degenerate_boxes():
    boxes = np.zeros((2, 4))
    out = weighted_nms(boxes, np.zeros((2, 6, 2)), np.array([0.7, 0.6]))
    assert len(out) == 2  # zero-area boxes overlap nothing; no infinite loop
    assert iou(boxes[0], boxes).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("w,h", [(640, 480), (512, 600), (128, 128), (37, 200)])
def test_letterbox_maps_image_pixels_back_exactly(w, h):
    image = np.zeros((h, w, 3), np.uint8)
    image[h // 2, w // 2] = 255
    tensor, lb = letterbox(image, 128, (-1.0, 1.0))
    assert tensor.shape == (1, 128, 128, 3) and tensor.dtype == np.float32
    assert tensor.min() == -1.0  # black padding maps to the low end of the range
    # Image pixel (x, y) has continuous coordinate x + 0.5; forward then back is the identity.
    pts = np.array([[0.0, 0.0], [w - 1.0, h - 1.0], [w / 3, h / 5]])
    tensor_xy = np.stack(
        [
            (pts[:, 0] + 0.5) * lb.scale_x + lb.offset_x,
            (pts[:, 1] + 0.5) * lb.scale_y + lb.offset_y,
        ],
        axis=1,
    )
    np.testing.assert_allclose(lb.to_image_px(tensor_xy), pts, atol=1e-9)
    assert tensor_xy.min() >= 0 and tensor_xy.max() <= 128


def test_letterbox_rejects_non_images():
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10), np.uint8), 128, (0.0, 1.0))


# ----------------------------------------------------------------------------- crops


def test_roi_crop_to_image_rotation_and_scale():
    roi = Roi(100.0, 50.0, 192.0, np.pi / 2)  # crop x axis points down the image
    m = roi.crop_to_image(192)
    centre = m @ np.array([95.5, 95.5, 1.0])  # continuous 96 = the crop centre
    np.testing.assert_allclose(centre, [100, 50], atol=1e-9)
    step = m[:, :2] @ np.array([1.0, 0.0])
    np.testing.assert_allclose(step, [0, 1], atol=1e-12)


def test_roi_crop_to_image_known_answer():
    """Upright, twice the crop's size: pixel u of the crop is image x = 2u + (100 - 191)."""
    m = Roi(100.0, 50.0, 384.0, 0.0).crop_to_image(192)
    assert m.shape == (2, 3) and m.dtype == np.float64
    np.testing.assert_array_equal(m, [[2.0, 0.0, -91.0], [0.0, 2.0, -141.0]])


def test_roi_from_detection_uses_eye_line_and_1_5x_box():
    kps = np.array([[10.0, 10.0], [20.0, 20.0], [0, 0], [0, 0], [0, 0], [0, 0]])
    det = Detection(0.9, np.array([0.0, 0.0, 40.0, 20.0]), kps)
    roi = roi_from_detection(det)
    assert (roi.centre_x, roi.centre_y) == (20.0, 10.0)
    assert roi.size_px == pytest.approx(60.0)  # long side 40 * 1.5
    assert roi.angle_rad == pytest.approx(np.pi / 4)


def test_roi_from_landmarks_uses_box_and_eye_corners():
    lm = np.zeros((468, 3))
    lm[:, 0] = np.linspace(100, 200, 468)
    lm[:, 1] = np.linspace(50, 130, 468)
    lm[33, :2] = [120, 80]
    lm[263, :2] = [180, 80]
    roi = roi_from_landmarks(lm)
    assert (roi.centre_x, roi.centre_y) == (150.0, 90.0)
    assert roi.size_px == pytest.approx(150.0)
    assert roi.angle_rad == pytest.approx(0.0)


def test_crop_check_flags_landmarks_off_the_crop():
    rng = np.random.default_rng(1)
    centred = 96 + rng.uniform(-64, 64, (468, 2))
    assert check_crop(centred, 192).ok
    off = centred + np.array([70.0, 0.0])  # piled past the right border
    bad = check_crop(off, 192)
    assert not bad.ok and "outside" in bad.reason
    shifted = 96 + rng.uniform(-40, 40, (468, 2)) + np.array([55.0, 0.0])
    drift = check_crop(shifted, 192)
    assert not drift.ok and "off its centre" in drift.reason
    tiny = 96 + rng.uniform(-10, 10, (468, 2))
    assert "span" in check_crop(tiny, 192).reason
    nan = centred.copy()
    nan[5] = np.nan
    assert not check_crop(nan, 192).ok


# ----------------------------------------------------------------------------- patient rule


def _det(cx: float, cy: float, size: float, score: float = 0.9) -> Detection:
    h = size / 2
    return Detection(score, np.array([cx - h, cy - h, cx + h, cy + h]), np.zeros((6, 2)))


def test_patient_is_largest_face_without_history():
    small, large = _det(100, 100, 50, 0.99), _det(400, 300, 120, 0.6)
    chosen, same = choose_patient([small, large], None)
    assert chosen is large and not same
    assert choose_patient([], None) == (None, False)


def test_patient_is_nearest_to_previous_within_one_face_size():
    near, large = _det(110, 100, 60), _det(400, 300, 150)
    chosen, same = choose_patient([large, near], _Patient(np.array([100.0, 100.0]), 60.0))
    assert chosen is near and same
    # The previous face is gone (nearest detection farther than one face size): largest wins.
    chosen, same = choose_patient([large, near], _Patient(np.array([300.0, 50.0]), 60.0))
    assert chosen is large and not same


def test_cross_check_detects_a_slipped_crop_but_not_a_missed_detection():
    tracked = np.array([100.0, 100.0, 200.0, 200.0])  # centre (150, 150), size 100
    assert cross_check([_det(155, 150, 100)], tracked) == ""
    assert "px from the tracked" in cross_check([_det(200, 150, 100)], tracked)
    assert cross_check([_det(500, 400, 100)], tracked) == ""  # someone else, far away
    assert cross_check([], tracked) == ""


# ----------------------------------------------------------------------------- depth


def _plane(z: float = 0.5) -> np.ndarray:
    return np.full((480, 640), z, np.float32)


def test_lift_on_a_plane_recovers_metric_points():
    px = np.array([[320.0, 240.0], [20.0, 30.0], [600.5, 400.2]])
    pts, valid = lift_landmarks(px, _plane(0.5), K)
    assert valid.all()
    np.testing.assert_allclose(pts[0], [0, 0, 0.5])
    np.testing.assert_allclose(pts[1], [(20 - 320) / 600 * 0.5, (30 - 240) / 600 * 0.5, 0.5])


def test_median_ignores_a_few_holes_and_outliers():
    depth = _plane(0.5)
    depth[238:241, 318:321] = 0.0  # 9 of 25 pixels are holes
    depth[242, 322] = 2.5  # one wild value
    z, valid = landmark_depths_m(np.array([[320.0, 240.0]]), depth)
    assert valid[0] and z[0] == pytest.approx(0.5)


def test_holes_and_edges_are_invalid_and_nan():
    depth = _plane(0.5)
    depth[:, :100] = 0.0  # a hole region
    depth[:, 300:] = 0.8  # a depth step at x = 300
    px = np.array([[50.0, 100.0], [300.0, 100.0], [200.0, 100.0], [-5.0, 10.0], [np.nan, 3.0]])
    pts, valid = lift_landmarks(px, depth, K)
    assert valid.tolist() == [False, False, True, False, False]
    assert np.isnan(pts[~valid]).all()
    assert np.isfinite(pts[valid]).all()


def test_no_depth_means_every_landmark_invalid():
    pts, valid = lift_landmarks(np.zeros((468, 3)) + 100, None, K)
    assert not valid.any() and np.isnan(pts).all()


def test_depth_full_of_holes_never_gives_nan_marked_valid():
    rng = np.random.default_rng(3)
    depth = _plane(0.6) * (rng.random((480, 640)) > 0.6)  # 60 % holes
    px = rng.uniform([0, 0], [640, 480], (468, 2))
    pts, valid = lift_landmarks(px, depth, K)
    assert np.isfinite(pts[valid]).all() and np.isnan(pts[~valid]).all()
    assert valid.sum() < 468 // 2


def test_depth_sampling_rejects_bad_settings():
    with pytest.raises(ValueError):
        DepthSampling(window_px=4)
    with pytest.raises(ValueError):
        lift_landmarks(np.zeros((1, 2)), np.zeros((10, 10), np.float32), K)


# ----------------------------------------------------------------------------- One Euro


def test_one_euro_reduces_jitter_on_a_static_signal():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(1.0, 0.05, 1.0)
    t = np.arange(300) / 30.0
    raw = 100.0 + rng.normal(0, 1.0, (300, 468, 2))
    out = np.stack([f(raw[i], t[i]) for i in range(300)])
    raw_jitter = raw[30:].std(axis=0).mean()
    out_jitter = out[30:].std(axis=0).mean()
    assert out_jitter < 0.5 * raw_jitter  # measured: 0.38


def test_one_euro_adds_little_lag_on_a_moving_signal():
    f = OneEuroFilter(1.0, 0.05, 1.0)
    t = np.arange(90) / 30.0
    speed = 300.0  # px/s, a quick head movement across a 640 px frame
    out = np.array([f(np.array([speed * ti]), ti)[0] for ti in t])
    lag_s = (speed * t[30:] - out[30:]).mean() / speed
    slow = OneEuroFilter(1.0, 0.0, 1.0)  # same cutoff without the speed term
    out_slow = np.array([slow(np.array([speed * ti]), ti)[0] for ti in t])
    lag_slow_s = (speed * t[30:] - out_slow[30:]).mean() / speed
    assert lag_s < 0.015  # under half a frame at 30 fps (measured 8 ms)
    assert lag_s < 0.1 * lag_slow_s  # the beta term removes the lag (159 ms without it)


def test_one_euro_restarts_entries_after_nan_and_refuses_time_going_back():
    f = OneEuroFilter(1.0, 0.0, 1.0)
    f(np.array([1.0, 1.0]), 0.0)
    out = f(np.array([np.nan, 2.0]), 0.1)
    assert np.isnan(out[0]) and 1.0 < out[1] < 2.0
    out = f(np.array([5.0, 2.0]), 0.2)
    assert out[0] == 5.0  # restarted from the new value, not pulled towards a stale one
    with pytest.raises(StateError):
        f(np.array([5.0, 2.0]), 0.1)
    with pytest.raises(ValueError):
        f(np.zeros(3), 0.3)
    with pytest.raises(ValueError):
        OneEuroFilter(0.0, 0.1, 1.0)


# ----------------------------------------------------------------------------- providers, config


def test_provider_choice_falls_back_to_cpu():
    chosen, missing = choose_providers(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert chosen == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert missing == ["TensorrtExecutionProvider"]
    chosen, missing = choose_providers(["OpenVINOExecutionProvider"], ["CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"] and missing == ["OpenVINOExecutionProvider"]
    assert choose_providers(["Bogus"], ["Bogus", "CPUExecutionProvider"])[1] == ["Bogus"]


@pytest.mark.parametrize(
    "section",
    [
        {"intra_op_threads": 0},
        {"presence_threshold": 1.5},
        {"depth_window_px": 4},
        {"roi_scale": 0.9},
        {"redetect_interval_frames": -1},
    ],
)
def test_tracking_config_rejects_bad_values(section):
    with pytest.raises(ConfigError, match="tracking"):
        parse_config({"tracking": section})
