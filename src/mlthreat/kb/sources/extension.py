"""Organisation extensions: an organisation's own techniques, mitigations and case studies.

An extension is a YAML file (read with the safe loader) such as::

    namespace: ACME                      # the ID prefix this file owns
    name: ACME model-risk additions
    techniques:
      - id: ACME.T0001
        name: Scrape the feature store
        description: Reads features from an unauthenticated internal store.
        tactics: [AML.TA0009]            # or  subtechnique-of: AML.T0024
        maturity: demonstrated           # feasible | demonstrated | realized
    mitigations:
      - id: ACME.M0001
        name: Authenticate the feature store
        description: Requires service identities for every feature-store read.
        techniques:                      # IDs, or {id, use}
          - ACME.T0001
          - {id: AML.T0024.002, use: Slows model theft through stolen features.}
    case-studies:
      - id: ACME.CS0001
        name: Feature store scraped in 2025
        summary: A contractor account pulled features for a week before anyone noticed.
        incident-date: 2025-03-01
        incident-date-granularity: MONTH  # YEAR | MONTH | DATE
        case-study-type: incident         # incident | exercise
        target: Credit scoring model
        actor: Unknown
        procedure:
          - {tactic: AML.TA0009, technique: ACME.T0001}

New objects must use the file's namespace; they may refer to ATLAS objects and to each other.
Every problem is reported as a :class:`DataFileError` naming the file, line, entry and field.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from mlthreat.kb.errors import DataFileError
from mlthreat.kb.ids import ID_PATTERN, kind_of, parent_id
from mlthreat.kb.model import (
    CaseStudy,
    KnowledgeBase,
    Mitigation,
    MitigationUse,
    ProcedureStep,
    Reference,
    Technique,
)

__all__ = ["load_extension", "merge"]


def _read_with_lines(path: Path) -> tuple[Any, dict[int, tuple[int, dict[str, int]]]]:
    """Parse YAML safely, remembering the line of every mapping and of each of its keys."""
    import yaml

    lines: dict[int, tuple[int, dict[str, int]]] = {}

    class _LineLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = super().construct_mapping(node, deep=True)
            keys: dict[str, int] = {}
            for key_node, _ in node.value:  # duplicate keys: refused by parse_yaml before
                keys[str(key_node.value)] = key_node.start_mark.line + 1
            lines[id(mapping)] = (node.start_mark.line + 1, keys)
            return mapping

    _LineLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping
    )
    from mlthreat.safeload import SafeLoadError, parse_yaml, read_text

    try:
        # the bounded reader first (size, depth, alias expansion, duplicate keys naming both
        # lines); then the line-recording loader over text known to be tame
        text = read_text(path, encoding="utf-8")
        parse_yaml(text, path)
    except SafeLoadError as exc:
        raise DataFileError(exc.path, exc.reason, line=exc.line) from None
    try:
        # a SafeLoader subclass: plain YAML types only, never Python objects
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataFileError(
            path,
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            line=mark.line + 1 if mark else None,
        ) from None
    except RecursionError:
        raise DataFileError(path, "invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # impossible dates, overlong numbers
        raise DataFileError(path, f"invalid YAML: {str(exc).splitlines()[0][:200]}") from None
    return data, lines


def _models() -> dict[str, Any]:
    """The pydantic schema of an extension (built on first use: pydantic costs ~0.1 s to import)."""
    from pydantic import BaseModel, ConfigDict, Field

    class _Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    class Link(_Strict):
        id: str
        use: str = ""

    class Ref(_Strict):
        title: str = ""
        url: str

    class TechniqueIn(_Strict):
        id: str
        name: str = Field(min_length=1)
        description: str = Field(min_length=1)
        tactics: list[str] = Field(default_factory=list)
        subtechnique_of: str | None = Field(None, alias="subtechnique-of")
        maturity: Literal["feasible", "demonstrated", "realized"] = "feasible"
        references: list[Ref] = Field(default_factory=list)

    class MitigationIn(_Strict):
        id: str
        name: str = Field(min_length=1)
        description: str = Field(min_length=1)
        techniques: list[str | Link] = Field(min_length=1)
        category: list[str] = Field(default_factory=list)

    class StepIn(_Strict):
        tactic: str
        technique: str
        description: str = ""

    class CaseStudyIn(_Strict):
        id: str
        name: str = Field(min_length=1)
        summary: str = Field(min_length=1)
        incident_date: dt.date = Field(alias="incident-date")
        incident_date_granularity: Literal["YEAR", "MONTH", "DATE"] = Field(
            "DATE", alias="incident-date-granularity"
        )
        case_study_type: Literal["incident", "exercise"] = Field(alias="case-study-type")
        target: str = ""
        actor: str = ""
        reporter: str = ""
        references: list[Ref] = Field(default_factory=list)
        procedure: list[StepIn] = Field(min_length=1)

    class ExtensionIn(_Strict):
        namespace: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,15}$")
        name: str = ""
        techniques: list[TechniqueIn] = Field(default_factory=list)
        mitigations: list[MitigationIn] = Field(default_factory=list)
        case_studies: list[CaseStudyIn] = Field(default_factory=list, alias="case-studies")

    return {"ExtensionIn": ExtensionIn}


# Names pydantic puts into error locations for union members, not fields of the file.
_PYDANTIC_TAGS = {"str", "Link", "Ref", "constrained-str", "TechniqueIn", "MitigationIn",
                  "CaseStudyIn", "StepIn", "function-after", "date"}


def _locate(data: Any, loc: tuple[Any, ...], lines: dict[int, tuple[int, dict[str, int]]]
            ) -> tuple[str | None, str | None, int | None]:
    """Turn a pydantic error location into (entry, field, line) in the user's terms."""
    entry, line, node = None, None, data
    fields: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(node, dict):
            line = lines.get(id(node), (line, {}))[1].get(str(part), line)
            node = node.get(part)
            if i >= 2 or entry is not None:
                fields.append(str(part))
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            if entry is None:
                entry = f"{loc[0]}[{part}]"
                if isinstance(node, dict) and isinstance(node.get("id"), str):
                    entry = node["id"]
                line = lines.get(id(node), (line, {}))[0]
            else:
                fields.append(f"[{part}]")
        elif not (isinstance(part, str) and part in _PYDANTIC_TAGS):
            fields.append(str(part))
    if entry is None and loc:
        fields = [str(loc[0])]
    field = ".".join(fields).replace(".[", "[") or None
    return entry, field, line


def load_extension(path: str | Path) -> dict[str, Any]:
    """Parse and validate the schema of an extension file; return its data (field names as
    in the file). Raises :class:`DataFileError` naming file, line, entry and field."""
    from pydantic import ValidationError

    path = Path(path)
    data, lines = _read_with_lines(path)
    if not isinstance(data, dict):
        raise DataFileError(path, "an extension file must be a mapping with 'namespace' at the top")
    try:
        model = _models()["ExtensionIn"].model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        entry, field, line = _locate(data, tuple(err["loc"]), lines)
        msg = "missing required field" if err["type"] == "missing" else err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "model_type":
            msg = "expected a mapping of fields"
        raise DataFileError(path, msg, line=line, entry=entry, field=field) from None
    return {"model": model, "data": data, "lines": lines}


def merge(base: KnowledgeBase, path: str | Path) -> KnowledgeBase:
    """Validate an extension file against ``base`` and return the merged knowledge base.

    Raises
    ------
    DataFileError
        For a schema error, an ID outside the file's namespace or of the wrong kind, a duplicate
        ID (within the file or against ``base``), or a reference to an unknown ID.
    """
    path = Path(path)
    parsed = load_extension(path)
    ext, data, lines = parsed["model"], parsed["data"], parsed["lines"]

    def fail(section: str, index: int, message: str, field: str | None = None,
             entry: str | None = None) -> DataFileError:
        item = (data.get(section) or [])[index]
        line, keys = lines.get(id(item), (None, {}))
        item_id = item.get("id") if isinstance(item, dict) else None
        return DataFileError(path, message, line=keys.get(field or "", line),
                             entry=entry or item_id, field=field)

    if ext.namespace == "AML":
        line = lines.get(id(data), (None, {}))[1].get("namespace")
        raise DataFileError(path, "the AML namespace belongs to MITRE ATLAS; use your "
                            "organisation's own prefix", line=line, field="namespace")
    known = set(base._index)
    new_ids: set[str] = set()
    for section, items, kinds in (
        ("techniques", ext.techniques, ("technique", "sub-technique")),
        ("mitigations", ext.mitigations, ("mitigation",)),
        ("case-studies", ext.case_studies, ("case-study",)),
    ):
        for i, item in enumerate(items):
            m = ID_PATTERN.match(item.id)
            if not m:
                raise fail(section, i, f"malformed ID {item.id!r}", "id")
            if m["prefix"] != ext.namespace:
                raise fail(section, i, f"ID {item.id!r} is outside this file's namespace "
                           f"{ext.namespace!r}", "id")
            if kind_of(item.id) not in kinds:
                raise fail(section, i, f"{item.id!r} is a {kind_of(item.id)} ID, not a "
                           f"{kinds[0]} ID", "id")
            if item.id in known or item.id in new_ids:
                where = "the base knowledge base" if item.id in known else "this file"
                raise fail(section, i, f"duplicate ID {item.id!r} (already in {where})", "id")
            new_ids.add(item.id)
    every = known | new_ids

    def need(section: str, i: int, ref: str, field: str, kinds: tuple[str, ...]) -> None:
        if ref not in every:
            raise fail(section, i, f"unknown ID {ref!r}", field)
        if kind_of(ref) not in kinds:
            raise fail(section, i, f"{ref!r} is a {kind_of(ref)}, expected a {kinds[0]}", field)

    techniques = []
    for i, t in enumerate(ext.techniques):
        if not t.tactics and not t.subtechnique_of:
            raise fail("techniques", i, "a technique needs 'tactics' or 'subtechnique-of'",
                       "tactics")
        for tac in t.tactics:
            need("techniques", i, tac, "tactics", ("tactic",))
        if t.subtechnique_of:
            need("techniques", i, t.subtechnique_of, "subtechnique-of", ("technique",))
            if parent_id(t.id) != t.subtechnique_of:
                raise fail("techniques", i, f"a sub-technique of {t.subtechnique_of} is "
                           f"numbered {t.subtechnique_of}.NNN, not {t.id}", "id")
        elif kind_of(t.id) == "sub-technique":
            raise fail("techniques", i, f"{t.id} is numbered as a sub-technique; give "
                       "'subtechnique-of' or number it as a technique", "subtechnique-of")
        techniques.append(Technique(
            id=t.id, name=t.name, description=t.description, tactics=tuple(t.tactics),
            parent=t.subtechnique_of, maturity=t.maturity,
            references=tuple(Reference(r.title, r.url) for r in t.references),
        ))
    mitigations = []
    for i, m in enumerate(ext.mitigations):
        uses = [MitigationUse(u) if isinstance(u, str) else MitigationUse(u.id, u.use)
                for u in m.techniques]
        for u in uses:
            need("mitigations", i, u.technique, "techniques", ("technique", "sub-technique"))
        mitigations.append(Mitigation(id=m.id, name=m.name, description=m.description,
                                      techniques=tuple(uses), category=tuple(m.category)))
    case_studies = []
    for i, c in enumerate(ext.case_studies):
        for s in c.procedure:
            need("case-studies", i, s.tactic, "procedure", ("tactic",))
            need("case-studies", i, s.technique, "procedure", ("technique", "sub-technique"))
        case_studies.append(CaseStudy(
            id=c.id, name=c.name, summary=c.summary, incident_date=c.incident_date.isoformat(),
            date_granularity=c.incident_date_granularity, case_study_type=c.case_study_type,
            target=c.target, actor=c.actor, reporter=c.reporter,
            references=tuple(Reference(r.title, r.url) for r in c.references),
            procedure=tuple(ProcedureStep(s.tactic, s.technique, s.description)
                            for s in c.procedure),
        ))
    return KnowledgeBase(
        version=f"{base.version}+{ext.namespace}",
        name=base.name,
        source=f"{base.source} + {path}",
        tactics=base.tactics,
        techniques=base.techniques + tuple(techniques),
        mitigations=base.mitigations + tuple(mitigations),
        case_studies=base.case_studies + tuple(case_studies),
        retired=base.retired,
        warnings=base.warnings,
    )
