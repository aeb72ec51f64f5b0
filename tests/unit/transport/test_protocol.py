"""Wire protocol: round trips, every kind of malformed message, and property-based fuzz."""

from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import DecodeError
from edge.registration.types import RegistrationState
from edge.transport.protocol import SCHEMA_VERSION, STATES, Limits, decode, encode, make_message
from edge.transport.service import validate_command
from support.fakes import overlay_payload

STATUS = {"state": "SEARCHING", "uptime_s": 1.5, "frames": 0, "plan": {}}


def _valid() -> list[bytes]:
    return encode(make_message("status", STATUS, {"m": np.eye(4)}, seq=3, frame=9))


def _with_header(**changes: object) -> list[bytes]:
    parts = _valid()
    h = msgpack.unpackb(parts[1])
    h.update(changes)
    for k, v in list(h.items()):
        if v is ...:
            del h[k]
    parts[1] = msgpack.packb(h)
    return parts


def test_round_trip_keeps_header_payload_and_arrays():
    big = np.arange(12, dtype=">f4").reshape(3, 4)  # big-endian in, little-endian on the wire
    msg = decode(encode(make_message("status", STATUS, {"a": big, "b": np.array([True])}, seq=5)))
    assert msg.header.version == SCHEMA_VERSION and msg.header.seq == 5
    assert msg.payload == STATUS
    assert msg.arrays["a"].dtype.str == "<f4"
    np.testing.assert_array_equal(msg.arrays["a"], big)
    assert msg.arrays["b"].dtype.str == "|u1"


@pytest.mark.parametrize(
    ("parts", "words"),
    [
        (lambda: _valid()[:2], "needs topic, header and payload"),
        (lambda: _with_header(v=SCHEMA_VERSION + 1), "schema version"),
        (lambda: _with_header(v="1"), "schema version"),
        (lambda: _with_header(seq=...), "'seq' is missing"),
        (lambda: _with_header(frame="x"), "'frame' must be int"),
        (lambda: _with_header(capture_unix_s=True), "must be float"),
        (lambda: _with_header(topic="hud"), "does not match"),
        (lambda: _with_header(arrays=[{"name": "m", "dtype": ">f8", "shape": [4, 4]}]), "dtype"),
        (lambda: _with_header(arrays=[{"name": "m", "dtype": "<f8", "shape": [4, 5]}]), "needs"),
        (lambda: _with_header(arrays=[]), "array frames came"),
        (lambda: [b"status", b"\xc1", _valid()[2]], "not valid msgpack"),
        (lambda: [b"status", msgpack.packb([1, 2]), _valid()[2]], "header must be a map"),
        (lambda: [*_valid()[:2], msgpack.packb([1]), _valid()[3]], "payload must be a map"),
        (lambda: [b"\xff", *_valid()[1:]], "topic"),
        (lambda: [*_valid(), *[b""] * 20], "over the limit"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(parts, words):
    with pytest.raises(DecodeError, match=words):
        decode(parts())


def test_oversized_message_is_refused_before_parsing():
    parts = encode(make_message("status", STATUS, {"big": np.zeros(300_000, np.uint8)}))
    with pytest.raises(DecodeError, match="over the limit"):
        decode(parts, Limits(max_message_bytes=100_000))


def test_payload_schema_per_topic():
    with pytest.raises(DecodeError, match="unknown topic"):
        decode(encode(make_message("telemetry", {})))
    with pytest.raises(DecodeError, match="'frames' is missing"):
        decode(encode(make_message("status", {"state": "LOST", "uptime_s": 1, "plan": {}})))
    with pytest.raises(DecodeError, match="not a known state"):
        decode(encode(make_message("status", {**STATUS, "state": "FINE"})))
    with pytest.raises(DecodeError, match="needs array 'jpeg'"):
        decode(encode(make_message("video", {"encoding": "jpeg", "width": 1, "height": 1})))


def test_wire_states_are_the_registration_states():
    assert tuple(s.value for s in RegistrationState) == STATES


def test_overlay_cannot_claim_current_unless_tracking():
    payload = overlay_payload("DEGRADED", True)
    with pytest.raises(DecodeError, match="only be current in state TRACKING"):
        decode(encode(make_message("overlay", payload, {"patient_to_camera": np.eye(4)})))
    payload["targets"] = [{"name": "t"}]
    payload["current"] = False
    with pytest.raises(DecodeError, match="no array 'targets_camera_m'"):
        decode(encode(make_message("overlay", payload)))


def test_commands_are_validated():
    assert validate_command({"command": "reregister", "args": {}}) == ("reregister", {})
    with pytest.raises(DecodeError, match="unknown command"):
        validate_command({"command": "self_destruct", "args": {}})
    with pytest.raises(DecodeError, match="one of"):
        validate_command({"command": "toggle_layer", "args": {"layer": "x", "visible": True}})
    with pytest.raises(DecodeError, match="must be bool"):
        validate_command({"command": "toggle_layer", "args": {"layer": "skin", "visible": 1}})
    with pytest.raises(DecodeError, match="takes no argument"):
        validate_command({"command": "reregister", "args": {"now": True}})


# --------------------------------------------------------------------------- fuzz (10,000 cases)

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=4,
)


def _decode_or_refuse(parts: list[bytes]) -> None:
    with contextlib.suppress(DecodeError):
        decode(parts, Limits(max_message_bytes=64 * 1024))


@settings(FUZZ, max_examples=5500)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_random_frames_never_crash(parts):
    _decode_or_refuse(parts)


@settings(FUZZ, max_examples=3000)
@given(st.data())
def test_fuzz_mutated_valid_messages_never_crash(data):
    parts = _valid()
    i = data.draw(st.integers(0, len(parts) - 1))
    raw = bytearray(parts[i])
    op = data.draw(st.sampled_from(["flip", "truncate", "extend", "replace"]))
    if op == "flip" and raw:
        j = data.draw(st.integers(0, len(raw) - 1))
        raw[j] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif op == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        raw = bytearray(msgpack.packb(data.draw(msgpack_values)))
    parts[i] = bytes(raw)
    _decode_or_refuse(parts)


@settings(FUZZ, max_examples=1000)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "topic",
                "seq",
                "frame",
                "capture_unix_s",
                "publish_unix_s",
                "sender",
                "arrays",
                "x",
            ]
        ),
        msgpack_values,
        max_size=9,
    ),
    msgpack_values,
)
def test_fuzz_structured_headers_and_payloads_never_crash(header, payload):
    header.setdefault("v", SCHEMA_VERSION)
    _decode_or_refuse([b"overlay", msgpack.packb(header), msgpack.packb(payload)])


@settings(FUZZ, max_examples=500)
@given(
    st.dictionaries(st.sampled_from(["command", "args"]), msgpack_values)
    | st.fixed_dictionaries(
        {
            "command": st.sampled_from(["reregister", "toggle_layer", "ack_warning", "x"]),
            "args": st.dictionaries(
                st.sampled_from(["layer", "visible", "warning", "y"]), msgpack_values
            ),
        }
    )
)
def test_fuzz_command_payloads_never_crash(payload):
    parts = encode(make_message("command", {}))
    parts[2] = msgpack.packb(payload)
    try:
        msg = decode(parts)
        validate_command(msg.payload)
    except DecodeError:
        pass


def test_arrays_reach_the_wire_in_its_dtypes_whatever_their_layout():
    """Arrays already little-endian, C-ordered and of a wire dtype go out as they are
    (issue 15); the others are converted: byte order, layout, bool, wider integers."""
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    arrays = {
        "plain": base,
        "transposed": base.T,
        "strided": base[:, ::2],
        "big_endian": base.astype(">f8"),
        "float32": base.astype(np.float32),
        "flags": base > 5,
        "small_ints": base.astype(np.int16),
        "u16": base.astype(np.uint16),
    }
    msg = make_message("overlay", {}, arrays)
    parts = encode(msg)
    wire = {name: dtype for name, dtype, _ in msg.header.arrays}
    assert wire == {
        "plain": "<f8",
        "transposed": "<f8",
        "strided": "<f8",
        "big_endian": "<f8",
        "float32": "<f4",
        "flags": "|u1",
        "small_ints": "<i8",
        "u16": "<u2",
    }
    for (name, dtype, shape), data in zip(msg.header.arrays, parts[3:], strict=True):
        np.testing.assert_array_equal(np.frombuffer(data, dtype).reshape(shape), arrays[name])
