"""The wire protocol between the edge and head-mounted displays (docs/protocol.md).

A message is a ZeroMQ multipart message::

    [topic, header, payload, array_0, array_1, ...]

* ``topic``: ASCII bytes (``overlay``, ``hud``, ``status``, ``video``, or a
  service request/reply kind); subscribers filter on it.
* ``header``: a msgpack map: schema version, topic, sequence number, frame
  number, capture and publish times, sender and the description (name, dtype,
  shape) of every array frame that follows, in order.
* ``payload``: a msgpack map whose fields depend on the topic.
* array frames: raw little-endian C-order bytes, one per header entry.

The decoder is strict: it checks sizes before parsing, the schema version,
every header field's type, the payload's required fields per topic and that
each array frame's length matches its declared dtype and shape. Anything else
is a :class:`DecodeError` with a message that says what was wrong.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from edge.errors import DecodeError, TransportError
from edge.transport.prediction import check_velocity_arrays

SCHEMA_VERSION = 1

TOPIC_OVERLAY = "overlay"
TOPIC_HUD = "hud"
TOPIC_STATUS = "status"
TOPIC_VIDEO = "video"
TOPIC_TOOLS = "tools"  # tracked instruments and their navigation figures (issue 16)
PUBLISHED_TOPICS = (TOPIC_OVERLAY, TOPIC_HUD, TOPIC_STATUS, TOPIC_VIDEO, TOPIC_TOOLS)

# Service (ROUTER) request and reply kinds.
REQ_ASSET_LIST = "asset.list"
REQ_ASSET_GET = "asset.get"
REQ_COMMAND = "command"
REPLY = "reply"
REQUEST_TOPICS = (REQ_ASSET_LIST, REQ_ASSET_GET, REQ_COMMAND)

# dtype strings allowed on the wire: explicit little-endian (or byte-sized).
WIRE_DTYPES = ("<f4", "<f8", "<i4", "<u4", "<i8", "|u1", "<u2")
MAX_ARRAYS = 16
MAX_DIMS = 4
MAX_TOPIC_BYTES = 32
MAX_HEADER_BYTES = 4096


@dataclass(frozen=True)
class Limits:
    """Size limits the decoder enforces before and while parsing."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_payload_bytes: int = 256 * 1024
    max_parts: int = 3 + MAX_ARRAYS


@dataclass
class Header:
    """Context every message carries (docs/protocol.md, "Header").

    Times: ``capture_unix_s`` is when the camera frame was captured and
    ``publish_unix_s`` when the message was sent, both seconds since the Unix
    epoch on the edge's clock (compare with the headset's clock only when both
    are synchronised, e.g. by PTP/NTP).
    """

    topic: str
    seq: int = 0
    frame: int = -1  # camera frame number; -1 when the message is not about a frame
    capture_unix_s: float = 0.0
    publish_unix_s: float = 0.0
    sender: str = "edge"
    version: int = SCHEMA_VERSION
    arrays: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)

    def to_map(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "topic": self.topic,
            "seq": self.seq,
            "frame": self.frame,
            "capture_unix_s": self.capture_unix_s,
            "publish_unix_s": self.publish_unix_s,
            "sender": self.sender,
            "arrays": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in self.arrays],
        }


@dataclass
class Message:
    """One decoded (or to-be-encoded) message."""

    header: Header
    payload: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return self.header.topic


# --------------------------------------------------------------------------- encoding


def _wire_dtype(a: np.ndarray) -> tuple[np.ndarray, str]:
    """The array in a wire dtype, little-endian and C-contiguous."""
    if a.dtype.str in WIRE_DTYPES and a.flags.c_contiguous:
        return a, a.dtype.str  # already on the wire's terms (most arrays): as it is
    kind_map = {"f": ("<f8", "<f4"), "i": ("<i8", "<i4"), "u": ("<u4", "<u2", "|u1")}
    dt = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    name = dt.str
    if name not in WIRE_DTYPES:
        if a.dtype.kind == "b":
            name = "|u1"
        elif a.dtype.kind in kind_map:
            name = kind_map[a.dtype.kind][0]
        else:
            raise TransportError(f"array dtype {a.dtype} cannot be sent", "send numbers")
    return np.ascontiguousarray(a, dtype=np.dtype(name)), name


def encode(message: Message, packer: msgpack.Packer | None = None) -> list[bytes]:
    """Encode a message into its multipart frames (the header's array list is filled in).

    ``packer``: a ``msgpack.Packer(use_bin_type=True)`` to reuse (one thread at a time;
    the same bytes as a new one, without making one per map); None makes one.
    """
    parts: list[bytes] = []
    described: list[tuple[str, str, tuple[int, ...]]] = []
    for name, array in message.arrays.items():
        a, dtype = _wire_dtype(np.asarray(array))
        described.append((name, dtype, a.shape))  # a tuple of Python ints
        parts.append(a.tobytes())
    message.header.arrays = described
    pack = (packer or msgpack.Packer(use_bin_type=True)).pack
    header = pack(message.header.to_map())
    payload = pack(message.payload)
    return [message.header.topic.encode("ascii"), header, payload, *parts]


def make_message(
    topic: str,
    payload: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    *,
    seq: int = 0,
    frame: int = -1,
    capture_unix_s: float | None = None,
    sender: str = "edge",
) -> Message:
    """A message stamped with the current time as its publish time."""
    now = time.time()
    header = Header(
        topic=topic,
        seq=seq,
        frame=frame,
        capture_unix_s=now if capture_unix_s is None else capture_unix_s,
        publish_unix_s=now,
        sender=sender,
    )
    return Message(header, dict(payload), dict(arrays or {}))


# --------------------------------------------------------------------------- decoding


def _unpack(data: bytes, what: str, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise DecodeError(f"{what} is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, ...)
        raise DecodeError(f"{what} is not valid msgpack: {type(exc).__name__}: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _check_header(h: Any, topic: str) -> Header:
    if not isinstance(h, dict):
        raise DecodeError(f"header must be a map, got {type(h).__name__}")
    version = h.get("v")
    if not _is_int(version):
        raise DecodeError("header has no integer schema version 'v'")
    if version != SCHEMA_VERSION:
        raise DecodeError(
            f"schema version {version} is not supported (this side speaks {SCHEMA_VERSION})"
        )
    expected: dict[str, Any] = {
        "topic": str,
        "seq": int,
        "frame": int,
        "capture_unix_s": float,
        "publish_unix_s": float,
        "sender": str,
        "arrays": list,
    }
    for key, tp in expected.items():
        if key not in h:
            raise DecodeError(f"header field '{key}' is missing")
        value = h[key]
        ok = (
            _is_int(value)
            if tp is int
            else _is_num(value)
            if tp is float
            else isinstance(value, tp)
        )
        if not ok:
            raise DecodeError(f"header field '{key}' must be {tp.__name__}, got {value!r:.60}")
    if h["topic"] != topic:
        raise DecodeError(f"header topic {h['topic']!r:.40} does not match frame topic {topic!r}")
    if len(h["sender"]) > 64:
        raise DecodeError("header field 'sender' is longer than 64 characters")
    arrays: list[tuple[str, str, tuple[int, ...]]] = []
    if len(h["arrays"]) > MAX_ARRAYS:
        raise DecodeError(f"header lists {len(h['arrays'])} arrays, over the limit of {MAX_ARRAYS}")
    for i, spec in enumerate(h["arrays"]):
        if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape"}:
            raise DecodeError(f"header array {i} must be a map of name, dtype and shape")
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise DecodeError(f"header array {i} has no valid name")
        if dtype not in WIRE_DTYPES:
            raise DecodeError(
                f"array '{name}' has dtype {dtype!r:.20}; allowed: {', '.join(WIRE_DTYPES)}"
            )
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(_is_int(n) and 0 <= n < 2**31 for n in shape)
        ):
            raise DecodeError(f"array '{name}' shape must be up to {MAX_DIMS} sizes >= 0")
        arrays.append((name, dtype, tuple(shape)))
    if len({a[0] for a in arrays}) != len(arrays):
        raise DecodeError("header lists two arrays with the same name")
    return Header(
        topic=h["topic"],
        seq=h["seq"],
        frame=h["frame"],
        capture_unix_s=float(h["capture_unix_s"]),
        publish_unix_s=float(h["publish_unix_s"]),
        sender=h["sender"],
        version=version,
        arrays=arrays,
    )


def decode(frames: Sequence[bytes], limits: Limits | None = None) -> Message:
    """Decode multipart frames into a :class:`Message`; raises DecodeError on anything wrong."""
    limits = limits or Limits()
    if not isinstance(frames, list | tuple):
        raise DecodeError("a message must be a list of frames")
    if len(frames) < 3:
        raise DecodeError(f"a message needs topic, header and payload frames, got {len(frames)}")
    if len(frames) > limits.max_parts:
        raise DecodeError(f"message has {len(frames)} frames, over the limit of {limits.max_parts}")
    if not all(isinstance(f, bytes | bytearray | memoryview) for f in frames):
        raise DecodeError("every frame must be bytes")
    total = sum(len(f) for f in frames)
    if total > limits.max_message_bytes:
        raise DecodeError(f"message is {total} bytes, over the limit of {limits.max_message_bytes}")
    raw_topic = bytes(frames[0])
    if not 0 < len(raw_topic) <= MAX_TOPIC_BYTES:
        raise DecodeError(f"topic must be 1 to {MAX_TOPIC_BYTES} bytes, got {len(raw_topic)}")
    try:
        topic = raw_topic.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("topic is not ASCII") from None
    header = _check_header(_unpack(bytes(frames[1]), "header", MAX_HEADER_BYTES), topic)
    payload = _unpack(bytes(frames[2]), "payload", limits.max_payload_bytes)
    if not isinstance(payload, dict):
        raise DecodeError(f"payload must be a map, got {type(payload).__name__}")
    if len(frames) - 3 != len(header.arrays):
        raise DecodeError(
            f"header describes {len(header.arrays)} arrays but {len(frames) - 3} array frames came"
        )
    arrays: dict[str, np.ndarray] = {}
    for (name, dtype, shape), data in zip(header.arrays, frames[3:], strict=True):
        dt = np.dtype(dtype)
        expected = dt.itemsize * math.prod(shape)
        if len(data) != expected:
            raise DecodeError(
                f"array '{name}' {dtype}{list(shape)} needs {expected} bytes, got {len(data)}"
            )
        arrays[name] = np.frombuffer(bytes(data), dtype=dt).reshape(shape)
    check_payload(topic, payload, arrays)
    return Message(header, payload, arrays)


# --------------------------------------------------------------------------- payload schemas

# topic -> required payload field -> accepted Python types after msgpack decoding
_NUM = (int, float)
PAYLOAD_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    TOPIC_OVERLAY: {
        "state": (str,),
        "current": (bool,),
        "reasons": (list,),
        "plan": (dict,),
        "targets": (list,),
        "trajectories": (list,),
        "cut_planes": (list,),
        "structures": (list,),
        "display": (dict,),
    },
    TOPIC_HUD: {
        "state": (str,),
        "state_text": (str,),
        "registration_age_ms": (*_NUM, type(None)),
        "fps": _NUM,
        "latency_ms": _NUM,
        "targets": (list,),
        "tools": (list,),
    },
    TOPIC_STATUS: {
        "state": (str,),
        "uptime_s": _NUM,
        "frames": (int,),
        "plan": (dict,),
    },
    TOPIC_VIDEO: {"encoding": (str,), "width": (int,), "height": (int,)},
    TOPIC_TOOLS: {"tools": (list,)},
    REQ_ASSET_LIST: {},
    REQ_ASSET_GET: {"id": (str,)},
    REQ_COMMAND: {"command": (str,), "args": (dict,)},
    REPLY: {"ok": (bool,)},
}

# Arrays each topic must carry, with their dtype and trailing shape (None = any size).
PAYLOAD_ARRAYS: dict[str, dict[str, tuple[str, tuple[int | None, ...]]]] = {
    TOPIC_VIDEO: {"jpeg": ("|u1", (None,))},
}

# The registration states by their wire names: the values of
# edge.registration.types.RegistrationState, spelled out here because they are the
# protocol's contract with headsets (a test checks that the two agree).
STATES = ("SEARCHING", "REGISTERED", "TRACKING", "DEGRADED", "LOST")


def check_payload(topic: str, payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Check the payload fields a topic requires (unknown topics are refused)."""
    fields = PAYLOAD_FIELDS.get(topic)
    if fields is None:
        raise DecodeError(f"unknown topic {topic!r}; known: {', '.join(sorted(PAYLOAD_FIELDS))}")
    for key, types_ in fields.items():
        if key not in payload:
            raise DecodeError(f"{topic} payload field '{key}' is missing")
        value = payload[key]
        if isinstance(value, bool) and bool not in types_:
            raise DecodeError(f"{topic} payload field '{key}' must not be a boolean")
        if not isinstance(value, types_):
            names = "/".join(t.__name__ for t in types_)
            raise DecodeError(f"{topic} payload field '{key}' must be {names}, got {value!r:.60}")
    if "state" in fields and payload["state"] not in STATES:
        raise DecodeError(f"{topic} payload state {payload['state']!r:.30} is not a known state")
    for name, (dtype, shape) in PAYLOAD_ARRAYS.get(topic, {}).items():
        a = arrays.get(name)
        if a is None or a.dtype.str != dtype or a.ndim != len(shape):
            raise DecodeError(f"{topic} needs array '{name}' of dtype {dtype}, {len(shape)}-D")
    if topic == TOPIC_OVERLAY:
        _check_overlay_arrays(payload, arrays)
    if topic == TOPIC_TOOLS:
        from edge.transport.tools_codec import check_tools

        check_tools(payload, arrays)
    if topic == TOPIC_HUD:
        from edge.transport.tools_codec import check_hud_tools

        check_hud_tools(payload["tools"])


def _check_overlay_arrays(payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The overlay's primitive lists and their coordinate arrays must agree in length."""
    expected = {
        "targets_camera_m": (len(payload["targets"]), (3,)),
        "targets_px": (len(payload["targets"]), (2,)),
        "trajectories_camera_m": (len(payload["trajectories"]), (2, 3)),
        "trajectories_px": (len(payload["trajectories"]), (2, 2)),
        "cut_planes_camera": (len(payload["cut_planes"]), (2, 3)),
    }
    for name, (count, tail) in expected.items():
        a = arrays.get(name)
        if a is None:
            if count:
                raise DecodeError(f"overlay lists {count} primitives but has no array '{name}'")
            continue
        if a.shape != (count, *tail) or a.dtype.kind != "f":
            raise DecodeError(
                f"overlay array '{name}' must be float of shape {(count, *tail)}, got "
                f"{a.dtype.str}{list(a.shape)}"
            )
    pose = arrays.get("patient_to_camera")
    if pose is not None and (pose.shape != (4, 4) or pose.dtype.kind != "f"):
        raise DecodeError("overlay array 'patient_to_camera' must be a 4x4 float matrix")
    if payload["current"] and (payload["state"] != "TRACKING" or pose is None):
        raise DecodeError("an overlay may only be current in state TRACKING, with a pose")
    check_velocity_arrays(arrays, payload["current"])
    for i, item in enumerate(payload["targets"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise DecodeError(f"overlay target {i} must be a map with a name")
