"""Audit head anchoring: a cut tail, a garbage tail or an empty log fail; the product's events."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from nacl.signing import SigningKey

from edge.audit import AuditLog, verify_log
from edge.audit_head import JOURNAL_PREFIX, head_path, read_head, sign_head
from edge.cli import main
from edge.errors import AuditError
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.keys import generate_device_key, load_device_signing_key
from edge.registration.types import RegistrationQuality, RegistrationResult, RegistrationState
from edge.sinks.audit import AuditSink

INTR = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey(bytes(range(32)))


def make_log(path: Path, key: SigningKey, events: int = 5) -> None:
    with AuditLog.open(path, key, version="0.1.0") as log:
        for i in range(events):
            log.log("state.changed", old="SEARCHING", new="TRACKING", frame=i)


def keep_lines(path: Path, n: int) -> None:
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:n]))


def test_head_is_anchored_after_every_entry_and_at_close(tmp_path: Path, key: SigningKey, caplog):
    path = tmp_path / "audit.jsonl"
    caplog.set_level(logging.INFO, logger="edge.audit")
    log = AuditLog.open(path, key)
    assert read_head(head_path(path)).seq == 0
    log.log("override", what="a")
    head = read_head(head_path(path))
    assert (head.seq, head.hash) == log.head and head.verifies_with(key.verify_key)
    assert not head.verifies_with(SigningKey(bytes(32)).verify_key)
    assert oct(head_path(path).stat().st_mode & 0o777) == "0o600"
    journal = [r.getMessage() for r in caplog.records if r.getMessage().startswith(JOURNAL_PREFIX)]
    assert journal[-1] == f"{JOURNAL_PREFIX} {path} seq=1 hash={head.hash} sig={head.sig}"
    log.close()
    lazy = AuditLog.open(path, key, head_every=100)  # anchored at close only
    lazy.log("override", what="b")
    assert read_head(head_path(path)).seq == 1
    lazy.close()
    assert read_head(head_path(path)).seq == 3
    report = verify_log(path, key.verify_key, read_head(head_path(path)))
    assert report.ok and report.anchored_seq == 3


def test_a_log_cut_after_line_3_fails_with_its_head(tmp_path: Path, key: SigningKey, capsys):
    pair = generate_device_key(tmp_path / "device")
    dkey = load_device_signing_key(pair.private)
    path = tmp_path / "audit.jsonl"
    make_log(path, dkey, events=5)
    keep_lines(path, 3)
    report = verify_log(path, dkey.verify_key, read_head(head_path(path)))
    assert report.problem is not None and report.problem.line == 0
    assert "ends at seq 2 but its head anchors seq 5: 3 entries cut from the end" in (
        report.problem.reason
    )
    assert main(["audit", "verify", str(path), "--pubkey", str(pair.public)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one line (after any log lines)
    assert f"{path}: the log ends at seq 2" in last and "3 entries cut" in last
    # The chain alone still holds together: that is why the head is needed.
    assert verify_log(path, dkey.verify_key).ok
    assert main(["audit", "verify", str(path), "--pubkey", str(pair.public), "--no-head"]) == 0
    assert "--no-head" in capsys.readouterr().out
    # And the service will not continue a cut log (which would overwrite the head).
    with pytest.raises(AuditError, match="anchors seq 5: entries were cut"):
        AuditLog.open(path, dkey)


def test_a_cut_log_continued_with_other_entries_fails(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=3)
    head = read_head(head_path(path))
    keep_lines(path, 2)
    head_path(path).unlink()
    make_log(path, key, events=3)  # entries with the anchored seq, but other ones
    report = verify_log(path, key.verify_key, head)
    assert report.problem is not None and "is not the anchored one" in report.problem.reason


def test_a_garbage_tail_fails_even_without_a_head(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=4)
    keep_lines(path, 3)
    path.write_bytes(path.read_bytes() + b"garbage garbage\n")
    report = verify_log(path, key.verify_key)
    assert report.problem is not None and report.problem.line == 4
    assert "not a crash" in report.problem.reason
    keep_lines(path, 3)
    path.write_bytes(path.read_bytes() + b"xx")  # no newline, but not an entry's start
    assert not verify_log(path, key.verify_key).ok
    keep_lines(path, 3)
    path.write_bytes(path.read_bytes() + b"\n")  # an empty line
    assert not verify_log(path, key.verify_key).ok


def test_a_crash_torn_tail_still_verifies_against_its_head(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=2)
    log = AuditLog.open(path, key)
    log.close()
    head = read_head(head_path(path))
    torn = json.dumps({"data": {"x": 1}})[:12].replace(" ", "").encode()
    path.write_bytes(path.read_bytes() + torn)  # an unanchored entry cut by a crash
    report = verify_log(path, key.verify_key, head)
    assert report.ok and report.torn_tail_line == 5 and report.anchored_seq == head.seq


def test_an_empty_log_fails_even_with_pubkey(tmp_path: Path, capsys):
    pair = generate_device_key(tmp_path / "device")
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    report = verify_log(path)
    assert report.problem is not None and "holds no entries" in report.problem.reason
    argv = ["audit", "verify", str(path), "--pubkey", str(pair.public)]
    assert main([*argv, "--no-head"]) == 2
    assert "holds no entries" in capsys.readouterr().err
    assert main(argv) == 2  # no head file either
    assert "no head file" in capsys.readouterr().err


def test_a_missing_or_foreign_head(tmp_path: Path, key: SigningKey, capsys):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, events=1)
    moved = tmp_path / "copy.head"
    head_path(path).rename(moved)
    assert main(["audit", "verify", str(path)]) == 2
    assert "no head file" in capsys.readouterr().err
    assert main(["audit", "verify", str(path), "--head", str(moved)]) == 0
    out = capsys.readouterr().out
    assert "intact" in out and "anchored: the head file's seq 1 is in the log" in out
    other = sign_head(1, read_head(moved).hash, "t", SigningKey(bytes(32)))
    head_path(path).write_text(other.to_json())
    report = verify_log(path, key.verify_key, read_head(head_path(path)))
    assert report.problem is not None and "signature does not verify" in report.problem.reason
    head_path(path).write_text("{}")
    assert main(["audit", "verify", str(path)]) == 2
    assert "does not hold seq, hash, time and sig" in capsys.readouterr().err


def test_concurrent_writers_keep_the_chain(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key)

    def write(n: int) -> None:
        for i in range(20):
            log.headset_connected(f"hmd{n}", "127.0.0.1", "ab" * 8, i=i)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    report = verify_log(path, key.verify_key, read_head(head_path(path)))
    assert report.ok and report.entries == 81 and report.anchored_seq == 80


def _result(number: int, state: RegistrationState) -> FrameResult:
    r = FrameResult(
        Frame(number, np.zeros((48, 64, 3), np.uint8), PixelFormat.BGR8, None, 0.0, INTR)
    )
    quality = RegistrationQuality(icp_rms_mm=0.8, inlier_fraction=0.93, fre_mm=1.1)
    quality.tre_mm = {"entry": 1.7}
    r.registration = RegistrationResult(state, np.eye(4), quality)
    return r


def test_registration_accepted_is_audited_with_its_quality(tmp_path: Path, key: SigningKey):
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, key) as log:
        sink = AuditSink(log)
        S = RegistrationState
        for n, state in enumerate([S.SEARCHING, S.REGISTERED, S.TRACKING, S.DEGRADED, S.TRACKING]):
            sink.consume(_result(n, state))
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    accepted = [e for e in entries if e["event"] == "registration.accepted"]
    assert len(accepted) == 1  # a recovery from DEGRADED is not a new registration
    data = accepted[0]["data"]
    assert data["frame"] == 2 and data["icp_rms_mm"] == 0.8 and data["inlier_fraction"] == 0.93
    assert data["fre_mm"] == 1.1 and data["tre_mm"] == {"entry": 1.7}
