"""The audit log's anchored head: the last entry's seq and hash, signed, kept outside the log.

A hash chain alone cannot show that entries were cut off the *end* of a log
(or that the whole log was emptied). So after every entry (and at close) the
writer anchors the head outside the file, in two places:

* ``<log>.head`` beside the log, replaced atomically (:func:`edge.files.write_atomic`)::

      {"seq": 41, "hash": "<hex of entry 41>", "time": "...", "sig": "<hex>"}

  ``sig`` is an Ed25519 signature by the device key over
  ``b"edge-audit-head/1\\n" + canonical({"seq": .., "hash": ..})`` (a prefix
  of its own, so a head signature is never taken for an entry's);
* one line in the service's journal (logger ``edge.audit``, INFO)::

      audit head: <log> seq=41 hash=<hex> sig=<hex>

``edge audit verify`` reads the head file and fails when the log ends before
the anchored seq or holds another hash there. The journal copy is for when the
head file itself was replaced by an older one or deleted: compare the last
``audit head:`` line of the journal with what ``verify`` prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import AuditError
from edge.files import parse_json

if TYPE_CHECKING:
    from nacl.signing import SigningKey, VerifyKey

HEAD_SUFFIX = ".head"
JOURNAL_PREFIX = "audit head:"
_HEAD_PREFIX = b"edge-audit-head/1\n"
_HEAD_KEYS = frozenset({"seq", "hash", "time", "sig"})
_MAX_HEAD_BYTES = 4096


@dataclass(frozen=True)
class Head:
    """The anchored last entry of a log: its seq and hash, signed by the device key."""

    seq: int
    hash: str
    time: str
    sig: str

    def to_json(self) -> str:
        return json.dumps(
            {"seq": self.seq, "hash": self.hash, "time": self.time, "sig": self.sig},
            sort_keys=True,
        )

    def verifies_with(self, key: VerifyKey) -> bool:
        from nacl.exceptions import BadSignatureError

        try:
            key.verify(_signed_bytes(self.seq, self.hash), bytes.fromhex(self.sig))
        except (BadSignatureError, ValueError):
            return False
        return True


def head_path(log_path: str | Path) -> Path:
    """Where the head of the log at ``log_path`` is anchored: ``<log>.head``."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + HEAD_SUFFIX)


def _signed_bytes(seq: int, digest: str) -> bytes:
    return (
        _HEAD_PREFIX
        + json.dumps({"hash": digest, "seq": seq}, sort_keys=True, separators=(",", ":")).encode()
    )


def sign_head(seq: int, digest: str, time: str, key: SigningKey) -> Head:
    sig = key.sign(_signed_bytes(seq, digest)).signature.hex()
    return Head(seq, digest, time, sig)


def read_head(path: str | Path) -> Head:
    """The head stored at ``path``; AuditError when it cannot be read or is malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AuditError(
            f"cannot read audit head {path}: {exc.strerror or exc}",
            "pass the head file with --head, or --no-head to check the chain only",
        ) from None
    try:
        obj: Any = parse_json(raw, max_bytes=_MAX_HEAD_BYTES)
    except ValueError as exc:
        raise AuditError(f"audit head {path} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or set(obj) != _HEAD_KEYS:
        raise AuditError(f"audit head {path} does not hold seq, hash, time and sig")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise AuditError(f"audit head {path}: seq is not a non-negative integer")
    if not all(isinstance(obj[k], str) for k in ("hash", "time", "sig")):
        raise AuditError(f"audit head {path}: hash, time and sig must be strings")
    return Head(seq, obj["hash"], obj["time"], obj["sig"])
