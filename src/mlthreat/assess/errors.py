"""Errors of the assessment layer."""

from __future__ import annotations

from mlthreat.errors import MlthreatError

__all__ = ["AssessError", "DataError", "QueryBudgetExceeded", "TargetError"]


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
