"""The preview of what the pipeline saw: landmarks and overlay drawn on the color frames."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.frames import FrameResult


class PreviewWriter:
    """Draws what the pipeline saw (landmarks, overlay) on the color frames.

    ``.mp4``: every frame; ``.png``: the last frame. Written to a temporary
    name and moved into place on close, so a failed run leaves no half file.
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
        self._sink: Any = None
        self._last: Any = None
        self._tmp = self.path.with_name(f".{self.path.stem}.part{suffix}")

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
        image = self.draw(result)
        if self.path.suffix.lower() == ".png":
            self._last = image
            return
        if self._sink is None:
            import cv2

            h, w = image.shape[:2]
            self._sink = cv2.VideoWriter(
                str(self._tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._sink.isOpened():
                raise EdgeError(f"cannot write video {self.path}", "check the folder is writable")
        self._sink.write(image)

    def close(self, keep: bool = True) -> None:
        import cv2

        if self._sink is not None:
            self._sink.release()
        elif self._last is not None and keep:
            ok, data = cv2.imencode(".png", self._last)
            if ok:
                self._tmp.write_bytes(data.tobytes())
        if keep and self._tmp.exists():
            os.replace(self._tmp, self.path)
        elif self._tmp.exists():
            self._tmp.unlink()
