"""Change over time: what moved between two posture results.

Both sides may be :class:`~mlthreat.posture.compute.PostureResult` objects or their
``to_dict()`` form read back from JSON, so a saved posture can be compared with today's.
Systems are matched by name, techniques by ID.

A coverage change is reported when ``|new - old| >= 0.005`` (coverage is kept to 3 places, so
smaller moves are rounding), a priority change when ``|new - old| >= 0.1`` (its precision).
A gap *opens* when a technique is in the new gap list and not in the old one (including a
technique that just became applicable) and *closes* in the opposite case (including one that no
longer applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlthreat.posture.compute import PostureResult

__all__ = ["Change", "PostureDiff", "SystemDiff", "diff_posture"]

COVERAGE_EPSILON = 0.005
PRIORITY_EPSILON = 0.1


@dataclass(frozen=True)
class Change:
    """One technique's value before and after (``delta = new - old`` for numbers)."""

    technique: str
    old: Any
    new: Any
    delta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SystemDiff:
    """What changed for one system present on both sides."""

    name: str
    newly_applicable: tuple[str, ...]
    no_longer_applicable: tuple[str, ...]
    coverage_up: tuple[Change, ...]
    coverage_down: tuple[Change, ...]
    status_changes: tuple[Change, ...]
    priority_changes: tuple[Change, ...]
    gaps_opened: tuple[str, ...]
    gaps_closed: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return any((self.newly_applicable, self.no_longer_applicable, self.coverage_up,
                    self.coverage_down, self.status_changes, self.priority_changes,
                    self.gaps_opened, self.gaps_closed))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "changed": self.changed}
        for key in ("newly_applicable", "no_longer_applicable", "gaps_opened", "gaps_closed"):
            out[key] = list(getattr(self, key))
        for key in ("coverage_up", "coverage_down", "status_changes", "priority_changes"):
            out[key] = [c.to_dict() for c in getattr(self, key)]
        return out


@dataclass(frozen=True)
class PostureDiff:
    """The difference between an old and a new posture."""

    systems_added: tuple[str, ...]
    systems_removed: tuple[str, ...]
    systems: tuple[SystemDiff, ...]

    @property
    def changed(self) -> bool:
        return bool(self.systems_added or self.systems_removed
                    or any(s.changed for s in self.systems))

    def system(self, name: str) -> SystemDiff:
        """The diff of the system called ``name`` (present on both sides). Raises KeyError."""
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mlthreat.posture.diff", "schema_version": 1, "changed": self.changed,
                "systems_added": list(self.systems_added),
                "systems_removed": list(self.systems_removed),
                "systems": [s.to_dict() for s in self.systems]}


def _as_dict(result: PostureResult | Mapping[str, Any]) -> Mapping[str, Any]:
    return result.to_dict() if isinstance(result, PostureResult) else result


def _system(old: Mapping[str, Any], new: Mapping[str, Any]) -> SystemDiff:
    before = {t["id"]: t for t in old["techniques"]}
    after = {t["id"]: t for t in new["techniques"]}
    both = [tid for tid in after if tid in before]
    up: list[Change] = []
    down: list[Change] = []
    status: list[Change] = []
    priority: list[Change] = []
    for tid in sorted(both):
        a, b = before[tid], after[tid]
        delta = round(b["coverage"] - a["coverage"], 3)
        if abs(delta) >= COVERAGE_EPSILON:
            (up if delta > 0 else down).append(Change(tid, a["coverage"], b["coverage"], delta))
        if a["status"] != b["status"]:
            status.append(Change(tid, a["status"], b["status"]))
        pdelta = round(b["priority"] - a["priority"], 1)
        if abs(pdelta) >= PRIORITY_EPSILON:
            priority.append(Change(tid, a["priority"], b["priority"], pdelta))
    old_gaps = {g["technique"] for g in old["gaps"]}
    new_gaps = {g["technique"] for g in new["gaps"]}
    return SystemDiff(
        name=new["name"],
        newly_applicable=tuple(sorted(set(after) - set(before))),
        no_longer_applicable=tuple(sorted(set(before) - set(after))),
        coverage_up=tuple(up), coverage_down=tuple(down), status_changes=tuple(status),
        priority_changes=tuple(sorted(priority, key=lambda c: -abs(c.delta or 0.0))),
        gaps_opened=tuple(sorted(new_gaps - old_gaps)),
        gaps_closed=tuple(sorted(old_gaps - new_gaps)),
    )


def diff_posture(old: PostureResult | Mapping[str, Any],
                 new: PostureResult | Mapping[str, Any]) -> PostureDiff:
    """What changed from ``old`` to ``new`` (results or their ``to_dict()`` form).

    Priority changes are listed largest move first; everything else by technique ID.
    """
    a, b = _as_dict(old), _as_dict(new)
    before = {s["name"]: s for s in a["systems"]}
    after = {s["name"]: s for s in b["systems"]}
    return PostureDiff(
        systems_added=tuple(n for n in after if n not in before),
        systems_removed=tuple(n for n in before if n not in after),
        systems=tuple(_system(before[n], after[n]) for n in after if n in before),
    )
