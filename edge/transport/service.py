"""The ROUTER service: what must arrive (plan assets) and what a headset asks (commands).

Each request is one protocol message from a DEALER (or REQ) socket; each gets
exactly one reply on topic ``reply`` with ``ok`` true or false. A malformed
request gets an explicit error reply naming the problem; every refusal is
logged with the peer (its CURVE public key when secured, else its address).
Valid commands go into a thread-safe :class:`CommandQueue` that the pipeline
polls.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.errors import DecodeError, StateError, TransportError
from edge.overlay.content import LAYERS, mesh_asset_id
from edge.plan.model import Mesh, Plan
from edge.transport.protocol import (
    REPLY,
    REQ_ASSET_GET,
    REQ_ASSET_LIST,
    REQ_COMMAND,
    Limits,
    decode,
    encode,
    make_message,
)
from edge.transport.publisher import BIND_RETRY_S, open_bound_socket
from edge.transport.security import ServerSecurity

log = logging.getLogger(__name__)

REQUEST_LIMITS = Limits(max_message_bytes=64 * 1024, max_payload_bytes=16 * 1024, max_parts=3)

# command name -> argument name -> (type, allowed values or None)
COMMANDS: dict[str, dict[str, tuple[type, tuple[Any, ...] | None]]] = {
    "reregister": {},
    "toggle_layer": {"layer": (str, LAYERS), "visible": (bool, None)},
    "ack_warning": {"warning": (str, None)},
}


@dataclass(frozen=True)
class Asset:
    """A plan mesh as sent to headsets: vertices in metres in the plan (patient) frame."""

    id: str
    name: str
    vertices: np.ndarray
    faces: np.ndarray
    color_rgb: tuple[int, int, int] | None = None


def plan_assets(plan: Plan) -> dict[str, Asset]:
    """The plan's meshes (skin and structures), keyed by asset id."""
    assets = {mesh_asset_id(plan.skin): Asset(mesh_asset_id(plan.skin), "skin", *_mesh(plan.skin))}
    for s in plan.structures:
        aid = mesh_asset_id(s.mesh)
        assets[aid] = Asset(aid, s.name, *_mesh(s.mesh), color_rgb=s.color_rgb)
    return assets


def _mesh(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(mesh.vertices, dtype="<f4"),
        np.ascontiguousarray(mesh.faces, dtype="<u4"),
    )


@dataclass(frozen=True)
class Command:
    """A validated command from a headset."""

    name: str
    args: dict[str, Any]
    peer: str
    request_id: int | str | None = None
    received_unix_s: float = field(default_factory=time.time)


class CommandQueue:
    """Bounded, thread-safe hand-over of commands from the service to the pipeline."""

    def __init__(self, maxsize: int = 64) -> None:
        self._q: queue.Queue[Command] = queue.Queue(maxsize=maxsize)

    def put(self, command: Command) -> bool:
        """False when the queue is full (the caller answers "busy")."""
        try:
            self._q.put_nowait(command)
            return True
        except queue.Full:
            return False

    def poll(self, max_items: int = 64) -> list[Command]:
        """All waiting commands (up to ``max_items``), oldest first; never blocks."""
        out: list[Command] = []
        while len(out) < max_items:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                break
        return out

    def get(self, timeout_s: float) -> Command | None:
        try:
            return self._q.get(timeout=timeout_s)
        except queue.Empty:
            return None


def validate_command(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, args) of a command payload; raises DecodeError saying what is wrong."""
    name = payload["command"]
    spec = COMMANDS.get(name)
    if spec is None:
        raise DecodeError(f"unknown command {name!r:.40}; known: {', '.join(sorted(COMMANDS))}")
    args = payload["args"]
    extra = set(args) - set(spec)
    if extra:
        raise DecodeError(f"command {name} takes no argument(s) {sorted(map(str, extra))!s:.80}")
    for key, (tp, allowed) in spec.items():
        if key not in args:
            raise DecodeError(f"command {name} needs argument '{key}'")
        v = args[key]
        if not isinstance(v, tp) or (tp is not bool and isinstance(v, bool)):
            raise DecodeError(f"command {name} argument '{key}' must be {tp.__name__}")
        if allowed is not None and v not in allowed:
            raise DecodeError(
                f"command {name} argument '{key}' must be one of {', '.join(map(str, allowed))}"
            )
        if isinstance(v, str) and len(v) > 200:
            raise DecodeError(f"command {name} argument '{key}' is longer than 200 characters")
    return name, dict(args)


class PlanService:
    """ROUTER socket served by its own thread. Lifecycle: start() -> close().

    ``rebind()`` replaces the socket on the same endpoint (from the service's own
    thread, which alone uses the socket): every connection ends, so a withdrawn key
    loses its session; enrolled headsets reconnect. With ``monitored``, ``monitor`` is
    the current socket's monitor, a PAIR socket the caller owns and closes.

    ``max_message_bytes`` (``transport.max_message_bytes``) is the largest frame a
    peer may send (ZMQ_MAXMSGSIZE): a larger one closes its connection unread; a
    request between the protocol's 64 KiB and this limit gets an explicit error reply.
    """

    def __init__(
        self,
        context: Any,
        endpoint: str,
        security: ServerSecurity,
        plan: Plan | None,
        commands: CommandQueue,
        *,
        sender: str = "edge",
        max_message_bytes: int = 1024 * 1024,
        monitored: bool = False,
    ) -> None:
        import zmq

        self._zmq = zmq
        # No plan (refused at start): no assets, and the asset list says so.
        self.assets = plan_assets(plan) if plan is not None else {}
        self.plan = plan
        self.commands = commands
        self.sender = sender
        self._security = security
        self._context = context
        self._max_message_bytes = max_message_bytes
        self._monitored = monitored
        self._socket, self.monitor = self._open(endpoint)
        self.endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._stop = threading.Event()
        self._rebind_asked = threading.Event()
        self._rebound = threading.Event()
        self._rebind_error: Exception | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0
        self.errors = 0
        self.rebinds = 0

    def _open(self, endpoint: str, retry_until: float = 0.0) -> tuple[Any, Any]:
        """A bound ROUTER and its monitor (None unless monitored); TransportError if not."""
        return open_bound_socket(
            self._context,
            self._zmq.ROUTER,
            endpoint,
            self._security,
            hwm=100,
            buffer_bytes=0,
            max_message_bytes=self._max_message_bytes,
            monitor_name=f"edge.service.{id(self)}" if self._monitored else None,
            retry_until=retry_until,
            what="the plan service",
            fix="choose a free port (transport.service_endpoint)",
        )

    def rebind(self, timeout_s: float = 2 * BIND_RETRY_S) -> Any:
        """Have the service's thread replace its socket; returns the new monitor.

        Raises TransportError when the endpoint could not be bound again (the service
        then stops serving) or the thread did not answer within ``timeout_s``.
        """
        if self._thread is None or not self._thread.is_alive():
            raise StateError("plan service is not running", "start it first")
        self._rebind_error = None
        self._rebound.clear()
        self._rebind_asked.set()
        if not self._rebound.wait(timeout_s):
            raise TransportError(
                f"the plan service did not rebind within {timeout_s:.0f} s", "restart the edge"
            )
        if self._rebind_error is not None:
            raise self._rebind_error
        return self.monitor

    def start(self) -> PlanService:
        if self._thread is not None:
            raise StateError("plan service already started", "start it once")
        self._thread = threading.Thread(target=self._run, name="plan-service", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._socket is not None:
            self._socket.close(0)

    # ------------------------------------------------------------------ serving

    def _rebind_here(self, poller: Any) -> bool:
        """On the service thread: close the socket, bind a new one; False when it failed."""
        poller.unregister(self._socket)
        self._socket.close(0)
        self._socket = None
        try:
            self._socket, self.monitor = self._open(self.endpoint, time.monotonic() + BIND_RETRY_S)
        except TransportError as exc:
            log.error("plan service stopped: %s", exc)
            self._rebind_error = exc
            return False
        finally:
            self._rebind_asked.clear()
            self._rebound.set()
        poller.register(self._socket, self._zmq.POLLIN)
        self.rebinds += 1
        return True

    def _run(self) -> None:
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if self._rebind_asked.is_set() and not self._rebind_here(poller):
                return
            try:
                if not poller.poll(100):
                    continue
                frames = self._socket.recv_multipart(copy=False)
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                log.exception("plan service receive failed")
                continue
            try:
                self._handle(frames)
            except Exception:  # one bad peer must not stop the service
                log.exception("plan service failed on a request")

    def _peer(self, frame: Any) -> tuple[str, bytes | None]:
        """A peer's name for logs, and its CURVE public key when secured."""
        try:
            address = frame.get("Peer-Address")
        except Exception:
            address = "?"
        key: bytes | None = None
        if self._security.mode == "curve":
            try:
                key = frame.get("User-Id").encode()
            except Exception:
                key = None
        return (f"{address} key {key.decode()[:12]}..." if key else str(address)), key

    def _handle(self, frames: list[Any]) -> None:
        self.requests += 1
        if len(frames) < 2:
            return  # an identity with nothing after it: nothing to answer
        envelope = [frames[0].bytes]
        body = frames[1:]
        if body and len(body[0].bytes) == 0:  # REQ sockets put an empty delimiter first
            envelope.append(b"")
            body = body[1:]
        peer, key = self._peer(frames[1])
        request_id: Any = None
        topic = ""
        try:
            if not body:
                raise DecodeError("empty request")
            if len(body) > REQUEST_LIMITS.max_parts:
                raise DecodeError(
                    f"request has {len(body)} frames, over the limit of {REQUEST_LIMITS.max_parts}"
                )
            msg = decode([f.bytes for f in body], REQUEST_LIMITS)
            topic = msg.topic
            rid = msg.payload.get("request_id")
            request_id = rid if isinstance(rid, int | str) and not isinstance(rid, bool) else None
            if topic == REQ_ASSET_LIST:
                self._reply(envelope, topic, request_id, self._asset_list())
            elif topic == REQ_ASSET_GET:
                self._asset_get(envelope, msg.payload["id"], request_id, peer)
            elif topic == REQ_COMMAND:
                self._command(envelope, msg.payload, request_id, peer, key)
            else:
                raise DecodeError(f"topic {topic!r} is not a request")
        except DecodeError as exc:
            self.errors += 1
            log.warning("refused request from %s: %s", peer, exc)
            self._error(envelope, topic, request_id, "malformed", str(exc))

    def _asset_list(self) -> dict[str, Any]:
        return {
            "ok": True,
            "plan": (
                {"case_id": self.plan.case_id, "digest": self.plan.digest}
                if self.plan is not None
                else {}
            ),
            "assets": [
                {
                    "id": a.id,
                    "name": a.name,
                    "vertices": len(a.vertices),
                    "faces": len(a.faces),
                    "color_rgb": list(a.color_rgb) if a.color_rgb else None,
                }
                for a in self.assets.values()
            ],
        }

    def _asset_get(self, envelope: list[bytes], aid: str, request_id: Any, peer: str) -> None:
        asset = self.assets.get(aid)
        if asset is None:
            self.errors += 1
            log.warning("peer %s asked for unknown asset %.70r", peer, aid)
            self._error(envelope, REQ_ASSET_GET, request_id, "unknown_asset", "no such asset id")
            return
        self._reply(
            envelope,
            REQ_ASSET_GET,
            request_id,
            {"ok": True, "id": asset.id, "name": asset.name, "units": "m", "frame": "patient"},
            {"vertices": asset.vertices, "faces": asset.faces},
        )

    def _command(
        self,
        envelope: list[bytes],
        payload: dict[str, Any],
        request_id: Any,
        peer: str,
        key: bytes | None,
    ) -> None:
        if self._security.mode == "curve" and key not in self._security.enrolled:
            # ZAP keeps unenrolled keys out of new connections; this second lock also
            # refuses a key withdrawn while its connection is still open (until the
            # rebind that follows a withdrawal ends that connection).
            self.errors += 1
            log.warning("refused command from unenrolled peer %s", peer)
            self._error(envelope, REQ_COMMAND, request_id, "not_enrolled", "key is not enrolled")
            return
        name, args = validate_command(payload)
        command = Command(name, args, peer, request_id)
        if not self.commands.put(command):
            log.warning("command queue full; refused %s from %s", name, peer)
            self._error(envelope, REQ_COMMAND, request_id, "busy", "command queue is full")
            return
        log.info("command %s %s from %s", name, args, peer)
        self._reply(envelope, REQ_COMMAND, request_id, {"ok": True, "command": name})

    def _error(
        self, envelope: list[bytes], topic: str, request_id: Any, code: str, message: str
    ) -> None:
        self._reply(
            envelope, topic, request_id, {"ok": False, "error": code, "message": message[:500]}
        )

    def _reply(
        self,
        envelope: list[bytes],
        request: str,
        request_id: Any,
        payload: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        payload = {**payload, "request": request, "request_id": request_id}
        parts = encode(make_message(REPLY, payload, arrays, sender=self.sender))
        # A peer that vanished or does not read gets nothing: never block the service.
        with contextlib.suppress(self._zmq.ZMQError):
            self._socket.send_multipart([*envelope, *parts], flags=self._zmq.NOBLOCK)
