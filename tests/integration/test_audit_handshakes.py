"""A real EdgeServer under CurveZMQ: accepted and refused handshakes reach the audit log."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nacl.signing import SigningKey

from edge.app import _audit_enrolment, _audit_handshakes
from edge.audit import AuditLog, verify_log
from edge.audit_head import head_path, read_head
from edge.config import TransportConfig
from edge.overlay.demo import demo_plan
from edge.transport.client import Subscriber
from edge.transport.security import ClientSecurity, generate_keys, key_fingerprint
from edge.transport.server import EdgeServer

LOCAL = "tcp://127.0.0.1:0"


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait_for(path: Path, want: set[str], timeout_s: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        entries = _events(path)
        if want <= {e["event"] for e in entries} or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def test_enrolled_and_unenrolled_headsets_are_audited(tmp_path: Path):
    generate_keys(tmp_path / "keys", ("hmd",))
    generate_keys(tmp_path / "other", ("intruder",))  # a valid pair, never enrolled
    key = SigningKey(bytes(range(32)))
    path = tmp_path / "audit.jsonl"
    cfg = TransportConfig(
        publish_endpoint=LOCAL, service_endpoint=LOCAL, security="curve", video="off"
    )
    good = ClientSecurity.from_keys_dir(tmp_path / "keys", "hmd")
    pair = ClientSecurity.from_keys_dir(tmp_path / "other", "intruder")
    bad = ClientSecurity("curve", pair.public_key, pair.secret_key, good.server_key)
    with (
        AuditLog.open(path, key) as audit,
        EdgeServer(
            cfg, demo_plan(), keys_dir=tmp_path / "keys", on_handshake=_audit_handshakes(audit)
        ) as srv,
    ):
        _audit_enrolment(audit, srv.security)
        assert srv.publisher is not None
        subs = [Subscriber(srv.publisher.endpoint, s) for s in (good, bad)]
        try:
            entries = _wait_for(path, {"headset.connected", "headset.refused"})
        finally:
            for s in subs:
                s.close()
    by_event: dict[str, list[dict]] = {}
    for e in entries:
        by_event.setdefault(e["event"], []).append(e["data"])
    hmd_fp, intruder_fp = key_fingerprint(good.public_key), key_fingerprint(pair.public_key)
    assert by_event["headset.enrolled"] == [{"name": "hmd", "key": hmd_fp}]
    connected = by_event["headset.connected"][0]
    assert connected["name"] == "hmd" and connected["key"] == hmd_fp
    assert connected["address"] == "127.0.0.1"
    refused = by_event["headset.refused"][0]
    assert refused["key"] == intruder_fp and refused["address"] == "127.0.0.1"
    assert refused["reason"]
    assert all(d["key"] != intruder_fp for d in by_event["headset.connected"])
    report = verify_log(path, key.verify_key, read_head(head_path(path)))
    assert report.ok, report.problem
