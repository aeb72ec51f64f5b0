"""The enrolled-folder watch, the subscription gate and the peer table, without sockets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import zmq

from edge.transport.enrolment import FolderWatch
from edge.transport.publisher import SubscriptionGate, subscription_allowed
from edge.transport.security import (
    CHANGED,
    REMOVED,
    UNUSABLE,
    EnrolledKeys,
    Handshake,
    generate_keys,
    load_public_key,
)
from edge.transport.watch import SOCKET_CLOSED, PeerTable


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path, ("hmd", "tablet"))
    generate_keys(tmp_path / "spare", ("spare",))
    return tmp_path


def _watch(keys: Path) -> tuple[FolderWatch, EnrolledKeys]:
    from edge.transport.security import load_enrolled_names

    enrolled = EnrolledKeys(load_enrolled_names(keys / "enrolled"))
    return FolderWatch(keys / "enrolled", enrolled), enrolled


def _touch_later(path: Path) -> None:
    """Give a rewritten file a modification time the watch cannot mistake for the old."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_nothing_changed_is_no_change(keys: Path) -> None:
    watch, enrolled = _watch(keys)
    assert not watch.check()
    assert set(enrolled.names().values()) == {"hmd", "tablet"}


def test_a_key_added_is_admitted(keys: Path) -> None:
    watch, enrolled = _watch(keys)
    spare = load_public_key(keys / "spare" / "spare.key")
    (keys / "enrolled" / "spare.key").write_bytes((keys / "spare" / "spare.key").read_bytes())
    change = watch.check()
    assert change.added == {spare: "spare"} and not change.removed
    assert spare in enrolled


def test_a_key_removed_is_withdrawn(keys: Path) -> None:
    watch, enrolled = _watch(keys)
    tablet = load_public_key(keys / "enrolled" / "tablet.key")
    (keys / "enrolled" / "tablet.key").unlink()
    change = watch.check()
    assert change.removed == {tablet: ("tablet", REMOVED)} and not change.added
    assert tablet not in enrolled
    assert set(enrolled.names().values()) == {"hmd"}


def test_a_key_file_holding_another_key_withdraws_the_old_and_admits_the_new(keys: Path) -> None:
    watch, enrolled = _watch(keys)
    path = keys / "enrolled" / "tablet.key"
    old = load_public_key(path)
    path.write_bytes((keys / "spare" / "spare.key").read_bytes())
    _touch_later(path)
    new = load_public_key(path)
    change = watch.check()
    assert change.removed == {old: ("tablet", CHANGED)}
    assert change.added == {new: "tablet"}
    assert old not in enrolled and new in enrolled


def test_a_garbage_file_appearing_warns_and_revokes_nobody(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watch, enrolled = _watch(keys)
    (keys / "enrolled" / "junk.key").write_bytes(bytes(range(256)) * 8)
    with caplog.at_level(logging.WARNING):
        change = watch.check()
    assert not change
    assert set(enrolled.names().values()) == {"hmd", "tablet"}
    assert any("junk.key" in r.getMessage() for r in caplog.records)


def test_a_key_file_turned_to_garbage_withdraws_only_that_key(keys: Path) -> None:
    watch, enrolled = _watch(keys)
    path = keys / "enrolled" / "tablet.key"
    tablet = load_public_key(path)
    path.write_bytes(b"\x00\xff" * 100)
    _touch_later(path)
    change = watch.check()
    assert change.removed == {tablet: ("tablet", UNUSABLE)}
    assert set(enrolled.names().values()) == {"hmd"}


def test_the_folder_removed_withdraws_every_key(keys: Path) -> None:
    watch, enrolled = _watch(keys)
    for p in (keys / "enrolled").iterdir():
        p.unlink()
    (keys / "enrolled").rmdir()
    assert {name for name, _ in watch.check().removed.values()} == {"hmd", "tablet"}
    assert len(enrolled) == 0


def test_a_folder_over_the_entry_limit_changes_nothing(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge.transport.security import load_enrolled_names

    enrolled = EnrolledKeys(load_enrolled_names(keys / "enrolled"))
    watch = FolderWatch(keys / "enrolled", enrolled, max_files=4)
    for i in range(5):
        (keys / "enrolled" / f"extra{i}.txt").write_text("x")
    (keys / "enrolled" / "tablet.key").unlink()
    with caplog.at_level(logging.WARNING):
        assert not watch.check()
    assert set(enrolled.names().values()) == {"hmd", "tablet"}
    assert any("more than 4 entries" in r.getMessage() for r in caplog.records)


def test_a_suspended_key_stays_out_while_its_file_is_there(keys: Path) -> None:
    watch, enrolled = _watch(keys)
    hmd = load_public_key(keys / "enrolled" / "hmd.key")
    assert enrolled.suspend(hmd, "flood")
    assert not enrolled.suspend(hmd, "flood")  # once
    assert hmd not in enrolled and enrolled.name(hmd) == "hmd"
    (keys / "enrolled" / "hmd.key").touch()
    _touch_later(keys / "enrolled" / "hmd.key")
    assert not watch.check().added
    assert hmd not in enrolled


# --------------------------------------------------------------------------- subscriptions


@pytest.mark.parametrize("topic", [b"", b"o", b"overlay", b"hud", b"status", b"vid", b"video"])
def test_published_topics_and_their_prefixes_are_allowed(topic: bytes) -> None:
    assert subscription_allowed(topic)


@pytest.mark.parametrize("topic", [b"overlays", b"x", b"reply", b"command", b"\xff", b"hudx"])
def test_other_topics_are_not(topic: bytes) -> None:
    assert not subscription_allowed(topic)


def test_the_gate_flags_a_peer_once_it_asks_for_too_many_unknown_topics() -> None:
    gate = SubscriptionGate(max_unknown=3)
    assert gate.admit("a", True, b"overlay") == gate.APPLY
    verdicts = [gate.admit("a", True, b"t%d" % i) for i in range(6)]
    assert verdicts == [gate.REFUSE] * 3 + [gate.FLOOD] + [gate.REFUSE] * 2
    # Repeating one unknown topic, or unsubscribing, is no flood; nor is another peer.
    assert {gate.admit("b", True, b"zz") for _ in range(10)} == {gate.REFUSE}
    assert {gate.admit("b", False, b"q%d" % i) for i in range(10)} == {gate.REFUSE}
    assert gate.admit("a", False, b"overlay") == gate.APPLY


def test_the_gate_remembers_a_bounded_number_of_peers() -> None:
    gate = SubscriptionGate(max_unknown=2, max_peers=3)
    for i in range(100):
        gate.admit(f"peer{i}", True, b"unknown")
    assert len(gate._unknown) == 3


# --------------------------------------------------------------------------- peer table


def _table() -> PeerTable:
    addresses = {10: ("10.0.0.5:40000", "10.0.0.5"), 11: ("10.0.0.6:40001", "10.0.0.6")}
    return PeerTable(max_peers=8, address_of=lambda fd: addresses.get(fd, ("", "")))


def test_an_authenticated_connection_that_ends_is_a_disconnection_with_its_name() -> None:
    table = _table()
    table.handshake(Handshake(True, "10.0.0.5", "ab", "hmd"))
    assert table.event("overlay#1", zmq.EVENT_ACCEPTED, 10) is None
    assert table.event("overlay#1", zmq.EVENT_HANDSHAKE_SUCCEEDED, 0) is None
    gone = table.event("overlay#1", zmq.EVENT_DISCONNECTED, 10)
    assert gone is not None
    assert (gone.socket, gone.address, gone.name) == ("overlay", "10.0.0.5:40000", "hmd")
    assert len(table) == 0


def test_a_refused_handshake_is_no_disconnection() -> None:
    table = _table()
    table.event("overlay#1", zmq.EVENT_ACCEPTED, 11)
    table.event("overlay#1", zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400)
    assert table.event("overlay#1", zmq.EVENT_DISCONNECTED, 11) is None


def test_two_headsets_at_one_address_are_not_named() -> None:
    table = _table()
    table.handshake(Handshake(True, "10.0.0.5", "ab", "hmd"))
    table.handshake(Handshake(True, "10.0.0.5", "cd", "tablet"))
    table.event("service#1", zmq.EVENT_ACCEPTED, 10)
    table.event("service#1", zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)
    gone = table.event("service#1", zmq.EVENT_DISCONNECTED, 10)
    assert gone is not None and gone.name == ""


def test_closing_the_socket_ends_its_connections_only() -> None:
    table = _table()
    for channel in ("overlay#1", "service#1"):
        table.event(channel, zmq.EVENT_ACCEPTED, 10)
        table.event(channel, zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)
    gone = table.socket_closed("overlay#1")
    assert [(g.socket, g.reason) for g in gone] == [("overlay", SOCKET_CLOSED)]
    assert len(table) == 1


def test_the_table_is_bounded() -> None:
    table = _table()
    for fd in range(100):
        table.event("overlay#1", zmq.EVENT_ACCEPTED, fd)
    assert len(table) == 8
