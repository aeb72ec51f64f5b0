"""The base of the sources that wrap another (calibrated intrinsics, read-ahead)."""

from __future__ import annotations

from typing import Any

from edge.frames import FrameSource


class WrappedSource(FrameSource):
    """Wraps ``inner`` (opened or not): the same name, frame count and rate; opening opens
    the inner source unless it is open already, closing closes it. Attributes the wrapper
    does not have (``face``, ``serial``, ``passes``...) are the inner source's."""

    def __init__(self, inner: FrameSource) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name

    @property
    def frame_count(self) -> int | None:
        return self.inner.frame_count

    @property
    def nominal_fps(self) -> float:
        return self.inner.nominal_fps

    @property
    def paced(self) -> bool:
        return self.inner.paced

    def _open(self) -> None:
        if self.inner.state.value == "created":
            self.inner.open()

    def _close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.inner, name)
