"""The official STIX 2.1 bundle of ATLAS (``stix-atlas.json`` from atlas-navigator-data).

Tactics are the custom ``x-mitre-tactic`` type, techniques ``attack-pattern`` (tactics from their
kill-chain phases, parents from ``subtechnique-of`` relationships), mitigations
``course-of-action`` with ``mitigates`` relationships whose description is the "use" text. The
bundle holds no case studies and states no ATLAS data version; the version reads ``unknown``
with the newest modification date. The official bundle reuses relationship IDs across different
links (34 IDs over 114 links); links are keyed by their endpoints here, never by ID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlthreat.kb.errors import DataFileError
from mlthreat.kb.model import (
    AttackReference,
    KnowledgeBase,
    Mitigation,
    MitigationUse,
    Reference,
    Tactic,
    Technique,
)

__all__ = ["FORMAT", "load", "sniff"]

FORMAT = "stix-bundle"


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


def load(data: Any, path: Path) -> KnowledgeBase:
    """Build a :class:`KnowledgeBase` from a parsed STIX bundle.

    Raises
    ------
    DataFileError
        When the bundle has no ``objects`` list or an ATLAS object lacks its ``mitre-atlas``
        external ID.
    """
    objects = data.get("objects")
    if not isinstance(objects, list):
        raise DataFileError(path, "a STIX bundle needs an 'objects' list", field="objects")
    by_ref: dict[str, dict[str, Any]] = {}
    atlas_id: dict[str, str] = {}
    for i, obj in enumerate(objects):
        if obj.get("type") in ("x-mitre-tactic", "attack-pattern", "course-of-action"):
            ext, _ = _external(obj)
            if not ext:
                raise DataFileError(
                    path, "no 'mitre-atlas' external reference",
                    entry=f"objects[{i}] {obj.get('id')}", field="external_references",
                )
            atlas_id[obj["id"]] = ext
        by_ref[obj.get("id", "")] = obj

    matrix = next((o for o in objects if o.get("type") == "x-mitre-matrix"), None)
    tactic_objs = [o for o in objects if o.get("type") == "x-mitre-tactic"]
    if matrix is not None:
        order = {ref: i for i, ref in enumerate(matrix.get("tactic_refs", []))}
        tactic_objs.sort(key=lambda o: order.get(o["id"], len(order)))
    tactics = tuple(
        Tactic(
            id=atlas_id[o["id"]],
            name=o.get("name", ""),
            description=o.get("description", ""),
            shortname=o.get("x_mitre_shortname", ""),
            attack_reference=_attack_ref(_external(o)[1]),
            created=o.get("created", "")[:10],
            modified=o.get("modified", "")[:10],
        )
        for o in tactic_objs
    )
    tactic_of_phase = {t.shortname: t.id for t in tactics}

    parent: dict[str, str] = {}
    uses: dict[str, list[MitigationUse]] = {}
    for o in objects:
        if o.get("type") != "relationship":
            continue
        src, dst = atlas_id.get(o.get("source_ref", "")), atlas_id.get(o.get("target_ref", ""))
        if not src or not dst:
            continue
        if o.get("relationship_type") == "subtechnique-of":
            parent[src] = dst
        elif o.get("relationship_type") == "mitigates":
            uses.setdefault(src, []).append(MitigationUse(dst, o.get("description", "").strip()))

    techniques = []
    for o in objects:
        if o.get("type") != "attack-pattern":
            continue
        tid = atlas_id[o["id"]]
        phases = tuple(tactic_of_phase[p["phase_name"]] for p in o.get("kill_chain_phases", [])
                       if p.get("phase_name") in tactic_of_phase)
        _, refs = _external(o)
        techniques.append(Technique(
            id=tid,
            name=o.get("name", ""),
            description=o.get("description", ""),
            # Sub-techniques inherit their parent's tactics, as in ATLAS.yaml.
            tactics=() if tid in parent else phases,
            parent=parent.get(tid),
            maturity=o.get("x_mitre_maturity", ""),
            attack_reference=_attack_ref(refs),
            references=tuple(Reference(r.get("description", ""), r["url"]) for r in refs
                             if r.get("source_name") not in ("mitre-atlas", "mitre-attack")
                             and r.get("url")),
            created=o.get("created", "")[:10],
            modified=o.get("modified", "")[:10],
        ))
    mitigations = tuple(
        Mitigation(
            id=atlas_id[o["id"]],
            name=o.get("name", ""),
            description=o.get("description", ""),
            techniques=tuple(uses.get(atlas_id[o["id"]], ())),
            attack_reference=_attack_ref(_external(o)[1]),
            created=o.get("created", "")[:10],
            modified=o.get("modified", "")[:10],
        )
        for o in objects if o.get("type") == "course-of-action"
    )
    newest = max((o.get("modified", "")[:10] for o in objects if o.get("type") != "bundle"),
                 default="")
    return KnowledgeBase(
        version=f"unknown (STIX bundle, newest object {newest})",
        source=str(path),
        tactics=tactics,
        techniques=tuple(techniques),
        mitigations=mitigations,
        case_studies=(),
    )
