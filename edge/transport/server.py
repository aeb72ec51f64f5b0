"""The edge's sockets: publisher, plan/command service, ZAP authenticator and their watch.

The publish *stage* that streams each frame through the publisher is built by
the composition root (:mod:`edge.app`) with :meth:`PublishStage.from_config`.

While the server runs, its watch thread (:class:`edge.transport.watch.TransportWatch`)
looks at the enrolled folder every :data:`ENROLMENT_POLL_S` seconds. A key added is
admitted at its next handshake. A key withdrawn (its file removed, changed or no longer
usable, or the key cut off by the publisher for flooding it) leaves the enrolment that
ZAP and the command service read, and both sockets are rebound on the same endpoints:
libzmq cannot end one peer's session on a bound socket, so every connection ends, the
withdrawn key's too; the enrolled headsets reconnect on their own (ZeroMQ's reconnect)
and pass ZAP again, the withdrawn one is refused.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import TransportConfig
from edge.plan.model import Plan
from edge.transport.enrolment import FolderWatch
from edge.transport.publisher import Publisher
from edge.transport.security import (
    EnrolmentChange,
    Handshake,
    ServerSecurity,
    start_authenticator,
)
from edge.transport.service import CommandQueue, PlanService
from edge.transport.watch import Disconnection, PeerTable, TransportWatch

log = logging.getLogger(__name__)

ENROLMENT_POLL_S = 0.5  # how often the enrolled folder is looked at
MAX_PENDING_CUTOFFS = 64  # peers the publisher asked to cut off, not yet acted on


class EdgeServer:
    """Publisher + plan/command service + ZAP authenticator + the watch thread.

    Use as a context manager, or call ``close()``; ``commands`` is the queue of
    validated headset commands to poll. ``on_handshake`` hears every CURVE
    handshake decided (accepted or refused), on the authenticator's thread;
    ``on_enrolment`` every change to the enrolment (keys added, keys withdrawn with
    the reason) and ``on_disconnect`` every authenticated connection that ended,
    both on the watch thread.
    """

    def __init__(
        self,
        config: TransportConfig,
        plan: Plan | None,
        *,
        keys_dir: str | Path | None = None,
        publish_endpoint: str | None = None,
        on_handshake: Callable[[Handshake], None] | None = None,
        on_enrolment: Callable[[EnrolmentChange], None] | None = None,
        on_disconnect: Callable[[Disconnection], None] | None = None,
    ) -> None:
        import zmq

        self.config = config
        endpoint = publish_endpoint or config.publish_endpoint
        if config.security == "curve":
            security = ServerSecurity.from_keys_dir(keys_dir or config.keys_dir)
        else:
            security = ServerSecurity.plaintext()
        self.security = security
        self._on_handshake = on_handshake
        self._on_enrolment = on_enrolment
        self._cutoffs: deque[tuple[bytes, str]] = deque(maxlen=MAX_PENDING_CUTOFFS)
        self._folder = (
            FolderWatch(security.enrolled_dir, security.enrolled)
            if security.mode == "curve" and security.enrolled_dir is not None
            else None
        )
        self.peers = PeerTable()
        self.watch = TransportWatch(
            self._check_enrolment, on_disconnect, interval_s=ENROLMENT_POLL_S, peers=self.peers
        )
        self.context: Any = zmq.Context()
        self.auth: Any = None
        self.publisher: Publisher | None = None
        self.service: PlanService | None = None
        self.rebinds = 0
        try:
            self.auth = start_authenticator(self.context, security, self._handshake)
            self.publisher = Publisher(
                self.context,
                endpoint,
                security,
                send_hwm=config.send_hwm,
                buffer_bytes=config.socket_buffer_bytes,
                sender=config.sender,
                on_misbehaving=self._cut_off,
                monitored=True,
            )
            self.watch.attach("overlay", self.publisher.monitor)
            self.commands = CommandQueue()
            self.service = PlanService(
                self.context,
                config.service_endpoint,
                security,
                plan,
                self.commands,
                sender=config.sender,
                max_message_bytes=config.max_message_bytes,
                monitored=True,
            )
            self.watch.attach("service", self.service.monitor)
            self.service.start()
            self.watch.start()
        except BaseException:
            self.close()
            raise
        log.info(
            "streaming on %s (%s), plan service on %s",
            self.publisher.endpoint,
            security.mode,
            self.service.endpoint,
        )

    def __enter__(self) -> EdgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ enrolment

    def _handshake(self, shake: Handshake) -> None:
        self.peers.handshake(shake)
        if self._on_handshake is not None:
            self._on_handshake(shake)

    def _cut_off(self, peer: str, reason: str) -> None:
        """The publisher's report of a misbehaving peer (send lock held: only record it)."""
        key = peer.encode() if self.security.mode == "curve" else b""
        if key and not self.security.enrolled.suspend(key, reason):
            return  # already out
        self._cutoffs.append((key, reason))

    def _check_enrolment(self) -> None:
        """The watch thread's task: apply enrolment changes and cut-offs, then report."""
        change = self._folder.check() if self._folder is not None else EnrolmentChange()
        removed = dict(change.removed)
        rebind = bool(removed)
        while self._cutoffs:
            key, reason = self._cutoffs.popleft()
            rebind = True
            if key:
                name = self.security.enrolled.name(key)
                removed[key] = (name, f"cut off for the rest of the run: {reason}")
                log.error("headset %s cut off for the rest of the run: %s", name, reason)
        try:
            if rebind:
                self._rebind()
        finally:  # audited even when the rebind failed (the service then stops serving)
            change = EnrolmentChange(change.added, removed)
            if change and self._on_enrolment is not None:
                self._on_enrolment(change)

    def _rebind(self) -> None:
        """End every connection (a withdrawn key's session with them): rebind both sockets."""
        assert self.publisher is not None and self.service is not None
        started = time.monotonic()
        self.watch.attach("overlay", self.publisher.rebind())
        self.watch.attach("service", self.service.rebind())
        self.rebinds += 1
        log.info(
            "sockets rebound in %.0f ms: every session ended, enrolled headsets reconnect",
            (time.monotonic() - started) * 1e3,
        )

    def close(self) -> None:
        self.watch.close()  # closes the monitors: before their sockets and the context
        if self.service is not None:
            self.service.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.context.term()
