"""The preview writer: drawing and encoding in its own thread, latest wins, drops counted."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.frames import Frame, FrameResult, Intrinsics, PixelFormat
from edge.sinks.preview import PreviewWriter


def _result(number: int) -> FrameResult:
    color = np.full((48, 64, 3), number % 255, np.uint8)
    intr = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)
    return FrameResult(Frame(number, color, PixelFormat.BGR8, None, 0.001, intr))


def test_every_frame_is_written_when_the_writer_keeps_up(tmp_path):
    writer = PreviewWriter(str(tmp_path / "p.mp4"), 30.0)
    for i in range(5):
        writer.consume(_result(i))
        deadline = time.monotonic() + 5.0
        while writer.written < i + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
    writer.close()
    assert (writer.written, writer.dropped) == (5, 0)
    assert (tmp_path / "p.mp4").stat().st_size > 0
    assert not list(tmp_path.glob(".*part*"))


def test_a_slow_writer_drops_older_frames_and_counts_them(tmp_path, monkeypatch):
    writer = PreviewWriter(str(tmp_path / "p.mp4"), 30.0)
    release = threading.Event()
    drawn: list[int] = []
    draw = writer.draw

    def slow_draw(result: FrameResult):
        drawn.append(result.frame.number)
        if result.frame.number == 0:
            release.wait(5.0)  # the encoder is stuck on the first frame
        return draw(result)

    monkeypatch.setattr(writer, "draw", slow_draw)
    writer.consume(_result(0))
    deadline = time.monotonic() + 5.0
    while not drawn and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(1, 6):
        writer.consume(_result(i))  # returns at once although the writer is busy
    release.set()
    writer.close()
    assert drawn == [0, 5]  # the newest waiting frame, not the ones it replaced
    assert (writer.written, writer.dropped) == (2, 4)


def test_a_png_preview_draws_the_last_frame_at_close(tmp_path):
    writer = PreviewWriter(str(tmp_path / "p.png"), 30.0)
    for i in range(3):
        writer.consume(_result(i))
    writer.close()
    import cv2

    image = cv2.imread(str(tmp_path / "p.png"))
    assert image is not None and int(image[0, 0, 0]) == 2


def test_a_video_that_cannot_be_written_is_reported_on_the_next_frame(tmp_path, monkeypatch):
    writer = PreviewWriter(str(tmp_path / "p.mp4"), 30.0)

    def refuse(image):
        raise EdgeError("cannot write video p.mp4", "check the folder is writable")

    monkeypatch.setattr(writer, "_write", refuse)
    writer.consume(_result(0))
    writer._thread.join(5.0)
    with pytest.raises(EdgeError, match="cannot write video"):
        writer.consume(_result(1))
    writer.close(keep=False)
    assert not (tmp_path / "p.mp4").exists()
