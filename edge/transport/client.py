"""Client library for headsets written in Python (and the reference for other languages).

:class:`Subscriber` receives the streamed topics latest-wins: each ``poll``
drains everything waiting and keeps only the newest message per topic, so a
slow reader never works through a backlog. It checks every message with the
strict decoder (schema version included) and counts what it rejected and
what was dropped upstream (gaps in the per-topic sequence numbers).

:class:`ServiceClient` talks to the edge's plan/command service over a DEALER
socket: plan assets by content hash, and commands.

:meth:`Received.predicted_pose` extrapolates a current overlay's pose to the
headset's display time with the velocity it carries (docs/protocol.md,
"Pose prediction").
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.errors import DecodeError, TransportError
from edge.transport.prediction import PoseVelocity, predict_points, predict_pose
from edge.transport.protocol import (
    PUBLISHED_TOPICS,
    REPLY,
    REQ_ASSET_GET,
    REQ_ASSET_LIST,
    REQ_COMMAND,
    TOPIC_OVERLAY,
    Limits,
    Message,
    decode,
    encode,
    make_message,
)
from edge.transport.publisher import tune_socket
from edge.transport.security import ClientSecurity

log = logging.getLogger(__name__)

# The longest a pose is extrapolated (s): an overlay older than the staleness limit (the
# reference's 100 ms) is hidden, not predicted further.
MAX_PREDICTION_S = 0.1


@dataclass
class Received:
    """A message with the time this client received it (Unix seconds, local clock)."""

    message: Message
    received_unix_s: float

    def age_s(self, now_unix_s: float | None = None) -> float:
        """Seconds since the frame was captured (needs clocks in sync across machines)."""
        now = time.time() if now_unix_s is None else now_unix_s
        return now - self.message.header.capture_unix_s

    def edge_time_s(self, local_unix_s: float | None = None, clocks_synced: bool = True) -> float:
        """A time of this client's clock (default: now) on the edge's clock.

        With clocks in sync (PTP/NTP) they are the same. Without, the time is
        counted from the message's ``publish_unix_s`` by the local time since
        it was received (the network's own delay, on a LAN well under a
        millisecond, is then left out).
        """
        local = time.time() if local_unix_s is None else local_unix_s
        if clocks_synced:
            return local
        return self.message.header.publish_unix_s + (local - self.received_unix_s)

    def prediction_horizon_s(
        self,
        display_unix_s: float | None = None,
        clocks_synced: bool = True,
        max_horizon_s: float = MAX_PREDICTION_S,
    ) -> float:
        """Seconds from the frame's capture to ``display_unix_s`` (this client's clock,
        default now), in [0, ``max_horizon_s``]."""
        at = self.edge_time_s(display_unix_s, clocks_synced)
        return min(max(0.0, at - self.message.header.capture_unix_s), max_horizon_s)

    def velocity(self) -> PoseVelocity | None:
        """The pose's velocity at capture; None unless the overlay is current and has one."""
        if self.message.topic != TOPIC_OVERLAY or not self.message.payload.get("current"):
            return None
        return PoseVelocity.from_arrays(self.message.arrays)

    def predicted_pose(
        self,
        display_unix_s: float | None = None,
        clocks_synced: bool = True,
        max_horizon_s: float = MAX_PREDICTION_S,
    ) -> np.ndarray | None:
        """The overlay's ``patient_to_camera`` at ``display_unix_s`` (this client's clock,
        default now): extrapolated with its velocity when it is current and has one, as
        sent otherwise; None when the overlay has no pose."""
        pose = self.message.arrays.get("patient_to_camera")
        if pose is None:
            return None
        velocity = self.velocity()
        if velocity is None:
            return np.array(pose, dtype=np.float64)
        dt = self.prediction_horizon_s(display_unix_s, clocks_synced, max_horizon_s)
        return predict_pose(pose, velocity, dt)

    def predicted_targets_camera_m(
        self,
        display_unix_s: float | None = None,
        clocks_synced: bool = True,
        max_horizon_s: float = MAX_PREDICTION_S,
    ) -> np.ndarray:
        """The overlay's targets (camera frame, metres) at ``display_unix_s``, as
        :meth:`predicted_pose` moves them; (0, 3) when the overlay has none."""
        targets = self.message.arrays.get("targets_camera_m")
        if targets is None:
            return np.zeros((0, 3))
        velocity = self.velocity()
        if velocity is None:
            return np.array(targets, dtype=np.float64)
        dt = self.prediction_horizon_s(display_unix_s, clocks_synced, max_horizon_s)
        return predict_points(targets, velocity, dt)


@dataclass
class SubscriberStats:
    received: int = 0
    superseded: int = 0  # drained and replaced by a newer message of the same topic
    dropped_upstream: int = 0  # sequence gaps: dropped at a high-water mark on the way
    rejected: int = 0  # failed the decoder (malformed, wrong schema version, too large)
    last_error: str = ""
    per_topic: dict[str, int] = field(default_factory=dict)


class Subscriber:
    """SUB socket with latest-wins receive. Lifecycle: created connected -> ``close()``."""

    def __init__(
        self,
        endpoint: str,
        security: ClientSecurity,
        topics: tuple[str, ...] = PUBLISHED_TOPICS,
        *,
        context: Any = None,
        rcv_hwm: int = 4,
        buffer_bytes: int = 8192,
        limits: Limits | None = None,
    ) -> None:
        import zmq

        self._zmq = zmq
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        try:
            tune_socket(self._socket, rcv_hwm, buffer_bytes)
            # libzmq sends a SUB's subscriptions through its outgoing pipe when it connects
            # and drops those beyond the send HWM: room for every topic (five since `tools`).
            self._socket.setsockopt(zmq.SNDHWM, max(rcv_hwm, len(topics) + 1))
            security.apply(self._socket, endpoint)
            for t in topics:
                self._socket.setsockopt(zmq.SUBSCRIBE, t.encode("ascii"))
            self._socket.connect(endpoint)
        except BaseException:
            self.close()
            raise
        self.endpoint = endpoint
        self.limits = limits or Limits()
        self.stats = SubscriberStats()
        self._latest: dict[str, Received] = {}
        self._last_seq: dict[tuple[str, str], int] = {}
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)

    def poll(self, timeout_ms: int = 0) -> int:
        """Wait up to ``timeout_ms`` for a message, then drain all waiting; returns how many."""
        zmq = self._zmq
        count = 0
        if not self._poller.poll(timeout_ms):
            return 0
        while True:
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            count += 1
            self._accept(frames)
        return count

    def _accept(self, frames: list[bytes]) -> None:
        now = time.time()
        try:
            msg = decode(frames, self.limits)
        except DecodeError as exc:
            self.stats.rejected += 1
            if self.stats.last_error != str(exc):  # log each distinct problem once
                log.warning("rejected a message from %s: %s", self.endpoint, exc)
            self.stats.last_error = str(exc)
            return
        h = msg.header
        key = (h.sender, h.topic)
        last = self._last_seq.get(key)
        if last is not None and h.seq > last + 1:
            self.stats.dropped_upstream += h.seq - last - 1
        self._last_seq[key] = h.seq
        if h.topic in self._latest:
            self.stats.superseded += 1
        self._latest[h.topic] = Received(msg, now)
        self.stats.received += 1
        self.stats.per_topic[h.topic] = self.stats.per_topic.get(h.topic, 0) + 1

    def latest(self, topic: str) -> Received | None:
        """The newest message of ``topic`` received so far, or None."""
        return self._latest.get(topic)

    def take(self, topic: str) -> Received | None:
        """The newest message of ``topic`` not taken before (consumes it)."""
        return self._latest.pop(topic, None)

    def close(self) -> None:
        if getattr(self, "_socket", None) is not None:
            self._socket.close(0)
            self._socket = None
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None


class ServiceClient:
    """DEALER client of the plan/command service; each call waits for its own reply."""

    def __init__(
        self,
        endpoint: str,
        security: ClientSecurity,
        *,
        context: Any = None,
        timeout_s: float = 2.0,
        sender: str = "headset",
    ) -> None:
        import zmq

        self._zmq = zmq
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        # A DEALER with no connection blocks on send: after a refused handshake (a key
        # not enrolled, or revoked) libzmq drops the connection and does not retry.
        self._socket.setsockopt(zmq.SNDTIMEO, max(1, int(timeout_s * 1000)))
        try:
            security.apply(self._socket, endpoint)
            self._socket.connect(endpoint)
        except BaseException:
            self.close()
            raise
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.sender = sender
        self._ids = itertools.count(1)
        self.limits = Limits(max_message_bytes=256 * 1024 * 1024, max_payload_bytes=1024 * 1024)

    def request(self, topic: str, payload: dict[str, Any]) -> Message:
        """Send one request and return its reply; raises TransportError on timeout."""
        zmq = self._zmq
        rid = next(self._ids)
        msg = make_message(topic, {**payload, "request_id": rid}, sender=self.sender)
        try:
            self._socket.send_multipart(encode(msg))
        except zmq.Again:
            raise TransportError(
                f"cannot send to {self.endpoint}: not connected within {self.timeout_s} s",
                "check the endpoint, that the edge runs, and that this headset's key is "
                "enrolled (a refused headset must connect again)",
            ) from None
        deadline = time.monotonic() + self.timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self._socket.poll(left_ms, zmq.POLLIN):
                raise TransportError(
                    f"no reply from {self.endpoint} within {self.timeout_s} s",
                    "check the endpoint, that the edge runs, and that this headset's key is "
                    "enrolled",
                )
            reply = decode(self._socket.recv_multipart(), self.limits)
            if reply.topic == REPLY and reply.payload.get("request_id") == rid:
                return reply  # replies to earlier, timed-out requests are skipped

    def _ok(self, reply: Message) -> Message:
        if not reply.payload["ok"]:
            raise TransportError(
                f"edge refused the request: {reply.payload.get('error')}: "
                f"{reply.payload.get('message')}"
            )
        return reply

    def list_assets(self) -> list[dict[str, Any]]:
        return list(self._ok(self.request(REQ_ASSET_LIST, {})).payload["assets"])

    def get_asset(self, asset_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(vertices (N, 3) metres in the plan frame, faces (M, 3)) of one mesh."""
        reply = self._ok(self.request(REQ_ASSET_GET, {"id": asset_id}))
        return reply.arrays["vertices"], reply.arrays["faces"]

    def fetch_all_assets(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every plan mesh by asset id (what a late-joining headset does first)."""
        return {a["id"]: self.get_asset(a["id"]) for a in self.list_assets()}

    def command(self, name: str, **args: Any) -> dict[str, Any]:
        """Send a command; returns the reply payload, raises TransportError when refused."""
        return dict(self._ok(self.request(REQ_COMMAND, {"command": name, "args": args})).payload)

    def close(self) -> None:
        if getattr(self, "_socket", None) is not None:
            self._socket.close(0)
            self._socket = None
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None
