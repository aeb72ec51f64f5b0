"""The PUB side: latest-wins streaming of overlay, hud, status and video.

A small send high-water mark and small kernel socket buffers bound what can
queue for a slow headset: once they are full, ZeroMQ drops new messages for
that subscriber instead of building a backlog, and the client drains to the
newest (see edge.transport.client). Sequence numbers per topic let clients
count what was dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge.errors import StateError, TransportError
from edge.transport.protocol import TOPIC_VIDEO, encode, make_message
from edge.transport.security import ServerSecurity

log = logging.getLogger(__name__)

# ZMQ_MAXMSGSIZE of the PUB. Its only inbound frames are the handshake (CURVE's INITIATE
# measured 276 bytes with libzmq 4.3.5's metadata; a client's routing id may add 255) and
# subscriptions (1 byte + a topic of at most 32 bytes + 33 bytes of CURVE box). A larger
# frame closes that peer's connection before libzmq stores it: a 30 MiB subscription once
# grew the edge by 3.4 GB and froze the send for seconds. libzmq has no per-peer cap on
# the number of subscriptions.
SUBSCRIPTION_FRAME_LIMIT = 1024
HEARTBEAT_IVL_MS = 1000  # ZMTP heartbeats: a vanished headset is dropped within seconds
HEARTBEAT_TIMEOUT_MS = 3000


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


class Publisher:
    """One bound PUB socket; thread-safe ``send`` (pipeline, status timer, video worker).

    Lifecycle: created bound (open) -> ``close()``; sending after close
    raises StateError.
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
    ) -> None:
        import zmq

        if send_hwm < 1:
            raise TransportError(f"send_hwm must be at least 1, got {send_hwm}", "fix the config")
        self.sender = sender
        self._socket = context.socket(zmq.PUB)
        try:
            tune_socket(self._socket, send_hwm, buffer_bytes)
            self._socket.setsockopt(zmq.MAXMSGSIZE, SUBSCRIPTION_FRAME_LIMIT)
            security.apply(self._socket, endpoint)
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._socket.close(0)
            raise TransportError(
                f"cannot bind the publisher to {endpoint}: {exc}",
                "choose a free port (transport.publish_endpoint or --publish)",
            ) from None
        except BaseException:
            self._socket.close(0)
            raise
        self.endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.bytes_sent = 0
        self._closed = False

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
        import zmq

        with self._lock:
            if self._closed:
                raise StateError("publisher is closed", "create a new one")
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
            parts = encode(msg)
            # PUB never blocks: at the high-water mark the message is dropped per subscriber.
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            self.sent[topic] = self.sent.get(topic, 0) + 1
            self.bytes_sent += sum(len(p) for p in parts)
            return seq

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._socket.close(0)


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
