"""Typed, validated configuration: one TOML file, one section per stage.

Each section is a frozen dataclass. Loading is strict: an unknown key, a
wrong type or a value out of range (:data:`RANGES`, floats finite) is a
:class:`ConfigError` naming the key and the file, never a silent default.
Endpoints, security and key files: :func:`edge.validate.validate_deployment`.
:func:`load_config` records where every value came from (``default`` or the
file); :func:`edge.config_show.effective_toml` and ``effective_values`` write it
back out. The strict table-to-dataclass conversion is :mod:`edge.typed_toml`.

Default search path, first match wins: ``$EDGE_CONFIG``,
``./edge.toml``, ``/etc/edge/edge.toml``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge.errors import ConfigError
from edge.files import read_toml
from edge.typed_toml import build_dataclass

DEFAULT_SEARCH_PATH = ("./edge.toml", "/etc/edge/edge.toml")


def _models_home() -> Path:
    """This installation's models folder (built models in build/, the wheel cache in cache/).

    A source checkout (the editable install: models/manifest.toml and pyproject.toml
    beside the package) uses its models/ folder; an installed package uses
    ``<prefix>/share/edge/models`` of the Python environment it is installed in
    (the virtual environment). Never the working folder. The manifest itself ships
    inside the package (edge.models.manifest.default_manifest_path).
    """
    package = Path(__file__).resolve().parent
    checkout = package.parent
    models = checkout / "models"
    if (models / "manifest.toml").is_file() and (checkout / "pyproject.toml").is_file():
        return models
    return Path(sys.prefix) / "share" / "edge" / "models"


PACKAGE_MODELS_DIR = _models_home()


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SourceConfig:
    """Which frames to process; ``--source`` text parses to this (sources.parse_source_spec)."""

    kind: Literal["phantom", "recording", "realsense", "synthetic"] = "phantom"
    path: str = ""  # recording file for kind = "recording"
    serial: str = ""  # camera for kind = "realsense"; empty: [realsense] serial
    scenario: str = ""  # phantom scenario for kind = "phantom"; empty: the phantom's default
    # Playback, also of a --source given to `edge run`: every frame as fast as it is read,
    # or at the recorded (nominal) rate; loop replays a recording until the run stops.
    timing: Literal["deterministic", "realtime"] = "deterministic"
    loop: bool = False  # recordings only (edge.validate refuses it for other kinds)


@dataclass(frozen=True)
class PipelineConfig:
    """The frame loop (edge/pipeline.py)."""

    # Read the next frame (decoding, depth alignment, rendering) in a second thread while
    # the current one is processed, one frame ahead at most (edge/sources/readahead.py);
    # only from a source that is not paced (a replay read as fast as it goes: a camera's
    # next frame is not there before it is due). Off by default: edge bench measured no
    # gain worth its cost on 2 cores (0-3 % more frames per second): the reads hold the
    # interpreter lock for most of their time (docs/benchmark.md).
    read_ahead: bool = False
    # Run registration, overlay, publish and the sinks in a second thread, overlapped with
    # tracking of the next frame (edge/pipeline.py); only with a plan. Off by default: on 2
    # shared cores edge bench measured 0.93-1.36x the frames per second of one thread,
    # depending on the other load, and each stage's time grows while the threads contend
    # for the interpreter (docs/benchmark.md).
    overlap_stages: bool = False


@dataclass(frozen=True)
class RealSenseConfig:
    """Live RealSense camera."""

    serial: str = ""  # empty: the first camera found
    width: int = 640
    height: int = 480
    fps: int = 30
    preset: str = "hardware/presets/face-high-accuracy.json"  # visual preset JSON, or empty
    reconnect_initial_s: float = 0.25
    # A return is noticed at the next attempt: the cap bounds recovery (target: tracking
    # within 2 s of the camera's return; measured worst case = this cap + one frame).
    reconnect_max_s: float = 1.0
    frame_timeout_ms: int = 1000


@dataclass(frozen=True)
class TrackingConfig:
    """Face detector and landmark models, 3-D from depth, smoothing (see edge/tracking/)."""

    # Default: this installation's models/build (absolute; see _models_home), wherever the
    # command runs from. A relative path is relative to the working folder, like every path.
    models_dir: str = str(PACKAGE_MODELS_DIR / "build")
    # ONNX Runtime execution providers in order of preference; missing ones fall back to CPU.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    # One: on a 2-core edge box the other core serves playback, transport and video
    # encoding (edge bench, nod-shake 300: 106 fps with 1 thread, 63 fps with 2).
    intra_op_threads: int = 1
    # The landmark model's runtime: ONNX Runtime, LiteRT (XNNPACK, on the model's source
    # .tflite), or "auto": both timed on the same input at start, the faster kept (ORT
    # unless LiteRT is 5 % faster), the choice logged (edge/tracking/runtime.py).
    runtime: Literal["onnxruntime", "litert", "auto"] = "onnxruntime"
    detector_score: float = 0.5
    detector_iou: float = 0.3  # weighted NMS: IoU above this joins a cluster
    presence_threshold: float = 0.5
    roi_scale: float = 1.5  # landmark crop side / face size (MediaPipe's 1.5)
    max_crop_drift: float = 0.25  # landmarks' centre off the crop centre (crop sides) = lost
    redetect_interval_frames: int = 15  # cross-check with the detector this often; 0 = only on loss
    smoothing: bool = True
    smoothing_min_cutoff_hz: float = 1.0
    smoothing_beta: float = 0.05  # per pixel/s (2-D landmarks)
    smoothing_beta_3d: float = 50.0  # per metre/s (3-D landmarks)
    smoothing_d_cutoff_hz: float = 1.0
    depth_window_px: int = 5  # odd side of the window for each landmark's median depth
    depth_min_valid_fraction: float = 0.5
    depth_max_spread_m: float = 0.02  # 10th-90th percentile spread above this = depth edge
    depth_min_m: float = 0.1
    depth_max_m: float = 3.0
    # Lift and smooth all 468 landmarks in 3-D (to evaluate their 3-D error); otherwise only
    # the rows the registration pairs with the plan's named landmarks.
    lift_all_landmarks: bool = False

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")
        for name in ("detector_score", "detector_iou", "presence_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.roi_scale <= 1.0 or self.redetect_interval_frames < 0:
            raise ValueError("roi_scale must be > 1 and redetect_interval_frames >= 0")
        if self.depth_window_px < 1 or self.depth_window_px % 2 == 0:
            raise ValueError(f"depth_window_px must be odd and >= 1, got {self.depth_window_px}")


@dataclass(frozen=True)
class OverlayConfig:
    """What the overlay carries and for which display (see docs/protocol.md)."""

    display_profile: str = ""  # hardware/displays/NAME.toml; empty: the camera's intrinsics
    skin_distance: bool = True  # ray-cast each target to the skin along the view ray
    fps_window: int = 30  # frames averaged for the HUD frame rate
    # Current poses the published velocity is fitted over (2: the last two; docs/protocol.md).
    velocity_frames: int = 4


MIN_MESSAGE_BYTES = 128 * 1024


@dataclass(frozen=True)
class TransportConfig:
    """ZeroMQ streaming to head-mounted displays (see docs/protocol.md).

    ``security = "curve"`` encrypts and authenticates every socket; plaintext is
    refused on any endpoint that is not loopback.
    """

    publish_endpoint: str = "tcp://127.0.0.1:5555"  # PUB: overlay, hud, status, video
    service_endpoint: str = "tcp://127.0.0.1:5556"  # ROUTER: plan assets and commands
    security: Literal["curve", "plaintext"] = "curve"
    keys_dir: str = "keys"  # edge.key_secret here; enrolled headsets in keys_dir/enrolled
    send_hwm: int = 4  # messages queued per subscriber before new ones are dropped
    socket_buffer_bytes: int = 8192  # kernel send/receive buffer: bounds the TCP backlog
    status_hz: float = 1.0
    video: Literal["auto", "on", "off"] = "auto"  # auto: on for loopback endpoints only
    video_max_fps: float = 10.0
    video_max_width: int = 640
    video_jpeg_quality: int = 70
    # The largest frame a headset may send the service (ROUTER); a larger one closes its
    # connection before it is stored. The PUB takes subscriptions only: its limit is fixed
    # and small (edge.transport.publisher.SUBSCRIPTION_FRAME_LIMIT).
    max_message_bytes: int = 1048576
    sender: str = "edge"

    def __post_init__(self) -> None:
        if self.max_message_bytes < MIN_MESSAGE_BYTES:
            raise ValueError(
                f"max_message_bytes must be at least {MIN_MESSAGE_BYTES} (a 64 KiB request "
                f"with its encryption), got {self.max_message_bytes}"
            )


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibration procedures (``edge calibrate``): where things live and the quality bars."""

    boards_dir: str = "calibration/boards"  # site boards; the built-in ones are found anyway
    devices_dir: str = "calibration/devices"
    # OpenCV distortion model solved for: none, k1k2, brown5 (k1 k2 p1 p2 k3), rational8
    distortion_model: Literal["none", "k1k2", "brown5", "rational8"] = "brown5"
    max_age_days: float = 90.0  # older results are reported as stale in the HUD
    min_views: int = 8
    min_coverage_pct: float = 60.0
    min_blur_variance: float = 250.0  # Laplacian variance over the board; below: blurred
    max_rms_px: float = 1.0
    max_depth_scale_error_pct: float = 1.0
    max_depth_offset_mm: float = 3.0
    min_handeye_rotation_deg: float = 10.0
    min_pivot_rotation_deg: float = 20.0
    spaam_min_alignments: int = 6
    spaam_recommended_alignments: int = 12


_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServiceConfig:
    """Running unattended: logs, the metrics endpoint, stopping (see docs/deployment.md)."""

    log_format: Literal["text", "json"] = "text"  # json: one object per line (journald)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_enabled: bool = False  # Prometheus text on http://metrics_host:metrics_port/metrics
    metrics_host: str = "127.0.0.1"  # loopback only: reach it through SSH or a local agent
    metrics_port: int = 9477
    stop_timeout_s: float = 10.0  # after SIGTERM, exit anyway if the loop has not stopped

    def __post_init__(self) -> None:
        if self.metrics_host not in _LOOPBACK_HOSTS:
            raise ValueError(
                f"metrics_host must be a loopback address ({', '.join(_LOOPBACK_HOSTS)}), "
                f"got {self.metrics_host!r}"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be 0..65535, got {self.metrics_port}")
        if self.stop_timeout_s <= 0:
            raise ValueError(f"stop_timeout_s must be positive, got {self.stop_timeout_s}")


@dataclass(frozen=True)
class AuditConfig:
    """The tamper-evident audit log (edge/audit.py). Relative paths: from the working folder."""

    enabled: bool = False  # on in the deployed configuration (edge.example.toml)
    path: str = "audit/audit.jsonl"
    device_key: str = "keys/device.key"  # Ed25519, mode 0600: `edge audit keygen --out keys`


@dataclass(frozen=True)
class RecordingsConfig:
    """Recording each `edge run` session, sealed to the hospital's key (docs/deployment.md).

    Recordings contain patients' faces: off by default; when on, ``encrypt_to``
    is required (the device keeps no readable patient video).
    """

    enabled: bool = False
    folder: str = "recordings"  # created with mode 0700; every file in it is written 0600
    encrypt_to: str = ""  # the hospital's public key file (`edge recordings keygen --out`)
    retention_days: int = 30  # older recordings are deleted at start; 0 keeps them
    # At start: prune, then record only with this much free; while running: the recording
    # stops (the run goes on) before sealing it would leave less than this free.
    min_free_mb: int = 2048


@dataclass(frozen=True)
class PlanConfig:
    """The preoperative plan and how far to trust it (docs/plan-format.md)."""

    path: str = ""  # plan folder (holds plan.json); empty: run without a plan
    public_key: str = ""  # trusted signer's public key file (from `edge plan keygen`)
    allow_unsigned: bool = False  # explicit override: load unsigned/tampered plans, logged
    # Limits and plausibility (docs/plan-format.md): a plan beyond any is refused, the limit
    # named. Sizes of the phantom's plan: skin 71,100 triangles / 35,938 vertices / 3.5 MB,
    # 297 mm across, targets 39-47 mm below the skin.
    max_file_mb: float = 128.0  # each file in the plan folder, by its size before it is read
    max_mesh_triangles: int = 500_000  # per mesh, from the file's header before parsing
    max_mesh_vertices: int = 500_000  # per mesh, after identical vertices are merged
    max_total_triangles: int = 1_000_000  # the skin and every structure together
    max_total_vertices: int = 1_000_000
    max_targets: int = 256  # entries in each of targets, trajectories and cut_planes
    max_structures: int = 32
    max_landmarks: int = 64  # control points in the markups file
    max_name_chars: int = 64  # names, labels, case_id, file names
    max_text_chars: int = 4096  # descriptions and every other text
    min_skin_size_mm: float = 100.0  # the skin's bounding-box diagonal: a head, not a
    max_skin_size_mm: float = 600.0  # model in metres or centimetres read as millimetres
    max_target_distance_mm: float = 250.0  # every planned point from the nearest skin vertex

    def __post_init__(self) -> None:
        if self.min_skin_size_mm >= self.max_skin_size_mm:
            raise ValueError(
                f"min_skin_size_mm ({self.min_skin_size_mm}) must be below max_skin_size_mm "
                f"({self.max_skin_size_mm})"
            )


@dataclass(frozen=True)
class RegistrationConfig:
    """Paired-point + surface registration, tracking and quality gates (docs/registration.md)."""

    skin_spacing_mm: float = 1.5  # KD-tree sample spacing on the skin mesh
    # Depth points on the rigid upper face for (re-)initialisation and per tracking frame.
    # The region is about half the whole face's, sampled denser: with the whole face's
    # 700 / 500 the static phantom's TRE mean grew from 0.196 to 0.227 mm, with these
    # to 0.207 mm (docs/benchmark.md).
    init_cloud_points: int = 1000
    track_cloud_points: int = 800
    init_max_iterations: int = 30
    track_max_iterations: int = 6
    init_gate_mm: float = 15.0  # first correspondence gate from the landmark pose (a few mm off)
    track_gate_mm: float = 10.0
    min_gate_mm: float = 4.0
    inlier_mm: float = 2.5  # |point-to-plane residual| of a surface inlier
    occlusion_mm: float = 4.0  # points this far in front of the skin are covered (drapes)
    landmark_inlier_mm: float = 6.0  # RANSAC threshold for landmark pairs
    fle_mm: float = 1.5  # prior landmark localisation error for the landmark-only TRE figure
    # 3-D localisation error (RMS) of the tracked landmarks that the landmark/surface
    # likelihood-ratio test assumes (docs/registration.md, Gates): the tracker's lifted
    # landmarks on the phantom are 3.2 mm off in 3-D (median of the plan's named ones,
    # depth included; edge bench landmark_error_mm).
    landmark_check_fle_mm: float = 3.0
    max_icp_rms_mm: float = 1.5
    min_inlier_fraction: float = 0.85
    # Share of the rigid upper face's sampled pixels that must be skin inliers, and how
    # many of its six regions (forehead, temples, nose, cheekbones) the fit must rest on:
    # below them too little of the rigid face was seen to trust the pose. A drape over
    # half the face from one side leaves ~0.5 and 4 regions, with TRE under 0.6 mm.
    min_rigid_evidence_fraction: float = 0.4
    min_regions_used: int = 3
    max_occluded_fraction: float = 0.6
    max_fre_mm: float = 5.0
    max_landmark_surface_mm: float = 8.0
    max_landmark_surface_deg: float = 8.0
    min_relief_mm: float = 5.0  # a flat photograph or screen has ~0
    max_surface_shape_mm: float = 0.7  # systematic surface residual; another face has >= 1
    max_tre_mm: float = 5.0  # worst calibrated TRE estimate over the targets
    # Confidence factor of the displayed TRE estimate (edge/registration/tre.py), so that
    # the true TRE exceeds it in at most 5 % of target-frames. Measured 2026-12-02 with
    # `edge bench --calibrate-tre --frames 300` at factor 1.7, seeds 0 and 1, after the
    # surface fit moved to the rigid upper face (issue 18): the largest factor needed over
    # static, nod-shake, approach, drape and leave-return was 1.69 (approach, seed 0;
    # scale_for_95 0.996); 1.8 keeps ~6 % in hand for other input, as 1.7 did before.
    # With the region jackknife and the theatre scenarios (seeds 0-7; docs/benchmark.md)
    # the largest scale_for_95 was 0.953 (theatre, seed 0): 1.8 still holds.
    tre_confidence_factor: float = 1.8
    # Depth noise model of the camera (Intel's D4xx RMS-error formula), the floor of the
    # residual noise in the TRE estimate; the focal length is the frame's.
    depth_subpixel_px: float = 0.08
    depth_baseline_mm: float = 50.0
    # How far behind its surface this camera model measures skin (infrared scattering
    # under the skin); subtracted from the depth of the face cloud and the landmarks
    # before the fits. No published figure for D4xx cameras on skin was found: 1.0 mm is
    # an assumed order of magnitude; measure it (docs/calibration.md, "Skin depth bias").
    skin_depth_bias_mm: float = 1.0
    # Leave drape-coloured (blue or green) pixels out of the surface cloud and the
    # landmarks out of the paired-point fit whose pixel is one (edge/registration/cloud.py):
    # a pixel is a drape's when its Cb - Cr (8-bit YCbCr) exceeds drape_chroma; skin's is
    # below 0 at any pigmentation under white light.
    drape_segmentation: bool = True
    drape_chroma: float = 8.0
    min_cloud_points: int = 60
    confirm_frames: int = 1  # passing frames in REGISTERED before TRACKING
    lost_after_frames: int = 15  # consecutive failing frames before DEGRADED becomes LOST

    def __post_init__(self) -> None:
        if self.init_cloud_points < 10 or self.track_cloud_points < 10:
            raise ValueError("cloud point counts must be at least 10")
        if not 0.0 <= self.min_inlier_fraction <= 1.0:
            raise ValueError("min_inlier_fraction must be within 0..1")
        if self.skin_spacing_mm <= 0 or self.inlier_mm <= 0 or self.fle_mm <= 0:
            raise ValueError("skin_spacing_mm, inlier_mm and fle_mm must be positive")
        if self.confirm_frames < 1 or self.lost_after_frames < 1:
            raise ValueError("confirm_frames and lost_after_frames must be at least 1")


@dataclass(frozen=True)
class PhantomConfig:
    """Synthetic RGB-D head phantom (docs/phantom.md): camera, distance, noise, cache."""

    face_image: str = ""  # frontal face photograph; empty: the portrait matplotlib ships
    # Built faces, keyed by the photo's SHA-256; default: the package's models/build/phantom;
    # empty: no cache.
    cache_dir: str = str(PACKAGE_MODELS_DIR / "build" / "phantom")
    width: int = 640  # colour camera (D435-like at 640x480)
    height: int = 480
    focal_px: float = 615.0
    fps: float = 30.0
    distance_m: float = 0.55  # camera to nasion, for the scenarios that hold a distance
    depth_units_m: float = 0.0001  # D4xx depth units can be set down to 100 um
    depth_noise: bool = True
    subpixel_px: float = 0.08  # stereo subpixel error (Intel D400 tuning white paper)
    baseline_m: float = 0.050  # D435 stereo baseline
    noise_focal_px: float = 0.0  # focal length in the noise formula; 0: use focal_px
    grazing_hole_deg: float = 80.0
    edge_step_m: float = 0.02
    edge_hole_px: int = 2
    dropout_fraction: float = 0.002
    min_depth_m: float = 0.2
    max_depth_m: float = 10.0
    color_noise_sigma: float = 2.0  # 8-bit levels
    lighting_variation: float = 0.0  # amplitude of a slow global brightness change (0..0.5)
    # Skin's depth reads this much too far (subsurface scattering; edge/sources/phantom/noise.py).
    skin_depth_bias_mm: float = 1.0

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"width and height must be >= 16, got {self.width}x{self.height}")
        if self.focal_px <= 0 or self.fps <= 0 or self.distance_m <= 0:
            raise ValueError("focal_px, fps and distance_m must be positive")
        if not 0 < self.depth_units_m <= 0.001:
            raise ValueError(f"depth_units_m must be in (0, 0.001], got {self.depth_units_m}")
        if not 0 <= self.dropout_fraction < 1 or not 0 <= self.lighting_variation <= 0.5:
            raise ValueError("dropout_fraction must be in [0, 1), lighting_variation in [0, 0.5]")


@dataclass(frozen=True)
class ToolsConfig:
    """[tools]: tracked instruments with printed markers (docs/tools.md)."""

    enabled: bool = False
    dir: str = "hardware/tools"  # tool definition files, NAME.toml
    names: tuple[str, ...] = ("needle-guide", "pointer")  # the tools to track
    max_reprojection_px: float = 2.0  # a corner further from the solved pose is an outlier
    max_rms_px: float = 1.5  # a pose whose inliers' RMS is above this is not shown
    depth_refine: bool = True  # correct the distance along the view ray with the depth image
    lost_after_frames: int = 10  # frames unseen (OCCLUDED) before LOST
    # A tool seen lately is looked for around where it was, and in the whole image in the
    # same frame when it is missed there; a LOST tool in its last box every frame and in
    # the whole image every this many frames (1: every frame, back on its first frame;
    # 3: back within 3 frames, and a tool left on the tray costs a third as much).
    search_every_frames: int = 3
    smoothing: bool = True
    smoothing_min_cutoff_hz: float = 3.0
    smoothing_beta: float = 500.0  # per m/s of the tip: little smoothing once it moves
    smoothing_d_cutoff_hz: float = 1.0
    structure_warning_mm: float = 5.0  # warn when the tip is closer to a structure to avoid


@dataclass(frozen=True)
class EdgeConfig:
    """The whole configuration; one attribute per TOML section."""

    source: SourceConfig = field(default_factory=SourceConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    realsense: RealSenseConfig = field(default_factory=RealSenseConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)


# --------------------------------------------------------------------------- ranges

MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# Allowed values, inclusive, of the numeric keys that have a range: checked when a file is
# loaded, so `edge config check` and `edge run` refuse the same values with the same line.
# Every float key must also be finite (no nan or inf).
RANGES: dict[str, tuple[float, float]] = {
    "realsense.width": (16, 4096),
    "realsense.height": (16, 4096),
    "realsense.fps": (1, 300),
    "realsense.reconnect_initial_s": (0.001, 60.0),
    "realsense.reconnect_max_s": (0.001, 600.0),
    "realsense.frame_timeout_ms": (1, 60000),
    "tracking.intra_op_threads": (1, 256),
    "tracking.redetect_interval_frames": (0, 100000),
    "tracking.depth_window_px": (1, 99),
    "tracking.depth_min_m": (0.0, 100.0),
    "tracking.depth_max_m": (0.001, 100.0),
    "tracking.smoothing_min_cutoff_hz": (0.001, 1000.0),
    "tracking.smoothing_d_cutoff_hz": (0.001, 1000.0),
    "overlay.fps_window": (1, 10000),
    "overlay.velocity_frames": (2, 30),
    "transport.send_hwm": (1, 100000),
    "transport.socket_buffer_bytes": (0, 64 * 1024 * 1024),  # 0: the system's default
    "transport.status_hz": (0.01, 100.0),
    "transport.video_max_fps": (0.1, 120.0),
    "transport.video_max_width": (16, 4096),
    "transport.video_jpeg_quality": (1, 100),
    "transport.max_message_bytes": (MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES),
    "calibration.max_age_days": (0.001, 36500.0),
    "calibration.min_views": (1, 10000),
    "service.metrics_port": (0, 65535),  # 0: a free port
    "service.stop_timeout_s": (0.1, 3600.0),
    "recordings.retention_days": (0, 36500),
    "recordings.min_free_mb": (0, 100_000_000),
    "plan.max_file_mb": (0.001, 4096.0),
    "plan.max_mesh_triangles": (1, 50_000_000),
    "plan.max_mesh_vertices": (3, 50_000_000),
    "plan.max_total_triangles": (1, 100_000_000),
    "plan.max_total_vertices": (3, 100_000_000),
    "plan.max_targets": (0, 100_000),
    "plan.max_structures": (0, 10_000),
    "plan.max_landmarks": (4, 10_000),  # registration needs 4
    "plan.max_name_chars": (8, 1024),
    "plan.max_text_chars": (0, 1_000_000),
    "plan.min_skin_size_mm": (1.0, 10_000.0),
    "plan.max_skin_size_mm": (1.0, 10_000.0),
    "plan.max_target_distance_mm": (1.0, 10_000.0),
    "registration.init_max_iterations": (1, 1000),
    "registration.track_max_iterations": (1, 1000),
    "registration.min_cloud_points": (1, 1_000_000),
    "registration.tre_confidence_factor": (0.1, 100.0),
    "registration.depth_subpixel_px": (0.001, 10.0),
    "registration.depth_baseline_mm": (1.0, 1000.0),
    "registration.skin_depth_bias_mm": (-10.0, 10.0),
    "registration.drape_chroma": (0.0, 255.0),
    "registration.min_regions_used": (0, 6),
    "registration.landmark_check_fle_mm": (0.5, 10.0),
    "phantom.skin_depth_bias_mm": (-10.0, 10.0),
    "tools.max_reprojection_px": (0.1, 50.0),
    "tools.max_rms_px": (0.05, 50.0),
    "tools.lost_after_frames": (1, 10_000),
    "tools.search_every_frames": (1, 10_000),
    "tools.smoothing_min_cutoff_hz": (0.01, 100.0),
    "tools.smoothing_beta": (0.0, 1e6),
    "tools.smoothing_d_cutoff_hz": (0.01, 100.0),
    "tools.structure_warning_mm": (0.0, 1000.0),
}


def parse_config(
    data: dict[str, Any], where: str = "<config>"
) -> tuple[EdgeConfig, dict[str, str]]:
    """Build an :class:`EdgeConfig` from a parsed TOML table, with each key's origin."""
    origins: dict[str, str] = {}
    return build_dataclass(EdgeConfig, data, "", where, origins, RANGES), origins


def find_config_file() -> Path | None:
    """The configuration file on the default search path, if any."""
    env = os.environ.get("EDGE_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_SEARCH_PATH:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def load_config(path: str | Path | None = None) -> tuple[EdgeConfig, dict[str, str]]:
    """Load and validate a configuration file (or the defaults when there is none)."""
    chosen = Path(path) if path is not None else find_config_file()
    if chosen is None:
        return parse_config({}, "defaults")
    try:
        data = read_toml(chosen)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {chosen} does not exist", "check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {chosen}: {exc}") from None
    except ValueError as exc:  # too large, not UTF-8, not TOML, nested too deep
        raise ConfigError(f"configuration file {chosen}: {exc}", "fix the file") from None
    return parse_config(data, str(chosen))


T = TypeVar("T")


def with_overrides(cfg: T, **changes: Any) -> T:
    """A copy of a config section with some fields replaced (e.g. from the command line)."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
