"""Read-ahead: the next frame is read (decoded, aligned, rendered) in a second thread while
the pipeline processes the current one.

:class:`ReadAheadSource` wraps any source and keeps exactly one read in flight: when
the pipeline takes frame *n*, the reader thread starts reading frame *n + 1*, and
nothing more until *n + 1* is taken. So at most one frame waits, frames come out in
the order the inner source gives them, with the same content (the inner source is
only ever called from the reader thread, one read at a time), and what the inner
source says is passed on unchanged and in place: an exception (a gap,
:class:`~edge.frames.FrameTimeout`, or any other) is raised by ``read()`` at the
position it happened, with its traceback, and the next ``read()`` goes on reading, as
it would from the inner source; the end of the source is ``None``, after which the
reader stops. ``close()`` stops the reader (waiting for a read in
flight, which the inner source bounds, e.g. the camera's frame timeout) and closes
the inner source.

Heavy reads release the GIL (LZ4 and librealsense in C, numpy, OpenCV), which is
what lets them run on the second core. :func:`with_read_ahead` wraps only a source that
is not paced (a replay read as fast as it goes), see there.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass

from edge.frames import Frame, FrameSource
from edge.sources.wrapped import WrappedSource

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0  # longer than any bounded read (camera timeout, reconnect backoff)
_POLL_S = 0.5  # how often a waiting read() checks that the reader is still alive


@dataclass(frozen=True)
class _Item:
    """What one read of the inner source gave: a frame, the end (both None), or an
    exception; ``read_ms`` is how long the read took in the reader thread."""

    frame: Frame | None
    error: BaseException | None
    read_ms: float


class ReadAheadSource(WrappedSource):
    """Wraps ``inner`` (opened or not) and reads one frame ahead in a thread.

    ``last_read_ms`` is the reader thread's time for the frame ``read()`` returned
    last (what the read would have cost on the critical path); ``waited_ms`` how long
    ``read()`` waited for it. Attributes it does not have (``face``, ``serial``,
    ``passes``...) are the inner source's.
    """

    def __init__(self, inner: FrameSource) -> None:
        super().__init__(inner)
        self.last_read_ms = 0.0
        self.waited_ms = 0.0
        self._requests: queue.Queue[bool] = queue.Queue(maxsize=1)  # True: read one; False: stop
        self._results: queue.Queue[_Item] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False  # the reader gave the end or an error: nothing more will come

    def _open(self) -> None:
        super()._open()
        self._thread = threading.Thread(target=self._reader, name="read-ahead", daemon=True)
        self._thread.start()
        self._requests.put(True)

    def _reader(self) -> None:
        while self._requests.get() and not self._stop.is_set():
            start = time.perf_counter()
            try:
                frame = self.inner.read()
                item = _Item(frame, None, (time.perf_counter() - start) * 1000.0)
            except BaseException as exc:  # handed to the consumer, raised there
                item = _Item(None, exc, (time.perf_counter() - start) * 1000.0)
            self._results.put(item)
            if item.frame is None and item.error is None:
                return  # the end of the source: read no further

    def frame_waiting(self) -> bool:
        """Whether the next frame (or the end) has been read already (pipeline.LookAhead)."""
        return not self._results.empty()

    def _take(self) -> _Item:
        while True:
            try:
                return self._results.get(timeout=_POLL_S)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    # Only possible if the reader died outside its own handler.
                    raise RuntimeError("the read-ahead thread stopped without a result") from None

    def _read(self) -> Frame | None:
        if self._finished:
            return None
        start = time.perf_counter()
        item = self._take()
        self.waited_ms = (time.perf_counter() - start) * 1000.0
        self.last_read_ms = item.read_ms
        if item.frame is None and item.error is None:
            self._finished = True
        else:
            self._requests.put(True)  # start reading the next one now
        if item.error is not None:
            raise item.error
        return item.frame

    def _close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            # Unblock the reader wherever it waits: a stop request, and room for its result.
            with contextlib.suppress(queue.Full):
                self._requests.put_nowait(False)
            deadline_s = time.monotonic() + JOIN_TIMEOUT_S
            while thread.is_alive() and time.monotonic() < deadline_s:
                with contextlib.suppress(queue.Empty):
                    self._results.get_nowait()
                thread.join(timeout=0.05)
            if thread.is_alive():
                log.warning("the read-ahead thread did not stop within %.0f s", JOIN_TIMEOUT_S)
        super()._close()


def with_read_ahead(source: FrameSource, enabled: bool) -> FrameSource:
    """``source`` behind a :class:`ReadAheadSource` when ``enabled`` (``[pipeline]
    read_ahead``) and it is not paced, else ``source`` itself.

    A paced source (a camera, a real-time replay) has its next frame only when that is
    due, while the loop is idle waiting for it: read ahead, the frame would come out of
    the reader thread and be handed over, a thread wake-up later than the loop would
    have read it itself (docs/benchmark.md). So such a source is read when the loop
    asks, and read-ahead is for replays read as fast as they go."""
    if not enabled:
        return source
    if source.paced:
        log.info("read-ahead is off: %s gives its frames at its own pace", source.name)
        return source
    return ReadAheadSource(source)
