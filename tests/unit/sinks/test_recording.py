"""The session recording sink: sealed at close, free-space floor, failures leave nothing."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nacl.public import PrivateKey

from edge.config import RecordingsConfig
from edge.errors import RecordingError
from edge.frames import Frame, FrameResult, GroundTruth, Intrinsics, PixelFormat
from edge.keys import generate_recording_key, load_recording_private_key
from edge.protect import DiskGuard, open_file
from edge.sinks.recording import RecordingSink, session_path, start_recording
from edge.sources.recording import RecordingSource, load_truth, temp_path_for

W, H = 16, 12
MB = 1 << 20
INTR = Intrinsics(W, H, 15.0, 15.0, 7.5, 5.5)


def frame(i: int, width: int = W) -> Frame:
    rng = np.random.default_rng(i)
    return Frame(
        number=i,
        color=rng.integers(0, 256, (H, width, 3), dtype=np.uint8),
        color_format=PixelFormat.RGB8,
        depth=rng.integers(0, 65536, (H, width), dtype=np.uint16),
        depth_scale_m=0.0001,
        intrinsics=INTR if width == W else Intrinsics(width, H, 15.0, 15.0, 7.5, 5.5),
        device_timestamp_ms=1000.0 + 33.0 * i,
        truth=GroundTruth(np.eye(4), face_visible=True, scenario="unit"),
    )


def result(i: int, width: int = W) -> FrameResult:
    return FrameResult(frame=frame(i, width))


class FakeAudit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def log(self, event: str, **data: Any) -> dict[str, Any]:
        with self._lock:
            self.entries.append((event, data))
        return data

    def events(self) -> list[str]:
        return [e for e, _ in self.entries]

    def data(self, event: str) -> dict[str, Any]:
        return next(d for e, d in self.entries if e == event)


class Disk:
    """A statvfs whose free space a test sets."""

    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes

    def __call__(self, path: str) -> os.statvfs_result:
        real = os.statvfs(path)
        fields = list(real)
        fields[4] = self.free_bytes // real.f_frsize  # f_bavail
        return os.statvfs_result(fields)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> tuple[Path, PrivateKey]:
    pair = generate_recording_key(tmp_path_factory.mktemp("keys") / "hospital")
    return pair.public, load_recording_private_key(pair.private)


def sink_in(folder: Path, hospital, disk: Disk, audit: FakeAudit | None = None) -> RecordingSink:
    from edge.keys import load_recording_public_key

    folder.mkdir(mode=0o700, exist_ok=True)
    return RecordingSink(
        session_path(folder),
        load_recording_public_key(hospital[0]),
        DiskGuard(folder, 100 * MB, disk),
        fps=30.0,
        audit=audit,  # type: ignore[arg-type]
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def opened_frames(sealed: Path, hospital, tmp_path: Path) -> list[Frame]:
    plain = open_file(sealed, hospital[1], tmp_path / "opened.db3")
    with RecordingSource(plain) as src:
        return list(src)


def test_every_frame_is_sealed_at_close_and_no_plaintext_is_left(tmp_path, hospital):
    folder, audit = tmp_path / "rec", FakeAudit()
    sink = sink_in(folder, hospital, Disk(10_000 * MB), audit)
    for i in range(5):
        sink.consume(result(i))
    assert temp_path_for(sink.path).exists() and mode(temp_path_for(sink.path)) == 0o600
    sealed = sink.close("the run stopped (SIGTERM)")
    assert sealed == sink.sealed_path
    names = sorted(p.name for p in folder.iterdir())
    assert names == [sealed.name, sealed.name.replace(".db3.sealed", ".truth.jsonl.sealed")]
    assert all(mode(p) == 0o600 for p in folder.iterdir())
    assert audit.events() == ["recording.started", "recording.stopped", "recording.sealed"]
    assert audit.data("recording.stopped") == {"reason": "the run stopped (SIGTERM)", "frames": 5}
    entry = audit.data("recording.sealed")
    assert entry["size"] == sealed.stat().st_size
    assert entry["sha256"] == hashlib.sha256(sealed.read_bytes()).hexdigest()
    got = opened_frames(sealed, hospital, tmp_path)
    assert len(got) == 5
    for i, f in enumerate(got):
        np.testing.assert_array_equal(f.color, frame(i).color)
        np.testing.assert_array_equal(f.depth, frame(i).depth)
    assert sink.close() == sealed  # idempotent


def test_free_space_floor_stops_and_seals_what_was_recorded(tmp_path, hospital):
    folder, audit, disk = tmp_path / "rec", FakeAudit(), Disk(10_000 * MB)
    sink = sink_in(folder, hospital, disk, audit)
    for i in range(3):
        sink.consume(result(i))
    disk.free_bytes = 99 * MB  # below the 100 MB floor
    for i in range(3, 6):
        sink.consume(result(i))
    assert not sink.recording and sink.frames == 3
    assert "min_free_mb = 100" in (sink.stop_reason or "")
    sealed = sink.close()
    assert sealed is not None and len(opened_frames(sealed, hospital, tmp_path)) == 3
    assert audit.events() == ["recording.started", "recording.stopped", "recording.sealed"]


def test_the_floor_counts_the_space_sealing_will_take(tmp_path, hospital):
    disk = Disk(10_000 * MB)
    sink = sink_in(tmp_path / "rec", hospital, disk)
    sink.consume(result(0))
    size = temp_path_for(sink.path).stat().st_size
    disk.free_bytes = 100 * MB + size - 1  # above the floor, but not once sealed
    sink.consume(result(1))
    assert not sink.recording and sink.frames == 1
    sink.close()


def test_a_full_disk_discards_the_recording_and_the_run_goes_on(tmp_path, hospital, monkeypatch):
    folder, audit = tmp_path / "rec", FakeAudit()
    sink = sink_in(folder, hospital, Disk(10_000 * MB), audit)
    sink.consume(result(0))

    def full(_frame: Frame) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink._recorder, "write", full)
    sink.consume(result(1))  # no exception: the pipeline goes on
    assert not sink.recording
    assert sink.close() is None
    assert list(folder.iterdir()) == []
    assert audit.events()[-2:] == ["recording.stopped", "recording.discarded"]
    assert "No space left" in audit.data("recording.discarded")["reason"]


def test_a_recording_that_cannot_be_sealed_is_deleted(tmp_path, hospital, monkeypatch):
    import edge.protect

    real_seal = edge.protect.seal_file

    def refuse_the_recording(src: Path, *args: Any, **kwargs: Any) -> Path:
        if src.suffix == ".jsonl":  # the sidecar is sealed first, and succeeds
            return real_seal(src, *args, **kwargs)
        raise RecordingError("cannot seal x: No space left on device", "free disk space")

    monkeypatch.setattr(edge.protect, "seal_file", refuse_the_recording)
    folder, audit = tmp_path / "rec", FakeAudit()
    sink = sink_in(folder, hospital, Disk(10_000 * MB), audit)
    sink.consume(result(0))
    assert sink.close() is None
    assert list(folder.iterdir()) == []  # no plaintext, no partial, no orphan sidecar
    assert audit.events()[-1] == "recording.discarded"


def test_a_camera_change_mid_session_keeps_what_was_recorded(tmp_path, hospital):
    sink = sink_in(tmp_path / "rec", hospital, Disk(10_000 * MB))
    sink.consume(result(0))
    sink.consume(result(1, width=W * 2))
    assert not sink.recording and "changes the image size" in (sink.stop_reason or "")
    sealed = sink.close()
    assert sealed is not None and len(opened_frames(sealed, hospital, tmp_path)) == 1


def test_no_frames_leaves_nothing(tmp_path, hospital):
    folder, audit = tmp_path / "rec", FakeAudit()
    sink = sink_in(folder, hospital, Disk(10_000 * MB), audit)
    assert sink.close() is None
    assert list(folder.iterdir()) == []
    assert audit.data("recording.discarded")["reason"] == "no frames were recorded"


def test_close_feeds_systemd_while_the_seal_runs(tmp_path, hospital, monkeypatch):
    import edge.protect

    fed = threading.Event()
    real_seal = edge.protect.seal_file

    def slow_seal(*args: Any, **kwargs: Any) -> Path:
        assert fed.wait(60), "close() never fed the watchdog while waiting"
        return real_seal(*args, **kwargs)

    class Notifier:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def status(self, text: str) -> None:
            self.calls.append("status")

        def watchdog(self) -> None:
            self.calls.append("watchdog")

        def extend_timeout(self, seconds: float) -> None:
            self.calls.append("extend")
            fed.set()

    monkeypatch.setattr(edge.protect, "seal_file", slow_seal)
    sink = sink_in(tmp_path / "rec", hospital, Disk(10_000 * MB))
    sink._notifier = notifier = Notifier()
    sink.consume(result(0))
    assert sink.close() is not None
    assert {"status", "watchdog", "extend"} <= set(notifier.calls)


def test_truth_comes_back_from_the_sealed_sidecar(tmp_path, hospital):
    sink = sink_in(tmp_path / "rec", hospital, Disk(10_000 * MB))
    sink.consume(result(0))
    sealed = sink.close()
    assert sealed is not None
    side = sealed.with_name(sealed.name.replace(".db3.sealed", ".truth.jsonl.sealed"))
    out = tmp_path / "opened.db3"
    open_file(sealed, hospital[1], out)
    open_file(side, hospital[1], tmp_path / "opened.truth.jsonl")
    assert set(load_truth(out)) == {0}


# --------------------------------------------------------------------------- start


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_prepares_the_folder_prunes_and_removes_leftovers(tmp_path, hospital):
    folder = tmp_path / "rec"
    folder.mkdir(mode=0o755)
    old = folder / "session-20200101T000000Z.db3.sealed"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    recent = folder / "session-20990101T000000Z.db3.sealed"
    recent.write_bytes(b"y")
    gone = dead_pid()
    stale = [
        folder / f".session-a.partial-{gone}.db3",
        folder / f".session-a.partial-{gone}.truth.jsonl",
        folder / f".session-a.db3.sealed.{gone}.part",
    ]
    for p in stale:
        p.write_bytes(b"partial")
    mine = folder / f".session-b.partial-{os.getpid()}.db3"  # a live process's: kept
    mine.write_bytes(b"live")
    audit = FakeAudit()
    cfg = RecordingsConfig(enabled=True, folder=str(folder), encrypt_to=str(hospital[0]))
    sink = start_recording(cfg, fps=30.0, audit=audit)  # type: ignore[arg-type]
    assert sink is not None
    assert mode(folder) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted([recent.name, mine.name])
    removed = [d for e, d in audit.entries if e == "recording.removed"]
    assert {d["path"] for d in removed} == {str(p) for p in [*stale, old]}
    assert audit.events()[-1] == "recording.started"
    sink.close()


def test_start_below_the_floor_records_nothing_and_says_why(tmp_path, hospital):
    audit = FakeAudit()
    cfg = RecordingsConfig(
        enabled=True, folder=str(tmp_path / "rec"), encrypt_to=str(hospital[0]), min_free_mb=500
    )
    sink = start_recording(cfg, fps=30.0, audit=audit, statvfs=Disk(499 * MB))  # type: ignore[arg-type]
    assert sink is None
    assert audit.events() == ["recording.skipped"]
    assert "only 499 MB free" in audit.data("recording.skipped")["reason"]
    assert "min_free_mb = 500" in audit.data("recording.skipped")["reason"]
