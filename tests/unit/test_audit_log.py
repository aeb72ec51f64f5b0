"""Audit log: chain, signatures, tamper detection with the right line, torn tails, CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from edge.audit import AuditLog, canonical, entry_hash, verify_log
from edge.audit_head import head_path
from edge.cli import main
from edge.errors import AuditError, KeyFileError, StateError
from edge.keys import generate_device_key, load_device_signing_key


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def key() -> SigningKey:
    return SigningKey(bytes(range(32)))


def make_log(path: Path, key: SigningKey, events: int = 5) -> None:
    with AuditLog.open(path, key, clock=FakeClock(), version="0.1.0") as log:
        for i in range(events):
            log.log("state.changed", old="SEARCHING", new="TRACKING", frame=i)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_entries_are_chained_signed_and_private(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=3)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = [json.loads(x) for x in lines_of(path)]
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert entries[0]["event"] == "log.opened"
    assert entries[0]["prev"] == "0" * 64
    assert entries[0]["time"] == "2026-01-01T12:00:01.000000Z"
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"]
    # The hash is over the canonical body: recompute it independently here.
    body = {k: entries[2][k] for k in ("seq", "time", "event", "data", "prev")}
    expected = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert entries[2]["hash"] == expected == entry_hash(entries[2])
    report = verify_log(path, key.verify_key)
    assert report.ok and report.entries == 4 and report.segments == 1
    assert not report.key_from_log


def test_reopen_continues_the_chain(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=2)
    make_log(path, key, events=2)
    report = verify_log(path, key.verify_key)
    assert report.ok, report.problem
    assert report.entries == 6 and report.segments == 2 and report.head_seq == 5


def test_typed_helpers_store_numpy_and_nonfinite_values(tmp_path: Path, key: SigningKey):
    import numpy as np

    with AuditLog.open(tmp_path / "a.jsonl", key) as log:
        entry = log.registration_accepted(
            12, fre_mm=np.float32(1.5), tre_mm=float("nan"), inliers=np.arange(3)
        )
        log.process_start("0.1.0", {"landmarks": "ab" * 32}, plan_digest=None)
    assert entry["data"] == {"frame": 12, "fre_mm": 1.5, "tre_mm": "NaN", "inliers": [0, 1, 2]}
    assert verify_log(tmp_path / "a.jsonl", key.verify_key).ok
    with pytest.raises(StateError):
        log.log("override", what="x")


def test_log_rejects_unstorable_data_and_reserved_event(tmp_path: Path, key: SigningKey):
    with AuditLog.open(tmp_path / "a.jsonl", key) as log:
        with pytest.raises(AuditError, match="cannot be stored"):
            log.log("override", what=object())
        with pytest.raises(AuditError, match=r"written by AuditLog\.open"):
            log.log("log.opened")


# --------------------------------------------------------------------------- tampering


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _edit(line: bytes, **changes: object) -> bytes:
    entry = json.loads(line)
    for k, v in changes.items():
        if k in entry:
            entry[k] = v
        else:
            entry["data"][k] = v
    return canonical(entry) + b"\n"


@pytest.mark.parametrize(
    ("tamper", "bad_line", "reason"),
    [
        ("change", 3, "content does not match its hash"),
        ("change_and_rehash", 3, "signature does not verify"),
        ("delete", 3, "1 entry before this line deleted"),
        ("swap", 3, "seq 3 where 2 was expected"),
        ("duplicate", 4, "seq 2 where 3 was expected"),
        ("insert_forged", 3, "signature does not verify"),
        ("forge_chain", 3, "signature does not verify"),
        ("garbage", 3, "not a valid entry"),
    ],
)
def test_tampering_is_found_at_the_right_line(
    tmp_path: Path, key: SigningKey, tamper: str, bad_line: int, reason: str
):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=5)
    lines = lines_of(path)
    i = bad_line - 1
    if tamper == "change":
        lines[i] = _edit(lines[i], new="LOST")
    elif tamper == "change_and_rehash":
        entry = json.loads(_edit(lines[i], new="LOST"))
        entry["hash"] = entry_hash(entry)
        lines[i] = canonical(entry) + b"\n"
    elif tamper == "delete":
        del lines[i]
    elif tamper == "swap":
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    elif tamper == "duplicate":
        lines.insert(i, lines[i - 1])
    elif tamper == "insert_forged":
        # A well-formed entry with the right seq and prev, signed by another key.
        other = SigningKey(bytes(32))
        forged = json.loads(lines[i])
        forged["event"] = "override"
        forged["hash"] = entry_hash(forged)
        forged["sig"] = other.sign(b"edge-audit-entry/1\n" + bytes.fromhex(forged["hash"]))
        forged["sig"] = forged["sig"].signature.hex()
        lines.insert(i, canonical(forged) + b"\n")
    elif tamper == "forge_chain":
        # Rewrite from line 3 on with another key: every hash is consistent, signatures not.
        other = SigningKey(bytes(32))
        prev = json.loads(lines[i - 1])["hash"]
        for j in range(i, len(lines)):
            entry = json.loads(lines[j])
            entry["prev"] = prev
            entry["hash"] = prev = entry_hash(entry)
            entry["sig"] = other.sign(bytes.fromhex(entry["hash"])).signature.hex()
            lines[j] = canonical(entry) + b"\n"
    elif tamper == "garbage":
        lines[i] = b'{"seq": 2, "broken\n'
    _rewrite(path, lines)
    report = verify_log(path, key.verify_key)
    assert report.problem is not None
    assert report.problem.line == bad_line
    assert reason in report.problem.reason


def test_wrong_key_is_named_on_the_first_entry(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key)
    report = verify_log(path, SigningKey(bytes(32)).verify_key)
    assert report.problem is not None and report.problem.line == 1
    assert "signature does not verify" in report.problem.reason


def test_without_a_key_the_logged_key_is_used_and_a_key_swap_is_caught(
    tmp_path: Path, key: SigningKey
):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=2)
    report = verify_log(path)
    assert report.ok and report.key_from_log
    # Another device's segment appended to this log: the key change is flagged.
    with path.open("ab") as fh:
        other_path = tmp_path / "other.jsonl"
        make_log(other_path, SigningKey(bytes(32)), events=1)
        fh.write(other_path.read_bytes())
    report = verify_log(path)
    assert report.problem is not None and report.problem.line == 4


# --------------------------------------------------------------------------- crashes


def test_torn_tail_is_reported_then_acknowledged_on_reopen(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=3)
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])  # a crash in the middle of writing the last entry
    head_path(path).unlink()  # a torn entry was never anchored (the head follows the fsync)
    report = verify_log(path, key.verify_key)
    assert report.ok and report.torn_tail_line == 4 and report.entries == 3
    make_log(path, key, events=1)  # the next start
    report = verify_log(path, key.verify_key)
    assert report.ok, report.problem
    assert report.acknowledged_torn_lines == [4]
    assert report.torn_tail_line is None
    entries = [json.loads(x) for i, x in enumerate(lines_of(path)) if i != 3]
    assert entries[-2]["data"]["torn_line"] == 4
    assert entries[-2]["seq"] == 3  # the torn entry's seq is reused: it never existed


def test_torn_line_changed_after_acknowledgement_is_caught(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=2)
    path.write_bytes(path.read_bytes()[:-30])
    head_path(path).unlink()  # a torn entry was never anchored
    make_log(path, key, events=1)
    lines = lines_of(path)
    lines[2] = b"something else\n"
    _rewrite(path, lines)
    report = verify_log(path, key.verify_key)
    assert report.problem is not None and report.problem.line == 3
    assert "torn line was changed" in report.problem.reason


def test_complete_last_entry_without_newline_is_continued(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=1)
    path.write_bytes(path.read_bytes()[:-1])
    make_log(path, key, events=1)
    report = verify_log(path, key.verify_key)
    assert report.ok and report.entries == 4 and not report.acknowledged_torn_lines


def test_only_a_torn_line(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq":0,"ti')
    make_log(path, key, events=1)
    report = verify_log(path, key.verify_key)
    assert report.ok and report.acknowledged_torn_lines == [1]


def test_open_refuses_a_log_whose_tail_does_not_verify(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=2)
    lines = lines_of(path)
    lines[-1] = _edit(lines[-1], new="LOST")
    _rewrite(path, lines)
    with pytest.raises(AuditError, match="does not verify with this device's key"):
        AuditLog.open(path, key)


def test_open_refuses_another_devices_log_and_a_broken_last_line(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, SigningKey(bytes(32)), events=1)
    with pytest.raises(AuditError, match="does not verify with this device's key"):
        AuditLog.open(path, key)
    path.write_bytes(path.read_bytes() + b"junk\n")
    size = path.stat().st_size
    with pytest.raises(AuditError, match="ends with a broken entry"):
        AuditLog.open(path, key)
    assert path.stat().st_size == size  # refused without writing


def test_disk_full_leaves_the_log_clean(tmp_path: Path, key: SigningKey, monkeypatch):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key)
    log.log("override", what="a")
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data)[:10])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(AuditError, match="No space left"):
        log.log("override", what="b")
    monkeypatch.setattr(os, "write", real_write)
    log.log("override", what="c")
    log.close()
    report = verify_log(path, key.verify_key)
    assert report.ok and report.entries == 3


# --------------------------------------------------------------------------- CLI and keys


def test_cli_keygen_and_verify(tmp_path: Path, capsys):
    assert main(["audit", "keygen", "--out", str(tmp_path)]) == 0
    assert stat.S_IMODE((tmp_path / "device.key").stat().st_mode) == 0o600
    key = load_device_signing_key(tmp_path / "device.key")
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=3)
    assert main(["audit", "verify", str(path), "--pubkey", str(tmp_path / "device.pub")]) == 0
    assert "intact, 4 entries" in capsys.readouterr().out
    lines = lines_of(path)
    del lines[2]
    _rewrite(path, lines)
    assert main(["audit", "verify", str(path), "--pubkey", str(tmp_path / "device.pub")]) == 2
    err = capsys.readouterr().err
    assert f"{path} line 3:" in err and "deleted" in err
    assert main(["audit", "keygen", "--out", str(tmp_path)]) == 2  # refuses to overwrite


def test_loose_key_permissions_are_refused_with_the_fix(tmp_path: Path):
    pair = generate_device_key(tmp_path / "device")
    os.chmod(pair.private, 0o644)
    with pytest.raises(KeyFileError) as info:
        load_device_signing_key(pair.private)
    assert str(info.value) == f"{pair.private} has mode 0644: run chmod 600 {pair.private}"
    with pytest.raises(KeyFileError, match="is not a edge-device-private-key"):
        load_device_signing_key(pair.public)


def test_cli_verify_of_a_missing_file(tmp_path: Path, capsys):
    assert main(["audit", "verify", str(tmp_path / "none.jsonl")]) == 2
    assert "cannot read audit log" in capsys.readouterr().err
