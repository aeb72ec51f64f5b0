"""The images of a librealsense ``.db3`` recording, read from its SQLite file directly.

A librealsense 2.5x recording is a ROS 2 bag in one SQLite file: a ``topics``
table and a ``messages`` table of CDR-serialised ROS messages. Each stream has
``/device_D/sensor_S/<Stream>_K/image/data`` (``sensor_msgs/msg/Image``, or
``CompressedImage`` on ``.../data/compressed`` and ``.../data/compressedDepth``
when librealsense compressed it with PNG) and ``.../image/metadata``
(``std_msgs/msg/String``: ``key=value;...`` with the frame's device timestamp and
number), written in the same transaction time as its image.

Why not librealsense's own playback for the pixels: it hands frames over on
one thread per sensor, and its pause/resume (the only flow control a Python
consumer has) re-seeks the file by the last published time, which lost the last
colour frame of a short recording in about one run of eight. Reading the
messages in file order is exact, needs no threads and gives frame access by
index. librealsense still reads the recording's device description (intrinsics,
extrinsics, depth scale), which it does without streaming.

Every length in a message is checked against the message before it is used.
"""

from __future__ import annotations

import re
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import SourceError
from edge.files import image_size

_IMAGE_TOPIC = re.compile(
    r"^/device_(\d+)/sensor_(\d+)/(Color|Depth)_(\d+)/image/data(/compressed|/compressedDepth)?$"
)
_MAX_SIDE = 16384  # pixels; larger images are not camera frames
_CDR_LE = b"\x00\x01"
_COMPRESSED_DEPTH_HEADER = 12  # image_transport's ConfigHeader: int32 format, 2 x float32
_U32 = struct.Struct("<I")
# Python 3.11+ reads a blob straight from SQLite's pages into one bytes object.
_BLOBOPEN = hasattr(sqlite3.Connection, "blobopen")
# SQLite maps up to this much of the file (it clamps to its own build limit, about 2 GiB,
# and reads any rest as before): a message's pages are then copied out of the mapping,
# not fetched by one read() per 4 kB page (measured: 0.28 -> 0.06-0.10 ms per 1 MB image).
# The recording is opened read-only and is not changed while it plays (the recorder
# writes a temporary file and renames it at close).
_MMAP_BYTES = 1 << 40


@dataclass(frozen=True)
class ImageRef:
    """One image message: where it is and when it was taken (device clock).

    ``row`` is the message's SQLite rowid (its ``id`` in the bags librealsense writes).
    """

    message_id: int
    device_ms: float
    row: int


class Db3Images:
    """The colour and depth image messages of one ``.db3``, in file order.

    Opens the file read-only; :meth:`decode` reads one message. Raises
    SourceError when the file has no colour stream or a message is malformed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            self._con.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
            self.color, self._color_compressed = self._stream("Color")
            self.depth, self._depth_compressed = self._stream("Depth")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise SourceError(
                f"recording {path} is truncated or corrupt ({exc})", "record it again"
            ) from None
        except BaseException:
            self.close()
            raise
        if not self.color:
            self.close()
            raise SourceError(f"recording {path} has no color frames", "record with color enabled")

    def close(self) -> None:
        self._con.close()

    def _stream(self, kind: str) -> tuple[list[ImageRef], bool]:
        """The first ``kind`` stream's images, ordered as recorded, with their device times."""
        topics = []
        for tid, name in self._con.execute("SELECT id, name FROM topics"):
            m = _IMAGE_TOPIC.match(name)
            if m and m.group(3) == kind:
                topics.append((tid, name, m.group(5) is not None))
        if not topics:
            return [], False
        tid, name, compressed = sorted(topics, key=lambda t: t[1])[0]
        meta_name = name[: name.index("/image/data")] + "/image/metadata"
        stamps: dict[int, float] = {}
        meta = self._con.execute(
            "SELECT m.timestamp, m.data FROM messages m JOIN topics t ON m.topic_id = t.id "
            "WHERE t.name = ?",
            (meta_name,),
        )
        for bag_ns, data in meta:
            device_ms = metadata_timestamp_ms(bytes(data))
            if device_ms is not None:
                stamps[int(bag_ns)] = device_ms
        refs = []
        rows = self._con.execute(
            "SELECT id, rowid, timestamp FROM messages WHERE topic_id = ? ORDER BY timestamp, id",
            (tid,),
        )
        for message_id, row, bag_ns in rows:
            device_ms = stamps.get(int(bag_ns))
            if device_ms is None:  # no metadata: the image header's stamp
                device_ms = _header_stamp_ms(self._blob(int(message_id), int(row)))
            refs.append(ImageRef(int(message_id), device_ms, int(row)))
        return refs, compressed

    def _blob(self, message_id: int, row: int) -> bytes:
        """The message's bytes. Where Python has ``Connection.blobopen`` (3.11+) they are
        read from the file's pages into one ``bytes``; a ``SELECT`` copies them twice
        (into SQLite's buffer, then into Python's)."""
        try:
            if _BLOBOPEN:
                with self._con.blobopen("messages", "data", row, readonly=True) as blob:
                    return bytes(blob.read())
            found = self._con.execute(
                "SELECT data FROM messages WHERE rowid = ?", (row,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:  # a damaged page, or a missing row
            raise SourceError(
                f"recording {self.path}: message {message_id} is unreadable ({exc!s:.200})",
                "record it again; a damaged recording cannot be repaired",
            ) from None
        if found is None:
            raise SourceError(f"{self.path}: message {message_id} is missing", "record it again")
        return bytes(found[0])

    def decode(self, ref: ImageRef, kind: str, expect: tuple[int, int, int]) -> np.ndarray:
        """The pixels of ``ref`` as (height, width[, channels]) uint8 or uint16.

        ``expect`` is (height, width, bytes per pixel) from the stream's profile.
        Colour comes back in the recorded channel order (rgb8 or bgr8). An uncompressed
        image is a read-only view of the message's bytes (no copy unless rows are padded).
        """
        data = self._blob(ref.message_id, ref.row)
        compressed = self._color_compressed if kind == "color" else self._depth_compressed
        try:
            if compressed:
                return _decode_compressed(data, kind, expect)
            return _decode_raw(data, expect)
        except (struct.error, ValueError) as exc:
            raise SourceError(
                f"{self.path}: {kind} image message {ref.message_id} is malformed ({exc})",
                "record it again; a damaged recording cannot be repaired",
            ) from None


# --------------------------------------------------------------------------- CDR


class _Cdr:
    """Little-endian CDR reader over one message (alignment counts from after the 4-byte
    encapsulation header)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 4 or data[:2] != _CDR_LE:
            raise ValueError("not a little-endian CDR message")
        self.data = data
        self.pos = 4

    def align(self, n: int) -> None:
        self.pos = 4 + -(-(self.pos - 4) // n) * n

    def u32(self) -> int:
        self.align(4)
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("message ends early")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def octets(self) -> memoryview:
        n = self.u32()
        if n > len(self.data) - self.pos:
            raise ValueError(f"a field of {n} bytes runs past the message's end")
        out = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> str:
        raw = bytes(self.octets())
        return raw.rstrip(b"\x00").decode("utf-8", "replace")

    def header_ms(self) -> float:
        """std_msgs/Header: stamp (int32 s, uint32 ns) and frame id; returns the stamp in ms."""
        sec = self.u32()
        nsec = self.u32()
        self.string()  # frame_id
        sec = sec - (1 << 32) if sec >= 1 << 31 else sec
        return sec * 1000.0 + nsec / 1e6


def _header_stamp_ms(data: bytes) -> float:
    try:
        return _Cdr(data).header_ms()
    except (struct.error, ValueError):
        return 0.0


def metadata_timestamp_ms(data: bytes) -> float | None:
    """The ``timestamp`` in an image metadata string, in ms; None when there is none."""
    try:
        text = _Cdr(data).string()
    except (struct.error, ValueError):
        return None
    for item in text.split(";"):
        key, _, value = item.partition("=")
        if key.strip() == "timestamp":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _check_size(height: int, width: int, expect: tuple[int, int, int]) -> None:
    if not (0 < height <= _MAX_SIDE and 0 < width <= _MAX_SIDE):
        raise ValueError(f"image size {width}x{height} is not plausible")
    if (height, width) != expect[:2]:
        raise ValueError(f"image is {width}x{height}, the stream says {expect[1]}x{expect[0]}")


def _decode_raw(data: bytes, expect: tuple[int, int, int]) -> np.ndarray:
    """sensor_msgs/Image: header, height, width, encoding, is_bigendian, step, data."""
    r = _Cdr(data)
    r.header_ms()
    height, width = r.u32(), r.u32()
    r.string()  # encoding: the stream profile already says it
    bigendian = r.u8()
    step = r.u32()
    pixels = r.octets()
    _check_size(height, width, expect)
    bpp = expect[2]
    if bigendian and bpp > 1:
        raise ValueError("big-endian pixels are not supported")
    if step < width * bpp or len(pixels) < step * height:
        raise ValueError(f"{len(pixels)} bytes of pixels for {width}x{height} at step {step}")
    rows = np.frombuffer(pixels, np.uint8, count=step * height).reshape(height, step)
    if step != width * bpp:  # padded rows: the one case that copies
        rows = np.ascontiguousarray(rows[:, : width * bpp])
    if bpp == 2:
        return rows.view("<u2").reshape(height, width)
    return rows.reshape(height, width, bpp)


def _decode_compressed(data: bytes, kind: str, expect: tuple[int, int, int]) -> np.ndarray:
    """sensor_msgs/CompressedImage as image_transport writes it (PNG; a 12-byte config
    header before the PNG for compressedDepth)."""
    import cv2

    r = _Cdr(data)
    r.header_ms()
    fmt = r.string()
    payload = r.octets()
    if "compressedDepth" in fmt:
        payload = payload[_COMPRESSED_DEPTH_HEADER:]
    _, width, height = image_size(payload)  # before decoding: the header may claim anything
    _check_size(height, width, expect)
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"its '{fmt}' payload does not decode")
    _check_size(image.shape[0], image.shape[1], expect)
    if kind == "depth":
        if image.dtype != np.uint16 or image.ndim != 2:
            raise ValueError(f"depth decodes to {image.dtype} x{image.shape}, not 16-bit")
        return image
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"color decodes to {image.dtype} x{image.shape}, not 8-bit RGB")
    # OpenCV decodes to BGR; "rgb8; png compressed bgr8" was encoded from BGR.
    original = fmt.split(";", 1)[0].strip()
    if original == "rgb8":
        return np.ascontiguousarray(image[:, :, ::-1])
    return image


def nearest_depth(color_ms: list[float], depth_ms: list[float]) -> list[int]:
    """For each color time, the index of the depth frame nearest in device time."""
    if not depth_ms:
        return []
    d = np.asarray(depth_ms, dtype=np.float64)
    order = np.argsort(d, kind="stable")
    ds = d[order]
    c = np.asarray(color_ms, dtype=np.float64)
    right = np.clip(np.searchsorted(ds, c), 0, len(ds) - 1)
    left = np.clip(right - 1, 0, len(ds) - 1)
    take_left = np.abs(ds[left] - c) <= np.abs(ds[right] - c)
    return [int(i) for i in order[np.where(take_left, left, right)]]
