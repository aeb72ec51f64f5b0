"""systemd's watchdog, kept alive by every frame and every gap (a camera away is not a hang)."""

from __future__ import annotations

from edge.frames import FrameResult
from edge.service import Notifier


class Watchdog:
    """Pings systemd's watchdog after each frame and each source gap."""

    name = "watchdog"

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def consume(self, result: FrameResult) -> None:
        self.notifier.watchdog()

    def source_gap(self, reason: str) -> None:
        self.notifier.watchdog()
