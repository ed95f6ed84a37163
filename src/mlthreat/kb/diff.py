"""What changed between two versions of the matrix.

Compares tactics, techniques (with sub-techniques), mitigations and case studies by ID: added,
removed, renamed (same ID, new name), moved (a technique whose tactics changed; a sub-technique,
whose tactics are inherited, moves only when re-parented; a tactic whose column changed),
mitigation links gained or lost, and case studies whose procedure now uses other techniques.
The two sides may be in different formats (a legacy ``ATLAS.yaml`` against a format-6 content
release): the comparison is on the loaded model, so a plain conversion shows no change.

A removed object names what replaced it, when something evidently did (see :func:`replacements`).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlthreat.kb.model import AtlasObject, CaseStudy, KnowledgeBase
from mlthreat.kb.names import name_key

__all__ = ["CONTENT_SIMILARITY", "Change", "KbDiff", "diff", "moved_positions", "replacements"]

#: Word-set Jaccard similarity of two descriptions at or above which an added object is taken to
#: carry a removed one's content. Measured on the official data: the most alike descriptions of
#: two different objects reach 0.70 (AML.T0019 and AML.T0058 in 5.6.0; 0.66 across 4.5.2 and
#: 5.6.0), while the copy-edits one object's description received between releases (the ML to
#: AI wording, a sentence added) stay at 0.82 to 1.0. 0.8 sits in that gap, clear of the 0.70
#: pair, so two sibling techniques are never taken for one another; a full rewrite (0.06 to
#: 0.79 in the same releases) is not recognised, and is then reported as a plain removal.
CONTENT_SIMILARITY = 0.8
#: Descriptions with fewer distinct words than this are placeholders, not content to match.
_MIN_CONTENT_WORDS = 5
_WORD = re.compile(r"[a-z0-9]+")
_SECTIONS = ("tactics", "techniques", "mitigations", "case_studies")


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one object. ``before``/``after`` hold the old and new value for renames
    (names), moves (tactic IDs joined with ``,``, or ``parent:ID`` for a re-parented
    sub-technique, or ``column N`` for a tactic) and link changes (technique IDs).
    ``replaced_by`` names, for a removed object only, the objects of the newer data that took
    its place (empty when none did, and for every other kind)."""

    kind: str  # added | removed | renamed | moved | links-added | links-removed | procedure-changed
    object_type: str  # tactic | technique | sub-technique | mitigation | case-study
    id: str
    name: str
    before: str = ""
    after: str = ""
    replaced_by: tuple[str, ...] = ()


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


def _words(obj: AtlasObject) -> frozenset[str]:
    # a case study's text is its summary
    text: str = obj.summary if isinstance(obj, CaseStudy) else obj.description
    return frozenset(_WORD.findall(text.casefold()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def replacements(old: KnowledgeBase, new: KnowledgeBase, section: str) -> dict[str, list[str]]:
    """For each object of ``section`` that ``new`` no longer has, the IDs that replaced it.

    An added object (an ID only ``new`` has) of the same section replaces a removed one when
    the newer data says so (a revoked object's ``replaced_by``), when its name is the same
    (loosely, :func:`~mlthreat.kb.names.name_key`), or when its description carries the removed
    one's content (word-set Jaccard similarity at least :data:`CONTENT_SIMILARITY`). Several
    objects may replace one (a split) and one may replace several (a merge).

    Returns
    -------
    dict of str to list of str
        Removed ID to replacing IDs in the newer data's matrix order; removed objects that
        nothing replaced are left out.
    """
    old_objs: Sequence[AtlasObject] = getattr(old, section)
    new_objs: Sequence[AtlasObject] = getattr(new, section)
    old_ids = {o.id for o in old_objs}
    order = {o.id: i for i, o in enumerate(new_objs)}
    new_ids = order.keys()
    added = [o for o in new_objs if o.id not in old_ids]
    noted = {r.object.id: r.replaced_by for r in new.retired if r.replaced_by in new_ids}
    added_words = {o.id: _words(o) for o in added}
    out: dict[str, list[str]] = {}
    for gone in old_objs:
        if gone.id in new_ids:
            continue
        key, words = name_key(gone.name), _words(gone)
        content = len(words) >= _MIN_CONTENT_WORDS
        found = [o.id for o in added
                 if (key and name_key(o.name) == key)
                 or (content and _jaccard(words, added_words[o.id]) >= CONTENT_SIMILARITY)]
        note = noted.get(gone.id)
        if note is not None and note not in found:
            found = sorted([*found, note], key=order.__getitem__)
        if found:
            out[gone.id] = found
    return out


def _increasing_core(seq: Sequence[int]) -> set[int]:
    """Indices of one longest strictly increasing subsequence of ``seq`` (patience sorting:
    of the runs of each length, keep the one ending in the smallest value)."""
    tail_values: list[int] = []  # tail_values[k]: smallest value ending a run of length k + 1
    tail_index: list[int] = []  # and its index in seq
    prev = [-1] * len(seq)
    for i, value in enumerate(seq):
        k = bisect_left(tail_values, value)
        prev[i] = tail_index[k - 1] if k else -1
        if k == len(tail_values):
            tail_values.append(value)
            tail_index.append(i)
        else:
            tail_values[k], tail_index[k] = value, i
    core: set[int] = set()
    i = tail_index[-1] if tail_index else -1
    while i >= 0:
        core.add(i)
        i = prev[i]
    return core


def moved_positions(old_order: Sequence[str],
                    new_order: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The items of both orders that moved, with their 1-based positions in each.

    Moving one column shifts every column between its old and new place by one; those kept
    their order relative to the rest and did not move. So the items kept in place are a longest
    run of common items whose old positions increase along the new order; the others moved.
    """
    old_pos = {x: i for i, x in enumerate(old_order, 1)}
    common = [x for x in new_order if x in old_pos]
    new_pos = {x: i for i, x in enumerate(new_order, 1)}
    kept = _increasing_core([old_pos[x] for x in common])
    return {x: (old_pos[x], new_pos[x]) for i, x in enumerate(common) if i not in kept}


def diff(old: KnowledgeBase, new: KnowledgeBase) -> KbDiff:
    """Compare two knowledge bases (typically two official releases, in either data format).

    Returns
    -------
    KbDiff
        Named by the two data versions (``5.6.0`` to ``2026.09``). In each section, removed
        objects follow the rest, in the old data's order, each with what replaced it if
        anything did.
    """
    changes: list[Change] = []
    columns = moved_positions([t.id for t in old.tactics], [t.id for t in new.tactics])
    for section in _SECTIONS:
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
            if obj.id in columns:
                was, now = columns[obj.id]
                changes.append(Change("moved", otype, obj.id, obj.name, f"column {was}",
                                      f"column {now}"))
            if section == "techniques":
                a, b = _tactics(old, obj.id), _tactics(new, obj.id)
                if a != b:
                    changes.append(Change("moved", otype, obj.id, obj.name, a, b))
            if section == "case_studies" and before.techniques != obj.techniques:
                changes.append(Change("procedure-changed", otype, obj.id, obj.name,
                                      ",".join(before.techniques), ",".join(obj.techniques)))
            if section == "mitigations":
                was_linked = {u.technique for u in before.techniques}
                now_linked = {u.technique for u in obj.techniques}
                if now_linked - was_linked:
                    changes.append(Change("links-added", otype, obj.id, obj.name, "",
                                          ",".join(sorted(now_linked - was_linked))))
                if was_linked - now_linked:
                    changes.append(Change("links-removed", otype, obj.id, obj.name,
                                          ",".join(sorted(was_linked - now_linked)), ""))
        new_ids = {o.id for o in new_objs}
        replaced = replacements(old, new, section)
        for obj in getattr(old, section):
            if obj.id not in new_ids:
                changes.append(Change("removed", old.kind(obj.id), obj.id, obj.name,
                                      replaced_by=tuple(replaced.get(obj.id, ()))))
    return KbDiff(old.version, new.version, tuple(changes))
