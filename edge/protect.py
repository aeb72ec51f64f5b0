"""Recordings at rest: private files, sealing to the hospital's key, retention, disk floor.

Recordings contain patients' faces. What this module provides:

* Owner-only files and folders: :func:`ensure_private_dir` (0700),
  :func:`open_private_text` and every file written here (0600 from the first
  byte), :func:`private_umask` for libraries that create their own files.
* :func:`seal_file` / :func:`seal_stream` encrypt to the hospital's X25519
  public key so the device itself cannot read a recording back;
  :func:`open_file` / :func:`open_stream` decrypt with its private key;
  :func:`sealing_finisher` lets the recorder seal instead of renaming. The
  format (libsodium constructions only, through PyNaCl)::

      b"EDGE-SEALED-1\\n"                      magic and version (14 bytes)
      SealedBox(hospital_pk).encrypt(file_key) 80 bytes: the random stream key
      secretstream header                      24 bytes
      { u32 big-endian length, ciphertext }*   XChaCha20-Poly1305 secretstream chunks

  Each chunk is at most ``chunk_bytes`` of plaintext (1 MiB), so any size of
  recording is sealed and opened in constant memory. The secretstream's
  FINAL tag on the last chunk makes truncation, reordering and chunk removal
  detectable; the magic is bound to every chunk as associated data.
* :func:`seal_file` and :func:`open_file` write to a hidden ``.part`` file that
  is renamed into place only when complete (and deleted when writing fails): a
  crash or a full disk never leaves a half-written file under the real name.
  :func:`remove_stale_partials` deletes the in-progress files (these and the
  recorder's) a killed process left.
* :class:`DiskGuard` holds a free-space floor for a folder's file system:
  :mod:`edge.sinks.recording` stops recording before sealing would go below it.
* :func:`prune_recordings` deletes recordings older than the retention period.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from edge.errors import RecordingError

if TYPE_CHECKING:
    from nacl.public import PrivateKey, PublicKey

log = logging.getLogger(__name__)

MAGIC = b"EDGE-SEALED-1\n"
SEALED_SUFFIX = ".sealed"
PART_SUFFIX = ".part"
RECORDING_SUFFIXES = (".db3", ".bag", SEALED_SUFFIX, PART_SUFFIX)
CHUNK_BYTES = 1 << 20
_SEALED_KEY_BYTES = 32 + 48  # key + crypto_box_SEALBYTES
_LENGTH = struct.Struct(">I")


# --------------------------------------------------------------------------- private files


def ensure_private_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) with mode 0700; tighten an existing one to 0700."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("recordings folder %s had mode %04o; setting 0700", path, mode)
        path.chmod(0o700)
    return path


def _create_private(path: Path) -> BinaryIO:
    """A new file opened for writing with mode 0600 (fails if it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # the umask cannot widen it, but a default ACL might
    return os.fdopen(fd, "wb")


def open_private_text(path: str | Path) -> io.TextIOWrapper:
    """``path`` opened for writing text (UTF-8, truncated), mode 0600 from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    return open(fd, "w", encoding="utf-8")  # the caller closes it


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created meanwhile, by any library in this process, are owner-only (umask 077).

    For writers that create their files themselves (librealsense's recorder
    deletes and recreates its output). The umask is process-wide: files other
    threads create meanwhile are owner-only too, which is never less safe.
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _part_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}{PART_SUFFIX}")


def _finish(part: Path, final: Path, fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    os.replace(part, final)
    try:  # make the rename itself durable
        dir_fd = os.open(final.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _discard(part: Path, fh: BinaryIO | None) -> None:
    if fh is not None and not fh.closed:
        # Closing a file on a full disk can fail again; it is deleted anyway.
        with contextlib.suppress(OSError):
            fh.close()
    with contextlib.suppress(FileNotFoundError):
        part.unlink()


# --------------------------------------------------------------------------- sealing


class _Sealer:
    """Encrypts a byte stream in chunks (see the module docstring for the format)."""

    def __init__(self, public_key: PublicKey) -> None:
        from nacl import bindings as b
        from nacl.public import SealedBox

        self._b = b
        key = b.crypto_secretstream_xchacha20poly1305_keygen()
        self._state = b.crypto_secretstream_xchacha20poly1305_state()
        header = b.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self.preamble = MAGIC + SealedBox(public_key).encrypt(key) + header

    def chunk(self, data: bytes, final: bool = False) -> bytes:
        b = self._b
        tag = (
            b.crypto_secretstream_xchacha20poly1305_TAG_FINAL
            if final
            else b.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
        )
        c = b.crypto_secretstream_xchacha20poly1305_push(self._state, data, MAGIC, tag)
        return _LENGTH.pack(len(c)) + c


def seal_stream(
    src: BinaryIO, dst: BinaryIO, public_key: PublicKey, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """Encrypt everything readable from ``src`` to ``dst``; returns plaintext bytes sealed."""
    sealer = _Sealer(public_key)
    dst.write(sealer.preamble)
    total = 0
    pending = src.read(chunk_bytes)
    while True:
        following = src.read(chunk_bytes) if pending else b""
        dst.write(sealer.chunk(pending, final=not following))
        total += len(pending)
        if not following:
            return total
        pending = following


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise RecordingError(f"sealed recording is truncated in its {what}", "copy it again")
    return data


def open_stream(
    src: BinaryIO, dst: BinaryIO, private_key: PrivateKey, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """Decrypt a sealed stream from ``src`` to ``dst``; returns plaintext bytes.

    Raises RecordingError for a file that is not sealed, sealed to another key,
    truncated, reordered or altered (nothing is trusted before its chunk verifies).
    """
    from nacl import bindings as b
    from nacl.exceptions import CryptoError
    from nacl.public import SealedBox

    if src.read(len(MAGIC)) != MAGIC:
        raise RecordingError("not a sealed edge recording", "pass a .sealed file")
    try:
        key = SealedBox(private_key).decrypt(_read_exact(src, _SEALED_KEY_BYTES, "key"))
    except CryptoError:
        raise RecordingError(
            "the recording is not sealed to this key", "use the hospital key it was sealed to"
        ) from None
    header = _read_exact(src, b.crypto_secretstream_xchacha20poly1305_HEADERBYTES, "header")
    state = b.crypto_secretstream_xchacha20poly1305_state()
    b.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    limit = max(chunk_bytes, CHUNK_BYTES) + b.crypto_secretstream_xchacha20poly1305_ABYTES
    total = 0
    while True:
        raw_len = src.read(_LENGTH.size)
        if not raw_len:
            raise RecordingError(
                "sealed recording ends before its final chunk: it was truncated", "copy it again"
            )
        if len(raw_len) != _LENGTH.size:
            raise RecordingError("sealed recording is truncated in a chunk length", "copy it again")
        (length,) = _LENGTH.unpack(raw_len)
        if length > limit:
            raise RecordingError(f"sealed recording has a chunk of {length} bytes", "it is damaged")
        try:
            plain, tag = b.crypto_secretstream_xchacha20poly1305_pull(
                state, _read_exact(src, length, "chunk"), MAGIC
            )
        except CryptoError:
            raise RecordingError(
                f"sealed recording chunk at byte {total} does not verify: altered or reordered",
                "it cannot be trusted; use another copy",
            ) from None
        dst.write(plain)
        total += len(plain)
        if tag == b.crypto_secretstream_xchacha20poly1305_TAG_FINAL:
            if src.read(1):
                raise RecordingError(
                    "sealed recording has data after its final chunk", "it is damaged"
                )
            return total


def seal_file(
    src: str | Path,
    public_key: PublicKey,
    dst: str | Path | None = None,
    remove_plaintext: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> Path:
    """Seal ``src`` to ``dst`` (default ``src`` + ``.sealed``), mode 0600, then delete ``src``.

    The sealed file appears under its name only when complete. Raises
    RecordingError (the partial file removed, ``src`` kept) when writing fails.
    """
    src = Path(src)
    final = Path(dst) if dst is not None else src.with_name(src.name + SEALED_SUFFIX)
    part = _part_path(final)
    fh: BinaryIO | None = None
    try:
        with src.open("rb") as plain:
            fh = _create_private(part)
            seal_stream(plain, fh, public_key, chunk_bytes)
            _finish(part, final, fh)
    except OSError as exc:
        _discard(part, fh)
        raise RecordingError(
            f"cannot seal {src}: {exc.strerror or exc}", "free disk space and seal it again"
        ) from None
    if remove_plaintext:
        src.unlink()
    return final


def sealed_path(path: str | Path) -> Path:
    """Where ``path`` is sealed to: its name with ``.sealed`` appended."""
    path = Path(path)
    return path.with_name(path.name + SEALED_SUFFIX)


def sealing_finisher(public_key: PublicKey) -> Callable[[Path, Path], Path]:
    """A ``finish(temp, final)`` for a writer that renames its temp file into place:
    seals ``temp`` to ``final`` + ``.sealed`` instead and deletes ``temp``; returns
    the sealed path. Raises RecordingError (``temp`` kept) when sealing fails."""

    def finish(temp: Path, final: Path) -> Path:
        return seal_file(temp, public_key, dst=sealed_path(final))

    return finish


def unsealed_path(src: str | Path) -> Path:
    """Where a sealed recording opens to by default: its name without ``.sealed``."""
    src = Path(src)
    if not src.name.endswith(SEALED_SUFFIX):
        raise RecordingError(f"{src} does not end in {SEALED_SUFFIX}", "pass --out")
    return src.with_name(src.name[: -len(SEALED_SUFFIX)])


def open_file(src: str | Path, private_key: PrivateKey, dst: str | Path) -> Path:
    """Decrypt a sealed recording to ``dst`` (mode 0600); no output unless it all verifies."""
    src, final = Path(src), Path(dst)
    if final.exists():
        raise RecordingError(f"{final} already exists", "choose another --out")
    part = _part_path(final)
    fh: BinaryIO | None = None
    try:
        with src.open("rb") as sealed:
            fh = _create_private(part)
            open_stream(sealed, fh, private_key)
            _finish(part, final, fh)
    except FileNotFoundError:
        _discard(part, fh)
        raise RecordingError(f"{src} does not exist", "check the path") from None
    except OSError as exc:
        _discard(part, fh)
        raise RecordingError(f"cannot decrypt {src}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(part, fh)
        raise
    return final


# --------------------------------------------------------------------------- free space


class DiskGuard:
    """Says whether a folder's file system still has ``min_free_bytes`` free."""

    def __init__(
        self,
        folder: str | Path,
        min_free_bytes: int,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.folder = str(folder)
        self.min_free_bytes = min_free_bytes
        self._statvfs = statvfs

    def free_bytes(self) -> int:
        st = self._statvfs(self.folder)
        return st.f_bavail * st.f_frsize

    def ok(self) -> bool:
        return self.free_bytes() >= self.min_free_bytes


# --------------------------------------------------------------------------- leftovers

# In-progress names: the recorder's ``.NAME.partial-PID.db3`` (edge.sources.recording's
# temp_path_for) with its truth sidecar and SQLite side files, and the sealer's
# ``.NAME.PID.part`` (_part_path).
_PARTIAL_NAME = re.compile(
    r"^\..+\.partial-(?P<pid>\d+)\.(db3|db3-journal|db3-wal|db3-shm|truth\.jsonl)$"
    r"|^\..+\.(?P<part_pid>\d+)\.part$"
)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_stale_partials(
    folder: str | Path, alive: Callable[[int], bool] = _process_alive
) -> list[Path]:
    """Delete the in-progress files in ``folder`` whose writing process is gone.

    A process killed while recording or sealing (SIGKILL, power loss) leaves
    its temporary files (always 0600); the process id in their names tells
    whether their writer still runs. Returns what was deleted.
    """
    deleted = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        match = _PARTIAL_NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if alive(int(match.group("pid") or match.group("part_pid"))):
            continue
        path = Path(entry.path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.warning("deleted %s: left by a recording process that was killed", path)
            deleted.append(path)
    return deleted


# --------------------------------------------------------------------------- retention


def prune_recordings(
    folder: str | Path,
    retention_days: int,
    now: Callable[[], float] = time.time,
    dry_run: bool = False,
) -> list[Path]:
    """Delete recordings in ``folder`` last modified more than ``retention_days`` ago.

    Only regular files directly in ``folder`` whose names end in a recording
    suffix (.db3, .bag, .sealed, .part) are considered; links, sub-folders and
    other files are left alone. ``retention_days == 0`` deletes nothing.
    Returns what was (or, with ``dry_run``, would be) deleted.
    """
    if retention_days < 0:
        raise RecordingError(f"retention_days must be >= 0, got {retention_days}")
    root = Path(folder)
    if not root.is_dir():
        raise RecordingError(f"recordings folder {root} does not exist", "check the path")
    if retention_days == 0:
        return []
    cutoff = now() - retention_days * 86400.0
    deleted = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            continue
        if not entry.name.endswith(RECORDING_SUFFIXES):
            continue
        if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
            continue
        path = Path(entry.path)
        if not dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            log.info("deleted recording %s (older than %d days)", path, retention_days)
        deleted.append(path)
    return deleted
