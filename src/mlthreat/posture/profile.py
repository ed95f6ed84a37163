"""The organisation profile: the ML systems an organisation runs and what protects them.

The profile is YAML (see ``data/example-profile.yaml``, or :func:`example_profile_text`, for a
complete commented example). Its shape is checked with pydantic; every problem is reported as
one line ``FILE:LINE: FIELD: REASON`` (a :class:`ProfileError`, a ``UsageError``), the line
found from the YAML node the field came from. ATLAS IDs are resolved against the knowledge base
(with a "did you mean" suggestion when a close ID exists) and evidence files, relative to the
profile's folder, are read and checked here, so a loaded :class:`Profile` is known to be usable.

Detection scores use a 0-5 scale in the spirit of DeTT&CT's detection scores:

=====  ============  ==========================================================================
score  level         meaning
=====  ============  ==========================================================================
0      none          nothing would notice the technique
1      poor          the data to spot it is logged, but nobody looks unless something else
                     raised an alarm
2      fair          a rule or analytic exists but has not been tested against the technique,
                     or it is too noisy to act on
3      good          tested against the common variants of the technique; alerts are triaged
4      very good     tested and tuned against most variants; low false-positive rate
5      excellent     validated again and again (attack emulation, ``mlthreat detect evaluate``),
                     with a response that follows every alert
=====  ============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlthreat.errors import UsageError
from mlthreat.kb.errors import UnknownIdError, WrongKindError
from mlthreat.kb.model import KnowledgeBase
from mlthreat.posture.evidence import Evidence, EvidenceError, load_evidence

__all__ = [
    "DETECTION_LEVELS", "DetectionClaim", "MitigationClaim", "Profile", "ProfileError",
    "ProfileSpec", "System", "SystemSpec", "load_profile", "parse_profile",
]

Kind = Literal["classifier", "regressor", "llm", "agent", "rag"]
Exposure = Literal["public-api", "partner-api", "internal", "on-device", "physical-sensor"]
Output = Literal["scores", "labels", "text"]
DataSource = Literal["curated", "user-contributed", "scraped", "third-party"]
Provenance = Literal["in-house", "public-hub", "vendor"]
Telemetry = Literal["inference-logs", "model-registry", "artifact-hashes"]
Status = Literal["planned", "partial", "implemented"]

#: The detection score levels (index = score), see the module docstring.
DETECTION_LEVELS: tuple[str, ...] = ("none", "poor", "fair", "good", "very good", "excellent")


class ProfileError(UsageError):
    """A profile problem, one line: ``FILE:LINE: FIELD: REASON`` (line and field when known)."""

    def __init__(self, path: str, reason: str, *, line: int | None = None,
                 field: str | None = None) -> None:
        self.path, self.reason, self.line, self.field = path, reason, line, field
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")


# -- the schema (pydantic) --------------------------------------------------------------------
def _as_list(value: Any) -> Any:
    # a single value is accepted where a list is expected: `exposure: public-api`
    return [value] if isinstance(value, str) else value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MitigationSpec(_Spec):
    """A deployed (or planned) ATLAS mitigation: ``id`` (``AML.M0004``), ``status``, ``note``."""

    id: str = Field(min_length=1)
    status: Status
    note: str = ""


class DetectionSpec(_Spec):
    """A detection: ``name``, the ``techniques`` it is meant to catch, its 0-5 ``score``."""

    name: str = Field(min_length=1)
    techniques: list[str] = Field(min_length=1)
    score: int
    note: str = ""

    _as_list = field_validator("techniques", mode="before")(_as_list)

    @field_validator("score", mode="before")
    @classmethod
    def _score(cls, value: Any) -> Any:
        # checked by hand so that 3.5, true and 7 all get the same plain message
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
            raise ValueError("must be a whole number from 0 to 5")
        return value


class SystemSpec(_Spec):
    """One ML system; see ``data/example-profile.yaml`` for every field explained."""

    name: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    description: str = ""
    kind: Kind
    tools: list[str] = []
    exposure: list[Exposure] = Field(min_length=1)
    returns: list[Output] = Field(min_length=1)
    training_data: list[DataSource] = []
    provenance: list[Provenance] = Field(min_length=1)
    telemetry: list[Telemetry] = []
    mitigations: list[MitigationSpec] = []
    detections: list[DetectionSpec] = []
    evidence: list[str] = []

    _as_list = field_validator("tools", "exposure", "returns", "training_data", "provenance",
                               "telemetry", "evidence", mode="before")(_as_list)


class ProfileSpec(_Spec):
    """The whole profile: ``organisation``, optional ``description``, ``systems``."""

    organisation: str = Field(min_length=1)
    description: str = ""
    systems: list[SystemSpec] = Field(min_length=1)


# -- the loaded profile (plain data) ---------------------------------------------------------
@dataclass(frozen=True)
class MitigationClaim:
    """A mitigation the profile declares for a system, with its status."""

    id: str
    name: str
    status: Status
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "note": self.note}


@dataclass(frozen=True)
class DetectionClaim:
    """A detection the profile declares: name, techniques, 0-5 score and its level name."""

    name: str
    techniques: tuple[str, ...]
    score: int
    note: str = ""

    @property
    def level(self) -> str:
        return DETECTION_LEVELS[self.score]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "techniques": list(self.techniques), "score": self.score,
                "level": self.level, "note": self.note}


@dataclass(frozen=True)
class System:
    """One ML system of the profile, IDs resolved and evidence loaded."""

    name: str
    owner: str
    kind: Kind
    exposure: tuple[Exposure, ...]
    returns: tuple[Output, ...]
    provenance: tuple[Provenance, ...]
    description: str = ""
    tools: tuple[str, ...] = ()
    training_data: tuple[DataSource, ...] = ()
    telemetry: tuple[Telemetry, ...] = ()
    mitigations: tuple[MitigationClaim, ...] = ()
    detections: tuple[DetectionClaim, ...] = ()
    evidence: tuple[Evidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "owner": self.owner, "description": self.description,
            "kind": self.kind, "tools": list(self.tools), "exposure": list(self.exposure),
            "returns": list(self.returns), "training_data": list(self.training_data),
            "provenance": list(self.provenance), "telemetry": list(self.telemetry),
            "mitigations": [m.to_dict() for m in self.mitigations],
            "detections": [d.to_dict() for d in self.detections],
            "evidence": [e.to_dict() for e in self.evidence],
        }


@dataclass(frozen=True)
class Profile:
    """A loaded organisation profile. ``source`` is the file it was read from."""

    organisation: str
    systems: tuple[System, ...]
    description: str = ""
    source: str = "<string>"
    atlas_version: str = ""
    _by_name: dict[str, System] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.systems})

    def system(self, name: str) -> System:
        """The system called ``name``. Raises KeyError."""
        return self._by_name[name]

    def to_dict(self) -> dict[str, Any]:
        return {"organisation": self.organisation, "description": self.description,
                "source": self.source, "atlas_version": self.atlas_version,
                "systems": [s.to_dict() for s in self.systems]}


# -- locating errors in the YAML -------------------------------------------------------------
Loc = Sequence[int | str]


def format_loc(loc: Loc) -> str:
    """``("systems", 0, "mitigations", 1, "status")`` -> ``systems[0].mitigations[1].status``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(root: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of the YAML node at ``loc``; the deepest existing node's line when the
    path goes further than the document (a missing field is reported at its parent)."""
    if root is None:
        return None
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in loc:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    # the key's line: for a block value it is the line that names the field
                    line, nxt = key.start_mark.line + 1, value
                    break
        elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
              and 0 <= part < len(node.value)):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "literal_error":
        import re

        allowed = re.findall(r"'([^']*)'", error.get("ctx", {}).get("expected", ""))
        return "must be one of " + ", ".join(allowed)
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return _MESSAGES.get(kind, str(error["msg"]))


# -- loading -----------------------------------------------------------------------------------
def load_profile(path: str | Path, kb: KnowledgeBase) -> Profile:
    """Read, validate and resolve a profile file.

    Raises
    ------
    ProfileError
        One line naming file, line and field: bad YAML, a schema violation, an unknown ATLAS
        ID (with a suggestion when the knowledge base holds a close one), a duplicate system
        name or mitigation, an evidence file that is unreadable or of the wrong kind.
    """
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(str(p), f"cannot read profile: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    return parse_profile(text, kb, source=str(p), base_dir=p.parent)


def parse_profile(text: str, kb: KnowledgeBase, *, source: str = "<string>",
                  base_dir: str | Path = ".") -> Profile:
    """Validate profile YAML ``text``; ``source`` names it in errors, evidence paths are taken
    relative to ``base_dir``. Raises :class:`ProfileError` like :func:`load_profile`."""
    from mlthreat.safeload import SafeLoadError, parse_yaml_node

    try:
        data, root = parse_yaml_node(text, source)
    except SafeLoadError as exc:
        raise ProfileError(source, exc.reason, line=exc.line) from None

    def fail(loc: Loc, reason: str) -> ProfileError:
        return ProfileError(source, reason, line=line_of(root, loc), field=format_loc(loc))

    if not isinstance(data, dict):
        raise ProfileError(source, "a profile is a mapping with 'organisation' and 'systems'",
                           line=line_of(root, ()))
    try:
        spec = ProfileSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise fail(first["loc"], _message(first)) from None

    systems = []
    seen: set[str] = set()
    for i, s in enumerate(spec.systems):
        if s.name in seen:
            raise fail(("systems", i, "name"), f"duplicate system name '{s.name}'")
        seen.add(s.name)
        systems.append(_system(s, ("systems", i), kb, Path(base_dir), fail))
    return Profile(spec.organisation, tuple(systems), spec.description, source, kb.version)


def _check_id(kb: KnowledgeBase, atlas_id: str, wanted: Literal["mitigation", "technique"]
              ) -> str:
    """The name of the object ``atlas_id`` of kind ``wanted``; else a ValueError whose message
    suggests the closest ID *of that kind* (a mitigation typo should not suggest a technique)."""
    from difflib import get_close_matches

    try:
        obj = kb.mitigation(atlas_id) if wanted == "mitigation" else kb.technique(atlas_id)
        return obj.name
    except WrongKindError as exc:
        raise ValueError(str(exc)) from None
    except UnknownIdError:
        pool = [m.id for m in kb.mitigations] if wanted == "mitigation" else [
            t.id for t in kb.techniques]
        close = get_close_matches(atlas_id, pool, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown {wanted} ID '{atlas_id}' in ATLAS data {kb.version}{hint}"
                         ) from None


def _system(s: SystemSpec, loc: tuple[str | int, ...], kb: KnowledgeBase, base: Path,
            fail: Any) -> System:
    mitigations: list[MitigationClaim] = []
    for j, m in enumerate(s.mitigations):
        try:
            name = _check_id(kb, m.id, "mitigation")
        except ValueError as exc:
            raise fail((*loc, "mitigations", j, "id"), str(exc)) from None
        if any(c.id == m.id for c in mitigations):
            raise fail((*loc, "mitigations", j, "id"), f"{m.id} is listed twice")
        mitigations.append(MitigationClaim(m.id, name, m.status, m.note))
    detections = []
    for j, d in enumerate(s.detections):
        for k, tid in enumerate(d.techniques):
            try:
                _check_id(kb, tid, "technique")
            except ValueError as exc:
                raise fail((*loc, "detections", j, "techniques", k), str(exc)) from None
        detections.append(DetectionClaim(d.name, tuple(d.techniques), d.score, d.note))
    evidence = []
    for j, rel in enumerate(s.evidence):
        try:
            evidence.append(load_evidence(base / rel))
        except EvidenceError as exc:
            raise fail((*loc, "evidence", j), str(exc)) from None
    return System(
        name=s.name, owner=s.owner, kind=s.kind, exposure=tuple(dict.fromkeys(s.exposure)),
        returns=tuple(dict.fromkeys(s.returns)), provenance=tuple(dict.fromkeys(s.provenance)),
        description=s.description, tools=tuple(s.tools),
        training_data=tuple(dict.fromkeys(s.training_data)),
        telemetry=tuple(dict.fromkeys(s.telemetry)), mitigations=tuple(mitigations),
        detections=tuple(detections), evidence=tuple(evidence),
    )
