"""Tamper-evident audit log: append-only JSON lines, hash-chained and signed.

One entry per line::

    {"seq": 7, "time": "2026-01-01T12:00:00.000000Z", "event": "plan.loaded",
     "data": {...}, "prev": "<hash of entry 6>", "hash": "<hex>", "sig": "<hex>"}

* ``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces,
  UTF-8) of the body ``{seq, time, event, data, prev}``; ``prev`` is the hash
  of the entry before (64 zeros for the first). Changing, deleting, moving or
  inserting an entry breaks the chain at that line.
* ``sig`` is an Ed25519 signature by the device key over
  ``b"edge-audit-entry/1\\n" + bytes.fromhex(hash)``, so nobody without the
  key can rewrite the chain from some point on.
* Every time the log is opened it writes a ``log.opened`` entry naming the
  device's public key; ``edge audit verify`` uses that key unless it is given
  the device's known public key (``--pubkey``), which is the stronger check.

Crashes: each entry is written with one ``write`` and ``fsync``'d, so a crash
loses at most the entry being written, which can leave a torn last line. On
the next open the torn line is left in place (the log is never edited), ended
with a newline, and the new ``log.opened`` entry records its line number and
SHA-256 (``torn_line``, ``torn_sha256``); the chain continues from the last
good entry. The verifier accepts a torn line only when the entry after it
acknowledges it that way; a torn line at the very end is reported, not failed.

Truncation: a hash chain alone cannot show entries cut off the *end* of the
log, so the writer anchors the head (last seq and hash, signed) outside the
file after every entry: ``<log>.head`` and a journal line
(:mod:`edge.audit_head`). ``verify_log(..., head=)`` fails when the log ends
before the anchored entry. An empty log, or anything after the last entry
other than a crash-torn partial entry, fails too.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.audit_head import JOURNAL_PREFIX, Head, head_path, read_head, sign_head
from edge.errors import AuditError, StateError
from edge.files import parse_json, write_atomic
from edge.keys import fingerprint

if TYPE_CHECKING:
    from nacl.signing import SigningKey, VerifyKey

GENESIS = "0" * 64
ENTRY_KEYS = frozenset({"seq", "time", "event", "data", "prev", "hash", "sig"})
OPENED = "log.opened"
_SIGNED_PREFIX = b"edge-audit-entry/1\n"  # domain separation: only audit hashes
_TAIL_BYTES = 1 << 20  # an entry is small; a longer last line is not ours
_TORN_START = b'{"data":{'  # what every entry starts with (sorted keys): a torn one too

log = logging.getLogger(__name__)


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _jsonable(value: Any) -> Any:
    """Plain JSON values from what callers hand in (numpy scalars, tuples, paths, enums)."""
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    raise AuditError(
        f"audit data of type {type(value).__name__} cannot be stored",
        "pass numbers, strings, lists or dicts",
    )


def entry_hash(body: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical body {seq, time, event, data, prev}."""
    return hashlib.sha256(
        canonical({k: body[k] for k in ("seq", "time", "event", "data", "prev")})
    ).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Problem:
    """The first broken entry: its 1-based line number and why."""

    line: int
    reason: str


@dataclass
class VerifyReport:
    path: Path
    entries: int = 0
    segments: int = 0  # log.opened entries: process starts
    acknowledged_torn_lines: list[int] = field(default_factory=list)
    torn_tail_line: int | None = None  # a crash cut the last line; nothing follows it
    key_fingerprint: str | None = None
    key_from_log: bool = True
    head_seq: int | None = None
    head_hash: str | None = None
    anchored_seq: int | None = None  # the seq the head file anchors, when one was checked
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _parse_entry(raw: bytes) -> dict[str, Any] | str:
    """The entry on one line, or why it is not one."""
    try:
        obj = parse_json(raw, max_bytes=_TAIL_BYTES)
    except ValueError as exc:  # not UTF-8, not JSON, or over a size or nesting limit
        return f"not valid JSON ({exc})"
    if not isinstance(obj, dict):
        return "not a JSON object"
    if set(obj) != ENTRY_KEYS:
        missing = sorted(ENTRY_KEYS - set(obj))
        extra = sorted(set(obj) - ENTRY_KEYS)
        return f"wrong fields (missing {missing}, unexpected {extra})"
    if not isinstance(obj["seq"], int) or isinstance(obj["seq"], bool):
        return "seq is not an integer"
    for k in ("time", "event", "prev", "hash", "sig"):
        if not isinstance(obj[k], str):
            return f"{k} is not a string"
    if not isinstance(obj["data"], dict):
        return "data is not an object"
    return obj


def _check_signature(entry: Mapping[str, Any], key: VerifyKey) -> bool:
    from nacl.exceptions import BadSignatureError

    try:
        key.verify(_SIGNED_PREFIX + bytes.fromhex(entry["hash"]), bytes.fromhex(entry["sig"]))
    except (BadSignatureError, ValueError):
        return False
    return True


def _key_in(entry: Mapping[str, Any]) -> bytes | None:
    value = entry["data"].get("device_key") if entry["event"] == OPENED else None
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def verify_log(
    path: str | Path, verify_key: VerifyKey | None = None, head: Head | None = None
) -> VerifyReport:
    """Check the whole chain and every signature; stop at the first broken entry.

    ``verify_key``: the device's known public key; without it the key named in
    the first ``log.opened`` entry is used (which only proves the log is
    self-consistent). ``head``: the anchored head (:func:`edge.audit_head.read_head`);
    with it a log that ends before the anchored entry, or holds another entry
    there, fails. An empty log fails; so does anything after the last entry
    other than a partial entry torn by a crash (no newline after it). Raises
    AuditError only when the file cannot be read; a broken log is reported in
    ``VerifyReport.problem`` (line 0: the log as a whole).
    """
    from nacl.signing import VerifyKey as _VerifyKey

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc}", "check the path") from None
    report = VerifyReport(path=path, key_from_log=verify_key is None)
    key = verify_key
    if key is not None:
        report.key_fingerprint = fingerprint(bytes(key))
    lines = blob.split(b"\n")
    ends_with_newline = lines[-1] == b""
    if ends_with_newline:
        lines.pop()
    expected_seq, prev_hash = 0, GENESIS
    hashes: list[str] = []  # by seq: seqs run on from 0 across restarts
    torn: tuple[int, str] | None = None
    torn_reason = ""

    def fail(line: int, reason: str) -> VerifyReport:
        report.problem = Problem(line, reason)
        return report

    for number, raw in enumerate(lines, start=1):
        parsed = _parse_entry(raw) if raw else "empty line"
        if isinstance(parsed, str):
            if torn is not None:
                return fail(torn[0], f"not a valid entry ({torn_reason})")
            torn, torn_reason = (number, hashlib.sha256(raw).hexdigest()), parsed
            continue
        entry = parsed
        if entry["event"] == OPENED and "torn_line" in entry["data"]:
            if torn is None or entry["data"].get("torn_line") != torn[0]:
                return fail(number, "acknowledges a torn line that is not there")
            if entry["data"].get("torn_sha256") != torn[1]:
                return fail(torn[0], "torn line was changed after it was acknowledged")
            report.acknowledged_torn_lines.append(torn[0])
            torn = None
        elif torn is not None:
            return fail(torn[0], f"not a valid entry ({torn_reason})")
        seq = entry["seq"]
        if seq != expected_seq:
            if seq < expected_seq:
                why = "an entry was repeated, or moved here from earlier in the log"
            else:
                gap = seq - expected_seq
                why = f"{gap} entr{'y' if gap == 1 else 'ies'} before this line deleted, or moved"
            return fail(number, f"seq {seq} where {expected_seq} was expected: {why}")
        if entry["prev"] != prev_hash:
            return fail(number, "prev is not the hash of the entry before: the chain is broken")
        if entry_hash(entry) != entry["hash"]:
            return fail(number, "content does not match its hash: the entry was changed")
        logged_key = _key_in(entry)
        if entry["event"] == OPENED and logged_key is None:
            return fail(number, "log.opened entry does not name a valid device_key")
        if key is None:
            if logged_key is None:
                return fail(number, "the log does not start with log.opened: pass --pubkey")
            key = _VerifyKey(logged_key)
            report.key_fingerprint = fingerprint(logged_key)
        elif report.key_from_log and logged_key is not None and logged_key != bytes(key):
            return fail(number, "the device key changed inside the log")
        if not _check_signature(entry, key):
            return fail(
                number,
                f"signature does not verify with key {report.key_fingerprint}: "
                "entry forged or signed by another device",
            )
        report.entries += 1
        report.segments += entry["event"] == OPENED
        report.head_seq, report.head_hash = seq, entry["hash"]
        expected_seq, prev_hash = seq + 1, entry["hash"]
        hashes.append(entry["hash"])
    if torn is not None:
        if ends_with_newline or not lines[torn[0] - 1].startswith(_TORN_START):
            return fail(
                torn[0], f"not a valid entry ({torn_reason}), after the last entry: not a crash"
            )
        report.torn_tail_line = torn[0]
    if report.entries == 0:
        return fail(0, "the log holds no entries: it was emptied, or is not an audit log")
    if head is not None:
        return _check_head(report, head, key, hashes, fail)
    return report


def _check_head(
    report: VerifyReport,
    head: Head,
    key: VerifyKey | None,
    hashes: list[str],
    fail: Callable[[int, str], VerifyReport],
) -> VerifyReport:
    if key is None or not head.verifies_with(key):
        return fail(
            0, f"the head file's signature does not verify with key {report.key_fingerprint}"
        )
    report.anchored_seq = head.seq
    if head.seq >= len(hashes):
        cut = head.seq - (len(hashes) - 1)
        return fail(
            0,
            f"the log ends at seq {len(hashes) - 1} but its head anchors seq {head.seq}: "
            f"{cut} entr{'y' if cut == 1 else 'ies'} cut from the end",
        )
    if hashes[head.seq] != head.hash:
        return fail(
            0,
            f"entry seq {head.seq} is not the anchored one: "
            "the log was cut there and other entries written after",
        )
    return report


# --------------------------------------------------------------------------- writing


def _check_reaches_head(path: Path, key: SigningKey, last_seq: int, last_hash: str) -> None:
    """AuditError when ``<path>.head`` anchors an entry past the log's end (or another one)."""
    where = head_path(path)
    if not where.exists():
        return
    head = read_head(where)
    if not head.verifies_with(key.verify_key):
        return  # another device's or a forged head: it anchors nothing of this log
    if head.seq > last_seq or (head.seq == last_seq and head.hash != last_hash):
        raise AuditError(
            f"audit log {path} ends at seq {last_seq} but {where} anchors seq {head.seq}: "
            "entries were cut from its end",
            f"run `edge audit verify {path}`; keep both files as evidence, move them aside "
            "and start the service again to begin a new log",
        )


class LogState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def _count_newlines(fd: int) -> int:
    count, offset = 0, 0
    while chunk := os.pread(fd, 1 << 20, offset):
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


class AuditLog:
    """An open audit log that appends signed, chained entries.

    Use :meth:`open`; ``log(event, **data)`` appends one entry and returns it
    once it is on disk (written and fsync'd). Thread-safe. Raises AuditError
    when the entry cannot be written (the file is left as it was before the
    call) and StateError after :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        signing_key: SigningKey,
        next_seq: int,
        prev_hash: str,
        clock: Callable[[], datetime],
        head_every: int = 1,
    ) -> None:
        self.path = path
        self.head_path = head_path(path)
        self._fd = fd
        self._key = signing_key
        self._seq = next_seq
        self._prev = prev_hash
        self._clock = clock
        self._head_every = max(1, head_every)
        self._unanchored = 0  # entries written since the head was last anchored
        self._lock = threading.Lock()
        self.state = LogState.OPEN

    @classmethod
    def open(
        cls,
        path: str | Path,
        signing_key: SigningKey,
        clock: Callable[[], datetime] = _utc_now,
        head_every: int = 1,
        **opened_data: Any,
    ) -> AuditLog:
        """Open (or create, mode 0600) the log at ``path`` and write a ``log.opened`` entry.

        An existing log's last entry must verify with ``signing_key``, and the
        log must reach the head anchored in ``<path>.head`` when there is one;
        otherwise AuditError (a log that fails at its tail may have been edited
        or cut: keep it as evidence and start a new file). ``opened_data`` goes
        into the ``log.opened`` entry. The head is anchored every
        ``head_every`` entries and at :meth:`close`.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise AuditError(f"audit folder {path.parent} does not exist", "create it (mode 0700)")
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(
                f"cannot open audit log {path}: {exc}", "check its permissions"
            ) from None
        try:
            next_seq, prev, torn, unterminated = cls._resume_point(path, fd, signing_key)
            _check_reaches_head(path, signing_key, next_seq - 1, prev)
            audit = cls(path, fd, signing_key, next_seq, prev, clock, head_every)
            data = dict(opened_data, device_key=bytes(signing_key.verify_key).hex())
            if torn is not None:
                data["torn_line"], data["torn_sha256"] = torn
            with audit._lock:
                audit._append(OPENED, data, terminate_tail=unterminated)
        except BaseException:
            os.close(fd)
            raise
        return audit

    @staticmethod
    def _resume_point(
        path: Path, fd: int, key: SigningKey
    ) -> tuple[int, str, tuple[int, str] | None, bool]:
        """(next seq, prev hash, torn line or None, whether the file lacks its last newline)."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS, None, False
        ends_with_newline = os.pread(fd, 1, size - 1) == b"\n"
        start = max(0, size - _TAIL_BYTES)
        tail = os.pread(fd, size - start, start)
        lines = (tail[:-1] if ends_with_newline else tail).split(b"\n")
        fix = (
            f"run `edge audit verify {path}`; keep the file as evidence, move it aside "
            "and start the service again to begin a new log"
        )
        torn: tuple[int, str] | None = None
        last = _parse_entry(lines[-1])
        if isinstance(last, str) and not ends_with_newline:
            torn = (_count_newlines(fd) + 1, hashlib.sha256(lines[-1]).hexdigest())
            if len(lines) == 1 and start == 0:
                return 0, GENESIS, torn, True  # the torn line is all there is
            last = _parse_entry(lines[-2]) if len(lines) > 1 else "too long"
        if isinstance(last, str):
            raise AuditError(f"audit log {path} ends with a broken entry ({last})", fix)
        if entry_hash(last) != last["hash"] or not _check_signature(last, key.verify_key):
            raise AuditError(
                f"the last entry of audit log {path} does not verify with this device's key", fix
            )
        return last["seq"] + 1, last["hash"], torn, not ends_with_newline

    def _append(self, event: str, data: dict[str, Any], terminate_tail: bool = False) -> dict:
        body = {
            "seq": self._seq,
            "time": _iso(self._clock()),
            "event": event,
            "data": data,
            "prev": self._prev,
        }
        digest = entry_hash(body)
        sig = self._key.sign(_SIGNED_PREFIX + bytes.fromhex(digest)).signature.hex()
        entry = {**body, "hash": digest, "sig": sig}
        line = (b"\n" if terminate_tail else b"") + canonical(entry) + b"\n"
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            # Take back our own partial line so the chain stays clean.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            raise AuditError(
                f"cannot write to audit log {self.path}: {exc.strerror or exc}",
                "free disk space or fix the folder's permissions",
            ) from None
        self._seq, self._prev = self._seq + 1, digest
        self._unanchored += 1
        if self._unanchored >= self._head_every:
            self._anchor(str(body["time"]))
        return entry

    def _anchor(self, time: str) -> None:
        """Write the signed head beside the log and to the journal (caller holds the lock).

        The entry is already on disk, so a head that cannot be written is logged
        (ERROR), not raised: the next entry or close tries again.
        """
        head = sign_head(self._seq - 1, self._prev, time, self._key)
        log.info(
            "%s %s seq=%d hash=%s sig=%s", JOURNAL_PREFIX, self.path, head.seq, head.hash, head.sig
        )
        try:
            write_atomic(self.head_path, head.to_json() + "\n", 0o600)
        except OSError as exc:
            log.error("cannot write audit head %s: %s", self.head_path, exc.strerror or exc)
            return
        self._unanchored = 0

    def log(self, event: str, **data: Any) -> dict[str, Any]:
        """Append one entry; returns it (with seq, hash and sig) once it is on disk."""
        if not event or not isinstance(event, str):
            raise AuditError("audit event name must be a non-empty string")
        if event == OPENED:
            raise AuditError(f"event {OPENED!r} is written by AuditLog.open only")
        payload = _jsonable(data)
        with self._lock:
            if self.state is not LogState.OPEN:
                raise StateError(f"audit log {self.path} is {self.state.value}", "open it again")
            return self._append(event, payload)

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry written: copy it elsewhere to anchor the log."""
        with self._lock:
            return self._seq - 1, self._prev

    def close(self) -> None:
        """Anchor the head (when entries are unanchored) and close the file."""
        with self._lock:
            if self.state is LogState.OPEN:
                if self._unanchored:
                    self._anchor(_iso(self._clock()))
                os.close(self._fd)
                self.state = LogState.CLOSED

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- typed events

    def process_start(
        self,
        version: str,
        model_digests: Mapping[str, str],
        plan_digest: str | None,
        config_digest: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        return self.log(
            "process.start",
            version=version,
            models=dict(model_digests),
            plan=plan_digest,
            config=config_digest,
            pid=os.getpid(),
            **extra,
        )

    def model_refused(self, reason: str, **extra: Any) -> dict[str, Any]:
        """A model failed its check at start (missing, SHA-256 differs): the process refused."""
        return self.log("model.refused", reason=reason, **extra)

    def process_stop(self, reason: str, frames: int, **extra: Any) -> dict[str, Any]:
        return self.log("process.stop", reason=reason, frames=frames, **extra)

    def plan_loaded(self, path: str, digest: str, signer: str, **extra: Any) -> dict[str, Any]:
        return self.log("plan.loaded", path=path, digest=digest, signer=signer, **extra)

    def plan_refused(self, path: str, reason: str, **extra: Any) -> dict[str, Any]:
        return self.log("plan.refused", path=path, reason=reason, **extra)

    def registration_accepted(self, frame: int, **quality: Any) -> dict[str, Any]:
        """``quality``: the figures the decision used, e.g. fre_mm, inliers, tre_mm."""
        return self.log("registration.accepted", frame=frame, **quality)

    def state_changed(self, old: Any, new: Any, frame: int, reason: str = "") -> dict[str, Any]:
        return self.log("state.changed", old=old, new=new, frame=frame, reason=reason)

    def override(self, what: str, by: str, reason: str, **extra: Any) -> dict[str, Any]:
        return self.log("override", what=what, by=by, reason=reason, **extra)

    def headset_enrolled(self, name: str, key_fingerprint: str, **extra: Any) -> dict[str, Any]:
        return self.log("headset.enrolled", name=name, key=key_fingerprint, **extra)

    def headset_connected(
        self, name: str, address: str, key_fingerprint: str = "", **extra: Any
    ) -> dict[str, Any]:
        return self.log(
            "headset.connected", name=name, address=address, key=key_fingerprint, **extra
        )

    def headset_refused(
        self, address: str, key_fingerprint: str, reason: str, **extra: Any
    ) -> dict[str, Any]:
        """A handshake refused: an unenrolled key (or none) from ``address``."""
        return self.log(
            "headset.refused", address=address, key=key_fingerprint, reason=reason, **extra
        )

    def headset_revoked(self, name: str, key_fingerprint: str, reason: str) -> dict[str, Any]:
        return self.log("headset.revoked", name=name, key=key_fingerprint, reason=reason)

    def headset_disconnected(self, name: str, **connection: Any) -> dict[str, Any]:
        return self.log("headset.disconnected", name=name, **connection)

    def calibration_used(self, path: str, digest: str, **figures: Any) -> dict[str, Any]:
        return self.log("calibration.used", path=path, digest=digest, **figures)
