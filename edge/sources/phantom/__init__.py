"""The synthetic RGB-D head phantom: frames with exact ground truth (docs/phantom.md).

:class:`PhantomSource` is a :class:`~edge.frames.FrameSource` like a camera or
a recording; every frame carries a :class:`~edge.frames.GroundTruth`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge import geometry
from edge.config import PhantomConfig, TrackingConfig
from edge.errors import SourceError
from edge.frames import (
    LANDMARK_COUNT,
    Frame,
    FrameSource,
    GroundTruth,
    Intrinsics,
    PixelFormat,
    RawDepth,
    TimingMode,
    require_frames,
)
from edge.sources.librealsense import align_depth_to_color
from edge.sources.pacing import Pacer
from edge.sources.phantom.deform import LowerFace, lower_face_motion
from edge.sources.phantom.depthcam import DepthImager, d435_like
from edge.sources.phantom.face import FaceModel, LandmarkFn, load_face_model
from edge.sources.phantom.motion import load_motion
from edge.sources.phantom.noise import (
    DepthNoise,
    apply_color_noise,
    apply_depth_noise,
    quantise_depth,
)
from edge.sources.phantom.plan_out import patient_to_face
from edge.sources.phantom.render import MATERIAL_SKIN, Renderer, Rendering, Surface
from edge.sources.phantom.scenarios import get_scenario, scenario_poses, theatre_draw
from edge.sources.phantom.scene import (
    covered_by_drape,
    drape_surface,
    head_surface,
    print_plane,
    table_plane,
)
from edge.sources.phantom.tool import ToolScene

__all__ = ["PhantomSource", "default_intrinsics", "tracker_landmarks"]

VISIBLE_DEPTH_TOLERANCE_M = (
    0.010  # a landmark further than this behind the rendered surface is hidden
)
FACE_VISIBLE_FRACTION = 0.25  # face_visible when at least this share of landmarks is visible


def default_intrinsics(config: PhantomConfig | None = None) -> Intrinsics:
    """A D435-like colour camera: 640x480, fx = fy = 615 px, centred principal point."""
    c = config or PhantomConfig()
    return Intrinsics(
        c.width, c.height, c.focal_px, c.focal_px, (c.width - 1) / 2.0, (c.height - 1) / 2.0
    )


def tracker_landmarks(tracking: TrackingConfig | None = None) -> LandmarkFn:
    """The project's own face tracker as the phantom's landmark detector (largest face wins)."""
    from edge.tracking.tracker import FaceTracker

    tracker = FaceTracker.from_config(tracking or TrackingConfig())

    def detect(image_rgb: np.ndarray) -> np.ndarray | None:
        faces = tracker.detect_image(image_rgb)
        if not faces:
            return None
        best = max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
        return np.asarray(best.landmarks_px, dtype=np.float64)

    return detect


def depth_noise_from_config(c: PhantomConfig) -> DepthNoise:
    return DepthNoise(
        enabled=c.depth_noise,
        subpixel_px=c.subpixel_px,
        baseline_m=c.baseline_m,
        focal_px=c.noise_focal_px,
        grazing_hole_deg=c.grazing_hole_deg,
        edge_step_m=c.edge_step_m,
        edge_hole_px=c.edge_hole_px,
        dropout_fraction=c.dropout_fraction,
        min_depth_m=c.min_depth_m,
        max_depth_m=c.max_depth_m,
        skin_bias_m=c.skin_depth_bias_mm * 1e-3,
    )


class PhantomSource(FrameSource):
    """Synthetic RGB-D frames of a head with exact ground truth.

    ``scenario`` is one of :data:`~edge.sources.phantom.scenarios.SCENARIOS`
    (or any name with ``motion`` given: a motion file path or an (N, 4, 4)
    array of ``face_to_camera`` poses, the last pose held when frames > N).
    ``face_model`` skips building the face; ``make_detector`` supplies the
    landmark detector used on a cache miss (default: the project's tracker,
    with its models from ``tracking``). ``timing`` paces the frames at
    ``config.fps`` with ``clock``/``sleep`` (:class:`~edge.sources.pacing.Pacer`).
    Raises SourceError for an unknown scenario, frames < 1, a bad motion file;
    an unusable photo raises on ``open()``.

    ``raw_depth`` renders depth from a separate D435-like depth imager
    (:mod:`.depthcam`): frames then carry it as ``raw_depth`` (what a recorder
    writes) and, as ``depth``, aligned to color with
    :func:`~edge.sources.librealsense.align_depth_to_color`, as playback would.
    """

    name = "phantom"

    def __init__(
        self,
        scenario: str = "nod-shake",
        frames: int = 300,
        seed: int = 0,
        config: PhantomConfig | None = None,
        face_image: str | None = None,
        intrinsics: Intrinsics | None = None,
        timing: TimingMode = TimingMode.DETERMINISTIC,
        motion: str | Path | np.ndarray | None = None,
        face_model: FaceModel | None = None,
        make_detector: Callable[[], LandmarkFn] | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracking: TrackingConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
        raw_depth: bool = False,
        tools_dir: str = "hardware/tools",
    ) -> None:
        super().__init__()
        self.config = config or PhantomConfig()
        self._frames = require_frames(int(frames))
        if motion is not None:
            poses = (
                load_motion(motion) if isinstance(motion, str | Path) else np.asarray(motion, float)
            )
            if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) == 0:
                raise SourceError("motion poses must be an (N, 4, 4) array", "pass a motion file")
            # Poses come from the file; a scenario that changes the scene (a drape,
            # photo-spoof, the jaw) still applies, every other name becomes "motion".
            named = get_scenario(scenario)
            keeps = named.drape or named.spoof or named.jaw or named.smile
            self.scenario = named if keeps else get_scenario("motion")
            idx = np.minimum(np.arange(self._frames), len(poses) - 1)
            self._poses = poses[idx]
        else:
            self.scenario = get_scenario(scenario)
            if self.scenario.name == "motion":
                raise SourceError("scenario 'motion' needs a motion file", "pass --motion FILE")
            self._poses = scenario_poses(
                self.scenario.name, self._frames, self.config.distance_m, self.config.fps
            )
        self.seed = int(seed)
        self.draw = theatre_draw(self.scenario, self.seed)
        self._jaw_m, self._smile_m = lower_face_motion(
            self._frames, self.config.fps, self.draw.jaw_m, self.draw.smile_m
        )
        self.intrinsics = intrinsics or default_intrinsics(self.config)
        self.depth_imager: DepthImager | None = d435_like(self.intrinsics) if raw_depth else None
        self._depth_renderer: Renderer | None = None
        self._depth_background: Rendering | None = None
        self.timing = TimingMode(timing)
        self._pacer = Pacer(self.timing, clock=clock, sleep=sleep)
        self._face_image = (
            face_image if face_image is not None else (self.config.face_image or None)
        )
        self._face = face_model
        self._make_detector = make_detector or (lambda: tracker_landmarks(tracking))
        self._clock = clock
        self._next = 0
        self._renderer: Renderer | None = None
        self._background: Rendering | None = None
        self._noise = depth_noise_from_config(self.config)
        self._patient_to_face = patient_to_face()
        # The scenario's tracked tool (its definition file is read now: a bad one is refused).
        self._tool = (
            ToolScene.load(self.scenario.tool, tools_dir, self.scenario.tool_motion)
            if self.scenario.tool
            else None
        )

    # ---------------------------------------------------------------- FrameSource

    @property
    def frame_count(self) -> int:
        return self._frames

    @property
    def nominal_fps(self) -> float:
        return self.config.fps

    @property
    def paced(self) -> bool:
        return self._pacer.paced

    @property
    def depth_scale_m(self) -> float:
        return self.config.depth_units_m

    @property
    def face(self) -> FaceModel:
        """The face model (built or loaded on open)."""
        if self._face is None:
            raise SourceError(
                "the phantom's face is built when the source opens", "open the source first"
            )
        return self._face

    def load_face(self) -> FaceModel:
        """Build or load the face model now, without opening the source (e.g. for its plan)."""
        if self._face is None:
            self._face = load_face_model(
                self._face_image, self._make_detector, self.config.cache_dir or None
            )
        return self._face

    def poses(self) -> np.ndarray:
        """(frames, 4, 4) ``face_to_camera`` of every frame."""
        return self._poses.copy()

    def _open(self) -> None:
        face = self.load_face()
        self._renderer = Renderer(self.intrinsics)
        bg = self._renderer.blank((30, 30, 30))
        table, table_to_camera = table_plane()
        self._renderer.draw_plane(bg, table, table_to_camera)
        self._background = bg
        if self.depth_imager is not None:
            d = self.depth_imager.intrinsics
            self._depth_renderer = Renderer(d.scaled(d.width * 2, d.height * 2))
            bg = self._depth_renderer.blank()
            self._depth_renderer.draw_plane(
                bg, table, self.depth_imager.color_to_depth @ table_to_camera
            )
            self._depth_background = bg
        self._head = head_surface(face)
        self._drape = drape_surface(face, self.draw) if self.scenario.drape else None
        self._lower = LowerFace.of(face.landmarks_m)
        # Samples the jaw or smile can move, per surface (only those are moved per frame).
        self._movable = [
            np.flatnonzero(self._lower.moving(s.points_m.T)) if s is not None else None
            for s in (self._head, self._drape)
        ]
        self._print = print_plane(face) if self.scenario.spoof else None
        if self._tool is not None:
            self._tool.start(face, self._frames)
        self._pacer.start()  # frame 0 is due at open
        self._next = 0

    def _close(self) -> None:
        self._renderer = None
        self._background = None
        self._depth_renderer = None
        self._depth_background = None

    def _read(self) -> Frame | None:
        i = self._next
        if i >= self._frames:
            return None
        self._next += 1
        c = self.config
        device_ms = i * 1000.0 / c.fps
        self._pacer.wait(device_ms)
        clean, truth = self.render(i)
        rng = np.random.default_rng([self.seed, i])
        # The depth imager's view when there is one; the noise model keeps the color
        # focal length, so a raw and an aligned recording of a scenario differ only in
        # their geometry.
        seen = clean if self.depth_imager is None else self._render_depth_view(i)
        depth_m = apply_depth_noise(
            seen.depth_m,
            seen.incidence_cos,
            self._noise,
            self.intrinsics.fx,
            rng,
            skin=seen.material == MATERIAL_SKIN,
        )
        gain = 1.0 + c.lighting_variation * np.sin(2 * np.pi * i / (7.0 * c.fps))
        color = apply_color_noise(clean.color, c.color_noise_sigma, gain, rng)
        depth = quantise_depth(depth_m, c.depth_units_m)
        raw = None
        if self.depth_imager is not None:
            imager = self.depth_imager
            raw = RawDepth(depth, imager.intrinsics, imager.depth_to_color)
            depth = align_depth_to_color(
                depth,
                imager.intrinsics,
                self.intrinsics,
                imager.depth_to_color.matrix,
                c.depth_units_m,
            )
        return Frame(
            number=i,
            color=color,
            color_format=PixelFormat.RGB8,
            raw_depth=raw,
            depth=depth,
            depth_scale_m=c.depth_units_m,
            intrinsics=self.intrinsics,
            device_timestamp_ms=device_ms,
            # When the frame reached the host: after rendering, as a camera's would be
            # after readout (in deterministic mode the nominal time may lie in the past).
            host_timestamp_s=self._clock(),
            truth=truth,
        )

    # ---------------------------------------------------------------- rendering

    def render(self, index: int) -> tuple[Rendering, GroundTruth]:
        """Noise-free rendering and ground truth of frame ``index`` (source must be open)."""
        if self._renderer is None or self._background is None:
            raise SourceError("the phantom is not open", "open the source first")
        face_to_camera = self._poses[index]
        out = self._background.copy()
        self._draw_face(self._renderer, out, face_to_camera, index)
        if self._tool is not None:
            self._tool.draw(self._renderer, out, face_to_camera, index, self.scenario.tool_occluded)
        truth = self._truth(face_to_camera, out.depth_m, index)
        if self._tool is not None:
            self._tool.add_truth(truth, face_to_camera, out.depth_m, index, self.intrinsics)
        return out, truth

    def _draw_face(
        self, renderer: Renderer, out: Rendering, face_to_view: np.ndarray, index: int
    ) -> None:
        """The scenario's face into ``out`` at ``face_to_view``: the printed photo's plane
        (a spoof), else the head and, when draped, the drape (both with frame ``index``'s
        jaw opening and smile)."""
        if self._print is not None:
            plane, plane_to_face = self._print
            renderer.draw_plane(out, plane, face_to_view @ plane_to_face)
        else:
            surfaces = [(self._deformed(self._head, 0, index), face_to_view)]
            if self._drape is not None:
                surfaces.append((self._deformed(self._drape, 1, index), face_to_view))
            renderer.draw_surfaces(out, surfaces)

    def _deformed(self, surface: Surface, which: int, index: int) -> Surface:
        """``surface`` moved by frame ``index``'s jaw and smile (the surface itself when still).

        A drape lying on the chin moves with it. Normals keep their rest direction: the
        motion turns them by a few degrees at most, which changes only the shading.
        """
        jaw, smile = float(self._jaw_m[index]), float(self._smile_m[index])
        idx = self._movable[which]
        if (jaw == 0.0 and smile == 0.0) or idx is None or idx.size == 0:
            return surface
        points = surface.points_m.copy()
        moved = points[:, idx].T.astype(np.float64)
        points[:, idx] = (moved + self._lower.displacement_m(moved, jaw, smile)).T
        return Surface(points, surface.normals, surface.colors, surface.spacing_m, surface.material)

    def _render_depth_view(self, index: int) -> Rendering:
        """Noise-free depth as the separate depth imager sees frame ``index``.

        Rendered at twice the imager's resolution and averaged down: the splatting
        renderer keeps the nearest of the surface samples in a pixel, which on a slope
        biases depth towards the camera by a share of the pixel's footprint; at the
        depth imager's coarse pixels that bias would be larger than the color view's.
        """
        assert self.depth_imager is not None
        assert self._depth_renderer is not None and self._depth_background is not None
        to_depth = self.depth_imager.color_to_depth @ self._poses[index]
        out = self._depth_background.copy()
        self._draw_face(self._depth_renderer, out, to_depth, index)
        if self._tool is not None:
            self._tool.draw(self._depth_renderer, out, to_depth, index, self.scenario.tool_occluded)
        return _half_size(out)

    def _truth(
        self, face_to_camera: np.ndarray, clean_depth_m: np.ndarray, index: int
    ) -> GroundTruth:
        face = self.face
        lm_face = face.landmarks_m.copy()
        jaw, smile = float(self._jaw_m[index]), float(self._smile_m[index])
        if jaw or smile:  # the skin moved; the skull (patient_to_camera) did not
            lm_face += self._lower.displacement_m(lm_face, jaw, smile)
        if self.scenario.spoof:
            lm_face[:, 2] = face.landmarks_m[168, 2]  # the printed face is flat
        lm_cam = geometry.apply(face_to_camera, lm_face)
        px = self.intrinsics.project(lm_cam)
        w, h = self.intrinsics.width, self.intrinsics.height
        ui = np.floor(px[:, 0] + 0.5).astype(np.int64)
        vi = np.floor(px[:, 1] + 0.5).astype(np.int64)
        inside = (lm_cam[:, 2] > 0) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        seen = np.zeros(LANDMARK_COUNT, bool)
        d = clean_depth_m[vi[inside], ui[inside]]
        seen[inside] = (d > 0) & (np.abs(d - lm_cam[inside, 2]) < VISIBLE_DEPTH_TOLERANCE_M)
        if self.scenario.drape:
            seen &= ~covered_by_drape(face, face.landmarks_m, self.draw)
        face_visible = bool(seen.mean() >= FACE_VISIBLE_FRACTION)
        return GroundTruth(
            patient_to_camera=face_to_camera @ self._patient_to_face,
            face_visible=face_visible,
            landmarks_px=px if face_visible else None,
            landmarks_camera_m=lm_cam if face_visible else None,
            scenario=self.scenario.name,
            landmarks_visible=seen if face_visible else None,
        )


def _half_size(r: Rendering) -> Rendering:
    """A rendering at half the resolution: each pixel the mean of its 2x2 block (the
    nearest of them across a depth edge) where at least three of the four hit a
    surface (else no depth)."""
    h, w = r.depth_m.shape[0] // 2, r.depth_m.shape[1] // 2

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[: 2 * h, : 2 * w].reshape(h, 2, w, 2).astype(np.float32)

    valid = blocks((r.depth_m > 0).astype(np.float32))
    hit = valid.sum(axis=(1, 3))
    n = np.maximum(hit, 1.0)
    z = blocks(r.depth_m)
    depth = z.sum(axis=(1, 3)) / n
    cos = blocks(r.incidence_cos).sum(axis=(1, 3)) / n
    # A block across a depth edge takes its nearest surface, not a blend of two.
    nearest = np.where(valid > 0, z, np.inf).min(axis=(1, 3))
    edge = z.max(axis=(1, 3)) - nearest > 0.01 * nearest
    depth = np.where(edge, nearest, depth)
    keep = hit >= 3
    color = r.color[: 2 * h : 2, : 2 * w : 2]
    return Rendering(
        np.ascontiguousarray(color),
        np.where(keep, depth, 0.0).astype(np.float32),
        np.where(keep, cos, 0.0).astype(np.float32),
        np.ascontiguousarray(r.material[: 2 * h : 2, : 2 * w : 2]),
    )
