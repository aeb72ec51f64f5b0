"""Two stages side by side on the same frame: one in the loop's thread, one in a worker.

The tool stage reads only the frame (its colour and depth), and the face tracking stage
reads nothing the tool stage writes, so the two need not wait for each other. Most of
either one's time holds no interpreter lock (ONNX Runtime's inference; OpenCV's marker
detection and the tool stage's compiled kernels, edge/tools/kernels.py), so with a
second core free the frame waits for the longer of the two instead of both in turn.

:class:`SideBySide` is one stage to the pipeline (named ``main+beside``, e.g.
``tracking+tools``; the pipeline times it as one). Each part's own time goes in
``result.part_ms`` under its own name. The frame leaves the stage only when both parts
are done with it, so nothing downstream can see the frame half-processed, and the
result is the same as running ``main`` then ``beside`` (tests/unit/tools/test_beside.py
checks it to the bit).

The worker processes its own copy of the frame's result and the loop's thread takes
over what it set, so a worker that answers late (or never) cannot write into a frame
that has moved on, and a completion is matched to its frame, never to the next one.

Failures: an exception from ``main`` is the main stage's failure on that frame (a
:class:`~edge.frames.StageFailure` under its name, as the pipeline records it); one from
``beside`` is handed to its ``fail(result, exc)`` when it has one (the tool stage marks
every tool LOST with the reason), else recorded as its stage failure. Either way the
other part's result stands, and the worker is ready for the next frame. A ``beside``
that gives no answer within ``BESIDE_TIMEOUT_S`` fails that frame and every later one
the same way (the tools LOST, "stopped answering") until the process restarts, so a
hung tool stage never stalls the face overlay. :meth:`SideBySide.stop_threads` (called
by the pipeline when its loop ends) joins the worker; the next frame starts it again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from edge.frames import FrameResult
from edge.pipeline import CommandHandler, GapAware, Stage, ThreadedStage, record_failure

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0
# A tool stage takes about a millisecond; this long means it hangs (docstring above).
BESIDE_TIMEOUT_S = 2.0
# What a part may set on the frame's result (its lists and timings are merged apart).
SHARED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(FrameResult)
    if f.name not in ("errors", "stage_ms", "part_ms")
)


class SideBySide:
    """``main`` in the calling thread and ``beside`` in a worker thread, on each frame."""

    def __init__(
        self, main: Stage, beside: Stage, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.main = main
        self.beside = beside
        self.name = f"{main.name}+{beside.name}"
        self._clock = clock
        # The worker's own copy of a frame's result in; (that copy, ms, error) out. Simple
        # queues: a hand-over each way per frame, without queue.Queue's Python-level locking.
        self._jobs: queue.SimpleQueue[FrameResult | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[FrameResult, float, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._stuck: BaseException | None = None  # set once ``beside`` stops answering
        # Headset commands of either part (the router looks for ``commands`` on stages).
        self.commands: Mapping[str, Callable[[dict[str, Any]], None]] = {
            **(main.commands if isinstance(main, CommandHandler) else {}),
            **(beside.commands if isinstance(beside, CommandHandler) else {}),
        }

    def process(self, result: FrameResult) -> None:
        copy = None
        if self._stuck is None:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            copy = dataclasses.replace(result, errors=[], stage_ms={}, part_ms={})
            given = {name: getattr(copy, name) for name in SHARED_FIELDS}
            self._jobs.put(copy)
        start = self._clock()
        try:
            self.main.process(result)
        except Exception as exc:  # the main stage's failure, recorded as the pipeline would
            record_failure(result, self.main.name, exc)
        finally:
            result.part_ms[self.main.name] = (self._clock() - start) * 1000.0
        error = self._stuck if copy is None else self._take(result, copy, given)
        if error is not None:
            self._beside_failed(result, error)

    def _take(
        self, result: FrameResult, copy: FrameResult, given: dict[str, Any]
    ) -> BaseException | None:
        """Wait for the worker's answer on this frame and take over what it set (the fields
        no longer what ``given`` says); the frame never leaves with ``beside`` on it."""
        deadline = time.monotonic() + BESIDE_TIMEOUT_S
        while True:
            try:
                done, beside_ms, error = self._done.get(
                    timeout=max(deadline - time.monotonic(), 0.0)
                )
            except queue.Empty:
                self._stuck = TimeoutError(
                    f"{self.beside.name} stopped answering (no result within "
                    f"{BESIDE_TIMEOUT_S:g} s); left out until the edge process restarts"
                )
                log.error("%s", self._stuck)
                result.part_ms[self.beside.name] = math.nan
                return self._stuck
            if done is copy:
                break  # an older completion (a frame interrupted while waiting) is dropped
        result.part_ms[self.beside.name] = beside_ms
        for name, before in given.items():
            if getattr(copy, name) is not before:
                setattr(result, name, getattr(copy, name))
        result.errors.extend(copy.errors)
        return error

    def _beside_failed(self, result: FrameResult, error: BaseException) -> None:
        fail = getattr(self.beside, "fail", None)
        if callable(fail):
            fail(result, error)
            return
        record_failure(result, self.beside.name, error)

    def _work(self) -> None:
        while True:
            copy = self._jobs.get()
            if copy is None:
                return
            start = self._clock()
            error: BaseException | None = None
            try:
                self.beside.process(copy)
            except BaseException as exc:  # handed to the loop's thread; the worker goes on
                error = exc
            self._done.put((copy, (self._clock() - start) * 1000.0, error))

    def source_gap(self, reason: str) -> None:
        """Both parts hear of the gap (no frame is in the worker between frames)."""
        for part in (self.main, self.beside):
            if not isinstance(part, GapAware):
                continue
            try:
                part.source_gap(reason)
            except Exception:  # as the pipeline does: one part's handler must not stop the other
                log.exception("%s failed handling a source gap", part.name)

    def stop_threads(self) -> None:
        """Join the worker (idle between frames; the next frame starts a new one) and the
        parts' own threads."""
        for part in (self.main, self.beside):
            if isinstance(part, ThreadedStage):
                part.stop_threads()
        thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return
        self._jobs.put(None)
        thread.join(JOIN_TIMEOUT_S)
        if thread.is_alive():  # only if a part hangs outside any frame: never seen
            log.error("stage %s: its worker did not stop within %.0f s", self.name, JOIN_TIMEOUT_S)
