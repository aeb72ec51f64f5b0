"""Playback of recorded sessions: :class:`RecordingSource`, :func:`probe_recording`.

File format
    A ROS 2 bag in one SQLite file (``.db3``), exactly as librealsense 2.5x
    records it (:mod:`.recorder` writes one). ROS 1 ``.bag`` files are played
    where the installed librealsense reads them.

Frame identity
    The color stream is the master: every color frame in the file is
    delivered exactly once, in order, with ``frame.number`` its 0-based index
    in the file, paired with the depth frame nearest in device time. Ground
    truth from the sidecar (:mod:`.truth`) is attached to ``frame.truth``.

Reading
    A ``.db3``'s images are read from its SQLite file in file order
    (:mod:`.db3`): exact, thread-free, with frame access by index;
    librealsense reads the device description (intrinsics, extrinsics, depth
    scale). A ROS 1 ``.bag`` is played by librealsense with
    ``set_real_time(False)``, flow-controlled by pausing it.

Timing
    DETERMINISTIC delivers every frame once, as fast as the consumer reads.
    REALTIME reads the same way and then sleeps until each frame's recorded
    device time (relative to the first frame) has passed on the host clock
    (:class:`~edge.sources.pacing.Pacer`): librealsense's own real-time
    playback drops frames when the consumer is slow, this never does.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import SourceError, StateError
from edge.frames import (
    CameraInfo,
    Extrinsics,
    Frame,
    FrameSource,
    GroundTruth,
    Intrinsics,
    PixelFormat,
    RawDepth,
    SourceState,
    TimingMode,
)
from edge.sources.librealsense import align_depth_to_color, extrinsics_from_rs, intrinsics_from_rs
from edge.sources.pacing import Pacer
from edge.sources.recording.db3 import Db3Images, nearest_depth
from edge.sources.recording.index import BagIndex, RecordingInfo, check_recording_path
from edge.sources.recording.truth import load_truth

_QUEUE_CAPACITY = 128  # frames (both streams) librealsense may decode ahead; drops beyond
_PAUSE_AT = 16  # pause the playback when this many frames wait, resume at _RESUME_AT
_RESUME_AT = 4
_DEPTH_WINDOW = 8  # recent depth frames kept for pairing with color
_POLL_S = 0.05
_END_GRACE_S = 1.0
_STALL_S = 10.0  # no frame for this long while the file is not done: report a stall

_COLOR_FORMATS = {"rgb8": PixelFormat.RGB8, "bgr8": PixelFormat.BGR8}


@dataclass
class _Pending:
    """A color frame waiting for its nearest depth frame."""

    number: int
    timestamp_ms: float
    color: np.ndarray
    depth: np.ndarray | None = None
    raw: np.ndarray | None = None  # the recorded depth when it was aligned on playback


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
        self._start_frame = start_frame
        self._pacer = Pacer(timing, clock=clock, sleep=sleep)
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
        self._camera: CameraInfo | None = None
        self._duration_s = 0.0
        # Pairing buffers: color frames waiting for depth, recent depth frames.
        self._colors: collections.deque[tuple[int, float, np.ndarray]] = collections.deque()
        self._depths: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._colors_seen = 0
        self._depths_seen = 0
        self._depth_end = False
        self._ready: _Pending | None = None  # a frame seek decoded, delivered next
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
    def paced(self) -> bool:
        return self._pacer.paced

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

    @property
    def camera_info(self) -> CameraInfo:
        """The recorded device's name, serial, firmware and product line (empty where the
        recording has none)."""
        if self._camera is None:
            raise StateError("recording is not open", "open it first")
        return self._camera

    @property
    def serial(self) -> str:
        """The recorded device's serial number; empty when the recording has none."""
        return self.camera_info.serial

    # -- lifecycle

    def _open(self) -> None:
        self._index = check_recording_path(self.path)
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
        self._pacer.reset()

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
            self._read_device_info(device, rs)
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
        self._read_device_info(device, rs)
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
        self._pacer.reset()

    def _read_device_info(self, device: Any, rs: Any) -> None:
        def info(key: Any) -> str:
            return str(device.get_info(key)) if device.supports(key) else ""

        self._camera = CameraInfo(
            name=info(rs.camera_info.name),
            serial=info(rs.camera_info.serial_number),
            firmware=info(rs.camera_info.firmware_version),
            product_line=info(rs.camera_info.product_line),
        )
        # What librealsense's playback says: first to last message time.
        self._duration_s = float(device.as_playback().get_duration().total_seconds())

    def _read_profiles(self, device: Any, rs: Any) -> list[tuple[Any, Any]]:
        try:
            return self._profiles_of(device, rs)
        except RuntimeError as exc:  # "map::at" for a sensor it cannot map (sensor_1 alone)
            raise SourceError(
                f"librealsense cannot read the streams of {self.path} ({exc!s:.120})",
                "its device description is incomplete; record it again with `edge record`",
            ) from None

    def _profiles_of(self, device: Any, rs: Any) -> list[tuple[Any, Any]]:
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
        # Due first, then read, as a camera's frame arrives before the host copies it: a
        # reader thread (ReadAheadSource) then reads nothing while the frame before is
        # still being processed at the camera's rate.
        self._pacer.wait(ref.device_ms)
        color = images.decode(ref, "color", (*size, 3))
        p = _Pending(number=i, timestamp_ms=ref.device_ms, color=color)
        if self._has_depth:
            depth = images.decode(images.depth[self._pairs[i]], "depth", (*self._depth_size, 2))
            p.depth = self._aligned(depth)
            p.raw = depth if self._align is not None else None
        return p

    def _read(self) -> Frame | None:
        if self._images is not None:
            p = self._read_db3()  # paced before its bytes are read
        else:
            p, self._ready = self._ready, None
            if p is None:
                p = self._next_color()
            if p is not None:
                self._pacer.wait(p.timestamp_ms)
        if p is None:
            return None
        assert self._intrinsics is not None
        raw = None
        if p.raw is not None and self._align is not None:
            raw = RawDepth(p.raw, self._align[0], self._depth_to_color)
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
            raw_depth=raw,
        )

    def seek(self, index: int) -> None:
        """Make ``index`` (0-based, in file order) the next frame ``read()`` returns.

        Seeking restarts playback and decodes forward to the frame, so it is
        exact but costs about one frame decode per skipped frame.
        """
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
            self._pacer.reset()
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
        camera = self._camera or CameraInfo("", "")
        return RecordingInfo(
            path=str(self.path),
            frames=frames,
            width=self._intrinsics.width,
            height=self._intrinsics.height,
            fps=self._fps,
            # librealsense's own figure (first to last message), so the two agree; the
            # recorder stamps messages with the frames' device times.
            duration_s=self._duration_s,
            depth_scale_m=self._depth_scale_m,
            color_format=self._color_format.value,
            streams=streams,
            has_truth=self.has_truth,
            intrinsics=self._intrinsics.to_dict(),
            camera={
                "name": camera.name,
                "serial": camera.serial,
                "firmware": camera.firmware,
                "product_line": camera.product_line,
            },
            raw_depth=self._align is not None,
        )
