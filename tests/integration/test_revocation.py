"""Enrolment changes while the edge runs, over real CurveZMQ sockets on loopback.

Each headset connects from its own loopback address (127.0.0.x), as headsets on a
theatre network do, so the edge can name the headset behind a connection.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edge.config import TransportConfig
from edge.errors import TransportError
from edge.overlay.demo import demo_plan
from edge.transport.client import ServiceClient, Subscriber
from edge.transport.protocol import TOPIC_STATUS
from edge.transport.security import (
    REMOVED,
    ClientSecurity,
    EnrolmentChange,
    generate_keys,
    load_public_key,
)
from edge.transport.server import EdgeServer
from edge.transport.watch import Disconnection

LOCAL = "tcp://127.0.0.1:0"
CFG = TransportConfig(publish_endpoint=LOCAL, service_endpoint=LOCAL, security="curve", video="off")
STATUS = {"state": "SEARCHING", "uptime_s": 1.0, "frames": 0, "plan": {}}


def _from(source_ip: str, endpoint: str) -> str:
    """``endpoint`` connected from ``source_ip`` (ZeroMQ's ``source;destination`` form)."""
    return f"tcp://{source_ip}:0;{endpoint.removeprefix('tcp://')}"


class _Streaming:
    """A status message every 10 ms from a thread, as the heartbeat and frame loop do."""

    def __init__(self, server: EdgeServer) -> None:
        assert server.publisher is not None
        self._publisher = server.publisher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._publisher.send(TOPIC_STATUS, STATUS)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _newest_publish(sub: Subscriber) -> float:
    latest = sub.latest(TOPIC_STATUS)
    return latest.message.header.publish_unix_s if latest is not None else 0.0


def _poll_until(subs: list[Subscriber], done, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for s in subs:
            s.poll(10)
        if done():
            return True
        if not subs:
            time.sleep(0.01)
    return False


def _command_ok(client: ServiceClient, timeout_s: float = 30.0) -> bool:
    """True once a command is accepted (the DEALER reconnects after a rebind)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return bool(client.command("reregister")["ok"])
        except TransportError:
            continue
    return False


def test_a_revoked_headset_receives_nothing_two_seconds_after_its_key_file_goes(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, ("hmd", "tablet"))
    tablet_key = load_public_key(keys / "enrolled" / "tablet.key")
    changes: list[EnrolmentChange] = []
    gone: list[Disconnection] = []
    with EdgeServer(
        CFG, demo_plan(), keys_dir=keys, on_enrolment=changes.append, on_disconnect=gone.append
    ) as srv:
        assert srv.publisher is not None and srv.service is not None
        pub, svc = srv.publisher.endpoint, srv.service.endpoint
        hmd_keys = ClientSecurity.from_keys_dir(keys, "hmd")
        tablet_keys = ClientSecurity.from_keys_dir(keys, "tablet")
        streaming = _Streaming(srv)
        hmd = Subscriber(_from("127.0.0.2", pub), hmd_keys, topics=(TOPIC_STATUS,))
        tablet = Subscriber(_from("127.0.0.3", pub), tablet_keys, topics=(TOPIC_STATUS,))
        hmd_svc = ServiceClient(_from("127.0.0.2", svc), hmd_keys)
        tablet_svc = ServiceClient(_from("127.0.0.3", svc), tablet_keys, timeout_s=1.0)
        try:
            assert _poll_until([hmd, tablet], lambda: hmd.stats.received and tablet.stats.received)
            assert tablet_svc.command("reregister")["ok"] is True
            removed_at = time.time()
            (keys / "enrolled" / "tablet.key").unlink()
            # Watch both for 3 s after the removal, and until the hmd has a message
            # published more than 2 s after it.
            assert _poll_until(
                [hmd, tablet],
                lambda: time.time() > removed_at + 3 and _newest_publish(hmd) > removed_at + 2,
            )
            with pytest.raises(TransportError):  # no reply: ZAP refuses the key now
                tablet_svc.command("reregister")
            assert _command_ok(hmd_svc)
        finally:
            streaming.close()
            for closable in (hmd, tablet, hmd_svc, tablet_svc):
                closable.close()
    latency_s = _newest_publish(tablet) - removed_at
    record_property("revocation_last_message_after_removal_s", round(latency_s, 3))
    assert latency_s < 2.0, f"the revoked headset got a message {latency_s:.2f} s after removal"
    assert srv.rebinds == 1
    assert changes and changes[0].removed == {tablet_key: ("tablet", REMOVED)}
    ended = {(g.name, g.socket) for g in gone}
    assert {("tablet", "overlay"), ("tablet", "service"), ("hmd", "overlay")} <= ended
    assert all(g.address.startswith("127.0.0.") for g in gone)


def test_a_key_enrolled_while_running_can_subscribe_and_command(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, ("hmd",))
    generate_keys(tmp_path / "later", ("spare",))
    spare_pair = ClientSecurity.from_keys_dir(tmp_path / "later", "spare")
    changes: list[EnrolmentChange] = []
    with EdgeServer(CFG, demo_plan(), keys_dir=keys, on_enrolment=changes.append) as srv:
        assert srv.publisher is not None and srv.service is not None
        hmd_keys = ClientSecurity.from_keys_dir(keys, "hmd")
        spare_keys = ClientSecurity(
            "curve", spare_pair.public_key, spare_pair.secret_key, hmd_keys.server_key
        )
        streaming = _Streaming(srv)
        hmd = Subscriber(srv.publisher.endpoint, hmd_keys, topics=(TOPIC_STATUS,))
        early = Subscriber(srv.publisher.endpoint, spare_keys, topics=(TOPIC_STATUS,))
        early_svc = ServiceClient(srv.service.endpoint, spare_keys, timeout_s=1.0)
        opened = [hmd, early, early_svc]
        try:
            # Not enrolled yet: refused while the hmd is served.
            assert _poll_until([hmd, early], lambda: hmd.stats.received >= 50)
            assert early.stats.received == 0
            with pytest.raises(TransportError):
                early_svc.command("reregister")
            (keys / "enrolled" / "spare.key").write_bytes(
                (tmp_path / "later" / "spare.key").read_bytes()
            )
            assert _poll_until([], lambda: changes)  # the watch has seen the new file
            # libzmq does not retry a refused handshake: the headset connects again.
            spare = Subscriber(srv.publisher.endpoint, spare_keys, topics=(TOPIC_STATUS,))
            spare_svc = ServiceClient(srv.service.endpoint, spare_keys)
            opened += [spare, spare_svc]
            assert _poll_until([spare], lambda: spare.stats.received > 0)
            assert spare_svc.command("reregister")["ok"] is True
        finally:
            streaming.close()
            for closable in opened:
                closable.close()
    assert [dict(c.added) for c in changes] == [{spare_pair.public_key: "spare"}]
    assert srv.rebinds == 0  # an addition needs no rebind
