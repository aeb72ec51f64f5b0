"""Recording a frame source to a ``.db3`` file librealsense can play (``edge record``).

:func:`record` copies frames from any source named like ``--source`` through
the software-device :class:`~edge.sources.recording.Recorder` (ground truth
goes to the sidecar); a live camera is recorded with librealsense's own
recorder instead, raw streams as the camera sent them. Both stop between two
frames when ``should_stop()`` says so (a signal handler's flag), so a frame is
never half written, and the file is valid.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import EdgeConfig, SourceConfig
from edge.errors import SourceError
from edge.frames import FrameSource

Progress = Callable[[int, int], None]  # (frames written, frames wanted)


def _no_progress(done: int, total: int) -> None:
    return None


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RecordOutcome:
    frames: int  # frames written
    truth: bool  # whether ground truth went to the sidecar


def record(
    source_config: SourceConfig,
    config: EdgeConfig,
    out: Path,
    total: int,
    *,
    seed: int = 0,
    compress: bool = True,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
) -> RecordOutcome:
    """Record up to ``total`` frames of ``source_config`` to ``out`` (a ``.db3``)."""
    from edge.sources import open_source

    if source_config.kind == "realsense":
        written = record_live(source_config.serial, config, out, total, progress, should_stop)
        return RecordOutcome(written, truth=False)
    source = open_source(source_config, config, frames=total, seed=seed)
    return record_frames(source, out, total, progress, should_stop, compress=compress)


def record_frames(
    source: FrameSource,
    out: Path,
    total: int,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
    compress: bool = True,
) -> RecordOutcome:
    """Copy up to ``total`` frames from ``source`` through the software-device recorder.

    Raises SourceError when the disk fills up (the partial file is removed).
    """
    from edge.sources.recording import Recorder

    truth = False
    recorder = Recorder(out, fps=source.nominal_fps, compress=compress)
    # The recorder's context finishes the file on success and deletes it on any error.
    try:
        with recorder, source:
            recorder.camera = source.camera_info  # a recording knows it once open
            for frame in source:
                recorder.write(frame)
                truth = truth or frame.truth is not None
                progress(recorder.frames_written, total)
                if recorder.frames_written >= total or should_stop():
                    break
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise SourceError(
            f"disk full while recording {out} after {recorder.frames_written} frames: "
            "recording stopped and its partial file removed",
            "free space on that disk or record to another one (--out)",
        ) from None
    return RecordOutcome(recorder.frames_written, truth)


def record_live(
    serial: str,
    config: EdgeConfig,
    out: Path,
    total: int,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
    layer: Any = None,
) -> int:
    """Record the live camera's raw streams with librealsense's own recorder; frames written.

    The file holds the device's description as librealsense records it: raw color and
    depth at their own intrinsics, the depth-to-color extrinsics, the depth scale and
    the camera info; playback aligns depth to color. ``serial`` picks the camera;
    empty: the configured one. ``layer``: the camera access (default pyrealsense2).
    """
    from edge.sources.realsense import RealSenseSource
    from edge.sources.recording import temp_path_for
    from edge.sources.recording.bagtime import stamp_with_device_time

    tmp = temp_path_for(out)
    source = RealSenseSource(config.realsense, serial=serial or None, record_to=tmp, layer=layer)
    written = 0
    try:
        with source:
            for _frame in source:
                written += 1
                progress(written, total)
                if written >= total or should_stop():
                    break
        if written == 0:
            raise SourceError("no frames were recorded", "check the camera")
        # The same finishing step as the software-device recorder: message times from
        # the frames' device timestamps (librealsense stamps them with its write times).
        stamp_with_device_time(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return written
