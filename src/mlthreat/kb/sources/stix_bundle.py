"""The official STIX 2.1 bundle of ATLAS (``stix-atlas.json`` from atlas-navigator-data).

Tactics are the custom ``x-mitre-tactic`` type, techniques ``attack-pattern`` (tactics from their
kill-chain phases, parents from ``subtechnique-of`` relationships), mitigations
``course-of-action`` with ``mitigates`` relationships whose description is the "use" text. The
bundle holds no case studies and states no ATLAS data version; the version reads ``unknown``
with the newest modification date. The official bundle reuses relationship IDs across different
links (34 IDs over 114 links); links are keyed by their endpoints here, never by ID, and two of
its techniques (AML.T0087, AML.T0096) were modified the day before they were created.

Nothing is dropped silently: what the loader reads past becomes a
:class:`~mlthreat.kb.errors.DataWarning` in ``KnowledgeBase.warnings``, naming the STIX ID and
the ATLAS ID:

``id-type-mismatch``
    An ``id`` whose prefix is not the object's ``type`` (the ``type`` is believed).
``modified-before-created``
    A ``modified`` timestamp earlier than ``created`` (the object is kept).
``dangling-relationship``
    A relationship to an object the bundle does not hold (left out).
``revoked``, ``deprecated``
    ``revoked: true`` or ``x_mitre_deprecated: true``: the object is resolvable by ID but out of
    the matrix (:attr:`KnowledgeBase.retired`), and links to it are left out.
``no-tactic``
    A kill-chain phase that matches no tactic of the bundle.
``parent-inferred``, ``parent-missing``
    A sub-technique without a ``subtechnique-of`` relationship: its parent is read from its ID
    (AML.T0051.001 → AML.T0051), or, when that is not in the bundle either, it is read as a
    technique.
``retired-link``
    A mitigation's link to a revoked or deprecated technique (left out of the matrix).
``unread-relationship``
    A relationship of a type mlthreat does not read (``revoked-by`` is read).
``parent-mismatch``
    A ``subtechnique-of`` relationship that its ATLAS IDs contradict: from a technique that is
    not a sub-technique (AML.T0000 under AML.T0001, itself, or in a cycle), or to a technique
    other than the one the sub-technique's ID names (AML.T0051.001 under AML.T0043), or a
    second parent; the ID is believed (left out).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from mlthreat.kb.errors import DataFileError, DataWarning
from mlthreat.kb.ids import kind_of, parent_id
from mlthreat.kb.model import (
    AttackReference,
    KnowledgeBase,
    Mitigation,
    MitigationUse,
    Reference,
    Retired,
    Tactic,
    Technique,
)

__all__ = ["FORMAT", "load", "sniff"]

FORMAT = "stix-bundle"
_ATLAS_TYPES = ("x-mitre-tactic", "attack-pattern", "course-of-action")
_READ_RELATIONSHIPS = ("subtechnique-of", "mitigates", "revoked-by")


def sniff(data: Any) -> bool:
    return isinstance(data, dict) and data.get("type") == "bundle"


def _external(obj: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    refs = obj.get("external_references") or []
    atlas = next((r.get("external_id") for r in refs if r.get("source_name") == "mitre-atlas"),
                 None)
    return atlas, refs


def _attack_ref(refs: list[dict[str, Any]]) -> AttackReference | None:
    for r in refs:
        if r.get("source_name") == "mitre-attack" and r.get("external_id"):
            return AttackReference(r["external_id"], r.get("url", ""))
    return None


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


class _Bundle:
    """The bundle's objects by STIX ID, their ATLAS IDs, and the warnings collected so far."""

    def __init__(self, objects: list[Any], path: Path) -> None:
        self.path = path
        self.objects: list[dict[str, Any]] = []
        self.by_ref: dict[str, dict[str, Any]] = {}
        self.atlas_id: dict[str, str] = {}
        self.status: dict[str, Literal["revoked", "deprecated"]] = {}
        self.warnings: list[DataWarning] = []
        for i, obj in enumerate(objects):
            if not isinstance(obj, dict):
                raise DataFileError(path, "a STIX object must be a JSON object",
                                    entry=f"objects[{i}]")
            if obj.get("type") in _ATLAS_TYPES:
                if not isinstance(obj.get("id"), str):
                    raise DataFileError(path, f"an {obj['type']} needs a string 'id'",
                                        entry=f"objects[{i}]", field="id")
                refs = obj.get("external_references")
                if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
                    raise DataFileError(path, "external_references must be a list of objects",
                                        entry=f"objects[{i}] {obj['id']}",
                                        field="external_references")
                ext, _ = _external(obj)
                if not ext:
                    raise DataFileError(
                        path, "no 'mitre-atlas' external reference",
                        entry=f"objects[{i}] {obj.get('id')}", field="external_references",
                    )
                if not isinstance(ext, str):
                    raise DataFileError(path, f"the 'mitre-atlas' external_id is "
                                        f"{type(ext).__name__} {ext!r}, not an ATLAS ID",
                                        entry=f"objects[{i}] {obj['id']}",
                                        field="external_references")
                for key in ("created", "modified"):
                    if key in obj and not isinstance(obj[key], str):
                        raise DataFileError(path, f"expected a timestamp, got "
                                            f"{type(obj[key]).__name__}",
                                            entry=f"objects[{i}] {obj['id']} ({ext})", field=key)
                self.atlas_id[obj["id"]] = ext
            if not isinstance(obj.get("id", ""), str):
                raise DataFileError(path, f"'id' must be text, got {type(obj['id']).__name__}",
                                    entry=f"objects[{i}]", field="id")
            self.objects.append(obj)
            self.by_ref[obj.get("id", "")] = obj
        for obj in self.objects:
            self._check(obj)

    def warn(self, code: str, obj: dict[str, Any], message: str,
             field: str | None = None) -> None:
        stix_id = str(obj.get("id"))
        ext = self.atlas_id.get(stix_id, "")
        self.warnings.append(DataWarning(str(self.path), code, message,
                                         entry=f"{stix_id} ({ext})" if ext else stix_id,
                                         field=field, atlas_id=ext))

    def _check(self, obj: dict[str, Any]) -> None:
        stix_id, kind = obj.get("id"), obj.get("type")
        if isinstance(stix_id, str) and stix_id.partition("--")[0] != kind:
            self.warn("id-type-mismatch", obj, f"the id's prefix "
                      f"{stix_id.partition('--')[0]!r} is not its type {kind!r}; read as {kind}",
                      "id")
        created, modified = _time(obj.get("created")), _time(obj.get("modified"))
        if created and modified and modified < created:
            self.warn("modified-before-created", obj, f"modified {obj['modified']} is before "
                      f"created {obj['created']}", "modified")
        if obj.get("revoked") is True:
            self.status[str(stix_id)] = "revoked"
        elif obj.get("x_mitre_deprecated") is True:
            self.status[str(stix_id)] = "deprecated"
        if kind == "relationship" and stix_id in self.status:
            what = self.status[str(stix_id)]
            self.warn(what, obj, f"the relationship is {what}; its link is left out", what)
        elif stix_id in self.status and kind in _ATLAS_TYPES:
            what = self.status[str(stix_id)]
            field = "revoked" if what == "revoked" else "x_mitre_deprecated"
            self.warn(what, obj, f"{self.atlas_id[str(stix_id)]} is {what}: resolvable by ID, "
                      "left out of the matrix", field)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("type") == kind]

    def retired(self, stix_id: str) -> bool:
        return stix_id in self.status


def load(data: Any, path: Path) -> KnowledgeBase:
    """Build a :class:`KnowledgeBase` from a parsed STIX bundle.

    Raises
    ------
    DataFileError
        When the bundle has no ``objects`` list, an object is not a JSON object, or an ATLAS
        object lacks its ``mitre-atlas`` external ID.
    """
    objects = data.get("objects")
    if not isinstance(objects, list):
        raise DataFileError(path, "a STIX bundle needs an 'objects' list", field="objects")
    b = _Bundle(objects, path)

    matrix = next(iter(b.of_type("x-mitre-matrix")), None)
    tactic_objs = b.of_type("x-mitre-tactic")
    if matrix is not None:
        order = {ref: i for i, ref in enumerate(matrix.get("tactic_refs", []))}
        tactic_objs.sort(key=lambda o: order.get(o["id"], len(order)))
    tactics = {o["id"]: _tactic(o, b.atlas_id[o["id"]]) for o in tactic_objs}
    phase_of = {t.shortname: (ref, t.id) for ref, t in tactics.items()}

    parent, uses, replaced = _relationships(b)
    known = {b.atlas_id[o["id"]] for o in b.of_type("attack-pattern")}
    techniques: dict[str, Technique] = {}
    for o in b.of_type("attack-pattern"):
        tid = b.atlas_id[o["id"]]
        up = parent.get(tid)
        if up is None and (kind_of(tid) == "sub-technique" or o.get("x_mitre_is_subtechnique")):
            up = _infer_parent(b, o, tid, known)
        phases, unmatched = [], []
        for p in o.get("kill_chain_phases") or []:
            name = p.get("phase_name") if isinstance(p, dict) else None
            ref, tac = phase_of.get(name, (None, None))  # type: ignore[arg-type]
            if tac is not None and (not b.retired(str(ref)) or b.retired(o["id"])):
                phases.append(tac)
            elif not b.retired(o["id"]):
                why = f"the {b.status[str(ref)]} tactic {tac}" if tac else "no tactic of the bundle"
                unmatched.append(f"{name!r} matches {why}")
        if unmatched:
            out = "" if up or phases else "; it is under no tactic of the matrix"
            b.warn("no-tactic", o, f"kill-chain phase {', '.join(unmatched)}{out}",
                   "kill_chain_phases")
        _, refs = _external(o)
        techniques[o["id"]] = Technique(
            id=tid,
            name=o.get("name", ""),
            description=o.get("description", ""),
            # Sub-techniques inherit their parent's tactics, as in ATLAS.yaml.
            tactics=() if up else tuple(phases),
            parent=up,
            maturity=o.get("x_mitre_maturity", ""),
            attack_reference=_attack_ref(refs),
            references=tuple(Reference(r.get("description", ""), r["url"]) for r in refs
                             if r.get("source_name") not in ("mitre-atlas", "mitre-attack")
                             and r.get("url")),
            created=o.get("created", "")[:10],
            modified=o.get("modified", "")[:10],
        )
    # A sub-technique of a retired technique leaves the matrix with it.
    retired_ids = {b.atlas_id[ref]: what for ref, what in b.status.items() if ref in b.atlas_id}
    for ref, t in techniques.items():
        if t.parent in retired_ids and ref not in b.status:
            b.status[ref] = retired_ids[t.parent]
            b.warn(retired_ids[t.parent], b.by_ref[ref], f"its parent {t.parent} is "
                   f"{retired_ids[t.parent]}; left out of the matrix with it", "subtechnique-of")
            retired_ids[t.id] = retired_ids[t.parent]
    mitigations: dict[str, Mitigation] = {}
    ref_of = {m: ref for ref, m in b.atlas_id.items()}
    for o in b.of_type("course-of-action"):
        mid = b.atlas_id[o["id"]]
        mitigations[o["id"]] = Mitigation(
            id=mid,
            name=o.get("name", ""),
            description=o.get("description", ""),
            techniques=tuple(u for u in uses.get(mid, ()) if u.technique not in retired_ids
                             or mid in retired_ids),
            attack_reference=_attack_ref(_external(o)[1]),
            created=o.get("created", "")[:10],
            modified=o.get("modified", "")[:10],
        )
    for mid, links in uses.items():
        for u in links:
            if u.technique in retired_ids and mid not in retired_ids:
                b.warn("retired-link", b.by_ref[ref_of[mid]], f"its link to the "
                       f"{retired_ids[u.technique]} {u.technique} is left out of the matrix",
                       "mitigates")

    def active(section: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(v for ref, v in section.items() if ref not in b.status)

    retired = tuple(
        Retired(obj, b.status[ref], replaced.get(obj.id))
        for section in (tactics, techniques, mitigations)
        for ref, obj in section.items() if ref in b.status
    )
    newest = max((str(o.get("modified", ""))[:10] for o in b.objects
                  if o.get("type") != "bundle"), default="")
    return KnowledgeBase(
        version=f"unknown (STIX bundle, newest object {newest})",
        source=str(path),
        tactics=active(tactics),
        techniques=active(techniques),
        mitigations=active(mitigations),
        case_studies=(),
        retired=retired,
        warnings=tuple(b.warnings),
    )


def _tactic(o: dict[str, Any], tid: str) -> Tactic:
    return Tactic(
        id=tid,
        name=o.get("name", ""),
        description=o.get("description", ""),
        shortname=o.get("x_mitre_shortname", ""),
        attack_reference=_attack_ref(_external(o)[1]),
        created=o.get("created", "")[:10],
        modified=o.get("modified", "")[:10],
    )


def _relationships(
    b: _Bundle,
) -> tuple[dict[str, str], dict[str, list[MitigationUse]], dict[str, str]]:
    """Parents, mitigation links and replacements (``revoked-by``) by ATLAS ID; warnings for
    the relationships left out."""
    parent: dict[str, str] = {}
    uses: dict[str, list[MitigationUse]] = {}
    replaced: dict[str, str] = {}
    for o in b.of_type("relationship"):
        if b.retired(str(o.get("id"))):
            continue  # warned in _Bundle._check
        kind = o.get("relationship_type")
        ends = [o.get("source_ref"), o.get("target_ref")]
        if not isinstance(kind, str):
            b.warn("unread-relationship", o, f"relationship_type {kind!r} is not text; left out",
                   "relationship_type")
            continue
        missing = [(f, r) for f, r in zip(("source_ref", "target_ref"), ends, strict=True)
                   if not isinstance(r, str) or r not in b.by_ref]
        if missing:
            other = [b.atlas_id[r] for r in ends if isinstance(r, str) and r in b.atlas_id]
            names = " and ".join(f"{f} {r}" for f, r in missing)
            about = f" (from {other[0]})" if other else ""
            b.warn("dangling-relationship", o, f"{kind} link{about}: {names} is not in the "
                   "bundle; left out", missing[0][0])
            continue
        src, dst = b.atlas_id.get(str(ends[0])), b.atlas_id.get(str(ends[1]))
        if kind not in _READ_RELATIONSHIPS:
            b.warn("unread-relationship", o, f"relationship type {kind!r} is not read; "
                   f"mlthreat reads {', '.join(_READ_RELATIONSHIPS)}", "relationship_type")
        elif not src or not dst:
            b.warn("dangling-relationship", o, f"{kind} link between "
                   f"{ends[0]} and {ends[1]}, which are not both ATLAS objects; left out",
                   "source_ref" if not src else "target_ref")
        elif kind == "subtechnique-of":
            expected = parent_id(src) if kind_of(src) == "sub-technique" else None
            if dst != expected or parent.get(src, dst) != dst:
                why = (f"{src} is not a sub-technique" if expected is None else
                       f"{src} already has parent {parent[src]}" if src in parent else
                       f"the ID {src} names {expected} as its parent")
                b.warn("parent-mismatch", o, f"subtechnique-of {src} under {dst}, but {why}; "
                       "left out", "target_ref")
                continue
            parent[src] = dst
        elif kind == "mitigates":
            uses.setdefault(src, []).append(MitigationUse(dst, o.get("description", "").strip()))
        else:
            replaced[src] = dst
    return parent, uses, replaced


def _infer_parent(b: _Bundle, o: dict[str, Any], tid: str, known: set[str]) -> str | None:
    guess = parent_id(tid)
    if guess is not None and guess in known:
        b.warn("parent-inferred", o, f"no subtechnique-of relationship; parent {guess} "
               "inferred from the ID", "subtechnique-of")
        return guess
    b.warn("parent-missing", o, "a sub-technique without a subtechnique-of relationship"
           + (f", and {guess} is not in the bundle" if guess else "") + "; read as a technique",
           "subtechnique-of")
    return None

