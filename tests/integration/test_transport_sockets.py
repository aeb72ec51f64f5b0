"""Real sockets on loopback: streaming, latest-wins, service, security, churn, viewer."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
import zmq

from edge.cli import main
from edge.config import TransportConfig
from edge.errors import TransportError
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.overlay.demo import demo_plan, demo_registration
from edge.overlay.stage import OverlayStage
from edge.transport.client import ServiceClient, Subscriber
from edge.transport.protocol import encode, make_message
from edge.transport.publisher import Publisher, tune_socket
from edge.transport.security import ClientSecurity, ServerSecurity, generate_keys, is_loopback
from edge.transport.server import EdgeServer
from edge.transport.stage import PublishStage, plan_info
from edge.transport.viewer import Viewer

INTR = Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
PLAN = demo_plan()
PLAIN = ClientSecurity.plaintext()
LOCAL = "tcp://127.0.0.1:0"


def _config(**kw: object) -> TransportConfig:
    base = dict(publish_endpoint=LOCAL, service_endpoint=LOCAL, security="plaintext")
    base.update(kw)
    return TransportConfig(**base)  # type: ignore[arg-type]


def _publish_frames(publish: PublishStage, n: int, interval_s: float = 0.01) -> None:
    stage = OverlayStage(PLAN)
    for i in range(n):
        color = np.full((480, 640, 3), 90, np.uint8)
        r = FrameResult(Frame(i, color, PixelFormat.BGR8, None, 0.001, INTR))
        r.registration = demo_registration()
        stage.process(r)
        publish.process(r)
        time.sleep(interval_s)


def _publish_until_received(
    publish: PublishStage,
    subs: list[Subscriber],
    topics: tuple[str, ...] = ("overlay",),
    timeout_s: float = 60.0,
) -> int:
    """Publish frames until every subscriber holds every one of ``topics``; returns how many
    were published. A slow joiner on a busy machine takes as long as it takes."""
    stage = OverlayStage(PLAN)
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        color = np.full((480, 640, 3), 90, np.uint8)
        r = FrameResult(Frame(n, color, PixelFormat.BGR8, None, 0.001, INTR))
        r.registration = demo_registration()
        stage.process(r)
        publish.process(r)
        n += 1
        for sub in subs:
            sub.poll(10)
        if all(sub.latest(t) is not None for sub in subs for t in topics):
            return n
    raise AssertionError(f"{topics} did not reach every subscriber in {timeout_s} s")


def _wait_for(sub: Subscriber, topic: str, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sub.poll(50)
        if sub.latest(topic) is not None:
            return sub.latest(topic)
    return None


@pytest.fixture()
def server():
    with EdgeServer(_config(), PLAN) as s:
        yield s


@pytest.fixture()
def publish(server):
    """The publish stage on ``server``'s publisher, as the edge builds it."""
    assert server.publisher is not None
    stage = PublishStage.from_config(server.publisher, server.config, plan_info(PLAN)).start()
    yield stage
    stage.close()


def test_endpoint_policy():
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://localhost:1")
    assert is_loopback("tcp://[::1]:5") and is_loopback("ipc:///run/edge.sock")
    assert not is_loopback("tcp://*:5555") and not is_loopback("tcp://192.168.1.20:5555")
    ctx = zmq.Context()
    try:
        for ep in ("tcp://0.0.0.0:0", "tcp://*:0", "tcp://10.1.2.3:5555"):
            with pytest.raises(TransportError, match="plaintext refused"):
                Publisher(ctx, ep, ServerSecurity.plaintext())
        with pytest.raises(TransportError, match="not a ZeroMQ endpoint"):
            Publisher(ctx, "http://x", ServerSecurity.plaintext())
    finally:
        ctx.term()


def test_overlay_hud_video_and_status_reach_three_viewers(server, publish):
    subs = [Subscriber(server.publisher.endpoint, PLAIN) for _ in range(3)]
    try:
        # video: loopback, so the preview is on by default
        _publish_until_received(publish, subs, ("overlay", "hud", "video"))
        for sub in subs:
            ov = sub.latest("overlay")
            assert ov is not None and ov.message.payload["current"] is True
            assert sub.stats.rejected == 0
    finally:
        for sub in subs:
            sub.close()


def test_status_heartbeat_without_any_frame(server, publish):
    sub = Subscriber(server.publisher.endpoint, PLAIN, topics=("status",))
    try:
        status = _wait_for(sub, "status", timeout_s=4.0)
        assert status is not None and status.message.payload["frames"] == 0
    finally:
        sub.close()


# What may queue between a publisher and a subscriber that reads nothing: the two HWMs
# (4 each), ZeroMQ's 8 KiB I/O batches and the two 8 KiB kernel buffers (doubled by Linux):
# about 50 messages of 1.1 KB. The bound leaves room for other kernels' rounding but is a
# small fraction of the 3000 sent; a backlog would be all of them.
BACKLOG_BOUND = 150
FLOOD = 3000
STATUS = {"state": "TRACKING", "uptime_s": 0.0, "frames": 0, "plan": {}, "pad": "x" * 1000}


def _send_until_received(pub: Publisher, receive, timeout_s: float = 30.0) -> list[int]:
    """Send one status message per read until one sent here arrives; returns every sequence
    number read on the way. No timing is assumed: each round waits for whatever comes."""
    deadline = time.monotonic() + timeout_s
    first_new: int | None = None
    seqs: list[int] = []
    while time.monotonic() < deadline:
        seq = pub.send("status", STATUS)
        first_new = seq if first_new is None else first_new
        seqs.extend(receive(100))
        if seqs and seqs[-1] >= first_new:
            return seqs
    raise AssertionError(f"nothing sent after seq {first_new} arrived in {timeout_s} s")


def _raw_status_subscriber(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A SUB socket tuned exactly as the client library tunes its own."""
    sock = ctx.socket(zmq.SUB)
    tune_socket(sock, 4, 8192)
    sock.setsockopt(zmq.SUBSCRIBE, b"status")
    sock.connect(endpoint)
    return sock


def test_slow_subscriber_is_a_bounded_number_of_messages_behind():
    ctx = zmq.Context()
    pub = Publisher(ctx, LOCAL, ServerSecurity.plaintext(), send_hwm=4, buffer_bytes=8192)
    sock = _raw_status_subscriber(ctx, pub.endpoint)

    def receive(timeout_ms: int) -> list[int]:
        got = []
        while sock.poll(timeout_ms if not got else 0):
            got.append(msgpack.unpackb(sock.recv_multipart()[1])["seq"])
        return got

    try:
        _send_until_received(pub, receive)  # connected and subscribed
        flood = [pub.send("status", STATUS) for _ in range(FLOOD)]  # nothing read meanwhile
        seqs = _send_until_received(pub, receive)
        old = [s for s in seqs if s <= flood[-1]]
        assert seqs == sorted(seqs)  # one connection: in order, never repeated
        assert len(old) <= BACKLOG_BOUND, f"{len(old)} of {FLOOD} old messages were queued"
    finally:
        sock.close(linger=0)
        pub.close()
        ctx.term()


def test_subscriber_keeps_the_newest_message_it_received():
    ctx = zmq.Context()
    pub = Publisher(ctx, LOCAL, ServerSecurity.plaintext(), send_hwm=4, buffer_bytes=8192)
    sub = Subscriber(pub.endpoint, PLAIN, topics=("status",), context=ctx, rcv_hwm=4)
    received: list[int] = []

    def receive(timeout_ms: int) -> list[int]:
        before = sub.stats.received
        sub.poll(timeout_ms)
        latest = sub.latest("status")
        if latest is not None and sub.stats.received > before:
            received.append(latest.message.header.seq)
        return received[-1:] if sub.stats.received > before else []

    try:
        _send_until_received(pub, receive)
        for _ in range(FLOOD):  # the reader is away
            pub.send("status", STATUS)
        _send_until_received(pub, receive)  # back: caught up with what reached it
        # Now three more, fewer than the HWM, so none is dropped: after they are all in,
        # the one kept is the last, however many polls it took to read them.
        base = sub.stats.received
        last = [pub.send("status", STATUS) for _ in range(3)][-1]
        deadline = time.monotonic() + 30.0
        while sub.stats.received < base + 3 and time.monotonic() < deadline:
            sub.poll(100)
        assert sub.stats.received == base + 3
        latest = sub.latest("status")
        assert latest is not None and latest.message.header.seq == last
        assert sub.stats.dropped_upstream > 0  # the flood was cut at the HWMs
    finally:
        sub.close()
        pub.close()
        ctx.term()


def test_late_joiner_gets_plan_assets_and_commands_reach_the_queue(server, publish):
    _publish_frames(publish, 5)
    client = ServiceClient(server.service.endpoint, PLAIN)
    try:
        assets = client.fetch_all_assets()
        v, f = assets[PLAN.skin.sha256]
        np.testing.assert_allclose(v, PLAN.skin.vertices, atol=1e-7)
        np.testing.assert_array_equal(f, PLAN.skin.faces)
        assert PLAN.structures[0].mesh.sha256 in assets
        client.command("toggle_layer", layer="skin", visible=False)
        client.command("ack_warning", warning="DEGRADED")
        got = server.commands.poll()
        assert [c.name for c in got] == ["toggle_layer", "ack_warning"]
        with pytest.raises(TransportError, match="unknown command"):
            client.command("launch")
        with pytest.raises(TransportError, match="unknown_asset"):
            client.get_asset("0" * 64)
    finally:
        client.close()


def _raw_dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def _reply(sock: zmq.Socket) -> dict:
    assert sock.poll(3000), "no reply"
    frames = sock.recv_multipart()
    return msgpack.unpackb(frames[2])


def test_malformed_requests_get_explicit_errors_and_a_peer_log(server, caplog):
    ctx = zmq.Context()
    sock = _raw_dealer(ctx, server.service.endpoint)
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(server.service.endpoint)
    try:
        with caplog.at_level(logging.WARNING, logger="edge.transport.service"):
            bad_requests = [
                [b"garbage"],
                [b"command", b"\xc1", b""],
                encode(make_message("command", {"command": "fly", "args": {}})),
                encode(make_message("overlay", {})),
                [b"command", b"x" * 70_000, b""],  # oversized request, under the frame cap
            ]
            for parts in bad_requests:
                sock.send_multipart(parts)
                r = _reply(sock)
                assert r["ok"] is False and r["error"] == "malformed" and r["message"]
            # REQ sockets (with their empty delimiter) work too.
            req.send_multipart(encode(make_message("asset.list", {})))
            assert req.poll(3000)
            assert msgpack.unpackb(req.recv_multipart()[2])["ok"] is True
        assert any("127.0.0.1" in r.getMessage() for r in caplog.records)
    finally:
        sock.close()
        req.close()
        ctx.term()


def test_fuzz_service_over_a_real_socket(server):
    rng = np.random.default_rng(7)
    ctx = zmq.Context()
    sock = _raw_dealer(ctx, server.service.endpoint)
    try:
        valid = encode(make_message("command", {"command": "reregister", "args": {}}))
        for i in range(300):
            parts = [bytearray(p) for p in valid]
            k = int(rng.integers(0, len(parts)))
            if parts[k]:
                j = int(rng.integers(0, len(parts[k])))
                parts[k][j] ^= int(rng.integers(1, 256))
            if i % 3 == 0:
                parts.append(bytearray(rng.bytes(int(rng.integers(0, 64)))))
            sock.send_multipart([bytes(p) for p in parts])
            assert "ok" in _reply(sock)  # every request answered, ok or not
        client = ServiceClient(server.service.endpoint, PLAIN)
        assert client.list_assets()
        client.close()
    finally:
        sock.close()
        ctx.term()


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_thousand_connect_disconnect_cycles_and_vanishing_headsets(server):
    ctx = zmq.Context()
    try:
        before = None
        for i in range(1000):
            s = ctx.socket(zmq.DEALER if i % 2 else zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(server.service.endpoint if i % 2 else server.publisher.endpoint)
            if i % 10 == 1:  # a headset that asks and vanishes before the reply
                s.send_multipart(encode(make_message("asset.list", {})))
            s.close()
            if i == 100:
                before = _rss_kb()
        time.sleep(0.5)
        client = ServiceClient(server.service.endpoint, PLAIN)
        assert client.list_assets()
        client.close()
        assert before is not None and _rss_kb() - before < 50_000  # bounded, not per-connection
    finally:
        ctx.term()


# --------------------------------------------------------------------------- CurveZMQ


def test_keys_are_generated_with_private_secret_files(tmp_path: Path):
    written = generate_keys(tmp_path, ("hmd1", "hmd2"))
    assert (tmp_path / "enrolled" / "hmd1.key").is_file()
    for p in written:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert (mode == 0o600) if p.name.endswith("_secret") else not (mode & 0o022)
    with pytest.raises(TransportError, match="exists"):
        generate_keys(tmp_path, ("hmd1",))
    with pytest.raises(TransportError, match="not allowed"):
        generate_keys(tmp_path / "x", ("../evil",))


def test_curve_admits_enrolled_and_shuts_out_unenrolled(tmp_path: Path):
    generate_keys(tmp_path / "keys", ("hmd",))
    generate_keys(tmp_path / "other", ("intruder",))  # a valid key pair, never enrolled
    cfg = _config(security="curve", video="off")
    with EdgeServer(cfg, PLAN, keys_dir=tmp_path / "keys") as srv:
        good = ClientSecurity.from_keys_dir(tmp_path / "keys", "hmd")
        bad_pair = ClientSecurity.from_keys_dir(tmp_path / "other", "intruder")
        bad = ClientSecurity("curve", bad_pair.public_key, bad_pair.secret_key, good.server_key)
        ok_sub = Subscriber(srv.publisher.endpoint, good)
        bad_sub = Subscriber(srv.publisher.endpoint, bad)
        plain_sub = Subscriber(srv.publisher.endpoint, PLAIN)
        try:
            assert srv.publisher is not None
            publish = PublishStage.from_config(srv.publisher, cfg, plan_info(PLAN))
            _publish_until_received(publish, [ok_sub])
            _publish_frames(publish, 10, 0.02)  # more, while the others listen
            publish.close()
            bad_sub.poll(500)
            plain_sub.poll(100)
            assert bad_sub.stats.received == 0 and plain_sub.stats.received == 0
            ok_client = ServiceClient(srv.service.endpoint, good)
            assert ok_client.command("reregister")["ok"] is True
            ok_client.close()
            intruder = ServiceClient(srv.service.endpoint, bad, timeout_s=1.0)
            with pytest.raises(TransportError, match="no reply"):
                intruder.command("reregister")
            intruder.close()
            assert [c.name for c in srv.commands.poll()] == ["reregister"]
        finally:
            for s in (ok_sub, bad_sub, plain_sub):
                s.close()


def test_curve_server_needs_keys(tmp_path: Path):
    with pytest.raises(TransportError, match="edge keys generate"):
        EdgeServer(_config(security="curve"), PLAN, keys_dir=tmp_path)


# --------------------------------------------------------------------------- viewer


def test_viewer_draws_fresh_overlays_and_flags_stale_ones(server, publish):
    sub = Subscriber(server.publisher.endpoint, PLAIN)
    try:
        _publish_until_received(publish, [sub], ("overlay", "video"))
        viewer = Viewer(sub, stale_after_ms=100.0)
        ov = sub.latest("overlay")
        now = ov.message.header.capture_unix_s + 0.01
        img = viewer.render(now)
        u, v = np.round(ov.message.arrays["targets_px"][1]).astype(int)
        assert img.shape == (480, 640, 3)
        assert tuple(img[v, u + 7]) != (90, 90, 90)  # the target's circle is drawn on video
        stale = viewer.render(now + 1.0)
        assert tuple(stale[3, 3]) == (40, 40, 230)  # red STALE banner
        assert viewer.stale_frames == 1 and viewer.drawn_frames == 1
    finally:
        sub.close()


def test_edge_view_writes_an_mp4_and_refuses_a_window(server, publish, tmp_path: Path, capsys):
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            _publish_frames(publish, 5, 0.03)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        out = tmp_path / "view.mp4"
        rc = main(
            [
                "view",
                "--connect",
                server.publisher.endpoint,
                "--out",
                str(out),
                "--frames",
                "15",
                "--stale-ms",
                "500",
                "--predict",
            ]
        )
        assert rc == 0
        # Current overlays after the first carry a velocity: the view extrapolates them.
        err = capsys.readouterr().err
        predicted = int(err.split("(predicted ")[1].split(")")[0])
        assert predicted > 0, err
    finally:
        stop.set()
        t.join()
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 15
    cap.release()
    assert not list(tmp_path.glob(".*partial*"))
    assert main(["view", "--connect", server.publisher.endpoint, "--window", "--frames", "1"]) == 2
    assert "--out" in capsys.readouterr().err
    assert (
        main(["view", "--connect", "tcp://10.0.0.9:5555", "--out", str(out), "--frames", "1"]) == 2
    )
