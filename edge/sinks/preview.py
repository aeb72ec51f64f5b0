"""The preview of what the pipeline saw: landmarks and overlay drawn on the color frames.

Drawing and video encoding run in the writer's own thread, off the frame's critical
path: ``consume`` only hands the finished result over. The thread draws the newest
result it was given; a result that a newer one replaces before it was drawn is dropped
and counted (``dropped``), so a slow disk or encoder costs preview frames, never
pipeline time. A ``.png`` preview draws only the last frame, once, at close.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.frames import FrameResult

log = logging.getLogger(__name__)


class PreviewWriter:
    """Draws what the pipeline saw (landmarks, overlay) on the color frames.

    ``.mp4``: every frame the writer thread keeps up with (``written``; the others are
    ``dropped``); ``.png``: the last frame. Written to a temporary name and moved into
    place on close, so a failed run leaves no half file. A result is read, never
    changed, by the writer thread (the pipeline is done with it when sinks see it).
    """

    name = "preview"

    def __init__(self, path: str, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".png"):
            raise EdgeError(f"preview file {path} must end in .mp4 or .png", "choose another name")
        if not self.path.parent.exists():
            raise EdgeError(f"folder {self.path.parent} does not exist", "create it first")
        self.fps = fps
        self.written = 0
        self.dropped = 0
        self._sink: Any = None
        self._last: FrameResult | None = None
        self._tmp = self.path.with_name(f".{self.path.stem}.part{suffix}")
        self._video = suffix == ".mp4"
        self._cond = threading.Condition()
        self._pending: FrameResult | None = None
        self._stopping = False
        self._error: EdgeError | None = None
        self._thread: threading.Thread | None = None

    def draw(self, result: FrameResult) -> Any:
        from edge.tracking.draw import draw_faces
        from edge.transport.viewer import draw_overlay

        image = result.frame.bgr().copy()
        if result.tracking is not None and result.tracking.patient is not None:
            image = draw_faces(image, [result.tracking.patient])
        if result.overlay is not None:
            payload, arrays = result.overlay.overlay_payload()
            draw_overlay(image, payload, arrays)
        return image

    def consume(self, result: FrameResult) -> None:
        """Hand ``result`` to the writer thread (latest wins); raises the writer's
        EdgeError (e.g. the video cannot be written) on the frame after it happened."""
        if self._error is not None:
            raise self._error
        if not self._video:
            self._last = result
            return
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = result
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="preview", daemon=True)
            self._thread.start()

    def _writer(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                result, self._pending = self._pending, None
            if result is None:
                return  # stopping, nothing left to write
            try:
                self._write(self.draw(result))
            except EdgeError as exc:
                self._error = exc
                return
            except Exception:  # a drawing fault loses one preview frame, not the run
                log.exception("preview: frame %d not written", result.frame.number)

    def _write(self, image: Any) -> None:
        if self._sink is None:
            import cv2

            h, w = image.shape[:2]
            self._sink = cv2.VideoWriter(
                str(self._tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._sink.isOpened():
                raise EdgeError(f"cannot write video {self.path}", "check the folder is writable")
        self._sink.write(image)
        self.written += 1

    def close(self, keep: bool = True) -> None:
        """Write what is pending, stop the writer thread and move the file into place
        (``keep``) or remove it."""
        import cv2

        if self._thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify()
            self._thread.join()
            self._thread = None
        if self._sink is not None:
            self._sink.release()
            self._sink = None
        elif self._last is not None and keep:
            ok, data = cv2.imencode(".png", self.draw(self._last))
            if ok:
                self._tmp.write_bytes(data.tobytes())
        if self.dropped:
            log.info("preview: %d frames written, %d dropped", self.written, self.dropped)
        if keep and self._tmp.exists():
            os.replace(self._tmp, self.path)
        elif self._tmp.exists():
            self._tmp.unlink()
