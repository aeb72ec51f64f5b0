"""Key files shared by the audit log and recording protection.

A key file is a small JSON object ``{"kind": ..., "algorithm": ..., <field>: <hex>}``
(the same shape as the plan keys, no pickle). Private key files are written
with mode 0600 and refused on load when group or others can read them: a
device key readable by other users is no longer a device key.

Kinds used here:

* ``edge-device-private-key`` / ``edge-device-public-key``: Ed25519, signs the audit log.
* ``edge-recording-private-key`` / ``edge-recording-public-key``: X25519, the
  hospital's key pair that recordings are sealed to.
"""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import KeyFileError
from edge.files import SMALL_JSON_BYTES, read_json, write_atomic

DEVICE_PRIVATE_KIND = "edge-device-private-key"
DEVICE_PUBLIC_KIND = "edge-device-public-key"
RECORDING_PRIVATE_KIND = "edge-recording-private-key"
RECORDING_PUBLIC_KIND = "edge-recording-public-key"

if TYPE_CHECKING:
    from nacl.public import PrivateKey, PublicKey
    from nacl.signing import SigningKey, VerifyKey


def check_private_permissions(path: str | Path) -> None:
    """Raise KeyFileError unless only the owner can read ``path`` (mode 0600 or 0400)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist", "check the path") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path} has mode {mode:04o}", f"run chmod 600 {path}")


def fingerprint(public_key: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def write_key_pair(
    prefix: str | Path,
    private_doc: dict[str, str],
    public_doc: dict[str, str],
    overwrite: bool,
    command: str,
) -> KeyPair:
    prefix = Path(prefix)
    pair = KeyPair(Path(f"{prefix}.key"), Path(f"{prefix}.pub"))
    folder = pair.private.parent
    if not folder.is_dir():
        try:  # a new key folder is private, like the key in it
            folder.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise KeyFileError(
                f"cannot create folder {folder}: {exc.strerror}", f"check the path in `{command}`"
            ) from None
    if not overwrite:
        for p in (pair.private, pair.public):
            if p.exists():
                raise KeyFileError(f"{p} already exists", "choose another name or pass --force")
    write_atomic(pair.private, (json.dumps(private_doc, indent=2) + "\n").encode(), 0o600)
    write_atomic(pair.public, (json.dumps(public_doc, indent=2) + "\n").encode(), 0o644)
    return pair


def generate_device_key(prefix: str | Path, overwrite: bool = False) -> KeyPair:
    """Make the device's Ed25519 audit signing key: PREFIX.key (0600) and PREFIX.pub."""
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    return write_key_pair(
        prefix,
        {"kind": DEVICE_PRIVATE_KIND, "algorithm": "ed25519", "seed": bytes(key).hex()},
        {
            "kind": DEVICE_PUBLIC_KIND,
            "algorithm": "ed25519",
            "public_key": bytes(key.verify_key).hex(),
        },
        overwrite,
        "edge audit keygen --out",
    )


def generate_recording_key(prefix: str | Path, overwrite: bool = False) -> KeyPair:
    """Make the hospital's X25519 key pair that recordings are sealed to."""
    from nacl.public import PrivateKey

    key = PrivateKey.generate()
    return write_key_pair(
        prefix,
        {"kind": RECORDING_PRIVATE_KIND, "algorithm": "x25519", "secret": bytes(key).hex()},
        {
            "kind": RECORDING_PUBLIC_KIND,
            "algorithm": "x25519",
            "public_key": bytes(key.public_key).hex(),
        },
        overwrite,
        "edge recordings keygen --out",
    )


def read_key_field(
    path: str | Path, kind: str, field: str, private: bool, made_by: str, what: str = ""
) -> bytes:
    """The 32-byte hex ``field`` of a key file of ``kind``; private files must be 0600.

    ``what`` names the kind for people ("an edge plan private key"); raises KeyFileError.
    """
    path = Path(path)
    fix = f"pass a file made by `{made_by}`"
    try:
        data = read_json(path, max_bytes=SMALL_JSON_BYTES)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist", fix) from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}", fix) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        raise KeyFileError(f"{path} is not {what or 'a ' + kind} (it holds {found!r})", fix)
    if private:
        check_private_permissions(path)
    value = data.get(field)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"key file {path} has no valid '{field}' (32 bytes as hex)", fix)
    return raw


def load_device_signing_key(path: str | Path) -> SigningKey:
    """The device's Ed25519 signing key; refuses a file others can read."""
    from nacl.signing import SigningKey

    return SigningKey(
        read_key_field(path, DEVICE_PRIVATE_KIND, "seed", True, "edge audit keygen --out DIR")
    )


def load_device_verify_key(path: str | Path) -> VerifyKey:
    """The device's Ed25519 public key (.pub file), or the public half of a .key file."""
    from nacl.signing import VerifyKey

    try:
        return VerifyKey(
            read_key_field(path, DEVICE_PUBLIC_KIND, "public_key", False, "edge audit keygen")
        )
    except KeyFileError:
        try:
            return load_device_signing_key(path).verify_key
        except KeyFileError:
            pass
        raise


def load_recording_public_key(path: str | Path) -> PublicKey:
    """The hospital's X25519 public key that recordings are sealed to."""
    from nacl.public import PublicKey

    return PublicKey(
        read_key_field(
            path, RECORDING_PUBLIC_KIND, "public_key", False, "edge recordings keygen --out PREFIX"
        )
    )


def load_recording_private_key(path: str | Path) -> PrivateKey:
    """The hospital's X25519 private key; refuses a file others can read."""
    from nacl.public import PrivateKey

    return PrivateKey(
        read_key_field(
            path, RECORDING_PRIVATE_KIND, "secret", True, "edge recordings keygen --out PREFIX"
        )
    )
