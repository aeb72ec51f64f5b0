"""The transport's watch thread: socket-monitor events, and a periodic task.

ZeroMQ's socket monitor reports, for a bound socket in libzmq 4.3.5 (measured):
``ACCEPTED`` and ``DISCONNECTED`` with the connection's file descriptor as value,
``HANDSHAKE_SUCCEEDED`` with value 0, and as endpoint always the *bound* endpoint,
never the peer's. The ZAP handshake gives the peer's IP address (no port) and key,
but no descriptor. So :class:`PeerTable` knows each connection by its descriptor,
takes the peer's ``ip:port`` from the descriptor when accepted, pairs each handshake
result with the oldest connection still waiting for one on that socket (exact when
handshakes on one socket do not overlap), and names the headset when exactly one
enrolled headset has been accepted from that IP address (else the name is "").
Everything it holds is bounded.

:class:`TransportWatch` is one thread that reads the monitors and, every
``interval_s``, runs a task (the server's enrolment check); both feed callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as pysocket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.transport.security import Handshake

log = logging.getLogger(__name__)

MAX_PEERS = 256  # connections tracked per table; the oldest is forgotten beyond it
MAX_ADDRESSES = 256  # IP addresses whose accepted headset names are remembered
WATCH_POLL_MS = 50  # how long the thread waits for a monitor event at a time
SOCKET_CLOSED = "the edge closed its socket (rebind after a key was withdrawn)"


@dataclass(frozen=True)
class Disconnection:
    """An authenticated connection that ended."""

    socket: str  # which of the edge's sockets: "overlay" (publisher) or "service"
    address: str  # the peer's ip:port when accepted; "" when it could not be read
    name: str  # the enrolled headset accepted from that IP; "" when unknown or several
    connected_s: float  # how long the connection lasted
    reason: str = "connection ended"  # or SOCKET_CLOSED: the edge closed its socket


@dataclass
class _Peer:
    address: str
    ip: str
    since: float
    authenticated: bool = False


def peer_address(fd: int) -> tuple[str, str]:
    """(``ip:port``, ip) of the connected socket ``fd``; ("", "") when it cannot be read.

    Reads a duplicate of the descriptor, so libzmq's own stays untouched.
    """
    try:
        dup = os.dup(fd)
    except OSError:
        return "", ""
    try:
        with pysocket.socket(fileno=dup) as sock:
            name = sock.getpeername()
    except OSError:
        return "", ""
    if isinstance(name, tuple) and len(name) >= 2:
        ip = str(name[0])
        return (f"[{ip}]:{name[1]}" if ":" in ip else f"{ip}:{name[1]}"), ip
    return str(name), ""


class PeerTable:
    """Live connections per socket, from monitor events and ZAP handshakes; thread-safe."""

    def __init__(
        self,
        max_peers: int = MAX_PEERS,
        address_of: Callable[[int], tuple[str, str]] = peer_address,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._peers: OrderedDict[tuple[str, int], _Peer] = OrderedDict()
        self._waiting: dict[str, deque[int]] = {}
        self._names: OrderedDict[str, set[str]] = OrderedDict()
        self._max = max_peers
        self._address_of = address_of
        self._clock = clock

    def handshake(self, shake: Handshake) -> None:
        """Remember which headset was accepted from which IP address (ZAP's thread)."""
        if not shake.accepted or not shake.name:
            return
        with self._lock:
            names = self._names.pop(shake.address, set())
            if len(names) < MAX_PEERS:
                names.add(shake.name)
            self._names[shake.address] = names
            while len(self._names) > MAX_ADDRESSES:
                self._names.popitem(last=False)

    def event(self, socket: str, event: int, value: int) -> Disconnection | None:
        """Take one monitor event of ``socket`` (a name, or ``name#generation``); the
        disconnection it reports, if any."""
        import zmq

        with self._lock:
            waiting = self._waiting.setdefault(socket, deque(maxlen=self._max))
            if event == zmq.EVENT_ACCEPTED:
                address, ip = self._address_of(value)
                self._peers[(socket, value)] = _Peer(address, ip, self._clock())
                waiting.append(value)
                while len(self._peers) > self._max:
                    self._peers.popitem(last=False)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                peer = self._next_waiting(socket, waiting)
                if peer is not None:
                    peer.authenticated = True
            elif event & (
                zmq.EVENT_HANDSHAKE_FAILED_AUTH
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            ):
                self._next_waiting(socket, waiting)  # refused: ZAP's report covers it
            elif event == zmq.EVENT_DISCONNECTED:
                with contextlib.suppress(ValueError):
                    waiting.remove(value)
                peer = self._peers.pop((socket, value), None)
                if peer is not None and peer.authenticated:
                    return self._gone(socket, peer)
            return None

    def socket_closed(self, socket: str) -> list[Disconnection]:
        """Every authenticated connection of ``socket``, ended by closing it (libzmq
        reports no DISCONNECTED for connections its own socket closes)."""
        with self._lock:
            self._waiting.pop(socket, None)
            ours = [k for k in self._peers if k[0] == socket]
            peers = [self._peers.pop(k) for k in ours]
            return [self._gone(socket, p, SOCKET_CLOSED) for p in peers if p.authenticated]

    def _gone(self, socket: str, peer: _Peer, reason: str = "connection ended") -> Disconnection:
        names = self._names.get(peer.ip, set())
        return Disconnection(
            socket.split("#", 1)[0],
            peer.address,
            next(iter(names)) if len(names) == 1 else "",
            round(self._clock() - peer.since, 3),
            reason,
        )

    def _next_waiting(self, socket: str, waiting: deque[int]) -> _Peer | None:
        while waiting:
            peer = self._peers.get((socket, waiting.popleft()))
            if peer is not None:
                return peer
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._peers)


class TransportWatch:
    """One thread: reads socket monitors, and runs ``task`` every ``interval_s``.

    Lifecycle: created -> ``start()`` -> ``close()``. ``attach(name, monitor)`` hands
    over a monitor PAIR socket (from any thread); the watch closes it when its socket
    is closed (``MONITOR_STOPPED``) or at ``close()``. ``on_disconnect`` hears every
    authenticated connection that ends. An exception from ``task`` or a callback is
    logged, never raised.
    """

    def __init__(
        self,
        task: Callable[[], None],
        on_disconnect: Callable[[Disconnection], None] | None = None,
        *,
        interval_s: float = 0.5,
        peers: PeerTable | None = None,
    ) -> None:
        self.peers = peers if peers is not None else PeerTable()
        self._task = task
        self._on_disconnect = on_disconnect
        self._interval_s = interval_s
        self._handover: deque[tuple[str, Any]] = deque()
        self._monitors: dict[Any, str] = {}  # monitor -> channel: "<socket name>#<n>"
        self._attached = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="transport-watch", daemon=True)

    def start(self) -> TransportWatch:
        self._thread.start()
        return self

    def attach(self, name: str, monitor: Any) -> None:
        if monitor is not None:
            self._attached += 1  # each socket generation its own channel in the table
            self._handover.append((f"{name}#{self._attached}", monitor))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        while self._handover:  # never taken by the thread
            self._handover.popleft()[1].close(0)

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        next_task = time.monotonic() + self._interval_s
        try:
            while not self._stop.is_set():
                while self._handover:
                    name, monitor = self._handover.popleft()
                    self._monitors[monitor] = name
                    poller.register(monitor, zmq.POLLIN)
                ready = dict(poller.poll(WATCH_POLL_MS)) if self._monitors else {}
                if not self._monitors:
                    self._stop.wait(WATCH_POLL_MS / 1000)
                for monitor in ready:
                    self._read(poller, monitor)
                if time.monotonic() >= next_task:
                    next_task = time.monotonic() + self._interval_s
                    self._guarded(self._task)
        finally:
            for monitor in self._monitors:
                monitor.close(0)
            self._monitors.clear()

    def _read(self, poller: Any, monitor: Any) -> None:
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        name = self._monitors[monitor]
        for _ in range(MAX_PEERS):  # bounded per wake-up; the rest waits for the next
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                poller.unregister(monitor)
                del self._monitors[monitor]
                monitor.close(0)
                for closed in self.peers.socket_closed(name):
                    self._report(closed)
                return
            gone = self.peers.event(name, int(event["event"]), int(event["value"]))
            if gone is not None:
                self._report(gone)

    def _report(self, gone: Disconnection) -> None:
        log.info(
            "headset %s disconnected from the %s socket (%s, after %.1f s): %s",
            gone.name or "(name unknown)",
            gone.socket,
            gone.address or "address unknown",
            gone.connected_s,
            gone.reason,
        )
        if self._on_disconnect is not None:
            on_disconnect = self._on_disconnect
            self._guarded(lambda: on_disconnect(gone))

    @staticmethod
    def _guarded(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:
            log.exception("transport watch: a task failed")
