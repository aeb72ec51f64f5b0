"""A ``.db3`` image message's pixels (sensor_msgs/Image in CDR): known answers."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edge.sources.recording.db3 import _decode_raw


def image_message(height: int, width: int, step: int, pixels: bytes, bigendian: int = 0) -> bytes:
    """A little-endian CDR sensor_msgs/Image as a ROS 2 bag stores it."""
    out = bytearray(b"\x00\x01\x00\x00")

    def u32(v: int) -> None:
        out.extend(b"\x00" * (-(len(out) - 4) % 4))
        out.extend(struct.pack("<I", v))

    def string(text: bytes) -> None:
        u32(len(text) + 1)
        out.extend(text + b"\x00")

    u32(12)  # stamp: seconds, nanoseconds, frame id
    u32(500)
    string(b"camera")
    u32(height)
    u32(width)
    string(b"rgb8")
    out.append(bigendian)
    u32(step)
    u32(len(pixels))
    out.extend(pixels)
    return bytes(out)


def test_unpadded_rows_are_a_read_only_view_of_the_message():
    want = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = image_message(2, 3, 9, want.tobytes())
    got = _decode_raw(data, (2, 3, 3))
    np.testing.assert_array_equal(got, want)
    assert np.shares_memory(got, np.frombuffer(data, np.uint8)) and not got.flags.writeable


def test_padded_rows_lose_their_padding():
    want = np.arange(2 * 3, dtype="<u2").reshape(2, 3) * 1000
    rows = [want[i].tobytes() + b"\xee" * 4 for i in range(2)]  # step 10 for 6 bytes a row
    got = _decode_raw(image_message(2, 3, 10, b"".join(rows)), (2, 3, 2))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.dtype("<u2") and got.flags.c_contiguous


@pytest.mark.parametrize(
    ("step", "pixels", "bigendian", "message"),
    [
        (9, bytes(17), 0, "17 bytes of pixels"),
        (8, bytes(18), 0, "at step 8"),
        (6, bytes(12), 1, "big-endian"),
    ],
)
def test_malformed_pixels_are_refused(step, pixels, bigendian, message):
    bpp = 2 if bigendian else 3
    with pytest.raises(ValueError, match=message):
        _decode_raw(image_message(2, 3, step, pixels, bigendian), (2, 3, bpp))
