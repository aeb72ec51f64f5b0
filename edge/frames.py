"""The frame: the one type every stage speaks, and the source interface.

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

from edge.errors import SourceError, StateError

LANDMARK_COUNT = 468


class PixelFormat(str, enum.Enum):
    """Channel order of a color image (always 8 bits per channel)."""

    RGB8 = "rgb8"
    BGR8 = "bgr8"


class DistortionModel(str, enum.Enum):
    """Lens distortion models (names as librealsense uses them)."""

    NONE = "none"
    BROWN_CONRADY = "brown_conrady"  # OpenCV's k1 k2 p1 p2 k3
    INVERSE_BROWN_CONRADY = "inverse_brown_conrady"
    MODIFIED_BROWN_CONRADY = "modified_brown_conrady"
    KANNALA_BRANDT4 = "kannala_brandt4"


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one stream, in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: DistortionModel = DistortionModel.NONE
    coeffs: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if len(self.coeffs) != 5:
            raise ValueError(f"need 5 distortion coefficients, got {len(self.coeffs)}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array(
            [[self.fx, 0.0, self.ppx], [0.0, self.fy, self.ppy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    def project(self, points_m: np.ndarray) -> np.ndarray:
        """Project Nx3 camera-frame points (metres, z > 0) to Nx2 pixels (no distortion)."""
        p = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * p[:, 0] / z + self.ppx
            v = self.fy * p[:, 1] / z + self.ppy
        return np.stack([u, v], axis=1)

    def deproject(self, pixels: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """Lift Nx2 pixels with N depths (metres) to Nx3 camera-frame points."""
        px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        z = np.asarray(depth_m, dtype=np.float64).reshape(-1)
        x = (px[:, 0] - self.ppx) / self.fx * z
        y = (px[:, 1] - self.ppy) / self.fy * z
        return np.stack([x, y, z], axis=1)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution (same field of view)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            width,
            height,
            self.fx * sx,
            self.fy * sy,
            (self.ppx + 0.5) * sx - 0.5,
            (self.ppy + 0.5) * sy - 0.5,
            self.model,
            self.coeffs,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "ppx": self.ppx,
            "ppy": self.ppy,
            "model": self.model.value,
            "coeffs": list(self.coeffs),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Intrinsics:
        coeffs = tuple(float(c) for c in d.get("coeffs", (0.0,) * 5))  # type: ignore[attr-defined]
        return cls(
            int(d["width"]),  # type: ignore[call-overload]
            int(d["height"]),  # type: ignore[call-overload]
            float(d["fx"]),  # type: ignore[arg-type]
            float(d["fy"]),  # type: ignore[arg-type]
            float(d["ppx"]),  # type: ignore[arg-type]
            float(d["ppy"]),  # type: ignore[arg-type]
            DistortionModel(d.get("model", "none")),
            coeffs,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Extrinsics:
    """A rigid transform between two sensors: rotation (3x3) and translation (metres)."""

    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix (row-major rotation as given)."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        m[:3, 3] = self.translation_m
        return m


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


@dataclass
class Frame:
    """One RGB-D frame with everything needed to interpret it.

    ``depth`` is aligned to the color image (same size, same intrinsics);
    ``depth_scale_m`` converts its raw units to metres; 0 means no depth.
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
