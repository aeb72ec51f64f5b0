"""Files in and out: atomic writes, and bounded reads of what others wrote.

Writing: :func:`write_atomic` never leaves a half-written file at the target.

Reading: every JSON file the edge reads (plans, signatures, markups, key files,
audit lines, truth sidecars, calibration files, presets, motion files) goes
through :func:`read_json` / :func:`parse_json`, which bound the input before
Python's parser sees it: size in bytes, nesting depth (the parser recurses:
a file nested 100,000 deep would end in a RecursionError), NUL characters
(a ``"\\u0000"`` in a file name breaks every path call) and duplicate keys
(two readers could disagree on which one counts). TOML files (the
configuration, display profiles, the model manifest) go through
:func:`read_toml`: size first, and a file nested deeper than the parser can
recurse is a ValueError, not a RecursionError. Images are checked by
:func:`image_size` from their header before a decoder allocates them.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MAX_JSON_BYTES = 4 * 1024 * 1024  # plans, markups, calibration files: far below this
MAX_JSON_DEPTH = 32  # the deepest file the edge writes (Slicer markups) nests 6 deep
SMALL_JSON_BYTES = 64 * 1024  # key files and plan signatures: a few hundred bytes
MAX_TOML_BYTES = 1024 * 1024  # the example configuration is 8 KiB, the model manifest 5 KiB

# A JSON string literal (unrolled loop: no backtracking), and what is not a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def write_atomic(path: str | Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, then os.replace.

    The file has ``mode`` from the moment it exists, so a private file (0600)
    is never readable by others, not even briefly. The folder must exist.
    Text is written as UTF-8. Returns ``path``.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- JSON


def _nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (exact for valid JSON), without recursion."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _check_no_nul(doc: Any) -> None:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise ValueError(r"it holds a NUL character (\u0000), which no name or text may")
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse_json(
    data: bytes | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Parse one JSON document within bounds.

    Raises ValueError (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are
    ValueErrors) saying what is wrong: over ``max_bytes`` (UTF-8), nested deeper
    than ``max_depth``, a NUL character anywhere, a duplicate key, not UTF-8,
    or not JSON. Callers wrap it in their own EdgeError with the file's name.
    """
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise ValueError(f"it is larger than {max_bytes} bytes, the limit")
    text = data if isinstance(data, str) else data.decode("utf-8")
    if "\x00" in text:
        raise ValueError("it holds a NUL byte, which no JSON text may")
    depth = _nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f"it nests {depth} levels deep; the limit is {max_depth}")
    doc = json.loads(text, object_pairs_hook=_unique_keys)
    if "\\u0000" in text:  # only an escape can put a NUL into a parsed string
        _check_no_nul(doc)
    return doc


def read_json(
    path: str | Path, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Read and parse a JSON file within bounds (see :func:`parse_json`).

    Reads at most ``max_bytes + 1`` bytes. Raises OSError (FileNotFoundError
    when missing) or ValueError (over a limit, not UTF-8, not JSON).
    """
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    return parse_json(data, max_bytes=max_bytes, max_depth=max_depth)


# --------------------------------------------------------------------------- TOML


def read_toml(path: str | Path, *, max_bytes: int = MAX_TOML_BYTES) -> dict[str, Any]:
    """Read and parse a TOML file within bounds.

    Reads at most ``max_bytes + 1`` bytes. Raises OSError (FileNotFoundError
    when missing) or ValueError whose message stands alone after the file's
    name: over ``max_bytes``, not UTF-8, not TOML, or nested deeper than the
    parser can recurse (tomllib recurses per nested array or inline table).
    """
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"it is larger than {max_bytes} bytes, the limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_toml(text)


def parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML text; raises ValueError (not TOML, or nested too deep) as read_toml does."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"it is not valid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(
            "it nests arrays or inline tables deeper than the parser can follow"
        ) from None


# --------------------------------------------------------------------------- images

MAX_IMAGE_SIDE_PX = 8192  # 8192 x 8192 x 3 bytes = 192 MiB decoded: the most we allow
MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size): C0-CF except DHT, JPG and DAC.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field


def image_size(data: bytes | memoryview) -> tuple[str, int, int]:
    """(format, width, height) read from a PNG's IHDR or a JPEG's SOF header, without decoding.

    Raises ValueError when ``data`` is neither a PNG nor a JPEG or its header
    is cut short, so nothing undeclared reaches a decoder.
    """
    head = bytes(data[:8])
    if head == _PNG_MAGIC:
        if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
            raise ValueError("its PNG header is cut short (no IHDR)")
        width, height = struct.unpack(">II", bytes(data[16:24]))
        return "png", width, height
    if head[:2] == b"\xff\xd8":
        return ("jpeg", *_jpeg_size(bytes(data)))
    raise ValueError("it is not a PNG or JPEG file")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"its JPEG header is malformed at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            if height == 0:
                raise ValueError("its JPEG header leaves the height to a later DNL marker")
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            raise ValueError("its JPEG header has no frame size before the image data")
        i += 2 + length
    raise ValueError("its JPEG header is cut short (no frame size)")


def check_image_size(
    data: bytes | memoryview, max_side_px: int = MAX_IMAGE_SIDE_PX
) -> tuple[str, int, int]:
    """:func:`image_size`, refusing (ValueError) an empty side or one over ``max_side_px``."""
    fmt, width, height = image_size(data)
    if not (0 < width <= max_side_px and 0 < height <= max_side_px):
        raise ValueError(
            f"its header says {width}x{height} pixels; the limit is {max_side_px}x{max_side_px}"
        )
    return fmt, width, height
