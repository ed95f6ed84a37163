"""The knowledge base as a STIX 2.1 bundle that joins the official ATLAS bundle.

Tactics become ``x-mitre-tactic``, techniques and sub-techniques ``attack-pattern`` (kill-chain
phases ``mitre-atlas`` named by tactic short name; a sub-technique carries its parent's),
mitigations ``course-of-action``, parent links ``subtechnique-of`` and mitigation links
``mitigates`` relationships (the "use" text as description), case studies ``report`` objects
(``published`` is the incident date, ``object_refs`` the techniques of the procedure). An
``x-mitre-matrix`` orders the tactics, an ``x-mitre-collection`` records the ATLAS data version
(``x_mitre_version``) and lists every object, and an ``identity`` names mlthreat as the maker of
the objects whose IDs it mints.

Identifiers
-----------
The official bundle (atlas-navigator-data ``stix-atlas.json``) derives its IDs as
``uuid5(NS_ATLAS, name)``, where ``NS_ATLAS`` is the UUID whose 16 bytes are the ASCII text
``atlas.mitre.org.`` (``61746c61-732e-6d69-7472-652e6f72672e``) and ``name`` is the ATLAS ID for
tactics, techniques and mitigations, ``"<sub-technique ID>-subtechnique-of-<parent STIX ID>"`` for
parent links and ``"ATLAS-matrix"`` for the matrix. This rule reproduces all 221 object IDs of
ATLAS 5.6.0, so ATLAS objects (prefix ``AML``) keep their official IDs without a lookup table and
an export joins the bundle a SOC already loads.

The official ``mitigates`` IDs are ``uuid5(NS_ATLAS, "<mitigation ID>-mitigates-<use text>")``:
the technique is left out, so 114 links share 34 IDs. They are not reused. Every object without
a sound official ID -- ``mitigates`` links, reports, the collection, the identity, and all
objects of an organisation extension (another prefix than ``AML``) -- gets
``uuid5(NS_MLTHREAT, key)``, where ``key`` is the JSON text of what identifies the object: for a
relationship its type, source, target and description (so the two AML.M0002 → AML.T0043.001
links with different "use" texts get distinct IDs, and a link repeated with identical content
collapses into one object); for an object with an ATLAS-shaped ID its STIX type and that ID.

Timestamps
----------
``created`` and ``modified`` are the data's dates at midnight UTC; when the data gives a
``modified`` earlier than ``created`` (AML.T0087 and AML.T0096 in ATLAS 5.6.0, which the
official bundle copies and the STIX validator rejects), ``modified`` is raised to ``created``. A
relationship takes the dates of the object that lists it (the sub-technique, the mitigation). A
case study has no record dates: its report is created at the incident date and modified at the
newest date of the knowledge base. Objects without dates, the matrix and the collection take the
knowledge base's oldest ``created`` and newest ``modified`` dates (the matrix: its tactics').
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import stix2
from stix2.properties import (
    DictionaryProperty,
    ListProperty,
    ReferenceProperty,
    StringProperty,
)

from mlthreat import __version__
from mlthreat.kb.ids import ID_PATTERN, kind_of
from mlthreat.kb.model import (
    AttackReference,
    CaseStudy,
    KnowledgeBase,
    Mitigation,
    Reference,
    Tactic,
    Technique,
)
from mlthreat.kb.sources.atlas_yaml import shortname as _shortname

__all__ = [
    "FORMAT",
    "NS_ATLAS",
    "NS_MLTHREAT",
    "SUFFIX",
    "MitreCollection",
    "MitreMatrix",
    "MitreTactic",
    "build_bundle",
    "mlthreat_identity",
    "render",
    "stix_id",
]

FORMAT = "stix"
SUFFIX = ".json"

NS_ATLAS = uuid.UUID(bytes=b"atlas.mitre.org.")
"""Namespace of the official ATLAS STIX IDs (the ASCII bytes of ``atlas.mitre.org.``)."""
NS_MLTHREAT = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mlthreat:stix-export")
"""Namespace of the IDs mlthreat mints for objects without an official one."""

SOURCE_NAME = "mitre-atlas"
"""``source_name`` of ATLAS external references, and the kill-chain name of ATLAS tactics."""
KILL_CHAIN = SOURCE_NAME
ATLAS_URL = "https://atlas.mitre.org"
_ROUTES = {"tactic": "tactics", "technique": "techniques", "sub-technique": "techniques",
           "mitigation": "mitigations", "case-study": "studies"}
_TYPES = {"tactic": "x-mitre-tactic", "technique": "attack-pattern",
          "sub-technique": "attack-pattern", "mitigation": "course-of-action",
          "case-study": "report"}
# The identity's ``modified``: its content never changes with the data; bump this date
# whenever mlthreat_identity's content changes (a new STIX version of the object).
_IDENTITY_DATE = "2026-01-01"
_NO_DATE = "1970-01-01"


@stix2.CustomObject("x-mitre-tactic", [
    ("name", StringProperty(required=True)),
    ("description", StringProperty()),
    ("x_mitre_shortname", StringProperty(required=True)),
])
class MitreTactic:
    """ATT&CK's tactic object, as the official ATLAS bundle and Navigator use it."""


@stix2.CustomObject("x-mitre-matrix", [
    ("name", StringProperty(required=True)),
    ("description", StringProperty()),
    ("tactic_refs", ListProperty(ReferenceProperty(valid_types="x-mitre-tactic",
                                                   spec_version="2.1"), required=True)),
])
class MitreMatrix:
    """ATT&CK's matrix object: the tactics of one matrix, left to right."""


@stix2.CustomObject("x-mitre-collection", [
    ("name", StringProperty(required=True)),
    ("description", StringProperty()),
    ("x_mitre_version", StringProperty(required=True)),
    ("x_mitre_attack_spec_version", StringProperty()),
    ("x_mitre_contents", ListProperty(DictionaryProperty(spec_version="2.1"))),
    ("x_mlthreat_version", StringProperty()),
])
class MitreCollection:
    """ATT&CK Workbench's collection object: a versioned set of objects."""


def _minted(key: Any) -> uuid.UUID:
    return uuid.uuid5(NS_MLTHREAT, json.dumps(key, ensure_ascii=False, separators=(",", ":")))


def _prefix(atlas_id: str) -> str:
    m = ID_PATTERN.match(atlas_id)
    return m["prefix"] if m else ""


def stix_id(atlas_id: str) -> str:
    """The STIX ID of the object with this ATLAS ID.

    ATLAS tactics, techniques and mitigations get their official ID (the one in the official
    ATLAS bundle); case studies and objects of an organisation extension get mlthreat's.

    Raises
    ------
    ValueError
        When ``atlas_id`` is not an ATLAS-shaped ID.

    Examples
    --------
    >>> stix_id("AML.T0000")
    'attack-pattern--c02f812d-59cc-5366-b1aa-7eb05154b772'
    """
    kind = kind_of(atlas_id)
    if kind is None:
        raise ValueError(f"not an ATLAS ID: {atlas_id!r}")
    stix_type = _TYPES[kind]
    if _prefix(atlas_id) == "AML" and kind != "case-study":
        return f"{stix_type}--{uuid.uuid5(NS_ATLAS, atlas_id)}"
    return f"{stix_type}--{_minted([stix_type, atlas_id])}"


def mlthreat_identity() -> stix2.Identity:
    """mlthreat's ``identity``: the creator of the objects whose IDs mlthreat mints, in the
    knowledge-base export and in every alert's STIX bundle.

    Built here alone, so both carry the same object: STIX 2.1 (3.6) treats objects with the
    same ``id`` and ``modified`` as one version, which must have one content. Change the
    content and :data:`_IDENTITY_DATE` (its ``modified``) together: the text is the one
    2026-01-01 version already published in knowledge-base exports, kept word for word.
    """
    return stix2.Identity(
        id=f"identity--{_minted(['identity', 'mlthreat'])}",
        created=_ts(_IDENTITY_DATE), modified=_ts(_IDENTITY_DATE),
        name="mlthreat", identity_class="system",
        description="mlthreat, the adversarial ML threat matrix toolkit: creator of the "
                    "objects of this export whose IDs it derives (reports, mitigates links, "
                    "collection). The ATLAS content is MITRE's (MITRE ATLAS, Apache-2.0).",
    )


def _ts(date: str) -> str:
    return f"{date[:10]}T00:00:00.000Z"


class _Dates:
    """The knowledge base's oldest and newest dates, the fallback for undated objects."""

    def __init__(self, kb: KnowledgeBase) -> None:
        objs = (*kb.tactics, *kb.techniques, *kb.mitigations)
        dates = [d for o in objs for d in (o.created, o.modified) if d]
        self.first = min(dates, default=_NO_DATE)[:10]
        self.last = max(dates, default=_NO_DATE)[:10]

    def of(self, obj: Tactic | Technique | Mitigation) -> dict[str, str]:
        created = (obj.created or self.first)[:10]
        modified = max((obj.modified or self.last)[:10], created)
        return {"created": _ts(created), "modified": _ts(modified)}


def _own_reference(atlas_id: str, kind: str) -> dict[str, str]:
    prefix = _prefix(atlas_id)
    if prefix == "AML":
        return {"source_name": SOURCE_NAME, "url": f"{ATLAS_URL}/{_ROUTES[kind]}/{atlas_id}",
                "external_id": atlas_id}
    return {"source_name": prefix.lower(), "external_id": atlas_id}


def _references(kb: KnowledgeBase, atlas_id: str, attack: AttackReference | None = None,
                cited: Iterable[Reference] = ()) -> list[dict[str, str]]:
    refs = [_own_reference(atlas_id, kb.kind(atlas_id))]
    if attack is not None:
        ref = {"source_name": "mitre-attack", "external_id": attack.id}
        refs.append({**ref, "url": attack.url} if attack.url else ref)
    for r in cited:
        if r.url or r.title:
            # STIX wants a source name; a citation has none of its own, so its site names it.
            source = urlsplit(r.url).hostname or "citation"
            ref = {"source_name": source, "description": r.title, "url": r.url}
            refs.append({k: v for k, v in ref.items() if v})
    return refs


def _optional(**props: Any) -> dict[str, Any]:
    """Keyword arguments without the empty ones (STIX has no empty strings or lists)."""
    return {k: v for k, v in props.items() if v not in (None, "", (), [])}


def _tactic(kb: KnowledgeBase, t: Tactic, dates: _Dates) -> MitreTactic:
    return MitreTactic(
        id=stix_id(t.id), **dates.of(t), name=t.name,
        x_mitre_shortname=t.shortname or _shortname(t.name),
        external_references=_references(kb, t.id, t.attack_reference),
        **_optional(description=t.description),
    )


def _technique(kb: KnowledgeBase, t: Technique, dates: _Dates) -> stix2.AttackPattern:
    phases = [stix2.KillChainPhase(kill_chain_name=KILL_CHAIN,
                                   phase_name=tac.shortname or _shortname(tac.name))
              for tac in kb.tactics_of(t.id)]
    return stix2.AttackPattern(
        id=stix_id(t.id), **dates.of(t), name=t.name,
        external_references=_references(kb, t.id, t.attack_reference, t.references),
        x_mitre_is_subtechnique=t.is_subtechnique,
        x_mitre_platforms=["ATLAS"],
        **_optional(description=t.description, kill_chain_phases=phases,
                    x_mitre_maturity=t.maturity),
        allow_custom=True,
    )


def _mitigation(kb: KnowledgeBase, m: Mitigation, dates: _Dates) -> stix2.CourseOfAction:
    return stix2.CourseOfAction(
        id=stix_id(m.id), **dates.of(m), name=m.name,
        external_references=_references(kb, m.id, m.attack_reference),
        **_optional(description=m.description, x_mlthreat_category=list(m.category),
                    x_mlthreat_lifecycle=list(m.lifecycle)),
        allow_custom=True,
    )


def _relationships(kb: KnowledgeBase, dates: _Dates, creator: str) -> Iterator[stix2.Relationship]:
    seen: set[str] = set()

    def link(kind: str, source: str, target: str, owner: Technique | Mitigation,
             description: str = "") -> Iterator[stix2.Relationship]:
        src, dst = stix_id(source), stix_id(target)
        if _prefix(source) == "AML" and _prefix(target) == "AML" and kind == "subtechnique-of":
            rid = f"relationship--{uuid.uuid5(NS_ATLAS, f'{source}-subtechnique-of-{dst}')}"
            extra: dict[str, Any] = {}
        else:
            rid = f"relationship--{_minted(['relationship', kind, src, dst, description])}"
            extra = {"created_by_ref": creator}
        if rid in seen:  # the same link listed twice with identical content
            return
        seen.add(rid)
        yield stix2.Relationship(id=rid, **dates.of(owner), relationship_type=kind,
                                 source_ref=src, target_ref=dst,
                                 **extra, **_optional(description=description))

    for t in kb.techniques:
        if t.parent:
            kb.technique(t.parent)
            yield from link("subtechnique-of", t.id, t.parent, t)
    for m in kb.mitigations:
        for use in m.techniques:
            kb.technique(use.technique)
            yield from link("mitigates", m.id, use.technique, m, use.use.strip())


def _report(kb: KnowledgeBase, cs: CaseStudy, dates: _Dates, creator: str) -> stix2.Report:
    incident = (cs.incident_date or dates.first)[:10]
    procedure = [_optional(tactic=s.tactic, technique=s.technique, description=s.description)
                 for s in cs.procedure]
    return stix2.Report(
        id=stix_id(cs.id), created_by_ref=creator,
        created=_ts(incident), modified=_ts(max(incident, dates.last)),
        name=cs.name, report_types=["threat-report"], published=_ts(incident),
        object_refs=[stix_id(kb.technique(t).id) for t in cs.techniques],
        external_references=_references(kb, cs.id, None, cs.references),
        **_optional(description=cs.summary, x_mlthreat_case_study_type=cs.case_study_type,
                    x_mlthreat_incident_date_granularity=cs.date_granularity,
                    x_mlthreat_target=cs.target, x_mlthreat_actor=cs.actor,
                    x_mlthreat_reporter=cs.reporter, x_mlthreat_procedure=procedure),
        allow_custom=True,
    )


def _matrix(kb: KnowledgeBase, dates: _Dates) -> MitreMatrix:
    refs = [stix_id(t.id) for t in kb.tactics]
    atlas_only = all(_prefix(t.id) == "AML" for t in kb.tactics)
    if atlas_only:
        mid = uuid.uuid5(NS_ATLAS, "ATLAS-matrix")
    else:
        mid = _minted(["x-mitre-matrix", [t.id for t in kb.tactics]])
    created = min((t.created for t in kb.tactics if t.created), default=dates.first)[:10]
    modified = max((t.modified for t in kb.tactics if t.modified), default=dates.last)[:10]
    return MitreMatrix(
        id=f"x-mitre-matrix--{mid}", created=_ts(created), modified=_ts(max(created, modified)),
        name="ATLAS Matrix" if atlas_only else f"{kb.name} matrix",
        description=f"The tactics of {kb.name} {kb.version}, left to right.",
        # Navigator reads this reference for its "view technique" links.
        external_references=[{"source_name": SOURCE_NAME, "url": ATLAS_URL,
                              "external_id": SOURCE_NAME}],
        tactic_refs=refs, allow_custom=True,
    )


def build_bundle(kb: KnowledgeBase) -> stix2.Bundle:
    """The knowledge base as a STIX 2.1 bundle of ``stix2`` objects, in a fixed order.

    Order: identity, collection, matrix, tactics, techniques (matrix order), mitigations,
    ``subtechnique-of`` then ``mitigates`` relationships, reports. IDs and timestamps follow
    the module rules, so the same knowledge base always gives the same bundle.

    Raises
    ------
    UnknownIdError
        When a parent, mitigation link or procedure step names a technique the knowledge base
        does not hold.
    """
    dates = _Dates(kb)
    identity = mlthreat_identity()
    content: list[Any] = [
        _matrix(kb, dates),
        *(_tactic(kb, t, dates) for t in kb.tactics),
        *(_technique(kb, t, dates) for t in kb.techniques),
        *(_mitigation(kb, m, dates) for m in kb.mitigations),
        *_relationships(kb, dates, identity.id),
        *(_report(kb, cs, dates, identity.id) for cs in kb.case_studies),
    ]
    collection = MitreCollection(
        id=f"x-mitre-collection--{_minted(['x-mitre-collection', kb.name])}",
        created_by_ref=identity.id,
        created=_ts(dates.first), modified=_ts(dates.last),
        name=kb.name, description=f"{kb.name} {kb.version}, exported by mlthreat {__version__}",
        x_mitre_version=kb.version, x_mitre_attack_spec_version="2.1.0",
        x_mlthreat_version=__version__,
        x_mitre_contents=[{"object_ref": o.id, "object_modified": o.modified} for o in content],
    )
    objects = [identity, collection, *content]
    digest = hashlib.sha256("\n".join(o.serialize() for o in objects).encode()).hexdigest()
    return stix2.Bundle(id=f"bundle--{_minted(['bundle', digest])}", objects=objects,
                        allow_custom=True)


def render(kb: KnowledgeBase) -> str:
    """The bundle as JSON text: each object's properties in ``stix2``'s fixed order (the
    specification's, then custom ones sorted), two-space indent, UTF-8 text kept as is.

    Deterministic: the same knowledge base gives byte-identical output. (``stix2``'s
    ``pretty=True`` is not used: its key sorting is quadratic in the bundle size, over a minute
    for ATLAS.)
    """
    text: str = build_bundle(kb).serialize(indent=2, ensure_ascii=False)
    return text + "\n"
