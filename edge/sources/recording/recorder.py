"""Writing recordings: :class:`Recorder` and the output path checks.

The file is a ROS 2 bag in one SQLite file (``.db3``), written by
librealsense's recorder through a software device, so ``realsense-viewer``
and any librealsense program can play it. Ground truth goes to the sidecar
(:mod:`.truth`). Nothing appears under the target name until the file is
complete: frames go to :func:`temp_path_for` and are renamed into place (or
handed to a ``finish`` hook, e.g. sealing). Every file is owner-only (0600)
from its first byte, so a killed recorder leaves no file others can read.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edge.errors import SourceError, StateError
from edge.frames import Frame, GroundTruth, Intrinsics, PixelFormat
from edge.protect import open_private_text, private_umask
from edge.sources.librealsense import intrinsics_to_rs
from edge.sources.recording.truth import truth_header, truth_path, truth_to_json


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

    ``finish(temp, final)`` replaces the rename at :meth:`close` for the
    recording and its sidecar and returns where the file went
    (:func:`edge.protect.sealing_finisher` seals it); when it raises, the
    temporary files are deleted.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        fps: float = 30.0,
        compress: bool = True,
        finish: Callable[[Path, Path], Path] | None = None,
    ) -> None:
        self.out = check_writable(out)
        self._finish = finish
        self.path: Path | None = None  # where the finished file went (set by close)
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
            with private_umask():  # librealsense creates (and recreates) the file itself
                self._rec = rs.recorder(str(self._tmp), dev, self._compress)
            os.chmod(self._tmp, 0o600)
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
            self._truth_fh = open_private_text(self._tmp_truth)
            self._truth_fh.write(truth_header() + "\n")
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
        """Finish the file and move it (and its sidecar) into place; returns the path
        (what ``finish`` returned, when given).

        Raises SourceError when no frame was written (nothing is left behind), and
        what ``finish`` raises (the temporary files deleted).
        """
        if self._closed:
            return self.path or self.out
        self._closed = True
        self._release()
        if self._written == 0:
            self._remove_temp()
            raise SourceError("no frames were recorded", "check the source")
        finish = self._finish or _rename
        try:
            if self._tmp_truth.exists():
                finish(self._tmp_truth, truth_path(self.out))
            else:
                truth_path(self.out).unlink(missing_ok=True)  # a stale sidecar would lie
            self.path = finish(self._tmp, self.out)
            return self.path
        finally:
            self._remove_temp()

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


def _rename(temp: Path, final: Path) -> Path:
    os.replace(temp, final)
    return final
