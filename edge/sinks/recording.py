"""Recording the session `edge run` processes, sealed to the hospital's key (``[recordings]``).

At start, :func:`start_recording` creates the folder (0700), deletes the
in-progress files a killed run left there and the recordings older than
``retention_days``, then records only when at least ``min_free_mb`` is free
(otherwise it says why, in the log and the audit log, and the run goes on).

:class:`RecordingSink` writes every frame the source delivers as `edge record`
writes it (colour, depth, intrinsics, ground truth when the source has it)
through the software-device :class:`~edge.sources.recording.Recorder`, to a
hidden temporary ``.db3`` (0600): librealsense's SQLite writer needs random
access to its file, so the plaintext exists while the session records. Before
each frame it checks the free space: when sealing what was recorded would leave
less than ``min_free_mb``, or a frame cannot be written, the recording stops and
the run goes on. A stopped recording is closed and sealed to ``encrypt_to``
(``NAME.db3.sealed``, 0600) in a background thread, so the frame loop never
waits for it, and the plaintext is deleted; :meth:`RecordingSink.close` (the end
of the run, SIGTERM, an error) stops it and waits for the seal, keeping systemd's
watchdog and stop timeout fed. A recording that cannot be sealed is deleted.

Audit entries: ``recording.started`` (path, key fingerprint), ``recording.stopped``
(reason, frames), ``recording.sealed`` (path, size, sha256 of the sealed file),
``recording.discarded`` (nothing kept, and why), ``recording.skipped`` (not
recorded at start, and why), ``recording.removed`` (a file deleted at start:
retention or left by a killed run).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import RecordingsConfig
from edge.errors import EdgeError, RecordingError
from edge.frames import FrameResult
from edge.protect import (
    DiskGuard,
    ensure_private_dir,
    prune_recordings,
    remove_stale_partials,
    sealed_path,
    sealing_finisher,
)

if TYPE_CHECKING:
    from nacl.public import PublicKey

    from edge.audit import AuditLog

log = logging.getLogger(__name__)

MB = 1 << 20
_KEEPALIVE_S = 2.0  # while waiting for a seal: watchdog ping and stop-timeout extension
_EXTEND_S = 30.0


def session_path(folder: Path, now: datetime | None = None) -> Path:
    """``folder/session-YYYYMMDDTHHMMSSZ.db3``, numbered when that name is taken."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        name = f"session-{stamp}" + (f"-{n}" if n > 1 else "") + ".db3"
        path = folder / name
        if not path.exists() and not sealed_path(path).exists():
            return path
    raise RecordingError(f"too many recordings named session-{stamp} in {folder}")


class RecordingSink:
    """Records every frame to ``path`` (a ``.db3`` name), sealed to ``public_key`` at stop.

    ``guard`` holds the free-space floor; ``audit`` (optional) gets the entries
    listed in the module docstring; ``notifier`` (optional, an
    :class:`edge.service.Notifier`) is fed while :meth:`close` waits for the seal.
    """

    name = "recording"

    def __init__(
        self,
        path: Path,
        public_key: PublicKey,
        guard: DiskGuard,
        *,
        fps: float,
        audit: AuditLog | None = None,
        notifier: Any = None,
    ) -> None:
        from edge.keys import fingerprint
        from edge.sources.recording import Recorder, temp_path_for

        self.path = path
        self.sealed_path = sealed_path(path)
        self._temp = temp_path_for(path)
        self._guard = guard
        self._audit = audit
        self._notifier = notifier
        self._recorder = Recorder(path, fps=fps, finish=sealing_finisher(public_key))
        self.frames = 0
        self.recording = True
        self.stop_reason: str | None = None
        self.sealed: Path | None = None  # set once the sealed file is in place
        self._sealing: threading.Thread | None = None
        log.info("recording this session to %s", self.sealed_path)
        self._entry(
            "recording.started",
            path=str(self.sealed_path),
            sealed_to=fingerprint(bytes(public_key)),
            fps=fps,
        )

    def _entry(self, event: str, **data: Any) -> None:
        if self._audit is None:
            return
        try:
            self._audit.log(event, **data)
        except EdgeError as exc:  # the audit log's own failure is reported by its writer
            log.error("cannot audit %s: %s", event, exc)

    def _room_to_seal(self) -> bool:
        """Whether sealing what is recorded would still leave the floor free."""
        try:
            size = self._temp.stat().st_size
        except FileNotFoundError:
            size = 0
        return self._guard.free_bytes() - size >= self._guard.min_free_bytes

    def consume(self, result: FrameResult) -> None:
        if not self.recording:
            return
        if not self._room_to_seal():
            floor = self._guard.min_free_bytes // MB
            self._stop(f"sealing would leave less than recordings.min_free_mb = {floor} free")
            return
        try:
            self._recorder.write(result.frame)
        except EdgeError as exc:  # e.g. the camera changed resolution: keep what was recorded
            self._stop(f"frame {result.frame.number} not recordable: {exc}")
            return
        except (OSError, RuntimeError) as exc:  # the disk, or librealsense's writer
            self._stop(f"cannot write frame {result.frame.number}: {exc}", keep=False)
            return
        self.frames += 1

    def _stop(self, reason: str, keep: bool = True) -> None:
        """Stop recording; seal what was recorded in the background (or delete it)."""
        self.recording = False
        self.stop_reason = reason
        log.log(
            logging.INFO if self.frames and keep else logging.WARNING,
            "recording %s stopped after %d frames: %s",
            self.sealed_path,
            self.frames,
            reason,
        )
        self._entry("recording.stopped", reason=reason, frames=self.frames)
        if not keep or self.frames == 0:
            self._recorder.abort()
            why = "no frames were recorded" if self.frames == 0 else reason
            self._discarded(why)
            return
        self._sealing = threading.Thread(target=self._seal, name="recording-seal", daemon=True)
        self._sealing.start()

    def _discarded(self, why: str) -> None:
        from edge.sources.recording import truth_path

        # A sidecar sealed before the recording's own seal failed would be an orphan.
        for orphan in (self.sealed_path, sealed_path(truth_path(self.path))):
            orphan.unlink(missing_ok=True)
        log.warning("recording %s deleted, nothing kept: %s", self.sealed_path, why)
        self._entry("recording.discarded", path=str(self.sealed_path), reason=why)

    def _seal(self) -> None:
        from edge.models.fetch import sha256_file

        try:
            sealed = self._recorder.close()  # the finish hook seals and deletes the plaintext
        except EdgeError as exc:
            self._discarded(f"cannot seal: {exc}")
            return
        except Exception as exc:  # never leave a thread's error unreported
            log.exception("sealing %s failed", self.sealed_path)
            self._discarded(f"cannot seal: {exc}")
            return
        size = sealed.stat().st_size
        self.sealed = sealed
        log.info("recording sealed to %s (%d frames, %d bytes)", sealed, self.frames, size)
        self._entry("recording.sealed", path=str(sealed), size=size, sha256=sha256_file(sealed))

    def close(self, reason: str = "the run stopped") -> Path | None:
        """Stop recording (``reason``), wait for the seal; the sealed path, or None."""
        if self.recording:
            self._stop(reason)
        thread = self._sealing
        if thread is not None and thread.is_alive():
            if self._notifier is not None:
                self._notifier.status(f"sealing the recording {self.sealed_path.name}")
            while thread.is_alive():
                self._keepalive()
                thread.join(_KEEPALIVE_S)
        return self.sealed

    def _keepalive(self) -> None:
        """Sealing a long session takes minutes (about 200 MB/s): keep systemd waiting."""
        if self._notifier is not None:
            self._notifier.watchdog()
            self._notifier.extend_timeout(_EXTEND_S)


def start_recording(
    cfg: RecordingsConfig,
    *,
    fps: float,
    audit: AuditLog | None = None,
    notifier: Any = None,
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
) -> RecordingSink | None:
    """Prepare ``cfg.folder`` and start recording, or None when below the free-space floor.

    Raises RecordingError or KeyFileError when the folder or the key cannot be
    used (validate_deployment checks both before a run starts).
    """
    from edge.keys import load_recording_public_key

    public_key = load_recording_public_key(cfg.encrypt_to)
    try:
        folder = ensure_private_dir(cfg.folder)
        stale = remove_stale_partials(folder)
        old = prune_recordings(folder, cfg.retention_days)
    except OSError as exc:
        raise RecordingError(
            f"cannot use recordings.folder {cfg.folder}: {exc.strerror or exc}",
            "make it a folder the edge process can write",
        ) from None
    for path in stale:
        _removed(audit, path, "left by a run that was killed")
    for path in old:
        _removed(audit, path, f"older than recordings.retention_days = {cfg.retention_days}")
    guard = DiskGuard(folder, cfg.min_free_mb * MB, statvfs)
    free = guard.free_bytes()
    if free < guard.min_free_bytes:
        reason = (
            f"only {free // MB} MB free in {folder}, below recordings.min_free_mb = "
            f"{cfg.min_free_mb}"
        )
        log.warning("not recording this session: %s", reason)
        if audit is not None:
            audit.log("recording.skipped", reason=reason)
        return None
    return RecordingSink(
        session_path(folder), public_key, guard, fps=fps, audit=audit, notifier=notifier
    )


def _removed(audit: AuditLog | None, path: Path, reason: str) -> None:
    if audit is not None:  # remove_stale_partials and prune_recordings log each file
        audit.log("recording.removed", path=str(path), reason=reason)
