"""Recording a frame source to a ``.db3`` file librealsense can play (``edge record``).

:func:`record` copies frames from any source named like ``--source`` through
the software-device :class:`~edge.sources.recording.Recorder` (ground truth
goes to the sidecar); a live camera is recorded with librealsense's own
recorder instead, raw streams as the camera sent them. Both stop between two
frames when ``should_stop()`` says so (a signal handler's flag), so a frame is
never half written, and the file is valid. Every file is 0600 from its first
byte; with ``seal_to`` the finished recording (and its sidecar) is sealed to
that key and the plaintext deleted (:mod:`edge.protect`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.config import EdgeConfig, SourceConfig
from edge.errors import SourceError
from edge.frames import FrameSource

if TYPE_CHECKING:
    from nacl.public import PublicKey

Finish = Callable[[Path, Path], Path]  # (temp file, final name) -> where it went

Progress = Callable[[int, int], None]  # (frames written, frames wanted)


def _no_progress(done: int, total: int) -> None:
    return None


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RecordOutcome:
    frames: int  # frames written
    truth: bool  # whether ground truth went to the sidecar
    path: Path | None = None  # the file written (the sealed one when sealing)


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
    seal_to: PublicKey | None = None,
) -> RecordOutcome:
    """Record up to ``total`` frames of ``source_config`` to ``out`` (a ``.db3``).

    ``seal_to``: seal the finished files to this key (``out`` + ``.sealed``) and
    delete the plaintext.
    """
    from edge.protect import sealing_finisher
    from edge.sources import open_source

    finish = sealing_finisher(seal_to) if seal_to is not None else None
    if source_config.kind == "realsense":
        written, path = record_live(
            source_config.serial, config, out, total, progress, should_stop, finish
        )
        return RecordOutcome(written, truth=False, path=path)
    source = open_source(source_config, config, frames=total, seed=seed)
    return record_frames(
        source, out, total, progress, should_stop, compress=compress, finish=finish
    )


def record_frames(
    source: FrameSource,
    out: Path,
    total: int,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
    compress: bool = True,
    finish: Finish | None = None,
) -> RecordOutcome:
    """Copy up to ``total`` frames from ``source`` through the software-device recorder.

    ``finish``: see :class:`~edge.sources.recording.Recorder`. Raises SourceError
    when the disk fills up (the partial file is removed).
    """
    from edge.sources.recording import Recorder

    truth = False
    recorder = Recorder(out, fps=source.nominal_fps, compress=compress, finish=finish)
    # The recorder's context finishes the file on success and deletes it on any error.
    try:
        with recorder, source:
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
    return RecordOutcome(recorder.frames_written, truth, recorder.path)


def record_live(
    serial: str,
    config: EdgeConfig,
    out: Path,
    total: int,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
    finish: Finish | None = None,
) -> tuple[int, Path]:
    """Record the live camera's raw streams with librealsense's own recorder.

    ``serial`` picks the camera; empty: the configured one. ``finish`` replaces
    the final rename (e.g. sealing). Returns the frames written and the file.
    """
    from edge.protect import private_umask
    from edge.sources.realsense import RealSenseSource
    from edge.sources.recording import temp_path_for

    tmp = temp_path_for(out)
    source = RealSenseSource(config.realsense, serial=serial or None, record_to=tmp)
    written = 0
    try:
        # librealsense creates the file when the camera starts, and its SQLite side files
        # as it writes: owner-only from the first byte.
        with private_umask(), source:
            for _frame in source:
                written += 1
                progress(written, total)
                if written >= total or should_stop():
                    break
        if written == 0:
            raise SourceError("no frames were recorded", "check the camera")
        path = finish(tmp, out) if finish is not None else _rename(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return written, path


def _rename(temp: Path, final: Path) -> Path:
    os.replace(temp, final)
    return final
