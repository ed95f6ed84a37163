"""The root of every mlthreat exception; the CLI maps these to one-line messages and exit codes."""

from __future__ import annotations

__all__ = ["MlthreatError", "UsageError"]


class MlthreatError(Exception):
    """Base class of every error mlthreat raises on purpose (a user or data problem, not a bug).

    ``exit_code`` is what the command line exits with when this error reaches it.
    """

    exit_code = 2


class UsageError(MlthreatError):
    """A command was called with arguments that cannot work together."""
