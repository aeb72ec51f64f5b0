"""Every input bounded: recordings librealsense cannot describe, damaged recordings, and
images whose header claims more pixels than the edge will decode."""

from __future__ import annotations

import sqlite3
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.errors import SourceError
from edge.files import MAX_IMAGE_SIDE_PX, check_image_size, image_size
from edge.frames import Frame, Intrinsics, PixelFormat
from edge.sources.recording.index import first_problem
from edge.sources.recording.playback import RecordingSource
from edge.sources.recording.recorder import Recorder
from edge.tracking.still import read_image

INTR = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)


def _record(path: Path, frames: int = 5, depth: bool = True) -> Path:
    with Recorder(path, fps=30, compress=False) as rec:
        for i in range(frames):
            rec.write(
                Frame(
                    i,
                    np.full((48, 64, 3), 10 * i, np.uint8),
                    PixelFormat.RGB8,
                    np.full((48, 64), 500 + i, np.uint16) if depth else None,
                    0.001 if depth else 0.0,
                    INTR,
                    device_timestamp_ms=33.3 * i,
                )
            )
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("edge: error: "), err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- recordings


def test_color_only_recording_without_its_first_sensor_is_a_source_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Color-only, with the color sensor numbered 1 and no sensor 0 described: librealsense
    # throws "map::at" listing its sensors.
    path = _record(tmp_path / "color.db3")
    con = sqlite3.connect(path)
    ids = [
        r[0] for r in con.execute("SELECT id FROM topics WHERE name LIKE '/device_0/sensor_0/%'")
    ]
    for tid in ids:
        con.execute("DELETE FROM messages WHERE topic_id = ?", (tid,))
        con.execute("DELETE FROM topics WHERE id = ?", (tid,))
    con.commit()
    con.close()
    with pytest.raises(SourceError, match="librealsense cannot read the streams"):
        RecordingSource(path).open()
    err = _one_line_error(capsys, "info", str(path))
    assert "color.db3" in err
    _one_line_error(capsys, "run", "--source", str(path), "--frames", "2", "--no-publish", "-q")


def test_color_only_recordings_written_by_the_edge_play(tmp_path: Path) -> None:
    path = _record(tmp_path / "color.db3", depth=False)
    with RecordingSource(path) as src:
        frames = list(src)
    assert len(frames) == 5 and all(f.depth is None for f in frames)


def test_a_damaged_page_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _record(tmp_path / "rec.db3")
    rng = np.random.default_rng(3)
    with path.open("r+b") as fh:
        for page in (1, 2, 3):  # the schema and the first tables' pages
            fh.seek(page * 4096)
            fh.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    err = _one_line_error(capsys, "info", str(path))
    assert "truncated or corrupt" in err


def test_a_long_integrity_report_becomes_one_line() -> None:
    report = ["*** in database main ***\nOn tree page 13 cell 0: invalid page number 7"]
    report += [f"Page {n} is never used" for n in range(20, 116)]
    line = first_problem(report)
    assert line == "On tree page 13 cell 0: invalid page number 7 (and 96 more problems)"
    assert first_problem(["Page 4: btreeInitPage() returns error code 11"]) == (
        "Page 4: btreeInitPage() returns error code 11"
    )


# --------------------------------------------------------------------------- images


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_a_tiny_png_claiming_60000_squared_is_refused_before_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(60000, 60000))
    assert bomb.stat().st_size < 70
    start = time.perf_counter()
    with pytest.raises(SourceError, match="60000x60000 pixels; the limit is 8192x8192"):
        read_image(bomb)
    assert time.perf_counter() - start < 1.0
    err = _one_line_error(capsys, "track", str(bomb))
    assert "bomb.png" in err and "8192x8192" in err


@pytest.mark.parametrize(
    "params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]], ids=["baseline", "progressive"]
)
def test_jpeg_and_png_sizes_come_from_the_header(params: list[int]) -> None:
    image = np.zeros((23, 37, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", image, params)[1].tobytes()
    assert image_size(jpeg) == ("jpeg", 37, 23)
    assert image_size(cv2.imencode(".png", image)[1].tobytes()) == ("png", 37, 23)


def test_images_over_the_limit_foreign_or_cut_short_are_refused(tmp_path: Path) -> None:
    wide = cv2.imencode(".png", np.zeros((1, MAX_IMAGE_SIDE_PX + 1, 3), np.uint8))[1].tobytes()
    with pytest.raises(ValueError, match="the limit is 8192x8192"):
        check_image_size(wide)
    with pytest.raises(ValueError, match="not a PNG or JPEG"):
        image_size(b"BM" + bytes(60))
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(ValueError, match="cut short"):
        image_size(jpeg[:20])
    bmp = tmp_path / "x.bmp"
    cv2.imwrite(str(bmp), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SourceError, match="not a PNG or JPEG"):
        read_image(bmp)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((20, 30, 3), 7, np.uint8))
    assert read_image(good).shape == (20, 30, 3)
