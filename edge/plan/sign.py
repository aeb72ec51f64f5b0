"""Plan signatures: a canonical digest of the plan folder, signed with Ed25519.

The digest covers every regular file in the plan folder (recursively), except
the signature file itself: SHA-256 over a header line and one line per file,
``<relative/posix/path>\\t<sha256 of the file>\\n``, sorted by path. Renaming,
adding, removing or changing any byte of any file changes the digest.

Keys and signatures are small JSON files (no pickle). See docs/plan-format.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edge.errors import KeyFileError, PlanError
from edge.files import SMALL_JSON_BYTES, read_json, write_atomic
from edge.keys import KeyPair, read_key_field, write_key_pair

SIGNATURE_FILE = "plan.sig"
DIGEST_HEADER = b"edge-plan-digest/1\n"
SIGNATURE_SCHEMA = "edge-plan-signature/1"
PRIVATE_KIND = "edge-plan-private-key"
PUBLIC_KIND = "edge-plan-public-key"
_SIGNED_MESSAGE_PREFIX = b"edge-plan-signature/1\n"  # domain separation: only plan digests


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plan_files(folder: str | Path) -> list[str]:
    """Relative POSIX paths of every file the digest covers, sorted.

    Raises PlanError for a missing folder, a symbolic link (its target could
    change without the digest noticing) or a file name with control characters.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PlanError(
            f"plan folder {root} does not exist", "pass the folder that holds plan.json"
        )
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise PlanError(
                    f"plan folder contains a symbolic link {Path(dirpath) / d}",
                    "copy the real files into the plan folder",
                )
        for f in filenames:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            if p.is_symlink() or not p.is_file():
                raise PlanError(
                    f"plan folder contains {rel}, which is not a regular file",
                    "copy the real files into the plan folder",
                )
            if any(ord(c) < 32 for c in rel):
                raise PlanError(
                    f"plan file name {rel!r} contains control characters", "rename the file"
                )
            if rel != SIGNATURE_FILE:
                names.append(rel)
    return sorted(names)


def plan_digest(folder: str | Path) -> str:
    """The canonical digest (hex SHA-256) of a plan folder; see the module docstring."""
    root = Path(folder)
    h = hashlib.sha256(DIGEST_HEADER)
    for rel in plan_files(root):
        try:
            file_hash = _file_sha256(root / rel)
        except OSError as exc:
            raise PlanError(
                f"cannot read plan file {rel}: {exc}", "check its permissions"
            ) from None
        h.update(f"{rel}\t{file_hash}\n".encode())
    return h.hexdigest()


def _read_json(path: Path, what: str, fix: str) -> dict[str, object]:
    try:
        data = read_json(path, max_bytes=SMALL_JSON_BYTES)
    except FileNotFoundError:
        raise PlanError(f"{what} {path} does not exist", fix) from None
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read {what} {path}: {exc}", fix) from None
    if not isinstance(data, dict):
        raise PlanError(f"{what} {path} is not a JSON object", fix)
    return data


def _hex_field(data: dict[str, object], key: str, size: int, what: str, path: Path) -> bytes:
    value = data.get(key)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise PlanError(
            f"{what} {path} has no valid '{key}' ({size} bytes as hex)",
            "regenerate it with `edge plan keygen` / `edge plan sign`",
        )
    return raw


def generate_keypair(prefix: str | Path, overwrite: bool = False) -> KeyPair:
    """Make an Ed25519 key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.

    Raises PlanError when either file exists and ``overwrite`` is False.
    """
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    try:
        return write_key_pair(
            prefix,
            {"kind": PRIVATE_KIND, "algorithm": "ed25519", "seed": bytes(key).hex()},
            {
                "kind": PUBLIC_KIND,
                "algorithm": "ed25519",
                "public_key": bytes(key.verify_key).hex(),
            },
            overwrite,
            "edge plan keygen --out",
        )
    except KeyFileError as exc:
        raise PlanError(exc.problem, exc.fix) from None


def _read_key(path: str | Path, kind: str, field: str, private: bool, what: str) -> bytes:
    try:
        return read_key_field(path, kind, field, private, "edge plan keygen", what)
    except KeyFileError as exc:
        raise PlanError(exc.problem, exc.fix) from None


def load_private_key(path: str | Path) -> bytes:
    """The 32-byte Ed25519 seed from a private key file made by :func:`generate_keypair`."""
    return _read_key(path, PRIVATE_KIND, "seed", True, "an edge plan private key")


def load_public_key(path: str | Path) -> bytes:
    """The 32-byte Ed25519 public key from a file made by :func:`generate_keypair`."""
    return _read_key(path, PUBLIC_KIND, "public_key", False, "an edge plan public key")


def sign_plan(folder: str | Path, seed: bytes) -> str:
    """Sign a plan folder with an Ed25519 seed; writes plan.sig and returns the digest."""
    from nacl.signing import SigningKey

    root = Path(folder)
    digest = plan_digest(root)
    key = SigningKey(seed)
    signature = key.sign(_SIGNED_MESSAGE_PREFIX + bytes.fromhex(digest)).signature
    text = _signature_text(digest, bytes(key.verify_key), bytes(signature))
    write_atomic(root / SIGNATURE_FILE, text, 0o644)
    return digest


def _signature_text(digest: str, public_key: bytes, signature: bytes) -> bytes:
    """The one canonical form of plan.sig (verify insists on it, byte for byte)."""
    doc = {
        "schema": SIGNATURE_SCHEMA,
        "algorithm": "ed25519",
        "digest": digest,
        "public_key": public_key.hex(),
        "signature": signature.hex(),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def verify_plan(folder: str | Path, public_key: bytes) -> str:
    """Check plan.sig against the folder and a trusted public key; returns the digest.

    Raises PlanError when the plan is unsigned, a file changed since signing,
    or the signature was not made by ``public_key``.
    """
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    root = Path(folder)
    sig_path = root / SIGNATURE_FILE
    if not sig_path.is_file():
        raise PlanError(
            f"plan {root} is not signed (no {SIGNATURE_FILE})",
            "sign it with `edge plan sign DIR --key KEY`, or start with the explicit unsigned-plan "
            "override",
        )
    data = _read_json(sig_path, "signature file", "sign the plan again with `edge plan sign`")
    if data.get("schema") != SIGNATURE_SCHEMA or data.get("algorithm") != "ed25519":
        raise PlanError(
            f"{sig_path} is not an {SIGNATURE_SCHEMA} Ed25519 signature",
            "sign the plan again with `edge plan sign`",
        )
    signature = _hex_field(data, "signature", 64, "signature file", sig_path)
    signed_digest = _hex_field(data, "digest", 32, "signature file", sig_path).hex()
    stored_key = _hex_field(data, "public_key", 32, "signature file", sig_path)
    if sig_path.read_bytes() != _signature_text(signed_digest, stored_key, signature):
        raise PlanError(
            f"{sig_path} was edited (it is not in the form `edge plan sign` writes)",
            "sign the plan again with `edge plan sign`",
        )
    if stored_key != public_key:
        raise PlanError(
            f"plan {root} was signed by another key ({stored_key.hex()[:16]}...)",
            "pass the signer's public key with --pubkey, or sign with your own key",
        )
    digest = plan_digest(root)
    if digest != signed_digest:
        raise PlanError(
            f"plan {root} was changed after it was signed (digest {digest[:16]}... "
            f"!= signed {signed_digest[:16]}...)",
            "restore the plan as exported by planning, or review it and sign it again",
        )
    try:
        VerifyKey(public_key).verify(_SIGNED_MESSAGE_PREFIX + bytes.fromhex(digest), signature)
    except BadSignatureError:
        raise PlanError(
            f"the signature of plan {root} is not valid for the trusted public key",
            "sign the plan with the matching private key, or pass the right --pubkey",
        ) from None
    return digest
