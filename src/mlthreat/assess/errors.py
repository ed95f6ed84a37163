"""Errors of the assessment layer."""

from __future__ import annotations

from mlthreat.errors import MlthreatError

__all__ = ["AssessError", "DataError", "QueryBudgetExceeded", "RunTimeLimit", "TargetError"]


class AssessError(MlthreatError):
    """Base class of assessment errors."""


class TargetError(AssessError):
    """The target cannot be loaded or answered wrongly (bad file, shape, endpoint failure)."""


class DataError(AssessError):
    """The data file is missing, malformed, or does not fit the model."""


class QueryBudgetExceeded(AssessError):
    """A run tried to send more queries than its budget allows; nothing beyond it was sent."""

    def __init__(self, client_id: str, limit: int, used: int, asked: int) -> None:
        self.client_id, self.limit, self.used, self.asked = client_id, limit, used, asked
        super().__init__(f"{client_id}: query budget of {limit} reached ({used} used, "
                         f"{asked} more asked)")


class RunTimeLimit(QueryBudgetExceeded):
    """A run's time limit passed; the query that would have followed was not sent.

    A kind of :class:`QueryBudgetExceeded` (time is a budget too), so a technique that keeps
    what it measured when its queries run out does the same when its time does.
    """

    def __init__(self, seconds: float, used: int) -> None:
        AssessError.__init__(self, f"time limit of {seconds:g} s reached after {used} queries")
        self.client_id, self.limit, self.used, self.asked = "", used, used, 0
        self.seconds = seconds
