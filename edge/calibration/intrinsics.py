"""Camera intrinsics from ChArUco views: collect good views, solve, check, compare.

The collector rejects blurred views (variance of the Laplacian over the
board), duplicates (same corners within a few pixels of an accepted view) and
views where the board is too small; it tracks how much of the image the
accepted views cover. The solver is OpenCV's ``calibrateCameraExtended`` on
ChArUco corners (Zhang 2000), which also gives per-view errors and standard
deviations of the parameters.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.calibration.boards import BoardSpec
from edge.config import CalibrationConfig
from edge.errors import CalibrationError, StateError
from edge.frames import Frame, Intrinsics

COVERAGE_GRID = (64, 48)  # cells the image is divided into to measure coverage
MIN_CORNERS_PER_VIEW = 8
MIN_VIEW_AREA_PCT = 2.0
DUPLICATE_SHIFT_FRACTION = 0.015  # of the image diagonal
BOARD_SIZE_TOLERANCE = 0.05  # depth-vs-pose distance ratio beyond which the board size is wrong

# OpenCV flags per configured distortion model, and the coefficients each one solves.
_MODEL_FLAGS = {
    "none": ("CALIB_FIX_K1", "CALIB_FIX_K2", "CALIB_FIX_K3", "CALIB_ZERO_TANGENT_DIST"),
    "k1k2": ("CALIB_FIX_K3", "CALIB_ZERO_TANGENT_DIST"),
    "brown5": (),
    "rational8": ("CALIB_RATIONAL_MODEL",),
}
_MODEL_COEFFS = {
    "none": (),
    "k1k2": ("k1", "k2"),
    "brown5": ("k1", "k2", "p1", "p2", "k3"),
    "rational8": ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
}
_COEFF_ORDER = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")


@dataclass
class View:
    """One accepted view: ChArUco corners (pixels) and their ids, plus what the frame said."""

    frame_number: int
    corners_px: np.ndarray  # (N, 2)
    ids: np.ndarray  # (N,)
    blur_variance: float
    factory: Intrinsics | None = None
    board_depth_m: float | None = None  # median depth over the board region, when there is depth


class Verdict(str, enum.Enum):
    ACCEPTED = "accepted"
    NO_BOARD = "no board"
    WRONG_BOARD = "markers of another board"
    TOO_FEW_CORNERS = "too few corners"
    TOO_SMALL = "board too small in the image"
    BLURRED = "blurred"
    DUPLICATE = "duplicate of an earlier view"
    SIZE_CHANGED = "image size changed"


@dataclass(frozen=True)
class ViewDecision:
    verdict: Verdict
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED


class CollectorState(str, enum.Enum):
    COLLECTING = "collecting"
    FINISHED = "finished"


def laplacian_variance(grey: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Sharpness: variance of the Laplacian (Pech-Pacheco et al. 2000), over ``mask`` if given."""
    import cv2

    lap = cv2.Laplacian(grey, cv2.CV_64F)
    values = lap[mask] if mask is not None else lap
    return float(values.var()) if values.size else 0.0


class ViewCollector:
    """Collects ChArUco views one frame at a time and decides which to keep.

    ``add(frame)`` returns a :class:`ViewDecision`; ``coverage_pct`` is the
    share of the image covered by the accepted boards. ``finish()`` checks
    the collection and returns the views; adding after that is a StateError.
    """

    def __init__(self, spec: BoardSpec, config: CalibrationConfig) -> None:
        import cv2

        self.spec = spec
        self.config = config
        self._board = spec.cv2_board()
        self._detector = cv2.aruco.CharucoDetector(self._board)
        self.views: list[View] = []
        self.rejected: dict[Verdict, int] = {}
        self.frames_seen = 0
        self.image_size: tuple[int, int] | None = None  # (width, height)
        self._coverage = np.zeros(COVERAGE_GRID[::-1], dtype=bool)
        self.state = CollectorState.COLLECTING

    @property
    def coverage_pct(self) -> float:
        return 100.0 * float(self._coverage.mean())

    @property
    def coverage_grid(self) -> np.ndarray:
        """Which cells of the image (rows x columns) the kept views' boards covered."""
        return self._coverage.copy()

    def progress(self) -> str:
        """One line for the operator: views kept, coverage and what was rejected."""
        rejected = ", ".join(f"{n} {v.value}" for v, n in self.rejected.items())
        return (
            f"views {len(self.views)}/{self.config.min_views} | coverage "
            f"{self.coverage_pct:4.1f} % (need {self.config.min_coverage_pct:g} %)"
            + (f" | rejected: {rejected}" if rejected else "")
        )

    def _reject(self, verdict: Verdict, detail: str = "") -> ViewDecision:
        self.rejected[verdict] = self.rejected.get(verdict, 0) + 1
        return ViewDecision(verdict, detail)

    def add(self, frame: Frame, *, factory: bool = True) -> ViewDecision:
        """Detect the board in ``frame`` and keep the view if it is sharp, new and big enough.

        ``factory``: whether ``frame.intrinsics`` are the camera's own (compared with the
        result); image files carry none."""
        import cv2

        if self.state is not CollectorState.COLLECTING:
            raise StateError("the view collector has finished", "start a new collection")
        self.frames_seen += 1
        grey = cv2.cvtColor(np.ascontiguousarray(frame.rgb()), cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        if self.image_size is None:
            self.image_size = (w, h)
        elif self.image_size != (w, h):
            return self._reject(Verdict.SIZE_CHANGED, f"{w}x{h} after {self.image_size}")
        corners, ids, _, marker_ids = self._detector.detectBoard(grey)
        if ids is None or len(ids) == 0:
            if marker_ids is not None and len(marker_ids) >= 4:
                return self._reject(Verdict.WRONG_BOARD, f"{len(marker_ids)} markers")
            return self._reject(Verdict.NO_BOARD)
        corners = corners.reshape(-1, 2).astype(np.float64)
        ids = ids.reshape(-1).astype(np.int64)
        if len(ids) < MIN_CORNERS_PER_VIEW:
            return self._reject(Verdict.TOO_FEW_CORNERS, f"{len(ids)} corners")
        hull = cv2.convexHull(corners.astype(np.float32))
        area_pct = 100.0 * cv2.contourArea(hull) / (w * h)
        if area_pct < MIN_VIEW_AREA_PCT:
            return self._reject(Verdict.TOO_SMALL, f"{area_pct:.1f} % of the image")
        mask = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(mask, hull.astype(np.int32), 1)
        sharpness = laplacian_variance(grey, mask.astype(bool))
        if sharpness < self.config.min_blur_variance:
            return self._reject(
                Verdict.BLURRED,
                f"sharpness {sharpness:.0f} < {self.config.min_blur_variance:g}",
            )
        limit = DUPLICATE_SHIFT_FRACTION * float(np.hypot(w, h))
        for old in self.views:
            shared, a, b = np.intersect1d(old.ids, ids, return_indices=True)
            if len(shared) >= 0.8 * max(len(ids), len(old.ids)):
                shift = np.median(np.linalg.norm(old.corners_px[a] - corners[b], axis=1))
                if shift < limit:
                    return self._reject(
                        Verdict.DUPLICATE, f"{shift:.1f} px from view {old.frame_number}"
                    )
        depth_m = None
        d = frame.depth_m()
        if d is not None:
            values = d[mask.astype(bool)]
            values = values[values > 0]
            depth_m = float(np.median(values)) if values.size else None
        claimed = frame.intrinsics if factory else None
        self.views.append(View(frame.number, corners, ids, sharpness, claimed, depth_m))
        cells = cv2.resize(mask, COVERAGE_GRID, interpolation=cv2.INTER_AREA) > 0
        self._coverage |= cells
        return ViewDecision(Verdict.ACCEPTED, f"{len(ids)} corners, sharpness {sharpness:.0f}")

    def finish(self) -> list[View]:
        """Check that enough views cover enough of the image; raises CalibrationError if not."""
        self.state = CollectorState.FINISHED
        cfg = self.config
        if not self.views:
            if self.rejected.get(Verdict.WRONG_BOARD):
                raise CalibrationError(
                    f"markers were seen in {self.rejected[Verdict.WRONG_BOARD]} frames but they "
                    f"do not form board {self.spec.name} ({self.spec.describe()})",
                    "pass the --board that was printed, or fix its board file "
                    "(calibration.boards_dir)",
                )
            raise CalibrationError(
                f"no board found in {self.frames_seen} frames ({self.progress()})",
                f"hold board {self.spec.name} fully in view, 30-80 cm away, well lit and still",
            )
        if len(self.views) < cfg.min_views:
            raise CalibrationError(
                f"too few views: {len(self.views)} accepted, need {cfg.min_views} "
                f"({self.progress()})",
                "capture more frames, moving and tilting the board between them",
            )
        if self.coverage_pct < cfg.min_coverage_pct:
            raise CalibrationError(
                f"views cover {self.coverage_pct:.1f} % of the image, need "
                f"{cfg.min_coverage_pct:g} %",
                "tilt the board more and move it into the corners and edges of the image",
            )
        return self.views


@dataclass
class IntrinsicsSolution:
    """Solved intrinsics and their errors (pixels), OpenCV distortion model."""

    width: int
    height: int
    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    model: str
    rms_px: float
    per_view_rms_px: np.ndarray
    std_devs: dict[str, float]
    board_to_camera: list[np.ndarray]
    residuals: list[np.ndarray]  # per view (N, 2): detected - projected, pixels
    views: list[View]
    factory_comparison: dict[str, Any] = field(default_factory=dict)
    board_size_ratio: float | None = None  # depth distance / pose distance (1 = size right)

    @property
    def fx(self) -> float:
        return float(self.camera_matrix[0, 0])

    @property
    def fy(self) -> float:
        return float(self.camera_matrix[1, 1])

    @property
    def cx(self) -> float:
        return float(self.camera_matrix[0, 2])

    @property
    def cy(self) -> float:
        return float(self.camera_matrix[1, 2])

    def coefficients(self) -> dict[str, float]:
        return {
            name: float(self.dist_coeffs[_COEFF_ORDER.index(name)])
            for name in _MODEL_COEFFS[self.model]
        }

    def parameters(self) -> dict[str, Any]:
        """Human-readable parameters for the result file."""
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "distortion_model": f"opencv-{self.model}",
            "distortion": self.coefficients(),
            "camera_matrix": self.camera_matrix.tolist(),
            "dist_coeffs_opencv": [float(c) for c in self.dist_coeffs],
        }

    def errors(self) -> dict[str, Any]:
        return {
            "rms_px": self.rms_px,
            "per_view_rms_px": [float(e) for e in self.per_view_rms_px],
            "std_devs": self.std_devs,
            "views": len(self.views),
            "factory_comparison": self.factory_comparison,
            "board_size_ratio": self.board_size_ratio,
        }


def _pose_matrix(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    import cv2

    m = np.eye(4)
    m[:3, :3] = cv2.Rodrigues(np.asarray(rvec, float).reshape(3))[0]
    m[:3, 3] = np.asarray(tvec, float).reshape(3)
    return m


def opencv_dist(intr: Intrinsics) -> np.ndarray:
    """OpenCV distortion coefficients for a frame's intrinsics (Brown-Conrady or none)."""
    if intr.model.value == "brown_conrady":
        return np.asarray(intr.coeffs, float)
    return np.zeros(5)


def view_rms(
    spec: BoardSpec, view: View, camera_matrix: np.ndarray, dist: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit one view's board pose with given intrinsics: (RMS px, residuals, board_to_camera)."""
    import cv2

    obj = spec.corners_board_m()[view.ids]
    ok, rvec, tvec = cv2.solvePnP(obj, view.corners_px, camera_matrix, dist)
    if not ok:
        return float("inf"), np.zeros((0, 2)), np.eye(4)
    proj = cv2.projectPoints(obj, rvec, tvec, camera_matrix, dist)[0].reshape(-1, 2)
    res = view.corners_px - proj
    return float(np.sqrt((res**2).sum(axis=1).mean())), res, _pose_matrix(rvec, tvec)


def solve_intrinsics(
    spec: BoardSpec, views: list[View], image_size: tuple[int, int], model: str = "brown5"
) -> IntrinsicsSolution:
    """Solve K and distortion from accepted views (OpenCV, Zhang's method).

    ``image_size`` is (width, height). Raises CalibrationError if OpenCV fails
    or fewer than 3 views are given.
    """
    import cv2

    if model not in _MODEL_FLAGS:
        raise CalibrationError(
            f"unknown distortion model {model!r}", "use one of " + ", ".join(_MODEL_FLAGS)
        )
    if len(views) < 3:
        raise CalibrationError(f"need at least 3 views, got {len(views)}", "capture more views")
    all_corners = spec.corners_board_m()
    obj = [all_corners[v.ids].astype(np.float32) for v in views]
    img = [v.corners_px.astype(np.float32).reshape(-1, 1, 2) for v in views]
    flags = 0
    for name in _MODEL_FLAGS[model]:
        flags |= getattr(cv2, name)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    try:
        rms, k, dist, rvecs, tvecs, std_intr, _, per_view = cv2.calibrateCameraExtended(  # type: ignore[call-overload]
            obj, img, image_size, None, None, flags=flags, criteria=criteria
        )
    except cv2.error as exc:
        raise CalibrationError(
            f"OpenCV could not solve the intrinsics: {exc}".strip(),
            "capture views with the board tilted in different directions",
        ) from None
    dist = np.asarray(dist, float).reshape(-1)
    if len(dist) < 8:
        dist = np.concatenate([dist, np.zeros(8 - len(dist))]) if model == "rational8" else dist
    std = np.asarray(std_intr, float).reshape(-1)
    names = ("fx", "fy", "cx", "cy", *_COEFF_ORDER)
    solved = {"fx", "fy", "cx", "cy", *_MODEL_COEFFS[model]}
    std_devs = {n: float(std[i]) for i, n in enumerate(names) if i < len(std) and n in solved}
    poses, residuals = [], []
    for v, o, r, t in zip(views, obj, rvecs, tvecs, strict=True):
        proj = cv2.projectPoints(o, r, t, k, dist)[0].reshape(-1, 2)
        residuals.append(v.corners_px - proj)
        poses.append(_pose_matrix(r, t))
    dist_out = dist if model == "rational8" else dist[:5]
    return IntrinsicsSolution(
        width=image_size[0],
        height=image_size[1],
        camera_matrix=np.asarray(k, float),
        dist_coeffs=np.asarray(dist_out, float),
        model=model,
        rms_px=float(rms),
        per_view_rms_px=np.asarray(per_view, float).reshape(-1),
        std_devs=std_devs,
        board_to_camera=poses,
        residuals=residuals,
        views=views,
    )


def compare_with_factory(spec: BoardSpec, solution: IntrinsicsSolution) -> dict[str, Any]:
    """Differences from the camera's own (factory) intrinsics, and RMS before/after.

    "Before" fits each view's board pose with the factory intrinsics; "after"
    is the calibrated RMS. Empty when the frames carried no intrinsics.
    """
    factory = next((v.factory for v in solution.views if v.factory is not None), None)
    if factory is None:
        return {}
    if (factory.width, factory.height) != (solution.width, solution.height):
        factory = factory.scaled(solution.width, solution.height)
    k_f = factory.matrix
    d_f = opencv_dist(factory)
    before = [view_rms(spec, v, k_f, d_f)[0] for v in solution.views]
    return {
        "factory": factory.to_dict(),
        "fx_diff_pct": 100.0 * (factory.fx - solution.fx) / solution.fx,
        "fy_diff_pct": 100.0 * (factory.fy - solution.fy) / solution.fy,
        "cx_diff_px": factory.ppx - solution.cx,
        "cy_diff_px": factory.ppy - solution.cy,
        "rms_px_factory": float(np.sqrt(np.mean(np.square(before)))),
        "per_view_rms_px_factory": [float(b) for b in before],
        "rms_px_calibrated": solution.rms_px,
    }


def board_size_ratio(spec: BoardSpec, solution: IntrinsicsSolution) -> float | None:
    """Median of (depth camera distance / distance implied by the declared board size).

    A wrong square size scales every board pose; intrinsics cannot see it, depth
    can. None when the views had no depth.
    """
    ratios = []
    centre = np.array([spec.width_mm / 2000.0, spec.height_mm / 2000.0, 0.0, 1.0])
    for v, pose in zip(solution.views, solution.board_to_camera, strict=True):
        if v.board_depth_m is None:
            continue
        z_pose = float((pose @ centre)[2])
        if z_pose > 0:
            ratios.append(v.board_depth_m / z_pose)
    return float(np.median(ratios)) if ratios else None


def quality_problems(
    spec: BoardSpec, solution: IntrinsicsSolution, config: CalibrationConfig
) -> list[str]:
    """Reasons to refuse this calibration (empty when it meets the bar)."""
    problems = []
    if solution.rms_px > config.max_rms_px:
        problems.append(
            f"RMS reprojection error {solution.rms_px:.2f} px exceeds {config.max_rms_px:g} px: "
            "check that --board matches the printed board, that it is flat, and that views "
            "are sharp"
        )
    ratio = solution.board_size_ratio
    if ratio is not None and abs(ratio - 1.0) > BOARD_SIZE_TOLERANCE:
        problems.append(
            f"the declared square size {spec.square_mm:g} mm puts the board "
            f"{100 * (1 - 1 / ratio):+.0f} % off the distance the depth camera measures "
            f"(the squares look like {spec.square_mm * ratio:.1f} mm): measure a printed square "
            f"with a ruler and fix square_mm in the board file (or reprint at 100 %)"
        )
    f_rel = max(
        solution.std_devs.get("fx", 0.0) / solution.fx,
        solution.std_devs.get("fy", 0.0) / solution.fy,
    )
    if f_rel > 0.005:
        problems.append(
            f"focal length uncertain by {100 * f_rel:.2f} % (> 0.5 %): capture more tilted views"
        )
    return problems


def calibrate_views(spec: BoardSpec, collector: ViewCollector, model: str) -> IntrinsicsSolution:
    """Finish the collection, solve, and attach the factory comparison and board-size check."""
    views = collector.finish()
    assert collector.image_size is not None
    solution = solve_intrinsics(spec, views, collector.image_size, model)
    solution.factory_comparison = compare_with_factory(spec, solution)
    solution.board_size_ratio = board_size_ratio(spec, solution)
    return solution
