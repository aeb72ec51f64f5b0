"""Recordings at rest: sealing round trips, tamper/truncation, 0600, disk full, free-space floor,
retention."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from edge.cli import main
from edge.errors import KeyFileError, RecordingError
from edge.keys import load_recording_private_key
from edge.protect import (
    MAGIC,
    DiskGuard,
    open_file,
    open_stream,
    prune_recordings,
    seal_file,
    seal_stream,
)

MB = 1 << 20


@pytest.fixture(scope="module")
def hospital() -> PrivateKey:
    return PrivateKey(bytes(range(1, 33)))


@pytest.fixture(scope="module")
def payload() -> bytes:
    # 5 MB and a bit, not a multiple of the chunk size: exercises the short last chunk.
    return os.urandom(5 * MB + 12345)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Tracking(io.BytesIO):
    """A source that records the largest read, to show memory stays bounded."""

    largest = 0

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        data = super().read(n)
        self.largest = max(self.largest, len(data))
        return data


def test_file_round_trip_in_chunks_with_private_modes(tmp_path, hospital, payload):
    src = tmp_path / "session.db3"
    src.write_bytes(payload)
    sealed = seal_file(src, hospital.public_key)
    assert sealed.name == "session.db3.sealed"
    assert not src.exists()  # the plaintext is gone
    assert mode(sealed) == 0o600
    blob = sealed.read_bytes()
    assert blob.startswith(MAGIC) and payload[:64] not in blob
    out = open_file(sealed, hospital, tmp_path / "back.db3")
    assert mode(out) == 0o600
    assert out.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.db3", "session.db3.sealed"]


def test_sealing_reads_in_bounded_chunks(hospital, payload):
    src = Tracking(payload)
    sealed = io.BytesIO()
    assert seal_stream(src, sealed, hospital.public_key, chunk_bytes=256 * 1024) == len(payload)
    assert src.largest == 256 * 1024
    sealed.seek(0)
    back = io.BytesIO()
    assert open_stream(sealed, back, hospital) == len(payload)
    assert back.getvalue() == payload


@pytest.mark.parametrize("size", [0, 1, MB, MB + 1])
def test_edge_sizes(hospital, size):
    data = os.urandom(size)
    sealed = io.BytesIO()
    seal_stream(io.BytesIO(data), sealed, hospital.public_key)
    sealed.seek(0)
    back = io.BytesIO()
    open_stream(sealed, back, hospital)
    assert back.getvalue() == data


def _sealed(hospital: PrivateKey, data: bytes, chunk: int = 1000) -> bytes:
    out = io.BytesIO()
    seal_stream(io.BytesIO(data), out, hospital.public_key, chunk_bytes=chunk)
    return out.getvalue()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-20], "truncated"),
        (lambda b: b[: len(MAGIC) + 80 + 24 + 4 + 1017], "ends before its final chunk"),
        (lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:], "does not verify"),
        (lambda b: b + b"x", "data after its final chunk"),
        (lambda b: b"NOT-SEALED----" + b[14:], "not a sealed edge recording"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "not sealed to this key"),
        # Two middle chunks swapped: each is authentic, their order is not.
        (
            lambda b: b[:118] + b[118 + 1021 : 118 + 2042] + b[118 : 118 + 1021] + b[118 + 2042 :],
            "altered or reordered",
        ),
    ],
)
def test_damaged_sealed_files_are_refused_and_leave_no_output(tmp_path, hospital, damage, message):
    data = os.urandom(5000)
    bad = tmp_path / "x.sealed"
    bad.write_bytes(damage(_sealed(hospital, data)))
    with pytest.raises(RecordingError, match=message):
        open_file(bad, hospital, tmp_path / "out.db3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sealed"]


def test_wrong_private_key_is_refused(tmp_path, hospital):
    bad = tmp_path / "x.sealed"
    bad.write_bytes(_sealed(hospital, b"face"))
    with pytest.raises(RecordingError, match="not sealed to this key"):
        open_file(bad, PrivateKey.generate(), tmp_path / "out")


# --------------------------------------------------------------------------- disk full, free space


class FailingAfter:
    """A file object that raises ENOSPC once ``limit`` bytes have been written."""

    def __init__(self, real, limit: int) -> None:
        self.real, self.limit, self.written = real, limit, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.limit:
            self.real.write(data[: self.limit - self.written])  # a partial write first
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(data)
        return self.real.write(data)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


class Statvfs:
    """A statvfs reporting ``free`` bytes available (``f_frsize`` 1)."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.folders: list[str] = []

    def __call__(self, folder: str) -> os.statvfs_result:
        self.folders.append(folder)
        return os.statvfs_result((4096, 1, 0, 0, self.free, 0, 0, 0, 0, 255))


def test_disk_guard_holds_the_free_space_floor(tmp_path):
    disk = Statvfs(10 * MB)
    guard = DiskGuard(tmp_path, min_free_bytes=5 * MB, statvfs=disk)
    assert guard.free_bytes() == 10 * MB and guard.ok()
    disk.free = 5 * MB  # exactly the floor: still enough
    assert guard.ok()
    disk.free = 5 * MB - 1
    assert guard.free_bytes() == 5 * MB - 1 and not guard.ok()
    assert set(disk.folders) == {str(tmp_path)}


def test_disk_guard_reads_the_real_file_system_by_default(tmp_path):
    st = os.statvfs(tmp_path)
    assert DiskGuard(tmp_path, 0).ok()
    assert not DiskGuard(tmp_path, (st.f_blocks + 1) * st.f_frsize).ok()  # more than the disk


def test_seal_file_on_a_full_disk_keeps_the_plaintext_and_no_partial(
    tmp_path, hospital, monkeypatch
):
    src = tmp_path / "a.db3"
    src.write_bytes(b"x" * 3 * MB)
    import edge.protect as protect

    real = protect.seal_stream

    def full(src_fh, dst_fh, key, chunk):
        real(src_fh, FailingAfter(dst_fh, MB), key, chunk)

    monkeypatch.setattr(protect, "seal_stream", full)
    with pytest.raises(RecordingError, match="No space left"):
        seal_file(src, hospital.public_key)
    assert [p.name for p in tmp_path.iterdir()] == ["a.db3"]


# --------------------------------------------------------------------------- retention


def test_retention_deletes_only_old_recordings_in_the_folder(tmp_path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    now = 1_800_000_000.0
    day = 86400.0

    def make(path: Path, age_days: float) -> Path:
        path.write_bytes(b"x")
        os.utime(path, (now - age_days * day, now - age_days * day))
        return path

    old = [make(rec / "old.db3", 31), make(rec / "old.db3.sealed", 40), make(rec / ".a.part", 45)]
    keep = [
        make(rec / "young.db3", 29),
        make(rec / "notes.txt", 400),  # not a recording
        make(tmp_path / "outside.db3", 400),  # not in the folder
    ]
    (rec / "sub").mkdir()
    keep.append(make(rec / "sub" / "nested.db3", 400))  # sub-folders are not searched
    (rec / "link.db3").symlink_to(tmp_path / "outside.db3")
    os.utime(rec / "link.db3", (now - 400 * day,) * 2, follow_symlinks=False)

    assert prune_recordings(rec, 30, now=lambda: now, dry_run=True) == sorted(old)
    assert all(p.exists() for p in old)
    assert prune_recordings(rec, 0, now=lambda: now) == []
    assert prune_recordings(rec, 30, now=lambda: now) == sorted(old)
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in keep)
    assert (rec / "link.db3").is_symlink()
    with pytest.raises(RecordingError, match="does not exist"):
        prune_recordings(tmp_path / "none", 30)


# --------------------------------------------------------------------------- CLI


def test_cli_keygen_seal_open(tmp_path, capsys, payload):
    assert main(["recordings", "keygen", "--out", str(tmp_path / "hospital")]) == 0
    assert mode(tmp_path / "hospital.key") == 0o600
    rec = tmp_path / "s.db3"
    rec.write_bytes(payload[:100_000])
    assert main(["recordings", "seal", str(rec), "--to", str(tmp_path / "hospital.pub")]) == 0
    assert not rec.exists()
    sealed = str(tmp_path / "s.db3.sealed")
    assert main(["recordings", "open", sealed, "--key", str(tmp_path / "hospital.key")]) == 0
    assert rec.read_bytes() == payload[:100_000]
    # Opening again would overwrite: refused, exit 2 with the fix.
    assert main(["recordings", "open", sealed, "--key", str(tmp_path / "hospital.key")]) == 2
    assert "choose another --out" in capsys.readouterr().err


def test_cli_refuses_a_readable_private_key(tmp_path, capsys):
    assert main(["recordings", "keygen", "--out", str(tmp_path / "h")]) == 0
    os.chmod(tmp_path / "h.key", 0o640)
    with pytest.raises(KeyFileError, match="mode 0640: run chmod 600"):
        load_recording_private_key(tmp_path / "h.key")
    (tmp_path / "x.sealed").write_bytes(b"")
    assert (
        main(["recordings", "open", str(tmp_path / "x.sealed"), "--key", str(tmp_path / "h.key")])
        == 2
    )
    assert f"run chmod 600 {tmp_path / 'h.key'}" in capsys.readouterr().err


def test_cli_prune(tmp_path, capsys):
    old = tmp_path / "a.db3"
    old.write_bytes(b"x")
    os.utime(old, (1.0, 1.0))
    assert main(["recordings", "prune", str(tmp_path), "--days", "30"]) == 0
    assert not old.exists()
    assert "deleted 1 recording(s)" in capsys.readouterr().out


def test_stale_partials_of_dead_writers_go_and_nothing_else(tmp_path):
    from edge.protect import remove_stale_partials

    dead, alive = 999_999_999, 4242
    names = {
        f".s.partial-{dead}.db3": True,
        f".s.partial-{dead}.db3-journal": True,
        f".s.partial-{dead}.truth.jsonl": True,
        f".s.db3.sealed.{dead}.part": True,
        f".s.partial-{alive}.db3": False,  # its writer still runs
        "s.db3.sealed": False,
        f"s.partial-{dead}.db3": False,  # not hidden: not one of ours
        ".notes": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".link.partial-{dead}.db3").symlink_to(tmp_path / "s.db3.sealed")
    gone = remove_stale_partials(tmp_path, alive=lambda pid: pid == alive)
    assert sorted(p.name for p in gone) == sorted(n for n, stale in names.items() if stale)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {n for n, stale in names.items() if not stale} | {f".link.partial-{dead}.db3"}
