"""Live Intel RealSense camera, with automatic reconnection.

The source talks to the camera through a small :class:`CameraLayer`
(``find_serials`` and ``open``) so that reconnection, backoff and error paths
are tested with a fault-injecting fake; :class:`PyRealSenseLayer` is the real
one on pyrealsense2.

Disconnection contract
    When the camera goes away, the source enters RECONNECTING and retries with
    exponential backoff (``reconnect_initial_s`` doubling up to
    ``reconnect_max_s``). ``read()`` never blocks longer than about
    ``frame_timeout_ms``: while no frame is available it raises
    :class:`edge.frames.FrameTimeout` (``reconnecting`` says whether the camera is gone),
    and the source stays usable. Iterating the source (``for frame in src``,
    as :class:`edge.pipeline.Pipeline` does) skips timeouts and keeps waiting,
    so the edge process stays up and resumes when the camera is plugged back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.config import RealSenseConfig
from edge.errors import DeviceLostError, FrameTimeout, SourceError
from edge.files import parse_json
from edge.frames import (
    CameraInfo,
    Extrinsics,
    Frame,
    FrameSource,
    Intrinsics,
    PixelFormat,
    SourceState,
)
from edge.sources.librealsense import extrinsics_from_rs, intrinsics_from_rs

log = logging.getLogger(__name__)

NO_CAMERA_FIX = "plug one in or use --source FILE.db3/phantom"


@dataclass
class RawFrame:
    """One aligned RGB-D frame as the camera layer hands it over."""

    color: np.ndarray  # (H, W, 3) uint8, RGB
    depth: np.ndarray  # (H, W) uint16, aligned to color
    timestamp_ms: float


@dataclass(frozen=True)
class StreamSetup:
    """What the device reported when the streams started."""

    serial: str
    intrinsics: Intrinsics
    depth_scale_m: float
    depth_to_color: Extrinsics
    camera: CameraInfo | None = None  # name, serial, firmware, product line


class CameraSession(Protocol):
    setup: StreamSetup

    def wait(self, timeout_ms: int) -> RawFrame | None:
        """The next frame, or None after ``timeout_ms``; raises DeviceLostError when unplugged."""

    def stop(self) -> None: ...


class CameraLayer(Protocol):
    def find_serials(self) -> list[str]:
        """Serial numbers of the connected cameras."""

    def open(
        self, serial: str, config: RealSenseConfig, preset_json: str | None, record_to: Path | None
    ) -> CameraSession:
        """Start color + depth on ``serial``; SourceError for an unsupported mode or preset."""


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """Reconnection delays: initial, doubling, capped at ``max_s``."""
    delay = initial_s
    while True:
        yield min(delay, max_s)
        delay = min(delay * 2.0, max_s)


def load_preset(path: str | Path) -> str:
    """Read and check a visual-preset JSON file (for ``load_json``); returns its text.

    Raises SourceError when it is missing or not a JSON object of settings.
    """
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        # Relative names are tried against the checkout too, so the default works from any folder.
        candidate = Path(__file__).resolve().parents[2] / p
        if candidate.exists():
            p = candidate
    try:
        text = p.read_text(encoding="utf-8")
    except OSError:
        raise SourceError(
            f"RealSense preset {p} cannot be read",
            'set [realsense] preset to a file under hardware/presets, or to "" for none',
        ) from None
    try:
        data = parse_json(text)
    except ValueError as exc:
        raise SourceError(
            f"RealSense preset {p} is not valid JSON ({exc})", "fix the file"
        ) from None
    if not isinstance(data, dict) or not data:
        raise SourceError(f"RealSense preset {p} must be a JSON object of settings", "fix the file")
    return text


class RealSenseSource(FrameSource):
    """Aligned color + depth from a live RealSense camera.

    ``config`` gives resolution, fps, serial (empty: first camera), preset and
    reconnection timing; ``serial`` overrides the configured one. ``layer``
    is the device access (default: pyrealsense2). ``record_to`` makes
    librealsense's recorder write the raw streams to that ``.db3``.
    Raises SourceError on open when no camera (or not the requested one) is
    connected or the mode is not offered.
    """

    name = "realsense"

    def __init__(
        self,
        config: RealSenseConfig,
        *,
        serial: str | None = None,
        layer: CameraLayer | None = None,
        record_to: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.config = config
        self.serial = serial if serial is not None else config.serial
        self._layer = layer if layer is not None else PyRealSenseLayer()
        self._record_to = record_to
        self._clock = clock
        self._sleep = sleep
        self._session: CameraSession | None = None
        self._preset: str | None = None
        self._number = 0
        self._delays: Iterator[float] | None = None
        self._next_attempt_s = 0.0
        self.reconnects = 0  # successful reconnections since open

    @property
    def nominal_fps(self) -> float:
        return float(self.config.fps)

    @property
    def paced(self) -> bool:
        return True

    @property
    def camera_info(self) -> CameraInfo:
        camera = self._session.setup.camera if self._session is not None else None
        return camera or CameraInfo("Intel RealSense", self.serial or "")

    @property
    def setup(self) -> StreamSetup:
        if self._session is None:
            raise SourceError("the camera is not streaming", "wait for it to reconnect")
        return self._session.setup

    def _open(self) -> None:
        if not self._layer.find_serials():
            raise SourceError("no RealSense camera found", NO_CAMERA_FIX)
        if self.config.preset:
            self._preset = load_preset(self.config.preset)
        self._session = self._connect()

    def _connect(self) -> CameraSession:
        serials = self._layer.find_serials()
        if not serials:
            raise SourceError("no RealSense camera found", NO_CAMERA_FIX)
        if self.serial and self.serial not in serials:
            raise SourceError(
                f"RealSense camera {self.serial} not found (connected: {', '.join(serials)})",
                "check the serial number, or leave it empty to use the first camera",
            )
        serial = self.serial or serials[0]
        session = self._layer.open(serial, self.config, self._preset, self._record_to)
        self.serial = serial  # reconnect to the same camera, not whichever comes first
        return session

    def _read(self) -> Frame | None:
        if self._state is SourceState.RECONNECTING:
            self._try_reconnect()
        assert self._session is not None
        try:
            raw = self._session.wait(self.config.frame_timeout_ms)
        except DeviceLostError:
            self._lost()
            raise FrameTimeout(
                f"RealSense camera {self.serial} disconnected",
                "reconnecting; plug it back in",
                reconnecting=True,
            ) from None
        if raw is None:
            raise FrameTimeout(
                f"no frame from RealSense camera {self.serial} "
                f"in {self.config.frame_timeout_ms} ms",
                "check the cable and USB port (USB 3 needed)",
                reconnecting=False,
            )
        setup = self._session.setup
        frame = Frame(
            number=self._number,
            color=raw.color,
            color_format=PixelFormat.RGB8,
            depth=raw.depth,
            depth_scale_m=setup.depth_scale_m,
            intrinsics=setup.intrinsics,
            depth_to_color=setup.depth_to_color,
            device_timestamp_ms=raw.timestamp_ms,
            host_timestamp_s=time.monotonic(),
        )
        self._number += 1
        return frame

    def _lost(self) -> None:
        log.warning("RealSense camera %s lost; reconnecting", self.serial)
        if self._session is not None:
            try:
                self._session.stop()
            except Exception:  # the device is gone; stopping may fail in any way
                log.debug("stop after disconnect failed", exc_info=True)
        self._session = None
        self._state = SourceState.RECONNECTING
        self._delays = backoff_delays(self.config.reconnect_initial_s, self.config.reconnect_max_s)
        self._next_attempt_s = self._clock() + next(self._delays)

    def _try_reconnect(self) -> None:
        """One reconnection attempt, waiting for it at most the frame timeout."""
        assert self._delays is not None
        wait_s = self._next_attempt_s - self._clock()
        budget_s = self.config.frame_timeout_ms / 1000.0
        if wait_s > budget_s:
            self._sleep(budget_s)
            raise FrameTimeout(
                f"RealSense camera {self.serial} disconnected",
                "reconnecting; plug it back in",
                reconnecting=True,
            )
        if wait_s > 0:
            self._sleep(wait_s)
        try:
            self._session = self._connect()
        except SourceError as exc:
            self._next_attempt_s = self._clock() + next(self._delays)
            raise FrameTimeout(
                f"RealSense camera {self.serial} still disconnected ({exc.problem})",
                "reconnecting; plug it back in",
                reconnecting=True,
            ) from None
        log.info("RealSense camera %s reconnected", self.serial)
        self.reconnects += 1
        self._state = SourceState.OPEN

    def _close(self) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:
                frame = self.read()
            except FrameTimeout:
                continue
            if frame is None:
                return
            yield frame


# --------------------------------------------------------------------------- pyrealsense2


def _offered_modes(device: Any, rs: Any) -> set[tuple[str, int, int, int]]:
    modes = set()
    for sensor in device.query_sensors():
        for prof in sensor.get_stream_profiles():
            if prof.is_video_stream_profile():
                v = prof.as_video_stream_profile()
                kind = str(prof.stream_type()).rsplit(".", 1)[-1]
                modes.add((kind, v.width(), v.height(), prof.fps()))
    return modes


def check_mode(
    offered: set[tuple[str, int, int, int]], config: RealSenseConfig, serial: str
) -> None:
    """Raise SourceError unless color and depth are both offered at the configured mode.

    ``offered`` holds (stream, width, height, fps) tuples as the device lists them.
    """
    mode = (config.width, config.height, config.fps)
    for kind in ("color", "depth"):
        if (kind, *mode) not in offered:
            choices = sorted({(w, h, f) for k, w, h, f in offered if k == kind})
            listing = ", ".join(f"{w}x{h}@{f}" for w, h, f in choices[:12]) or "none"
            raise SourceError(
                f"camera {serial} does not offer {kind} at "
                f"{config.width}x{config.height} {config.fps} fps",
                f"set [realsense] width/height/fps to one of: {listing}",
            )


def _camera_info(device: Any, rs: Any) -> CameraInfo:
    def info(key: Any) -> str:
        return str(device.get_info(key)) if device.supports(key) else ""

    return CameraInfo(
        name=info(rs.camera_info.name),
        serial=info(rs.camera_info.serial_number),
        firmware=info(rs.camera_info.firmware_version),
        product_line=info(rs.camera_info.product_line),
    )


class _PyRealSenseSession:
    def __init__(self, pipe: Any, profile: Any, align: Any, rs: Any, serial: str) -> None:
        self._pipe, self._align, self._rs, self._serial = pipe, align, rs, serial
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        depth = profile.get_stream(rs.stream.depth).as_video_stream_profile()
        self.setup = StreamSetup(
            serial=serial,
            intrinsics=intrinsics_from_rs(color.get_intrinsics()),
            depth_scale_m=float(profile.get_device().first_depth_sensor().get_depth_scale()),
            depth_to_color=extrinsics_from_rs(depth.get_extrinsics_to(color)),
            camera=_camera_info(profile.get_device(), rs),
        )

    def _present(self) -> bool:
        ctx = self._rs.context()
        return any(
            d.get_info(self._rs.camera_info.serial_number) == self._serial
            for d in ctx.query_devices()
        )

    def wait(self, timeout_ms: int) -> RawFrame | None:
        try:
            ok, frames = self._pipe.try_wait_for_frames(timeout_ms)
        except RuntimeError as exc:
            raise DeviceLostError(str(exc)) from None
        if not ok:
            if not self._present():
                raise DeviceLostError(self._serial)
            return None
        frames = self._align.process(frames)
        c, d = frames.get_color_frame(), frames.get_depth_frame()
        if not c or not d:
            return None
        return RawFrame(
            color=np.array(np.asanyarray(c.get_data()), copy=True),
            depth=np.array(np.asanyarray(d.get_data()), copy=True),
            timestamp_ms=float(c.get_timestamp()),
        )

    def stop(self) -> None:
        self._pipe.stop()


class PyRealSenseLayer:
    """Camera access through pyrealsense2 (imported lazily)."""

    def find_serials(self) -> list[str]:
        import pyrealsense2 as rs

        return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]

    def open(
        self, serial: str, config: RealSenseConfig, preset_json: str | None, record_to: Path | None
    ) -> CameraSession:
        import pyrealsense2 as rs

        ctx = rs.context()
        devices = [
            d for d in ctx.query_devices() if d.get_info(rs.camera_info.serial_number) == serial
        ]
        if not devices:
            raise SourceError(f"RealSense camera {serial} not found", NO_CAMERA_FIX)
        device = devices[0]
        check_mode(_offered_modes(device, rs), config, serial)
        if preset_json is not None:
            advanced = rs.rs400_advanced_mode(device)
            if advanced.is_enabled():
                advanced.load_json(preset_json)
            else:
                log.warning(
                    "camera %s is not in advanced mode; preset not loaded "
                    "(enable advanced mode once in realsense-viewer)",
                    serial,
                )
        cfg = rs.config()
        cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.color, config.width, config.height, rs.format.rgb8, config.fps)
        cfg.enable_stream(rs.stream.depth, config.width, config.height, rs.format.z16, config.fps)
        if record_to is not None:
            cfg.enable_record_to_file(str(record_to))
        pipe = rs.pipeline(ctx)
        try:
            profile = pipe.start(cfg)
        except RuntimeError as exc:
            raise SourceError(
                f"camera {serial} refused to start: {exc}", "replug it, or try another USB 3 port"
            ) from None
        return _PyRealSenseSession(pipe, profile, rs.align(rs.stream.color), rs, serial)
