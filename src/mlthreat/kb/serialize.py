"""Plain-data form of the model: the embedded snapshot's format and the base of ``--json``.

``to_dict`` leaves out empty fields so the snapshot stays small; ``from_dict`` accepts exactly
what ``to_dict`` writes.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from mlthreat.kb.model import (
    AttackReference,
    CaseStudy,
    KnowledgeBase,
    Mitigation,
    MitigationUse,
    ProcedureStep,
    Reference,
    Tactic,
    Technique,
)

__all__ = ["from_dict", "object_from_dict", "object_to_dict", "to_dict"]

_SECTIONS = (
    ("tactics", Tactic),
    ("techniques", Technique),
    ("mitigations", Mitigation),
    ("case_studies", CaseStudy),
)
_NESTED: dict[str, type] = {
    "attack_reference": AttackReference,
    "references": Reference,
    "techniques": MitigationUse,
    "procedure": ProcedureStep,
}


def object_to_dict(obj: Any, *, keep_empty: bool = False) -> Any:
    """A dataclass (or tuple of them) as JSON-ready data, without empty fields unless asked."""
    if is_dataclass(obj):
        out = {}
        for f in fields(obj):
            if f.name.startswith("_"):
                continue
            value = object_to_dict(getattr(obj, f.name), keep_empty=keep_empty)
            if keep_empty or value not in ("", (), [], None):
                out[f.name] = value
        return out
    if isinstance(obj, tuple | list):
        return [object_to_dict(v, keep_empty=keep_empty) for v in obj]
    return obj


def object_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build one model object of type ``cls`` from what :func:`object_to_dict` wrote."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        nested = _NESTED.get(key)
        if key == "techniques" and cls is not Mitigation:
            nested = None
        if nested is not None and isinstance(value, dict):
            value = nested(**value)
        elif nested is not None and isinstance(value, list):
            value = tuple(nested(**v) for v in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(kb: KnowledgeBase) -> dict[str, Any]:
    """The whole knowledge base as plain data (sections in matrix order)."""
    out: dict[str, Any] = {"name": kb.name, "atlas_version": kb.version}
    if kb.format_version:
        out["format_version"] = kb.format_version
    for section, _ in _SECTIONS:
        out[section] = [object_to_dict(o) for o in getattr(kb, section)]
    return out


def from_dict(data: dict[str, Any], *, source: str) -> KnowledgeBase:
    """The inverse of :func:`to_dict`."""
    kwargs = {
        section: tuple(object_from_dict(cls, d) for d in data.get(section, ()))
        for section, cls in _SECTIONS
    }
    return KnowledgeBase(
        version=data["atlas_version"], name=data.get("name", "ATLAS"), source=source,
        format_version=data.get("format_version", ""), **kwargs
    )
