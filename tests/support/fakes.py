"""Small stand-ins shared by tests (not fixtures: plain classes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.frames import Frame, FrameSource, Intrinsics, PixelFormat


class CountingSource(FrameSource):
    """``n`` tiny 4x4 frames numbered 1..n, no depth."""

    name = "counting"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.i = n, 0

    def _open(self) -> None:
        pass

    def _read(self) -> Frame | None:
        if self.i >= self.n:
            return None
        self.i += 1
        intrinsics = Intrinsics(4, 4, 1.0, 1.0, 1.5, 1.5)
        return Frame(
            self.i, np.zeros((4, 4, 3), np.uint8), PixelFormat.RGB8, None, 0.001, intrinsics
        )

    def _close(self) -> None:
        pass


def overlay_payload(state: str, current: bool) -> dict[str, Any]:
    """An ``overlay`` topic's payload with nothing to draw (docs/protocol.md)."""
    return {
        "state": state,
        "current": current,
        "reasons": [],
        "plan": {},
        "targets": [],
        "trajectories": [],
        "cut_planes": [],
        "structures": [],
        "display": {},
    }
