"""Full-text search over a knowledge base: every query word must match, name hits rank first."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase, SearchHit

__all__ = ["search"]

_WORD = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*")
# Where a word is found decides its weight: an ID or name match says far more than a mention.
_WEIGHTS = (("id", 8.0), ("name", 4.0), ("text", 1.0))


_SUFFIXES = ("ations", "ation", "ions", "ion", "ences", "ence", "ances", "ance", "ings", "ing",
             "ers", "er", "ies", "es", "ed", "s")


def _stem(word: str) -> str:
    """The word without one common English suffix, keeping at least four letters."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _fields(obj: object) -> dict[str, str]:
    text = " ".join(
        str(getattr(obj, f, "") or "")
        for f in ("description", "summary", "target", "actor", "reporter")
    )
    steps = getattr(obj, "procedure", ())
    text += " " + " ".join(s.description for s in steps)
    return {"id": obj.id.lower(), "name": obj.name.lower(), "text": text.lower()}  # type: ignore[attr-defined]


def search(kb: KnowledgeBase, query: str, *, limit: int = 20) -> list[SearchHit]:
    """Rank the objects of ``kb`` against ``query``; see :meth:`KnowledgeBase.search`.

    Returns at most ``limit`` hits, best first; ties keep matrix order. An empty query returns
    nothing.
    """
    from mlthreat.kb.model import SearchHit

    words = _WORD.findall(query.lower())
    if not words:
        return []
    hits: list[SearchHit] = []
    for obj in kb:
        fields = _fields(obj)
        tokens = {k: _WORD.findall(v) for k, v in fields.items()}
        score = 0.0
        for w in words:
            best = 0.0
            for key, weight in _WEIGHTS:
                if fields[key] == w:
                    best = max(best, weight * 2)
                elif any(t.startswith(w) for t in tokens[key]):
                    best = max(best, weight)
                elif (stem := _stem(w)) != w and any(t.startswith(stem) for t in tokens[key]):
                    # another form of the word: "infer" for "inference"
                    best = max(best, weight * 0.75)
            if best == 0.0:
                break
            score += best
        else:
            hits.append(SearchHit(obj.id, kb.kind(obj.id), obj.name, score))
    hits.sort(key=lambda h: -h.score)
    return hits[:limit]
