"""The tracking stage's compiled kernels against the numpy code they replaced (issue 15):
the same results to the bit, or to 1e-12 where numpy's matrix product rounds differently."""

from __future__ import annotations

import numpy as np
import pytest

from edge.frames import Intrinsics
from edge.tracking.depth import DepthSampling, landmark_depths_m, lift_landmarks

K = Intrinsics(640, 480, 600.0, 610.0, 321.5, 239.25)


def _depths_numpy(px, depth, sampling, depth_scale_m):
    """The numpy landmark_depths_m before its kernel: sort each window, holes last."""
    h, w = depth.shape
    n = px.shape[0]
    finite = np.isfinite(px).all(axis=1)
    centre = np.zeros((n, 2), dtype=np.int64)
    with np.errstate(invalid="ignore"):  # 1e300 casts to some integer outside the image
        centre[finite] = np.rint(px[finite]).astype(np.int64)
    inside = finite & (centre[:, 0] >= 0) & (centre[:, 0] < w) & (centre[:, 1] >= 0)
    inside &= centre[:, 1] < h
    r = sampling.window_px // 2
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    xs = centre[:, 0:1] + ox.reshape(1, -1)
    ys = centre[:, 1:2] + oy.reshape(1, -1)
    in_image = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    flat = np.clip(ys, 0, h - 1) * w + np.clip(xs, 0, w - 1)
    values = np.take(depth.ravel(), flat).astype(np.float32) * np.float32(depth_scale_m)
    ok = in_image & (values > sampling.min_m) & (values < sampling.max_m) & np.isfinite(values)
    count = ok.sum(axis=1)
    ordered = np.sort(np.where(ok, values, np.inf), axis=1)
    rows = np.arange(n)

    def pick(q):
        idx = np.clip(np.floor(q * (count - 1)).astype(np.int64), 0, values.shape[1] - 1)
        return ordered[rows, idx]

    with np.errstate(invalid="ignore"):
        lo_mid = pick(0.5)
        hi_mid = ordered[rows, np.clip(count // 2, 0, values.shape[1] - 1)]
        median = np.where(count % 2 == 1, lo_mid, (lo_mid + hi_mid) / 2)
        spread = pick(0.9) - pick(0.1)
    valid = inside & (count >= sampling.min_valid_fraction * values.shape[1])
    valid &= spread <= sampling.max_spread_m
    return np.where(valid, median, np.nan), valid


def _lift_numpy(px, depth, intrinsics, sampling, depth_scale_m):
    z, valid = _depths_numpy(px, depth, sampling, depth_scale_m)
    points = intrinsics.deproject(np.where(valid[:, None], px, 0.0), np.where(valid, z, 0.0))
    valid &= np.isfinite(points).all(axis=1)
    points[~valid] = np.nan
    return points, valid


def _face_depth(rng, dtype):
    """A curved surface with holes, speckle and a depth step, in raw units or metres."""
    yy, xx = np.mgrid[0:480, 0:640]
    z = 0.55 + 0.08 * np.hypot(xx - 320, yy - 240) / 400 + rng.normal(0, 0.003, (480, 640))
    z[:, 400:] += 0.03  # an edge the spread test refuses
    z[rng.random((480, 640)) < 0.3] = 0.0  # holes
    z[rng.random((480, 640)) < 0.01] = 5.0  # beyond max_m
    raw = np.round(z / 0.0001).astype(np.uint16) if dtype == np.uint16 else z.astype(dtype)
    raw.flags.writeable = False  # as a recording's frame (a view of the file's bytes)
    return raw, 0.0001 if dtype == np.uint16 else 1.0


def _pixels(rng, n):
    px = rng.uniform([-4, -4], [644, 484], (n, 2))
    px[:3] = [[0.5, 0.5], [639.4, 479.6], [2.5, 3.5]]  # borders; rint's ties to even
    px[3] = [np.nan, 10.0]
    px[4] = [np.inf, 10.0]
    px[5] = [1e300, -1e300]
    return px


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("window", [1, 3, 5, 7])
def test_lift_kernel_equals_numpy_to_the_bit(dtype, window):
    rng = np.random.default_rng(window)
    depth, scale = _face_depth(rng, dtype)
    sampling = DepthSampling(window_px=window, min_valid_fraction=0.4, max_spread_m=0.01)
    px = _pixels(rng, 600)
    z, valid = landmark_depths_m(px, depth, sampling, scale)
    z_ref, valid_ref = _depths_numpy(px, depth, sampling, scale)
    assert z.dtype == z_ref.dtype
    np.testing.assert_array_equal(valid, valid_ref)
    np.testing.assert_array_equal(z, z_ref)  # NaN where invalid in both
    points, lifted = lift_landmarks(px, depth, K, sampling, scale)
    points_ref, lifted_ref = _lift_numpy(px, depth, K, sampling, scale)
    np.testing.assert_array_equal(lifted, lifted_ref)
    np.testing.assert_array_equal(points, points_ref)
    assert 0.1 < lifted.mean() < 0.97  # both valid and invalid windows were tested


def test_lift_kernel_median_of_an_even_count():
    depth = np.zeros((480, 640), np.float32)
    depth[100, 100:103] = [0.5, 0.6, 0.7]
    depth[101, 100] = 0.52  # four valid depths in the 3x3 window around (101, 101)
    sampling = DepthSampling(window_px=3, min_valid_fraction=0.4, max_spread_m=0.5)
    z, valid = landmark_depths_m(np.array([[101.0, 101.0]]), depth, sampling)
    assert valid[0] and z[0] == np.float32((np.float32(0.52) + np.float32(0.6)) / 2)


class _OneEuroNumpy:
    """The numpy One Euro step before its kernel."""

    def __init__(self, min_cutoff_hz, beta, d_cutoff_hz):
        self.args = (min_cutoff_hz, beta, d_cutoff_hz)
        self.x = self.dx = self.t = None

    def __call__(self, x, t_s):
        def alpha(cutoff, dt):
            tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, dtype=np.float64))
            return 1.0 / (1.0 + tau / dt)

        min_cutoff, beta, d_cutoff = self.args
        if self.x is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t_s
            return x.copy()
        dt = t_s - self.t
        fresh = np.isnan(self.x) & ~np.isnan(x)
        prev = np.where(fresh, x, self.x)
        dx = (x - prev) / dt
        dx_hat = self.dx + alpha(d_cutoff, dt) * (dx - self.dx)
        dx_hat = np.where(fresh, 0.0, dx_hat)
        x_hat = prev + alpha(min_cutoff + beta * np.abs(dx_hat), dt) * (x - prev)
        self.x, self.dx, self.t = x_hat, np.where(np.isnan(x_hat), 0.0, dx_hat), t_s
        return x_hat.copy()


@pytest.mark.parametrize("shape", [(468, 3), (5, 3), (3,)])
def test_one_euro_kernel_equals_numpy_to_the_bit(shape):
    from edge.tracking.smoothing import OneEuroFilter

    rng = np.random.default_rng(len(shape))
    fast, slow = OneEuroFilter(1.3, 0.07, 0.9), _OneEuroNumpy(1.3, 0.07, 0.9)
    t = 10.0
    base = rng.normal(0, 50, shape)
    for step in range(40):
        x = base + rng.normal(0, 2, shape) + step * 0.8
        x[rng.random(shape) < 0.1] = np.nan  # gaps: the entries restart after them
        t += rng.uniform(0.01, 0.05)
        out = fast(x, t)
        np.testing.assert_array_equal(out, slow(x, t))
    assert np.isnan(out).any() and np.isfinite(out).any()


class _EchoRunner:
    """A landmark 'model' that keeps its input and answers with fixed outputs."""

    name = "echo"

    def __init__(self, outputs):
        from edge.models.manifest import InputSpec

        self.spec = InputSpec(name="input", shape=(1, 192, 192, 3), value_range=(-1.0, 1.0))
        self.outputs = outputs
        self.inputs = []

    def run(self, x):
        self.inputs.append(x.copy())
        return self.outputs


def _landmark_model(rng):
    from edge.tracking.landmarks import LandmarkModel

    raw = rng.uniform(-20, 212, (1, 1, 1, 1404)).astype(np.float32)
    return LandmarkModel(_EchoRunner([raw, np.array([[0.7]], np.float32)])), raw


@pytest.mark.parametrize("bgr", [False, True])
def test_crop_kernel_equals_numpy_to_the_bit(bgr):
    import cv2

    from edge.tracking.landmarks import Roi

    rng = np.random.default_rng(int(bgr))
    model, _ = _landmark_model(rng)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for roi in (Roi(300.5, 200.25, 250.0, 0.3), Roi(20.0, 460.0, 300.0, -2.0)):  # borders too
        patch = cv2.warpAffine(
            image,
            roi.crop_to_image(192),
            (192, 192),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if bgr:
            patch = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)
        expected = (patch.astype(np.float32) * np.float32(2 / 255.0) + np.float32(-1.0))[None]
        got = model.crop(image, roi, bgr=bgr)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
        model.run(image, roi, bgr=bgr)
        np.testing.assert_array_equal(model.model.inputs[-1], expected)


def test_decode_kernel_equals_numpy():
    from edge.tracking.landmarks import Roi

    rng = np.random.default_rng(7)
    model, raw = _landmark_model(rng)
    roi = Roi(310.7, 222.1, 233.3, 0.4)
    out = model.run(np.zeros((480, 640, 3), np.uint8), roi)
    ref = raw.reshape(468, 3).astype(np.float64)
    m = roi.crop_to_image(192)
    image_xy = (ref[:, :2] - 0.5) @ m[:, :2].T + m[:, 2]
    np.testing.assert_array_equal(out.crop_xy, ref[:, :2])
    np.testing.assert_allclose(out.landmarks_px[:, :2], image_xy, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out.landmarks_px[:, 2], ref[:, 2] * (roi.size_px / 192))
    assert out.presence == pytest.approx(1 / (1 + np.exp(-0.7)))


def _bounds_numpy(xy):
    return xy[:, :2].min(axis=0), xy[:, :2].max(axis=0)


def test_box_kernel_equals_numpy_to_the_bit():
    from edge.tracking.landmarks import check_crop, landmark_box, roi_from_landmarks

    rng = np.random.default_rng(11)
    for case in range(20):
        xy = rng.normal(96, 30 + case * 3, (468, 3))
        lo, hi = _bounds_numpy(xy)
        np.testing.assert_array_equal(landmark_box(xy), np.concatenate([lo, hi]))
        roi = roi_from_landmarks(xy, 1.5)
        centre = (lo + hi) / 2
        assert (roi.centre_x, roi.centre_y) == (centre[0], centre[1])
        assert roi.size_px == float(max(hi - lo)) * 1.5
        d = xy[263, :2] - xy[33, :2]
        assert roi.angle_rad == float(np.arctan2(d[1], d[0]))
        crop = xy[:, :2] / 192
        lo, hi = crop.min(axis=0), crop.max(axis=0)
        check = check_crop(xy[:, :2], 192, max_drift=0.1)
        assert check.drift == float(np.hypot(*((lo + hi) / 2 - 0.5)))
        assert check.extent == float(max(hi - lo))
        assert check.outside == float(np.mean(((crop < 0) | (crop > 1)).any(axis=1)))
    xy[5, 1] = np.nan  # NaN propagates as in numpy's min and max
    np.testing.assert_array_equal(landmark_box(xy), [*_bounds_numpy(xy)[0], *_bounds_numpy(xy)[1]])
    assert not check_crop(xy[:, :2], 192).ok


def test_keypoint_kernel_equals_numpy_to_the_bit():
    from edge.tracking.tracker import KEYPOINT_LANDMARKS, keypoints_from_landmarks

    rng = np.random.default_rng(17)
    lm = rng.normal(300, 80, (468, 3))
    lm[33, 0] = np.nan
    pairs = np.array(KEYPOINT_LANDMARKS)
    expected = (lm[pairs[:, 0], :2] + lm[pairs[:, 1], :2]) / 2
    got = keypoints_from_landmarks(lm)
    assert got.shape == (6, 2) and got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(keypoints_from_landmarks(lm[:, :2]), expected)  # strided
    np.testing.assert_array_equal(
        keypoints_from_landmarks(lm.astype(np.float32)),  # numpy's path keeps float32
        (lm[pairs[:, 0], :2].astype(np.float32) + lm[pairs[:, 1], :2].astype(np.float32)) / 2,
    )
    with pytest.raises(IndexError):
        keypoints_from_landmarks(lm[:400])


def test_scatter_kernel_places_the_valid_rows_and_nan_elsewhere():
    from edge.tracking.tracker import _scatter

    points = np.arange(12.0).reshape(4, 3)
    valid = np.array([True, False, True, True])
    rows = np.array([0, 5, 6, 9])
    all_points, all_valid = _scatter(points, valid, rows, 10)
    expected = np.full((10, 3), np.nan)
    expected[[0, 6, 9]] = points[[0, 2, 3]]
    np.testing.assert_array_equal(all_points, expected)
    np.testing.assert_array_equal(all_valid, np.isin(np.arange(10), [0, 6, 9]))
    assert np.isnan(all_points[5]).all()  # an invalid lifted row is NaN, whatever it held
    with pytest.raises(IndexError):  # the kernel checks no bounds: the wrapper does
        _scatter(points, valid, np.array([0, 5, 6, 10]), 10)
    with pytest.raises(IndexError):
        _scatter(points, valid, np.array([0, -1, 6, 9]), 10)
    with pytest.raises(ValueError):
        _scatter(points[:3], valid, rows, 10)


def test_lift_kernel_marks_a_non_finite_deprojection_invalid():
    """A focal length so small that x / fx overflows: such rows are invalid and NaN, as in
    numpy (the intrinsics refuse fx = 0 itself)."""
    rng = np.random.default_rng(19)
    depth, scale = _face_depth(rng, np.uint16)
    sampling = DepthSampling(window_px=3, min_valid_fraction=0.4, max_spread_m=0.01)
    px = _pixels(rng, 300)
    px[6] = [321.5, 239.25]  # at the principal point: 0 / fx, finite
    flat = Intrinsics(640, 480, 5e-324, 610.0, 321.5, 239.25)
    points, valid = lift_landmarks(px, depth, flat, sampling, scale)
    with np.errstate(over="ignore", invalid="ignore"):  # numpy's overflow, on purpose
        points_ref, valid_ref = _lift_numpy(px, depth, flat, sampling, scale)
    np.testing.assert_array_equal(valid, valid_ref)
    np.testing.assert_array_equal(points, points_ref)
    _, in_window = landmark_depths_m(px, depth, sampling, scale)
    assert in_window[~valid].any()  # windows that pass, deprojections that do not
