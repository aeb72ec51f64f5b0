"""`edge run` with audit on: a headset enrolled, one revoked, while it streams.

The edge runs as its own process (the phantom, real models, CurveZMQ on loopback);
headsets connect from their own loopback addresses, as on a theatre network.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.audit import verify_log
from edge.audit_head import head_path, read_head
from edge.keys import generate_device_key, load_device_verify_key
from edge.transport.client import ServiceClient, Subscriber
from edge.transport.protocol import TOPIC_STATUS
from edge.transport.security import ClientSecurity, generate_keys, key_fingerprint
from support.net import free_endpoint


def _entries(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(condition, subs: list[Subscriber], timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for s in subs:
            s.poll(20)
        if not subs:
            time.sleep(0.05)
        if condition():
            return True
    return False


def _newest(sub: Subscriber) -> float:
    latest = sub.latest(TOPIC_STATUS)
    return latest.message.header.publish_unix_s if latest is not None else 0.0


def test_enrolment_changes_while_running_are_enforced_and_audited(
    tmp_path: Path, repo_root: Path
) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, ("hmd", "tablet"))
    generate_keys(tmp_path / "later", ("spare",))
    device = generate_device_key(tmp_path / "device")
    log = tmp_path / "audit" / "audit.jsonl"
    log.parent.mkdir(mode=0o700)
    pub, svc = free_endpoint(), free_endpoint()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[transport]\npublish_endpoint = "{pub}"\nservice_endpoint = "{svc}"\n'
        f'keys_dir = "{keys}"\nstatus_hz = 20.0\n'
        f'[audit]\nenabled = true\npath = "{log}"\ndevice_key = "{device.private}"\n'
        "[service]\nstop_timeout_s = 30.0\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--frames", "1000000"],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"EDGE_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"},
    )
    hmd_keys = ClientSecurity.from_keys_dir(keys, "hmd")
    spare_pair = ClientSecurity.from_keys_dir(tmp_path / "later", "spare")
    spare_keys = ClientSecurity(
        "curve", spare_pair.public_key, spare_pair.secret_key, hmd_keys.server_key
    )
    opened: list = []

    def subscriber(ip: str, security: ClientSecurity) -> Subscriber:
        sub = Subscriber(f"tcp://{ip}:0;{pub[6:]}", security, topics=(TOPIC_STATUS,))
        opened.append(sub)
        return sub

    try:
        assert _wait(
            lambda: (
                proc.poll() is not None
                or any(e["event"] == "headset.enrolled" for e in _entries(log))
            ),
            [],
        )
        assert proc.poll() is None, "edge run stopped"
        hmd = subscriber("127.0.0.2", hmd_keys)
        tablet = subscriber("127.0.0.3", ClientSecurity.from_keys_dir(keys, "tablet"))
        assert _wait(lambda: hmd.stats.received and tablet.stats.received, [hmd, tablet])

        (keys / "enrolled" / "spare.key").write_bytes(
            (tmp_path / "later" / "spare.key").read_bytes()
        )
        assert _wait(
            lambda: any(e["data"].get("while_running") for e in _entries(log)), [hmd, tablet]
        )
        spare = subscriber("127.0.0.4", spare_keys)
        spare_svc = ServiceClient(f"tcp://127.0.0.4:0;{svc[6:]}", spare_keys, timeout_s=10)
        opened.append(spare_svc)
        assert spare_svc.command("reregister")["ok"] is True
        assert _wait(lambda: spare.stats.received > 0, [hmd, tablet, spare])

        removed_at = time.time()
        (keys / "enrolled" / "tablet.key").unlink()
        assert _wait(
            lambda: time.time() > removed_at + 3 and _newest(hmd) > removed_at + 2,
            [hmd, tablet, spare],
        )
        assert _newest(tablet) < removed_at + 2.0
        assert _newest(spare) > removed_at + 2  # reconnected after the rebind
    finally:
        for closable in opened:
            closable.close()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err

    entries = _entries(log)
    by_event: dict[str, list[dict]] = {}
    for e in entries:
        by_event.setdefault(e["event"], []).append(e["data"])
    tablet_fp = key_fingerprint(ClientSecurity.from_keys_dir(keys, "tablet").public_key)
    spare_fp = key_fingerprint(spare_pair.public_key)
    assert {"name": "spare", "key": spare_fp, "while_running": True} in by_event["headset.enrolled"]
    assert by_event["headset.revoked"] == [
        {"name": "tablet", "key": tablet_fp, "reason": "key file removed"}
    ]
    gone = by_event["headset.disconnected"]
    tablet_gone = [d for d in gone if d["name"] == "tablet"]
    assert {d["socket"] for d in tablet_gone} == {"overlay"}
    assert all(d["address"].startswith("127.0.0.3:") and d["connected_s"] > 0 for d in tablet_gone)
    assert {"hmd", "spare"} <= {d["name"] for d in gone}  # ended by the rebind, then back
    # The revoked key's next handshake is refused (and audited); it does not retry.
    assert any(d["key"] == tablet_fp for d in by_event.get("headset.refused", []))
    report = verify_log(log, load_device_verify_key(device.public), read_head(head_path(log)))
    assert report.ok, report.problem
