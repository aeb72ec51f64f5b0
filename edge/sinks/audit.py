"""The audit trail of a run: every registration state change, with its reasons.

Start, plan, calibration, override, enrolment, handshake and stop entries are
written by :mod:`edge.app` when they happen; this sink writes what happens per
frame: ``state.changed`` on every change, and ``registration.accepted`` with the
quality figures that passed every gate when the state enters TRACKING from
SEARCHING or REGISTERED (a new registration, not a recovery from DEGRADED).
"""

from __future__ import annotations

from edge.audit import AuditLog
from edge.frames import FrameResult
from edge.registration.types import RegistrationState

# While the source has no frame nothing may look current: a gap is a loss of
# registration unless there was none to lose.
_NOTHING_TO_LOSE = (None, RegistrationState.LOST, RegistrationState.SEARCHING)
# Entering TRACKING from these is a registration being accepted.
_ACCEPTED_FROM = (None, RegistrationState.SEARCHING, RegistrationState.REGISTERED)


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
        if reg.state is RegistrationState.TRACKING and self._state in _ACCEPTED_FROM:
            q = reg.quality
            self.audit.registration_accepted(
                result.frame.number,
                icp_rms_mm=q.icp_rms_mm,
                inlier_fraction=q.inlier_fraction,
                fre_mm=q.fre_mm,
                tre_mm=dict(q.tre_mm),
                landmark_tre_mm=dict(q.landmark_tre_mm),
                landmark_surface_translation_mm=q.landmark_surface_translation_mm,
                landmark_surface_rotation_deg=q.landmark_surface_rotation_deg,
                surface_shape_mm=q.surface_shape_mm,
                rigid_evidence_fraction=q.rigid_evidence_fraction,
                regions_used=list(q.regions_used),
                landmark_surface_chi2=q.landmark_surface_chi2,
            )
        self._state = reg.state

    def source_gap(self, reason: str) -> None:
        if self._state in _NOTHING_TO_LOSE:
            return
        assert self._state is not None
        self.audit.state_changed(self._state.value, RegistrationState.LOST.value, -1, reason)
        self._state = RegistrationState.LOST
