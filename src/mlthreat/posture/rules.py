"""Applicability rules: which techniques a system is open to, kept as data.

The built-in rules are ``data/rules.yaml`` (its header documents the format). A user rules file
has the same shape; :func:`load_rules` merges it over the built-in ones: a rule with an ``id``
already known replaces that rule where it stood, a new ``id`` is appended, and
``disabled: true`` removes the rule. Rules are checked against the knowledge base (every
technique must exist) and every problem is a :class:`~mlthreat.posture.profile.ProfileError`
naming file, line and field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlthreat.kb.model import KnowledgeBase
from mlthreat.posture.profile import (
    DataSource,
    Exposure,
    Kind,
    Output,
    ProfileError,
    Provenance,
    System,
    Telemetry,
    _check_id,
    _message,
    format_loc,
    line_of,
)

__all__ = ["BUILTIN_RULES", "Condition", "Rule", "RuleSet", "load_rules"]

#: Where the built-in rules live (a package resource).
BUILTIN_RULES = "data/rules.yaml"


class Condition(BaseModel):
    """What a system must have for a rule to fire. Every field given must match (AND); a list
    field matches when the system has at least one of the listed values (OR). ``tools: true``
    needs at least one tool (``false``: none). ``unless`` holds a condition that, when it
    matches, switches the rule off. An empty condition matches every system."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: list[Kind] | None = None
    exposure: list[Exposure] | None = None
    returns: list[Output] | None = None
    training_data: list[DataSource] | None = None
    provenance: list[Provenance] | None = None
    telemetry: list[Telemetry] | None = None
    tools: bool | None = None
    unless: Condition | None = None

    @field_validator("kind", "exposure", "returns", "training_data", "provenance", "telemetry",
                     mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def matches(self, system: System) -> bool:
        """True when ``system`` meets every field of the condition and not its ``unless``."""
        have: dict[str, tuple[str, ...]] = {
            "kind": (system.kind,), "exposure": system.exposure, "returns": system.returns,
            "training_data": system.training_data, "provenance": system.provenance,
            "telemetry": system.telemetry,
        }
        for name, values in have.items():
            wanted = getattr(self, name)
            if wanted is not None and not set(wanted) & set(values):
                return False
        if self.tools is not None and self.tools != bool(system.tools):
            return False
        return not (self.unless is not None and self.unless.matches(system))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    condition: Condition = Condition()
    techniques: list[str] = []
    reason: str = ""
    disabled: bool = False


@dataclass(frozen=True)
class Rule:
    """One applicability rule: when ``condition`` matches a system, ``techniques`` apply to it
    for ``reason``. ``source`` is the file the rule came from."""

    id: str
    condition: Condition
    techniques: tuple[str, ...]
    reason: str
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "condition": self.condition.to_dict(),
                "techniques": list(self.techniques), "reason": self.reason,
                "source": self.source}


@dataclass(frozen=True)
class RuleSet:
    """Rules in evaluation order (built-in order, user additions after)."""

    rules: tuple[Rule, ...]

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, rule_id: str) -> Rule:
        """The rule with this id. Raises KeyError."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def applicable(self, system: System) -> dict[str, list[Rule]]:
        """Technique ID -> the rules that make it applicable to ``system``, in rule order."""
        out: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if rule.condition.matches(system):
                for tid in rule.techniques:
                    out.setdefault(tid, []).append(rule)
        return out

    def to_dict(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rules]


def _parse(text: str, source: str, kb: KnowledgeBase) -> list[tuple[_RuleSpec, str]]:
    from mlthreat.safeload import SafeLoadError, parse_yaml_node

    try:
        data, root = parse_yaml_node(text, source)
    except SafeLoadError as exc:
        raise ProfileError(source, exc.reason, line=exc.line) from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise ProfileError(source, "a rules file is a list of rules", line=line_of(root, ()))
    out = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        try:
            spec = _RuleSpec.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = (i, *first["loc"])
            msg = ("must be lower-case words joined by hyphens"
                   if first["type"] == "string_pattern_mismatch" else _message(first))
            raise ProfileError(source, msg, line=line_of(root, loc),
                               field=format_loc(("rules", *loc))) from None
        if spec.id in seen:
            raise ProfileError(source, f"duplicate rule id '{spec.id}'",
                               line=line_of(root, (i, "id")), field=f"rules[{i}].id")
        seen.add(spec.id)
        if not spec.disabled:
            if not spec.techniques:
                raise ProfileError(source, "must not be empty",
                                   line=line_of(root, (i, "techniques")) or line_of(root, (i,)),
                                   field=f"rules[{i}].techniques")
            if not spec.reason.strip():
                raise ProfileError(source, "must not be empty", line=line_of(root, (i,)),
                                   field=f"rules[{i}].reason")
        for k, tid in enumerate(spec.techniques):
            try:
                _check_id(kb, tid, "technique")
            except ValueError as exc:
                raise ProfileError(source, str(exc), line=line_of(root, (i, "techniques", k)),
                                   field=f"rules[{i}].techniques[{k}]") from None
        out.append((spec, source))
    return out


def load_rules(kb: KnowledgeBase, user_files: Iterable[str | Path] = (), *,
               builtin: bool = True) -> RuleSet:
    """The built-in rules (unless ``builtin`` is false) with each user file merged in order:
    same id replaces in place, a new id is appended, ``disabled: true`` drops the rule.

    Raises
    ------
    ProfileError
        For an unreadable file or an invalid rule (file, line and field named).
    """
    specs: dict[str, tuple[_RuleSpec, str]] = {}
    if builtin:
        text = resources.files("mlthreat.posture").joinpath(BUILTIN_RULES).read_text("utf-8")
        for spec, src in _parse(text, f"mlthreat/posture/{BUILTIN_RULES}", kb):
            specs[spec.id] = (spec, src)
    for path in user_files:
        p = Path(path)
        try:
            text = p.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(str(p), f"cannot read rules file: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        for spec, src in _parse(text, str(p), kb):
            # dict assignment keeps the original position of a replaced id
            specs[spec.id] = (spec, src)
    return RuleSet(tuple(
        Rule(s.id, s.condition, tuple(dict.fromkeys(s.techniques)), " ".join(s.reason.split()),
             src)
        for s, src in specs.values() if not s.disabled
    ))
