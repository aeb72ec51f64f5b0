"""The publishing side: latest-wins streaming of overlay, hud, status and video.

A small send high-water mark and small kernel socket buffers bound what can
queue for a slow headset: once they are full, ZeroMQ drops new messages for
that subscriber instead of building a backlog, and the client drains to the
newest (see edge.transport.client). Sequence numbers per topic let clients
count what was dropped.

Subscriptions are applied by the edge, not by libzmq: the socket is an XPUB with
``ZMQ_XPUB_MANUAL``, and each ``send`` first reads the subscriptions waiting (at
most :data:`SUBSCRIPTIONS_PER_SEND`) and applies only those to a published topic or
a prefix of one (:class:`SubscriptionGate`). A peer that asks for more than
:data:`MAX_UNKNOWN_TOPICS` distinct unknown topics, or sends anything that is not a
subscription, is reported (``on_misbehaving``): the server withdraws its key and
rebinds (:meth:`Publisher.rebind`), because libzmq keeps every subscription of an
XPUB_MANUAL peer, applied or not, until its connection ends.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np

from edge.errors import StateError, TransportError
from edge.transport.protocol import PUBLISHED_TOPICS, TOPIC_VIDEO, encode, make_message
from edge.transport.security import ServerSecurity

log = logging.getLogger(__name__)

# ZMQ_MAXMSGSIZE of the PUB. Its only inbound frames are the handshake (CURVE's INITIATE
# measured 276 bytes with libzmq 4.3.5's metadata; a client's routing id may add 255) and
# subscriptions (1 byte + a topic of at most 32 bytes + 33 bytes of CURVE box). A larger
# frame closes that peer's connection before libzmq stores it: a 30 MiB subscription once
# grew the edge by 3.4 GB and froze the send for seconds. libzmq has no per-peer cap on
# the number of subscriptions: SubscriptionGate is that cap.
SUBSCRIPTION_FRAME_LIMIT = 1024
# Subscriptions read and applied before each send: bounds the time one send can take.
SUBSCRIPTIONS_PER_SEND = 512
# Distinct topics outside the protocol one peer may ask for before it is cut off (a
# client subscribes to at most the four topics; a few typos are not an attack).
MAX_UNKNOWN_TOPICS = 16
MAX_GATE_PEERS = 256  # peers whose unknown topics are remembered (oldest forgotten)
BIND_RETRY_S = 2.0  # a rebind waits this long for libzmq to release the old listener
# Messages from this size on (video frames) are handed to libzmq without a copy.
ZERO_COPY_BYTES = 65536
HEARTBEAT_IVL_MS = 1000  # ZMTP heartbeats: a vanished headset is dropped within seconds
HEARTBEAT_TIMEOUT_MS = 3000
_BINDS = itertools.count(1)  # numbers each bind's monitor address (unique per process)


def tune_socket(socket: Any, hwm: int, buffer_bytes: int) -> None:
    """Options shared by the edge's and the clients' streaming sockets."""
    import zmq

    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, hwm)
    socket.setsockopt(zmq.RCVHWM, hwm)
    if buffer_bytes > 0:
        socket.setsockopt(zmq.SNDBUF, buffer_bytes)
        socket.setsockopt(zmq.RCVBUF, buffer_bytes)
    socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    socket.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)


def monitor_events() -> int:
    """The socket-monitor events the edge reads (edge.transport.watch)."""
    import zmq

    return int(
        zmq.EVENT_ACCEPTED
        | zmq.EVENT_DISCONNECTED
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_MONITOR_STOPPED
    )


def bind_retrying(socket: Any, endpoint: str, retry_until: float = 0.0) -> None:
    """``socket.bind(endpoint)``; an address still in use is retried until the monotonic
    ``retry_until`` (libzmq closes a socket's listener asynchronously, so a rebind on the
    same port can briefly find it taken)."""
    import zmq

    while True:
        try:
            socket.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() >= retry_until:
                raise
        time.sleep(0.01)


def open_bound_socket(
    context: Any,
    socket_type: int,
    endpoint: str,
    security: ServerSecurity,
    *,
    hwm: int,
    buffer_bytes: int,
    max_message_bytes: int,
    options: Mapping[int, int] | None = None,
    monitor_name: str | None = None,
    retry_until: float = 0.0,
    what: str,
    fix: str,
) -> tuple[Any, Any]:
    """A server socket of ``socket_type``, tuned, secured and bound to ``endpoint``, and
    its monitor (None unless ``monitor_name``), as ``(socket, monitor)``.

    ``options`` are set after ZMQ_MAXMSGSIZE, before the security. Each bind's monitor
    gets its own inproc address (``monitor_name`` and a bind number). When it cannot be
    bound: TransportError "cannot bind {what} to {endpoint}" with ``fix``; the socket is
    closed on any error.
    """
    import zmq

    socket = context.socket(socket_type)
    try:
        tune_socket(socket, hwm, buffer_bytes)
        socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        for option, value in (options or {}).items():
            socket.setsockopt(option, value)
        security.apply(socket, endpoint)
        bind_retrying(socket, endpoint, retry_until)
        monitor = None
        if monitor_name is not None:
            address = f"inproc://{monitor_name}.{next(_BINDS)}"
            monitor = socket.get_monitor_socket(monitor_events(), address)
    except zmq.ZMQError as exc:
        socket.close(0)
        raise TransportError(f"cannot bind {what} to {endpoint}: {exc}", fix) from None
    except BaseException:
        socket.close(0)
        raise
    return socket, monitor


def subscription_allowed(topic: bytes) -> bool:
    """True for a published topic or a prefix of one (b"": every topic)."""
    return any(t.encode("ascii").startswith(topic) for t in PUBLISHED_TOPICS)


class SubscriptionGate:
    """Decides each subscription a peer sends, and spots a peer flooding the publisher.

    ``peer`` is the CURVE key (ZAP user id) or, in plaintext, the address. Per peer
    it remembers at most ``max_unknown + 1`` distinct refused topics, for at most
    ``max_peers`` peers.
    """

    APPLY, REFUSE, FLOOD = "apply", "refuse", "flood"

    def __init__(self, max_unknown: int = MAX_UNKNOWN_TOPICS, max_peers: int = MAX_GATE_PEERS):
        self.max_unknown = max_unknown
        self.max_peers = max_peers
        self._unknown: dict[str, set[bytes]] = {}
        self.applied = 0
        self.refused = 0

    def admit(self, peer: str, subscribe: bool, topic: bytes) -> str:
        """APPLY (a known topic), REFUSE, or FLOOD the first time ``peer`` goes over."""
        if subscription_allowed(topic):
            self.applied += 1
            return self.APPLY
        self.refused += 1
        if not subscribe:
            return self.REFUSE
        seen = self._unknown.pop(peer, set())
        self._unknown[peer] = seen  # most recent last: the oldest peer is forgotten first
        if len(self._unknown) > self.max_peers:
            del self._unknown[next(iter(self._unknown))]
        if len(seen) > self.max_unknown or topic in seen:
            return self.REFUSE
        seen.add(topic)
        return self.FLOOD if len(seen) > self.max_unknown else self.REFUSE

    def reset(self) -> None:
        """Forget every peer (a rebound socket holds no subscription)."""
        self._unknown.clear()


class Publisher:
    """One bound XPUB socket; thread-safe ``send`` (pipeline, status timer, video worker).

    Lifecycle: created bound (open) -> ``close()``; sending after close raises
    StateError. ``rebind()`` replaces the socket on the same endpoint (every
    connection ends; headsets reconnect). With ``monitored``, ``monitor`` is the
    current socket's monitor, a PAIR socket the caller owns and closes
    (:mod:`edge.transport.watch`). ``on_misbehaving(peer, reason)`` is called, with
    the send lock held, for a peer to be cut off.
    """

    def __init__(
        self,
        context: Any,
        endpoint: str,
        security: ServerSecurity,
        *,
        send_hwm: int = 4,
        buffer_bytes: int = 8192,
        sender: str = "edge",
        on_misbehaving: Callable[[str, str], None] | None = None,
        monitored: bool = False,
    ) -> None:
        if send_hwm < 1:
            raise TransportError(f"send_hwm must be at least 1, got {send_hwm}", "fix the config")
        self.sender = sender
        self._context = context
        self._security = security
        self._send_hwm = send_hwm
        self._buffer_bytes = buffer_bytes
        self._on_misbehaving = on_misbehaving
        self._monitored = monitored
        self._gate = SubscriptionGate()
        self._trusted = True  # False once the socket's subscription bookkeeping is off
        self._socket, self.monitor = self._open(endpoint)
        self.endpoint = self._socket.getsockopt(_zmq().LAST_ENDPOINT).decode()
        self._last_flags = int(_zmq().NOBLOCK)
        self._more_flags = int(_zmq().NOBLOCK | _zmq().SNDMORE)
        # As plain ints: an enum operation per send costs microseconds.
        self._events_option = int(_zmq().EVENTS)
        self._pollin = int(_zmq().POLLIN)
        self._packer = msgpack.Packer(use_bin_type=True)  # used with the send lock held
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.bytes_sent = 0
        self.rebinds = 0
        self._closed = False

    def _open(self, endpoint: str, retry_until: float = 0.0) -> tuple[Any, Any]:
        """A bound XPUB (manual subscriptions) and its monitor; TransportError when it cannot."""
        zmq = _zmq()
        return open_bound_socket(
            self._context,
            zmq.XPUB,
            endpoint,
            self._security,
            hwm=self._send_hwm,
            buffer_bytes=self._buffer_bytes,
            max_message_bytes=SUBSCRIPTION_FRAME_LIMIT,
            options={zmq.XPUB_MANUAL: 1},
            monitor_name=f"edge.publisher.{id(self)}" if self._monitored else None,
            retry_until=retry_until,
            what="the publisher",
            fix="choose a free port (transport.publish_endpoint or --publish)",
        )

    @property
    def subscriptions(self) -> dict[str, int]:
        """Subscriptions applied and refused so far."""
        return {"applied": self._gate.applied, "refused": self._gate.refused}

    def rebind(self) -> Any:
        """Close the socket and bind a new one on the same endpoint; returns its monitor.

        libzmq cannot drop one peer from a bound socket: this ends every connection, so
        a withdrawn key loses its session; enrolled headsets reconnect on their own and
        pass ZAP again. Raises TransportError (and stays closed) when the endpoint cannot
        be bound again within :data:`BIND_RETRY_S`.
        """
        with self._lock:
            if self._closed:
                raise StateError("publisher is closed", "create a new one")
            self._socket.close(0)
            self._gate.reset()
            self._trusted = True
            try:
                self._socket, self.monitor = self._open(
                    self.endpoint, time.monotonic() + BIND_RETRY_S
                )
            except BaseException:
                self._closed = True
                raise
            self.rebinds += 1
            return self.monitor

    def _apply_subscriptions(self) -> None:
        """Read the waiting subscriptions (bounded) and apply the allowed ones (lock held)."""
        for _ in range(SUBSCRIPTIONS_PER_SEND):
            if not self._socket.getsockopt(self._events_option) & self._pollin:
                return  # nothing waiting (most sends): cheaper to ask than to catch zmq.Again
            zmq = _zmq()
            try:
                frame = self._socket.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            data = frame.bytes
            # "" for libzmq's own unsubscriptions when a connection ends (applied to no
            # connection) and on transports without a peer address.
            peer = _peer_of(frame)
            if not data or data[0] > 1:
                # libzmq 4.3 pairs each received message with the next subscription's
                # connection, so after this one a SUBSCRIBE could land on another peer.
                self._trusted = False
                self._misbehaving(peer, "sent a message that is not a subscription")
                continue
            verdict = self._gate.admit(peer, data[0] == 1, data[1:])
            if verdict == SubscriptionGate.FLOOD:
                self._misbehaving(
                    peer, f"asked for more than {self._gate.max_unknown} unknown topics"
                )
            elif verdict == SubscriptionGate.APPLY and self._trusted:
                option = zmq.SUBSCRIBE if data[0] == 1 else zmq.UNSUBSCRIBE
                self._socket.setsockopt(option, data[1:])

    def _misbehaving(self, peer: str, reason: str) -> None:
        log.warning("publisher: peer %.16s... %s", peer, reason)
        if self._on_misbehaving is not None:
            try:
                self._on_misbehaving(peer, reason)
            except Exception:
                log.exception("could not act on the peer %.16s...", peer)

    def send(
        self,
        topic: str,
        payload: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray] | None = None,
        *,
        frame: int = -1,
        capture_unix_s: float | None = None,
    ) -> int:
        """Encode and send one message without blocking; returns its sequence number."""
        with self._lock:
            if self._closed:
                raise StateError("publisher is closed", "create a new one")
            self._apply_subscriptions()
            seq = self._seq.get(topic, 0)
            self._seq[topic] = seq + 1
            msg = make_message(
                topic,
                payload,
                arrays,
                seq=seq,
                frame=frame,
                capture_unix_s=capture_unix_s,
                sender=self.sender,
            )
            parts = encode(msg, self._packer)
            # XPUB never blocks: at the high-water mark the message is dropped per subscriber.
            # Small messages are copied into libzmq (cheaper than tracking zero-copy frames).
            size = sum(len(p) for p in parts)
            copy = size < ZERO_COPY_BYTES
            # Part by part as send_multipart does, with the flags as plain ints: its
            # ``SNDMORE | flags`` is an enum operation per part (about 2.5 us each).
            for part in parts[:-1]:
                self._socket.send(part, self._more_flags, copy=copy)
            self._socket.send(parts[-1], self._last_flags, copy=copy)
            self.sent[topic] = self.sent.get(topic, 0) + 1
            self.bytes_sent += size
            return seq

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._socket.close(0)


def _zmq() -> Any:
    import zmq

    return zmq


def _peer_of(frame: Any) -> str:
    """Who sent ``frame``: its ZAP user id (the CURVE key), else its address; "" if neither."""
    for prop in ("User-Id", "Peer-Address"):
        try:
            value = frame.get(prop)
        except Exception:  # no metadata, or not this property
            continue
        if value:
            return str(value)
    return ""


class VideoPreview:
    """Rate-limited JPEG preview on the ``video`` topic, encoded off the pipeline thread.

    ``offer(frame_bgr, ...)`` only stores the newest frame (latest wins); a
    worker thread encodes and publishes at most ``max_fps`` per second.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        max_fps: float = 10.0,
        max_width: int = 640,
        jpeg_quality: int = 70,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_fps <= 0 or max_width < 16 or not 1 <= jpeg_quality <= 100:
            raise TransportError(
                "video preview needs max_fps > 0, max_width >= 16, jpeg_quality 1..100",
                "fix transport.video_* in the configuration",
            )
        self._pub = publisher
        self._interval = 1.0 / max_fps
        self._max_width = max_width
        self._quality = jpeg_quality
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: tuple[np.ndarray, int, float] | None = None
        self._last_sent = -1e9
        self._stop = False
        self.sent = 0
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name="video-preview", daemon=True)
        self._thread.start()

    def offer(self, frame_bgr: np.ndarray, frame_number: int, capture_unix_s: float) -> None:
        now = self._clock()
        with self._cond:
            if now - self._last_sent < self._interval:
                self.skipped += 1
                return
            if self._pending is not None:
                self.skipped += 1
            self._last_sent = now
            self._pending = (frame_bgr, frame_number, capture_unix_s)
            self._cond.notify()

    def _run(self) -> None:
        import cv2

        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                assert self._pending is not None
                image, number, capture = self._pending
                self._pending = None
            try:
                h, w = image.shape[:2]
                if w > self._max_width:
                    scale = self._max_width / w
                    image = cv2.resize(
                        image, (self._max_width, round(h * scale)), interpolation=cv2.INTER_AREA
                    )
                    h, w = image.shape[:2]
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
                if not ok:
                    raise RuntimeError("cv2.imencode failed")
                self._pub.send(
                    TOPIC_VIDEO,
                    {"encoding": "jpeg", "width": int(w), "height": int(h)},
                    {"jpeg": jpeg.reshape(-1)},
                    frame=number,
                    capture_unix_s=capture,
                )
                self.sent += 1
            except StateError:
                return
            except Exception:  # the preview must never take the edge down
                log.exception("video preview failed on frame %d", number)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=2.0)
