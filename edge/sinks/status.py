"""The live one-line status of `edge run` (frame, fps, latency, face, state)."""

from __future__ import annotations

import time
from typing import IO

from edge.frames import FrameResult


class StatusLine:
    """A one-line live status (frame, fps, latency, state), at most a few times a second."""

    name = "status"

    def __init__(self, stream: IO[str], total: int | None, interval_s: float = 0.5) -> None:
        self.stream = stream
        self.total = total
        self.interval_s = interval_s
        self.tty = stream.isatty()
        self._last = 0.0
        self._start = time.monotonic()
        self._count = 0

    def consume(self, result: FrameResult) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last < (self.interval_s if self.tty else 5.0):
            return
        self._last = now
        fps = self._count / max(now - self._start, 1e-9)
        reg = result.registration
        state = reg.state.value if reg is not None else ("no plan" if result.tracking else "-")
        face = "face" if result.tracking is not None and result.tracking.patient else "no face"
        of = f"/{self.total}" if self.total else ""
        line = (
            f"frame {self._count}{of}  {fps:5.1f} fps  latency {result.end_to_end_ms:5.1f} ms"
            f"  {face}  {state}"
        )
        self.stream.write(("\r" + line + "   ") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._count:
            self.stream.write("\n")
            self.stream.flush()
