"""The audit trail of a run: every registration state change, with its reasons.

Start, plan, calibration and stop entries are written by :mod:`edge.app` when
they happen; this sink writes what happens per frame.
"""

from __future__ import annotations

from edge.audit import AuditLog
from edge.frames import FrameResult
from edge.registration.types import RegistrationState

# While the source has no frame nothing may look current: a gap is a loss of
# registration unless there was none to lose.
_NOTHING_TO_LOSE = (None, RegistrationState.LOST, RegistrationState.SEARCHING)


class AuditSink:
    """Writes a ``state`` entry to the audit log whenever the registration state changes."""

    name = "audit"

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._state: RegistrationState | None = None

    def consume(self, result: FrameResult) -> None:
        reg = result.registration
        if reg is None or reg.state is self._state:
            return
        old = self._state.value if self._state is not None else None
        reasons = "; ".join(reg.quality.reasons)
        self.audit.state_changed(old, reg.state.value, result.frame.number, reasons)
        self._state = reg.state

    def source_gap(self, reason: str) -> None:
        if self._state in _NOTHING_TO_LOSE:
            return
        assert self._state is not None
        self.audit.state_changed(self._state.value, RegistrationState.LOST.value, -1, reason)
        self._state = RegistrationState.LOST
