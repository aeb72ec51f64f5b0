"""The registration state machine (rules in docs/registration.md).

Pure logic: the stage tells it what happened on a frame and it answers with
the new state. Only a frame whose registration passed every gate can be
TRACKING; a frame without a face ends any registration (LOST) at once.
"""

from __future__ import annotations

import enum

from edge.errors import StateError
from edge.registration.types import RegistrationState


class Outcome(str, enum.Enum):
    """What the stage achieved on one frame."""

    NO_FACE = "no_face"  # no patient face tracked
    INIT_PASSED = "init_passed"  # (re-)initialised from landmarks + ICP, all gates pass
    INIT_FAILED = "init_failed"  # tried to initialise, a gate failed
    TRACK_PASSED = "track_passed"  # warm-started ICP, all gates pass
    TRACK_FAILED = "track_failed"  # warm-started ICP, a gate failed (and re-init did too)


_HAS_POSE = frozenset(
    {RegistrationState.REGISTERED, RegistrationState.TRACKING, RegistrationState.DEGRADED}
)
_TRACK_OUTCOMES = frozenset({Outcome.TRACK_PASSED, Outcome.TRACK_FAILED})


class RegistrationStateMachine:
    """SEARCHING -> REGISTERED -> TRACKING <-> DEGRADED -> LOST -> REGISTERED ...

    ``confirm_frames``: passing frames needed in REGISTERED before TRACKING.
    ``lost_after_frames``: consecutive failing frames after which DEGRADED
    gives up the pose (LOST).
    """

    def __init__(self, confirm_frames: int = 1, lost_after_frames: int = 15) -> None:
        self.state = RegistrationState.SEARCHING
        self._confirm_frames = confirm_frames
        self._lost_after_frames = lost_after_frames
        self._passes = 0
        self._failures = 0

    @property
    def has_pose(self) -> bool:
        """A pose exists to warm-start from (REGISTERED, TRACKING or DEGRADED)."""
        return self.state in _HAS_POSE

    def update(self, outcome: Outcome) -> RegistrationState:
        """Advance by one frame's outcome. Raises StateError for an outcome the state
        cannot produce (tracking without a pose)."""
        if outcome in _TRACK_OUTCOMES and not self.has_pose:
            raise StateError(
                f"a tracking outcome ({outcome.value}) in state {self.state.value}",
                "initialise from landmarks first (the stage's bug, please report it)",
            )
        if outcome is Outcome.NO_FACE:
            if self.state is not RegistrationState.SEARCHING:
                self.state = RegistrationState.LOST
            self._passes = self._failures = 0
        elif outcome is Outcome.INIT_PASSED:
            self.state = RegistrationState.REGISTERED
            self._passes, self._failures = 1, 0
        elif outcome is Outcome.INIT_FAILED:
            if self.has_pose:
                self._fail()
            # SEARCHING and LOST stay as they are: no pose to show.
        elif outcome is Outcome.TRACK_PASSED:
            self._failures = 0
            if self.state is RegistrationState.REGISTERED:
                self._passes += 1
                if self._passes > self._confirm_frames:
                    self.state = RegistrationState.TRACKING
            else:
                self.state = RegistrationState.TRACKING
        elif outcome is Outcome.TRACK_FAILED:
            self._fail()
        return self.state

    def _fail(self) -> None:
        self._passes = 0
        self._failures += 1
        self.state = (
            RegistrationState.LOST
            if self._failures >= self._lost_after_frames
            else RegistrationState.DEGRADED
        )
