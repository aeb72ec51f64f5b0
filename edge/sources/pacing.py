"""When a recorded or generated frame may be delivered: the timing modes of every non-live source.

One :class:`Pacer` serves the recording, synthetic and phantom sources, so
that a timing mode means the same thing whichever source is chosen:

DETERMINISTIC
    No waiting: every frame is delivered once, as fast as the consumer reads.
    The consumer's ``read()`` is the step, so a caller that wants to advance
    frame by frame (a test, a debugger, an external trigger) reads in this mode.
REALTIME
    Each frame waits until its device time, measured from the origin, has
    passed on the host clock since the origin. The wait is a sleep before the
    frame is handed over, never a drop: a slow consumer gets every frame late
    rather than losing frames (librealsense's own real-time playback drops).

The origin is set by :meth:`Pacer.start` (now, at a given device time: the
generated sources start their clock when they open) or, after
:meth:`Pacer.reset`, by the first frame paced, which is delivered at once (a
recording anchors at its first frame read, and again after a seek). The clock
and sleep are injected so that tests run without real time passing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.frames import TimingMode


class Pacer:
    """Paces frames by their device timestamps (ms) according to ``timing``.

    ``clock`` returns host seconds (monotonic); ``sleep`` waits seconds. In
    DETERMINISTIC timing neither is ever called.
    """

    def __init__(
        self,
        timing: TimingMode = TimingMode.DETERMINISTIC,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timing = TimingMode(timing)
        self._clock = clock
        self._sleep = sleep
        self._origin: tuple[float, float] | None = None  # (host s, device ms)

    @property
    def paced(self) -> bool:
        """Whether frames wait for their time (the sources' ``FrameSource.paced``)."""
        return self.timing is TimingMode.REALTIME

    def start(self, device_ms: float = 0.0) -> None:
        """Set the origin: ``device_ms`` is due now."""
        if self.timing is TimingMode.REALTIME:
            self._origin = (self._clock(), device_ms)

    def reset(self) -> None:
        """Forget the origin: the next frame paced becomes it and is not delayed."""
        self._origin = None

    def wait(self, device_ms: float) -> None:
        """Return when the frame stamped ``device_ms`` is due (at once in DETERMINISTIC)."""
        if self.timing is not TimingMode.REALTIME:
            return
        now = self._clock()
        if self._origin is None:
            self._origin = (now, device_ms)
            return
        host0_s, device0_ms = self._origin
        wait_s = host0_s + (device_ms - device0_ms) / 1000.0 - now
        if wait_s > 0:
            self._sleep(wait_s)
