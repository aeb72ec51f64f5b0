"""Recorded sessions: playback of librealsense recordings and a recorder that writes them.

File format
    A ROS 2 bag in one SQLite file (``.db3``), exactly as librealsense 2.5x
    records it, so ``realsense-viewer`` and any librealsense program can play
    it. ROS 1 ``.bag`` files are played where the installed librealsense
    reads them (it cannot write them).

Frame identity
    The color stream is the master: every color frame in the file is
    delivered exactly once, in order, with ``frame.number`` its 0-based index
    in the file, paired with the depth frame nearest in device time.

Ground truth sidecar
    ``NAME.truth.jsonl`` next to ``NAME.db3``: a header line, then one JSON
    object per frame (see :func:`truth_to_json`), appended and flushed per
    frame. :class:`RecordingSource` attaches it back to ``frame.truth``.

Reading
    A ``.db3``'s images are read from its SQLite file in file order
    (:mod:`edge.sources.db3`): exact, thread-free, with frame access by index;
    librealsense reads the device description (intrinsics, extrinsics, depth
    scale). A ROS 1 ``.bag`` is played by librealsense with
    ``set_real_time(False)``, flow-controlled by pausing it.

Timing
    DETERMINISTIC delivers every frame once, as fast as the consumer reads.
    REALTIME reads the same way and then sleeps until each frame's recorded
    device time (relative to the first frame) has passed on the host clock:
    librealsense's own real-time playback drops frames when the consumer is
    slow, this never does.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edge import geometry
from edge.errors import SourceError, StateError
from edge.frames import (
    DistortionModel,
    Extrinsics,
    Frame,
    FrameSource,
    GroundTruth,
    Intrinsics,
    PixelFormat,
    TimingMode,
)
from edge.sources.db3 import Db3Images

log = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".db3", ".bag")
TRUTH_FORMAT = "edge-truth"
TRUTH_VERSION = 1
_QUEUE_CAPACITY = 128  # frames (both streams) librealsense may decode ahead; drops beyond
_PAUSE_AT = 16  # pause the playback when this many frames wait, resume at _RESUME_AT
_RESUME_AT = 4
_DEPTH_WINDOW = 8  # recent depth frames kept for pairing with color
_POLL_S = 0.05
_END_GRACE_S = 1.0
_STALL_S = 10.0  # no frame for this long while the file is not done: report a stall
_SQLITE_MAGIC = b"SQLite format 3\x00"
_COLOR_TOPIC = re.compile(r"^/device_\d+/sensor_\d+/Color_\d+/image/data")
_DEPTH_TOPIC = re.compile(r"^/device_\d+/sensor_\d+/Depth_\d+/image/data")


# --------------------------------------------------------------------------- paths


def truth_path(recording: str | Path) -> Path:
    """The ground-truth sidecar of a recording: ``NAME.db3`` -> ``NAME.truth.jsonl``."""
    p = Path(recording)
    return p.with_name(p.stem + ".truth.jsonl")


def _no_file_fix() -> str:
    return "record one with `edge record --source synthetic --frames 60 --out FILE.db3`"


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class BagIndex:
    """What the SQLite index of a ``.db3`` says, read without librealsense."""

    color_frames: int
    depth_frames: int
    first_ns: int
    last_ns: int


def index_db3(path: Path) -> BagIndex:
    """Check that ``path`` is a readable, non-empty librealsense ``.db3`` and count its frames.

    Raises SourceError naming the problem: not a recording, truncated or
    corrupt, empty, or no color stream.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        raise SourceError(f"recording {path} does not exist", _no_file_fix()) from None
    except OSError as exc:
        raise SourceError(
            f"cannot read recording {path}: {exc.strerror}", "check the path"
        ) from None
    if len(head) == 0:
        raise SourceError(
            f"recording {path} is empty (0 bytes)",
            "the recording was not finished; record it again",
        )
    if head != _SQLITE_MAGIC:
        raise SourceError(
            f"{path} is not a recording (not a ROS 2 bag / SQLite file)",
            "pass a .db3 file written by `edge record` or the RealSense recorder",
        )
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:  # pragma: no cover - the magic check above catches most
        raise SourceError(f"cannot open recording {path}: {exc}", "check the file") from None
    try:
        check = con.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise sqlite3.DatabaseError(str(check[0] if check else "no result"))
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"topics", "messages"} <= tables:
            raise SourceError(
                f"{path} is an SQLite file but not a ROS 2 bag (no topics/messages tables)",
                "pass a .db3 file written by `edge record` or the RealSense recorder",
            )
        rows = con.execute(
            "SELECT t.name, COUNT(m.id), MIN(m.timestamp), MAX(m.timestamp) "
            "FROM topics t LEFT JOIN messages m ON m.topic_id = t.id GROUP BY t.id"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"recording {path} is truncated or corrupt ({exc})",
            "record it again; a recording interrupted by power loss cannot be repaired",
        ) from None
    finally:
        con.close()
    color = [r for r in rows if _COLOR_TOPIC.match(r[0])]
    depth = [r for r in rows if _DEPTH_TOPIC.match(r[0])]
    color_frames = sum(r[1] for r in color)
    depth_frames = sum(r[1] for r in depth)
    if not rows or (color_frames == 0 and depth_frames == 0):
        raise SourceError(
            f"recording {path} holds no frames",
            "the recording was stopped before the first frame; record it again",
        )
    if color_frames == 0:
        raise SourceError(
            f"recording {path} has no color stream (depth only)",
            "record with the color stream enabled",
        )
    stamps = [r for r in color if r[1]]
    return BagIndex(
        color_frames=color_frames,
        depth_frames=depth_frames,
        first_ns=int(min(r[2] for r in stamps)),
        last_ns=int(max(r[3] for r in stamps)),
    )


def _check_recording_path(path: Path) -> BagIndex | None:
    """Validate a recording path; the index for ``.db3``, None for ``.bag``."""
    if path.suffix.lower() not in RECORDING_SUFFIXES:
        raise SourceError(
            f"{path} is not a recording (expected a .db3 or .bag file)",
            "pass a file written by `edge record` or the RealSense recorder",
        )
    if path.suffix.lower() == ".db3":
        return index_db3(path)
    if not path.is_file():
        raise SourceError(f"recording {path} does not exist", _no_file_fix())
    if path.stat().st_size == 0:
        raise SourceError(f"recording {path} is empty (0 bytes)", "record it again")
    return None


# --------------------------------------------------------------------------- conversions


def _model_from_rs(model: Any) -> DistortionModel:
    name = str(model).rsplit(".", 1)[-1]
    try:
        return DistortionModel(name)
    except ValueError:
        raise SourceError(
            f"unsupported lens distortion model '{name}' in the recording",
            "supported: " + ", ".join(m.value for m in DistortionModel),
        ) from None


def intrinsics_from_rs(intr: Any) -> Intrinsics:
    """Convert a ``pyrealsense2.intrinsics`` to :class:`Intrinsics`."""
    coeffs = tuple(float(c) for c in list(intr.coeffs)[:5])
    return Intrinsics(
        int(intr.width),
        int(intr.height),
        float(intr.fx),
        float(intr.fy),
        float(intr.ppx),
        float(intr.ppy),
        _model_from_rs(intr.model),
        coeffs + (0.0,) * (5 - len(coeffs)),  # type: ignore[arg-type]
    )


def intrinsics_to_rs(intr: Intrinsics) -> Any:
    import pyrealsense2 as rs

    out = rs.intrinsics()
    out.width, out.height = intr.width, intr.height
    out.fx, out.fy, out.ppx, out.ppy = intr.fx, intr.fy, intr.ppx, intr.ppy
    out.model = getattr(rs.distortion, intr.model.value)
    out.coeffs = list(intr.coeffs)
    return out


def extrinsics_from_rs(ext: Any) -> Extrinsics:
    return Extrinsics(
        rotation=tuple(float(r) for r in ext.rotation),
        translation_m=tuple(float(t) for t in ext.translation),  # type: ignore[arg-type]
    )


def align_depth_to_color(
    depth: np.ndarray,
    depth_intrinsics: Intrinsics,
    color_intrinsics: Intrinsics,
    depth_to_color: np.ndarray,
    depth_scale_m: float,
) -> np.ndarray:
    """Re-project a raw depth image (uint16, ``depth_scale_m`` metres per unit) onto the color grid.

    Each valid depth pixel is lifted to 3-D (metres) with the depth
    intrinsics, moved by ``depth_to_color`` (4x4, metres), projected with
    the color intrinsics and written to the nearest color pixel, keeping the
    nearest surface where several land (a z-buffer). Lens distortion is
    ignored: D4xx depth streams report zero distortion and the color
    distortion is small at the pixel level. Returns uint16, 0 = no depth.
    """
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise ValueError(f"depth must be HxW uint16, got {depth.shape} {depth.dtype}")
    if depth.shape != (depth_intrinsics.height, depth_intrinsics.width):
        raise ValueError("depth image does not match its intrinsics")
    m = np.asarray(depth_to_color, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError("depth_to_color must be a 4x4 matrix")
    v, u = np.nonzero(depth)
    if not depth_scale_m > 0:
        raise ValueError(f"depth scale must be positive, got {depth_scale_m}")
    color = color_intrinsics
    out = np.zeros((color.height, color.width), dtype=np.uint16)
    if v.size == 0:
        return out
    z_m = depth[v, u].astype(np.float64) * depth_scale_m
    pts_m = depth_intrinsics.deproject(np.stack([u, v], axis=1).astype(np.float64), z_m)
    moved = geometry.apply(m, pts_m)
    ok = moved[:, 2] > 0
    uv = np.rint(color.project(moved[ok])).astype(np.int64)
    z = np.clip(np.rint(moved[ok, 2] / depth_scale_m), 1, 65535).astype(np.uint16)
    inside = (
        (uv[:, 0] >= 0) & (uv[:, 0] < color.width) & (uv[:, 1] >= 0) & (uv[:, 1] < color.height)
    )
    uv, z = uv[inside], z[inside]
    # Write far to near so the nearest surface wins where pixels collide.
    order = np.argsort(-z.astype(np.int64), kind="stable")
    out[uv[order, 1], uv[order, 0]] = z[order]
    return out


_COLOR_FORMATS = {"rgb8": PixelFormat.RGB8, "bgr8": PixelFormat.BGR8}


def truth_to_json(frame_number: int, device_timestamp_ms: float, truth: GroundTruth) -> str:
    """One sidecar line: the frame's index and timestamp and its ground truth (metres, pixels)."""

    def arr(a: np.ndarray | None) -> list[Any] | None:
        return None if a is None else np.asarray(a, dtype=np.float64).tolist()

    return json.dumps(
        {
            "frame": frame_number,
            "device_timestamp_ms": device_timestamp_ms,
            "patient_to_camera": arr(truth.patient_to_camera),
            "face_visible": bool(truth.face_visible),
            "landmarks_px": arr(truth.landmarks_px),
            "landmarks_camera_m": arr(truth.landmarks_camera_m),
            "scenario": truth.scenario,
        },
        separators=(",", ":"),
    )


def truth_from_json(obj: dict[str, Any]) -> GroundTruth:
    def arr(v: Any) -> np.ndarray | None:
        return None if v is None else np.asarray(v, dtype=np.float64)

    pose = arr(obj["patient_to_camera"])
    if pose is None or pose.shape != (4, 4):
        raise ValueError("patient_to_camera must be a 4x4 matrix")
    return GroundTruth(
        patient_to_camera=pose,
        face_visible=bool(obj["face_visible"]),
        landmarks_px=arr(obj.get("landmarks_px")),
        landmarks_camera_m=arr(obj.get("landmarks_camera_m")),
        scenario=str(obj.get("scenario", "")),
    )


def load_truth(recording: Path) -> dict[int, GroundTruth]:
    """Read a recording's truth sidecar (empty when there is none).

    A torn last line (the recorder was killed mid-write) is ignored; any
    other malformed line is a SourceError.
    """
    side = truth_path(recording)
    if not side.is_file():
        return {}
    lines = side.read_text(encoding="utf-8").splitlines()
    out: dict[int, GroundTruth] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if i == 0 and obj.get("format") == TRUTH_FORMAT:
                if obj.get("version") != TRUTH_VERSION:
                    raise ValueError(f"unsupported version {obj.get('version')}")
                continue
            out[int(obj["frame"])] = truth_from_json(obj)
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines) - 1:
                log.warning("ignoring torn last line of %s", side)
                continue
            raise SourceError(
                f"{side} line {i + 1} is not valid ground truth ({exc})",
                "delete the sidecar or record again",
            ) from None
    return out


# --------------------------------------------------------------------------- playback


@dataclass
class _Pending:
    """A color frame waiting for its nearest depth frame."""

    number: int
    timestamp_ms: float
    color: np.ndarray
    depth: np.ndarray | None = None


def nearest_depth(color_ms: list[float], depth_ms: list[float]) -> list[int]:
    """For each color time, the index of the depth frame nearest in device time."""
    if not depth_ms:
        return []
    d = np.asarray(depth_ms, dtype=np.float64)
    order = np.argsort(d, kind="stable")
    ds = d[order]
    c = np.asarray(color_ms, dtype=np.float64)
    right = np.clip(np.searchsorted(ds, c), 0, len(ds) - 1)
    left = np.clip(right - 1, 0, len(ds) - 1)
    take_left = np.abs(ds[left] - c) <= np.abs(ds[right] - c)
    return [int(i) for i in order[np.where(take_left, left, right)]]


@dataclass
class RecordingInfo:
    """What ``edge info`` reports about a recording."""

    path: str
    frames: int
    width: int
    height: int
    fps: float
    duration_s: float
    depth_scale_m: float
    color_format: str
    streams: list[dict[str, Any]] = field(default_factory=list)
    has_truth: bool = False
    intrinsics: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "streams": self.streams,
            "duration_s": self.duration_s,
            "depth_scale_m": self.depth_scale_m,
            "color_format": self.color_format,
            "has_truth": self.has_truth,
            "intrinsics": self.intrinsics,
        }


class RecordingSource(FrameSource):
    """Frames from a librealsense recording (``.db3``, or ``.bag`` where supported).

    ``timing``: DETERMINISTIC (every frame once, as fast as read) or REALTIME
    (paced at the recorded device timestamps with ``clock``/``sleep``).
    ``start_frame`` skips to that index on open; :meth:`seek` moves later.
    Raises SourceError on open for a missing, foreign, empty, truncated or
    unsupported file.
    """

    name = "recording"

    def __init__(
        self,
        path: str | Path,
        *,
        timing: TimingMode = TimingMode.DETERMINISTIC,
        start_frame: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self._timing = timing
        self._start_frame = start_frame
        self._clock = clock
        self._sleep = sleep
        self._index: BagIndex | None = None
        self._truth: dict[int, GroundTruth] = {}
        self._device: Any = None
        self._playback: Any = None
        self._sensors: list[Any] = []
        self._queue: Any = None
        self._paused = False
        self._streams: list[dict[str, Any]] = []
        self._align: tuple[Intrinsics, np.ndarray] | None = None
        self._depth_size = (0, 0)  # (height, width) of the recorded depth images
        self._intrinsics: Intrinsics | None = None
        self._depth_to_color = Extrinsics()
        self._depth_scale_m = 0.0
        self._color_format = PixelFormat.RGB8
        self._fps = 30.0
        self._has_depth = False
        # Pairing buffers: color frames waiting for depth, recent depth frames.
        self._colors: collections.deque[tuple[int, float, np.ndarray]] = collections.deque()
        self._depths: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._colors_seen = 0
        self._depths_seen = 0
        self._depth_end = False
        self._ready: _Pending | None = None  # a frame seek decoded, delivered next
        self._pace_origin: tuple[float, float] | None = None  # (host s, device ms)
        # A .db3 is read from its SQLite file: its images, each color's depth, the next index.
        self._images: Db3Images | None = None
        self._pairs: list[int] = []
        self._next = 0

    # -- properties

    @property
    def frame_count(self) -> int | None:
        if self._images is not None:
            return len(self._images.color)
        return self._index.color_frames if self._index else None

    @property
    def nominal_fps(self) -> float:
        return self._fps

    @property
    def intrinsics(self) -> Intrinsics:
        if self._intrinsics is None:
            raise StateError("recording is not open", "open it first")
        return self._intrinsics

    @property
    def depth_scale_m(self) -> float:
        return self._depth_scale_m

    @property
    def color_format(self) -> PixelFormat:
        return self._color_format

    @property
    def has_depth(self) -> bool:
        return self._has_depth

    @property
    def has_truth(self) -> bool:
        return bool(self._truth)

    # -- lifecycle

    def _open(self) -> None:
        self._index = _check_recording_path(self.path)
        if self._index is not None and not 0 <= self._start_frame < self._index.color_frames:
            raise SourceError(
                f"start frame {self._start_frame} is outside {self.path} "
                f"(frames 0..{self._index.color_frames - 1})",
                "pick an index inside the recording",
            )
        self._truth = load_truth(self.path)
        if self._index is None:  # ROS 1 .bag: librealsense plays it
            self._start_playback()
            if self._start_frame:
                self._skip_to(self._start_frame)
            return
        self._describe()
        self._images = Db3Images(self.path)
        self._pairs = nearest_depth(
            [r.device_ms for r in self._images.color], [r.device_ms for r in self._images.depth]
        )
        if self._has_depth and not self._pairs:
            self._images.close()
            self._images = None
            raise SourceError(
                f"{self.path} declares a depth stream but holds no depth images",
                "record it again",
            )
        self._next = self._start_frame
        self._pace_origin = None

    def _load_device(self) -> Any:
        import pyrealsense2 as rs

        try:
            return rs.context().load_device(str(self.path))
        except RuntimeError as exc:
            raise SourceError(
                f"librealsense cannot play {self.path}: {str(exc).splitlines()[0]}",
                "check that it is a RealSense recording that is not truncated",
            ) from None

    def _describe(self) -> None:
        """Streams, intrinsics, extrinsics and depth scale from the recording's device
        description (librealsense reads it without streaming)."""
        import pyrealsense2 as rs

        device = self._load_device()
        try:
            self._read_profiles(device, rs)
        finally:
            del device

    def _start_playback(self) -> None:
        """Load the file as a playback device and start its sensors into our queue."""
        import pyrealsense2 as rs

        device = self._load_device()
        playback = device.as_playback()
        # Before any sensor starts: frames dispatched in real time would be dropped.
        playback.set_real_time(False)
        profiles = self._read_profiles(device, rs)
        # A librealsense frame queue, not a Python callback: no GIL in librealsense's
        # threads, so stopping never waits on Python. Read-ahead is bounded by pausing.
        self._queue = rs.frame_queue(_QUEUE_CAPACITY, keep_frames=True)
        # Stays paused until the first read (see _pull): librealsense's thread holds the
        # GIL while it hands a frame to the queue and can block there, so a queue filled
        # while the consumer is busy elsewhere (set-up after open()) hung the process.
        self._paused = True
        started = []
        try:
            # Playback starts with the first sensor; paused, so that no stream's first
            # frames go by before its own sensor is started (measured: color frames
            # were lost at the start otherwise).
            playback.pause()
            for sensor, profile in profiles:
                sensor.open(profile)
                sensor.start(self._queue)
                started.append(sensor)
        except RuntimeError as exc:
            self._sensors = started
            self._stop_playback()
            raise SourceError(
                f"librealsense cannot play {self.path}: {exc}", "record it again"
            ) from None
        self._device, self._playback, self._sensors = device, playback, started
        self._colors_seen = 0
        self._depths_seen = 0
        self._depth_end = False
        self._colors = collections.deque()
        self._depths = collections.deque(maxlen=_DEPTH_WINDOW)
        self._ready = None
        self._pace_origin = None

    def _read_profiles(self, device: Any, rs: Any) -> list[tuple[Any, Any]]:
        color = depth = None
        chosen: list[tuple[Any, Any]] = []
        for sensor in device.query_sensors():
            for prof in sensor.get_stream_profiles():
                if not prof.is_video_stream_profile():
                    continue
                if prof.stream_type() == rs.stream.color and color is None:
                    color = prof.as_video_stream_profile()
                    chosen.append((sensor, prof))
                elif prof.stream_type() == rs.stream.depth and depth is None:
                    depth = prof.as_video_stream_profile()
                    chosen.append((sensor, prof))
        if color is None:
            raise SourceError(f"{self.path} has no color stream", "record with color enabled")
        fmt = str(color.format()).rsplit(".", 1)[-1]
        if fmt not in _COLOR_FORMATS:
            raise SourceError(
                f"{self.path}: unsupported color format '{fmt}'",
                "record color as rgb8 or bgr8",
            )
        self._color_format = _COLOR_FORMATS[fmt]
        self._fps = float(color.fps()) or 30.0
        self._intrinsics = intrinsics_from_rs(color.get_intrinsics())
        self._has_depth = depth is not None
        self._align = None
        self._streams = [
            {
                "stream": str(p.stream_type()).rsplit(".", 1)[-1],
                "format": str(p.format()).rsplit(".", 1)[-1],
                "width": p.as_video_stream_profile().width(),
                "height": p.as_video_stream_profile().height(),
                "fps": p.fps(),
            }
            for _, p in chosen
        ]
        if depth is not None:
            dfmt = str(depth.format()).rsplit(".", 1)[-1]
            if dfmt != "z16":
                raise SourceError(
                    f"{self.path}: unsupported depth format '{dfmt}'", "record depth as z16"
                )
            self._depth_scale_m = float(device.first_depth_sensor().get_depth_scale())
            self._depth_to_color = extrinsics_from_rs(depth.get_extrinsics_to(color))
            depth_intr = intrinsics_from_rs(depth.get_intrinsics())
            self._depth_size = (depth_intr.height, depth_intr.width)
            # Re-aligning an already aligned image would resample it: keep exact pixels.
            if depth_intr != self._intrinsics or not np.allclose(
                self._depth_to_color.matrix, np.eye(4)
            ):
                self._align = (depth_intr, self._depth_to_color.matrix)
        return chosen

    def _stop_playback(self) -> None:
        for sensor in self._sensors:
            with contextlib.suppress(RuntimeError):
                sensor.stop()
            with contextlib.suppress(RuntimeError):
                sensor.close()
        self._sensors = []
        self._device = self._playback = None

    def _close(self) -> None:
        self._stop_playback()
        if self._images is not None:
            self._images.close()
            self._images = None

    # -- reading

    def _file_done(self) -> bool:
        if self._index is None:
            return False
        depth_done = not self._has_depth or self._depths_seen >= self._index.depth_frames
        return self._colors_seen >= self._index.color_frames and depth_done

    def _pull(self) -> bool:
        """Move one frame from librealsense into the pairing buffers; False at the end."""
        if self._file_done():
            return False
        if self._paused and self._queue.size() <= _RESUME_AT:
            self._playback.resume()
            self._paused = False
        waited_s = 0.0
        stopped_s = 0.0
        while True:
            ok, f = self._queue.try_wait_for_frame(int(_POLL_S * 1000))
            if ok:
                break
            waited_s += _POLL_S
            if self._paused:
                self._playback.resume()
                self._paused = False
            if self._index is None:
                # No index (ROS 1 .bag): the end is the playback stopping and then
                # nothing more arriving for a grace period (frames may be in flight).
                playback = self._playback
                if playback is None or "stopped" in str(playback.current_status()):
                    stopped_s += _POLL_S
                    if stopped_s >= _END_GRACE_S:
                        return False
            if waited_s >= _STALL_S:
                raise SourceError(
                    f"playback of {self.path} stalled after {self._colors_seen} frames",
                    "check the file with `edge info`; record it again if it is damaged",
                )
        backlog = self._queue.size()
        if backlog >= _PAUSE_AT and not self._paused:
            self._playback.pause()
            self._paused = True
        elif backlog <= _RESUME_AT and self._paused:
            self._playback.resume()
            self._paused = False
        kind = "color" if "color" in str(f.profile.stream_type()) else "depth"
        ts = float(f.get_timestamp())
        data = np.array(np.asanyarray(f.get_data()), copy=True)
        del f  # give the frame back to librealsense's pool now
        if kind == "color":
            self._colors.append((self._colors_seen, ts, data))
            self._colors_seen += 1
        else:
            self._depths.append((ts, data))
            self._depths_seen += 1
        return True

    def _next_color(self) -> _Pending | None:
        """The next color frame in file order, with its nearest depth, or None at the end."""
        while True:
            if self._colors:
                number, ts, color = self._colors[0]
                later = any(d_ts >= ts for d_ts, _ in self._depths)
                if not self._has_depth or later or self._depth_finished():
                    self._colors.popleft()
                    p = _Pending(number=number, timestamp_ms=ts, color=color)
                    if self._depths:
                        d_ts, depth = min(self._depths, key=lambda d: abs(d[0] - ts))
                        p.depth = self._aligned(depth)
                        # Depth frames before this one can pair with no later color frame.
                        while len(self._depths) > 1 and self._depths[0][0] < d_ts:
                            self._depths.popleft()
                    return p
            if not self._pull():
                if self._colors:
                    self._depth_end = True
                    continue
                return None

    def _depth_finished(self) -> bool:
        if self._depth_end:
            return True
        return self._index is not None and self._depths_seen >= self._index.depth_frames

    def _aligned(self, depth: np.ndarray) -> np.ndarray:
        if self._align is None:
            return depth
        assert self._intrinsics is not None
        depth_intr, depth_to_color = self._align
        return align_depth_to_color(
            depth, depth_intr, self._intrinsics, depth_to_color, self._depth_scale_m
        )

    def _skip_to(self, index: int) -> None:
        """Decode forward so that the next read returns frame ``index``."""
        while True:
            p = self._next_color()
            if p is None:
                raise SourceError(
                    f"{self.path} ended before frame {index}", "seek to an earlier frame"
                )
            if p.number == index:
                self._ready = p
                return

    def _read_db3(self) -> _Pending | None:
        images = self._images
        assert images is not None and self._intrinsics is not None
        i = self._next
        if i >= len(images.color):
            return None
        self._next += 1
        size = (self._intrinsics.height, self._intrinsics.width)
        ref = images.color[i]
        color = images.decode(ref, "color", (*size, 3))
        p = _Pending(number=i, timestamp_ms=ref.device_ms, color=color)
        if self._has_depth:
            depth = images.decode(images.depth[self._pairs[i]], "depth", (*self._depth_size, 2))
            p.depth = self._aligned(depth)
        return p

    def _read(self) -> Frame | None:
        if self._images is not None:
            p = self._read_db3()
        else:
            p, self._ready = self._ready, None
            if p is None:
                p = self._next_color()
        if p is None:
            return None
        if self._timing is TimingMode.REALTIME:
            self._pace(p.timestamp_ms)
        assert self._intrinsics is not None
        return Frame(
            number=p.number,
            color=p.color,
            color_format=self._color_format,
            depth=p.depth,
            depth_scale_m=self._depth_scale_m if p.depth is not None else 0.0,
            intrinsics=self._intrinsics,
            depth_to_color=self._depth_to_color,
            device_timestamp_ms=p.timestamp_ms,
            host_timestamp_s=time.monotonic(),
            truth=self._truth.get(p.number),
        )

    def _pace(self, device_ms: float) -> None:
        now = self._clock()
        if self._pace_origin is None:
            self._pace_origin = (now, device_ms)
            return
        host0, dev0 = self._pace_origin
        wait_s = host0 + (device_ms - dev0) / 1000.0 - now
        if wait_s > 0:
            self._sleep(wait_s)

    def seek(self, index: int) -> None:
        """Make ``index`` (0-based, in file order) the next frame ``read()`` returns.

        Seeking restarts playback and decodes forward to the frame, so it is
        exact but costs about one frame decode per skipped frame.
        """
        from edge.frames import SourceState

        if self.state not in (SourceState.OPEN, SourceState.EXHAUSTED):
            raise StateError(f"cannot seek a {self.state.value} recording", "open it first")
        count = self.frame_count
        if index < 0 or (count is not None and index >= count):
            raise SourceError(
                f"frame {index} is outside {self.path} (frames 0..{(count or 1) - 1})",
                "pick an index inside the recording",
            )
        if self._images is not None:
            self._next = index
            self._pace_origin = None
            self._state = SourceState.OPEN
            return
        self._close()
        self._start_playback()
        self._state = SourceState.OPEN
        if index:
            self._skip_to(index)

    def info(self) -> RecordingInfo:
        """Streams, sizes, rate and duration of the open recording."""
        if (self._playback is None and self._images is None) or self._intrinsics is None:
            raise StateError("recording is not open", "open it first")
        streams = sorted(self._streams, key=lambda d: str(d["stream"]))
        frames = self.frame_count if self.frame_count is not None else -1
        # Duration from the frame count and rate: the file's own duration is the
        # wall time of writing, which for a software recording says nothing.
        duration_s = (
            frames / self._fps if frames > 0 else self._playback.get_duration().total_seconds()
        )
        return RecordingInfo(
            path=str(self.path),
            frames=frames,
            width=self._intrinsics.width,
            height=self._intrinsics.height,
            fps=self._fps,
            duration_s=duration_s,
            depth_scale_m=self._depth_scale_m,
            color_format=self._color_format.value,
            streams=streams,
            has_truth=self.has_truth,
            intrinsics=self._intrinsics.to_dict(),
        )


def probe_recording(path: str | Path) -> RecordingInfo:
    """Open a recording just long enough to describe it (raises SourceError when it is bad)."""
    with RecordingSource(path) as src:
        assert isinstance(src, RecordingSource)
        info = src.info()
        if info.frames < 0:
            # A ROS 1 .bag has no index we read: count by playing it once.
            info.frames = sum(1 for _ in src)
            info.duration_s = info.frames / info.fps
        return info


def measure_playback_fps(path: str | Path) -> float:
    """Frames per second of deterministic playback of ``path`` (whole file, decode + copy)."""
    start = time.perf_counter()
    count = 0
    with RecordingSource(path) as src:
        for _ in src:
            count += 1
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 else float("inf")


# --------------------------------------------------------------------------- recording


def check_writable(out: str | Path) -> Path:
    """Validate an output recording path before anything is written.

    Raises SourceError when the name does not end in ``.db3`` or the folder
    does not exist or is not writable.
    """
    p = Path(out)
    if p.suffix.lower() != ".db3":
        raise SourceError(
            f"output {p} must end in .db3", "librealsense writes ROS 2 bags only: name it FILE.db3"
        )
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise SourceError(f"cannot write {p}: folder {folder} does not exist", "create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SourceError(
            f"cannot write {p}: folder {folder} is not writable", "pick another --out"
        )
    if p.is_dir():
        raise SourceError(f"cannot write {p}: it is a folder", "pick a file name ending in .db3")
    return p


def temp_path_for(out: Path) -> Path:
    """The in-progress name beside ``out`` (librealsense insists on a .db3 suffix)."""
    return out.with_name(f".{out.stem}.partial-{os.getpid()}.db3")


class Recorder:
    """Writes frames to a ``.db3`` that librealsense plays back, through a software device.

    The streams are configured from the first frame (color size and
    intrinsics, depth scale, rate ``fps``); later frames must match. Frames
    go to a temporary file beside ``out``; :meth:`close` finishes the file
    and renames it into place, :meth:`abort` deletes it. Ground truth, when
    frames carry it, goes to the sidecar (``truth_path(out)``), flushed per frame.

    Depth is written as given (already aligned to color), with the color
    intrinsics and an identity depth-to-color transform, so playback needs no
    alignment and returns the exact pixels.
    """

    def __init__(self, out: str | Path, *, fps: float = 30.0, compress: bool = True) -> None:
        self.out = check_writable(out)
        # librealsense's LZ4 frame compression: about 40 % smaller files of camera-like
        # frames, but their deterministic playback is ~3x slower (measured 95 vs 280
        # frames/s at 640x480); benchmarks record uncompressed.
        self._compress = compress
        self._tmp = temp_path_for(self.out)
        self._tmp_truth = truth_path(self._tmp)
        self._fps = float(fps)
        self._written = 0
        self._dev: Any = None
        self._rec: Any = None
        self._sensors: list[Any] = []
        self._profiles: dict[str, Any] = {}
        self._truth_fh: Any = None
        self._shape: tuple[int, int] | None = None
        self._has_depth = False
        self._intrinsics: Intrinsics | None = None
        self._last_ts = -math.inf
        self._closed = False

    @property
    def frames_written(self) -> int:
        return self._written

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # An interrupt keeps what was recorded; any other failure leaves nothing behind.
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.abort()

    def _setup(self, frame: Frame) -> None:
        import pyrealsense2 as rs

        intr = frame.intrinsics
        rs_intr = intrinsics_to_rs(intr)
        dev = rs.software_device()
        fps = round(self._fps)
        sensors: list[Any] = []
        if frame.depth is not None:
            ds = dev.add_sensor("Depth")
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid = rs.stream.depth, 0, 0
            vs.width, vs.height, vs.fps, vs.bpp = intr.width, intr.height, fps, 2
            vs.fmt, vs.intrinsics = rs.format.z16, rs_intr
            self._profiles["depth"] = ds.add_video_stream(vs).as_video_stream_profile()
            ds.add_read_only_option(rs.option.depth_units, float(frame.depth_scale_m))
            sensors.append(ds)
        cs = dev.add_sensor("Color")
        cv = rs.video_stream()
        cv.type, cv.index, cv.uid = rs.stream.color, 0, 1
        cv.width, cv.height, cv.fps, cv.bpp = intr.width, intr.height, fps, 3
        cv.fmt = rs.format.rgb8 if frame.color_format is PixelFormat.RGB8 else rs.format.bgr8
        cv.intrinsics = rs_intr
        self._profiles["color"] = cs.add_video_stream(cv).as_video_stream_profile()
        sensors.append(cs)
        if frame.depth is not None:
            ident = rs.extrinsics()
            ident.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            ident.translation = [0.0, 0.0, 0.0]
            self._profiles["depth"].register_extrinsics_to(self._profiles["color"], ident)
        try:
            self._rec = rs.recorder(str(self._tmp), dev, self._compress)
        except RuntimeError as exc:
            raise SourceError(f"cannot write {self.out}: {exc}", "pick another --out") from None
        for s, key in zip(sensors, ["depth", "color"][-len(sensors) :], strict=True):
            s.open(self._profiles[key])
            # Into a librealsense queue, not a Python callback: stopping never waits on the GIL.
            s.start(rs.frame_queue(1))
        self._dev, self._sensors = dev, sensors
        self._shape = (intr.height, intr.width)
        self._has_depth = frame.depth is not None
        self._intrinsics = intr
        self._color_format = frame.color_format
        self._depth_scale_m = frame.depth_scale_m

    def _check(self, frame: Frame) -> None:
        if frame.color.shape[:2] != self._shape or frame.intrinsics != self._intrinsics:
            raise SourceError(
                f"frame {frame.number} changes the image size or intrinsics mid-recording",
                "record each camera configuration to its own file",
            )
        if (frame.depth is not None) != self._has_depth or frame.color_format != self._color_format:
            raise SourceError(
                f"frame {frame.number} changes the streams mid-recording",
                "record each camera configuration to its own file",
            )
        if frame.depth is not None and frame.depth_scale_m != self._depth_scale_m:
            raise SourceError(
                f"frame {frame.number} changes the depth scale mid-recording",
                "record each camera configuration to its own file",
            )

    def write(self, frame: Frame) -> None:
        """Append one frame (and its ground truth, if any). Raises SourceError on a mismatch."""
        import pyrealsense2 as rs

        if self._closed:
            raise StateError("recorder is closed", "create a new Recorder")
        if frame.depth is not None and frame.depth.dtype != np.uint16:
            raise SourceError(
                f"unsupported depth format {frame.depth.dtype}", "depth must be uint16 (z16)"
            )
        if self._dev is None:
            self._setup(frame)
        else:
            self._check(frame)
        ts = float(frame.device_timestamp_ms)
        if not ts > self._last_ts:
            # Playback orders and pairs frames by device time: it must increase.
            ts = (self._last_ts + 1000.0 / self._fps) if self._written else 0.0
        self._last_ts = ts
        w = self._shape[1]  # type: ignore[index]
        index = self._written
        if self._has_depth:
            self._push(
                self._sensors[0], self._profiles["depth"], frame.depth, w * 2, 2, ts, index, rs
            )
        color = np.ascontiguousarray(frame.color)
        self._push(self._sensors[-1], self._profiles["color"], color, w * 3, 3, ts, index, rs)
        if frame.truth is not None:
            self._write_truth(index, ts, frame.truth)
        self._written += 1

    def _push(
        self,
        sensor: Any,
        profile: Any,
        pixels: Any,
        stride: int,
        bpp: int,
        ts: float,
        n: int,
        rs: Any,
    ) -> None:
        f = rs.software_video_frame()
        f.pixels = np.ascontiguousarray(pixels)
        f.stride, f.bpp = stride, bpp
        f.timestamp = ts
        f.domain = rs.timestamp_domain.hardware_clock
        f.frame_number = n
        f.profile = profile
        if bpp == 2:
            f.depth_units = float(self._depth_scale_m)
        sensor.on_video_frame(f)

    def _write_truth(self, index: int, ts: float, truth: GroundTruth) -> None:
        if self._truth_fh is None:
            self._truth_fh = self._tmp_truth.open("w", encoding="utf-8")
            header = {"format": TRUTH_FORMAT, "version": TRUTH_VERSION, "units": "metres, pixels"}
            self._truth_fh.write(json.dumps(header) + "\n")
        self._truth_fh.write(truth_to_json(index, ts, truth) + "\n")
        self._truth_fh.flush()

    def _release(self) -> None:
        for s in self._sensors:
            with contextlib.suppress(RuntimeError):
                s.stop()
            with contextlib.suppress(RuntimeError):
                s.close()
        # The recorder finishes the file when its last reference goes.
        self._sensors, self._profiles = [], {}
        self._rec = None
        self._dev = None
        if self._truth_fh is not None:
            self._truth_fh.close()
            self._truth_fh = None

    def close(self) -> Path:
        """Finish the file and move it (and its sidecar) into place; returns the path.

        Raises SourceError when no frame was written (nothing is left behind).
        """
        if self._closed:
            return self.out
        self._closed = True
        self._release()
        if self._written == 0:
            self._remove_temp()
            raise SourceError("no frames were recorded", "check the source")
        if self._tmp_truth.exists():
            os.replace(self._tmp_truth, truth_path(self.out))
        else:
            truth_path(self.out).unlink(missing_ok=True)  # a stale sidecar would lie
        os.replace(self._tmp, self.out)
        return self.out

    def abort(self) -> None:
        """Stop and delete the partial file; the target path is left untouched."""
        if self._closed:
            return
        self._closed = True
        self._release()
        self._remove_temp()

    def _remove_temp(self) -> None:
        for p in (self._tmp, self._tmp_truth, Path(str(self._tmp) + "-journal")):
            p.unlink(missing_ok=True)
