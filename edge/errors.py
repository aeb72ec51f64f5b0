"""Every exception the edge process defines, in one place.

Every expected failure (bad input, missing device, refused plan) raises an
:class:`EdgeError` whose message names the problem *and* the fix. The command
line prints it on one line and exits with :attr:`EdgeError.exit_code` (2).

The hierarchy::

    EdgeError                 an expected failure: EdgeError(problem, fix)
    ├── ConfigError           a configuration file or value is invalid
    ├── SourceError           a frame source cannot be opened or read
    │   └── FrameTimeout      no frame yet from a live source; read again (a gap, not the end)
    ├── StateError            an object used in a lifecycle state that forbids the call
    ├── ModelError            a model file is missing, tampered with or off its manifest
    ├── PlanError             a preoperative plan is missing, malformed, unsigned or tampered
    ├── RegistrationError     no registration can be computed from the input
    ├── CalibrationError      a calibration failed or misses its quality bar
    ├── ToolError             a tracked tool's definition file is missing or invalid
    ├── TransportError        a transport endpoint, key or peer cannot be used as asked
    │   └── DecodeError       a received message breaks the protocol
    ├── AuditError            the audit log cannot be written, or does not verify
    ├── RecordingError        a protected recording cannot be written, sealed, opened or pruned
    └── KeyFileError          a key file is missing, malformed, of the wrong kind or too readable

Not EdgeErrors (never shown to a user as an expected failure)::

    DeviceLostError           a camera session lost its device (caught inside the RealSense source)
"""

from __future__ import annotations


class EdgeError(Exception):
    """An expected failure with a one-line, actionable message: ``problem: fix``."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}: {fix}" if fix else problem)


class ConfigError(EdgeError):
    """A configuration file or value is invalid (the message names the key)."""


class SourceError(EdgeError):
    """A frame source cannot be opened or read (no camera, bad recording)."""


class FrameTimeout(SourceError):  # noqa: N818 - the name the issue and callers use
    """No frame within the timeout; the source is still usable (read again).

    The pipeline treats it as a gap, not as the end of the source.
    ``reconnecting`` says whether the camera is being reopened.
    """

    def __init__(self, problem: str, fix: str | None = None, *, reconnecting: bool) -> None:
        super().__init__(problem, fix)
        self.reconnecting = reconnecting


class StateError(EdgeError):
    """An object was used in a lifecycle state that does not allow the call."""


class ModelError(EdgeError):
    """A model file is missing, tampered with, or does not match its manifest."""


class PlanError(EdgeError):
    """A preoperative plan is missing, malformed, unsigned or tampered with."""


class RegistrationError(EdgeError):
    """Input that no registration can be computed from (too few or degenerate points)."""


class CalibrationError(EdgeError):
    """A calibration could not be computed or does not meet its quality bar."""


class ToolError(EdgeError):
    """A tracked tool's definition file (hardware/tools/NAME.toml) is missing or invalid."""


class TransportError(EdgeError):
    """A transport endpoint, key or peer cannot be used as asked."""


class DecodeError(TransportError):
    """A received message does not follow the protocol; the message says how."""


class AuditError(EdgeError):
    """The audit log cannot be written, or does not verify."""


class RecordingError(EdgeError):
    """A recording cannot be written, sealed, opened or pruned."""


class KeyFileError(EdgeError):
    """A key file is missing, malformed, of the wrong kind or too widely readable."""


class DeviceLostError(Exception):
    """A camera session's device disappeared (unplugged).

    Raised by the camera layer and caught by the RealSense source, which turns
    it into a :class:`FrameTimeout` while it reconnects; never reaches a user.
    """
