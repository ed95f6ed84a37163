"""What changed between two versions of the matrix.

Compares tactics, techniques (with sub-techniques), mitigations and case studies by ID: added,
removed, renamed (same ID, new name), moved (a technique whose tactics changed; a sub-technique,
whose tactics are inherited, moves only when re-parented), mitigation links gained or lost, and
case studies whose procedure now uses other techniques.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlthreat.kb.model import KnowledgeBase

__all__ = ["Change", "KbDiff", "diff"]


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one object. ``before``/``after`` hold the old and new value for renames
    (names), moves (tactic IDs joined with ``,``, or ``parent:ID`` for a re-parented
    sub-technique) and link changes (technique IDs)."""

    kind: str  # added | removed | renamed | moved | links-added | links-removed | procedure-changed
    object_type: str  # tactic | technique | sub-technique | mitigation | case-study
    id: str
    name: str
    before: str = ""
    after: str = ""


@dataclass(frozen=True)
class KbDiff:
    """All changes from ``old_version`` to ``new_version``, in matrix order of the new data."""

    old_version: str
    new_version: str
    changes: tuple[Change, ...] = field(default_factory=tuple)

    def of(self, kind: str, object_type: str | None = None) -> list[Change]:
        """The changes of one kind (``renamed``…), optionally of one object type."""
        return [c for c in self.changes
                if c.kind == kind and (object_type is None or c.object_type == object_type)]

    def counts(self) -> dict[str, int]:
        """Number of changes per ``kind/object_type``, for summaries."""
        out: dict[str, int] = {}
        for c in self.changes:
            key = f"{c.kind}/{c.object_type}"
            out[key] = out.get(key, 0) + 1
        return out


def _tactics(kb: KnowledgeBase, tid: str) -> str:
    t = kb.technique(tid)
    if t.parent:
        return f"parent:{t.parent}"
    return ",".join(t.tactics)


def diff(old: KnowledgeBase, new: KnowledgeBase) -> KbDiff:
    """Compare two knowledge bases (typically two official releases).

    Returns
    -------
    KbDiff
        Removed objects are listed in the old data's order after everything else.
    """
    changes: list[Change] = []
    for section in ("tactics", "techniques", "mitigations", "case_studies"):
        old_objs = {o.id: o for o in getattr(old, section)}
        new_objs = getattr(new, section)
        for obj in new_objs:
            otype = new.kind(obj.id)
            before = old_objs.get(obj.id)
            if before is None:
                changes.append(Change("added", otype, obj.id, obj.name))
                continue
            if before.name != obj.name:
                changes.append(Change("renamed", otype, obj.id, obj.name, before.name, obj.name))
            if section == "techniques":
                a, b = _tactics(old, obj.id), _tactics(new, obj.id)
                if a != b:
                    changes.append(Change("moved", otype, obj.id, obj.name, a, b))
            if section == "case_studies" and before.techniques != obj.techniques:
                changes.append(Change("procedure-changed", otype, obj.id, obj.name,
                                      ",".join(before.techniques), ",".join(obj.techniques)))
            if section == "mitigations":
                was = {u.technique for u in before.techniques}
                now = {u.technique for u in obj.techniques}
                if now - was:
                    changes.append(Change("links-added", otype, obj.id, obj.name, "",
                                          ",".join(sorted(now - was))))
                if was - now:
                    changes.append(Change("links-removed", otype, obj.id, obj.name,
                                          ",".join(sorted(was - now)), ""))
        new_ids = {o.id for o in new_objs}
        for obj in getattr(old, section):
            if obj.id not in new_ids:
                changes.append(Change("removed", old.kind(obj.id), obj.id, obj.name))
    return KbDiff(old.version, new.version, tuple(changes))
