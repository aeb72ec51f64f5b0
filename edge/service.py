"""Running under systemd: readiness, watchdog, status, and a clean stop on SIGTERM.

:class:`Notifier` speaks the sd_notify datagram protocol (``man sd_notify``)
on ``$NOTIFY_SOCKET`` directly (a few lines over an AF_UNIX datagram socket,
so every failure is visible). Outside systemd (no ``NOTIFY_SOCKET``) every
call is a no-op, so the same run loop works from a terminal.

The frame loop calls :meth:`Notifier.watchdog` once per frame; it sends
``WATCHDOG=1`` at most every half ``WATCHDOG_USEC``. A pipeline that hangs
stops pinging and systemd restarts the service (``WatchdogSec=`` in the unit).

:class:`GracefulStop` turns SIGTERM and SIGINT into a :class:`threading.Event`
the loop checks between frames. If the loop has not finished
``hard_exit_after_s`` seconds after the signal (stuck in a blocking call), the
process exits anyway, so stopping is bounded even when a stage is not.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import FrameType, TracebackType

from edge.errors import StateError

log = logging.getLogger(__name__)

HARD_EXIT_CODE = 70  # EX_SOFTWARE: the loop did not stop in time


class Notifier:
    """Sends sd_notify messages; every method is a no-op when not under systemd.

    ``socket_path``: the ``NOTIFY_SOCKET`` value (``@name`` is the abstract
    namespace); ``watchdog_usec``: the ``WATCHDOG_USEC`` value, or None when the
    unit has no watchdog. ``clock``: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        socket_path: str | None,
        watchdog_usec: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path or None
        self.watchdog_interval_s = (
            watchdog_usec / 2e6 if watchdog_usec and self.socket_path else None
        )
        self._clock = clock
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failures = 0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """From ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID`` (default: os.environ)."""
        env = os.environ if env is None else env
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC") and (not pid or pid == str(os.getpid())):
            try:
                usec = int(env["WATCHDOG_USEC"])
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not an integer", env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, message: str) -> bool:
        """Send one raw message (``KEY=value`` lines); True when it was sent."""
        if self.socket_path is None:
            return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(message.encode("utf-8"), address)
            except OSError as exc:
                # systemd not listening must not take the surgical display down; count it.
                self.failures += 1
                log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
                return False
            self.sent += 1
            return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: models, plan and camera are up. Call once."""
        return self.notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def status(self, text: str) -> bool:
        """STATUS=...: one line shown by ``systemctl status``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """WATCHDOG=1, at most once per half watchdog period; True when a ping was sent."""
        if self.watchdog_interval_s is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: ask for more time to start or stop (e.g. while models load)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: the process has begun a clean shutdown."""
        return self.notify("STOPPING=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class GracefulStop:
    """Context manager: SIGTERM/SIGINT set :attr:`event` instead of killing the process.

    Install it from the main thread (Python delivers signals there); the loop
    checks :attr:`requested` between frames. A second signal is logged and
    otherwise ignored: the hard-exit timer, not the signal count, bounds the
    stop. ``hard_exit_after_s=None`` disables that timer. ``on_stop`` is called
    once from the signal handler (keep it short, e.g. ``notifier.stopping``).
    Raises StateError when entered twice or outside the main thread.
    """

    def __init__(
        self,
        signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
        hard_exit_after_s: float | None = 10.0,
        on_stop: Callable[[str], object] | None = None,
        exit_function: Callable[[int], object] = os._exit,
    ) -> None:
        self.signals = tuple(signals)
        self.hard_exit_after_s = hard_exit_after_s
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._on_stop = on_stop
        self._exit = exit_function
        self._previous: dict[signal.Signals, object] = {}
        self._timer: threading.Timer | None = None
        self._active = False

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self, reason: str) -> None:
        """Ask the loop to stop (what a signal does; also usable from code and tests)."""
        if self.event.is_set():
            log.warning("%s received while already stopping", reason)
            return
        self.signal_name = reason
        self.event.set()
        log.info("%s received: stopping after the current frame", reason)
        if self._on_stop is not None:
            self._on_stop(reason)
        if self.hard_exit_after_s is not None and self._active:
            self._timer = threading.Timer(self.hard_exit_after_s, self._hard_exit)
            self._timer.daemon = True
            self._timer.start()

    def _hard_exit(self) -> None:
        log.critical(
            "the frame loop did not stop within %.1f s of %s: exiting now",
            self.hard_exit_after_s,
            self.signal_name,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(HARD_EXIT_CODE)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # A handler runs between two bytecodes of the main thread, possibly in the
        # middle of its write to stderr; logging from here would re-enter that
        # write (RuntimeError). Another thread simply waits for the stream's lock.
        threading.Thread(
            target=self.request, args=(signal.Signals(signum).name,), daemon=True
        ).start()

    def __enter__(self) -> GracefulStop:
        if self._active:
            raise StateError("GracefulStop is already installed", "use one per run loop")
        if threading.current_thread() is not threading.main_thread():
            raise StateError(
                "GracefulStop must be installed from the main thread",
                "enter it around the run loop in the main thread",
            )
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()  # the loop stopped in time
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()
        self._active = False
