"""What a technique run finds: a Finding with named metrics, plain frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["STATUSES", "Finding", "Metric"]

Status = Literal["succeeded", "failed", "not-applicable", "error"]
STATUSES: tuple[Status, ...] = ("succeeded", "failed", "not-applicable", "error")


@dataclass(frozen=True)
class Metric:
    """One measured number.

    ``unit`` says what it counts (``fraction``, ``queries``, ``L2``, ``seconds``…); ``n`` is the
    sample size it was measured on; ``ci`` a 95 % confidence interval where one applies.
    """

    value: float | int | None
    unit: str
    n: int | None = None
    ci: tuple[float, float] | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "unit": self.unit}
        if self.n is not None:
            out["n"] = self.n
        if self.ci is not None:
            out["ci95"] = list(self.ci)
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Finding:
    """The result of one technique run against one target.

    ``technique`` is the primary (most specific) ATLAS ID; ``rule`` states in words what decides
    ``succeeded``; ``queries`` counts the queries the attack itself sent, ``evaluation_queries``
    those spent measuring it; ``curves`` holds series for plots (``{"roc": {"x": [...],
    "y": [...], "x_label": ..., "y_label": ...}}``); ``mitigations`` are the ATLAS mitigation
    IDs the knowledge base links to the technique (its parent's included).
    """

    technique: str
    name: str
    status: Status
    reason: str = ""
    rule: str = ""
    related_techniques: tuple[str, ...] = ()
    tactics: tuple[str, ...] = ()
    metrics: dict[str, Metric] = field(default_factory=dict)
    queries: int = 0
    evaluation_queries: int = 0
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    mitigations: tuple[str, ...] = ()
    run: str = ""
