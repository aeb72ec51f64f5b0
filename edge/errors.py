"""Errors that the edge process expects and reports without a traceback.

Every expected failure (bad input, missing device, refused plan) raises an
:class:`EdgeError` whose message names the problem *and* the fix. The command
line prints it on one line and exits with :attr:`EdgeError.exit_code` (2).
"""

from __future__ import annotations


class EdgeError(Exception):
    """An expected failure with a one-line, actionable message."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}: {fix}" if fix else problem)


class ConfigError(EdgeError):
    """A configuration file or value is invalid."""


class SourceError(EdgeError):
    """A frame source cannot be opened or read (no camera, bad recording)."""


class StateError(EdgeError):
    """An object was used in a lifecycle state that does not allow the call."""


class ModelError(EdgeError):
    """A model file is missing, tampered with, or does not match its manifest."""


class PlanError(EdgeError):
    """A preoperative plan is missing, malformed, unsigned or tampered with."""


class CalibrationError(EdgeError):
    """A calibration could not be computed or does not meet its quality bar."""
