"""CurveZMQ keys, endpoint policy and the ZAP authenticator.

Policy: every socket is CURVE-encrypted and authenticated unless it is on the
loopback interface *and* the configuration asks for plaintext. Only headsets
whose public keys are enrolled (``.key`` files in the enrolled folder) pass
the ZAP handshake, so an unenrolled headset neither receives the overlay nor
reaches the command service.

Key folder made by ``edge keys generate --out DIR``::

    DIR/edge.key, DIR/edge.key_secret            the edge's pair (secret 0600)
    DIR/<headset>.key, DIR/<headset>.key_secret  each headset's pair (give to it)
    DIR/enrolled/<headset>.key                   public keys the edge accepts

Files use the ZeroMQ certificate format (``zmq.auth.load_certificate`` reads them).
An enrolled file that is not a public key certificate is logged and skipped: it
can admit nobody, and one bad copy must not keep every other headset from the
overlay. The edge refuses to start only when no enrolled key is usable. While it
runs, the enrolment in force (:class:`EnrolledKeys`) follows the folder
(:mod:`edge.transport.enrolment`, wired by :mod:`edge.transport.server`).

Every CURVE handshake the authenticator decides is reported (``on_handshake``)
as a :class:`Handshake`: accepted or refused, the client's address and key
fingerprint, and the enrolled name; :mod:`edge.app` writes it to the audit log.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import TransportError
from edge.files import write_atomic

log = logging.getLogger(__name__)

EDGE_KEY_NAME = "edge"
ENROLLED_DIR = "enrolled"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_KEY_FILE_BYTES = 64 * 1024  # a certificate is about 300 bytes
_Z85_KEY_CHARS = 40  # a 32-byte CURVE key in Z85
MAX_PORT = 65535


# --------------------------------------------------------------------------- endpoints


def endpoint_host(endpoint: str) -> tuple[str, str]:
    """(transport, host) of a ZeroMQ endpoint; raises TransportError when malformed."""
    m = re.match(r"^(tcp|ipc|inproc)://(.+)$", endpoint)
    if not m:
        raise TransportError(
            f"endpoint {endpoint!r} is not a ZeroMQ endpoint",
            "use tcp://HOST:PORT (or ipc://PATH, inproc://NAME)",
        )
    transport, rest = m.groups()
    if transport != "tcp":
        return transport, rest
    if rest.startswith("["):
        host = rest[1 : rest.find("]")] if "]" in rest else ""
    else:
        host = rest.rsplit(":", 1)[0]
    if ";" in host:  # tcp://source;dest form: the destination is what matters
        host = host.split(";", 1)[1]
    if not host or ":" not in rest:
        raise TransportError(f"endpoint {endpoint!r} has no host:port", "use tcp://HOST:PORT")
    port = rest.rsplit(":", 1)[1]
    if port != "*" and not (port.isdigit() and int(port) <= MAX_PORT):
        raise TransportError(
            f"endpoint {endpoint!r} has port {port!r}: allowed 0..{MAX_PORT} (0 or *: any free)",
            "fix the port",
        )
    return transport, host


def is_loopback(endpoint: str) -> bool:
    """True when traffic on this endpoint cannot leave the machine."""
    transport, host = endpoint_host(endpoint)
    if transport in ("ipc", "inproc"):
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or interface ("*", "eth0"): assume it leaves the machine


def check_plaintext_allowed(endpoint: str, mode: str) -> None:
    """Refuse plaintext on any endpoint that is not loopback."""
    if mode not in ("curve", "plaintext"):
        raise TransportError(f"unknown security mode {mode!r}", "use 'curve' or 'plaintext'")
    if mode == "plaintext" and not is_loopback(endpoint):
        raise TransportError(
            f"plaintext refused on {endpoint}: it is not a loopback endpoint",
            "set transport.security = 'curve' (and enrol headset keys), or bind to 127.0.0.1",
        )


# --------------------------------------------------------------------------- key files


def _cert_text(public: bytes, secret: bytes | None, name: str) -> str:
    kind = "Secret" if secret else "Public"
    lines = [
        f"#   ZeroMQ CURVE {kind} Certificate for '{name}'",
        f"#   generated {datetime.datetime.now(datetime.timezone.utc).isoformat()} by edge",
    ]
    if secret:
        lines.append("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    lines += [
        "",
        "metadata",
        f'    name = "{name}"',
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def generate_keys(
    out_dir: str | Path, headsets: tuple[str, ...] = ("headset",), overwrite: bool = False
) -> list[Path]:
    """Make the edge's key pair and one per headset, enrolling each headset.

    Secret files are created 0600. Existing files are kept unless
    ``overwrite``; raises TransportError naming the first one.
    """
    import zmq

    out = Path(out_dir)
    names = (EDGE_KEY_NAME, *headsets)
    for n in headsets:
        if not _NAME_RE.match(n) or n == EDGE_KEY_NAME:
            raise TransportError(
                f"headset name {n!r} is not allowed",
                "use letters, digits, '.', '_' or '-' (and not 'edge')",
            )
    (out / ENROLLED_DIR).mkdir(parents=True, exist_ok=True)
    if not overwrite:
        for n in names:
            for p in (out / f"{n}.key", out / f"{n}.key_secret"):
                if p.exists():
                    raise TransportError(f"{p} exists", "pass --force to replace the keys")
    written: list[Path] = []
    for n in names:
        public, secret = zmq.curve_keypair()
        write_atomic(out / f"{n}.key_secret", _cert_text(public, secret, n), 0o600)
        write_atomic(out / f"{n}.key", _cert_text(public, None, n), 0o644)
        written += [out / f"{n}.key", out / f"{n}.key_secret"]
        if n != EDGE_KEY_NAME:
            write_atomic(out / ENROLLED_DIR / f"{n}.key", _cert_text(public, None, n), 0o644)
            written.append(out / ENROLLED_DIR / f"{n}.key")
    return written


def load_key_pair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file; raises TransportError."""
    import zmq.auth

    p = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as exc:
        raise TransportError(
            f"cannot load key {p}: {exc}", "run `edge keys generate --out DIR`"
        ) from None
    if secret is None:
        raise TransportError(f"{p} holds no secret key", "pass the .key_secret file's folder")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise TransportError(
            f"secret key {p} has mode {mode:04o}: other users can read it", f"run chmod 600 {p}"
        )
    return public, secret


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key of a certificate file; TransportError naming the file and why."""
    import zmq.auth

    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file() or size > MAX_KEY_FILE_BYTES:
            raise ValueError(f"not a regular file of at most {MAX_KEY_FILE_BYTES} bytes")
        public = zmq.auth.load_certificate(p)[0]
        if not _is_z85_key(public):
            raise ValueError("its public-key is not a 32-byte key in Z85")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise TransportError(f"cannot load public key {p}: {exc}", "check the key folder") from None
    return public


def _is_z85_key(text: bytes) -> bool:
    import struct

    from zmq.utils import z85

    try:
        return len(text) == _Z85_KEY_CHARS and len(z85.decode(text)) == 32
    except (KeyError, ValueError, struct.error):  # a character or value outside Z85
        return False


def load_enrolled_keys(folder: str | Path) -> frozenset[bytes]:
    """The Z85 public keys of every usable ``*.key`` in ``folder``.

    A file that is not a public key certificate is logged (WARNING, naming it
    and why) and skipped; the caller decides whether what remains is enough.
    """
    return frozenset(load_enrolled_names(folder))


def load_enrolled_names(folder: str | Path) -> dict[bytes, str]:
    """Headset name (the file's stem) by Z85 public key, for every usable ``*.key``."""
    names: dict[bytes, str] = {}
    for p in sorted(Path(folder).glob("*.key")):
        try:
            names.setdefault(load_public_key(p), p.stem)
        except TransportError as exc:
            log.warning("enrolled key skipped: %s (that headset cannot connect)", exc.problem)
    return names


def key_fingerprint(z85_public: bytes) -> str:
    """The short fingerprint (:func:`edge.keys.fingerprint`) of a Z85 CURVE public key."""
    from zmq.utils import z85

    from edge.keys import fingerprint

    return fingerprint(z85.decode(z85_public))


# --------------------------------------------------------------------------- enrolment in force

# Why a key left the enrolment (headset.revoked's reason).
REMOVED = "key file removed"
CHANGED = "key file now holds another key"
UNUSABLE = "key file no longer holds a usable key"


@dataclass(frozen=True)
class EnrolmentChange:
    """What one look at the folder changed: keys (Z85) added and removed, with names."""

    added: Mapping[bytes, str] = field(default_factory=dict)
    removed: Mapping[bytes, tuple[str, str]] = field(default_factory=dict)  # (name, reason)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class EnrolledKeys:
    """Headset name by Z85 public key, for the keys admitted now; safe across threads."""

    def __init__(self, names: Mapping[bytes, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._names: dict[bytes, str] = dict(names or {})
        self._suspended: dict[bytes, str] = {}

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._names and key not in self._suspended

    def __len__(self) -> int:
        with self._lock:
            return len(set(self._names) - set(self._suspended))

    def name(self, key: bytes) -> str:
        """The enrolled name of ``key`` (also while suspended); "" when not enrolled."""
        with self._lock:
            return self._names.get(key, "")

    def names(self) -> dict[bytes, str]:
        """A copy of the admitted keys and their names."""
        with self._lock:
            return {k: n for k, n in self._names.items() if k not in self._suspended}

    def replace(self, names: Mapping[bytes, str], files: set[str]) -> EnrolmentChange:
        """Make ``names`` the enrolment; ``files`` are the stems of the ``.key`` files
        present (to tell a removed file from one that changed). Returns the difference."""
        with self._lock:
            old = self._names
            self._names = dict(names)
            suspended = self._suspended
        new_names = set(names.values())
        removed: dict[bytes, tuple[str, str]] = {}
        for key, name in old.items():
            if key in names:
                continue
            if name in new_names:
                reason = CHANGED
            elif name in files:
                reason = UNUSABLE
            else:
                reason = REMOVED
            removed[key] = (name, reason)
        added = {k: n for k, n in names.items() if k not in old and k not in suspended}
        return EnrolmentChange(added, removed)

    def suspend(self, key: bytes, reason: str) -> bool:
        """Stop admitting ``key`` for the rest of the run; False when it was not admitted."""
        with self._lock:
            if key not in self._names or key in self._suspended:
                return False
            self._suspended[key] = reason
            return True


# --------------------------------------------------------------------------- socket setup


@dataclass(frozen=True)
class ServerSecurity:
    """How the edge's sockets are secured: ``curve`` with its key pair, or ``plaintext``.

    ``enrolled`` is the enrolment in force: read at start, then kept equal to the
    enrolled folder while the edge runs (:class:`edge.transport.enrolment.FolderWatch`).
    """

    mode: str
    public_key: bytes = b""
    secret_key: bytes = b""
    enrolled_dir: Path | None = None
    enrolled: EnrolledKeys = field(default_factory=EnrolledKeys, compare=False)

    @property
    def enrolled_keys(self) -> frozenset[bytes]:
        """The Z85 public keys admitted now."""
        return frozenset(self.enrolled.names())

    @property
    def enrolled_names(self) -> Mapping[bytes, str]:
        """Headset name (the enrolled file's stem) by Z85 public key, admitted now."""
        return self.enrolled.names()

    @classmethod
    def from_keys_dir(cls, keys_dir: str | Path) -> ServerSecurity:
        d = Path(keys_dir)
        public, secret = load_key_pair(d / f"{EDGE_KEY_NAME}.key_secret")
        enrolled = d / ENROLLED_DIR
        names = load_enrolled_names(enrolled) if enrolled.is_dir() else {}
        if not names:
            raise TransportError(
                f"no usable enrolled headset keys in {enrolled}",
                "copy each headset's public .key file there (edge keys generate does this)",
            )
        return cls("curve", public, secret, enrolled, EnrolledKeys(names))

    @classmethod
    def plaintext(cls) -> ServerSecurity:
        return cls("plaintext")

    def apply(self, socket: Any, endpoint: str) -> None:
        """Configure a socket before bind; refuses plaintext off loopback."""
        check_plaintext_allowed(endpoint, self.mode)
        if self.mode == "curve":
            socket.curve_secretkey = self.secret_key
            socket.curve_publickey = self.public_key
            socket.curve_server = True


@dataclass(frozen=True)
class ClientSecurity:
    """A headset's side: its key pair and the edge's public key, or plaintext."""

    mode: str
    public_key: bytes = b""
    secret_key: bytes = b""
    server_key: bytes = b""

    @classmethod
    def from_keys_dir(cls, keys_dir: str | Path, name: str = "headset") -> ClientSecurity:
        d = Path(keys_dir)
        public, secret = load_key_pair(d / f"{name}.key_secret")
        return cls("curve", public, secret, load_public_key(d / f"{EDGE_KEY_NAME}.key"))

    @classmethod
    def plaintext(cls) -> ClientSecurity:
        return cls("plaintext")

    def apply(self, socket: Any, endpoint: str) -> None:
        check_plaintext_allowed(endpoint, self.mode)
        if self.mode == "curve":
            socket.curve_secretkey = self.secret_key
            socket.curve_publickey = self.public_key
            socket.curve_serverkey = self.server_key


@dataclass(frozen=True)
class Handshake:
    """One CURVE handshake decided by the authenticator."""

    accepted: bool
    address: str  # the client's IP address as ZeroMQ reports it
    key_fingerprint: str  # of the client's public key (edge.keys.fingerprint)
    name: str  # the enrolled headset's name; "" when the key is not enrolled
    reason: str = ""  # why it was refused


def start_authenticator(
    context: Any,
    security: ServerSecurity,
    on_handshake: Callable[[Handshake], None] | None = None,
) -> Any:
    """A running ZAP authenticator admitting only enrolled keys (None for plaintext).

    ``on_handshake`` is called, on the authenticator's thread, for every CURVE
    handshake it decides; an exception from it is logged, never raised (the
    decision stands). The caller stops it (``.stop()``) after closing the
    sockets it guards.
    """
    if security.mode != "curve":
        return None
    auth = _make_authenticator(context, security, on_handshake)
    auth.start()
    # The enrolment in force (checked keys, kept up to date by the folder watch), not
    # the folder: pyzmq's own folder reader stops at the first file it cannot parse.
    auth.configure_curve_callback(domain="*", credentials_provider=_EnrolledKeys(security))
    return auth


def _make_authenticator(
    context: Any, security: ServerSecurity, on_handshake: Callable[[Handshake], None] | None
) -> Any:
    from zmq.auth.thread import ThreadAuthenticator

    class _ReportingAuthenticator(ThreadAuthenticator):
        """pyzmq's thread authenticator, reporting each CURVE decision it sends."""

        _status: bytes | None = None
        _text: bytes = b""

        async def handle_zap_message(self, msg: list[bytes]) -> None:
            self._status = None
            await super().handle_zap_message(msg)
            if on_handshake is None or len(msg) != 7 or msg[5] != b"CURVE":
                return
            if self._status is None:
                return
            from zmq.utils import z85

            from edge.keys import fingerprint

            key = msg[6]  # the client's raw 32-byte public key
            accepted = self._status == b"200"
            shake = Handshake(
                accepted=accepted,
                address=msg[3].decode("utf-8", "replace"),
                key_fingerprint=fingerprint(key),
                name=security.enrolled.name(z85.encode(key)) if len(key) == 32 else "",
                reason="" if accepted else self._text.decode("utf-8", "replace"),
            )
            try:
                on_handshake(shake)
            except Exception:
                log.exception("could not record the handshake from %s", shake.address)

        def _send_zap_reply(self, request_id: bytes, status_code: bytes, *args: Any) -> None:
            self._status = status_code
            self._text = args[0] if args and isinstance(args[0], bytes) else b""
            super()._send_zap_reply(request_id, status_code, *args)

    return _ReportingAuthenticator(context, log=logging.getLogger("edge.transport.zap"))


class _EnrolledKeys:
    """pyzmq's CURVE credentials provider: admits exactly the keys enrolled now."""

    def __init__(self, security: ServerSecurity) -> None:
        self._keys = security.enrolled

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys
