"""Errors of the detection layer."""

from __future__ import annotations

from mlthreat.errors import MlthreatError

__all__ = ["CalibrationError", "DetectError", "LogFormatError"]


class DetectError(MlthreatError):
    """Base class of detection errors."""


class LogFormatError(DetectError):
    """A log file cannot be read at all (missing, unknown format, bad mapping). Single bad lines
    are quarantined and counted instead, never raised."""


class CalibrationError(DetectError):
    """A calibration file is malformed, or does not fit the inputs (wrong dimension)."""
