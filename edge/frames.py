"""The frame: the one type every stage speaks, the source interface, and the result
each stage reads and extends.

A :class:`FrameSource` yields :class:`Frame` objects (or raises
:class:`FrameTimeout`, a *gap*: no frame now, the source is still usable). The
pipeline wraps each frame in a :class:`FrameResult`; tracking sets
``tracking``, registration ``registration``, the overlay stage ``overlay``,
and a stage that raises adds a :class:`StageFailure` to ``errors``.

Conventions used throughout the project:

* 3-D positions are in **metres** in the named frame (``camera`` is the color
  camera's optical frame: x right, y down, z forward).
* A transform named ``a_to_b`` is a 4x4 homogeneous matrix mapping points in
  frame *a* to frame *b* (``p_b = a_to_b @ p_a``).
* Pixel coordinates have their origin at the centre of the top-left pixel.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from edge.camera import DistortionModel, Extrinsics, Intrinsics
from edge.errors import FrameTimeout, SourceError, StateError
from edge.overlay.types import Overlay
from edge.registration.types import RegistrationResult
from edge.tools.types import Navigation, ToolsResult
from edge.tracking.types import TrackingResult

__all__ = [  # camera geometry and the gap exception are re-exported with the frame
    "LANDMARK_COUNT",
    "DistortionModel",
    "Extrinsics",
    "Frame",
    "FrameResult",
    "FrameSource",
    "FrameTimeout",
    "GroundTruth",
    "Intrinsics",
    "PixelFormat",
    "SourceState",
    "StageFailure",
    "TimingMode",
    "require_frames",
]

LANDMARK_COUNT = 468


class PixelFormat(str, enum.Enum):
    """Channel order of a color image (always 8 bits per channel)."""

    RGB8 = "rgb8"
    BGR8 = "bgr8"


@dataclass
class GroundTruth:
    """What a synthetic source knows exactly about a frame.

    ``patient_to_camera`` maps plan (patient) coordinates to the camera frame,
    both in metres. Landmark arrays are None when the face is not visible.
    """

    patient_to_camera: np.ndarray
    face_visible: bool
    landmarks_px: np.ndarray | None = None  # (468, 2) color-image pixels
    landmarks_camera_m: np.ndarray | None = None  # (468, 3) camera frame, metres
    scenario: str = ""
    landmarks_visible: np.ndarray | None = None  # (468,) bool: in the image and not covered
    # A tracked tool in the scene (phantom tool scenarios): its pose, tip (m) and unit axis
    # in the camera frame, and whether any of its markers can be seen (not covered).
    tool_name: str = ""
    tool_to_camera: np.ndarray | None = None
    tool_tip_camera_m: np.ndarray | None = None
    tool_axis_camera: np.ndarray | None = None
    tool_visible: bool = False


@dataclass(frozen=True)
class RawDepth:
    """Depth as the depth imager saw it, before alignment to color: what a camera's raw
    recording keeps. ``depth`` is (h, w) uint16 at ``intrinsics`` (the depth imager's),
    in the frame's ``depth_scale_m`` units; ``depth_to_color`` maps the depth imager's
    optical frame to the color camera's."""

    depth: np.ndarray
    intrinsics: Intrinsics
    depth_to_color: Extrinsics

    def __post_init__(self) -> None:
        if self.depth.dtype != np.uint16 or self.depth.shape != (
            self.intrinsics.height,
            self.intrinsics.width,
        ):
            raise ValueError(
                f"raw depth must be {self.intrinsics.height}x{self.intrinsics.width} uint16, "
                f"got {self.depth.shape} {self.depth.dtype}"
            )


@dataclass(frozen=True)
class CameraInfo:
    """What a device says about itself (librealsense's ``camera_info``); a recording
    keeps it. Generated sources name themselves (``phantom``, ``synthetic``)."""

    name: str
    serial: str
    firmware: str = ""
    product_line: str = ""


@dataclass
class Frame:
    """One RGB-D frame with everything needed to interpret it.

    ``depth`` is aligned to the color image (same size, same intrinsics);
    ``depth_scale_m`` converts its raw units to metres; 0 means no depth.
    ``raw_depth``, when the source has it, is the same depth before alignment
    (a recorder writes it instead, so the recording holds the camera's raw streams).
    """

    number: int
    color: np.ndarray  # (H, W, 3) uint8
    color_format: PixelFormat
    depth: np.ndarray | None  # (H, W) uint16, aligned to color, or None
    depth_scale_m: float
    intrinsics: Intrinsics
    depth_to_color: Extrinsics = field(default_factory=Extrinsics)
    device_timestamp_ms: float = 0.0
    host_timestamp_s: float = field(default_factory=time.monotonic)
    truth: GroundTruth | None = None
    raw_depth: RawDepth | None = None

    def __post_init__(self) -> None:
        if self.color.ndim != 3 or self.color.shape[2] != 3 or self.color.dtype != np.uint8:
            raise ValueError(
                f"color must be HxWx3 uint8, got {self.color.shape} {self.color.dtype}"
            )
        h, w = self.color.shape[:2]
        if (w, h) != (self.intrinsics.width, self.intrinsics.height):
            raise ValueError(
                f"color is {w}x{h} but intrinsics are "
                f"{self.intrinsics.width}x{self.intrinsics.height}"
            )
        if self.depth is not None and self.depth.shape != (h, w):
            raise ValueError(f"depth {self.depth.shape} is not aligned to color {(h, w)}")

    @property
    def capture_s(self) -> float:
        """The frame's capture time in seconds on the camera's clock when it has one, else
        the host's. Motion models use it: it is the same on every replay of a recording,
        however fast the machine reads it."""
        if self.device_timestamp_ms > 0:
            return self.device_timestamp_ms / 1000.0
        return self.host_timestamp_s

    def depth_m(self) -> np.ndarray | None:
        """Depth in metres as float32; 0 where the camera measured nothing."""
        if self.depth is None:
            return None
        return self.depth.astype(np.float32) * np.float32(self.depth_scale_m)

    def rgb(self) -> np.ndarray:
        """The color image in RGB order (a view when it already is)."""
        return self.color if self.color_format is PixelFormat.RGB8 else self.color[:, :, ::-1]

    def bgr(self) -> np.ndarray:
        """The color image in BGR order, as OpenCV wants it."""
        return self.color if self.color_format is PixelFormat.BGR8 else self.color[:, :, ::-1]


class SourceState(str, enum.Enum):
    """Lifecycle of a frame source."""

    CREATED = "created"
    OPEN = "open"
    RECONNECTING = "reconnecting"  # live camera lost; the source is retrying
    EXHAUSTED = "exhausted"  # a finite source delivered its last frame
    CLOSED = "closed"


class TimingMode(str, enum.Enum):
    """How a recorded or synthetic source paces its frames."""

    DETERMINISTIC = "deterministic"  # every frame exactly once, as fast as the consumer reads
    REALTIME = "realtime"  # at the recorded (or nominal) frame rate


class FrameSource(ABC):
    """Live, recorded and synthetic frames behind one interface.

    Use as a context manager and iterate::

        with source:
            for frame in source:
                ...

    ``read()`` returns the next frame, or None when a finite source is
    exhausted. Calling ``read()`` before ``open()`` or after ``close()``
    raises :class:`StateError`.
    """

    name = "source"

    def __init__(self) -> None:
        self._state = SourceState.CREATED

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def frame_count(self) -> int | None:
        """Frames a finite source will deliver, or None for a live or unbounded one."""
        return None

    @property
    def nominal_fps(self) -> float:
        return 30.0

    @property
    def paced(self) -> bool:
        """Whether each frame comes at a clock's pace (a live camera, a real-time replay)
        rather than as soon as it is read; read-ahead is only for a source that is not
        (edge/sources/readahead.py)."""
        return False

    @property
    def camera_info(self) -> CameraInfo:
        """The device behind the frames; a generated source is named by its kind."""
        from edge import __version__

        return CameraInfo(self.name, self.name, f"edge {__version__}", self.name)

    def open(self) -> FrameSource:
        if self._state is not SourceState.CREATED:
            raise StateError(
                f"{self.name} source is {self._state.value}",
                "a source can be opened once; create a new one",
            )
        self._open()
        self._state = SourceState.OPEN
        return self

    def read(self) -> Frame | None:
        if self._state in (SourceState.CREATED, SourceState.CLOSED):
            raise StateError(
                f"cannot read from a {self._state.value} {self.name} source",
                "open it first (use it in a with-block)",
            )
        if self._state is SourceState.EXHAUSTED:
            return None
        frame = self._read()
        if frame is None:
            self._state = SourceState.EXHAUSTED
        return frame

    def close(self) -> None:
        if self._state is SourceState.CLOSED:
            return
        try:
            if self._state is not SourceState.CREATED:
                self._close()
        finally:
            self._state = SourceState.CLOSED

    def __enter__(self) -> FrameSource:
        if self._state is SourceState.CREATED:
            self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _read(self) -> Frame | None: ...

    @abstractmethod
    def _close(self) -> None: ...


def require_frames(count: int) -> int:
    """Validate a user-given frame count."""
    if count <= 0:
        raise SourceError(
            f"frame count must be at least 1, got {count}", "pass --frames N with N >= 1"
        )
    return count


@dataclass(frozen=True)
class StageFailure:
    """A stage raised on this frame: which stage, what it raised, and its message."""

    stage: str
    kind: str  # the exception's class name
    message: str

    def __str__(self) -> str:
        return f"{self.stage}: {self.kind}: {self.message}"


@dataclass
class FrameResult:
    """Everything known about one frame as it moves through the stages.

    Times: ``received_s`` and ``done_s`` are host monotonic seconds (when the
    pipeline got the frame, when its last stage ended).
    """

    frame: Frame
    tracking: TrackingResult | None = None
    registration: RegistrationResult | None = None
    overlay: Overlay | None = None
    tools: ToolsResult | None = None  # tracked instruments (edge/tools/stage.py), when enabled
    navigation: list[Navigation] | None = (
        None  # per tool, in plan coordinates (overlay/navigation.py)
    )
    published: bool = False
    errors: list[StageFailure] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)
    # Own times of stages run side by side inside one stage (edge/tools/beside.py), by
    # name; the frame's time for them together is that stage's entry in stage_ms.
    part_ms: dict[str, float] = field(default_factory=dict)
    received_s: float = 0.0
    done_s: float = 0.0
    late: bool = False  # older than the pipeline's late_after_s when it arrived

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    @property
    def end_to_end_ms(self) -> float:
        """From the frame's host capture timestamp to the end of the last stage."""
        return (self.done_s - self.frame.host_timestamp_s) * 1000.0
