"""The official ATLAS data in format 6.x (atlas-data ``dist/v6/ATLAS-<release>.yaml``,
``dist/ATLAS-latest.yaml``), published as monthly content releases since May 2026.

Layout: ``format-version`` (semver), ``collection`` (``version`` is the content release,
``YYYY.MM`` or ``YYYY.MM.N``), ``matrix``, then ``tactics``, ``techniques``, ``mitigations`` and
``case-studies``, each a map keyed by ATLAS ID, and ``relationships``: by source ID, then by
type, a list of items, each a target ID or a mapping holding it (``target`` or ``id``) with its
metadata. The types read:

* ``sequences`` (matrix → tactic): the matrix's column order;
* ``achieves`` (technique → tactic), ``specializes`` (sub-technique → parent);
* ``mitigates`` (mitigation → technique; ``description`` is the "use" text);
* ``employs`` (case study → technique; ``tactic`` and ``description`` make a procedure step,
  in list order).

Other relationship types are read past with a warning, so a minor format revision that adds one
still loads. Keys are kebab-case; maturity (``Feasible``…) and case-study type (``Incident``)
are capitalised and come out lower-case, as in the legacy layout. A major format version other
than 6 is refused, naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlthreat.kb.errors import DataWarning
from mlthreat.kb.history import parse_release
from mlthreat.kb.model import (
    CaseStudy,
    KnowledgeBase,
    Mitigation,
    MitigationUse,
    ProcedureStep,
    Tactic,
    Technique,
)
from mlthreat.kb.sources.atlas_yaml import _Reader, shortname

__all__ = ["FORMAT", "MAJOR", "load", "sniff"]

FORMAT = "atlas-v6"
MAJOR = 6
_SECTIONS = ("tactics", "techniques", "mitigations", "case-studies")
_READ = frozenset({"sequences", "achieves", "specializes", "mitigates", "employs"})


def sniff(data: Any) -> bool:
    return isinstance(data, dict) and "format-version" in data


class _V6Reader(_Reader):
    """Field access as the legacy reader's, with lines found by map key (``AML.T0000:``),
    after the top-level ``section`` key when one is given."""

    def __init__(self, path: Path, section: str | None = None) -> None:
        super().__init__(path)
        self.section = section

    def entry_pattern(self, entry: str) -> str:
        return rf"^\s*['\"]?{re.escape(entry.split()[0])}['\"]?\s*:"

    def search_from(self, text: str) -> int:
        if self.section is None:
            return 0
        top = re.search(rf"^{re.escape(self.section)}\s*:", text, re.M)
        return top.end() if top else 0


def release_of(value: Any) -> str:
    """The content release as text; an unquoted ``2026.10`` that YAML read as the float
    2026.1 gets its month's two digits back."""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def load(data: Any, path: Path) -> KnowledgeBase:
    """Build a :class:`KnowledgeBase` from a parsed format-6 file.

    ``version`` is the content release (``2026.09``) and ``format_version`` the file's format
    (``6.0.0``).

    Raises
    ------
    DataFileError
        For an unsupported major format version, a missing or mistyped field, a malformed ID,
        or a relationship item that is neither an ID nor a mapping holding one, naming the
        entry, field and line.
    """
    r = _V6Reader(path)
    fmt = str(r.get(data, "format-version", (str, int, float), None))
    major = fmt.split(".")[0]
    if major != str(MAJOR):
        raise r.fail(f"ATLAS data format {fmt} is not supported: this mlthreat reads format "
                     f"{MAJOR}.x and the legacy ATLAS.yaml (a newer mlthreat may read it)",
                     None, "format-version")
    collection = r.get(data, "collection", dict, None)
    version = release_of(r.get(collection, "version", (str, int, float), "collection"))
    if parse_release(version) is None:
        raise r.fail(f"content release {version!r} is not YYYY.MM or YYYY.MM.N", "collection",
                     "version")
    sections = {name: r.get(data, name, dict, None, {}) for name in _SECTIONS}
    for name, objects in sections.items():
        for key in objects:
            if not isinstance(key, str):
                raise r.fail(f"{name} is keyed by ATLAS IDs; {key!r} is not one", None, name)
    matrix_id = str(r.get(data, "matrix", dict, None, {}).get("id") or "ATLAS-matrix")
    rel = _Relationships(_V6Reader(path, "relationships"),
                         r.get(data, "relationships", dict, None, {}), sections, matrix_id)

    order = rel.targets(matrix_id, "sequences")
    missing = [t for t in order if t not in sections["tactics"]]
    if missing:
        raise r.fail(f"the matrix sequences tactic {missing[0]}, which the file does not hold",
                     matrix_id, "sequences")
    order += [t for t in sections["tactics"] if t not in order]
    tactics = tuple(_tactic(r, tid, sections["tactics"][tid]) for tid in order)
    techniques = tuple(_technique(r, tid, obj, rel)
                       for tid, obj in sections["techniques"].items())
    mitigations = tuple(_mitigation(r, mid, obj, rel)
                        for mid, obj in sections["mitigations"].items())
    case_studies = tuple(_case_study(r, cid, obj, rel)
                         for cid, obj in sections["case-studies"].items())
    return KnowledgeBase(
        version=version,
        format_version=fmt,
        name=str(collection.get("name") or "ATLAS"),
        source=str(path),
        tactics=tactics,
        techniques=techniques,
        mitigations=mitigations,
        case_studies=case_studies,
        warnings=tuple(rel.warnings),
    )


class _Relationships:
    """The ``relationships`` map, read item by item with errors naming source, type and
    position."""

    def __init__(self, r: _V6Reader, data: dict[Any, Any], sections: dict[str, dict[str, Any]],
                 matrix_id: str) -> None:
        self.r, self.data = r, data
        self.warnings: list[DataWarning] = []
        known = {matrix_id, *(k for objects in sections.values() for k in objects)}
        for source, types in data.items():
            if source not in known:
                raise r.fail(f"relationships from {source!r}, which the file does not hold",
                             None, "relationships")
            if not isinstance(types, dict):
                raise r.fail(f"relationships.{source}: expected a mapping of relationship "
                             f"types, got {type(types).__name__}", str(source), "relationships")
            for kind in types:
                if kind not in _READ:
                    self.warnings.append(DataWarning(
                        str(r.path), "unknown-relationship",
                        f"relationship type {kind!r} of {source} is not read", entry=source,
                        field="relationships", atlas_id=str(source)))

    def items(self, source: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """(target ID, metadata) of each item of ``source``'s ``kind`` relationships."""
        raw = self.data.get(source, {}).get(kind) or []
        where = f"relationships.{source}.{kind}"
        if not isinstance(raw, list):
            raise self.r.fail(f"{where}: expected a list, got {type(raw).__name__}", source,
                              kind)
        out: list[tuple[str, dict[str, Any]]] = []
        for i, item in enumerate(raw):
            if isinstance(item, str):
                out.append((item, {}))
                continue
            target = item.get("target", item.get("id")) if isinstance(item, dict) else None
            if not isinstance(target, str):
                raise self.r.fail(f"{where}[{i}]: expected an ATLAS ID or a mapping holding "
                                  "one under 'target' (or 'id')", source, kind)
            out.append((target, item))
        return out

    def targets(self, source: str, kind: str) -> list[str]:
        return [target for target, _ in self.items(source, kind)]


def _common(r: _V6Reader, oid: str, obj: Any) -> dict[str, Any]:
    return {
        "name": r.get(obj, "name", str, oid),
        "description": str(obj.get("description") or "").strip(),
        "attack_reference": _attack_ref(r, obj, oid),
        "created": r.date(obj, "created-date", oid),
        "modified": r.date(obj, "modified-date", oid),
    }


def _attack_ref(r: _V6Reader, obj: dict[str, Any], oid: str) -> Any:
    return r.attack_ref({"ATT&CK-reference": obj.get("attack-reference")}, oid)


def _tactic(r: _V6Reader, tid: str, obj: Any) -> Tactic:
    common = _common(r, tid, obj)
    short = obj.get("short-name") or obj.get("shortname") or shortname(common["name"])
    return Tactic(id=tid, shortname=str(short), **common)


def _technique(r: _V6Reader, tid: str, obj: Any, rel: _Relationships) -> Technique:
    common = _common(r, tid, obj)
    tactics = tuple(rel.targets(tid, "achieves"))
    parents = rel.targets(tid, "specializes")
    if len(parents) > 1:
        raise r.fail(f"specializes {len(parents)} techniques; a sub-technique has one parent",
                     tid, "specializes")
    parent = parents[0] if parents else None
    if parent is None and not tactics:
        raise r.fail("a technique needs an 'achieves' or a 'specializes' relationship", tid,
                     "relationships")
    platforms = obj.get("platforms") or []
    return Technique(
        id=tid,
        tactics=tactics,
        parent=parent,
        maturity=str(obj.get("maturity") or "").lower(),  # type: ignore[arg-type]
        references=r.references(obj, tid),
        platforms=tuple(str(p) for p in ([platforms] if isinstance(platforms, str)
                                         else platforms)),
        **common,
    )


def _mitigation(r: _V6Reader, mid: str, obj: Any, rel: _Relationships) -> Mitigation:
    common = _common(r, mid, obj)
    uses = tuple(MitigationUse(target, str(meta.get("description") or meta.get("use") or
                                           "").strip())
                 for target, meta in rel.items(mid, "mitigates"))
    categories = obj.get("categories") or obj.get("category") or []
    phases = obj.get("lifecycle-phases") or []
    return Mitigation(
        id=mid,
        techniques=uses,
        category=tuple(str(c) for c in ([categories] if isinstance(categories, str)
                                        else categories)),
        lifecycle=tuple(str(p) for p in ([phases] if isinstance(phases, str) else phases)),
        **common,
    )


def _case_study(r: _V6Reader, cid: str, obj: Any, rel: _Relationships) -> CaseStudy:
    name = r.get(obj, "name", str, cid)
    steps = []
    for i, (target, meta) in enumerate(rel.items(cid, "employs")):
        tactic = meta.get("tactic")
        if not isinstance(tactic, str):
            raise r.fail(f"relationships.{cid}.employs[{i}]: a procedure step needs the "
                         "'tactic' it serves", cid, "employs")
        steps.append(ProcedureStep(tactic=tactic, technique=target,
                                   description=str(meta.get("description") or "").strip()))
    return CaseStudy(
        id=cid,
        name=name,
        summary=str(obj.get("summary") or obj.get("description") or "").strip(),
        incident_date=r.date(obj, "date", cid),
        date_granularity=str(obj.get("date-granularity") or "DATE").upper(),
        case_study_type=str(obj.get("type") or "").lower(),
        target=str(obj.get("target") or ""),
        actor=str(obj.get("actor") or ""),
        reporter=str(obj.get("reporter") or ""),
        references=r.references(obj, cid),
        procedure=tuple(steps),
    )
