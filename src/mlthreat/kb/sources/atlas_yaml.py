"""The official ``ATLAS.yaml`` (atlas-data ``dist/``), layouts 4.x and 5.x.

Both layouts hold ``version``, one entry in ``matrices`` with ``tactics``, ``techniques`` and
``mitigations``, and a top-level ``case-studies`` list. Quirks of the real files this loader
survives on purpose:

* AML.M0018 and AML.M0034 carry a technique link (``{id, use}``) inside ``ml-lifecycle``; it is
  moved to the mitigation's technique links, where it belongs.
* AML.M0002 and AML.M0004 link AML.T0043.001 twice with different "use" texts; both are kept.
* Dates are YAML dates or strings; both come out as ``YYYY-MM-DD``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlthreat.kb.errors import DataFileError
from mlthreat.kb.ids import ID_PATTERN
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

__all__ = ["FORMAT", "load", "shortname", "sniff"]

FORMAT = "atlas-yaml"


def sniff(data: Any) -> bool:
    return isinstance(data, dict) and "matrices" in data


def shortname(name: str) -> str:
    """The Navigator/STIX short name of a tactic (``AI Attack Staging`` → ``ai-attack-staging``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class _Reader:
    """Field access that turns a missing or mistyped field into a DataFileError naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._text: str | None = None

    def entry_pattern(self, entry: str) -> str:
        """Where an entry starts: its ``- id: X`` line in this layout."""
        return rf"^\s*-?\s*id:\s*['\"]?{re.escape(entry)}['\"]?\s*$"

    def search_from(self, text: str) -> int:
        """Where in ``text`` entries are looked for (the whole file here)."""
        return 0

    def line_of(self, entry: str | None) -> int | None:
        if not entry:
            return None
        if self._text is None:
            try:
                self._text = self.path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                self._text = ""
        text = self._text
        m = re.compile(self.entry_pattern(entry), re.M).search(text, self.search_from(text))
        return text.count("\n", 0, m.start()) + 1 if m else None

    def fail(
        self, message: str, entry: str | None = None, field: str | None = None
    ) -> DataFileError:
        return DataFileError(self.path, message, line=self.line_of(entry), entry=entry, field=field)

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], entry: str | None,
            default: Any = ...) -> Any:
        if not isinstance(obj, dict):
            raise self.fail("expected a mapping", entry)
        if key not in obj or obj[key] is None:
            if default is not ...:
                return default
            raise self.fail("missing required field", entry, key)
        value = obj[key]
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(f"expected {names}, got {type(value).__name__}", entry, key)
        return value

    def ident(self, obj: Any, where: str) -> str:
        atlas_id: str = self.get(obj, "id", str, where)
        if not ID_PATTERN.match(atlas_id):
            raise self.fail(f"malformed ATLAS ID {atlas_id!r}", where, "id")
        return atlas_id

    def date(self, obj: dict[str, Any], key: str, entry: str) -> str:
        value = obj.get(key)
        return "" if value is None else str(value)[:10]

    def attack_ref(self, obj: dict[str, Any], entry: str) -> AttackReference | None:
        ref = obj.get("ATT&CK-reference")
        if not ref:
            return None
        return AttackReference(
            self.get(ref, "id", str, entry), str(self.get(ref, "url", str, entry, ""))
        )

    def references(self, obj: dict[str, Any], entry: str) -> tuple[Reference, ...]:
        refs = self.get(obj, "references", list, entry, [])
        return tuple(
            Reference(str(r.get("title") or ""), str(r.get("url") or ""))
            for r in refs if isinstance(r, dict)
        )


def load(data: Any, path: Path) -> KnowledgeBase:
    """Build a :class:`KnowledgeBase` from the parsed official file.

    Raises
    ------
    DataFileError
        For a missing or mistyped field, or a malformed ID, naming the entry, field and line.
    """
    r = _Reader(path)
    version = str(r.get(data, "version", (str, int, float), None))
    matrices = r.get(data, "matrices", list, None)
    if not matrices:
        raise r.fail("'matrices' is empty", None, "matrices")
    matrix = matrices[0]
    tactics = tuple(_tactic(r, t, f"tactics[{i}]")
                    for i, t in enumerate(r.get(matrix, "tactics", list, "matrix")))
    techniques = tuple(_technique(r, t, f"techniques[{i}]")
                       for i, t in enumerate(r.get(matrix, "techniques", list, "matrix")))
    mitigations = tuple(_mitigation(r, m, f"mitigations[{i}]")
                        for i, m in enumerate(r.get(matrix, "mitigations", list, "matrix", [])))
    case_studies = tuple(_case_study(r, c, f"case-studies[{i}]")
                         for i, c in enumerate(r.get(data, "case-studies", list, None, [])))
    return KnowledgeBase(
        version=version,
        name=str(data.get("name") or "ATLAS"),
        source=str(path),
        tactics=tactics,
        techniques=techniques,
        mitigations=mitigations,
        case_studies=case_studies,
    )


def _tactic(r: _Reader, t: Any, where: str) -> Tactic:
    tid = r.ident(t, where)
    name = r.get(t, "name", str, tid)
    return Tactic(
        id=tid,
        name=name,
        description=str(t.get("description") or "").strip(),
        shortname=shortname(name),
        attack_reference=r.attack_ref(t, tid),
        created=r.date(t, "created_date", tid),
        modified=r.date(t, "modified_date", tid),
    )


def _technique(r: _Reader, t: Any, where: str) -> Technique:
    tid = r.ident(t, where)
    tactics = tuple(r.get(t, "tactics", list, tid, []))
    parent = r.get(t, "subtechnique-of", str, tid, None)
    if parent is None and not tactics:
        raise r.fail("a technique needs 'tactics' or 'subtechnique-of'", tid, "tactics")
    return Technique(
        id=tid,
        name=r.get(t, "name", str, tid),
        description=str(t.get("description") or "").strip(),
        tactics=tuple(str(x) for x in tactics),
        parent=parent,
        maturity=str(t.get("maturity") or ""),  # type: ignore[arg-type]
        attack_reference=r.attack_ref(t, tid),
        references=r.references(t, tid),
        created=r.date(t, "created_date", tid),
        modified=r.date(t, "modified_date", tid),
    )


def _mitigation(r: _Reader, m: Any, where: str) -> Mitigation:
    mid = r.ident(m, where)
    links: list[MitigationUse] = []
    lifecycle: list[str] = []
    for item in r.get(m, "ml-lifecycle", list, mid, []):
        if isinstance(item, dict):  # the quirk: a technique link filed under ml-lifecycle
            links.append(_use(r, item, mid))
        else:
            lifecycle.append(str(item))
    uses = [_use(r, u, mid) for u in r.get(m, "techniques", list, mid, [])] + links
    category = m.get("category") or []
    return Mitigation(
        id=mid,
        name=r.get(m, "name", str, mid),
        description=str(m.get("description") or "").strip(),
        techniques=tuple(uses),
        category=tuple([category] if isinstance(category, str) else category),
        lifecycle=tuple(lifecycle),
        attack_reference=r.attack_ref(m, mid),
        created=r.date(m, "created_date", mid),
        modified=r.date(m, "modified_date", mid),
    )


def _use(r: _Reader, u: Any, mid: str) -> MitigationUse:
    if isinstance(u, str):  # older layouts list bare IDs
        return MitigationUse(u)
    return MitigationUse(r.get(u, "id", str, mid), str(u.get("use") or "").strip())


def _case_study(r: _Reader, c: Any, where: str) -> CaseStudy:
    cid = r.ident(c, where)
    steps = []
    for i, s in enumerate(r.get(c, "procedure", list, cid)):
        steps.append(ProcedureStep(
            tactic=r.get(s, "tactic", str, f"{cid} procedure[{i}]"),
            technique=r.get(s, "technique", str, f"{cid} procedure[{i}]"),
            description=str(s.get("description") or "").strip(),
        ))
    return CaseStudy(
        id=cid,
        name=r.get(c, "name", str, cid),
        summary=str(c.get("summary") or "").strip(),
        incident_date=r.date(c, "incident-date", cid),
        date_granularity=str(c.get("incident-date-granularity") or "DATE"),
        case_study_type=str(c.get("case-study-type") or ""),
        target=str(c.get("target") or ""),
        actor=str(c.get("actor") or ""),
        reporter=str(c.get("reporter") or ""),
        references=r.references(c, cid),
        procedure=tuple(steps),
    )
