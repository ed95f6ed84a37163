"""Loose matching of object names and IDs as people write them.

Names drift: ATLAS 5.0 renamed "ML" to "AI" throughout ("Exfiltration via ML Inference API" is
now "Exfiltration via AI Inference API"), and hand-kept sheets write word forms of their own
("Exfiltrate via ML Inference API"). :func:`name_key` reduces a name to a key that survives
both: lower case, punctuation dropped, "ML" and "machine learning" read as "AI", and each word
cut to its stem. IDs drift too: ``T0043``, ``aml.t43`` and ``AML.T0043.01`` all mean
``AML.T0043(.001)``; :func:`canonical_ids` gives the IDs such a text can mean.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["NameIndex", "canonical_ids", "has_ml_words", "name_key", "similarity"]

_WORD = re.compile(r"[a-z0-9]+")
# Longest first; the stem keeps at least four letters ("data" stays "data").
_SUFFIXES = ("ations", "ation", "ates", "ate", "ions", "ion", "ences", "ence", "ances", "ance",
             "ings", "ing", "ers", "er", "ies", "es", "ed", "s", "e")
_LOOSE_ID = re.compile(r"^(?:(?P<prefix>[A-Za-z][A-Za-z0-9]{1,15})\s*\.\s*)?"
                       r"(?P<kind>TA|T|M|CS)\s*(?P<num>\d{1,4})(?:\.(?P<sub>\d{1,3}))?$",
                       re.IGNORECASE)
#: Names are at most this long, in characters and in words; longer text is never a name.
MAX_NAME_CHARS, MAX_NAME_WORDS = 120, 14


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def name_key(name: str) -> str:
    """The loose key of a name: ``name_key("Exfiltrate via ML Inference API") ==
    name_key("Exfiltration via AI Inference API") == "exfiltr via ai infer api"``."""
    words = _WORD.findall(name.casefold())
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "machine" and words[i + 1:i + 2] == ["learning"]:
            out.append("ai")
            i += 2
            continue
        out.append("ai" if words[i] == "ml" else _stem(words[i]))
        i += 1
    return " ".join(out)


def has_ml_words(name: str) -> bool:
    """Whether a name says "ML" or "machine learning", as names before ATLAS 5.0 did."""
    words = _WORD.findall(name.casefold())
    return "ml" in words or any(a == "machine" and b == "learning"
                                for a, b in pairwise(words))


def similarity(a: str, b: str) -> float:
    """How alike two name keys are, 0 to 1 (difflib's ratio)."""
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def could_be_name(text: str) -> bool:
    """Short enough, and with a letter, to be an object's name."""
    return (0 < len(text) <= MAX_NAME_CHARS and any(c.isalpha() for c in text)
            and len(text.split()) <= MAX_NAME_WORDS)


def canonical_ids(text: str, prefixes: tuple[str, ...] = ("AML",)) -> list[str]:
    """The well-formed IDs a loosely written ID can mean (upper case, the prefix added when it
    is missing, numbers padded): ``canonical_ids("t43.1") == ["AML.T0043.001"]``. Empty when
    ``text`` is not ID-shaped."""
    m = _LOOSE_ID.match(text.strip())
    if not m:
        return []
    body = f"{m['kind'].upper()}{int(m['num']):04d}"
    if m["sub"] is not None:
        if m["kind"].upper() != "T":
            return []
        body += f".{int(m['sub']):03d}"
    heads = [m["prefix"].upper()] if m["prefix"] else list(prefixes)
    return [f"{p}.{body}" for p in heads]


class NameIndex:
    """Every object of a knowledge base by the key of its current name, and of the names it had
    in older releases (:func:`mlthreat.kb.history.history_for`), for look-up in constant
    time."""

    def __init__(self, kb: KnowledgeBase) -> None:
        from mlthreat.kb.history import history_for

        self.kb = kb
        self.current: dict[str, list[str]] = {}
        for obj in kb:
            self.current.setdefault(name_key(obj.name), []).append(obj.id)
        self.former: dict[str, list[str]] = {}
        self.former_of: dict[str, dict[str, tuple[str, str]]] = {}  # id -> key -> (name, rel.)
        self.history = history_for(kb)  # kept: the stale-mapping check reads it too
        for atlas_id, entries in self.history["names"].items():
            if atlas_id not in kb:
                continue
            for name, release in entries:
                key = name_key(name)
                self.former.setdefault(key, []).append(atlas_id)
                self.former_of.setdefault(atlas_id, {})[key] = (name, release)

    def owners(self, name: str) -> list[str]:
        """IDs whose current name, or else whose former name, has the key of ``name``."""
        key = name_key(name)
        return list(self.current.get(key) or self.former.get(key) or [])


def suggest_id(kb: KnowledgeBase, text: str) -> str | None:
    """The ID someone who wrote ``text`` most likely meant, or None rather than a guess.

    In order: the same ID written loosely (``T0043``, ``aml.t0043.01``); the parent of an
    unknown sub-technique; the object whose current or former name ``text`` is (loosely, see
    :func:`name_key`). A near number (``AML.T0109`` for ``AML.T0199``) is never suggested: it
    names an unrelated object.
    """
    from mlthreat.kb.ids import ID_PATTERN, parent_id

    prefixes = sorted({m["prefix"] for o in kb if (m := ID_PATTERN.match(o.id))},
                      key=lambda p: (p != "AML", p))
    ids = canonical_ids(text, tuple(prefixes) or ("AML",))
    for candidate in ids:
        if candidate in kb and candidate != text:
            return candidate
    for candidate in ids:
        parent = parent_id(candidate)
        if parent is not None and parent in kb:
            return parent
    if ids or not could_be_name(text):
        return None
    owners = NameIndex(kb).owners(text)
    return owners[0] if owners else None
